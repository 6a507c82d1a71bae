//! Logging that never blocks serving: JSON lines on stderr through a bounded, lossy,
//! non-blocking writer (tracing-appender). When stderr is slow or nobody reads it, lines
//! are dropped instead of stalling the worker threads; the dropped lines are counted, logged
//! once a minute when there are new ones, and reported on stderr at exit. A closed stderr
//! (EPIPE) is an ignored write error on the writer thread, never a panic.
//!
//! With the `otel` feature and an OTLP endpoint (`--otlp-endpoint`), the spans (the
//! aggregation, each source, each HTTP attempt) are also exported over OTLP/HTTP, in batches
//! from a thread of their own, so exporting never blocks serving either.

use std::io::Write as _;
use std::time::Duration;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines buffered for the writer thread before new ones are dropped.
const BUFFERED_LINES: usize = 16 * 1024;

/// How long the last line on stderr at exit may take.
const FINAL_WRITE: Duration = Duration::from_millis(500);

/// Writes `message` and a newline on stderr from a thread of its own, and waits for it at
/// most `limit`: with stderr full (a pipe nobody reads), the write blocks forever, and so does
/// any write that waits for the lock the log writer's thread holds; the process must exit all
/// the same (the thread does not keep it alive).
pub fn write_stderr_within(message: String, limit: Duration) {
    let (done, written) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new().name("dashboard-stderr".to_owned()).spawn(move || {
        let _ = writeln!(std::io::stderr(), "{message}");
        let _ = done.send(());
    });
    if spawned.is_ok() {
        let _ = written.recv_timeout(limit);
    }
}

/// How often a count of newly dropped lines is logged.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// The installed logger: keep it until the end of `main`, then [`finish`](Self::finish) it.
#[derive(Debug)]
pub struct Logging {
    guard: WorkerGuard,
    dropped: ErrorCounter,
    #[cfg(feature = "otel")]
    traces: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
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
        use tracing_subscriber::layer::SubscriberExt as _;
        use tracing_subscriber::util::SubscriberInitExt as _;

        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(BUFFERED_LINES)
            .thread_name("dashboard-log")
            .finish(std::io::stderr());
        let dropped = writer.error_counter();
        crate::stats::stats().count_log_drops_with(dropped.clone());
        let json = tracing_subscriber::fmt::layer().json().with_writer(writer);
        let registry = tracing_subscriber::registry().with(filter).with(json);
        #[cfg(feature = "otel")]
        {
            let traces = otlp.map(otlp_provider).transpose()?;
            let layer = traces.as_ref().map(|provider| {
                use opentelemetry::trace::TracerProvider as _;
                tracing_opentelemetry::layer().with_tracer(provider.tracer("dashboard"))
            });
            let _ = registry.with(layer).try_init();
            Ok(Self { guard, dropped, traces })
        }
        #[cfg(not(feature = "otel"))]
        {
            if otlp.is_some() {
                return Err(LoggingError::NoOtel);
            }
            let _ = registry.try_init();
            Ok(Self { guard, dropped })
        }
    }

    /// Log lines dropped so far because the writer could not keep up.
    pub fn dropped(&self) -> usize {
        self.dropped.dropped_lines()
    }

    /// Logs (as a warning) how many lines were dropped, every minute in which some were.
    /// Runs until the task is dropped.
    pub fn report_periodically(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let dropped = self.dropped.clone();
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
            }
        }
    }

    /// Flushes what is buffered (tracing-appender waits a bounded time for it) and reports
    /// the dropped lines on stderr, if any, waiting at most half a second for that write.
    pub fn finish(self) {
        let dropped = self.dropped();
        #[cfg(feature = "otel")]
        if let Some(traces) = &self.traces {
            // Exports what is batched, for a bounded time.
            let _ = traces.shutdown_with_timeout(Duration::from_secs(2));
        }
        drop(self.guard);
        if dropped > 0 {
            let message = format!("dashboard: {dropped} log lines were dropped (stderr too slow)");
            write_stderr_within(message, FINAL_WRITE);
        }
    }
}

/// The tracer provider exporting to `endpoint` over OTLP/HTTP (protobuf), in batches.
#[cfg(feature = "otel")]
fn otlp_provider(endpoint: &str) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, LoggingError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|error| LoggingError::Otlp { endpoint: endpoint.to_owned(), reason: error.to_string() })?;
    let exporter = CountingFailures(exporter);
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder().with_batch_exporter(exporter).build())
}

/// A span exporter that counts its failed exports in the server's metrics
/// (`dashboard_otlp_export_failures_total`).
#[cfg(feature = "otel")]
#[derive(Debug)]
struct CountingFailures<E>(E);

#[cfg(feature = "otel")]
impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter for CountingFailures<E> {
    async fn export(&self, batch: Vec<opentelemetry_sdk::trace::SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        let result = self.0.export(batch).await;
        if result.is_err() {
            crate::stats::stats().otlp_export_failed();
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.0.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.0.set_resource(resource);
    }
}
