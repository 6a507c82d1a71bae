//! The server's own counters, for `GET /metrics` (feature `metrics`): connections open,
//! refused and shed, requests answered by status, log lines dropped and OTLP export failures.
//! Plain atomics, process-wide (one server per process), counted whether or not the
//! `metrics` feature is built; [`ServerStats::render`] writes them in the Prometheus text
//! format.
//!
//! ```
//! use dashboard::stats::stats;
//!
//! let mut text = String::new();
//! stats().render(&mut text);
//! assert!(text.contains("dashboard_connections_open "));
//! assert!(text.contains("dashboard_log_lines_dropped_total "));
//! ```

use std::fmt::Write as _;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tracing_appender::non_blocking::ErrorCounter;

/// The HTTP status codes counted one by one (100 to 599); any other is counted as 0.
const STATUSES: usize = 600;

/// The server's counters; see the module docs.
#[derive(Debug)]
pub struct ServerStats {
    open: AtomicI64,
    refused: AtomicU64,
    shed: AtomicU64,
    statuses: Box<[AtomicU64]>,
    log_dropped: OnceLock<ErrorCounter>,
    otlp_failures: AtomicU64,
}

/// The process's counters.
pub fn stats() -> &'static ServerStats {
    static STATS: OnceLock<ServerStats> = OnceLock::new();
    STATS.get_or_init(|| ServerStats {
        open: AtomicI64::new(0),
        refused: AtomicU64::new(0),
        shed: AtomicU64::new(0),
        statuses: (0..STATUSES).map(|_| AtomicU64::new(0)).collect(),
        log_dropped: OnceLock::new(),
        otlp_failures: AtomicU64::new(0),
    })
}

impl ServerStats {
    /// A connection was accepted.
    pub fn opened(&self) {
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection closed.
    pub fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed).max(0) as u64
    }

    /// A new connection was refused at the connection cap (answered 503, or closed unanswered).
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections refused so far.
    pub fn refused_total(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// A connection without a complete request head was closed to make room for a new one.
    pub fn shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections shed so far.
    pub fn shed_total(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }

    /// A request was answered with `status`.
    pub fn answered(&self, status: u16) {
        let index = usize::from(status);
        let index = if (100..STATUSES).contains(&index) { index } else { 0 };
        self.statuses[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests answered with `status` so far.
    pub fn answered_total(&self, status: u16) -> u64 {
        self.statuses.get(usize::from(status)).map_or(0, |count| count.load(Ordering::Relaxed))
    }

    /// Where the count of dropped log lines comes from (the logger's writer); the first call
    /// wins.
    pub fn count_log_drops_with(&self, dropped: ErrorCounter) {
        let _ = self.log_dropped.set(dropped);
    }

    /// Log lines dropped so far because stderr did not keep up.
    pub fn log_lines_dropped(&self) -> u64 {
        self.log_dropped.get().map_or(0, |dropped| dropped.dropped_lines() as u64)
    }

    /// An OTLP export of spans failed.
    pub fn otlp_export_failed(&self) {
        self.otlp_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// OTLP exports that failed so far (0 when the dashboard is built without `otel`).
    pub fn otlp_export_failures(&self) -> u64 {
        self.otlp_failures.load(Ordering::Relaxed)
    }

    /// Appends the counters to `out` in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        metric("dashboard_connections_open", "gauge", "Connections open now.", self.open());
        metric(
            "dashboard_connections_refused_total",
            "counter",
            "New connections refused at the connection cap (a 503, or closed unanswered).",
            self.refused_total(),
        );
        metric(
            "dashboard_connections_shed_total",
            "counter",
            "Connections without a complete request head closed to make room at the connection cap.",
            self.shed_total(),
        );
        metric(
            "dashboard_log_lines_dropped_total",
            "counter",
            "Log lines dropped because stderr did not keep up.",
            self.log_lines_dropped(),
        );
        metric(
            "dashboard_otlp_export_failures_total",
            "counter",
            "OTLP span exports that failed.",
            self.otlp_export_failures(),
        );
        let _ = writeln!(
            out,
            "# HELP dashboard_requests_total Requests answered, by status.\n# TYPE dashboard_requests_total counter"
        );
        for (status, count) in self.statuses.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                let _ = writeln!(out, "dashboard_requests_total{{status=\"{status}\"}} {count}");
            }
        }
    }
}
