//! What the dashboard answers, over real sockets and on the real clock: the merged JSON, the 502
//! of a failed source, the 504 of the deadline, and `/healthz`.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use dashboard::Service;
use serde_json::json;
use support::{Dashboard, MARGIN, eventually, get, serve};

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test]
async fn a_user_gets_both_sources_in_one_json_object() {
    let dashboard = Dashboard::start(Duration::from_secs(5)).await;
    let headers = [("x-request-id", "req-success"), ("traceparent", TRACEPARENT)];

    let reply = get(dashboard.addr, "/dashboard/42", &headers).await;

    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("x-request-id"), Some("req-success"));
    // The backends' bodies are passed through byte for byte, keyed in declaration order.
    let profile = serde_json::to_string(&Service::Profile.body("42")).expect("profile body");
    let transactions = serde_json::to_string(&Service::Transactions.body("42")).expect("transactions body");
    // No offers service in this set-up: the optional section is its empty fallback.
    assert_eq!(reply.body, format!(r#"{{"profile":{profile},"transactions":{transactions},"offers":[]}}"#));
    for backend in [&dashboard.profile, &dashboard.transactions] {
        let requests = backend.stats().requests();
        assert_eq!(requests.len(), 1, "{}: {requests:?}", backend.service());
        assert_eq!(requests[0].request_id.as_deref(), Some("req-success"));
        assert_eq!(requests[0].traceparent.as_deref(), Some(TRACEPARENT));
        let deadline_ms: Option<u64> = requests[0].deadline_ms.as_deref().and_then(|ms| ms.parse().ok());
        assert!(deadline_ms.is_some_and(|ms| ms <= 5_000), "remaining deadline sent: {:?}", requests[0].deadline_ms);
        assert_eq!(backend.stats().completed(), 1);
    }
}

#[tokio::test]
async fn every_request_gets_a_request_id_and_the_backends_see_it() {
    let dashboard = Dashboard::start(Duration::from_secs(5)).await;

    let reply = dashboard.get("/dashboard/7").await;

    assert_eq!(reply.status, 200, "{reply:?}");
    let request_id = reply.header("x-request-id").expect("a generated request id");
    assert!(!request_id.is_empty());
    let sent = dashboard.profile.stats().requests();
    assert_eq!(sent[0].request_id.as_deref(), Some(request_id));
    assert_eq!(sent[0].traceparent, None, "no traceparent is made up");
}

#[tokio::test]
async fn a_failing_profile_is_a_502_naming_it_and_cancels_transactions() {
    let timeout = Duration::from_secs(5);
    let dashboard = Dashboard::start(timeout).await;

    let reply = dashboard.get("/dashboard/42?profile_fail=1&transactions_delay_ms=30000").await;

    assert_eq!(reply.status, 502, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["source"], "profile", "{body}");
    assert_eq!(body["kind"], "status", "{body}");
    assert!(body["error"].as_str().is_some_and(|error| error.contains("profile")), "{body}");
    assert!(body.get("pending").is_none(), "{body}");
    assert!(reply.elapsed < timeout, "fail-fast waited for the deadline: {:?}", reply.elapsed);
    // The slow transactions call was dropped: its connection closed, its handler cancelled.
    let transactions = dashboard.transactions.stats();
    eventually("the transactions request to be cancelled", || transactions.cancelled() == 1).await;
    assert_eq!((transactions.completed(), transactions.in_flight()), (0, 0));
    // The 500 is retried once (`--retry-attempts 2`, the default) before the section fails.
    assert_eq!(dashboard.profile.stats().completed(), 2);
}

#[tokio::test]
async fn a_backend_error_status_is_reported_with_the_status() {
    let dashboard = Dashboard::start(Duration::from_secs(5)).await;

    let reply = dashboard.get("/dashboard/42?transactions_fail=503").await;

    assert_eq!(reply.status, 502, "{reply:?}");
    let body = reply.json();
    assert_eq!((&body["source"], &body["kind"]), (&json!("transactions"), &json!("status")), "{body}");
    // Which source and how, nothing a backend said.
    assert_eq!(body["error"], json!("source `transactions` failed (status)"), "{body}");
}

#[tokio::test]
async fn a_slow_transactions_is_a_504_naming_it_at_the_deadline() {
    let timeout = Duration::from_millis(500);
    let dashboard = Dashboard::start(timeout).await;

    let reply = dashboard.get("/dashboard/42?transactions_delay_ms=30000").await;

    assert_eq!(reply.status, 504, "{reply:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let body = reply.json();
    assert_eq!(body["kind"], "timeout", "{body}");
    assert_eq!(body["source"], json!(null), "{body}");
    assert_eq!(body["pending"], json!(["transactions"]), "{body}");
    assert!(body["error"].as_str().is_some_and(|error| error.contains("deadline")), "{body}");
    assert!(reply.elapsed >= timeout, "answered before the deadline: {:?}", reply.elapsed);
    assert!(reply.elapsed < timeout + MARGIN, "answered {:?} after a {timeout:?} deadline", reply.elapsed);
    let transactions = dashboard.transactions.stats();
    eventually("the transactions request to be cancelled", || transactions.cancelled() == 1).await;
    assert_eq!(dashboard.profile.stats().completed(), 1);
}

#[tokio::test]
async fn an_unreachable_backend_is_a_502_of_kind_connect() {
    let transactions = dashboard::DemoBackend::start(Service::Transactions).await.expect("transactions backend");
    // A port that was just free: nothing listens there any more.
    let closed = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).and_then(|l| l.local_addr()).expect("a port");
    let (addr, _server) =
        serve(format!("http://{closed}/profile/{{id}}"), transactions.url_template(), Duration::from_secs(5)).await;

    let reply = get(addr, "/dashboard/42", &[]).await;

    assert_eq!(reply.status, 502, "{reply:?}");
    let body = reply.json();
    assert_eq!((&body["source"], &body["kind"]), (&json!("profile"), &json!("connect")), "{body}");
}

#[tokio::test]
async fn bad_knobs_are_the_backends_400_passed_on_as_a_502() {
    let dashboard = Dashboard::start(Duration::from_secs(5)).await;

    let reply = dashboard.get("/dashboard/42?profile_delay_ms=soon").await;

    assert_eq!(reply.status, 502, "{reply:?}");
    let body = reply.json();
    assert_eq!((&body["source"], &body["kind"]), (&json!("profile"), &json!("status")), "{body}");
    assert_eq!(body["error"], json!("source `profile` failed (status)"), "{body}");
}

#[tokio::test]
async fn healthz_answers_ok() {
    let dashboard = Dashboard::start(Duration::from_secs(5)).await;

    let reply = dashboard.get("/healthz").await;

    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"), "{reply:?}");
    assert_eq!(dashboard.profile.stats().started() + dashboard.transactions.stats().started(), 0);
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let dashboard = Dashboard::start(Duration::from_secs(5)).await;

    for target in ["/", "/dashboard", "/dashboard/", "/dashboard/42/extra", "/profile/42"] {
        let reply = dashboard.get(target).await;
        assert_eq!(reply.status, 404, "{target}");
        assert_eq!(reply.json()["kind"], "not_found", "a JSON error like every other: {target}");
        assert!(reply.header("x-request-id").is_some(), "{target}");
    }
}

#[tokio::test]
async fn a_method_other_than_get_is_a_json_405() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dashboard = Dashboard::start(Duration::from_secs(5)).await;

    let mut stream = tokio::net::TcpStream::connect(dashboard.addr).await.expect("connect");
    let head = format!(
        "POST /dashboard/42 HTTP/1.1\r\nhost: {}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        dashboard.addr
    );
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read");

    assert!(raw.starts_with("HTTP/1.1 405"), "{raw}");
    let body: serde_json::Value =
        serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap_or_default()).expect("a JSON body");
    assert_eq!(body, json!({"error": "only GET is served", "source": null, "kind": "method_not_allowed"}));
    assert_eq!(dashboard.profile.stats().started(), 0);
}
