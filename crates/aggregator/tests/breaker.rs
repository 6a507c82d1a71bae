//! The circuit breaker (issue 20, item 1): it counts only the source's own failures (never a
//! cancellation by a failing sibling, the global deadline or a coalesced waiter leaving), opens
//! on a failure rate, a slow-call rate or consecutive failures, refuses at once with
//! `circuit_open` in all five places, probes with an atomically reserved slot that a dropped
//! probe frees, and stays open longer after each failed probe.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use muster::http::{HttpFetcher, StatusCode};
use muster::policy::{BreakerHandle, BreakerState, CircuitBreaker, SlidingWindow};
use muster::{
    Aggregator, BuildError, Classify, Deadline, ErrorKind, Fallback, RequestContext, Retry, Timeout, fetcher_fn,
    options::OptionError, policy::Coalesce,
};
use tokio::time::Instant;
use tracing_subscriber::layer::SubscriberExt as _;

#[path = "support/capture.rs"]
mod capture;
#[path = "support/recorder.rs"]
mod recorder;
#[path = "../../adapters/tests/support/server.rs"]
mod server;

use capture::{Capture, field, with_message};
use recorder::TestRecorder;
use server::Server;

/// The tests run one at a time: tracing caches per-callsite interest process-wide, and a test
/// thread without a subscriber registering a callsite while the five-places test captures
/// events can hide them from it (as `tests/tracing.rs` explains).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn refused() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::ConnectionRefused)
}

/// The most eager breaker: one failure opens it.
fn eager() -> CircuitBreaker {
    CircuitBreaker::new().window(SlidingWindow::Count(5)).min_calls(1).consecutive_failures(1)
}

/// Counts calls and the calls dropped before they finished.
#[derive(Clone, Default)]
struct Calls {
    started: Arc<AtomicU32>,
    dropped: Arc<AtomicU32>,
}

struct Dropped(Arc<AtomicU32>, bool);

impl Drop for Dropped {
    fn drop(&mut self) {
        if self.1 {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Dropped {
    fn disarm(&mut self) {
        self.1 = false;
    }
}

impl Calls {
    fn started(&self) -> u32 {
        self.started.load(Ordering::SeqCst)
    }

    fn dropped(&self) -> u32 {
        self.dropped.load(Ordering::SeqCst)
    }

    /// A source that answers after `delay` (`Ok`, or a connection refused when `fail` is set).
    fn source(
        &self,
        delay: Duration,
        fail: Arc<AtomicBool>,
    ) -> impl muster::Fetcher<u64, Output = u32, Error = std::io::Error> + use<> {
        let calls = self.clone();
        fetcher_fn(move |_: &u64| {
            calls.started.fetch_add(1, Ordering::SeqCst);
            let mut guard = Dropped(Arc::clone(&calls.dropped), true);
            let fail = fail.load(Ordering::SeqCst);
            async move {
                tokio::time::sleep(delay).await;
                guard.disarm();
                if fail { Err(refused()) } else { Ok(1) }
            }
        })
    }
}

fn flag(value: bool) -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(value))
}

fn failing_sibling(after: Duration) -> impl muster::Fetcher<u64, Output = (), Error = std::io::Error> {
    fetcher_fn(move |_: &u64| async move {
        tokio::time::sleep(after).await;
        Err::<(), _>(refused())
    })
}

#[tokio::test(start_paused = true)]
async fn a_healthy_source_cancelled_by_a_failing_sibling_10000_times_never_opens_its_breaker() {
    let _serial = SERIAL.lock().await;
    let calls = Calls::default();
    let breaker = eager();
    let healthy = breaker.handle();
    let sibling_breaker = eager();
    let sibling = sibling_breaker.handle();
    let aggregator = Aggregator::builder()
        .source_with("healthy", calls.source(ms(20), flag(false)), (breaker, Timeout(ms(500))))
        .source_with("failing", failing_sibling(ms(1)), (sibling_breaker, Timeout(ms(500))))
        .build()
        .unwrap();
    for _ in 0..10_000 {
        let error = aggregator.aggregate(&1).await.unwrap_err();
        assert_eq!(error.source_name(), Some("failing"));
        // The sibling's own breaker is forced closed so that it keeps failing the aggregation.
        sibling.force_close();
    }
    assert_eq!((calls.started(), calls.dropped()), (10_000, 10_000), "the healthy source was cancelled every time");
    assert_eq!(healthy.trips(), 0, "cancellations by a sibling counted as failures");
    assert_eq!(healthy.state(), BreakerState::Closed);
    // The same eager breaker opens on the source's own failure: the test can fail.
    assert_eq!(sibling.trips(), 10_000);
}

#[tokio::test(start_paused = true)]
async fn the_global_deadline_and_a_timeout_left_to_it_do_not_count() {
    let _serial = SERIAL.lock().await;
    let calls = Calls::default();
    let breaker = eager();
    let handle = breaker.handle();
    // The source's own timeout ends after the deadline: the deadline ends the call.
    let aggregator = Aggregator::builder()
        .source_with("slow", calls.source(ms(1_000), flag(false)), (breaker, Timeout(ms(300))))
        .options(Deadline(ms(100)))
        .build()
        .unwrap();
    for _ in 0..50 {
        let error = aggregator.aggregate(&1).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Timeout);
    }
    assert_eq!((handle.trips(), handle.state()), (0, BreakerState::Closed));
    assert_eq!(calls.started(), 50, "every call reached the source");
}

#[tokio::test(start_paused = true)]
async fn the_sources_own_timeout_counts() {
    let _serial = SERIAL.lock().await;
    let calls = Calls::default();
    let breaker = eager();
    let handle = breaker.handle();
    let aggregator = Aggregator::builder()
        .source_with("slow", calls.source(ms(1_000), flag(false)), (breaker, Timeout(ms(50))))
        .options(Deadline(ms(100)))
        .build()
        .unwrap();
    aggregator.aggregate(&1).await.unwrap_err();
    assert_eq!(handle.trips(), 1, "a TimeoutError::Elapsed is the source's own failure");
}

#[tokio::test(start_paused = true)]
async fn a_coalesced_waiter_leaving_does_not_count() {
    let _serial = SERIAL.lock().await;
    let calls = Calls::default();
    let breaker = eager();
    let handle = breaker.handle();
    // The sibling fails only the calls whose context asks for it.
    let sibling = fetcher_fn(|_: &u64| async {
        let fail = muster::context().is_some_and(|context| context.field("fail").is_some());
        tokio::time::sleep(ms(5)).await;
        if fail { Err(std::io::Error::other("sibling down")) } else { Ok(()) }
    });
    let aggregator = Aggregator::builder()
        .source_with("shared", calls.source(ms(50), flag(false)), (breaker, Coalesce))
        .source("sibling", sibling)
        .build()
        .unwrap();
    for _ in 0..20 {
        let leaving = aggregator.aggregate_with(&1, RequestContext::new().field("fail", "1"));
        let staying = aggregator.aggregate(&1);
        let (left, stayed) = tokio::join!(leaving, staying);
        assert_eq!(left.unwrap_err().source_name(), Some("sibling"));
        assert_eq!(stayed.unwrap().outputs.0, 1, "the waiter that stayed got the shared answer");
    }
    assert_eq!((handle.trips(), handle.state()), (0, BreakerState::Closed));
    // Waiters only leave: one shared call per pair, never cancelled.
    assert_eq!((calls.started(), calls.dropped()), (20, 0));
}

/// A source that fails while `fail` is set, and the breaker around it.
type Flaky = Aggregator<u64, (Option<u32>,)>;

fn flaky(breaker: CircuitBreaker) -> (Flaky, BreakerHandle, Calls, Arc<AtomicBool>) {
    let calls = Calls::default();
    let fail = flag(true);
    let handle = breaker.handle();
    let aggregator = Aggregator::builder()
        .source_with("flaky", calls.source(ms(10), Arc::clone(&fail)), (muster::Optional, breaker))
        .build()
        .unwrap();
    (aggregator, handle, calls, fail)
}

fn retry_in(handle: &BreakerHandle) -> Option<Duration> {
    match handle.state() {
        BreakerState::Open { retry_in } => retry_in,
        state => panic!("not open: {state:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_frees_its_slot_without_a_verdict() {
    let _serial = SERIAL.lock().await;
    let calls = Calls::default();
    let fail = flag(true);
    let breaker = eager().open_for(ms(1_000), ms(8_000));
    let handle = breaker.handle();
    let sibling = fetcher_fn(|_: &u64| async {
        let fail = muster::context().is_some_and(|context| context.field("fail").is_some());
        tokio::time::sleep(ms(5)).await;
        if fail { Err(std::io::Error::other("sibling down")) } else { Ok(()) }
    });
    let aggregator = Aggregator::builder()
        .source_with("probed", calls.source(ms(50), Arc::clone(&fail)), (muster::Optional, breaker))
        .source("sibling", sibling)
        .build()
        .unwrap();
    aggregator.aggregate(&1).await.unwrap();
    assert_eq!(retry_in(&handle), Some(ms(1_000)));
    tokio::time::advance(ms(1_000)).await;
    fail.store(false, Ordering::SeqCst);
    // The probe is cancelled by the sibling: the slot is freed, no verdict.
    aggregator.aggregate_with(&1, RequestContext::new().field("fail", "1")).await.unwrap_err();
    assert_eq!((calls.started(), calls.dropped()), (2, 1));
    assert_eq!(handle.state(), BreakerState::HalfOpen);
    // The next call gets the slot, succeeds and closes the breaker.
    let aggregate = aggregator.aggregate(&1).await.unwrap();
    assert_eq!(aggregate.outputs.0, Some(1));
    assert_eq!(handle.state(), BreakerState::Closed);
    assert_eq!(handle.trips(), 1);
}

#[tokio::test(start_paused = true)]
async fn probes_are_reserved_one_at_a_time() {
    let _serial = SERIAL.lock().await;
    let (aggregator, handle, calls, fail) = flaky(eager().open_for(ms(1_000), ms(1_000)));
    aggregator.aggregate(&1).await.unwrap();
    tokio::time::advance(ms(1_000)).await;
    fail.store(false, Ordering::SeqCst);
    let (a, b, c) = tokio::join!(aggregator.aggregate(&1), aggregator.aggregate(&1), aggregator.aggregate(&1));
    let answered = [a, b, c].into_iter().filter(|result| result.as_ref().unwrap().outputs.0.is_some()).count();
    assert_eq!((answered, calls.started()), (1, 2), "one probe went through, the others were refused");
    assert_eq!(handle.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn the_open_duration_doubles_with_each_failed_probe_up_to_its_cap() {
    let _serial = SERIAL.lock().await;
    let (aggregator, handle, calls, fail) = flaky(eager().open_for(ms(1_000), ms(3_000)));
    aggregator.aggregate(&1).await.unwrap();
    let mut durations = vec![retry_in(&handle).unwrap()];
    for _ in 0..3 {
        tokio::time::advance(retry_in(&handle).unwrap()).await;
        aggregator.aggregate(&1).await.unwrap();
        durations.push(retry_in(&handle).unwrap());
    }
    assert_eq!(durations, [ms(1_000), ms(2_000), ms(3_000), ms(3_000)]);
    assert_eq!(calls.started(), 4, "one call and three probes; the source was never called while open");
    tokio::time::advance(ms(3_000)).await;
    fail.store(false, Ordering::SeqCst);
    aggregator.aggregate(&1).await.unwrap();
    assert_eq!(handle.state(), BreakerState::Closed);
    // Closed again: the next trip starts from the base duration.
    fail.store(true, Ordering::SeqCst);
    aggregator.aggregate(&1).await.unwrap();
    assert_eq!(retry_in(&handle), Some(ms(1_000)));
}

#[tokio::test(start_paused = true)]
async fn the_handle_forces_the_breaker_open_and_closed() {
    let _serial = SERIAL.lock().await;
    let (aggregator, handle, calls, fail) = flaky(CircuitBreaker::new());
    fail.store(false, Ordering::SeqCst);
    handle.force_open();
    assert_eq!(handle.state(), BreakerState::Open { retry_in: None });
    tokio::time::advance(Duration::from_secs(3_600)).await;
    let aggregate = aggregator.aggregate(&1).await.unwrap();
    assert_eq!((aggregate.outputs.0, calls.started()), (None, 0), "forced open stays open");
    assert!(aggregate.report.source("flaky").unwrap().notes.contains(&"circuit open".to_owned()));
    handle.force_close();
    assert_eq!(handle.state(), BreakerState::Closed);
    assert_eq!(aggregator.aggregate(&1).await.unwrap().outputs.0, Some(1));
    assert_eq!(handle.trips(), 0, "forcing is not a trip");
}

#[tokio::test(start_paused = true)]
async fn the_failure_rate_needs_the_minimum_number_of_calls() {
    let _serial = SERIAL.lock().await;
    let breaker = CircuitBreaker::new().window(SlidingWindow::Count(10)).min_calls(4).failure_rate(50.0);
    let (aggregator, handle, _, fail) = flaky(breaker);
    for _ in 0..3 {
        aggregator.aggregate(&1).await.unwrap();
    }
    assert_eq!(handle.state(), BreakerState::Closed, "3 failures, but fewer than 4 calls");
    fail.store(false, Ordering::SeqCst);
    aggregator.aggregate(&1).await.unwrap();
    fail.store(true, Ordering::SeqCst);
    let aggregate = aggregator.aggregate(&1).await.unwrap();
    assert!(matches!(handle.state(), BreakerState::Open { .. }), "4 failures of 5 calls");
    let notes = &aggregate.report.source("flaky").unwrap().notes;
    assert!(notes.contains(&"circuit opened (failure rate), retry in 5.0s".to_owned()), "{notes:?}");
}

#[tokio::test(start_paused = true)]
async fn a_time_window_forgets_old_failures() {
    let _serial = SERIAL.lock().await;
    let breaker = CircuitBreaker::new().window(SlidingWindow::Time(Duration::from_secs(10))).min_calls(3);
    let (aggregator, handle, _, _) = flaky(breaker);
    for _ in 0..4 {
        aggregator.aggregate(&1).await.unwrap();
        tokio::time::advance(Duration::from_secs(6)).await;
    }
    assert_eq!(handle.state(), BreakerState::Closed, "never 3 calls within 10 s");
    aggregator.aggregate(&1).await.unwrap();
    aggregator.aggregate(&1).await.unwrap();
    assert!(matches!(handle.state(), BreakerState::Open { .. }), "3 failures within 10 s");
}

#[tokio::test(start_paused = true)]
async fn a_slow_call_rate_opens_the_breaker() {
    let _serial = SERIAL.lock().await;
    let calls = Calls::default();
    let breaker = CircuitBreaker::new().window(SlidingWindow::Count(4)).min_calls(4).slow_calls(ms(100), 50.0);
    let handle = breaker.handle();
    let slow = calls.source(ms(150), flag(false));
    let aggregator = Aggregator::builder().source_with("slow", slow, breaker).build().unwrap();
    for _ in 0..3 {
        aggregator.aggregate(&1).await.unwrap();
    }
    assert_eq!(handle.state(), BreakerState::Closed);
    aggregator.aggregate(&1).await.unwrap();
    assert!(matches!(handle.state(), BreakerState::Open { .. }), "4 slow calls of 4");
}

#[tokio::test(start_paused = true)]
async fn a_fallback_answers_at_once_when_open() {
    let _serial = SERIAL.lock().await;
    let calls = Calls::default();
    let breaker = eager();
    let handle = breaker.handle();
    let down = calls.source(ms(200), flag(true));
    let aggregator = Aggregator::builder()
        .source_with(
            "offers",
            down,
            (Fallback(0), breaker, Retry::attempts(3).backoff(ms(10), ms(10)), Timeout(ms(300))),
        )
        .build()
        .unwrap();
    aggregator.aggregate(&1).await.unwrap();
    assert_eq!(calls.started(), 3, "the first call's attempts");
    assert_eq!(handle.trips(), 1, "one verdict per call, after its retries");
    let started = Instant::now();
    let aggregate = aggregator.aggregate(&1).await.unwrap();
    assert_eq!((aggregate.outputs.0, started.elapsed(), calls.started()), (0, Duration::ZERO, 3));
    let report = aggregate.report.source("offers").unwrap();
    assert_eq!(report.kind, Some(ErrorKind::CircuitOpen));
    assert_eq!(report.notes, ["circuit open, retry in 5.0s"]);
}

/// A server that answers every request with `status`.
async fn answering(status: &'static str) -> Server {
    Server::start(move |mut conn| async move {
        while conn.read_request().await.is_some() {
            let headers = [("content-type", "application/json")];
            if conn.respond(status, &headers, b"{}").await.is_err() {
                break;
            }
        }
    })
    .await
}

fn http(server: &Server) -> HttpFetcher {
    HttpFetcher::builder(&server.url("/v1/transactions/{id}")).build().unwrap()
}

#[tokio::test]
async fn a_404_does_not_count_and_a_503_does_through_a_timeout() {
    let _serial = SERIAL.lock().await;
    let not_found = answering("404 Not Found").await;
    let breaker = eager();
    let handle = breaker.handle();
    let aggregator = Aggregator::builder()
        .source_with("transactions", http(&not_found), (breaker, Timeout(ms(2_000))))
        .build()
        .unwrap();
    for _ in 0..5 {
        let error = aggregator.aggregate(&1).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Status);
    }
    assert_eq!(handle.trips(), 0, "a 404 shows the source is up");

    let unavailable = answering("503 Service Unavailable").await;
    let breaker = eager();
    let handle = breaker.handle();
    let aggregator = Aggregator::builder()
        .source_with("transactions", http(&unavailable), (breaker, Timeout(ms(2_000))))
        .build()
        .unwrap();
    aggregator.aggregate(&1).await.unwrap_err();
    assert_eq!(handle.trips(), 1, "a 503 is the source's failure");
}

#[tokio::test]
async fn a_connection_refused_counts() {
    let _serial = SERIAL.lock().await;
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let fetcher = HttpFetcher::builder(&format!("http://127.0.0.1:{port}/v1/{{id}}")).build().unwrap();
    let breaker = eager();
    let handle = breaker.handle();
    let aggregator = Aggregator::builder().source_with("transactions", fetcher, breaker).build().unwrap();
    let error = aggregator.aggregate(&1).await.unwrap_err();
    assert_eq!((error.kind(), handle.trips()), (ErrorKind::Connect, 1));
}

#[tokio::test]
async fn circuit_open_is_reported_in_all_five_places_and_no_connection_is_made() {
    let _serial = SERIAL.lock().await;
    let server = answering("500 Internal Server Error").await;
    let breaker = CircuitBreaker::new().window(SlidingWindow::Count(10)).min_calls(2);
    let handle = breaker.handle();
    let aggregator = Aggregator::builder()
        .source_with("transactions", http(&server), (breaker, Timeout(ms(2_000))))
        .build()
        .unwrap();
    let capture = Capture::default();
    let _tracing = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    // Tracing caches per-callsite interest process-wide; another test's thread (without a
    // subscriber) may have registered the callsites first.
    tracing::callsite::rebuild_interest_cache();
    let recorder = TestRecorder::default();
    let _metrics = metrics::set_default_local_recorder(&recorder);

    for _ in 0..2 {
        assert_eq!(aggregator.aggregate(&1).await.unwrap_err().kind(), ErrorKind::Status);
    }
    assert!(matches!(handle.state(), BreakerState::Open { .. }));
    let connections = server.accepted();
    let error = aggregator.aggregate(&1).await.unwrap_err();
    assert_eq!(server.accepted(), connections, "no connection while open");
    // The error, the report, the warn event, the outcome metric, the axum body.
    assert_eq!(error.kind(), ErrorKind::CircuitOpen);
    assert_eq!(error.kind().as_str(), "circuit_open");
    assert!(!error.is_retryable());
    let source = error.report().source("transactions").unwrap();
    assert_eq!(source.kind, Some(ErrorKind::CircuitOpen));
    assert!(source.notes[0].starts_with("circuit open, retry in "), "{:?}", source.notes);
    let events = capture.0.lock().unwrap().clone();
    let failed = with_message(&events, "aggregation failed");
    assert_eq!(failed.last().and_then(|event| field(event, "kind")), Some("circuit_open"), "{events:#?}");
    assert_eq!(
        recorder.counter("muster_source_outcomes_total{kind=circuit_open,outcome=failed,source=transactions}"),
        1
    );
    let (status, body) = muster::axum::error_body(&error);
    assert_eq!((status, body["kind"].as_str()), (StatusCode::BAD_GATEWAY, Some("circuit_open")));
    // The transition: one info event with the source's name, and the breaker's metrics.
    let transitions: Vec<_> = events.iter().filter(|event| field(event, "to").is_some()).collect();
    assert_eq!(transitions.len(), 1, "{transitions:#?}");
    let transition = transitions[0];
    assert_eq!(
        (
            field(transition, "level"),
            field(transition, "source"),
            field(transition, "from"),
            field(transition, "reason")
        ),
        (Some("INFO"), Some("transactions"), Some("closed"), Some("failure rate"))
    );
    assert_eq!(recorder.counter("muster_breaker_transitions_total{source=transactions,to=open}"), 1);
    assert_eq!(recorder.counter("muster_breaker_rejections_total{source=transactions}"), 1);
    assert_eq!(recorder.gauge("muster_breaker_state{source=transactions}"), Some(2.0));
}

#[test]
fn bad_values_are_refused_when_the_aggregator_is_built() {
    let build = |breaker: CircuitBreaker| {
        let source = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(1) });
        match Aggregator::builder().source_with("s", source, breaker).build() {
            Err(BuildError::Source { error: OptionError::Invalid { policy, problem }, .. }) => {
                format!("{policy}: {problem}")
            }
            Err(error) => panic!("another error: {error}"),
            Ok(_) => "accepted".to_owned(),
        }
    };
    let cases = [
        (
            CircuitBreaker::new().window(SlidingWindow::Count(0)),
            "circuit breaker: the window must hold at least 1 call",
        ),
        (
            CircuitBreaker::new().window(SlidingWindow::Time(Duration::ZERO)),
            "circuit breaker: the window must be at least 10ms, not 0ns",
        ),
        (CircuitBreaker::new().failure_rate(150.0), "circuit breaker: the failure rate must be in (0, 100] %, not 150"),
        (CircuitBreaker::new().failure_rate(-1.0), "circuit breaker: the failure rate must be in (0, 100] %, not -1"),
        (
            CircuitBreaker::new().failure_rate(f64::NAN),
            "circuit breaker: the failure rate must be in (0, 100] %, not NaN",
        ),
        (CircuitBreaker::new().min_calls(0), "circuit breaker: the minimum number of calls must be at least 1"),
        (
            CircuitBreaker::new().slow_calls(ms(100), 101.0),
            "circuit breaker: the slow-call rule needs a threshold over 0 and a rate in (0, 100] %, not 100ms and 101",
        ),
        (CircuitBreaker::new().consecutive_failures(0), "circuit breaker: the consecutive failures must be at least 1"),
        (
            CircuitBreaker::new().open_for(ms(0), ms(10)),
            "circuit breaker: the open duration must satisfy 0 < base <= max (base 0ns, max 10ms)",
        ),
        (
            CircuitBreaker::new().open_for(ms(20), ms(10)),
            "circuit breaker: the open duration must satisfy 0 < base <= max (base 20ms, max 10ms)",
        ),
        (CircuitBreaker::new().probes(0), "circuit breaker: the half-open state needs at least 1 probe"),
        (CircuitBreaker::new(), "accepted"),
    ];
    for (breaker, expected) in cases {
        assert_eq!(build(breaker), expected);
    }
}

#[test]
fn a_breaker_error_passes_the_kind_and_status_on() {
    let open = muster::policy::BreakerError::<std::io::Error>::Open { retry_in: Some(ms(4_200)) };
    assert_eq!(
        (open.kind(), open.is_retryable(), open.to_string()),
        (ErrorKind::CircuitOpen, false, "circuit open, retry in 4.2s".to_owned())
    );
    let inner = muster::policy::BreakerError::Inner(refused());
    assert_eq!((inner.kind(), inner.is_retryable()), (ErrorKind::Connect, true));
}
