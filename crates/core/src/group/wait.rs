//! The futures of [`Group::wait`] and [`Group::wait_with_report`], and the polling loop behind
//! them: waves of polls, starting queued tasks, failing fast and dropping the rest.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use tokio::time::Sleep;
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::Group;
use super::outputs::Outputs;
use super::recording::Recording;
use super::task::{DropPanic, Pooled, Slot, State, TaskOutput, drop_contained, panic_message};
use crate::cancel::{CancelToken, Cause, Name};
use crate::deadline::{TokenScope, closing_scoped, token_scoped};
use crate::error::{BoxError, ErrorKind, GroupError};
use crate::report::{GroupReport, TaskOutcome};

/// Up to this many tasks, `wait` polls every running task on each wake-up: no allocation
/// beyond the task itself. Larger groups poll only the tasks that were woken (through a
/// `FuturesUnordered`, one more allocation per task), so a wake-up costs O(1) instead of O(N).
/// The same threshold as `futures::future::join_all`, for the same reason. Their tasks are
/// pooled once the first poll has left some pending: tasks that finish in it cost nothing more.
const FEW: usize = 32;

pin_project_lite::pin_project! {
    /// The future of [`Group::wait`]: the group's outputs or its first failure.
    ///
    /// Dropping it drops every task; see [`Group::wait`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Wait<'a, T> {
        group: Group<'a, T>,
        #[pin]
        deadline: Option<Sleep>,
        #[pin]
        cancelled: Option<WaitForCancellationFutureOwned>,
    }
}

impl<'a, T: Send + 'a> Wait<'a, T> {
    /// Starts waiting for `group`: watches the token (or the parent) for the caller's
    /// cancellation.
    pub(super) fn new(group: Group<'a, T>) -> Self {
        let cancelled = group.token.get().or(group.parent.as_ref()).map(CancelToken::cancelled_owned);
        // The deadline's timer is made when a poll leaves tasks pending: a group whose tasks
        // finish in its first poll never touches the timer wheel.
        Self { group, deadline: None, cancelled }
    }
}

/// Which runs of a recording group build a [`GroupReport`] (with `wait`, none: the timeline
/// alone, for whoever reads it).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Reported {
    /// Failed runs only (the aggregator builds its own report on success, from the timeline).
    OnFailure,
    /// Every run (`wait_with_report`).
    Always,
}

impl<'a, T: Send + 'a> Wait<'a, T> {
    /// Polls the group; once it has finished, its outputs or error, and into `report` its
    /// report if `reported` asks for one (an out-parameter: `wait`'s result stays small;
    /// `None` for `wait`, which then has no report to drop on each poll).
    fn poll_reported(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        report: Option<(Reported, &mut Option<GroupReport>)>,
    ) -> Poll<Result<Outputs<T>, GroupError>> {
        let this = self.project();
        let group = this.group;
        group.record_first_poll();
        let poll = group.poll_wait(cx, this.deadline, this.cancelled);
        group.stamp();
        if let Err(error) = std::task::ready!(poll) {
            if let Some((_, report)) = report {
                *report = group.build_report(Some(&error));
            }
            return Poll::Ready(Err(error));
        }
        if group.shared.get().is_none() {
            // With a handle, `complete` cancelled the token under the inbox's lock.
            if let Some(token) = group.token.get() {
                token.cancel_with(Cause::Completed);
            }
        }
        if let Some((Reported::Always, report)) = report {
            *report = group.build_report(None);
        }
        // `into_iter().map().collect()` reuses the slots' allocation for the outputs: no new
        // allocation (at most a `realloc` that shrinks it).
        let entries = std::mem::take(&mut group.slots).into_iter().map(|slot| match slot.state {
            State::Done(value) => (slot.name, Some(value)),
            _ => (slot.name, None),
        });
        Poll::Ready(Ok(Outputs { entries: entries.collect() }))
    }
}

impl<'a, T: Send + 'a> Future for Wait<'a, T> {
    type Output = Result<Outputs<T>, GroupError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.poll_reported(cx, None)
    }
}

impl<T> fmt::Debug for Wait<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait").field("group", &self.group).finish_non_exhaustive()
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Group::wait_with_report`]: the group's result and its [`GroupReport`].
    ///
    /// Dropping it drops every task, as dropping [`Wait`] does.
    #[must_use = "futures do nothing unless polled"]
    pub struct WaitWithReport<'a, T> {
        #[pin]
        wait: Wait<'a, T>,
        reported: Reported,
    }
}

impl<'a, T> WaitWithReport<'a, T> {
    pub(super) fn new(wait: Wait<'a, T>, reported: Reported) -> Self {
        Self { wait, reported }
    }
}

impl<'a, T: Send + 'a> Future for WaitWithReport<'a, T> {
    type Output = (Result<Outputs<T>, GroupError>, GroupReport);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut report = None;
        let result = std::task::ready!(this.wait.poll_reported(cx, Some((*this.reported, &mut report))));
        Poll::Ready((result, report.unwrap_or_default()))
    }
}

impl<T> fmt::Debug for WaitWithReport<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitWithReport").field("wait", &self.wait).finish()
    }
}

/// Records the output of the task in `slot` (number `index`), which succeeded: the success
/// path of `settle`, on the fields it writes, so that `poll_running` can take it while it
/// holds the slots.
#[inline(always)]
fn succeed<T>(
    running: &mut usize,
    recording: &mut Option<Box<Recording>>,
    slot: &mut Slot<'_, T>,
    index: usize,
    value: T,
) {
    *running -= 1;
    slot.state = State::Done(value);
    if let Some(recording) = recording {
        recording.end_ok(index);
    }
}

/// The failures of one wave: the earliest-spawned is the root cause, the others lost the tie.
/// No allocation for the usual single failure.
#[derive(Default)]
struct Failures {
    root: Option<(usize, ErrorKind, Cause)>,
    others: Vec<usize>,
}

impl Failures {
    fn add(&mut self, index: usize, kind: ErrorKind, cause: Cause) {
        match &self.root {
            Some((root, ..)) if *root < index => self.others.push(index),
            _ => {
                if let Some((root, ..)) = self.root.replace((index, kind, cause)) {
                    self.others.push(root);
                }
            }
        }
    }
}

impl<'a, T: Send + 'a> Group<'a, T> {
    /// Moves the running tasks into the `FuturesUnordered` of a large group.
    fn pool_up(&mut self) {
        let pool = self.pool.get_or_insert_with(FuturesUnordered::new);
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if !matches!(slot.state, State::Running(_)) {
                continue;
            }
            if let State::Running(task) = std::mem::replace(&mut slot.state, State::Pooled) {
                pool.push(Pooled { index, task });
            }
        }
    }

    fn poll_wait(
        &mut self,
        cx: &mut Context<'_>,
        mut deadline: Pin<&mut Option<Sleep>>,
        mut cancelled: Pin<&mut Option<WaitForCancellationFutureOwned>>,
    ) -> Poll<Result<(), GroupError>> {
        if let Some(shared) = self.shared.get() {
            shared.waker.register(cx.waker());
        }
        loop {
            if cancelled.as_mut().as_pin_mut().is_some_and(|cancelled| cancelled.poll(cx).is_ready()) {
                let cause = self.closed().cloned().unwrap_or(Cause::Cancelled);
                return Poll::Ready(Err(self.fail(ErrorKind::Cancelled, cause, &[])));
            }
            // Drain the tasks that are ready now, in waves: queued tasks (and tasks spawned
            // through a handle) start only once a wave is over and had no failure, so which
            // tasks start never depends on the order in which a wave was polled. Failures in
            // the same wave tie-break to the earliest spawned, and a task finishing together
            // with the deadline is in time.
            let mut failed = Failures::default();
            let had_token = self.token.get().is_some();
            let mut scope = self.token_scope();
            token_scoped(&mut scope, || {
                loop {
                    self.poll_running(cx, &mut failed);
                    if failed.root.is_some() || self.take_incoming() + self.start_free() == 0 {
                        break;
                    }
                }
            });
            self.adopt(scope);
            if let Some((_, kind, cause)) = failed.root {
                return Poll::Ready(Err(self.fail(kind, cause, &failed.others)));
            }
            if let (false, Some(token)) = (had_token, self.token.get()) {
                // A task made the group's token: watch it (it is cancelled with the parent).
                cancelled.set(Some(token.cancelled_owned()));
                continue;
            }
            if self.running == 0 && self.next_queued.is_none() {
                if self.complete() {
                    return Poll::Ready(Ok(()));
                }
                // A handle spawned a task meanwhile: run it.
                continue;
            }
            break;
        }
        if self.pool.is_none() && self.slots.len() > FEW {
            self.pool_up();
        }
        let Some(after) = self.deadline else { return Poll::Pending };
        if deadline.is_none() {
            deadline.set(Some(tokio::time::sleep_until(self.started + after)));
        }
        if deadline.as_pin_mut().is_some_and(|deadline| deadline.poll(cx).is_ready()) {
            let pending = self.unfinished().into();
            let cause = Cause::Deadline { after, pending };
            return Poll::Ready(Err(self.fail(ErrorKind::Timeout, cause, &[])));
        }
        Poll::Pending
    }

    /// Polls every running task once (in a large group, the woken ones) and settles those
    /// that finished.
    fn poll_running(&mut self, cx: &mut Context<'_>, failed: &mut Failures) {
        let mut next = 0;
        while next < self.slots.len() {
            // The slots are borrowed once for a run of polls, beside the fields that a success
            // writes: a failure, or any end in a group with handles, is settled through the
            // whole group, and the run goes on after it.
            let Self { slots, running, recording, shared, .. } = &mut *self;
            let handles = shared.get().is_some();
            let mut ended = None;
            for (index, slot) in (next..).zip(&mut slots[next..]) {
                next = index + 1;
                let State::Running(task) = &mut slot.state else { continue };
                match task.as_mut().poll(cx) {
                    Poll::Pending => {}
                    Poll::Ready(Ok(Ok(value))) if !handles => succeed(running, recording, slot, index, value),
                    Poll::Ready(output) => {
                        ended = Some((index, output));
                        break;
                    }
                }
            }
            if let Some((index, output)) = ended {
                self.settle(index, output, failed);
            }
        }
        if let Some(mut pool) = self.pool.take() {
            while let Poll::Ready(Some((index, output))) = pool.poll_next_unpin(cx) {
                self.settle(index, output, failed);
            }
            self.pool = Some(pool);
        }
    }

    /// Finishes a group whose tasks have all finished, unless a handle spawned one meanwhile:
    /// closes the inbox and cancels the token with [`Cause::Completed`] under the inbox's
    /// lock, so that no spawn slips in between. Returns whether the group is complete.
    fn complete(&mut self) -> bool {
        let Some(shared) = self.shared.get() else { return true };
        let mut inbox = shared.lock();
        if !inbox.incoming.is_empty() {
            return false;
        }
        inbox.closed = true;
        shared.token.cancel_with(Cause::Completed);
        true
    }

    /// Takes the tasks spawned through handles into the group's slots: running if a slot is
    /// free and nothing is queued, else queued. Returns how many started.
    #[inline]
    fn take_incoming(&mut self) -> usize {
        // Inline for the usual group without handles: a load and a branch instead of a call.
        if self.shared.get().is_none() {
            return 0;
        }
        self.take_incoming_from_inbox()
    }

    fn take_incoming_from_inbox(&mut self) -> usize {
        let Some(shared) = self.shared.get() else { return 0 };
        let mut inbox = shared.lock();
        if inbox.incoming.is_empty() {
            return 0;
        }
        let mut started = 0;
        for mut slot in std::mem::take(&mut inbox.incoming) {
            let index = self.slots.len();
            if self.running < self.limit && self.next_queued.is_none() {
                if let State::Queued(task) = std::mem::replace(&mut slot.state, State::Cancelled) {
                    slot.state = match &mut self.pool {
                        Some(pool) => {
                            pool.push(Pooled { index, task });
                            State::Pooled
                        }
                        None => State::Running(task),
                    };
                }
                self.running += 1;
                started += 1;
                if let Some(recording) = &mut self.recording {
                    recording.start(index);
                }
            } else {
                self.next_queued.get_or_insert(index);
            }
            self.slots.push(slot);
        }
        (inbox.running, inbox.queued) = (self.running, self.queued());
        drop(inbox);
        if self.pool.is_none() && self.slots.len() > FEW {
            self.pool_up();
        }
        started
    }

    /// Starts queued tasks while slots are free. Returns how many started.
    #[inline]
    fn start_free(&mut self) -> usize {
        let mut started = 0;
        while self.running < self.limit && self.next_queued.is_some() {
            self.start_next();
            started += 1;
        }
        if started > 0 {
            self.mirror();
        }
        started
    }

    /// Records the output of the task in slot `index`. The success path inline, into the
    /// polling loop: no call per task, the output not moved through memory.
    #[inline(always)]
    fn settle(&mut self, index: usize, output: TaskOutput<T>, failed: &mut Failures) {
        match output {
            Ok(Ok(value)) => {
                let Self { slots, running, recording, .. } = self;
                succeed(running, recording, &mut slots[index], index, value);
                self.mirror();
            }
            Ok(Err(error)) => self.settle_failure(index, Ok(error), failed),
            Err(panic) => self.settle_failure(index, Err(panic), failed),
        }
    }

    /// Records the failure (`Ok`) or panic (`Err`) of the task in slot `index`.
    fn settle_failure(&mut self, index: usize, failure: std::thread::Result<BoxError>, failed: &mut Failures) {
        self.running -= 1;
        self.mirror();
        let slot = &mut self.slots[index];
        let name = || slot.name.clone();
        let (kind, cause, outcome) = match failure {
            Ok(error) => {
                let error: Arc<_> = Arc::from(error);
                let outcome = self.recording.is_some().then(|| TaskOutcome::Failed { error: Arc::clone(&error) });
                (ErrorKind::Failed, Cause::Failed { name: name(), error }, outcome)
            }
            Err(panic) => {
                let message = panic_message(&*panic);
                let outcome = self.recording.is_some().then(|| TaskOutcome::Panicked { message: Arc::clone(&message) });
                (ErrorKind::Panicked, Cause::Panicked { name: name(), message }, outcome)
            }
        };
        slot.state = State::Failed;
        if let (Some(recording), Some(outcome)) = (&mut self.recording, outcome) {
            recording.end(index, outcome);
        }
        failed.add(index, kind, cause);
    }

    /// Starts the first queued task, if any.
    fn start_next(&mut self) {
        let Some(index) = self.next_queued else { return };
        self.next_queued = (index + 1 < self.slots.len()).then_some(index + 1);
        let slot = &mut self.slots[index];
        let State::Queued(task) = std::mem::replace(&mut slot.state, State::Cancelled) else { return };
        self.running += 1;
        match &mut self.pool {
            Some(pool) => {
                slot.state = State::Pooled;
                pool.push(Pooled { index, task });
            }
            None => slot.state = State::Running(task),
        }
        if let Some(recording) = &mut self.recording {
            recording.start(index);
        }
    }

    /// Tells the handles the running and queued counts, if there are handles.
    #[inline]
    fn mirror(&self) {
        if self.shared.get().is_some() {
            self.mirror_into_inbox();
        }
    }

    fn mirror_into_inbox(&self) {
        if let Some(shared) = self.shared.get() {
            let mut inbox = shared.lock();
            (inbox.running, inbox.queued) = (self.running, self.queued());
        }
    }

    /// The number of queued tasks: the suffix of the slots from `next_queued`.
    pub(super) fn queued(&self) -> usize {
        self.next_queued.map_or(0, |index| self.slots.len() - index)
    }

    /// Cancels the group with `cause`: sets the token, closes the inbox, then drops every task
    /// still running or queued, so their drop guards have run before `wait` returns. `others`
    /// failed in the same wave as the root cause.
    pub(super) fn fail(&mut self, kind: ErrorKind, cause: Cause, others: &[usize]) -> GroupError {
        if let Some(token) = self.token.get() {
            token.cancel_with(cause.clone());
        }
        self.close_inbox();
        let elapsed = self.started.elapsed();
        let (cancelled, panics, cause) = self.drop_unfinished(cause);
        self.running = 0;
        self.next_queued = None;
        let mut others = others.to_vec();
        others.sort_unstable();
        let also_failed = others.iter().map(|&index| self.slots[index].name.clone()).collect();
        let secondary: Vec<Cause> = (panics.iter())
            .map(|(_, name, message)| Cause::Panicked { name: name.clone(), message: Arc::clone(message) })
            .collect();
        if let Some(recording) = &mut self.recording {
            for (index, slot) in self.slots.iter().enumerate() {
                if !matches!(slot.state, State::Cancelled) || recording.has_outcome(index) {
                    continue;
                }
                let started = recording.timeline.start_of(index).is_some();
                let outcome = match kind {
                    ErrorKind::Timeout if started => TaskOutcome::TimedOut,
                    _ => TaskOutcome::Cancelled { cause: cause.clone() },
                };
                recording.end_at(index, elapsed, outcome);
            }
            for (index, name, message) in &panics {
                let secondary = Cause::Panicked { name: name.clone(), message: Arc::clone(message) };
                recording.entry(*index).secondary = Some(secondary);
            }
        }
        let fields = std::mem::take(&mut self.fields);
        let mut error = GroupError::new(kind, cause, elapsed, cancelled, also_failed, fields);
        if !secondary.is_empty() {
            error.set_secondary(secondary);
        }
        error
    }

    /// The tasks still running or queued, in spawn order.
    fn unfinished(&self) -> Vec<Name> {
        (self.slots.iter()).filter(|slot| slot.state.is_unfinished()).map(|slot| slot.name.clone()).collect()
    }
}

impl<T> Group<'_, T> {
    /// What [`cancellation()`](crate::cancellation) sees while this group's tasks run or are
    /// dropped: clones of the group's token or parent, nothing for a plain group.
    fn token_scope(&self) -> TokenScope {
        let token = self.token.get().cloned();
        let parent = if token.is_none() { self.parent.clone() } else { None };
        TokenScope::new(token, parent)
    }

    /// Keeps the token a task made through [`cancellation()`](crate::cancellation).
    #[inline]
    fn adopt(&mut self, scope: TokenScope) {
        if let Some(token) = scope.token {
            let _ = self.token.set(token);
        }
    }

    /// Closes the inbox (no spawn is admitted from now on, drop guards' included) and moves
    /// the tasks spawned through handles but not yet taken into the slots, as queued.
    #[inline]
    pub(super) fn close_inbox(&mut self) {
        if self.shared.get().is_some() {
            self.close_shared_inbox();
        }
    }

    fn close_shared_inbox(&mut self) {
        let Some(shared) = self.shared.get() else { return };
        let mut inbox = shared.lock();
        inbox.closed = true;
        let incoming = std::mem::take(&mut inbox.incoming);
        drop(inbox);
        self.slots.extend(incoming);
    }

    /// Drops every task still running or queued, inside a scope where
    /// [`cancellation()`](crate::cancellation) reads `cause`, containing panics of their drops.
    /// Returns the names of the dropped tasks and the drop panics by slot, both in spawn order.
    /// The names are moved out of the slots, not copied, unless the report needs them: the
    /// group is over.
    pub(super) fn drop_unfinished(&mut self, cause: Cause) -> (Vec<Name>, Vec<DropPanic>, Cause) {
        let keep_names = self.recording.is_some();
        let mut scope = self.token_scope();
        // Sized once: growing it would reallocate on the failure path, every few siblings.
        let mut cancelled = Vec::with_capacity(self.slots.iter().filter(|slot| slot.state.is_unfinished()).count());
        let mut panics = Vec::new();
        let drop_all = || {
            if let Some(pool) = self.pool.take() {
                for Pooled { index, task } in pool {
                    if let Some(message) = drop_contained(task) {
                        panics.push((index, self.slots[index].name.clone(), message));
                    }
                }
            }
            for (index, slot) in self.slots.iter_mut().enumerate() {
                if !slot.state.is_unfinished() {
                    continue;
                }
                let name = if keep_names { slot.name.clone() } else { std::mem::take(&mut slot.name) };
                match std::mem::replace(&mut slot.state, State::Cancelled) {
                    State::Queued(task) | State::Running(task) => {
                        if let Some(message) = drop_contained(task) {
                            panics.push((index, name.clone(), message));
                        }
                    }
                    _ => {}
                }
                cancelled.push(name);
            }
        };
        // A token that exists already holds the cause; only a token made now needs it.
        let cause = match self.token.get() {
            Some(_) => {
                token_scoped(&mut scope, drop_all);
                cause
            }
            None => closing_scoped(&mut scope, cause, drop_all).1,
        };
        self.adopt(scope);
        panics.sort_by_key(|(index, ..)| *index);
        (cancelled, panics, cause)
    }
}
