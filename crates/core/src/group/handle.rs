//! [`GroupHandle`] and the inbox through which its tasks reach the group.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::task::AtomicWaker;
use tokio::time::Instant;

use super::name_hash;
use super::task::{Slot, State, wrap};
use crate::cancel::{CancelToken, Cause, Name};
use crate::error::{BoxError, SpawnError, TrySpawnError};

/// What a [`GroupHandle`] shares with its group. Made by the first [`Group::handle`]: a group
/// without a handle has none of it.
pub(super) struct Shared<'a, T> {
    pub(super) token: CancelToken,
    pub(super) limit: usize,
    pub(super) deadline: Option<Instant>,
    pub(super) span: Option<tracing::Span>,
    /// Wakes `wait` when a task arrives from outside its poll.
    pub(super) waker: AtomicWaker,
    pub(super) inbox: Mutex<Inbox<'a, T>>,
}

pub(super) struct Inbox<'a, T> {
    /// No task is admitted any more: the group failed, completed or was dropped.
    pub(super) closed: bool,
    /// The group's running and queued counts, for `try_spawn`.
    pub(super) running: usize,
    pub(super) queued: usize,
    /// Every name in the group, for the duplicate check.
    pub(super) names: Vec<(u64, Name)>,
    /// Tasks spawned through a handle, not yet taken into the group's slots.
    pub(super) incoming: Vec<Slot<'a, T>>,
}

impl<'a, T> Shared<'a, T> {
    pub(super) fn lock(&self) -> MutexGuard<'_, Inbox<'a, T>> {
        // Nothing panics while holding the lock, but a poisoned inbox is still consistent.
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A cheap, cloneable handle that spawns tasks into a running [`Group`](crate::Group), for
/// example from one of its own tasks (errgroup's `g.Go` from a goroutine, a Trio nursery
/// passed down).
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
    pub(super) shared: Arc<Shared<'a, T>>,
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

    /// The group's cancellation token (see [`Group::token`](crate::Group::token)).
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
