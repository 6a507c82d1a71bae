//! The one report engine: the timings and outcomes that [`Group::wait_with_report`] records,
//! and the report built from them. The timings are a [`Timeline`], shared, so that what runs
//! inside the group (the aggregator's sources) and what looks from outside while it runs read
//! the same stamps the report is built from.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use super::Group;
use super::task::State;
use crate::cancel::Cause;
use crate::error::GroupError;
use crate::report::{GroupReport, TaskOutcome, TaskReport};

/// The outcomes of a group run by [`Group::wait_with_report`] by slot, and their timings.
///
/// Boxed in the group: held inline, it makes every group, recording or not, larger to move
/// (measured: about 90 more instructions per run of a bare group of 2 ready tasks, in
/// `memcpy`), for one allocation less when recording.
pub(super) struct Recording {
    pub(super) timeline: Timeline,
    /// Whether `wait` has been polled: tasks running from the start start at 0.
    polled: bool,
    /// The outcomes of the tasks that did not succeed, by slot: a task that succeeded reads
    /// as `Ok` from its slot, so the success path allocates nothing here.
    entries: Vec<Entry>,
}

#[derive(Default)]
pub(super) struct Entry {
    pub(super) outcome: Option<TaskOutcome>,
    pub(super) secondary: Option<Cause>,
}

impl Recording {
    pub(super) fn new(started: Instant, tasks: usize) -> Self {
        Self { timeline: Timeline::new(started, tasks), polled: false, entries: Vec::new() }
    }

    pub(super) fn entry(&mut self, index: usize) -> &mut Entry {
        if self.entries.len() <= index {
            self.entries.resize_with(index + 1, Entry::default);
        }
        &mut self.entries[index]
    }

    /// Whether task `index`'s outcome is recorded (it did not succeed).
    pub(super) fn has_outcome(&self, index: usize) -> bool {
        self.entries.get(index).is_some_and(|entry| entry.outcome.is_some())
    }

    /// Task `index` starts now: stamped at the end of this poll.
    pub(super) fn start(&mut self, index: usize) {
        self.room(index);
        self.timeline.start(index);
    }

    /// Task `index` succeeded now: stamped at the end of this poll; its slot says `Ok`.
    pub(super) fn end_ok(&mut self, index: usize) {
        self.room(index);
        self.timeline.end(index);
    }

    /// Task `index` ended now with `outcome`: stamped at the end of this poll.
    pub(super) fn end(&mut self, index: usize, outcome: TaskOutcome) {
        self.room(index);
        self.timeline.end(index);
        self.entry(index).outcome = Some(outcome);
    }

    /// Task `index` ended at `offset` with `outcome` (it was dropped then).
    pub(super) fn end_at(&mut self, index: usize, offset: Duration, outcome: TaskOutcome) {
        self.room(index);
        self.timeline.end_at(index, offset);
        self.entry(index).outcome = Some(outcome);
    }

    /// Makes room for task `index` in the timeline: only tasks spawned through a handle, after
    /// the timeline was made, need it. Whoever holds the old timeline keeps what it had.
    fn room(&mut self, index: usize) {
        if index >= self.timeline.marks.len() {
            self.timeline = self.timeline.grown(index + 1);
        }
    }
}

impl<'a, T: Send + 'a> Group<'a, T> {
    /// Starts recording for a report ([`wait_with_report`](Group::wait_with_report)) and
    /// returns the live timeline, with room for `tasks` tasks: what the aggregator's sources
    /// stamp and an in-flight view reads. Not part of the API.
    #[doc(hidden)]
    pub fn timeline(&mut self, tasks: usize) -> Timeline {
        let started = self.started;
        let recording = self.recording.get_or_insert_with(|| Box::new(Recording::new(started, tasks)));
        recording.timeline.clone()
    }

    /// Before the first poll: the tasks running from the start start at 0, the group's
    /// creation.
    pub(super) fn record_first_poll(&mut self) {
        let Some(recording) = self.recording.as_mut().filter(|recording| !recording.polled) else { return };
        recording.polled = true;
        for (index, slot) in self.slots.iter().enumerate() {
            if matches!(slot.state, State::Running(_) | State::Pooled) {
                recording.room(index);
                recording.timeline.start_at_zero(index);
            }
        }
    }

    /// After each poll: gives the starts and ends of this poll their time.
    pub(super) fn stamp(&self) {
        if let Some(recording) = &self.recording {
            recording.timeline.stamp();
        }
    }

    /// The report of a finished run, before the slots are taken for the outputs.
    pub(super) fn build_report(&mut self, error: Option<&GroupError>) -> Option<GroupReport> {
        let recording = self.recording.as_mut()?;
        recording.timeline.stamp();
        let timeline = &recording.timeline;
        let mut entries = std::mem::take(&mut recording.entries).into_iter();
        let elapsed = error.map_or_else(|| timeline.last_end().unwrap_or_default(), GroupError::elapsed);
        let tasks = (self.slots.iter().enumerate())
            .map(|(index, slot)| {
                let entry = entries.next().unwrap_or_default();
                let outcome = match (entry.outcome, &slot.state, error) {
                    (Some(outcome), ..) => outcome,
                    (None, State::Done(_), _) | (None, _, None) => TaskOutcome::Ok,
                    (None, _, Some(error)) => TaskOutcome::Cancelled { cause: error.cause().clone() },
                };
                let start = timeline.start_of(index);
                let end = timeline.end_of(index).unwrap_or(elapsed);
                TaskReport {
                    name: slot.name.clone(),
                    outcome,
                    start,
                    duration: start.map_or(Duration::ZERO, |start| end.saturating_sub(start)),
                    secondary: entry.secondary,
                }
            })
            .collect();
        let fields = error.map_or_else(|| self.fields.clone(), |error| error.fields().to_vec());
        let cause = error.map(|error| error.cause().clone());
        Some(GroupReport { elapsed, cause, tasks, fields })
    }
}

/// The live start and end of every task of a group that records a report, as offsets from
/// the group's creation, shared by everyone who reads them while it runs.
///
/// The clock is read once per poll of the group, at its end, and only when a task started or
/// ended in it: the tasks that started or ended in one poll get the time at its end, which is
/// when the group could go on (tasks are polled in place, one after the other). Tasks
/// running from the start start at 0. So a duration is exact to the length of one poll.
///
/// Plain relaxed atomics: the group and its tasks write on the group's task, one at a time;
/// a reader elsewhere sees each stamp whole, if not the latest. Cheap to clone (the marks
/// are shared, in one allocation).
#[derive(Clone)]
pub struct Timeline {
    started: Instant,
    marks: Arc<[Mark]>,
}

struct Mark {
    start: AtomicU64,
    end: AtomicU64,
}

/// An offset not recorded (yet): a task that has not started or not ended.
const UNSET: u64 = u64::MAX;
/// A start or end in the current poll, until it is stamped.
const NOW: u64 = u64::MAX - 1;

impl Mark {
    fn new() -> Self {
        Self { start: AtomicU64::new(UNSET), end: AtomicU64::new(UNSET) }
    }
}

impl Timeline {
    fn new(started: Instant, tasks: usize) -> Self {
        // One allocation: a mapped range has a known length.
        Self { started, marks: (0..tasks).map(|_| Mark::new()).collect() }
    }

    /// A copy with room for `tasks` tasks.
    fn grown(&self, tasks: usize) -> Self {
        let marks = (0..tasks.max(self.marks.len()))
            .map(|index| match self.marks.get(index) {
                Some(mark) => Mark {
                    start: AtomicU64::new(mark.start.load(Relaxed)),
                    end: AtomicU64::new(mark.end.load(Relaxed)),
                },
                None => Mark::new(),
            })
            .collect();
        Self { started: self.started, marks }
    }

    /// When the group was created: the offsets count from here.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The time since the group's creation (reads the clock).
    pub fn offset(&self) -> Duration {
        self.started.elapsed()
    }

    /// Task `index` starts (again) now, e.g. a dependent source whose input just arrived: its
    /// start is stamped at the end of this poll.
    pub fn start(&self, index: usize) {
        if let Some(mark) = self.marks.get(index) {
            mark.start.store(NOW, Relaxed);
        }
    }

    fn start_at_zero(&self, index: usize) {
        if let Some(mark) = self.marks.get(index) {
            if mark.start.load(Relaxed) == UNSET {
                mark.start.store(0, Relaxed);
            }
        }
    }

    fn end(&self, index: usize) {
        if let Some(mark) = self.marks.get(index) {
            mark.end.store(NOW, Relaxed);
        }
    }

    fn end_at(&self, index: usize, offset: Duration) {
        if let Some(mark) = self.marks.get(index) {
            mark.end.store(nanos(offset), Relaxed);
        }
    }

    /// Gives the starts and ends of this poll their time: one clock read, and only if there
    /// are any.
    fn stamp(&self) {
        // Loads and stores rather than read-modify-writes: the group and its tasks run on one
        // task, one at a time.
        let mut now = None;
        for mark in self.marks.iter() {
            for stamp in [&mark.start, &mark.end] {
                if stamp.load(Relaxed) == NOW {
                    stamp.store(*now.get_or_insert_with(|| nanos(self.offset())), Relaxed);
                }
            }
        }
    }

    /// When task `index` started, if it has; a start not stamped yet reads as now.
    pub fn start_of(&self, index: usize) -> Option<Duration> {
        self.read(self.marks.get(index)?.start.load(Relaxed))
    }

    /// When task `index` ended, if it has; an end not stamped yet reads as now.
    pub fn end_of(&self, index: usize) -> Option<Duration> {
        self.read(self.marks.get(index)?.end.load(Relaxed))
    }

    /// Whether task `index` has started and not ended.
    pub fn is_running(&self, index: usize) -> bool {
        self.marks.get(index).is_some_and(|mark| mark.start.load(Relaxed) != UNSET && mark.end.load(Relaxed) == UNSET)
    }

    /// The latest end stamped, if a task ended.
    #[doc(hidden)]
    pub fn last_end(&self) -> Option<Duration> {
        let end = self.marks.iter().map(|mark| mark.end.load(Relaxed)).filter(|&end| end < NOW).max()?;
        Some(Duration::from_nanos(end))
    }

    fn read(&self, stamp: u64) -> Option<Duration> {
        match stamp {
            UNSET => None,
            NOW => Some(self.offset()),
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }
}

impl fmt::Debug for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let marks: Vec<_> = (0..self.marks.len()).map(|index| (self.start_of(index), self.end_of(index))).collect();
        f.debug_struct("Timeline").field("marks", &marks).finish_non_exhaustive()
    }
}

fn nanos(offset: Duration) -> u64 {
    u64::try_from(offset.as_nanos()).unwrap_or(NOW - 1)
}
