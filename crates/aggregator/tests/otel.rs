//! OpenTelemetry (feature `otel`), with the SDK's in-memory exporter: an incoming
//! `traceparent` continues the trace; the spans form aggregation → source → attempt; each HTTP
//! attempt's outbound `traceparent` has the trace's id and that attempt's span as its parent.
//! The backend is a real HTTP server on 127.0.0.1 that records what it was sent. A circuit
//! breaker's transition is an event of the source's span.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster::http::HttpFetcher;
use muster::{Aggregator, RequestContext, Retry};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing_subscriber::layer::SubscriberExt as _;

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

/// A backend that answers 503 to its first request and `{}` after, recording each request's
/// `traceparent`.
async fn backend() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        for answer in 0.. {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.is_ok_and(|read| read == 1) {
                head.push(byte[0]);
            }
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let traceparent = head.lines().find_map(|line| line.strip_prefix("traceparent: ")).unwrap_or("").to_owned();
            log.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(traceparent.trim().to_owned());
            let reply: &[u8] = if answer == 0 {
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}"
            };
            let _ = socket.write_all(reply).await;
        }
    });
    (format!("http://{addr}/profile/{{id}}"), seen)
}

/// Spans exported to memory, through `tracing-opentelemetry`, for this thread while the guard
/// lives.
fn traced() -> (InMemorySpanExporter, SdkTracerProvider, tracing::subscriber::DefaultGuard) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    (exporter, provider, tracing::subscriber::set_default(subscriber))
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|span| span.name == name).collect()
}

#[tokio::test(flavor = "current_thread")]
async fn the_trace_continues_and_each_attempt_is_the_backends_parent() {
    let (exporter, provider, _default) = traced();

    let (template, seen) = backend().await;
    let profile = HttpFetcher::builder(&template).build().expect("a valid template");
    let retry = Retry::attempts(2).backoff(Duration::from_millis(1), Duration::from_millis(1)).jitter(0.0);
    let aggregator = Aggregator::builder().source_with("profile", profile, retry).build().expect("valid");
    let context = RequestContext::new().traceparent(format!("00-{TRACE}-{CALLER}-01"));
    aggregator.aggregate_with("42", context).await.expect("the retry succeeds");
    provider.force_flush().expect("flush");

    let spans = exporter.get_finished_spans().expect("the spans");
    let [aggregate] = named(&spans, "aggregate")[..] else { panic!("one aggregate span in {spans:#?}") };
    let [source] = named(&spans, "source")[..] else { panic!("one source span in {spans:#?}") };
    let attempts = named(&spans, "attempt");
    assert_eq!(attempts.len(), 2, "{spans:#?}");
    // The caller's trace goes on: same trace id, the caller's span as the parent.
    assert_eq!(aggregate.span_context.trace_id().to_string(), TRACE);
    assert_eq!(aggregate.parent_span_id.to_string(), CALLER);
    assert!(aggregate.parent_span_is_remote);
    // aggregation → source → attempt.
    assert_eq!(source.parent_span_id, aggregate.span_context.span_id());
    for attempt in &attempts {
        assert_eq!(attempt.parent_span_id, source.span_context.span_id());
        assert_eq!(attempt.span_context.trace_id().to_string(), TRACE);
    }
    assert_ne!(attempts[0].span_context.span_id(), attempts[1].span_context.span_id(), "a new span per attempt");
    // Each request carried its own attempt as the parent.
    let mut sent = seen.lock().unwrap().clone();
    let mut expected: Vec<String> =
        attempts.iter().map(|attempt| format!("00-{TRACE}-{}-01", attempt.span_context.span_id())).collect();
    sent.sort();
    expected.sort();
    assert_eq!(sent, expected);
}

#[tokio::test(flavor = "current_thread")]
async fn without_a_caller_the_trace_starts_at_the_aggregation_and_a_bad_traceparent_is_ignored() {
    let (exporter, provider, _default) = traced();
    let (template, seen) = backend().await;
    let aggregator = Aggregator::builder()
        .source_with("profile", HttpFetcher::builder(&template).build().expect("valid"), Retry::attempts(2).jitter(0.0))
        .build()
        .expect("valid");
    let context = RequestContext::new().traceparent("00-not-a-trace-01");
    aggregator.aggregate_with("42", context).await.expect("the retry succeeds");
    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("the spans");
    let [aggregate] = named(&spans, "aggregate")[..] else { panic!("one aggregate span in {spans:#?}") };
    assert_ne!(aggregate.span_context.trace_id().to_string(), TRACE);
    assert!(!aggregate.parent_span_is_remote);
    let trace = aggregate.span_context.trace_id().to_string();
    assert!(seen.lock().unwrap().iter().all(|sent| sent.starts_with(&format!("00-{trace}-"))));
}

/// A backend that answers every request with `reply`, or never answers (`None`), holding the
/// connection open.
async fn answering(reply: Option<&'static [u8]>) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && socket.read(&mut byte).await.is_ok_and(|read| read == 1) {
                head.push(byte[0]);
            }
            match reply {
                Some(reply) => drop(socket.write_all(reply).await),
                None => held.push(socket),
            }
        }
    });
    addr
}

fn attribute(span: &SpanData, key: &str) -> Option<opentelemetry::Value> {
    span.attributes.iter().find(|attribute| attribute.key.as_str() == key).map(|attribute| attribute.value.clone())
}

fn text(span: &SpanData, key: &str) -> Option<String> {
    attribute(span, key).map(|value| value.as_str().into_owned())
}

fn error_description(span: &SpanData) -> Option<String> {
    match &span.status {
        opentelemetry::trace::Status::Error { description } => Some(description.to_string()),
        _ => None,
    }
}

/// Prints `span` and its children, indented by `depth`.
fn print_tree(spans: &[SpanData], span: &SpanData, depth: usize) {
    let mut attributes: Vec<String> = (span.attributes.iter())
        .filter(|attribute| {
            !attribute.key.as_str().starts_with("code.") && !attribute.key.as_str().starts_with("thread.")
        })
        .map(|attribute| format!("{}={}", attribute.key, attribute.value))
        .collect();
    attributes.sort();
    println!(
        "{:indent$}{} [{:?}] {:?} {}",
        "",
        span.name,
        span.span_kind,
        span.status,
        attributes.join(" "),
        indent = depth * 2
    );
    for child in spans.iter().filter(|child| child.parent_span_id == span.span_context.span_id()) {
        print_tree(spans, child, depth + 1);
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_failing_request_shows_its_failure_on_every_span_and_the_cancelled_sibling_says_why() {
    use opentelemetry::trace::SpanKind;

    let (exporter, provider, _default) = traced();
    let failing =
        answering(Some(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")).await;
    let silent = answering(None).await;
    let profile =
        HttpFetcher::builder(&format!("http://{failing}/profile/{{id}}?token=secret")).build().expect("valid");
    let ledger = HttpFetcher::builder(&format!("http://{silent}/ledger/{{id}}")).build().expect("valid");
    let aggregator = Aggregator::builder().source("ledger", ledger).source("profile", profile).build().expect("valid");
    let error = aggregator.aggregate(&"42").await.expect_err("the profile fails");
    assert_eq!(error.kind().as_str(), "status");
    provider.force_flush().expect("flush");
    let spans = exporter.get_finished_spans().expect("the spans");

    let [aggregate] = named(&spans, "aggregate")[..] else { panic!("one aggregate span in {spans:#?}") };
    // The tree, for the eye (`-- --nocapture`): each span's kind, status and attributes.
    print_tree(&spans, aggregate, 0);
    assert_eq!(text(aggregate, "error.type").as_deref(), Some("status"));
    assert!(error_description(aggregate).is_some_and(|text| text.contains("profile")), "{aggregate:#?}");

    let sources = named(&spans, "source");
    let source = |name: &str| {
        *sources.iter().find(|span| text(span, "source").as_deref() == Some(name)).expect("the source span")
    };
    let (profile, ledger) = (source("profile"), source("ledger"));
    assert_eq!(text(profile, "error.type").as_deref(), Some("status"));
    assert!(error_description(profile).is_some_and(|text| text.contains("503")), "{profile:#?}");
    let cause = text(ledger, "cancelled").expect("the cancelled source says why");
    assert!(cause.contains("cancelled by `profile`"), "{cause}");
    assert!(error_description(ledger).is_some_and(|text| text.starts_with("cancelled: ")), "{ledger:#?}");

    let attempts = named(&spans, "attempt");
    let attempt = |source: &SpanData| {
        *attempts.iter().find(|span| span.parent_span_id == source.span_context.span_id()).expect("the attempt")
    };
    let failed = attempt(profile);
    assert_eq!(failed.span_kind, SpanKind::Client);
    assert_eq!(text(failed, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(attribute(failed, "http.response.status_code"), Some(opentelemetry::Value::I64(503)));
    assert_eq!(text(failed, "error.type").as_deref(), Some("503"));
    assert_eq!(text(failed, "server.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(attribute(failed, "server.port"), Some(opentelemetry::Value::I64(i64::from(failing.port()))));
    assert_eq!(text(failed, "url.full"), Some(format!("http://{failing}/profile/42")), "no query");
    assert!(error_description(failed).is_some(), "{failed:#?}");

    let cancelled = attempt(ledger);
    assert_eq!(cancelled.span_kind, SpanKind::Client);
    assert_eq!(text(cancelled, "error.type").as_deref(), Some("cancelled"));
    assert_eq!(attribute(cancelled, "http.response.status_code"), None);
    assert!(text(cancelled, "cancelled").is_some_and(|cause| cause.contains("cancelled by `profile`")));
    assert!(error_description(cancelled).is_some_and(|text| text.starts_with("cancelled: ")), "{cancelled:#?}");
}

#[tokio::test(flavor = "current_thread")]
async fn a_breaker_transition_is_an_event_of_the_source_span() {
    let (exporter, provider, _default) = traced();
    tracing::callsite::rebuild_interest_cache();
    let refused = muster::fetcher_fn(|_: &u64| async {
        Err::<(), _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    });
    let breaker = muster::policy::CircuitBreaker::new().min_calls(1).consecutive_failures(1);
    let aggregator = Aggregator::builder().source_with("transactions", refused, breaker).build().expect("valid");
    assert!(aggregator.aggregate(&1).await.is_err());
    provider.force_flush().expect("flush");

    let spans = exporter.get_finished_spans().expect("the spans");
    let [source] = named(&spans, "source")[..] else { panic!("one source span in {spans:#?}") };
    let transitions: Vec<_> = source.events.iter().filter(|event| event.name == "circuit open").collect();
    assert_eq!(transitions.len(), 1, "{:#?}", source.events);
    let attribute = |key: &str| {
        transitions[0].attributes.iter().find(|pair| pair.key.as_str() == key).map(|pair| pair.value.to_string())
    };
    assert_eq!((attribute("from").as_deref(), attribute("to").as_deref()), (Some("closed"), Some("open")));
    assert_eq!(attribute("retry_in_ms").as_deref(), Some("5000"));
}
