//! What is running now: a bounded, redacted snapshot of the aggregations in flight, for an
//! operator who wants to see, while p99 is up, which calls are running, which source each
//! waits on, for how long, on which attempt, and why anything was cancelled.
//!
//! An [`InFlight`] registry is given to the aggregators that should show up in it
//! ([`AggregatorBuilder::in_flight`](crate::builder::AggregatorBuilder::in_flight)); each of
//! their calls takes a slot of its fixed-size table while it runs. [`InFlight::snapshot`]
//! reads the calls in their slots, and keeps the last failed ones.
//!
//! ```
//! use std::time::Duration;
//! use muster::{Aggregator, fetcher_fn};
//! use muster::in_flight::{InFlight, SourceState};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let in_flight = InFlight::new(64);
//! let slow = fetcher_fn(|_: &u64| async {
//!     tokio::time::sleep(Duration::from_secs(2)).await;
//!     Ok::<_, std::io::Error>(1_u64)
//! });
//! let aggregator = Aggregator::builder().source("slow", slow).in_flight(&in_flight).build()?;
//! let call = tokio::spawn(async move { aggregator.aggregate(&7).await.map(|aggregate| aggregate.outputs) });
//! tokio::time::sleep(Duration::from_millis(500)).await;
//!
//! let snapshot = in_flight.snapshot();
//! let source = &snapshot.calls[0].sources[0];
//! assert_eq!((&*source.name, &source.state), ("slow", &SourceState::Running { attempt: 1 }));
//! assert_eq!(source.elapsed, Duration::from_millis(500));
//! println!("{snapshot}"); // the same waterfall as a report's, with each source's state
//!
//! call.await??;
//! assert!(in_flight.snapshot().calls.is_empty(), "a call leaves when it ends");
//! # Ok(()) }
//! ```
//!
//! # Cost
//!
//! Nothing is read while nobody looks: the sources record their timings as they do for the
//! report anyway. A registered call never waits and never allocates (unless it fails: it is
//! then kept). It adds, when it starts, three reference-count increments (of what the call
//! already shares), one atomic increment and one `try_lock` of a free slot (a busy slot is
//! skipped), and, when it ends, one `try_lock` to free its slot (a slot that a snapshot is
//! reading just then is marked ended, and freed by the next call or snapshot that finds it).
//! `benches/aggregator.rs` measures it (`in_flight`: the same aggregation with and without a
//! registry, interleaved in one run: about 1.04x on two empty sources, some 60 ns).
//!
//! # Redaction
//!
//! A snapshot holds the call's context fields (what its [`RequestContext`](crate::RequestContext)
//! and the aggregator's [`Field`](crate::options::Field)s set, the same as its log events and
//! report carry), and of each source only its name, its timings, its attempt and the one-word
//! outcome and [kind](crate::ErrorKind) it ended with. No header value, no request, no error
//! text (which could carry a backend's URL or answer): a cancellation says only which source
//! or which deadline caused it.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use muster_core::{ErrorKind, Millis, Name, waterfall_bar};
use tokio::time::Instant;

use crate::call::Shared;
use crate::report::{Outcome, Report, Trigger};

/// A registry of the aggregations running now, shared by the aggregators given it: a table of
/// at most `n` calls, and the last `n` that failed. Cheap to clone (the clones share the
/// table).
///
/// A call that finds the table full runs untracked: the snapshot then says it is
/// [truncated](Snapshot::is_truncated), and how many calls it misses.
#[derive(Clone)]
pub struct InFlight {
    registry: Arc<Registry>,
}

struct Registry {
    slots: Box<[Slot<Tracked>]>,
    /// Where the next call starts looking for a free slot, so that calls spread over the table.
    next: AtomicUsize,
    /// The calls running now that found no free slot.
    untracked: AtomicUsize,
    /// The last failed calls, the oldest first.
    failed: Mutex<VecDeque<CallSnapshot>>,
}

/// A place in the table: the call in it, if any, and whether that call has ended (it could
/// not be taken out then: a snapshot was reading the slot).
struct Slot<T> {
    call: Mutex<Option<T>>,
    ended: AtomicBool,
}

impl<T: Clone> Slot<T> {
    fn new() -> Self {
        Self { call: Mutex::new(None), ended: AtomicBool::new(false) }
    }

    /// Takes `call` into the slot if it is free (or holds an ended call), without waiting;
    /// else gives it back.
    fn take_in(&self, call: T) -> Result<(), T> {
        let Ok(mut slot) = self.call.try_lock() else { return Err(call) };
        if slot.is_some() && !self.ended.load(Acquire) {
            return Err(call);
        }
        self.ended.store(false, Relaxed);
        // An ended call's shares are dropped here: a few decrements.
        *slot = Some(call);
        Ok(())
    }

    /// Frees the slot of a call that ended, without waiting: a slot a snapshot is reading is
    /// marked ended instead, for the next call or snapshot to free.
    fn free(&self) {
        match self.call.try_lock() {
            Ok(mut slot) => {
                let call = slot.take();
                drop(slot);
                drop(call);
            }
            Err(_) => self.ended.store(true, Release),
        }
    }

    /// The call in the slot, unless it has ended (then it is freed). The snapshot's side: it
    /// may wait, for a call taking the slot in or freeing it.
    fn read(&self) -> Option<T> {
        let mut slot = lock(&self.call);
        if self.ended.swap(false, AcqRel) {
            *slot = None;
        }
        slot.clone()
    }
}

/// A call in its slot: what its snapshot is read from.
#[derive(Clone)]
pub(crate) struct Tracked {
    pub(crate) shared: Arc<Shared>,
    pub(crate) fields: Arc<[(Name, String)]>,
    pub(crate) inputs: Arc<[Option<usize>]>,
}

impl fmt::Debug for InFlight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InFlight")
            .field("capacity", &self.registry.slots.len())
            .field("untracked", &self.registry.untracked.load(Relaxed))
            .finish_non_exhaustive()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl InFlight {
    /// A registry that shows at most `n` calls at a time, and keeps the last `n` failed ones.
    pub fn new(n: usize) -> Self {
        let registry = Registry {
            slots: (0..n).map(|_| Slot::new()).collect(),
            next: AtomicUsize::new(0),
            untracked: AtomicUsize::new(0),
            failed: Mutex::new(VecDeque::with_capacity(n)),
        };
        Self { registry: Arc::new(registry) }
    }

    /// The calls running now, the longest-running first, and the last failed ones.
    ///
    /// Nothing is stopped to take it: each call is read while it runs on, from what its
    /// sources record for its report (the same clock, once per poll), so a source's state is
    /// the one it had at its call's last poll, and two calls may be read a few microseconds
    /// apart. It waits on no call, and no call waits on it beyond the copy of three pointers.
    pub fn snapshot(&self) -> Snapshot {
        // A slot is held only to clone what the call shares; the reading happens after.
        let tracked: Vec<Tracked> = self.registry.slots.iter().filter_map(Slot::read).collect();
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut calls: Vec<CallSnapshot> = tracked.iter().map(|call| call.snapshot(now, wall)).collect();
        calls.sort_by_key(|call| std::cmp::Reverse(call.elapsed));
        let failed = lock(&self.registry.failed).iter().rev().cloned().collect();
        Snapshot { calls, untracked: self.registry.untracked.load(Relaxed), failed }
    }

    /// Registers a running call: it leaves the table when the registration is dropped.
    pub(crate) fn register(&self, call: Tracked) -> Registration<'_> {
        let registry = &*self.registry;
        let n = registry.slots.len();
        let first = registry.next.fetch_add(1, Relaxed);
        let mut call = call;
        for i in 0..n {
            let index = first.wrapping_add(i) % n;
            let Some(slot) = registry.slots.get(index) else { continue };
            // A slot being read by a snapshot is skipped, never waited on.
            match slot.take_in(call) {
                Ok(()) => return Registration { registry, slot: Some(index) },
                Err(back) => call = back,
            }
        }
        registry.untracked.fetch_add(1, Relaxed);
        Registration { registry, slot: None }
    }

    /// Keeps the snapshot of a call that failed with `report`, dropping the oldest beyond `n`.
    pub(crate) fn failed(&self, report: &Report) {
        let n = self.registry.slots.len();
        if n == 0 {
            return;
        }
        let call = CallSnapshot::failed(report);
        let mut failed = lock(&self.registry.failed);
        if failed.len() == n {
            failed.pop_front();
        }
        failed.push_back(call);
    }
}

/// A call's place in the table, freed when dropped (the call ended, or its caller went away).
pub(crate) struct Registration<'a> {
    registry: &'a Registry,
    slot: Option<usize>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        match self.slot {
            Some(index) => {
                if let Some(slot) = self.registry.slots.get(index) {
                    slot.free();
                }
            }
            None => {
                self.registry.untracked.fetch_sub(1, Relaxed);
            }
        }
    }
}

impl Tracked {
    fn snapshot(&self, now: Instant, wall: SystemTime) -> CallSnapshot {
        let recorder = &self.shared.recorder;
        let elapsed = now.saturating_duration_since(recorder.started());
        let sources = (self.shared.names.iter().enumerate())
            .map(|(index, name)| {
                let progress = recorder.progress(index);
                let end = progress.end.map(|end| end.min(elapsed));
                let state = match (&progress.outcome, end, progress.start) {
                    (Some(outcome), Some(_), _) => SourceState::Done { outcome: outcome.as_str(), kind: progress.kind },
                    (None, Some(_), _) => SourceState::Done { outcome: "ok", kind: None },
                    (_, None, Some(_)) => SourceState::Running { attempt: progress.attempts },
                    (_, None, None) => match self.inputs.get(index).copied().flatten() {
                        Some(input) => {
                            SourceState::Waiting { input: self.shared.names.get(input).cloned().unwrap_or_default() }
                        }
                        None => SourceState::Queued,
                    },
                };
                let ran = progress.start.map_or(Duration::ZERO, |start| end.unwrap_or(elapsed).saturating_sub(start));
                SourceSnapshot {
                    name: name.clone(),
                    state,
                    start: progress.start,
                    elapsed: ran,
                    shared: progress.shared,
                }
            })
            .collect();
        CallSnapshot {
            fields: Arc::clone(&self.fields),
            started: wall.checked_sub(elapsed).unwrap_or(wall),
            elapsed,
            remaining: self.shared.deadline.map(|deadline| deadline.saturating_duration_since(now)),
            sources,
            stopped_by: None,
        }
    }
}

/// What [`InFlight::snapshot`] returns: the calls running now and the last failed ones.
///
/// `Display` draws each call as a report does: a line per source with its bar (from its start
/// to now, scaled to the call's elapsed time), its elapsed time and its state.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Snapshot {
    /// The calls running now, the longest-running first.
    pub calls: Vec<CallSnapshot>,
    /// How many running calls are missing because the table was full.
    pub untracked: usize,
    /// The last calls that failed, the most recent first.
    pub failed: Vec<CallSnapshot>,
}

impl Snapshot {
    /// Whether calls are missing from [`calls`](Self::calls) because the table was full.
    pub fn is_truncated(&self) -> bool {
        self.untracked > 0
    }
}

/// One aggregation, running or failed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CallSnapshot {
    /// The call's context fields (`user_id`, `request_id`, ...): the aggregator's defaults,
    /// then the call's own.
    pub fields: Arc<[(Name, String)]>,
    /// When it started, by the system clock.
    pub started: SystemTime,
    /// How long it has run (or ran, for a failed call).
    pub elapsed: Duration,
    /// The time left before its deadline; `None` without a deadline, or for a failed call.
    pub remaining: Option<Duration>,
    /// Every source, in declaration order.
    pub sources: Vec<SourceSnapshot>,
    /// For a failed call, what stopped it: a source's name, `deadline` or `caller`.
    pub stopped_by: Option<Trigger>,
}

/// One source of a call.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SourceSnapshot {
    /// The source's name.
    pub name: Name,
    /// Where it is.
    pub state: SourceState,
    /// When it started, from the start of the call; `None` before it starts.
    pub start: Option<Duration>,
    /// How long it has run: until now, or until it ended.
    pub elapsed: Duration,
    /// How many waiters share the call it waits on or came from, when it is a shared
    /// ([`Coalesce`](crate::policy::Coalesce)d) one.
    pub shared: Option<usize>,
}

/// Where a source is.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceState {
    /// Not started: waiting for a place under the aggregator's
    /// [`Limit`](crate::options::Limit), or for its first poll.
    Queued,
    /// A dependent source waiting for the output of `input`.
    Waiting {
        /// The source it waits on.
        input: Name,
    },
    /// Running its `attempt`-th attempt (from 1; retries and hedges count).
    Running {
        /// The attempt, from 1.
        attempt: u32,
    },
    /// Ended: `outcome` is [`Outcome::as_str`](crate::report::Outcome::as_str) (`ok`,
    /// `failed`, `timeout`, `panicked`, `cancelled`, `fallback`), with the kind of a failure.
    Done {
        /// How it ended, in one word.
        outcome: &'static str,
        /// The kind of its failure, if it failed.
        kind: Option<ErrorKind>,
    },
    /// Cancelled before it ended, and why: ``cancelled by `profile` ``, `the deadline` or
    /// `cancelled by the caller`. Only in a failed call: a running call's sources are dropped
    /// the moment it is cancelled, and the call leaves the table with them.
    Cancelled {
        /// Why, without the error's text.
        cause: String,
    },
}

impl fmt::Display for SourceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Queued => f.write_str("queued"),
            Self::Waiting { input } => write!(f, "waiting on `{input}`"),
            Self::Running { attempt } => write!(f, "running (attempt {attempt})"),
            Self::Done { outcome, kind: Some(kind) } => write!(f, "{outcome} ({kind})"),
            Self::Done { outcome, kind: None } => f.write_str(outcome),
            Self::Cancelled { cause } => f.write_str(cause),
        }
    }
}

impl CallSnapshot {
    /// A failed call, from its report: redacted as a running one is.
    fn failed(report: &Report) -> Self {
        let cause = match &report.trigger {
            Some(Trigger::Source(name)) => format!("cancelled by `{name}`"),
            Some(Trigger::Deadline) => "the deadline".to_owned(),
            _ => "cancelled by the caller".to_owned(),
        };
        let sources = (report.sources.iter())
            .map(|source| {
                let state = match &source.outcome {
                    Outcome::Cancelled { .. } => SourceState::Cancelled { cause: cause.clone() },
                    outcome => SourceState::Done { outcome: outcome.as_str(), kind: source.kind },
                };
                SourceSnapshot {
                    name: source.name.clone(),
                    state,
                    start: source.start,
                    elapsed: source.duration,
                    shared: source.shared,
                }
            })
            .collect();
        let now = SystemTime::now();
        CallSnapshot {
            fields: Arc::clone(&report.fields),
            started: now.checked_sub(report.elapsed).unwrap_or(now),
            elapsed: report.elapsed,
            remaining: None,
            sources,
            stopped_by: report.trigger.clone(),
        }
    }
}

impl fmt::Display for CallSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.stopped_by.is_some() { "failed after" } else { "running for" };
        write!(f, "call {verb} {}", Millis(self.elapsed))?;
        if let Some(remaining) = self.remaining {
            write!(f, ", {} left", Millis(remaining))?;
        }
        if let Some(trigger) = &self.stopped_by {
            write!(f, ", stopped by {trigger}")?;
        }
        for (name, value) in self.fields.iter() {
            write!(f, " {name}={value}")?;
        }
        let width = self.sources.iter().map(|source| source.name.len()).max().unwrap_or(0);
        for source in &self.sources {
            let bar = waterfall_bar(source.start, source.elapsed, self.elapsed);
            write!(f, "\n  {:width$} |{bar}| {:>7}  {}", source.name, Millis(source.elapsed), source.state)?;
            if let Some(waiters) = source.shared {
                write!(f, " (shared by {waiters})")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural = if self.calls.len() == 1 { "" } else { "s" };
        write!(f, "{} aggregation{plural} in flight", self.calls.len())?;
        if self.is_truncated() {
            write!(f, " (truncated: {} more untracked)", self.untracked)?;
        }
        for call in &self.calls {
            write!(f, "\n{call}")?;
        }
        if !self.failed.is_empty() {
            write!(f, "\nlast {} failed", self.failed.len())?;
            for call in &self.failed {
                write!(f, "\n{call}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_ends_while_its_slot_is_read_is_freed_by_the_next_one() {
        let slot = Slot::new();
        assert_eq!(slot.take_in(1), Ok(()));
        assert_eq!(slot.take_in(2), Err(2), "the slot is taken");
        // A snapshot holds the slot while call 1 ends: it is marked ended, not waited for.
        let reading = lock(&slot.call);
        slot.free();
        assert_eq!(slot.take_in(3), Err(3), "a slot being read is skipped");
        drop(reading);
        assert_eq!(slot.take_in(4), Ok(()), "an ended call's slot is free");
        assert_eq!(slot.read(), Some(4));
        slot.free();
        assert_eq!(slot.read(), None);

        // A snapshot that finds an ended call frees it too.
        assert_eq!(slot.take_in(5), Ok(()));
        let reading = lock(&slot.call);
        slot.free();
        drop(reading);
        assert_eq!(slot.read(), None);
        assert_eq!(slot.take_in(6), Ok(()));
        assert_eq!(slot.read(), Some(6));
    }
}
