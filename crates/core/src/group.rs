use std::fmt;
use std::future::Future;
use std::ops::Index;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use futures_util::task::AtomicWaker;
use muster_options::{GroupConfig, GroupOption, OptionError};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::cancel::{CancelToken, Cause, Name};
use crate::deadline::{TokenScope, closing_scoped, scoped, tighter, token_scoped};
use crate::error::{BoxError, ErrorKind, GroupError, SpawnError, TrySpawnError};
use crate::report::{GroupReport, TaskOutcome, TaskReport};

/// Up to this many tasks, `wait` polls every running task on each wake-up: no allocation
/// beyond the task itself. Larger groups poll only the tasks that were woken (through a
/// `FuturesUnordered`, one more allocation per task), so a wake-up costs O(1) instead of O(N).
/// The same threshold as `futures::future::join_all`, for the same reason.
const FEW: usize = 32;

/// What a task's future resolves to: its result, or the payload of its panic.
type TaskOutput<T> = std::thread::Result<Result<T, BoxError>>;

/// A task as the group stores it: panics caught, the error boxed, inside its span.
type Task<'a, T> = Pin<Box<dyn Future<Output = TaskOutput<T>> + Send + 'a>>;

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

impl<T> State<'_, T> {
    fn is_unfinished(&self) -> bool {
        matches!(self, Self::Queued(_) | Self::Running(_) | Self::Pooled)
    }
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
    type Output = TaskOutput<T>;

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

/// Boxes `task` as the group stores it, in a `source` span whose parent is `parent` or else
/// the current span.
#[inline(always)] // so that the task is built in place in its box, not copied into it
fn wrap<'a, T, E, F>(parent: Option<&tracing::Span>, name: &Name, deadline: Option<Instant>, task: F) -> Task<'a, T>
where
    F: Future<Output = Result<T, E>> + Send + 'a,
    E: Into<BoxError>,
{
    let span = match parent {
        Some(parent) => tracing::info_span!(parent: parent, "source", source = %name),
        None => tracing::info_span!("source", source = %name),
    };
    Box::pin(Wrapped { span, deadline, future: Some(task) })
}

/// A task's slot, its name and the message of the panic of its drop.
type DropPanic = (usize, Name, Arc<str>);

/// Drops `task`, containing a panic of its drop glue (a drop guard that panics): returns the
/// panic's message instead of unwinding.
fn drop_contained<'a, T>(task: Task<'a, T>) -> Option<Arc<str>> {
    std::panic::catch_unwind(AssertUnwindSafe(move || drop(task))).err().map(|payload| panic_message(&*payload))
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
        if let Err(error) = std::task::ready!(group.poll_wait(cx, this.deadline, this.cancelled)) {
            if group.recording.is_some() {
                group.finish_report(Some(&error));
            }
            return Poll::Ready(Err(error));
        }
        if group.shared.get().is_none() {
            // With a handle, `complete` cancelled the token under the inbox's lock.
            if let Some(token) = group.token.get() {
                token.cancel_with(Cause::Completed);
            }
        }
        if group.recording.is_some() {
            group.finish_report(None);
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
    }
}

impl<'a, T: Send + 'a> Future for WaitWithReport<'a, T> {
    type Output = (Result<Outputs<T>, GroupError>, GroupReport);

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut wait = self.project().wait;
        let result = std::task::ready!(wait.as_mut().poll(cx));
        let report = wait.project().group.recording.as_mut().and_then(|recording| recording.done.take());
        Poll::Ready((result, report.unwrap_or_default()))
    }
}

impl<T> fmt::Debug for WaitWithReport<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitWithReport").field("wait", &self.wait).finish()
    }
}

/// A task of a large group, tagged with its slot.
struct Pooled<'a, T> {
    index: usize,
    task: Task<'a, T>,
}

impl<T> Future for Pooled<'_, T> {
    type Output = (usize, TaskOutput<T>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let index = self.index;
        self.task.as_mut().poll(cx).map(|output| (index, output))
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

/// The timings and outcomes of a group run by [`Group::wait_with_report`], by slot.
#[derive(Default)]
struct Recording {
    /// The offset of the current poll from the group's creation.
    now: Duration,
    /// Whether `wait` has been polled: tasks running from the start start then.
    polled: bool,
    entries: Vec<Entry>,
    /// The finished report, for [`WaitWithReport`] to take.
    done: Option<GroupReport>,
}

#[derive(Default)]
struct Entry {
    start: Option<Duration>,
    end: Option<Duration>,
    outcome: Option<TaskOutcome>,
    secondary: Option<Cause>,
}

impl Recording {
    fn entry(&mut self, index: usize) -> &mut Entry {
        if self.entries.len() <= index {
            self.entries.resize_with(index + 1, Entry::default);
        }
        &mut self.entries[index]
    }

    fn start(&mut self, index: usize) {
        let now = self.now;
        self.entry(index).start.get_or_insert(now);
    }

    fn end(&mut self, index: usize, outcome: TaskOutcome) {
        let now = self.now;
        let entry = self.entry(index);
        entry.end = Some(now);
        entry.outcome = Some(outcome);
    }
}

/// What a [`GroupHandle`] shares with its group. Made by the first [`Group::handle`]: a group
/// without a handle has none of it.
struct Shared<'a, T> {
    token: CancelToken,
    limit: usize,
    deadline: Option<Instant>,
    span: Option<tracing::Span>,
    /// Wakes `wait` when a task arrives from outside its poll.
    waker: AtomicWaker,
    inbox: Mutex<Inbox<'a, T>>,
}

struct Inbox<'a, T> {
    /// No task is admitted any more: the group failed, completed or was dropped.
    closed: bool,
    /// The group's running and queued counts, for `try_spawn`.
    running: usize,
    queued: usize,
    /// Every name in the group, for the duplicate check.
    names: Vec<(u64, Name)>,
    /// Tasks spawned through a handle, not yet taken into the group's slots.
    incoming: Vec<Slot<'a, T>>,
}

impl<'a, T> Shared<'a, T> {
    fn lock(&self) -> MutexGuard<'_, Inbox<'a, T>> {
        // Nothing panics while holding the lock, but a poisoned inbox is still consistent.
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A cheap, cloneable handle that spawns tasks into a running [`Group`], for example from one of
/// its own tasks (errgroup's `g.Go` from a goroutine, a Trio nursery passed down).
///
/// A task spawned through a handle is a sibling like any other: it is named (duplicates are
/// refused), counts under the concurrency limit, runs under the group's deadline, and `wait`
/// waits for it. Once the group has closed (a task failed, the deadline passed, the caller
/// cancelled, the group completed or was dropped) every spawn is refused with
/// [`SpawnError::Closed`] and the cause, and the task is dropped unpolled; that includes spawns
/// from the drop guards of cancelled tasks.
///
/// Its tasks run inside a `source` span whose parent is the group's
/// [`ParentSpan`](muster_options::ParentSpan), or else the span current at the spawn (the
/// spawning task's own, from inside a task).
///
/// ```
/// # use muster_core as muster;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use muster::Group;
///
/// let mut group = Group::new();
/// let handle = group.handle();
/// group.spawn("accounts", async move {
///     // Discovered at run time: one more source per account.
///     for id in [7, 9] {
///         handle.spawn(format!("balance-{id}"), async move { Ok::<_, std::io::Error>(id * 100) })?;
///     }
///     Ok::<_, muster::SpawnError>(2)
/// })?;
/// let outputs = group.wait().await?;
/// assert_eq!(outputs.names().collect::<Vec<_>>(), ["accounts", "balance-7", "balance-9"]);
/// assert_eq!(outputs["balance-9"], 900);
/// # Ok(()) }
/// ```
///
/// A task that spawns tasks of its own kind (a recursive walk) is a recursive `async fn`, so
/// its future must be boxed, as any recursive future in Rust:
///
/// ```
/// # use muster_core as muster;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::future::Future;
/// use std::pin::Pin;
/// use muster::{Group, GroupHandle, SpawnError};
///
/// type Walk = Pin<Box<dyn Future<Output = Result<usize, SpawnError>> + Send>>;
///
/// /// Visits `path`, then its two children down to depth 2, each as a task of the group.
/// fn walk(handle: GroupHandle<'static, usize>, path: String) -> Walk {
///     Box::pin(async move {
///         if path.len() < 3 {
///             for child in ["a", "b"] {
///                 handle.spawn(format!("{path}{child}"), walk(handle.clone(), format!("{path}{child}")))?;
///             }
///         }
///         Ok(path.len())
///     })
/// }
///
/// let mut group = Group::new();
/// group.spawn("/", walk(group.handle(), "/".to_owned()))?;
/// assert_eq!(group.wait().await?.names().count(), 7); // "/", "/a", "/b", "/aa", "/ab", "/ba", "/bb"
/// # Ok(()) }
/// ```
pub struct GroupHandle<'a, T> {
    shared: Arc<Shared<'a, T>>,
}

impl<T> Clone for GroupHandle<'_, T> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<'a, T: Send + 'a> GroupHandle<'a, T> {
    /// Spawns a task named `name` into the group; it starts in the group's current poll (or,
    /// under a concurrency limit with no free slot, queued after the tasks already waiting).
    ///
    /// # Errors
    ///
    /// [`SpawnError::DuplicateName`] if the group has a task of that name (it keeps running),
    /// [`SpawnError::Closed`] with the cause once the group has closed. The refused task is
    /// dropped without being polled.
    pub fn spawn<F, E>(&self, name: impl Into<Name>, task: F) -> Result<(), SpawnError>
    where
        F: Future<Output = Result<T, E>> + Send + 'a,
        E: Into<BoxError>,
    {
        self.submit(name.into(), task, false).map_err(|(error, _)| error)
    }

    /// Like [`spawn`](GroupHandle::spawn), but under a concurrency limit it refuses the task
    /// instead of queueing it when no slot is free (every slot taken, or tasks already queued
    /// for them).
    ///
    /// # Errors
    ///
    /// [`SpawnError::Full`], or what `spawn` refuses, inside a [`TrySpawnError`] that gives
    /// the task back unpolled.
    pub fn try_spawn<F, E>(&self, name: impl Into<Name>, task: F) -> Result<(), TrySpawnError<F>>
    where
        F: Future<Output = Result<T, E>> + Send + 'a,
        E: Into<BoxError>,
    {
        self.submit(name.into(), task, true).map_err(|(error, task)| TrySpawnError::new(error, task))
    }

    fn submit<F, E>(&self, name: Name, task: F, only_if_free: bool) -> Result<(), (SpawnError, F)>
    where
        F: Future<Output = Result<T, E>> + Send + 'a,
        E: Into<BoxError>,
    {
        let shared = &*self.shared;
        let mut inbox = shared.lock();
        if inbox.closed || shared.token.is_cancelled() {
            let cause = shared.token.cause().cloned().unwrap_or(Cause::Dropped);
            return Err((SpawnError::Closed { name, cause }, task));
        }
        let hash = name_hash(&name);
        if inbox.names.iter().any(|(other, other_name)| *other == hash && *other_name == name) {
            return Err((SpawnError::DuplicateName(name), task));
        }
        if only_if_free && inbox.running + inbox.queued + inbox.incoming.len() >= shared.limit {
            return Err((SpawnError::Full { name, limit: shared.limit }, task));
        }
        let task = wrap(shared.span.as_ref(), &name, shared.deadline, task);
        inbox.names.push((hash, name.clone()));
        inbox.incoming.push(Slot { name, hash, state: State::Queued(task) });
        drop(inbox);
        shared.waker.wake();
        Ok(())
    }

    /// The group's cancellation token (see [`Group::token`]).
    pub fn token(&self) -> CancelToken {
        self.shared.token.clone()
    }

    /// Whether the group admits no new task any more.
    pub fn is_closed(&self) -> bool {
        self.shared.token.is_cancelled() || self.shared.lock().closed
    }
}

impl<T> fmt::Debug for GroupHandle<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupHandle").field("token", &self.shared.token).finish_non_exhaustive()
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
/// - A panic becomes the task's error (with the panic message); siblings are cancelled. A
///   panic while a cancelled task is being dropped is contained: it is recorded as that task's
///   [secondary failure](GroupError::secondary) and the root cause stands.
/// - An optional deadline, counted from the group's creation, fails the group naming the
///   pending tasks. A task completing exactly at the deadline is in time.
/// - With a concurrency limit, at most that many tasks run at once; queued tasks start in
///   spawn order and never after a failure. [`try_spawn`](Group::try_spawn) refuses instead of
///   queueing.
/// - Running tasks spawn siblings through a [`GroupHandle`] ([`Group::handle`]).
/// - The group's [`CancelToken`] (also [`cancellation()`](crate::cancellation) inside a task)
///   reports why work was stopped: the failed sibling, the deadline, the caller's cancellation
///   (with its reason), the group being dropped, or (after success) [`Cause::Completed`].
/// - [`wait_with_report`](Group::wait_with_report) adds a per-task [`GroupReport`].
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
    /// fails with [`ErrorKind::Cancelled`] (and `parent`'s cause) and admits no new task.
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
    #[inline]
    fn place(&mut self, name: Name, hash: u64, free: bool, task: Task<'a, T>) {
        let state = if free {
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
            self.pool_up();
        }
        let cancelled = self.token.get().or(self.parent.as_ref()).map(CancelToken::cancelled_owned);
        // The deadline's timer is made when a poll leaves tasks pending: a group whose tasks
        // finish in its first poll never touches the timer wheel.
        Wait { group: self, deadline: None, cancelled }
    }

    /// Like [`wait`](Group::wait), and also returns the group's [`GroupReport`]: every task's
    /// outcome, start and duration, on success and on error. Recording costs a clock read per
    /// poll and an allocation per group; `wait` does neither.
    pub fn wait_with_report(mut self) -> WaitWithReport<'a, T> {
        self.recording = Some(Box::default());
        WaitWithReport { wait: self.wait() }
    }

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
        if let Some(recording) = &mut self.recording {
            recording.now = self.started.elapsed();
            if !recording.polled {
                recording.polled = true;
                for (index, slot) in self.slots.iter().enumerate() {
                    if matches!(slot.state, State::Running(_) | State::Pooled) {
                        recording.start(index);
                    }
                }
            }
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
        for index in 0..self.slots.len() {
            let State::Running(task) = &mut self.slots[index].state else { continue };
            if let Poll::Ready(output) = task.as_mut().poll(cx) {
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
    fn take_incoming(&mut self) -> usize {
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

    /// Records the output of the task in slot `index`.
    fn settle(&mut self, index: usize, output: TaskOutput<T>, failed: &mut Failures) {
        self.running -= 1;
        self.mirror();
        let slot = &mut self.slots[index];
        let name = || slot.name.clone();
        let (kind, cause, outcome) = match output {
            Ok(Ok(value)) => {
                slot.state = State::Done(value);
                if let Some(recording) = &mut self.recording {
                    recording.end(index, TaskOutcome::Ok);
                }
                return;
            }
            Ok(Err(error)) => {
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
    fn mirror(&self) {
        if let Some(shared) = self.shared.get() {
            let mut inbox = shared.lock();
            (inbox.running, inbox.queued) = (self.running, self.queued());
        }
    }

    /// The number of queued tasks: the suffix of the slots from `next_queued`.
    fn queued(&self) -> usize {
        self.next_queued.map_or(0, |index| self.slots.len() - index)
    }

    /// Cancels the group with `cause`: sets the token, closes the inbox, then drops every task
    /// still running or queued, so their drop guards have run before `wait` returns. `others`
    /// failed in the same wave as the root cause.
    fn fail(&mut self, kind: ErrorKind, cause: Cause, others: &[usize]) -> GroupError {
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
            recording.now = elapsed;
            for (index, slot) in self.slots.iter().enumerate() {
                let entry = recording.entry(index);
                if !matches!(slot.state, State::Cancelled) || entry.outcome.is_some() {
                    continue;
                }
                let outcome = match kind {
                    ErrorKind::Timeout if entry.start.is_some() => TaskOutcome::TimedOut,
                    _ => TaskOutcome::Cancelled { cause: cause.clone() },
                };
                recording.end(index, outcome);
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

    /// Builds the report of a finished run into the recording.
    fn finish_report(&mut self, error: Option<&GroupError>) {
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
    fn adopt(&mut self, scope: TokenScope) {
        if let Some(token) = scope.token {
            let _ = self.token.set(token);
        }
    }

    /// Closes the inbox (no spawn is admitted from now on, drop guards' included) and moves
    /// the tasks spawned through handles but not yet taken into the slots, as queued.
    fn close_inbox(&mut self) {
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
    fn drop_unfinished(&mut self, cause: Cause) -> (Vec<Name>, Vec<DropPanic>, Cause) {
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

/// A cheap fingerprint of a task name: its length and four of its bytes (the first, the last,
/// the one before the last and the middle one). Only used to skip name comparisons; equal
/// fingerprints are confirmed by comparing the names.
fn name_hash(name: &str) -> u64 {
    let bytes = name.as_bytes();
    let len = bytes.len();
    let byte = |index: usize| bytes.get(index).map_or(0, |&byte| u64::from(byte));
    let picked = byte(0) | byte(len / 2) << 8 | byte(len.wrapping_sub(2)) << 16 | byte(len.wrapping_sub(1)) << 24;
    picked | (len as u64) << 32
}

/// The message of a caught panic's payload (`panic!("...")` gives a `&str` or a `String`), or a
/// placeholder for other payloads.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> Arc<str> {
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
/// # use muster_core as muster;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut group = muster::Group::new();
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
    /// # use muster_core as muster;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let mut group = muster::Group::new();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_message_is_the_payloads_text() {
        let payload = std::panic::catch_unwind(|| panic!("boom {}", 42)).unwrap_err();
        assert_eq!(&*panic_message(&*payload), "boom 42");
        let payload = std::panic::catch_unwind(|| std::panic::panic_any(7)).unwrap_err();
        assert_eq!(&*panic_message(&*payload), "non-string panic payload");
    }
}
