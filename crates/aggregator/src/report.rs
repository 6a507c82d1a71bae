//! What happened to every source of an aggregation: the [`Report`] an aggregation returns
//! (with its error too), one [`SourceReport`] per source, printable as a waterfall; and how a
//! policy or a source adds to it ([`record`] an [`Event`]) or hears of each source as it
//! completes ([`Ready`], through [`RequestContext::on_ready`](crate::RequestContext::on_ready)).

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicU8, AtomicU32};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use muster_core::{Cause, ErrorKind, GroupError, GroupReport, Millis, Name, TaskOutcome, Timeline, waterfall_bar};

pub use crate::call::{Event, Ready, report as record};

/// What happened in one aggregation: every source's outcome and timing, what triggered the
/// cancellation and how long the cancellation took.
///
/// `Display` renders a text waterfall: one line per source, a bar from its start to its end
/// scaled to the aggregation's total time, and its outcome.
///
/// The times are the aggregation's group's, one engine for both
/// ([`GroupReport`]): sources are polled in place, one after the
/// other, so the clock is read at most once per poll of the aggregation, not per source, and
/// only when a source started or ended in it. A source ends when the poll in which it
/// finished does, which is when the aggregation could go on, so a time is exact to the
/// length of one poll. Without a concurrency limit below the number of sources, every source
/// starts with the aggregation, at 0.
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
    /// The request-context fields of this call (`user_id`, `request_id`, ...), in order: the
    /// aggregator's defaults, then the call's own.
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
    /// Time spent queued behind the aggregator's concurrency [`Limit`](crate::options::Limit) before it
    /// started; zero without a limit.
    pub queued: Duration,
    /// Attempts made, retries and hedges included.
    pub attempts: u32,
    /// Of the attempts, how many were hedges.
    pub hedges: u32,
    /// What its policies noted (e.g. `"hedge won"`, `"circuit open"`), in order.
    pub notes: Vec<String>,
    /// How many waiters shared the call its result came from, when that call was shared by
    /// more than one (a [`Coalesce`](crate::policy::Coalesce)d source joined by concurrent
    /// aggregations); the waterfall says `shared by N`. `None` for a call of its own.
    pub shared: Option<usize>,
    /// The age of the stale value that answered for the source, when one did (a
    /// [`Cache`](crate::policy::Cache)'s `stale_if_error`: the source failed, or ran into
    /// the deadline, and an older value stood in); the waterfall notes `stale (age 94s)`.
    /// `None` for a value of the source's own, or a fresh one from the cache.
    pub stale: Option<Duration>,
    /// The source whose output it waited for, for a dependent source: it was ready to start,
    /// and started, when that source ended (at `start`).
    pub after: Option<Name>,
    /// The kind of its failure, in the one vocabulary ([`ErrorKind`]): for a source that
    /// failed, timed out or panicked, or whose fallback stands in (the kind it replaced).
    pub kind: Option<ErrorKind>,
    /// Whether its error said it was retryable ([`Classify`](crate::Classify)); what
    /// [`AggregateError`](crate::AggregateError) answers for a failed source.
    pub(crate) retryable: bool,
    /// The report of the aggregation this source ran, when the source is an aggregator of
    /// its own (a nested aggregation); the waterfall shows it under the source.
    pub nested: Option<Box<Report>>,
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

    /// The value of the call's context field `name`, if set.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(field, _)| field == name).map(|(_, value)| value.as_str())
    }

    /// One line, `name=outcome@start+duration/attempts` per source: for log fields.
    pub fn compact(&self) -> String {
        let mut line = String::new();
        for (i, source) in self.sources.iter().enumerate() {
            let separator = if i == 0 { "" } else { " " };
            let start = source.start.map_or_else(|| "-".to_owned(), |start| Millis(start).to_string());
            line += &format!(
                "{separator}{}={}@{start}+{}/{}",
                source.name,
                source.outcome.as_str(),
                Millis(source.duration),
                source.attempts
            );
        }
        line
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "aggregation took {}", Millis(self.elapsed))?;
        match &self.trigger {
            Some(Trigger::Source(name)) => write!(f, ", stopped by `{name}`")?,
            Some(Trigger::Deadline) => f.write_str(", stopped by the deadline")?,
            Some(Trigger::Cancelled) => f.write_str(", cancelled by the caller")?,
            None => {}
        }
        if let Some(cancellation) = self.cancellation {
            write!(f, "; cancellation took {}", Millis(cancellation))?;
        }
        for (name, value) in self.fields.iter() {
            write!(f, " {name}={value}")?;
        }
        let width = self.sources.iter().map(|source| source.name.len()).max().unwrap_or(0);
        for source in &self.sources {
            let bar = waterfall_bar(source.start, source.duration, self.elapsed);
            write!(f, "\n  {:width$} |{bar}| {:>7}  {}", source.name, Millis(source.duration), source.outcome)?;
            if source.attempts > 1 {
                write!(f, " ({} attempts)", source.attempts)?;
            }
            if let Some(input) = &source.after {
                write!(f, " (after `{input}`)")?;
            }
            if !source.queued.is_zero() {
                write!(f, " (queued {})", Millis(source.queued))?;
            }
            if let Some(waiters) = source.shared {
                write!(f, " (shared by {waiters})")?;
            }
            for note in &source.notes {
                write!(f, "; {note}")?;
            }
            if let Some(nested) = &source.nested {
                for line in nested.to_string().lines() {
                    write!(f, "\n    {line}")?;
                }
            }
        }
        Ok(())
    }
}

/// A stale value's age as the waterfall shows it: whole seconds from 1 s (`94s`), else
/// milliseconds (`250ms`).
struct Age(Duration);

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= Duration::from_secs(1) {
            write!(f, "{}s", self.0.as_secs())
        } else {
            write!(f, "{}ms", self.0.as_millis())
        }
    }
}

/// How a source failed, as the report records it.
pub(crate) enum Failure<'a> {
    /// The source's error (or, if its own timeout fired last, that timeout), with the kind
    /// and retry verdict it gave ([`Classify`](crate::Classify)) before it was boxed.
    Error(&'a (dyn std::error::Error + 'static), ErrorKind, bool),
    /// It panicked with this message.
    Panicked(&'a str),
    /// The global deadline came first.
    Deadline,
    /// The source's own timeout (a [`Timeout`](crate::Timeout) around a fallback) came first.
    TimedOut,
}

/// What an aggregation's policies and sources add to the group's report, by source: attempts,
/// hedges, notes, how a failure reads; the starts and ends are the group's own (its
/// [`Timeline`], shared). The sources are all polled in place by the aggregation's task, so
/// plain relaxed atomics suffice for the counts; the rare details (a failure's text, notes)
/// take an uncontended lock, never on the success path.
///
/// The entries are the recorder's last field, held inline (an array for a tuple of sources):
/// the call's shared state, recorder included, is one allocation.
pub(crate) struct Recorder<E: ?Sized = dyn Entries> {
    timeline: Timeline,
    /// Whether every source starts at once, with the aggregation (no concurrency limit below
    /// the number of sources): none is ever queued.
    at_once: bool,
    entries: E,
}

impl fmt::Debug for Recorder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recorder").field("timeline", &self.timeline).field("entries", &self.entries.all()).finish()
    }
}

/// The recorder's entries, one per source: an array for a tuple of sources, a boxed slice for
/// sources by name. Not part of the API.
#[doc(hidden)]
pub trait Entries: Send + Sync {
    /// Every entry, in declaration order.
    fn all(&self) -> &[Record];
}

impl<const N: usize> Entries for [Record; N] {
    fn all(&self) -> &[Record] {
        self
    }
}

impl Entries for Box<[Record]> {
    fn all(&self) -> &[Record] {
        self
    }
}

/// Flag: the source's own timeout fired on its last attempt.
const TIMED_OUT: u8 = 1;
/// Flag: the entry has details (an outcome other than ok, or notes).
const DETAILED: u8 = 2;

#[derive(Debug, Default)]
struct Detail {
    outcome: Option<Outcome>,
    fell_back: Option<Outcome>,
    kind: Option<ErrorKind>,
    retryable: bool,
    notes: Vec<String>,
    shared: Option<usize>,
    stale: Option<Duration>,
    nested: Option<Box<Report>>,
}

/// What a source's policies added to the report. Not part of the API.
///
/// Small (the details are boxed, made by the first detail): the call's shared state holds one
/// per source, inline.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct Record {
    attempts: AtomicU32,
    hedges: AtomicU32,
    flags: AtomicU8,
    detail: Mutex<Option<Box<Detail>>>,
}

impl Record {
    /// Runs `f` on the details, made if there were none, under their lock.
    fn with_detail<R>(&self, f: impl FnOnce(&mut Detail) -> R) -> R {
        self.flags.fetch_or(DETAILED, Relaxed);
        f(self.detail.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert_default())
    }

    /// The details, taken, if any.
    fn take_detail(&self) -> Detail {
        if self.flags.load(Relaxed) & DETAILED == 0 {
            return Detail::default();
        }
        let detail = self.detail.lock().unwrap_or_else(PoisonError::into_inner).take();
        detail.map(|detail| *detail).unwrap_or_default()
    }
}

impl<E: Entries> Recorder<E> {
    /// A recorder for the sources of `entries`, over the group's live `timeline`.
    pub(crate) fn new(timeline: Timeline, limit: Option<usize>, entries: E) -> Self {
        let at_once = limit.is_none_or(|limit| limit >= entries.all().len());
        Self { timeline, at_once, entries }
    }
}

impl Recorder {
    /// The source starts its first attempt; `later` for a dependent, which starts when its
    /// input is ready rather than when the group started its task.
    pub(crate) fn start(&self, index: usize, later: bool) {
        if let Some(entry) = self.entries.all().get(index) {
            if later {
                self.timeline.start(index);
            }
            entry.attempts.store(1, Relaxed);
        }
    }

    pub(crate) fn event(&self, index: usize, event: crate::call::Event<'_>) {
        use crate::call::Event;
        let Some(entry) = self.entries.all().get(index) else { return };
        match event {
            Event::Attempt | Event::Hedge => {
                entry.attempts.store(entry.attempts.load(Relaxed).saturating_add(1), Relaxed);
                if matches!(event, Event::Hedge) {
                    entry.hedges.store(entry.hedges.load(Relaxed).saturating_add(1), Relaxed);
                }
                entry.flags.fetch_and(!TIMED_OUT, Relaxed);
            }
            Event::TimedOut => {
                entry.flags.fetch_or(TIMED_OUT, Relaxed);
            }
            Event::Note(note) => entry.with_detail(|detail| detail.notes.push(note.to_owned())),
            Event::Shared { waiters } => entry.with_detail(|detail| detail.shared = Some(waiters)),
            Event::Stale { age } => entry.with_detail(|detail| {
                detail.stale = Some(age);
                detail.notes.push(format!("stale (age {})", Age(age)));
            }),
        }
    }

    /// The outcome, kind and retry verdict a failure of the source reads as: its own timeout
    /// if that fired last, else the kind its error gave.
    fn failed(&self, entry: &Record, failure: Failure<'_>) -> (Outcome, ErrorKind, bool) {
        match failure {
            Failure::Error(_, _, retryable) if entry.flags.load(Relaxed) & TIMED_OUT != 0 => {
                (Outcome::TimedOut { timeout: TimeoutKind::Source }, ErrorKind::Timeout, retryable)
            }
            Failure::Error(error, kind, retryable) => (Outcome::Failed { error: error.to_string() }, kind, retryable),
            Failure::Panicked(message) => {
                (Outcome::Panicked { message: message.to_owned() }, ErrorKind::Panicked, false)
            }
            Failure::Deadline => (Outcome::TimedOut { timeout: TimeoutKind::Global }, ErrorKind::Timeout, false),
            Failure::TimedOut => (Outcome::TimedOut { timeout: TimeoutKind::Source }, ErrorKind::Timeout, true),
        }
    }

    pub(crate) fn fell_back(&self, index: usize, failure: Failure<'_>) {
        let Some(entry) = self.entries.all().get(index) else { return };
        let (after, kind, _) = self.failed(entry, failure);
        entry.with_detail(|detail| (detail.fell_back, detail.kind) = (Some(after), Some(kind)));
    }

    pub(crate) fn nested(&self, index: usize, report: Report) {
        if let Some(entry) = self.entries.all().get(index) {
            entry.with_detail(|detail| detail.nested = Some(Box::new(report)));
        }
    }

    /// Whether a fallback stands in for the source's output (so far).
    pub(crate) fn fell_back_now(&self, index: usize) -> bool {
        self.entries.all().get(index).is_some_and(|entry| {
            entry.flags.load(Relaxed) & DETAILED != 0 && entry.with_detail(|detail| detail.fell_back.is_some())
        })
    }

    /// The source failed: how its failure reads in the report (its end is the group's).
    pub(crate) fn failure(&self, index: usize, failure: Failure<'_>) {
        let Some(entry) = self.entries.all().get(index) else { return };
        let (outcome, kind, retryable) = self.failed(entry, failure);
        entry.with_detail(|detail| {
            (detail.outcome, detail.kind, detail.retryable) = (Some(outcome), Some(kind), retryable)
        });
    }

    /// Whether the source has started its first attempt (a dependent waits for its input
    /// first).
    fn has_started(&self, index: usize) -> bool {
        self.entries.all().get(index).is_some_and(|entry| entry.attempts.load(Relaxed) > 0)
    }

    /// The time since the start of the aggregation.
    pub(crate) fn offset(&self) -> Duration {
        self.timeline.offset()
    }

    /// The sources that have started and not ended, in declaration order.
    pub(crate) fn in_flight<'n>(&self, names: &'n [Name]) -> Vec<&'n str> {
        (names.iter().enumerate())
            .filter(|(index, _)| self.has_started(*index) && self.timeline.is_running(*index))
            .map(|(_, name)| &**name)
            .collect()
    }

    /// The report, once the group has finished: on success from the group's timeline (the
    /// group builds no report of its own then), on failure from the group's report (`group`:
    /// each source's start, duration and how the group saw it end); with what the sources
    /// added. A source the group cancelled (or whose task the deadline dropped) reads as
    /// `error`'s cause says.
    pub(crate) fn report(
        &self,
        group: GroupReport,
        names: &[Name],
        inputs: &[Option<usize>],
        error: Option<&GroupError>,
        fields: Arc<[(Name, String)]>,
    ) -> Report {
        // A failed aggregation answers once every cancelled source has been dropped; a
        // successful one when its last source ended.
        let elapsed = match error {
            Some(_) => self.offset(),
            None => self.timeline.last_end().unwrap_or_default(),
        };
        let trigger = error.map(|error| match (error.kind(), error.cause()) {
            // Cancelled from outside (a parent, or an outer aggregation whose source failed).
            (ErrorKind::Cancelled, _) => Trigger::Cancelled,
            (_, Cause::Failed { name, .. } | Cause::Panicked { name, .. }) => Trigger::Source(name.clone()),
            (_, Cause::Deadline { .. }) => Trigger::Deadline,
            _ => Trigger::Cancelled,
        });
        // A source the group refused (its parent was cancelled already) has no task.
        let mut tasks = group.tasks.into_iter();
        let sources = (names.iter().zip(self.entries.all()).zip(inputs).enumerate())
            .map(|(index, ((name, entry), input))| {
                // How the group saw the task end, and its start and duration.
                let (seen, start, duration) = match error {
                    None => {
                        let start = self.timeline.start_of(index);
                        let end = self.timeline.end_of(index).unwrap_or(elapsed);
                        (Some(TaskOutcome::Ok), start, start.map_or(Duration::ZERO, |start| end.saturating_sub(start)))
                    }
                    Some(_) => match tasks.next() {
                        Some(task) => (Some(task.outcome), task.start, task.duration),
                        None => (None, None, Duration::ZERO),
                    },
                };
                let attempts = entry.attempts.load(Relaxed);
                // A dependent's task runs from the start, but the source starts when its input
                // is ready: one that never got it never started.
                let (start, duration) = match input {
                    Some(_) if attempts == 0 => (None, Duration::ZERO),
                    _ => (start, duration),
                };
                let queued = match start {
                    _ if self.at_once || input.is_some() => Duration::ZERO,
                    Some(start) => start,
                    None => elapsed,
                };
                let (hedges, after) = (entry.hedges.load(Relaxed), input.and_then(|input| names.get(input)).cloned());
                // The common case, a source that succeeded with nothing to add: no details.
                if error.is_none() && entry.flags.load(Relaxed) & DETAILED == 0 {
                    return SourceReport {
                        outcome: Outcome::Ok,
                        start,
                        duration,
                        queued,
                        attempts,
                        hedges,
                        notes: Vec::new(),
                        shared: None,
                        stale: None,
                        after,
                        nested: None,
                        kind: None,
                        retryable: false,
                        name: name.clone(),
                    };
                }
                let detail = entry.take_detail();
                let cancelled = || match error.map(GroupError::cause) {
                    Some(Cause::Deadline { .. }) => Outcome::TimedOut { timeout: TimeoutKind::Global },
                    Some(cause) => Outcome::Cancelled { cause: cause.to_string() },
                    None => Outcome::Cancelled { cause: "the aggregation ended".to_owned() },
                };
                let outcome = match (detail.outcome, seen) {
                    (Some(outcome), _) => outcome,
                    (None, Some(TaskOutcome::Ok)) => match detail.fell_back {
                        Some(after) => Outcome::FellBack { after: Box::new(after) },
                        None => Outcome::Ok,
                    },
                    (None, Some(TaskOutcome::Failed { error })) => Outcome::Failed { error: error.to_string() },
                    (None, Some(TaskOutcome::Panicked { message })) => {
                        Outcome::Panicked { message: message.to_string() }
                    }
                    (None, _) => cancelled(),
                };
                SourceReport {
                    outcome,
                    start,
                    duration,
                    queued,
                    attempts,
                    hedges,
                    notes: detail.notes,
                    shared: detail.shared,
                    stale: detail.stale,
                    after,
                    nested: detail.nested,
                    kind: detail.kind,
                    retryable: detail.retryable,
                    name: name.clone(),
                }
            })
            .collect();
        let cancellation = error.map(|error| elapsed.saturating_sub(error.elapsed()));
        Report { elapsed, sources, trigger, cancellation, fields }
    }
}

/// Where a source is, for the [in-flight view](crate::in_flight): read while the call runs.
pub(crate) struct Progress {
    /// When it started, from the start of the aggregation.
    pub(crate) start: Option<Duration>,
    /// When it ended (the current offset, for one that ended in the poll running now).
    pub(crate) end: Option<Duration>,
    pub(crate) attempts: u32,
    pub(crate) shared: Option<usize>,
    /// Its outcome, when it failed or fell back (`None` for one that succeeded or runs).
    pub(crate) outcome: Option<Outcome>,
    pub(crate) kind: Option<ErrorKind>,
}

// The in-flight view's reads (crate::in_flight), kept apart from the recording above.
impl Recorder {
    /// When the aggregation started.
    pub(crate) fn started(&self) -> tokio::time::Instant {
        self.timeline.started()
    }

    /// Source `index`'s progress so far: relaxed loads, and the detail's lock only for a
    /// source that has details.
    pub(crate) fn progress(&self, index: usize) -> Progress {
        let Some(entry) = self.entries.all().get(index) else {
            return Progress { start: None, end: None, attempts: 0, shared: None, outcome: None, kind: None };
        };
        let attempts = entry.attempts.load(Relaxed);
        // A dependent's task runs from the start, but the source starts with its first attempt.
        let start = if attempts > 0 { self.timeline.start_of(index) } else { None };
        let (mut shared, mut outcome, mut kind) = (None, None, None);
        if entry.flags.load(Relaxed) & DETAILED != 0 {
            let guard = entry.detail.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(detail) = guard.as_deref() {
                shared = detail.shared;
                outcome = detail
                    .outcome
                    .clone()
                    .or_else(|| detail.fell_back.clone().map(|after| Outcome::FellBack { after: Box::new(after) }));
                kind = detail.kind;
            }
        }
        Progress { start, end: self.timeline.end_of(index), attempts, shared, outcome, kind }
    }
}
