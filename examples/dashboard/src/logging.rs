//! Logging that never blocks serving: JSON lines on stderr through a bounded, lossy,
//! non-blocking writer (tracing-appender). When stderr is slow or nobody reads it, lines
//! are dropped instead of stalling the worker threads; the dropped lines are counted, logged
//! once a minute when there are new ones, and reported on stderr at exit. A closed stderr
//! (EPIPE) is an ignored write error on the writer thread, never a panic.

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
}

impl Logging {
    /// Installs the global subscriber: JSON lines, filtered by `RUST_LOG` (default `info`).
    /// Does nothing more if a subscriber is already installed.
    pub fn init() -> Self {
        let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(BUFFERED_LINES)
            .thread_name("dashboard-log")
            .finish(std::io::stderr());
        let dropped = writer.error_counter();
        let _ = tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(writer).try_init();
        Self { guard, dropped }
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
    /// the dropped lines on stderr, if any.
    pub fn finish(self) {
        let dropped = self.dropped();
        drop(self.guard);
        if dropped > 0 {
            let _ = writeln!(std::io::stderr(), "dashboard: {dropped} log lines were dropped (stderr too slow)");
        }
    }
}
