use std::collections::VecDeque;
use std::fmt;
use std::future::{Future, poll_fn};
use std::ops::Index;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use muster_options::{GroupConfig, GroupOption, OptionError};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tracing::Instrument as _;

use crate::cancel::{CancelToken, Cause, Name};
use crate::error::{BoxError, ErrorKind, GroupError, SpawnError};

/// What a task's future resolves to inside the group: its index, and its result or panic.
type TaskOutput<T> = (usize, std::thread::Result<Result<T, BoxError>>);
type Task<'a, T> = Pin<Box<dyn Future<Output = TaskOutput<T>> + Send + 'a>>;

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
    names: Vec<Name>,
    running: FuturesUnordered<Task<'a, T>>,
    queued: VecDeque<Task<'a, T>>,
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
            names: Vec::new(),
            running: FuturesUnordered::new(),
            queued: VecDeque::new(),
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
        if self.names.contains(&name) {
            return Err(SpawnError::DuplicateName(name));
        }
        let span = match &self.span {
            Some(parent) => tracing::info_span!(parent: parent, "source", source = %name),
            None => tracing::info_span!("source", source = %name),
        };
        let index = self.names.len();
        self.names.push(name);
        let task = AssertUnwindSafe(async move { task.await.map_err(Into::into) })
            .catch_unwind()
            .map(move |result| (index, result))
            .instrument(span);
        if self.running.len() < self.limit {
            self.running.push(Box::pin(task));
        } else {
            self.queued.push_back(Box::pin(task));
        }
        Ok(())
    }

    /// The number of tasks spawned so far.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no task has been spawned.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Runs every task to completion and returns their outputs by name, or fails fast.
    ///
    /// # Errors
    ///
    /// A [`GroupError`] with the root cause: the first task to fail or panic, the deadline, or
    /// the parent's cancellation. Every other task has been dropped when this returns.
    ///
    /// # Cancellation safety
    ///
    /// Dropping the returned future drops every task (they are owned by it) and cancels the
    /// group's token with [`Cause::Dropped`]; nothing keeps running.
    pub async fn wait(mut self) -> Result<Outputs<T>, GroupError> {
        let mut values: Vec<Option<T>> = std::iter::repeat_with(|| None).take(self.len()).collect();
        let deadline = self.deadline.map(|after| tokio::time::sleep_until(self.started + after));
        let cancelled = self.token.get().or(self.parent.as_ref()).map(CancelToken::cancelled_owned);
        let mut deadline = pin!(deadline);
        let mut cancelled = pin!(cancelled);
        poll_fn(|cx| self.poll_wait(cx, &mut values, deadline.as_mut().as_pin_mut(), cancelled.as_mut().as_pin_mut()))
            .await?;
        if let Some(token) = self.token.get() {
            token.cancel_with(Cause::Completed);
        }
        Ok(Outputs { names: std::mem::take(&mut self.names), values })
    }

    fn poll_wait(
        &mut self,
        cx: &mut Context<'_>,
        values: &mut [Option<T>],
        deadline: Option<Pin<&mut Sleep>>,
        cancelled: Option<Pin<&mut WaitForCancellationFutureOwned>>,
    ) -> Poll<Result<(), GroupError>> {
        if cancelled.is_some_and(|cancelled| cancelled.poll(cx).is_ready()) {
            let cause = self.closed().cloned().unwrap_or(Cause::Cancelled);
            return Poll::Ready(Err(self.fail(ErrorKind::Cancelled, cause, values, &[])));
        }
        // Drain the tasks that are ready now, in waves: queued tasks start only once a wave
        // is over and had no failure, so which tasks start never depends on the order in which
        // a wave was polled. Failures in the same wave tie-break to the earliest spawned, and a
        // task finishing together with the deadline is in time.
        let mut failed: Vec<(usize, ErrorKind, Cause)> = Vec::new();
        loop {
            let mut freed = 0;
            while let Poll::Ready(Some((index, result))) = self.running.poll_next_unpin(cx) {
                match result {
                    Ok(Ok(value)) => {
                        values[index] = Some(value);
                        freed += 1;
                    }
                    Ok(Err(error)) => {
                        let (name, error) = (self.names[index].clone(), Arc::from(error));
                        failed.push((index, ErrorKind::Failed, Cause::Failed { name, error }));
                    }
                    Err(panic) => {
                        let (name, message) = (self.names[index].clone(), panic_message(&*panic));
                        failed.push((index, ErrorKind::Panicked, Cause::Panicked { name, message }));
                    }
                }
            }
            if !failed.is_empty() || freed == 0 || self.queued.is_empty() {
                break;
            }
            let starting = freed.min(self.queued.len());
            self.running.extend(self.queued.drain(..starting));
        }
        let failed_indices: Vec<usize> = failed.iter().map(|(index, ..)| *index).collect();
        if let Some((_, kind, cause)) = failed.into_iter().min_by_key(|(index, ..)| *index) {
            return Poll::Ready(Err(self.fail(kind, cause, values, &failed_indices)));
        }
        if self.running.is_empty() && self.queued.is_empty() {
            return Poll::Ready(Ok(()));
        }
        if deadline.is_some_and(|deadline| deadline.poll(cx).is_ready()) {
            let after = self.deadline.unwrap_or_default();
            let pending = self.unfinished(values, &[]).into();
            let cause = Cause::Deadline { after, pending };
            return Poll::Ready(Err(self.fail(ErrorKind::Timeout, cause, values, &[])));
        }
        Poll::Pending
    }

    /// Cancels the group with `cause`: sets the token, then drops every task still running or
    /// queued, so their drop guards have run before `wait` returns.
    fn fail(&mut self, kind: ErrorKind, cause: Cause, values: &[Option<T>], failed: &[usize]) -> GroupError {
        if let Some(token) = self.token.get() {
            token.cancel_with(cause.clone());
        }
        self.running.clear();
        self.queued.clear();
        let root = cause.source_name();
        let also_failed =
            failed.iter().map(|&index| self.names[index].clone()).filter(|name| Some(&**name) != root).collect();
        let cancelled = self.unfinished(values, failed);
        let fields = std::mem::take(&mut self.fields);
        GroupError::new(kind, cause, self.started.elapsed(), cancelled, also_failed, fields)
    }

    /// The tasks that have neither produced a value nor failed, in spawn order.
    fn unfinished(&self, values: &[Option<T>], failed: &[usize]) -> Vec<Name> {
        (values.iter().enumerate())
            .filter(|(index, value)| value.is_none() && !failed.contains(index))
            .map(|(index, _)| self.names[index].clone())
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
        f.debug_struct("Group")
            .field("names", &self.names)
            .field("running", &self.running.len())
            .field("queued", &self.queued.len())
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> Arc<str> {
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
    names: Vec<Name>,
    values: Vec<Option<T>>,
}

impl<T> Outputs<T> {
    fn position(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|candidate| candidate == name)
    }

    /// The output of the task named `name`, unless there is none or it was taken.
    pub fn get(&self, name: &str) -> Option<&T> {
        self.values[self.position(name)?].as_ref()
    }

    /// Moves the output of the task named `name` out, for building typed results without
    /// clones.
    pub fn take(&mut self, name: &str) -> Option<T> {
        let position = self.position(name)?;
        self.values[position].take()
    }

    /// The names of the outputs not taken, in spawn order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.iter().map(|(name, _)| name)
    }

    /// The outputs not taken, with their names, in spawn order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &T)> {
        (self.names.iter().zip(&self.values)).filter_map(|(name, value)| Some((&**name, value.as_ref()?)))
    }

    /// The number of outputs not taken.
    pub fn len(&self) -> usize {
        self.values.iter().filter(|value| value.is_some()).count()
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

impl<T> IntoIterator for Outputs<T> {
    type Item = (Name, T);
    type IntoIter = IntoIter<T>;

    fn into_iter(self) -> IntoIter<T> {
        IntoIter(self.names.into_iter().zip(self.values))
    }
}

/// The outputs of a group by value, in spawn order; see [`Outputs`].
#[derive(Debug)]
pub struct IntoIter<T>(std::iter::Zip<std::vec::IntoIter<Name>, std::vec::IntoIter<Option<T>>>);

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
