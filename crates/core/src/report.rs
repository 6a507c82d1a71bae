use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::cancel::{Cause, Name, SharedError};

/// What happened in one run of a [`Group`](crate::Group): every task's outcome and timing, from
/// [`Group::wait_with_report`](crate::Group::wait_with_report), on success and on error alike.
///
/// `Display` renders a text waterfall, the one the `muster` aggregator prints: one line per
/// task, a bar from its start to its end scaled to the group's total time, its duration and
/// its outcome.
///
/// Times are offsets from the group's creation (where its deadline counts from). The clock
/// is read at most once per poll of the group, at its end, and only when a task started or
/// ended in it: a task that finishes ends when the poll in which it finished does (when the
/// group could go on), a task that starts with the group starts at 0. So a time is exact to
/// the length of one poll of the group.
///
/// ```
/// # use muster_core as muster;
/// use std::time::Duration;
/// use muster::{Group, TaskOutcome};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let mut group = Group::new();
/// group.spawn("profile", async {
///     tokio::time::sleep(Duration::from_millis(30)).await;
///     Err::<u32, _>("503")
/// }).unwrap();
/// group.spawn("transactions", async {
///     tokio::time::sleep(Duration::from_secs(10)).await;
///     Ok::<_, &str>(7)
/// }).unwrap();
/// let (result, report) = group.wait_with_report().await;
/// assert!(result.is_err());
/// assert!(matches!(report.task("profile").map(|task| &task.outcome), Some(TaskOutcome::Failed { .. })));
/// assert_eq!(report.task("transactions").map(|task| task.outcome.as_str()), Some("cancelled"));
/// assert_eq!(report.elapsed, Duration::from_millis(30));
/// println!("{report}");
/// # }
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct GroupReport {
    /// From the group's creation to its answer.
    pub elapsed: Duration,
    /// The root cause if the group failed; `None` on success.
    pub cause: Option<Cause>,
    /// Every task, in spawn order (tasks spawned through a handle included).
    pub tasks: Vec<TaskReport>,
    /// The request-context fields of the group.
    pub fields: Vec<(Name, String)>,
}

/// One task's part in a [`GroupReport`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TaskReport {
    /// The task's name.
    pub name: Name,
    /// How it ended.
    pub outcome: TaskOutcome,
    /// When it started, from the group's creation; `None` if it never started.
    pub start: Option<Duration>,
    /// How long it ran, until it finished or was cancelled.
    pub duration: Duration,
    /// A failure after the outcome that did not change it: the task panicked while it was
    /// being dropped (a [`Cause::Panicked`]). The panic was contained.
    pub secondary: Option<Cause>,
}

/// How a task of a [`Group`](crate::Group) ended.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum TaskOutcome {
    /// It returned its value.
    Ok,
    /// It returned an error.
    Failed {
        /// The error.
        error: SharedError,
    },
    /// It panicked.
    Panicked {
        /// The panic message.
        message: Arc<str>,
    },
    /// It was still pending at the group's deadline and was dropped.
    TimedOut,
    /// It was dropped, or never started, because of something else: a sibling's failure, the
    /// caller's cancellation.
    Cancelled {
        /// Why.
        cause: Cause,
    },
}

impl TaskOutcome {
    /// A short stable name: `ok`, `failed`, `panicked`, `timeout`, `cancelled` (the words of
    /// [`ErrorKind`](crate::ErrorKind)).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed { .. } => "failed",
            Self::Panicked { .. } => "panicked",
            Self::TimedOut => "timeout",
            Self::Cancelled { .. } => "cancelled",
        }
    }
}

impl fmt::Display for TaskOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok => f.write_str("ok"),
            Self::Failed { error } => write!(f, "failed: {error}"),
            Self::Panicked { message } => write!(f, "panicked: {message}"),
            Self::TimedOut => f.write_str("timed out (group deadline)"),
            Self::Cancelled { cause } => fmt::Display::fmt(cause, f),
        }
    }
}

impl GroupReport {
    /// The report of the task named `name`, if there is one.
    pub fn task(&self, name: &str) -> Option<&TaskReport> {
        self.tasks.iter().find(|task| task.name == name)
    }
}

/// Width of the waterfall's bars, in characters.
const BAR: usize = 40;

/// One waterfall bar: `BAR` characters, filled from `start` for `duration`, scaled to `total`
/// (at least one character for a task that started). Shared with the aggregator's report, so
/// both waterfalls look alike.
#[doc(hidden)]
pub fn bar(start: Option<Duration>, duration: Duration, total: Duration) -> String {
    let total = total.as_nanos().max(1);
    let column = |offset: Duration| (offset.as_nanos().saturating_mul(BAR as u128) / total) as usize;
    let (start, end) = match start {
        Some(start) => (column(start).min(BAR), column(start + duration).clamp(column(start) + 1, BAR)),
        None => (0, 0),
    };
    (0..BAR).map(|i| if (start..end).contains(&i) { '█' } else { ' ' }).collect()
}

/// A duration in milliseconds with up to one decimal below 10 ms, e.g. `30ms` or `0.4ms`: what
/// a waterfall needs, unlike `Debug`'s six decimals.
#[doc(hidden)]
#[derive(Clone, Copy, Debug)]
pub struct Millis(pub Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.0.as_micros();
        let text = if micros % 1000 == 0 || micros >= 10_000 {
            format!("{}ms", micros / 1000)
        } else {
            format!("{}.{}ms", micros / 1000, (micros % 1000) / 100)
        };
        f.pad(&text)
    }
}

impl fmt::Display for GroupReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group took {}", Millis(self.elapsed))?;
        match &self.cause {
            Some(Cause::Failed { name, .. } | Cause::Panicked { name, .. }) => write!(f, ", stopped by `{name}`")?,
            Some(Cause::Deadline { .. }) => f.write_str(", stopped by the deadline")?,
            Some(cause) => write!(f, ", stopped: {cause}")?,
            None => {}
        }
        for (name, value) in &self.fields {
            write!(f, " {name}={value}")?;
        }
        let width = self.tasks.iter().map(|task| task.name.len()).max().unwrap_or(0);
        for task in &self.tasks {
            let bar = bar(task.start, task.duration, self.elapsed);
            write!(f, "\n  {:width$} |{bar}| {:>7}  {}", task.name, Millis(task.duration), task.outcome)?;
            if let Some(Cause::Panicked { message, .. }) = &task.secondary {
                write!(f, "; then panicked while dropped: {message}")?;
            }
        }
        Ok(())
    }
}
