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
use tracing_subscriber::layer::{Context, SubscriberExt as _};

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

/// The fields an `aggregate` span was made with, and the fields recorded into it afterwards.
#[derive(Clone, Default)]
struct AggregateSpans(std::sync::Arc<std::sync::Mutex<(Fields, Vec<String>)>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for AggregateSpans {
    fn on_new_span(&self, attributes: &tracing::span::Attributes<'_>, _: &tracing::span::Id, _: Context<'_, S>) {
        if attributes.metadata().name() == "aggregate" {
            let mut state = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            attributes.record(&mut Given(&mut state.0));
        }
    }

    fn on_record(&self, _: &tracing::span::Id, values: &tracing::span::Record<'_>, _: Context<'_, S>) {
        let mut recorded = Fields::new();
        values.record(&mut Given(&mut recorded));
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1.extend(recorded.into_keys());
    }
}

struct Given<'a>(&'a mut Fields);

impl tracing::field::Visit for Given<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

#[tokio::test(start_paused = true)]
async fn the_aggregate_span_is_made_with_its_context_fields_not_recorded_one_by_one() {
    let spans = AggregateSpans::default();
    let capture = Capture::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone()).with(capture.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok(1u8))
        .options(Field::new("service", "dashboard"))
        .build()
        .unwrap();

    aggregator
        .aggregate_with(&(), RequestContext::new().field("user_id", 42).field("request_id", "r-1"))
        .await
        .unwrap();
    let (given, recorded) = spans.0.lock().unwrap().clone();
    let expected: Fields = [("service", "dashboard"), ("user_id", "42"), ("request_id", "r-1")]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into();
    assert_eq!(given, expected, "given when the span was made");
    assert!(recorded.is_empty(), "a success records nothing more: {recorded:?}");

    // More fields than are given at once: the rest are recorded, and every one is on the span.
    *spans.0.lock().unwrap() = Default::default();
    let failing = Aggregator::builder().source("profile", MockFetcher::<u8>::err("503")).build().unwrap();
    let context = (0..11).fold(RequestContext::new(), |context, i| context.field(format!("f{i}"), i));
    failing.aggregate_with(&(), context).await.unwrap_err();
    let (given, recorded) = spans.0.lock().unwrap().clone();
    assert_eq!(given.len(), 8, "{given:?}");
    assert_eq!(&recorded[..3], ["f8", "f9", "f10"], "{recorded:?}");
    let events = capture.0.lock().unwrap().clone();
    let failure = with_message(&events, "aggregation failed");
    assert!((0..11).all(|i| field(failure[0], &format!("f{i}")) == Some(&*i.to_string())), "{failure:#?}");
}
