use std::fmt;
use std::future::Future;
use std::ops::Index;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use muster_options::{GroupConfig, GroupOption, OptionError};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::cancel::{CancelToken, Cause, Name};
use crate::deadline::{scoped, tighter};
use crate::error::{BoxError, ErrorKind, GroupError, SpawnError};

/// Up to this many tasks, `wait` polls every running task on each wake-up: no allocation
/// beyond the task itself. Larger groups poll only the tasks that were woken (through a
/// `FuturesUnordered`, one more allocation per task), so a wake-up costs O(1) instead of O(N).
/// The same threshold as `futures::future::join_all`, for the same reason.
const FEW: usize = 32;

/// A task as the group stores it: panics caught, the error boxed, inside its span.
type Task<'a, T> = Pin<Box<dyn Future<Output = std::thread::Result<Result<T, BoxError>>> + Send + 'a>>;

/// Where a task is in its life.
enum State<'a, T> {
    /// Waiting for a slot under the concurrency limit; never polled.
    Queued(Task<'a, T>),
    /// Running, polled in place by `wait`.
    Running(Task<'a, T>),
    /// Running inside the group's `FuturesUnordered` (large groups).
    Pooled,
    /// Finished with this output.
    Done(T),
    /// Failed or panicked.
    Failed,
    /// Dropped before it finished.
    Cancelled,
}

struct Slot<'a, T> {
    name: Name,
    /// A fingerprint of `name`: the duplicate check compares names only when these match.
    hash: u64,
    state: State<'a, T>,
}

pin_project_lite::pin_project! {
    /// A task as the group runs it: inside its span, under the group's deadline (as
    /// [`deadline()`](crate::deadline())), with panics caught and the error boxed. One wrapper
    /// rather than a stack of combinators, so that the task's future is moved once, into its box.
    struct Wrapped<F> {
        span: tracing::Span,
        deadline: Option<Instant>,
        // `None` once dropped, inside the span and the deadline, so that drop guards see both.
        #[pin]
        future: Option<F>,
    }

    impl<F> PinnedDrop for Wrapped<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut future = this.future;
            if future.is_some() {
                let _entered = this.span.enter();
                scoped(*this.deadline, || future.set(None));
            }
        }
    }
}

impl<T, E, F> Future for Wrapped<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = std::thread::Result<Result<T, BoxError>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut slot = this.future;
        let poll = || {
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                let Some(future) = slot.as_mut().as_pin_mut() else { return Poll::Pending };
                let poll = future.poll(cx);
                if poll.is_ready() {
                    // Dropped here, inside the span and the deadline, rather than in a
                    // second scope when the group drops the task.
                    slot.set(None);
                }
                poll
            }))
        };
        match scoped(*this.deadline, poll) {
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result.map_err(Into::into))),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

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

impl<'a, T: Send + 'a> Future for Wait<'a, T> {
    type Output = Result<Outputs<T>, GroupError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let group = this.group;
        if let Err(error) = std::task::ready!(group.poll_wait(cx, this.deadline, this.cancelled.as_pin_mut())) {
            return Poll::Ready(Err(error));
        }
        if let Some(token) = group.token.get() {
            token.cancel_with(Cause::Completed);
        }
        let entries = group.slots.drain(..).map(|slot| match slot.state {
            State::Done(value) => (slot.name, Some(value)),
            _ => (slot.name, None),
        });
        Poll::Ready(Ok(Outputs { entries: entries.collect() }))
    }
}

impl<T> fmt::Debug for Wait<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wait").field("group", &self.group).finish_non_exhaustive()
    }
}

/// A task of a large group, tagged with its slot.
struct Pooled<'a, T> {
    index: usize,
    task: Task<'a, T>,
}

impl<T> Future for Pooled<'_, T> {
    type Output = (usize, std::thread::Result<Result<T, BoxError>>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let index = self.index;
        self.task.as_mut().poll(cx).map(|output| (index, output))
    }
}

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
///   others are listed by [`GroupError::also_failed`].
/// - A panic becomes the task's error (with the panic message); siblings are cancelled.
/// - An optional deadline, counted from the group's creation, fails the group naming the
///   pending tasks. A task completing exactly at the deadline is in time.
/// - With a concurrency limit, at most that many tasks run at once; queued tasks start in
///   spawn order and never after a failure.
/// - The group's [`CancelToken`] reports why work was stopped: the failed sibling, the
///   deadline, the caller's cancellation, the group being dropped, or (after success)
///   [`Cause::Completed`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use muster_core::Group;
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
}

impl<'a, T: Send + 'a> Group<'a, T> {
    /// An empty group with no deadline and no concurrency limit.
    pub fn new() -> Self {
        Self::from_config(GroupConfig::default())
    }

    /// An empty group configured by `options` (see [`muster_options`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use muster_core::Group;
    /// use muster_options::{Deadline, Limit};
    ///
    /// let group: Group<'_, u32> = Group::with_options((Deadline(Duration::from_secs(1)), Limit(8)))?;
    /// assert!(Group::<u32>::with_options(Limit(0)).is_err());
    /// # drop(group);
    /// # Ok::<(), muster_options::OptionError>(())
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
        }
    }

    /// Makes the group a child of `parent`: cancelling `parent` cancels the group, which then
    /// fails with [`ErrorKind::Cancelled`] and admits no new task.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use muster_core::{CancelToken, Group};
    ///
    /// let request = CancelToken::new();
    /// let mut group = Group::<u32>::new().with_parent(&request);
    /// request.cancel();
    /// assert!(group.spawn("late", async { Ok::<_, std::io::Error>(1) }).is_err());
    /// assert!(group.wait().await.unwrap_err().is_cancelled());
    /// # }
    /// ```
    pub fn with_parent(mut self, parent: &CancelToken) -> Self {
        self.parent = Some(parent.clone());
        self.token = OnceLock::new();
        self
    }

    /// The group's cancellation token: cancelled with the root cause when the group fails, with
    /// [`Cause::Completed`] when it succeeds and with [`Cause::Dropped`] when it is dropped
    /// before finishing. Cancelling it cancels the group.
    pub fn token(&self) -> CancelToken {
        self.token.get_or_init(|| self.parent.as_ref().map_or_else(CancelToken::new, CancelToken::child)).clone()
    }

    /// Adds a task named `name`. It starts when [`wait`](Group::wait) is first polled (or, with
    /// a concurrency limit, when a slot frees up) and runs inside a `source` span (field
    /// `source = name`) whose parent is the configured
    /// [`ParentSpan`](muster_options::ParentSpan) or else the span current now.
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
        if let Some(cause) = self.closed() {
            let cause = cause.clone();
            return Err(SpawnError::Closed { name, cause });
        }
        let hash = name_hash(&name);
        if self.slots.iter().any(|slot| slot.hash == hash && slot.name == name) {
            return Err(SpawnError::DuplicateName(name));
        }
        let span = match &self.span {
            Some(parent) => tracing::info_span!(parent: parent, "source", source = %name),
            None => tracing::info_span!("source", source = %name),
        };
        let deadline = self.deadline.map(|after| tighter(self.started + after));
        let task: Task<'a, T> = Box::pin(Wrapped { span, deadline, future: Some(task) });
        let state = if self.running < self.limit {
            self.running += 1;
            State::Running(task)
        } else {
            self.next_queued.get_or_insert(self.slots.len());
            State::Queued(task)
        };
        if self.slots.is_empty() {
            // Most groups are small: one allocation instead of growing 4, then 8.
            self.slots.reserve(8);
        }
        self.slots.push(Slot { name, hash, state });
        Ok(())
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
    /// The future resolves to a [`GroupError`] with the root cause: the first task to fail or
    /// panic, the deadline, or the parent's cancellation. Every other task has been dropped
    /// when it resolves.
    ///
    /// # Cancellation safety
    ///
    /// Dropping the returned future drops every task (they are owned by it) and cancels the
    /// group's token with [`Cause::Dropped`]; nothing keeps running.
    pub fn wait(mut self) -> Wait<'a, T> {
        if self.slots.len() > FEW {
            let pool = FuturesUnordered::new();
            for (index, slot) in self.slots.iter_mut().enumerate() {
                if !matches!(slot.state, State::Running(_)) {
                    continue;
                }
                if let State::Running(task) = std::mem::replace(&mut slot.state, State::Pooled) {
                    pool.push(Pooled { index, task });
                }
            }
            self.pool = Some(pool);
        }
        let cancelled = self.token.get().or(self.parent.as_ref()).map(CancelToken::cancelled_owned);
        // The deadline's timer is made when a poll leaves tasks pending: a group whose tasks
        // finish in its first poll never touches the timer wheel.
        Wait { group: self, deadline: None, cancelled }
    }

    fn poll_wait(
        &mut self,
        cx: &mut Context<'_>,
        mut deadline: Pin<&mut Option<Sleep>>,
        cancelled: Option<Pin<&mut WaitForCancellationFutureOwned>>,
    ) -> Poll<Result<(), GroupError>> {
        if cancelled.is_some_and(|cancelled| cancelled.poll(cx).is_ready()) {
            let cause = self.closed().cloned().unwrap_or(Cause::Cancelled);
            return Poll::Ready(Err(self.fail(ErrorKind::Cancelled, cause, &[])));
        }
        // Drain the tasks that are ready now, in waves: queued tasks start only once a wave
        // is over and had no failure, so which tasks start never depends on the order in which
        // a wave was polled. Failures in the same wave tie-break to the earliest spawned, and a
        // task finishing together with the deadline is in time.
        let mut failed: Vec<(usize, ErrorKind, Cause)> = Vec::new();
        loop {
            let finished = self.running;
            for index in 0..self.slots.len() {
                let State::Running(task) = &mut self.slots[index].state else { continue };
                if let Poll::Ready(output) = task.as_mut().poll(cx) {
                    self.settle(index, output, &mut failed);
                }
            }
            if let Some(mut pool) = self.pool.take() {
                while let Poll::Ready(Some((index, output))) = pool.poll_next_unpin(cx) {
                    self.settle(index, output, &mut failed);
                }
                self.pool = Some(pool);
            }
            let freed = finished - self.running - failed.len();
            if !failed.is_empty() || freed == 0 || self.next_queued.is_none() {
                break;
            }
            (0..freed).for_each(|_| self.start_next());
        }
        let failed_indices: Vec<usize> = failed.iter().map(|(index, ..)| *index).collect();
        if let Some((_, kind, cause)) = failed.into_iter().min_by_key(|(index, ..)| *index) {
            return Poll::Ready(Err(self.fail(kind, cause, &failed_indices)));
        }
        if self.running == 0 && self.next_queued.is_none() {
            return Poll::Ready(Ok(()));
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

    /// Records the output of the task in slot `index`.
    fn settle(
        &mut self,
        index: usize,
        output: std::thread::Result<Result<T, BoxError>>,
        failed: &mut Vec<(usize, ErrorKind, Cause)>,
    ) {
        self.running -= 1;
        let slot = &mut self.slots[index];
        let name = || slot.name.clone();
        let (kind, cause) = match output {
            Ok(Ok(value)) => {
                slot.state = State::Done(value);
                return;
            }
            Ok(Err(error)) => (ErrorKind::Failed, Cause::Failed { name: name(), error: Arc::from(error) }),
            Err(panic) => (ErrorKind::Panicked, Cause::Panicked { name: name(), message: panic_message(&*panic) }),
        };
        slot.state = State::Failed;
        failed.push((index, kind, cause));
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
    }

    /// Cancels the group with `cause`: sets the token, then drops every task still running or
    /// queued, so their drop guards have run before `wait` returns.
    fn fail(&mut self, kind: ErrorKind, cause: Cause, failed: &[usize]) -> GroupError {
        if let Some(token) = self.token.get() {
            token.cancel_with(cause.clone());
        }
        self.pool = None;
        let mut cancelled = Vec::new();
        for slot in &mut self.slots {
            if matches!(slot.state, State::Queued(_) | State::Running(_) | State::Pooled) {
                slot.state = State::Cancelled;
                cancelled.push(slot.name.clone());
            }
        }
        self.running = 0;
        self.next_queued = None;
        let root = cause.source_name();
        let also_failed = (failed.iter().map(|&index| &self.slots[index].name))
            .filter(|name| Some(&***name) != root)
            .cloned()
            .collect();
        let fields = std::mem::take(&mut self.fields);
        GroupError::new(kind, cause, self.started.elapsed(), cancelled, also_failed, fields)
    }

    /// The tasks still running or queued, in spawn order.
    fn unfinished(&self) -> Vec<Name> {
        (self.slots.iter())
            .filter(|slot| matches!(slot.state, State::Queued(_) | State::Running(_) | State::Pooled))
            .map(|slot| slot.name.clone())
            .collect()
    }

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

/// A cheap fingerprint of a task name: its length and its first and last eight bytes. Only
/// used to skip name comparisons; equal fingerprints are confirmed by comparing the names.
fn name_hash(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let word = |part: &[u8]| part.iter().fold(0u64, |word, &byte| (word << 8) | u64::from(byte));
    let (head, tail) = (word(&bytes[..bytes.len().min(8)]), word(&bytes[bytes.len().saturating_sub(8)..]));
    (head.rotate_left(29) ^ tail).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ bytes.len() as u64
}

/// The message of a caught panic's payload (`panic!("...")` gives a `&str` or a `String`), or a
/// placeholder for other payloads.
///
/// ```
/// let payload = std::panic::catch_unwind(|| panic!("boom {}", 42)).unwrap_err();
/// assert_eq!(&*muster_core::panic_message(&*payload), "boom 42");
/// ```
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> Arc<str> {
    if let Some(message) = payload.downcast_ref::<&str>() {
        Arc::from(*message)
    } else if let Some(message) = payload.downcast_ref::<String>() {
        Arc::from(message.as_str())
    } else {
        Arc::from("non-string panic payload")
    }
}

/// The outputs of a successful [`Group`], addressable by name and iterable in spawn order.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut group = muster_core::Group::new();
/// group.spawn("a", async { Ok::<_, std::io::Error>(1) })?;
/// group.spawn("b", async { Ok::<_, std::io::Error>(2) })?;
/// let mut outputs = group.wait().await?;
/// assert_eq!(outputs.get("b"), Some(&2));
/// assert_eq!(outputs.take("a"), Some(1));
/// assert_eq!(outputs.into_iter().collect::<Vec<_>>(), [("b".into(), 2)]);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Outputs<T> {
    entries: Vec<(Name, Option<T>)>,
}

impl<T> Outputs<T> {
    fn entry(&mut self, name: &str) -> Option<&mut Option<T>> {
        self.entries.iter_mut().find(|(candidate, _)| candidate == name).map(|(_, value)| value)
    }

    /// The output of the task named `name`, unless there is none or it was taken.
    pub fn get(&self, name: &str) -> Option<&T> {
        self.iter().find(|(candidate, _)| *candidate == name).map(|(_, value)| value)
    }

    /// Moves the output of the task named `name` out, for building typed results without
    /// clones.
    pub fn take(&mut self, name: &str) -> Option<T> {
        self.entry(name)?.take()
    }

    /// The names of the outputs not taken, in spawn order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(name, _)| name)
    }

    /// The outputs not taken, with their names, in spawn order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        self.entries.iter().filter_map(|(name, value)| Some((&**name, value.as_ref()?)))
    }

    /// The number of outputs not taken.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether every output has been taken (or the group was empty).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<T> Index<&str> for Outputs<T> {
    type Output = T;

    /// # Panics
    ///
    /// If there is no output named `name`; use [`Outputs::get`] to check.
    fn index(&self, name: &str) -> &T {
        match self.get(name) {
            Some(value) => value,
            None => panic!("no output named `{name}`"),
        }
    }
}

impl<T> Outputs<Option<T>> {
    /// The outputs of tasks that may produce nothing (`None`), without those: an absent output
    /// reads like a taken one. Reuses the allocation.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut group = muster_core::Group::new();
    /// group.spawn("offers", async { Ok::<_, std::io::Error>(None::<u32>) })?;
    /// group.spawn("profile", async { Ok::<_, std::io::Error>(Some(7)) })?;
    /// let outputs = group.wait().await?.flatten();
    /// assert_eq!(outputs.iter().collect::<Vec<_>>(), [("profile", &7)]);
    /// # Ok(()) }
    /// ```
    pub fn flatten(self) -> Outputs<T> {
        Outputs { entries: self.entries.into_iter().map(|(name, value)| (name, value.flatten())).collect() }
    }
}

impl<T> FromIterator<(Name, T)> for Outputs<T> {
    fn from_iter<I: IntoIterator<Item = (Name, T)>>(iter: I) -> Self {
        Self { entries: iter.into_iter().map(|(name, value)| (name, Some(value))).collect() }
    }
}

impl<T> IntoIterator for Outputs<T> {
    type Item = (Name, T);
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter(self.entries.into_iter())
    }
}

/// The outputs of a group by value, in spawn order; see [`Outputs`].
#[derive(Debug)]
pub struct IntoIter<T>(std::vec::IntoIter<(Name, Option<T>)>);

impl<T> Iterator for IntoIter<T> {
    type Item = (Name, T);

    fn next(&mut self) -> Option<(Name, T)> {
        self.0.find_map(|(name, value)| Some((name, value?)))
    }
}

impl<T: fmt::Debug> fmt::Debug for Outputs<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}
