//! Logging that never blocks serving: JSON lines on stderr through a bounded, lossy,
//! non-blocking writer (tracing-appender). When stderr is slow or nobody reads it, lines
//! are dropped instead of stalling the worker threads; the dropped lines are counted, logged
//! once a minute when there are new ones, and reported on stderr at exit. A closed stderr
//! (EPIPE) is an ignored write error on the writer thread, never a panic.
//!
//! With the `otel` feature and an OTLP endpoint (`--otlp-endpoint`), the spans (the
//! aggregation, each source, each HTTP attempt) are also exported over OTLP/HTTP, in batches
//! from a thread of their own, so exporting never blocks serving either. They carry the
//! resource attribute `service.name`: `--service-name`, else `OTEL_SERVICE_NAME`, else
//! `dashboard`. A failed export (a refused endpoint, a collector answering 5xx) loses its
//! spans: the first failure is logged at once, then at most one line a minute counts the failed
//! exports and the spans they lost since the last line.

use std::io::Write as _;
use std::time::Duration;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines buffered for the writer thread before new ones are dropped.
const BUFFERED_LINES: usize = 16 * 1024;

/// How often a count of newly dropped lines is logged.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// The installed logger: keep it until the end of `main`, then [`finish`](Self::finish) it.
#[derive(Debug)]
pub struct Logging {
    guard: WorkerGuard,
    dropped: ErrorCounter,
    #[cfg(feature = "otel")]
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
    /// Failed span exports not logged yet.
    exports: std::sync::Arc<ExportFailures>,
}

/// Why the logging could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoggingError {
    /// An OTLP endpoint was given to a dashboard built without the `otel` feature.
    #[error("--otlp-endpoint needs the dashboard built with `--features otel`")]
    NoOtel,
    /// The OTLP exporter could not be built (e.g. a bad endpoint).
    #[error("the OTLP exporter for {endpoint}: {reason}")]
    Otlp {
        /// The endpoint.
        endpoint: String,
        /// What the exporter said.
        reason: String,
    },
}

impl Logging {
    /// Installs the global subscriber: JSON lines, filtered by `RUST_LOG` (default `info`),
    /// and with `otlp` (feature `otel`) the spans exported to that OTLP/HTTP endpoint (e.g.
    /// `http://127.0.0.1:4318/v1/traces`). Does nothing more if a subscriber is already
    /// installed.
    ///
    /// # Errors
    ///
    /// A [`LoggingError`] if `otlp` is given but cannot be used.
    pub fn init(otlp: Option<&str>) -> Result<Self, LoggingError> {
        let service_name = std::env::var("OTEL_SERVICE_NAME").ok().filter(|name| !name.is_empty());
        Self::init_with(otlp, service_name.as_deref().unwrap_or(SERVICE_NAME))
    }

    /// As [`init`](Self::init), with the spans' `service.name` (`--service-name`).
    ///
    /// # Errors
    ///
    /// A [`LoggingError`] if `otlp` is given but cannot be used.
    pub fn init_with(otlp: Option<&str>, service_name: &str) -> Result<Self, LoggingError> {
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;

        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(BUFFERED_LINES)
            .thread_name("dashboard-log")
            .finish(std::io::stderr());
        let dropped = writer.error_counter();
        let json = tracing_subscriber::fmt::layer().json().with_writer(writer);
        let registry = tracing_subscriber::registry().with(filter).with(json);
        let exports = std::sync::Arc::new(ExportFailures::default());
        #[cfg(feature = "otel")]
        {
            let traces = otlp
                .map(|endpoint| otlp_provider(endpoint, service_name, std::sync::Arc::clone(&exports)))
                .transpose()?;
            let layer = traces.as_ref().map(|provider| {
                use opentelemetry::trace::TracerProvider as _;
                tracing_opentelemetry::layer().with_tracer(provider.tracer("dashboard"))
            });
            let _ = registry.with(layer).try_init();
            Ok(Self { guard, dropped, traces, exports })
        }
        #[cfg(not(feature = "otel"))]
        {
            let _ = service_name;
            if otlp.is_some() {
                return Err(LoggingError::NoOtel);
            }
            let _ = registry.try_init();
            Ok(Self { guard, dropped, exports })
        }
    }

    /// Log lines dropped so far because the writer could not keep up.
    pub fn dropped(&self) -> usize {
        self.dropped.dropped_lines()
    }

    /// Logs (as a warning) how many lines were dropped, every minute in which some were.
    /// Runs until the task is dropped.
    /// Failed span exports are counted here too (see the module docs).
    pub fn report_periodically(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let dropped = self.dropped.clone();
        let exports = std::sync::Arc::clone(&self.exports);
        async move {
            let mut reported = 0;
            let mut ticks = tokio::time::interval(REPORT_EVERY);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let now = dropped.dropped_lines();
                if now > reported {
                    tracing::warn!(
                        dropped_lines = now - reported,
                        total = now,
                        "log lines dropped: stderr is not keeping up"
                    );
                    reported = now;
                }
                if let Some(report) = exports.due(std::time::Instant::now()) {
                    report.log();
                }
            }
        }
    }

    /// Flushes what is buffered (tracing-appender waits a bounded time for it) and reports
    /// the dropped lines on stderr, if any.
    pub fn finish(self) {
        let dropped = self.dropped();
        #[cfg(feature = "otel")]
        if let Some(traces) = &self.traces {
            // Exports what is batched, for a bounded time.
            let _ = traces.shutdown_with_timeout(Duration::from_secs(2));
        }
        drop(self.guard);
        if dropped > 0 {
            let _ = writeln!(std::io::stderr(), "dashboard: {dropped} log lines were dropped (stderr too slow)");
        }
    }
}

/// The spans' `service.name` when neither `--service-name` nor `OTEL_SERVICE_NAME` gives one.
pub const SERVICE_NAME: &str = "dashboard";

/// The tracer provider exporting to `endpoint` over OTLP/HTTP (protobuf), in batches, as
/// `service_name`, counting failed exports in `failures`.
#[cfg(feature = "otel")]
fn otlp_provider(
    endpoint: &str,
    service_name: &str,
    failures: std::sync::Arc<ExportFailures>,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, LoggingError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|error| LoggingError::Otlp { endpoint: endpoint.to_owned(), reason: error.to_string() })?;
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service_name.to_owned()).build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_resource(resource)
        .with_batch_exporter(Reported { inner: exporter, failures })
        .build())
}

/// A span exporter that counts its failed exports, for the log.
#[cfg(feature = "otel")]
#[derive(Debug)]
struct Reported<E> {
    inner: E,
    failures: std::sync::Arc<ExportFailures>,
}

#[cfg(feature = "otel")]
impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter for Reported<E> {
    async fn export(&self, batch: Vec<opentelemetry_sdk::trace::SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        if let Err(error) = &result {
            if let Some(report) = self.failures.failed(spans, &error.to_string(), std::time::Instant::now()) {
                report.log();
            }
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// Failed span exports, logged at most once a minute with a count: the first one at
/// once, the next ones when a minute has passed since the last line (on the next failure, or on
/// the periodic report).
#[derive(Debug, Default)]
pub struct ExportFailures {
    state: std::sync::Mutex<Unreported>,
}

#[derive(Debug, Default)]
struct Unreported {
    exports: u64,
    spans: u64,
    last_error: String,
    logged: Option<std::time::Instant>,
}

/// One log line about failed exports.
#[derive(Debug, PartialEq, Eq)]
pub struct ExportReport {
    /// Exports that failed since the last line.
    pub exports: u64,
    /// Spans they lost.
    pub spans: u64,
    /// The last failure's error.
    pub error: String,
}

impl ExportReport {
    fn log(&self) {
        tracing::warn!(
            failed_exports = self.exports,
            lost_spans = self.spans,
            error = %self.error,
            "span export failed: spans are being lost"
        );
    }
}

impl ExportFailures {
    /// An export of `spans` spans failed with `error` at `now`: the line to log now, if one is
    /// due.
    pub fn failed(&self, spans: usize, error: &str, now: std::time::Instant) -> Option<ExportReport> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        state.exports += 1;
        state.spans += spans as u64;
        error.clone_into(&mut state.last_error);
        Self::report(&mut state, now)
    }

    /// The line to log at `now` for failures not logged yet, if one is due.
    pub fn due(&self, now: std::time::Instant) -> Option<ExportReport> {
        Self::report(&mut self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner), now)
    }

    fn report(state: &mut Unreported, now: std::time::Instant) -> Option<ExportReport> {
        let due = state.logged.is_none_or(|logged| now.saturating_duration_since(logged) >= REPORT_EVERY);
        if state.exports == 0 || !due {
            return None;
        }
        state.logged = Some(now);
        let report = ExportReport { exports: state.exports, spans: state.spans, error: state.last_error.clone() };
        (state.exports, state.spans) = (0, 0);
        Some(report)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn failed_exports_are_logged_at_most_once_a_minute_with_a_count() {
        let failures = ExportFailures::default();
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        let report = |exports, spans, error: &str| Some(ExportReport { exports, spans, error: error.to_owned() });
        assert_eq!(failures.due(at(0)), None, "nothing failed");
        assert_eq!(failures.failed(10, "connection refused", at(0)), report(1, 10, "connection refused"));
        assert_eq!(failures.failed(5, "connection refused", at(1)), None);
        assert_eq!(failures.failed(7, "503", at(30)), None);
        assert_eq!(failures.due(at(59)), None);
        assert_eq!(failures.due(at(60)), report(2, 12, "503"));
        assert_eq!(failures.due(at(200)), None, "nothing new");
        assert_eq!(failures.failed(1, "503", at(201)), report(1, 1, "503"));
    }
}
