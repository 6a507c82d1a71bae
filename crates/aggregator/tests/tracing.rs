//! Tracing: exactly one warn event per failed aggregation, carrying the call's context fields
//! (as separate fields of the `aggregate` span), the source, the kind, the elapsed time, the
//! cause chain and the cancelled siblings; per-source events at debug; one info event when the
//! caller goes away.
//!
//! Alone in its test binary: tracing caches per-callsite interest process-wide, so a test
//! installing a thread-local subscriber would race with other tests' threads.

use std::time::Duration;

use muster::{Aggregator, Deadline, RequestContext, options::Field};
use muster_adapters::mock::MockFetcher;
use tracing_subscriber::layer::SubscriberExt as _;

#[path = "support/capture.rs"]
mod capture;

use capture::{Capture, Fields, field, with_message};

#[tokio::test(start_paused = true)]
async fn one_warn_event_per_failed_aggregation_with_the_calls_fields() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));

    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::<u32>::err_after(Duration::from_millis(30), "503"))
        .source("transactions", MockFetcher::ok_after(Duration::from_secs(10), 1u32))
        .options((Deadline(Duration::from_secs(1)), Field::new("service", "dashboard")))
        .build()
        .unwrap();
    let context = RequestContext::new().field("user_id", 42).field("request_id", "r-1");
    aggregator.aggregate_with(&(), context).await.unwrap_err();

    let events = capture.0.lock().unwrap().clone();
    let warnings: Vec<&Fields> = events.iter().filter(|event| field(event, "level") != Some("DEBUG")).collect();
    assert_eq!(warnings.len(), 1, "exactly one event above debug: {events:#?}");
    let failure = warnings[0];
    assert_eq!(field(failure, "level"), Some("WARN"));
    assert_eq!(field(failure, "message"), Some("aggregation failed"));
    assert_eq!(field(failure, "user_id"), Some("42"), "a separate structured field");
    assert_eq!(field(failure, "request_id"), Some("r-1"));
    assert_eq!(field(failure, "service"), Some("dashboard"));
    assert_eq!(failure.get("context"), None, "no flattened context string");
    assert_eq!(field(failure, "source"), Some("profile"));
    assert_eq!(field(failure, "kind"), Some("failed"));
    assert_eq!(field(failure, "elapsed_ms"), Some("30"));
    assert_eq!(
        field(failure, "error"),
        Some("source `profile` failed after 30ms (service=dashboard, user_id=42, request_id=r-1): 503")
    );
    assert_eq!(field(failure, "cancelled"), Some(r#"["transactions"]"#));
    assert_eq!(field(failure, "report"), Some("profile=failed@0ms+30ms/1 transactions=cancelled@0ms+30ms/1"));

    let per_source = with_message(&events, "source failed");
    assert_eq!(per_source.len(), 1);
    assert_eq!((field(per_source[0], "level"), field(per_source[0], "source")), (Some("DEBUG"), Some("profile")));
}

#[tokio::test(start_paused = true)]
async fn a_successful_aggregation_logs_nothing_above_debug_and_a_span_without_fields_is_fine() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let aggregator = Aggregator::builder().source("profile", MockFetcher::ok(1u8)).build().unwrap();
    aggregator.aggregate(&()).await.unwrap();
    let events = capture.0.lock().unwrap().clone();
    assert!(events.iter().all(|event| field(event, "level") == Some("DEBUG")), "{events:#?}");
    assert_eq!(with_message(&events, "aggregation finished").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_caller_going_away_is_logged_once_at_info_with_what_was_in_flight() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok_after(Duration::from_millis(5), 1u8))
        .source("transactions", MockFetcher::ok_after(Duration::from_secs(10), 2u8))
        .build()
        .unwrap();
    let aggregation = aggregator.aggregate_with(&(), RequestContext::new().field("user_id", 7));
    assert!(tokio::time::timeout(Duration::from_millis(50), aggregation).await.is_err());

    let events = capture.0.lock().unwrap().clone();
    let gone = with_message(&events, "aggregation cancelled by the caller");
    assert_eq!(gone.len(), 1, "{events:#?}");
    assert_eq!(field(gone[0], "level"), Some("INFO"));
    assert_eq!(field(gone[0], "user_id"), Some("7"));
    assert_eq!(field(gone[0], "in_flight"), Some(r#"["transactions"]"#));
    assert!(events.iter().all(|event| field(event, "level") != Some("WARN")));
}
