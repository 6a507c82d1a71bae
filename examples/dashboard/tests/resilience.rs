//! The breaker, the retry budget and the retries on the dashboard's backends (issue 20): a
//! failing backend is retried once, within the budget, and a backend that keeps failing is
//! cut off by its breaker.

mod support;

use std::time::Duration;

use dashboard::limits::Limits;
use dashboard::{DemoBackend, Resilience, Service};
use support::{Dashboard, config, get, serve_resilient};

/// The dashboard with its own demo backends, a 5 s deadline and the policies of `resilience`.
async fn start(resilience: Resilience) -> (std::net::SocketAddr, DemoBackend, tokio::task::JoinHandle<()>) {
    let profile = DemoBackend::start(Service::Profile).await.expect("profile backend");
    let transactions = DemoBackend::start(Service::Transactions).await.expect("transactions backend");
    let config = config(profile.url_template(), transactions.url_template(), Duration::from_secs(5));
    let (addr, server) = serve_resilient(config, Limits::default(), resilience).await;
    // The profile backend stops when dropped: keep it as long as the server.
    let server = tokio::spawn(async move {
        let _profile = profile;
        let _ = server.await;
    });
    (addr, transactions, server)
}

#[tokio::test]
async fn a_5xx_is_retried_once_and_a_4xx_is_not() {
    let dashboard = Dashboard::start(Duration::from_secs(5)).await;

    let reply = dashboard.get("/dashboard/7?transactions_fail=503").await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(reply.json()["kind"], "status", "{}", reply.body);
    assert_eq!(dashboard.transactions.stats().started(), 2, "a 503 is tried twice by default");

    let reply = dashboard.get("/dashboard/7?transactions_fail=404").await;
    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(dashboard.transactions.stats().started(), 3, "a 404 is not retried");
}

#[tokio::test]
async fn a_failed_first_attempt_in_a_brownout_is_answered_by_the_retry() {
    let dashboard = Dashboard::start(Duration::from_secs(5)).await;

    // The demo backend's first request is one of the failing half, its second is not.
    let reply = dashboard.get("/dashboard/7?transactions_fail_rate=0.5").await;

    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["transactions"]["id"], "7", "{}", reply.body);
    assert_eq!(dashboard.transactions.stats().started(), 2, "the 503, then the retry's answer");
}

#[tokio::test]
async fn one_attempt_means_no_retry() {
    let (addr, transactions, _server) = start(Resilience { retry_attempts: 1, ..Resilience::default() }).await;

    let reply = get(addr, "/dashboard/7?transactions_fail=503", &[]).await;

    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(transactions.stats().started(), 1);
}

/// Backend calls made by the transactions source for `requests` dashboard requests in a
/// brownout (half of the backend's answers are 503), four clients at a time.
async fn brownout_calls(resilience: Resilience, requests: usize) -> (usize, usize, Duration) {
    let (addr, transactions, _server) = start(resilience).await;
    let started = std::time::Instant::now();
    let clients = (0..4).map(|client| {
        tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..requests / 4 {
                let target = format!("/dashboard/{}?transactions_fail_rate=0.5", client * 1000 + i);
                ok += usize::from(get(addr, &target, &[]).await.status == 200);
            }
            ok
        })
    });
    let mut ok = 0;
    for client in clients.collect::<Vec<_>>() {
        ok += client.await.expect("a client");
    }
    (transactions.stats().started(), ok, started.elapsed())
}

#[tokio::test]
async fn in_a_brownout_the_budget_bounds_the_backends_calls() {
    const REQUESTS: usize = 300;

    let (budgeted, budgeted_ok, took) = brownout_calls(Resilience::default(), REQUESTS).await;
    let unbudgeted = Resilience { retry_budget_percent: None, ..Resilience::default() };
    let (unbudgeted, unbudgeted_ok, _) = brownout_calls(unbudgeted, REQUESTS).await;

    // 10 % of the calls, at least 5 a second, over a 10 s window: the larger of 10 % of the
    // requests and 50 retries when the run takes less than the window (about a second), and 5
    // more per second past it on a slow machine.
    let slow = 5 * took.as_secs().saturating_sub(10) as usize;
    let bound = REQUESTS + (REQUESTS / 10).max(50) + slow;

    assert!(budgeted > REQUESTS, "no retry at all: {budgeted} calls for {REQUESTS} requests");
    assert!(budgeted <= bound, "{budgeted} calls for {REQUESTS} requests, more than the budget's {bound}");
    // Without the budget, every failed first attempt is retried: about half the requests.
    assert!(unbudgeted > bound, "unbudgeted: {unbudgeted} calls for {REQUESTS} requests");
    assert!(unbudgeted_ok > budgeted_ok, "the retries answered: {unbudgeted_ok} against {budgeted_ok}");
}

#[tokio::test]
async fn a_backend_that_keeps_failing_is_cut_off_by_its_breaker() {
    let dashboard = Dashboard::start(Duration::from_secs(5)).await;

    // At least 20 calls, all failing, open the breaker.
    for _ in 0..20 {
        assert_eq!(dashboard.get("/dashboard/7?transactions_fail=503").await.status, 502);
    }
    let calls = dashboard.transactions.stats().started();
    let reply = dashboard.get("/dashboard/7?transactions_fail=503").await;

    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(reply.json()["kind"], "circuit_open", "{}", reply.body);
    assert_eq!(dashboard.transactions.stats().started(), calls, "an open breaker calls nobody");
    assert!(calls <= 40, "{calls} calls for 20 requests: at most one retry each");
}

#[tokio::test]
async fn with_an_attempt_timeout_a_backend_that_hangs_is_cut_off_by_its_breaker() {
    let resilience = Resilience { attempt_timeout: Some(Duration::from_millis(20)), ..Resilience::default() };
    let (addr, transactions, _server) = start(resilience).await;
    let hang = "/dashboard/7?transactions_delay_ms=60000";

    // Each attempt times out after 20 ms, well before the 5 s deadline: a failure of the
    // backend's own, which its breaker counts (at least 20 calls, half of them failing).
    for _ in 0..20 {
        let reply = get(addr, hang, &[]).await;
        assert_eq!(reply.status, 502, "{reply:?}");
        assert_eq!(reply.json()["kind"], "timeout", "{}", reply.body);
    }
    let calls = transactions.stats().started();
    let reply = get(addr, hang, &[]).await;

    assert_eq!((reply.status, reply.json()["kind"].as_str()), (502, Some("circuit_open")), "{}", reply.body);
    assert_eq!(transactions.stats().started(), calls, "an open breaker calls nobody");
}
