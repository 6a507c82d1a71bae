//! The [`Group`]: its public API (spawning, the token, the handle) and its drop.
//!
//! The rest, by job: `task` (a task as the group stores and runs it), `wait` (the [`Wait`]
//! future and the polling loop), `handle` ([`GroupHandle`] and the inbox it shares with the
//! group), `recording` (timings for [`Group::wait_with_report`]) and `outputs` ([`Outputs`]).

mod handle;
mod outputs;
mod recording;
mod task;
mod wait;

pub use self::handle::GroupHandle;
pub use self::outputs::{IntoIter, Outputs};
use self::wait::Reported;
pub use self::wait::{Wait, WaitWithReport};

use self::handle::{Inbox, Shared};
use self::recording::Recording;
pub use self::recording::Timeline;
pub use self::task::panic_message;
use self::task::{Pooled, Slot, State, Task, wrap};

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::task::AtomicWaker;
use muster_options::{GroupConfig, GroupOption, OptionError};
use tokio::time::Instant;

use crate::cancel::{CancelToken, Cause, Name};
use crate::deadline::tighter;
use crate::error::{BoxError, SpawnError, TrySpawnError};

/// A fail-fast set of named tasks: the Rust counterpart of Go's `errgroup.WithContext`, with
/// real cancellation.
///
/// [`spawn`](Group::spawn) adds a named task; [`wait`](Group::wait) runs them all concurrently
/// and returns every output by name, or the first failure. On the first failure every other
/// task is cancelled by being dropped, before `wait` returns. Dropping a `Group`, or the future
/// returned by `wait`, drops every task still running: no task outlives its group.
///
/// # Polling in place
///
/// Tasks are polled in place by the `wait` future, not spawned on the runtime: there is no
/// `'static` bound (a task may borrow the request), cancellation is a plain drop that has
/// completed when `wait` returns, and the cost per task is one allocation. The tasks share the
/// thread that polls `wait`, so CPU-heavy work belongs in `tokio::task::spawn_blocking` inside
/// the task; I/O-bound sources, the common case, lose nothing. See the crate documentation for
/// the measurements behind this choice.
///
/// # Semantics
///
/// - Names are unique: spawning a duplicate name is refused, the first task keeps running.
/// - The first task to fail (by completion time) is the root cause. Tasks failing at the same
///   instant (completing in the same poll of `wait`) tie-break to the earliest spawned; the
///   others are listed by [`GroupError::also_failed`](crate::GroupError::also_failed).
/// - A panic becomes the task's error (with the panic message); siblings are cancelled. A
///   panic while a cancelled task is being dropped is contained: it is recorded as that task's
///   [secondary failure](crate::GroupError::secondary) and the root cause stands.
/// - An optional deadline, counted from the group's creation, fails the group naming the
///   pending tasks. A task completing exactly at the deadline is in time.
/// - With a concurrency limit, at most that many tasks run at once; queued tasks start in
///   spawn order and never after a failure. [`try_spawn`](Group::try_spawn) refuses instead of
///   queueing.
/// - Running tasks spawn siblings through a [`GroupHandle`] ([`Group::handle`]).
/// - The group's [`CancelToken`] (also [`cancellation()`](crate::cancellation) inside a task)
///   reports why work was stopped: the failed sibling, the deadline, the caller's cancellation
///   (with its reason), the group being dropped, or (after success) [`Cause::Completed`].
/// - [`wait_with_report`](Group::wait_with_report) adds a per-task
///   [`GroupReport`](crate::GroupReport).
///
/// ```
/// # use muster_core as muster;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use muster::Group;
///
/// let user_id = 42;
/// let mut group = Group::new();
/// // Tasks may borrow from the caller: they are polled in place.
/// group.spawn("profile", async { Ok::<_, std::io::Error>(format!("user {user_id}")) })?;
/// group.spawn("balance", async { Ok::<_, std::io::Error>(String::from("12.50")) })?;
/// let outputs = group.wait().await?;
/// assert_eq!(outputs["profile"], "user 42");
/// assert_eq!(outputs.names().collect::<Vec<_>>(), ["profile", "balance"]);
/// # Ok(()) }
/// ```
#[must_use = "a group does nothing unless `wait` is awaited"]
pub struct Group<'a, T> {
    started: Instant,
    deadline: Option<Duration>,
    limit: usize,
    span: Option<tracing::Span>,
    fields: Vec<(Name, String)>,
    parent: Option<CancelToken>,
    token: OnceLock<CancelToken>,
    slots: Vec<Slot<'a, T>>,
    /// Tasks running (polled in place or pooled).
    running: usize,
    /// The first queued slot; queued slots are a suffix of `slots`.
    next_queued: Option<usize>,
    /// The running tasks of a large group; `None` for a small one.
    pool: Option<FuturesUnordered<Pooled<'a, T>>>,
    /// What handles share; made by the first `handle()`.
    shared: OnceLock<Arc<Shared<'a, T>>>,
    /// Timings and outcomes, only for `wait_with_report`.
    recording: Option<Box<Recording>>,
}

impl<'a, T: Send + 'a> Group<'a, T> {
    /// An empty group with no deadline and no concurrency limit.
    pub fn new() -> Self {
        Self::from_config(GroupConfig::default())
    }

    /// An empty group configured by `options`: a [`GroupOption`] such as a
    /// [`Deadline`](crate::Deadline), a [`Limit`](crate::Limit) or a tuple of them.
    ///
    /// ```
    /// # use muster_core as muster;
    /// use std::time::Duration;
    /// use muster::Group;
    /// use muster::{Deadline, Limit};
    ///
    /// let group: Group<'_, u32> = Group::with_options((Deadline(Duration::from_secs(1)), Limit(8)))?;
    /// assert!(Group::<u32>::with_options(Limit(0)).is_err());
    /// # drop(group);
    /// # Ok::<(), muster::OptionError>(())
    /// ```
    ///
    /// # Errors
    ///
    /// The [`OptionError`] of [`GroupConfig::build`]: a zero deadline or limit, a bad field.
    pub fn with_options(options: impl GroupOption) -> Result<Self, OptionError> {
        GroupConfig::build(options).map(Self::from_config)
    }

    /// An empty group with an already validated configuration.
    pub fn from_config(config: GroupConfig) -> Self {
        let GroupConfig { deadline, limit, span, fields, .. } = config;
        Self {
            started: Instant::now(),
            deadline,
            // A zero limit is refused by `GroupConfig::validate`; treat it as 1 if it slips in.
            limit: limit.map_or(usize::MAX, |limit| limit.max(1)),
            span,
            fields,
            parent: None,
            token: OnceLock::new(),
            slots: Vec::new(),
            running: 0,
            next_queued: None,
            pool: None,
            shared: OnceLock::new(),
            recording: None,
        }
    }

    /// Makes the group a child of `parent`: cancelling `parent` cancels the group, which then
    /// fails with [`ErrorKind::Cancelled`](crate::ErrorKind::Cancelled) (and `parent`'s cause) and admits no new task.
    /// Call it before [`token`](Group::token) and [`handle`](Group::handle).
    ///
    /// ```
    /// # use muster_core as muster;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use muster::{CancelToken, Group};
    ///
    /// let request = CancelToken::new();
    /// let mut group = Group::<u32>::new().with_parent(&request);
    /// request.cancel_because("the client disconnected");
    /// assert!(group.spawn("late", async { Ok::<_, std::io::Error>(1) }).is_err());
    /// let error = group.wait().await.unwrap_err();
    /// assert!(error.is_cancelled());
    /// assert_eq!(std::error::Error::source(&error).map(ToString::to_string).as_deref(), Some("the client disconnected"));
    /// # }
    /// ```
    pub fn with_parent(mut self, parent: &CancelToken) -> Self {
        self.parent = Some(parent.clone());
        self.token = OnceLock::new();
        self
    }

    /// The group's cancellation token: cancelled with the root cause when the group fails, with
    /// [`Cause::Completed`] when it succeeds and with [`Cause::Dropped`] when it is dropped
    /// before finishing. Cancelling it cancels the group (with
    /// [`cancel_because`](CancelToken::cancel_because), with a reason that the error carries).
    /// Inside a task, [`cancellation()`](crate::cancellation) returns the same token.
    pub fn token(&self) -> CancelToken {
        self.token.get_or_init(|| self.parent.as_ref().map_or_else(CancelToken::new, CancelToken::child)).clone()
    }

    /// A handle that spawns tasks into this group while it runs, from its own tasks or from
    /// anywhere else; see [`GroupHandle`]. Cheap to clone; the first call makes the group's
    /// token and the state the handles share.
    pub fn handle(&self) -> GroupHandle<'a, T> {
        let shared = self.shared.get_or_init(|| {
            Arc::new(Shared {
                token: self.token(),
                limit: self.limit,
                deadline: self.deadline.map(|after| tighter(self.started + after)),
                span: self.span.clone(),
                waker: AtomicWaker::new(),
                inbox: Mutex::new(Inbox {
                    closed: false,
                    running: self.running,
                    queued: self.queued(),
                    names: self.slots.iter().map(|slot| (slot.hash, slot.name.clone())).collect(),
                    incoming: Vec::new(),
                }),
            })
        });
        GroupHandle { shared: Arc::clone(shared) }
    }

    /// Adds a task named `name`. It starts when [`wait`](Group::wait) is first polled (or, with
    /// a concurrency limit, when a slot frees up) and runs inside a `source` span (field
    /// `source = name`) whose parent is the configured
    /// [`ParentSpan`](muster_options::ParentSpan) or else the span current now.
    ///
    /// The task may borrow, but its name may not: a [`Name`] is a `&'static str` or an owned
    /// `String`, so a name made at run time is passed owned (`format!("fetch-{i}")`,
    /// `url.clone()`), not as a borrowed `&str`.
    ///
    /// # Errors
    ///
    /// [`SpawnError::DuplicateName`] if a task of that name exists (it keeps running), and
    /// [`SpawnError::Closed`] if the group has been cancelled. The refused task is dropped
    /// without being polled.
    pub fn spawn<F, E>(&mut self, name: impl Into<Name>, task: F) -> Result<(), SpawnError>
    where
        F: Future<Output = Result<T, E>> + Send + 'a,
        E: Into<BoxError>,
    {
        let name = name.into();
        // The task is moved once, into its box: the checks come first and never touch it.
        let (hash, free) = self.admit(&name, false)?;
        let deadline = self.deadline.map(|after| tighter(self.started + after));
        let task = wrap(self.span.as_ref(), &name, deadline, task);
        self.place(name, hash, free, task);
        Ok(())
    }

    /// Like [`spawn`](Group::spawn), but under a concurrency limit it refuses the task instead
    /// of queueing it when no slot is free.
    ///
    /// # Errors
    ///
    /// [`SpawnError::Full`] when every slot is taken, or what `spawn` refuses, inside a
    /// [`TrySpawnError`] that gives the task back unpolled.
    pub fn try_spawn<F, E>(&mut self, name: impl Into<Name>, task: F) -> Result<(), TrySpawnError<F>>
    where
        F: Future<Output = Result<T, E>> + Send + 'a,
        E: Into<BoxError>,
    {
        let name = name.into();
        let (hash, free) = match self.admit(&name, true) {
            Ok(admitted) => admitted,
            Err(error) => return Err(TrySpawnError::new(error, task)),
        };
        let deadline = self.deadline.map(|after| tighter(self.started + after));
        let task = wrap(self.span.as_ref(), &name, deadline, task);
        self.place(name, hash, free, task);
        Ok(())
    }

    /// Checks that a task named `name` may join: the group is open, the name is new and (if
    /// `only_if_free`) a slot is free. Returns the name's fingerprint and whether the task
    /// runs at once (else it is queued); records the name for the handles, if any.
    #[inline(always)] // into `spawn`: no call, and the result stays in registers
    fn admit(&self, name: &Name, only_if_free: bool) -> Result<(u64, bool), SpawnError> {
        if let Some(cause) = self.closed() {
            return Err(SpawnError::Closed { name: name.clone(), cause: cause.clone() });
        }
        let hash = name_hash(name);
        let free = self.running < self.limit && self.next_queued.is_none();
        if only_if_free && !free {
            return Err(SpawnError::Full { name: name.clone(), limit: self.limit });
        }
        match self.shared.get() {
            None if self.slots.iter().any(|slot| slot.hash == hash && slot.name == *name) => {
                Err(SpawnError::DuplicateName(name.clone()))
            }
            None => Ok((hash, free)),
            Some(shared) => {
                // The handles' tasks are not in the slots yet: the inbox knows every name.
                let mut inbox = shared.lock();
                if inbox.names.iter().any(|(other, other_name)| *other == hash && other_name == name) {
                    return Err(SpawnError::DuplicateName(name.clone()));
                }
                inbox.names.push((hash, name.clone()));
                inbox.running += usize::from(free);
                inbox.queued += usize::from(!free);
                Ok((hash, free))
            }
        }
    }

    /// Adds an admitted task to the slots, running or queued.
    #[inline(always)]
    fn place(&mut self, name: Name, hash: u64, free: bool, task: Task<'a, T>) {
        let state = if free {
            self.running += 1;
            State::Running(task)
        } else {
            self.next_queued.get_or_insert(self.slots.len());
            State::Queued(task)
        };
        if self.slots.capacity() == 0 {
            // Most groups are small: one allocation instead of growing 4, then 8; and one that
            // the outputs reuse without a `realloc` (see `first_capacity`).
            self.slots
                .reserve_exact(const { first_capacity(size_of::<Slot<'_, T>>(), size_of::<(Name, Option<T>)>()) });
        }
        self.slots.push(Slot { name, hash, state });
    }

    /// When the group was created: its deadline counts from this instant.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The number of tasks spawned so far.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no task has been spawned.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Runs every task to completion: the returned [`Wait`] future resolves to their outputs
    /// by name, or fails fast.
    ///
    /// # Errors
    ///
    /// The future resolves to a [`GroupError`](crate::GroupError) with the root cause: the first task to fail or
    /// panic, the deadline, or the parent's cancellation. Every other task has been dropped
    /// when it resolves.
    ///
    /// # Cancellation safety
    ///
    /// Dropping the returned future drops every task (they are owned by it) and cancels the
    /// group's token with [`Cause::Dropped`]; nothing keeps running.
    pub fn wait(self) -> Wait<'a, T> {
        Wait::new(self)
    }

    /// Like [`wait`](Group::wait), and also returns the group's [`GroupReport`](crate::GroupReport): every task's
    /// outcome, start and duration, on success and on error. Recording costs at most one clock
    /// read per poll (one in which a task started or ended) and three allocations per group
    /// (the recording, its timeline and the report's list of tasks); `wait` does neither.
    pub fn wait_with_report(mut self) -> WaitWithReport<'a, T> {
        self.record();
        WaitWithReport::new(self.wait(), Reported::Always)
    }

    /// Like [`wait_with_report`](Group::wait_with_report), but the report is built only when
    /// the group fails: on success it is empty (`GroupReport::default()`), and the caller reads
    /// the timings from its [`timeline`](Group::timeline). The aggregator's success path. Not
    /// part of the API.
    #[doc(hidden)]
    pub fn wait_with_failure_report(mut self) -> WaitWithReport<'a, T> {
        self.record();
        WaitWithReport::new(self.wait(), Reported::OnFailure)
    }

    fn record(&mut self) {
        if self.recording.is_none() {
            self.recording = Some(Box::new(Recording::new(self.started, self.slots.len())));
        }
    }
}

impl<T> Group<'_, T> {
    fn closed(&self) -> Option<&Cause> {
        match self.token.get() {
            Some(token) => token.cause(),
            None => self.parent.as_ref().and_then(CancelToken::cause),
        }
    }
}

impl<'a, T: Send + 'a> Default for Group<'a, T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Drop for Group<'_, T> {
    fn drop(&mut self) {
        // Runs before the fields (and so the tasks) are dropped: their drop guards can read
        // the cause. A finished group's token already holds its cause; the first one wins.
        if let Some(token) = self.token.get() {
            token.cancel_with(Cause::Dropped);
        }
        self.close_inbox();
        let pooled = self.pool.as_ref().is_some_and(|pool| !pool.is_empty());
        if !pooled && !self.slots.iter().any(|slot| slot.state.is_unfinished()) {
            return;
        }
        // The tasks are dropped here rather than with the fields: in a scope where
        // `cancellation()` reads the cause, and with a panicking drop contained.
        let cause = self.closed().cloned().unwrap_or(Cause::Dropped);
        let (_, panics, _) = self.drop_unfinished(cause);
        for (_, name, message) in panics {
            tracing::warn!(source = %name, %message, "a cancelled task panicked while being dropped (contained)");
        }
    }
}
impl<T> fmt::Debug for Group<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.slots.iter().map(|slot| &*slot.name).collect();
        f.debug_struct("Group")
            .field("names", &names)
            .field("running", &self.running)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

/// The slots' first capacity: at least 8 slots, and a number whose allocation divides into
/// whole output entries (`(Name, Option<T>)`), so that collecting the outputs in place reuses
/// it as it is, without the `realloc` that shrinks it to a whole number of entries (about 200
/// instructions at N = 2). Growing doubles the capacity, which keeps it so. When that number
/// would be large (an output type of an odd size), 8.
const fn first_capacity(slot: usize, entry: usize) -> usize {
    const LEAST: usize = 8;
    if slot == 0 || entry == 0 {
        return LEAST;
    }
    let (mut a, mut b) = (slot, entry);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    // A capacity is a whole number of entries when it is a multiple of `step`.
    let step = entry / a;
    if step > 2 * LEAST {
        return LEAST;
    }
    LEAST.div_ceil(step) * step
}

/// A cheap fingerprint of a task name: its length and four of its bytes (the first, the last,
/// the one before the last and the middle one). Only used to skip name comparisons; equal
/// fingerprints are confirmed by comparing the names.
#[inline]
fn name_hash(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let len = bytes.len();
    let byte = |index: usize| bytes.get(index).map_or(0, |&byte| u64::from(byte));
    let picked = byte(0) | byte(len / 2) << 8 | byte(len.wrapping_sub(2)) << 16 | byte(len.wrapping_sub(1)) << 24;
    picked | (len as u64) << 32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_capacity_divides_into_whole_output_entries() {
        // A 56-byte slot and a 40-byte entry: 10 slots are 14 entries.
        assert_eq!(first_capacity(56, 40), 10);
        assert_eq!(first_capacity(48, 24), 8);
        assert_eq!(first_capacity(56, 56), 8);
        assert_eq!(first_capacity(64, 40), 10);
        // An entry of an odd size would need too many slots: the usual 8.
        assert_eq!(first_capacity(8 * 37 + 8, 8 * 37), 8);
        assert_eq!(first_capacity(0, 40), 8);
        for (slot, entry) in [(56, 40), (72, 48), (88, 64), (48, 40)] {
            let capacity = first_capacity(slot, entry);
            assert!(capacity >= 8);
            assert_eq!(capacity * slot % entry, 0, "{slot} {entry}");
        }
    }
}
