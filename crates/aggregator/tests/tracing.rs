//! Tracing: the failure event carries the request's fields, the source, the kind and the elapsed
//! time; every aggregation ends with one summary event carrying the whole report.
//!
//! Alone in its test binary: tracing caches per-callsite interest process-wide, so a test
//! installing a thread-local subscriber would race with other tests' threads.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster::{Aggregator, Deadline, Field, ParentSpan};
use muster_adapters::mock::MockFetcher;
use tracing::field::{Field as TracingField, Visit};
use tracing::span::{Attributes, Id};
use tracing::{Event, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;

type Fields = BTreeMap<String, String>;

/// Records every event with its own fields and those of every span it is in.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Fields>>>);

struct Collect<'a>(&'a mut Fields);

impl Visit for Collect<'_> {
    fn record_debug(&mut self, field: &TracingField, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &TracingField, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attributes: &Attributes<'_>, id: &Id, context: Context<'_, S>) {
        let mut fields = Fields::new();
        attributes.record(&mut Collect(&mut fields));
        if let Some(span) = context.span(id) {
            span.extensions_mut().insert(fields);
        }
    }

    fn on_event(&self, event: &Event<'_>, context: Context<'_, S>) {
        let mut fields = Fields::new();
        for span in context.event_scope(event).into_iter().flatten() {
            if let Some(span_fields) = span.extensions().get::<Fields>() {
                for (name, value) in span_fields {
                    fields.entry(name.clone()).or_insert_with(|| value.clone());
                }
            }
        }
        event.record(&mut Collect(&mut fields));
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(fields);
    }
}

#[tokio::test(start_paused = true)]
async fn the_failure_event_carries_the_user_the_source_the_kind_and_the_elapsed_time() {
    let capture = Capture::default();
    let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));

    let request = tracing::info_span!("dashboard", user_id = 42);
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::<u32>::err_after(Duration::from_millis(30), "503"))
        .source("transactions", MockFetcher::ok_after(Duration::from_secs(10), 1u32))
        .options((Deadline(Duration::from_secs(1)), ParentSpan(request), Field::new("request_id", "r-1")))
        .build()
        .unwrap();
    aggregator.aggregate(&()).await.unwrap_err();

    let events = capture.0.lock().unwrap().clone();
    let failure = events.iter().find(|event| event.get("message").map(String::as_str) == Some("source failed"));
    let failure = failure.unwrap_or_else(|| panic!("no failure event in {events:#?}"));
    assert_eq!(failure.get("user_id").map(String::as_str), Some("42"));
    assert_eq!(failure.get("source").map(String::as_str), Some("profile"));
    assert_eq!(failure.get("kind").map(String::as_str), Some("failed"));
    assert_eq!(failure.get("elapsed_ms").map(String::as_str), Some("30"));
    assert_eq!(failure.get("error").map(String::as_str), Some("503"));
    assert_eq!(failure.get("context").map(String::as_str), Some("request_id=r-1"));

    let cancelled = events.iter().find(|event| event.get("message").map(String::as_str) == Some("source cancelled"));
    let cancelled = cancelled.unwrap_or_else(|| panic!("no cancellation event in {events:#?}"));
    assert_eq!(cancelled.get("source").map(String::as_str), Some("transactions"));
    assert_eq!(cancelled.get("cause").map(String::as_str), Some("cancelled by `profile`: 503"));

    let summary: Vec<&Fields> = events
        .iter()
        .filter(|event| event.get("message").map(String::as_str) == Some("aggregation finished"))
        .collect();
    assert_eq!(summary.len(), 1, "one summary event per aggregation");
    assert_eq!(summary[0].get("user_id").map(String::as_str), Some("42"));
    assert_eq!(summary[0].get("outcome").map(String::as_str), Some("failed"));
    assert_eq!(summary[0].get("trigger").map(String::as_str), Some("profile"));
    assert_eq!(
        summary[0].get("report").map(String::as_str),
        Some("profile=failed@0ns+30ms/1 transactions=cancelled@0ns+30ms/1")
    );
}
