//! The timings and outcomes that [`Group::wait_with_report`] records, and the report built
//! from them.

use std::time::Duration;

use super::Group;
use crate::cancel::Cause;
use crate::error::GroupError;
use crate::report::{GroupReport, TaskOutcome, TaskReport};

/// The timings and outcomes of a group run by [`Group::wait_with_report`], by slot.
#[derive(Default)]
pub(super) struct Recording {
    /// The offset of the current poll from the group's creation.
    pub(super) now: Duration,
    /// Whether `wait` has been polled: tasks running from the start start then.
    pub(super) polled: bool,
    pub(super) entries: Vec<Entry>,
    /// The finished report, for [`WaitWithReport`] to take.
    pub(super) done: Option<GroupReport>,
}

#[derive(Default)]
pub(super) struct Entry {
    pub(super) start: Option<Duration>,
    pub(super) end: Option<Duration>,
    pub(super) outcome: Option<TaskOutcome>,
    pub(super) secondary: Option<Cause>,
}

impl Recording {
    pub(super) fn entry(&mut self, index: usize) -> &mut Entry {
        if self.entries.len() <= index {
            self.entries.resize_with(index + 1, Entry::default);
        }
        &mut self.entries[index]
    }

    pub(super) fn start(&mut self, index: usize) {
        let now = self.now;
        self.entry(index).start.get_or_insert(now);
    }

    pub(super) fn end(&mut self, index: usize, outcome: TaskOutcome) {
        let now = self.now;
        let entry = self.entry(index);
        entry.end = Some(now);
        entry.outcome = Some(outcome);
    }
}

impl<'a, T: Send + 'a> Group<'a, T> {
    /// Builds the report of a finished run into the recording.
    pub(super) fn finish_report(&mut self, error: Option<&GroupError>) {
        let Some(recording) = &mut self.recording else { return };
        let mut entries = std::mem::take(&mut recording.entries).into_iter();
        let elapsed = error.map_or(recording.now, GroupError::elapsed);
        let tasks = (self.slots.iter())
            .map(|slot| {
                let entry = entries.next().unwrap_or_default();
                let outcome = entry.outcome.unwrap_or_else(|| match error {
                    Some(error) => TaskOutcome::Cancelled { cause: error.cause().clone() },
                    None => TaskOutcome::Ok,
                });
                let end = entry.end.unwrap_or(elapsed);
                TaskReport {
                    name: slot.name.clone(),
                    outcome,
                    start: entry.start,
                    duration: entry.start.map_or(Duration::ZERO, |start| end.saturating_sub(start)),
                    secondary: entry.secondary,
                }
            })
            .collect();
        let fields = error.map_or_else(|| self.fields.clone(), |error| error.fields().to_vec());
        let cause = error.map(|error| error.cause().clone());
        recording.done = Some(GroupReport { elapsed, cause, tasks, fields });
    }
}
