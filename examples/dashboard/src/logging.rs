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

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

/// Lines buffered for the writer thread before new ones are dropped.
const BUFFERED_LINES: usize = 16 * 1024;

/// How long the writer thread waits after each write to stderr before it takes the next lines,
/// so that lines logged meanwhile go out in one `write` (see [`Batched`]).
const LINGER: Duration = Duration::from_millis(2);

/// A batch written out at once when it grows past this, without waiting for the flush.
const BATCH_BYTES: usize = 64 * 1024;

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

/// The log writer thread's writer: lines are gathered in a buffer and written in one `write`
/// when tracing-appender's thread flushes, which it does once it has taken every line waiting
/// in its channel. The flush then waits `linger` before the thread goes back to the channel:
/// lines logged meanwhile queue up without waking it (a send to a channel whose reader is not
/// waiting on it is a plain atomic push), and the next flush writes them all at once. Under
/// load that turns a `write` and a thread wake-up per line into one per `linger`; an idle
/// process still writes each line at most `linger` late. Only the writer thread waits: the
/// threads that log never do (the channel is lossy).
#[derive(Debug)]
pub struct Batched<W> {
    inner: W,
    buffer: Vec<u8>,
    linger: Duration,
}

impl<W: std::io::Write> Batched<W> {
    /// Batches the lines written to `inner`, lingering `linger` after each write out.
    pub fn new(inner: W, linger: Duration) -> Self {
        Self { inner, buffer: Vec::with_capacity(BATCH_BYTES), linger }
    }

    fn write_out(&mut self) -> std::io::Result<()> {
        // Cleared even when the write fails: a failing stderr drops lines, never keeps them.
        let written = self.inner.write_all(&self.buffer);
        self.buffer.clear();
        written
    }
}

impl<W: std::io::Write> std::io::Write for Batched<W> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(line);
        if self.buffer.len() >= BATCH_BYTES {
            self.write_out()?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return self.inner.flush();
        }
        let written = self.write_out().and_then(|()| self.inner.flush());
        std::thread::sleep(self.linger);
        written
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
            .finish(Batched::new(std::io::stderr(), LINGER));
        let dropped = writer.error_counter();
        crate::stats::stats().count_log_drops_with(dropped.clone());
        let _ = ACCESS_LOG.set(AccessLog::new(writer.clone()));
        let json = tracing_subscriber::fmt::layer().json().with_writer(writer);
        // Without an OTLP endpoint, and with no line below `info`, nothing reads the per-source
        // spans: they are turned off.
        let debug = filter.max_level_hint().is_none_or(|level| level >= tracing::level_filters::LevelFilter::DEBUG);
        let per_source_spans = (otlp.is_none() && !debug)
            .then(|| tracing_subscriber::filter::filter_fn(|meta| !(meta.is_span() && is_per_source_span(meta))));
        let registry = tracing_subscriber::registry().with(filter).with(per_source_spans).with(json);
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

/// muster's spans of one source (`source`) and of one attempt (`attempt`). They are exported
/// over OTLP when there is an endpoint, and kept for the log when `RUST_LOG` lets `debug` lines
/// through (muster's `debug` lines inside a source, such as `retrying`, name it only through its
/// span). Otherwise they are turned off: a log line at `info` or above carries the context of
/// its `aggregate` span (the request id, the user id), and the lines muster logs inside a source
/// at those levels name it in a field of their own (`source`) or are not about one source (the
/// Redis tier's). With them on, the JSON layer formatted the fields of four spans a request that
/// no line printed.
fn is_per_source_span(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("muster") && matches!(meta.name(), "source" | "attempt")
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

/// A span exporter that counts its failed exports, for the log and the server's metrics
/// (`dashboard_otlp_export_failures_total`).
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
            crate::stats::stats().otlp_export_failed();
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
mod export_tests {
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

/// The access log's writer, once [`Logging::init`] has run.
static ACCESS_LOG: OnceLock<AccessLog> = OnceLock::new();

/// The target the access log lines are logged under (`RUST_LOG=dashboard::app=warn` turns
/// them off).
pub const ACCESS_TARGET: &str = "dashboard::app";

/// The fields of one access log line: one per request answered.
#[derive(Clone, Copy, Debug)]
pub struct AccessLine<'a> {
    /// The request's method.
    pub method: &'a str,
    /// The request's path (cut to a bounded length by the caller).
    pub path: &'a str,
    /// The answer's status.
    pub status: u16,
    /// From the request's arrival to the answer's head, in ms.
    pub elapsed_ms: u64,
    /// The request id.
    pub request_id: &'a str,
    /// The user the dashboard was asked for, if any.
    pub user_id: Option<&'a str>,
    /// The source that failed the aggregation, if one did.
    pub source: Option<&'a str>,
    /// The kind of the failure, if any.
    pub kind: Option<&'a str>,
}

impl AccessLine<'_> {
    /// Appends the line as JSON and a newline, in the shape of the JSON log's other lines
    /// (`{"timestamp":…,"level":"INFO","fields":{"message":"request",…},"target":"dashboard::app"}`),
    /// fields absent when `None`; formatted by hand into `out`, without tracing's reflection.
    ///
    /// ```
    /// use std::time::{Duration, UNIX_EPOCH};
    /// use dashboard::logging::AccessLine;
    ///
    /// let line = AccessLine {
    ///     method: "GET", path: "/dashboard/42", status: 200, elapsed_ms: 3, request_id: "r-1",
    ///     user_id: Some("4\"2"), source: None, kind: None,
    /// };
    /// let mut out = Vec::new();
    /// line.write_json(UNIX_EPOCH + Duration::from_micros(1_765_080_000_123_456), &mut out);
    /// assert_eq!(
    ///     String::from_utf8(out).unwrap(),
    ///     "{\"timestamp\":\"2025-12-07T04:00:00.123456Z\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\
    ///      \"method\":\"GET\",\"path\":\"/dashboard/42\",\"status\":200,\"elapsed_ms\":3,\"request_id\":\"r-1\",\
    ///      \"user_id\":\"4\\\"2\"},\"target\":\"dashboard::app\"}\n",
    /// );
    /// ```
    pub fn write_json(&self, now: SystemTime, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"timestamp\":\"");
        timestamp(now, out);
        out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"method\":");
        json_string(self.method, out);
        out.extend_from_slice(b",\"path\":");
        json_string(self.path, out);
        out.extend_from_slice(b",\"status\":");
        decimal(u64::from(self.status), out);
        out.extend_from_slice(b",\"elapsed_ms\":");
        decimal(self.elapsed_ms, out);
        out.extend_from_slice(b",\"request_id\":");
        json_string(self.request_id, out);
        for (name, value) in [("user_id", self.user_id), ("source", self.source), ("kind", self.kind)] {
            if let Some(value) = value {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\":");
                json_string(value, out);
            }
        }
        out.extend_from_slice(b"},\"target\":\"");
        out.extend_from_slice(ACCESS_TARGET.as_bytes());
        out.extend_from_slice(b"\"}\n");
    }
}

/// The access log: lines formatted by hand into a reused per-thread buffer and handed to the
/// non-blocking writer (dropped, and counted, when stderr does not keep up).
#[derive(Clone, Debug)]
pub struct AccessLog {
    writer: NonBlocking,
}

impl AccessLog {
    /// An access log writing to `writer`.
    pub fn new(writer: NonBlocking) -> Self {
        Self { writer }
    }

    /// Formats `line` and enqueues it; never blocks.
    pub fn log(&self, line: &AccessLine<'_>) {
        thread_local! {
            static BUFFER: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
        }
        BUFFER.with(|buffer| {
            let Ok(mut buffer) = buffer.try_borrow_mut() else { return };
            buffer.clear();
            line.write_json(SystemTime::now(), &mut buffer);
            // One `write` is one line for the writer's thread.
            let _ = self.writer.clone().write(&buffer);
        });
    }
}

/// Logs one access line, at `info` under [`ACCESS_TARGET`] when `RUST_LOG` lets it through:
/// by hand through the non-blocking writer once [`Logging::init`] has run, else as a tracing
/// event (tests, embedders).
pub fn access(line: &AccessLine<'_>) {
    if !tracing::enabled!(target: ACCESS_TARGET, tracing::Level::INFO) {
        return;
    }
    match ACCESS_LOG.get() {
        Some(log) => log.log(line),
        None => {
            let AccessLine { method, path, status, elapsed_ms, request_id, user_id, source, kind } = *line;
            tracing::info!(target: ACCESS_TARGET, method, path, status, elapsed_ms, request_id, user_id, source, kind, "request");
        }
    }
}

/// `value` as a JSON string: quotes, backslashes and control characters escaped.
fn json_string(value: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = value.as_bytes();
    let mut start = 0;
    for (index, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..index]);
        if escape.is_empty() {
            out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(byte >> 4)],
                HEX[usize::from(byte & 0xf)],
            ]);
        } else {
            out.extend_from_slice(escape);
        }
        start = index + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// `value` in decimal.
fn decimal(mut value: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// `now` in RFC 3339, UTC, with microseconds, as tracing-subscriber's JSON lines have it
/// (`2026-12-07T04:29:21.236011Z`).
fn timestamp(now: SystemTime, out: &mut Vec<u8>) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let two =
        |value: u64, out: &mut Vec<u8>| out.extend_from_slice(&[b'0' + (value / 10) as u8, b'0' + (value % 10) as u8]);
    decimal(year.max(0) as u64, out);
    out.push(b'-');
    two(month, out);
    out.push(b'-');
    two(day, out);
    out.push(b'T');
    two(second_of_day / 3600, out);
    out.push(b':');
    two(second_of_day / 60 % 60, out);
    out.push(b':');
    two(second_of_day % 60, out);
    out.push(b'.');
    let micros = u64::from(since.subsec_micros());
    for divisor in [100_000, 10_000, 1_000, 100, 10, 1] {
        out.push(b'0' + (micros / divisor % 10) as u8);
    }
    out.push(b'Z');
}

/// The (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(user_id: Option<&str>) -> String {
        let line = AccessLine {
            method: "GET",
            path: "/dashboard/x",
            status: 504,
            elapsed_ms: 1000,
            request_id: "id\\\"",
            user_id,
            source: Some("profile"),
            kind: Some("timeout"),
        };
        let mut out = Vec::new();
        line.write_json(UNIX_EPOCH + Duration::from_secs(951_782_400), &mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn the_line_is_one_line_of_json_with_the_fields() {
        let text = line(Some("a\u{1}\n\u{e9}\u{7f}"));
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1, "{text:?}");
        let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        assert_eq!(value["timestamp"], "2000-02-29T00:00:00.000000Z");
        assert_eq!(value["level"], "INFO");
        assert_eq!(value["target"], "dashboard::app");
        let fields = &value["fields"];
        assert_eq!(fields["message"], "request");
        assert_eq!(fields["status"], 504);
        assert_eq!(fields["elapsed_ms"], 1000);
        assert_eq!(fields["request_id"], "id\\\"");
        assert_eq!(fields["user_id"], "a\u{1}\n\u{e9}\u{7f}");
        assert_eq!((fields["source"].as_str(), fields["kind"].as_str()), (Some("profile"), Some("timeout")));
        let without: serde_json::Value = serde_json::from_str(&line(None)).expect("JSON");
        assert!(without["fields"].get("user_id").is_none(), "{without}");
    }

    /// Records each `write` it gets; fails them all when `broken`.
    #[derive(Default)]
    struct Writes {
        writes: Vec<Vec<u8>>,
        broken: bool,
    }

    impl std::io::Write for Writes {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            if self.broken {
                return Err(std::io::ErrorKind::BrokenPipe.into());
            }
            self.writes.push(bytes.to_vec());
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn batched_lines_go_out_in_one_write_per_flush_and_a_large_batch_at_once() {
        use std::io::Write as _;
        let mut batched = Batched::new(Writes::default(), Duration::ZERO);
        for line in [&b"one\n"[..], b"two\n", b"three\n"] {
            batched.write_all(line).expect("buffered");
        }
        assert!(batched.inner.writes.is_empty(), "nothing is written before the flush");
        batched.flush().expect("written");
        assert_eq!(batched.inner.writes, [b"one\ntwo\nthree\n".to_vec()]);
        batched.flush().expect("nothing to write");
        assert_eq!(batched.inner.writes.len(), 1, "an empty flush writes nothing");

        let line = vec![b'x'; BATCH_BYTES / 2 + 1];
        batched.write_all(&line).expect("buffered");
        assert_eq!(batched.inner.writes.len(), 1);
        batched.write_all(&line).expect("written");
        assert_eq!(batched.inner.writes.len(), 2, "a batch past {BATCH_BYTES} bytes is written at once");
        assert_eq!(batched.inner.writes[1].len(), line.len() * 2, "whole lines, both of them");
    }

    #[test]
    fn a_failing_writer_drops_the_batch_rather_than_keeping_it() {
        use std::io::Write as _;
        let mut batched = Batched::new(Writes { broken: true, ..Writes::default() }, Duration::ZERO);
        batched.write_all(b"lost\n").expect("buffered");
        assert!(batched.flush().is_err(), "the error is reported");
        batched.inner.broken = false;
        batched.write_all(b"next\n").expect("buffered");
        batched.flush().expect("written");
        assert_eq!(batched.inner.writes, [b"next\n".to_vec()], "the failed batch is not written again");
    }

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        let mut out = Vec::new();
        timestamp(UNIX_EPOCH, &mut out);
        assert_eq!(out, b"1970-01-01T00:00:00.000000Z");
        out.clear();
        timestamp(UNIX_EPOCH + Duration::from_micros(4_102_444_799_999_999), &mut out);
        assert_eq!(out, b"2099-12-31T23:59:59.999999Z");
        let mut text = Vec::new();
        decimal(0, &mut text);
        decimal(u64::MAX, &mut text);
        assert_eq!(text, b"018446744073709551615");
    }
}
