use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use muster_core::{Cause, GroupError, Name};
use tokio::time::Instant;

/// What happened in one aggregation: every source's outcome and timing, what triggered the
/// cancellation and how long the cancellation took.
///
/// `Display` renders a text waterfall: one line per source, a bar from its start to its end
/// scaled to the aggregation's total time, and its outcome.
///
/// Sources are polled in place, one after the other, so the clock is read once per poll of
/// the aggregation rather than per source: a source ends when the poll in which it finished
/// does, which is when the aggregation could go on. Without a concurrency limit below the
/// number of sources, every source starts with the aggregation.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Report {
    /// From the start of the aggregation to its answer.
    pub elapsed: Duration,
    /// Every source, in declaration order.
    pub sources: Vec<SourceReport>,
    /// What stopped the aggregation early, if something did.
    pub trigger: Option<Trigger>,
    /// From the trigger to the moment every cancelled source had been dropped.
    pub cancellation: Option<Duration>,
    /// The request-context fields of the aggregator (`user_id`, ...), shared by its reports.
    pub fields: Arc<[(Name, String)]>,
}

/// What stopped an aggregation early.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Trigger {
    /// This required source failed (error, timeout or panic).
    Source(Name),
    /// The global deadline passed.
    Deadline,
    /// The caller cancelled the aggregation.
    Cancelled,
}

impl fmt::Display for Trigger {
    /// The source's name, `deadline` or `caller`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Source(name) => f.write_str(name),
            Self::Deadline => f.write_str("deadline"),
            Self::Cancelled => f.write_str("caller"),
        }
    }
}

/// One source's part in an aggregation.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SourceReport {
    /// The source's name.
    pub name: Name,
    /// How it ended.
    pub outcome: Outcome,
    /// When it started, from the start of the aggregation; `None` if it never started.
    pub start: Option<Duration>,
    /// How long it ran, until it finished or was cancelled.
    pub duration: Duration,
    /// Attempts made, retries and hedges included.
    pub attempts: u32,
}

/// Which timeout fired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// The source's own [`Timeout`](muster_options::Timeout).
    Source,
    /// The aggregator's global [`Deadline`](muster_options::Deadline).
    Global,
}

/// How a source ended.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// It returned a value.
    Ok,
    /// It returned an error (after its retries, if any).
    Failed {
        /// The error, rendered.
        error: String,
    },
    /// A timeout fired.
    TimedOut {
        /// Which one.
        timeout: TimeoutKind,
    },
    /// It panicked.
    Panicked {
        /// The panic message.
        message: String,
    },
    /// It was cancelled because of something else: a sibling's failure, the deadline, the
    /// caller.
    Cancelled {
        /// Why, e.g. "cancelled by `profile`".
        cause: String,
    },
    /// It was optional, failed, and its fallback took its place.
    FellBack {
        /// The failure the fallback replaced.
        after: Box<Outcome>,
    },
}

impl Outcome {
    /// A short stable name: `ok`, `failed`, `timeout`, `panicked`, `cancelled`, `fallback`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed { .. } => "failed",
            Self::TimedOut { .. } => "timeout",
            Self::Panicked { .. } => "panicked",
            Self::Cancelled { .. } => "cancelled",
            Self::FellBack { .. } => "fallback",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ok => f.write_str("ok"),
            Self::Failed { error } => write!(f, "failed: {error}"),
            Self::TimedOut { timeout: TimeoutKind::Source } => f.write_str("timed out (source timeout)"),
            Self::TimedOut { timeout: TimeoutKind::Global } => f.write_str("timed out (global deadline)"),
            Self::Panicked { message } => write!(f, "panicked: {message}"),
            Self::Cancelled { cause } => f.write_str(cause),
            Self::FellBack { after } => write!(f, "fell back after {after}"),
        }
    }
}

impl Report {
    /// The report of `name`, if there is such a source.
    pub fn source(&self, name: &str) -> Option<&SourceReport> {
        self.sources.iter().find(|source| source.name == name)
    }

    /// One line, `name=outcome@start+duration/attempts` per source: for log fields.
    pub fn compact(&self) -> String {
        let mut line = String::new();
        for (i, source) in self.sources.iter().enumerate() {
            let separator = if i == 0 { "" } else { " " };
            let start = source.start.map_or_else(|| "-".to_owned(), |start| format!("{start:?}"));
            line += &format!(
                "{separator}{}={}@{start}+{:?}/{}",
                source.name,
                source.outcome.as_str(),
                source.duration,
                source.attempts
            );
        }
        line
    }
}

/// Width of the waterfall's bars, in characters.
const BAR: usize = 40;

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "aggregation took {:?}", self.elapsed)?;
        match &self.trigger {
            Some(Trigger::Source(name)) => write!(f, ", stopped by `{name}`")?,
            Some(Trigger::Deadline) => f.write_str(", stopped by the deadline")?,
            Some(Trigger::Cancelled) => f.write_str(", cancelled by the caller")?,
            None => {}
        }
        if let Some(cancellation) = self.cancellation {
            write!(f, "; cancellation took {cancellation:?}")?;
        }
        for (name, value) in self.fields.iter() {
            write!(f, " {name}={value}")?;
        }
        let width = self.sources.iter().map(|source| source.name.len()).max().unwrap_or(0);
        let total = self.elapsed.as_nanos().max(1);
        let column = |offset: Duration| (offset.as_nanos().saturating_mul(BAR as u128) / total) as usize;
        for source in &self.sources {
            let (start, end) = match source.start {
                Some(start) => (column(start).min(BAR), column(start + source.duration).clamp(column(start) + 1, BAR)),
                None => (0, 0),
            };
            let bar: String = (0..BAR).map(|i| if (start..end).contains(&i) { '█' } else { ' ' }).collect();
            let attempts = if source.attempts > 1 { format!(" ({} attempts)", source.attempts) } else { String::new() };
            write!(f, "\n  {:width$} |{bar}| {:>9?}  {}{attempts}", source.name, source.duration, source.outcome)?;
        }
        Ok(())
    }
}

/// Collects the per-source timings while an aggregation runs; shared by its source futures.
/// They are all polled in place by the aggregation's task, so plain relaxed atomics suffice:
/// no locks, one allocation.
///
/// The clock is read once per poll of the group, not per source: sources ending in the same
/// poll get the time at its end, which is when the aggregation could go on (sources are polled
/// in place, one after the other). A source's start is the aggregation's start when every
/// source starts in the group's first poll (no concurrency limit below the number of sources),
/// else it is read when it starts.
#[derive(Debug)]
pub(crate) struct Recorder {
    started: Instant,
    /// Whether every source starts at once, with the aggregation.
    at_once: bool,
    /// Whether a source ended in the current poll: [`stamp`](Self::stamp) has work to do.
    ended: AtomicBool,
    entries: Box<[Entry]>,
}

/// An offset not recorded (yet): a source that has not started or not ended.
const UNSET: u64 = u64::MAX;
/// The end of a source that ended in the current poll, until it is stamped.
const ENDED: u64 = u64::MAX - 1;

#[derive(Debug)]
struct Entry {
    /// Nanoseconds from the start of the aggregation to the source's start, or [`UNSET`].
    start: AtomicU64,
    /// Nanoseconds from the start of the aggregation to the source's end, or [`UNSET`].
    end: AtomicU64,
    attempts: AtomicU32,
    /// How it ended, if it ended otherwise than with its value.
    outcome: OnceLock<Outcome>,
}

impl Recorder {
    pub(crate) fn new(started: Instant, sources: usize, limit: Option<usize>) -> Self {
        let entry = || Entry {
            start: AtomicU64::new(UNSET),
            end: AtomicU64::new(UNSET),
            attempts: AtomicU32::new(0),
            outcome: OnceLock::new(),
        };
        let at_once = limit.is_none_or(|limit| limit >= sources);
        Self { started, at_once, ended: AtomicBool::new(false), entries: (0..sources).map(|_| entry()).collect() }
    }

    pub(crate) fn start(&self, index: usize) {
        if let Some(entry) = self.entries.get(index) {
            entry.start.store(if self.at_once { 0 } else { self.nanos() }, Relaxed);
        }
    }

    pub(crate) fn attempt(&self, index: usize) {
        if let Some(entry) = self.entries.get(index) {
            entry.attempts.store(entry.attempts.load(Relaxed) + 1, Relaxed);
        }
    }

    pub(crate) fn finish(&self, index: usize, outcome: Outcome) {
        if let Some(entry) = self.entries.get(index) {
            if outcome != Outcome::Ok {
                // Only the source's own future finishes it, once.
                let _ = entry.outcome.set(outcome);
            }
            entry.end.store(ENDED, Relaxed);
            self.ended.store(true, Relaxed);
        }
    }

    /// Gives the sources that ended in this poll their end: called after each poll of the
    /// group.
    pub(crate) fn stamp(&self) {
        // Loads and stores rather than read-modify-writes: the sources and the stamping all
        // run on the aggregation's task, one at a time.
        if !self.ended.load(Relaxed) {
            return;
        }
        self.ended.store(false, Relaxed);
        let now = self.nanos();
        for entry in &self.entries {
            if entry.end.load(Relaxed) == ENDED {
                entry.end.store(now, Relaxed);
            }
        }
    }

    /// The time since the start of the aggregation.
    pub(crate) fn offset(&self) -> Duration {
        self.started.elapsed()
    }

    fn nanos(&self) -> u64 {
        u64::try_from(self.offset().as_nanos()).unwrap_or(ENDED - 1)
    }

    /// The report, once the group has finished: sources that did not finish were cancelled
    /// (or timed out by the global deadline) by `error`'s cause.
    pub(crate) fn report<'n>(
        self,
        names: impl Iterator<Item = &'n Name>,
        error: Option<&GroupError>,
        fields: Arc<[(Name, String)]>,
    ) -> Report {
        // A successful aggregation answers as its last source ends: no need to read the clock.
        self.stamp();
        let last_end = || self.entries.iter().map(|entry| entry.end.load(Relaxed)).max().filter(|&end| end != UNSET);
        let elapsed = match (error, last_end()) {
            (None, Some(end)) => Duration::from_nanos(end),
            _ => self.offset(),
        };
        let trigger = error.map(|error| match error.cause() {
            Cause::Failed { name, .. } | Cause::Panicked { name, .. } => Trigger::Source(name.clone()),
            Cause::Deadline { .. } => Trigger::Deadline,
            _ => Trigger::Cancelled,
        });
        let sources = (names.zip(self.entries))
            .map(|(name, entry)| {
                let (start, end) = (entry.start.into_inner(), entry.end.into_inner());
                let outcome = match (entry.outcome.into_inner(), end) {
                    (Some(outcome), _) => outcome,
                    (None, UNSET) => match error.map(GroupError::cause) {
                        Some(Cause::Deadline { .. }) => Outcome::TimedOut { timeout: TimeoutKind::Global },
                        Some(cause) => Outcome::Cancelled { cause: cause.to_string() },
                        None => Outcome::Cancelled { cause: "the aggregation ended".to_owned() },
                    },
                    (None, _) => Outcome::Ok,
                };
                let end = if end == UNSET { elapsed } else { Duration::from_nanos(end) };
                let start = (start != UNSET).then(|| Duration::from_nanos(start));
                SourceReport {
                    name: name.clone(),
                    outcome,
                    start,
                    duration: start.map_or(Duration::ZERO, |start| end.saturating_sub(start)),
                    attempts: entry.attempts.into_inner(),
                }
            })
            .collect();
        let cancellation = error.map(|error| elapsed.saturating_sub(error.elapsed()));
        Report { elapsed, sources, trigger, cancellation, fields }
    }
}
