use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared, WeakShared};
use tracing::Instrument as _;

use crate::cancel::SharedError;
use crate::error::BoxError;
use crate::panic_message;

/// The shared call as every waiter holds it: panics caught, errors shared.
type Call<V> = Shared<BoxFuture<'static, Result<V, CoalesceError>>>;

/// Runs concurrent calls for an equal key once and gives every caller the result
/// (singleflight).
///
/// Concurrent aggregations that ask the same source for the same key share one call through
/// [`Coalescer::run`]: the first caller starts it, the others wait for its result. Cloning a
/// `Coalescer` is cheap and every clone shares the same calls, so one coalescer per source
/// serves every aggregation that uses the source.
///
/// - **Real results**: every waiter gets the call's value, or its error as the same
///   [`SharedError`] (so `downcast_ref` to the source's error type works), inside a
///   [`CoalesceError::Failed`].
/// - **Cancelled only when nobody waits**: a waiter leaves by dropping its `run` future. The
///   call goes on while at least one waiter remains, and is dropped (its connection closed, its
///   drop guards run) when the last waiter leaves.
/// - **No inherited cancellation**: a caller arriving after every earlier waiter has left starts
///   a fresh call; it never sees the abandoned one.
/// - **Panics**: a panic inside the call becomes [`CoalesceError::Panicked`] for every waiter;
///   the process does not crash and the coalescer stays usable.
/// - **No cache**: the call is forgotten the moment it ends; a `run` after that starts a new
///   call. Distinct keys never share a call.
///
/// # Polling in place
///
/// No task is spawned: the shared call is polled by its waiters, inside their `run` futures,
/// like the tasks of a [`Group`](crate::Group). It makes progress as long as at least one
/// waiter is being polled, and stops (stays suspended) while none is. When the call wakes up,
/// every waiter is woken and the first to be polled drives it. The call runs in the tracing
/// span of the caller that started it.
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
/// use muster_core::Coalescer;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), muster_core::CoalesceError> {
/// let profiles = Coalescer::new();
/// let calls = Arc::new(AtomicUsize::new(0));
/// let fetch_profile = |user_id: u64| {
///     let calls = Arc::clone(&calls);
///     move || async move {
///         calls.fetch_add(1, Ordering::SeqCst);
///         tokio::time::sleep(Duration::from_millis(20)).await; // the profile service
///         Ok::<_, std::io::Error>(format!("profile of user {user_id}"))
///     }
/// };
///
/// // Two aggregations for user 42 at once: one call to the profile service.
/// let (first, second) = tokio::join!(profiles.run(42, fetch_profile(42)), profiles.run(42, fetch_profile(42)));
/// assert_eq!(first?, "profile of user 42");
/// assert_eq!(second?, "profile of user 42");
/// assert_eq!(calls.load(Ordering::SeqCst), 1);
///
/// // Nothing is cached: a later request makes a new call.
/// profiles.run(42, fetch_profile(42)).await?;
/// assert_eq!(calls.load(Ordering::SeqCst), 2);
/// # Ok(()) }
/// ```
pub struct Coalescer<K, V> {
    calls: Arc<Mutex<Calls<K, V>>>,
}

/// The calls in flight, by key.
struct Calls<K, V> {
    /// The id of the next call started; ids tell a call's entry from a newer one for its key.
    next_id: u64,
    by_key: HashMap<K, Entry<V>>,
}

/// A call in flight. Only the waiters hold it strongly, so it is dropped when they have all
/// gone, and a dead entry is one that a new caller replaces.
struct Entry<V> {
    id: u64,
    call: WeakShared<BoxFuture<'static, Result<V, CoalesceError>>>,
}

impl<K, V> Coalescer<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// A coalescer with no call in flight.
    ///
    /// ```
    /// let profiles = muster_core::Coalescer::<u64, String>::new();
    /// assert_eq!(profiles.in_flight(), 0);
    /// ```
    pub fn new() -> Self {
        Self { calls: Arc::new(Mutex::new(Calls { next_id: 0, by_key: HashMap::new() })) }
    }

    /// Returns the result of the call for `key`, joining the call already in flight for an
    /// equal key or, when there is none, starting one with `call`.
    ///
    /// `call` is invoked only by the caller that starts the call, when its `run` future is
    /// first polled; a caller that joins drops its `call` unused. The call's error is converted
    /// once into a [`SharedError`] that every waiter receives. A concrete error type, a
    /// [`BoxError`] and a [`SharedError`] are kept as they are, never wrapped, so
    /// `downcast_ref` on [`CoalesceError::get_ref`] finds the source's own error type.
    ///
    /// # Errors
    ///
    /// [`CoalesceError::Failed`] with the call's error, or [`CoalesceError::Panicked`] when
    /// the call (or `call` itself) panicked. Every waiter of one call gets the same outcome.
    ///
    /// # Cancellation safety
    ///
    /// Dropping the future makes this caller leave the call. The call is cancelled (dropped)
    /// only when its last waiter leaves; otherwise it goes on for the others.
    ///
    /// ```
    /// use std::time::Duration;
    /// use muster_core::Coalescer;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), muster_core::CoalesceError> {
    /// let balances = Coalescer::new();
    /// let fetch = |cents: u64| move || async move {
    ///     tokio::time::sleep(Duration::from_millis(50)).await;
    ///     Ok::<_, std::io::Error>(cents)
    /// };
    /// // The first caller gives up after 10ms; the call goes on for the second one.
    /// let impatient = tokio::time::timeout(Duration::from_millis(10), balances.run("alice", fetch(100)));
    /// let (impatient, patient) = tokio::join!(impatient, balances.run("alice", fetch(200)));
    /// assert!(impatient.is_err());
    /// assert_eq!(patient?, 100, "the call started by the first caller");
    /// # Ok(()) }
    /// ```
    pub async fn run<F, Fut, E>(&self, key: K, call: F) -> Result<V, CoalesceError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.join(key, call).await
    }

    /// The call in flight for `key`, or a new one, registered under `key`.
    fn join<F, Fut, E>(&self, key: K, call: F) -> Call<V>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
        E: Into<BoxError>,
    {
        let mut calls = lock(&self.calls);
        // Upgrading fails once every waiter has gone (or the call ended and was forgotten),
        // so a caller never joins an abandoned call.
        if let Some(joined) = calls.by_key.get(&key).and_then(|entry| entry.call.upgrade()) {
            // `call` and `key` are dropped after the lock is released: their `Drop` may be
            // anything.
            return joined;
        }
        let id = calls.next_id;
        calls.next_id = calls.next_id.wrapping_add(1);
        let forget = Forget { calls: Arc::clone(&self.calls), key: key.clone(), id };
        let future = async move {
            let outcome = match AssertUnwindSafe(async move { call().await }).catch_unwind().await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) => Err(CoalesceError::Failed(into_shared(error.into()))),
                Err(panic) => Err(CoalesceError::Panicked { message: panic_message(&*panic) }),
            };
            // Forgotten before any waiter sees the outcome, so a later caller starts afresh.
            drop(forget);
            outcome
        };
        let started = future.in_current_span().boxed().shared();
        if let Some(call) = started.downgrade() {
            calls.by_key.insert(key, Entry { id, call });
        }
        started
    }
}

impl<K, V> Coalescer<K, V> {
    /// The number of keys with a call in flight.
    ///
    /// A call counts from its start until it ends or its last waiter leaves.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), muster_core::CoalesceError> {
    /// let profiles = muster_core::Coalescer::new();
    /// profiles.run(42, || async { Ok::<_, std::io::Error>("Ada") }).await?;
    /// assert_eq!(profiles.in_flight(), 0, "nothing is kept after the call");
    /// # Ok(()) }
    /// ```
    pub fn in_flight(&self) -> usize {
        lock(&self.calls).by_key.len()
    }
}

impl<K, V> Clone for Coalescer<K, V> {
    /// Another handle on the same calls.
    fn clone(&self) -> Self {
        Self { calls: Arc::clone(&self.calls) }
    }
}

impl<K, V> Default for Coalescer<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    fn default() -> Self {
        Self::new()
    }
}

impl<K, V> fmt::Debug for Coalescer<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalescer").field("in_flight", &self.in_flight()).finish()
    }
}

/// Removes a call's entry when the call ends or is dropped, unless a newer call has replaced
/// it already.
struct Forget<K: Hash + Eq, V> {
    calls: Arc<Mutex<Calls<K, V>>>,
    key: K,
    id: u64,
}

impl<K: Hash + Eq, V> Drop for Forget<K, V> {
    fn drop(&mut self) {
        let mut calls = lock(&self.calls);
        if calls.by_key.get(&self.key).is_some_and(|entry| entry.id == self.id) {
            calls.by_key.remove(&self.key);
        }
    }
}

/// Locks the calls, ignoring poisoning: the map is never left half-updated by a panic (only a
/// panicking `Hash` or `Eq` could unwind while it is locked).
fn lock<K, V>(calls: &Mutex<Calls<K, V>>) -> MutexGuard<'_, Calls<K, V>> {
    calls.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The call's error as every waiter shares it. An error that already is a [`SharedError`]
/// is unwrapped rather than wrapped again, so it keeps its identity and its type.
fn into_shared(error: BoxError) -> SharedError {
    match error.downcast::<SharedError>() {
        Ok(shared) => *shared,
        Err(error) => Arc::from(error),
    }
}

/// Why a shared call run through a [`Coalescer`] failed. Every waiter of the call gets a
/// clone of the same error.
///
/// ```
/// use muster_core::{CoalesceError, Coalescer};
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("profile service answered {0}")]
/// struct Status(u16);
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let profiles = Coalescer::<u64, String>::new();
/// let error = profiles.run(42, || async { Err(Status(503)) }).await.unwrap_err();
/// assert!(matches!(error, CoalesceError::Failed(_)));
/// assert_eq!(error.to_string(), "shared call failed");
/// let status = error.get_ref().and_then(|source| source.downcast_ref::<Status>());
/// assert_eq!(status.map(|status| status.0), Some(503));
/// # }
/// ```
// `Display` and `Error` are written by hand: thiserror's `#[source]` would return the `Arc`
// itself as the source, and `downcast_ref` to the source's own type would fail on it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum CoalesceError {
    /// The shared call returned this error. It is also this error's
    /// [`source`](Error::source).
    Failed(SharedError),
    /// The shared call panicked; the panic became this error.
    Panicked {
        /// The panic message, or a placeholder when the payload was not a string.
        message: Arc<str>,
    },
}

impl CoalesceError {
    /// The error the shared call returned; `None` when it panicked.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let coalescer = muster_core::Coalescer::<&str, u32>::new();
    /// let error = coalescer.run("key", || async { Err(std::io::Error::other("reset")) }).await.unwrap_err();
    /// assert_eq!(error.get_ref().map(ToString::to_string).as_deref(), Some("reset"));
    /// # }
    /// ```
    pub fn get_ref(&self) -> Option<&SharedError> {
        match self {
            Self::Failed(error) => Some(error),
            Self::Panicked { .. } => None,
        }
    }

    /// The error to pass on: the shared call's own error when it failed (the same `Arc` every
    /// waiter got), or this error, shared, when it panicked.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let coalescer = muster_core::Coalescer::<&str, u32>::new();
    /// let error = coalescer.run("key", || async { Err(std::io::Error::other("reset")) }).await.unwrap_err();
    /// assert!(error.into_shared().downcast_ref::<std::io::Error>().is_some());
    /// # }
    /// ```
    pub fn into_shared(self) -> SharedError {
        match self {
            Self::Failed(error) => error,
            panicked @ Self::Panicked { .. } => Arc::new(panicked),
        }
    }

    /// The panic message, when the shared call panicked.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let coalescer = muster_core::Coalescer::<&str, u32>::new();
    /// let error = coalescer.run("key", || async { panic!("bug") as Result<u32, std::io::Error> }).await.unwrap_err();
    /// assert_eq!(error.panic_message(), Some("bug"));
    /// # }
    /// ```
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            Self::Failed(_) => None,
            Self::Panicked { message } => Some(message),
        }
    }

    /// Whether the shared call returned an error.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let coalescer = muster_core::Coalescer::<&str, u32>::new();
    /// let error = coalescer.run("key", || async { Err("refused") }).await.unwrap_err();
    /// assert!(error.is_failed());
    /// # }
    /// ```
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed(_))
    }

    /// Whether the shared call panicked.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let coalescer = muster_core::Coalescer::<&str, u32>::new();
    /// let error = coalescer.run("key", || async { panic!("bug") as Result<u32, &str> }).await.unwrap_err();
    /// assert!(error.is_panic());
    /// # }
    /// ```
    pub fn is_panic(&self) -> bool {
        matches!(self, Self::Panicked { .. })
    }
}

impl fmt::Display for CoalesceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // The call's error is this error's `source()`, so it is not repeated here.
            Self::Failed(_) => f.write_str("shared call failed"),
            Self::Panicked { message } => write!(f, "shared call panicked: {message}"),
        }
    }
}

impl Error for CoalesceError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Failed(error) => Some(&**error),
            Self::Panicked { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(coalescer: &Coalescer<&'static str, u32>, key: &'static str) -> Option<u64> {
        lock(&coalescer.calls).by_key.get(key).map(|entry| entry.id)
    }

    #[test]
    fn a_stale_call_does_not_forget_the_newer_call_for_its_key() {
        let coalescer = Coalescer::<&'static str, u32>::new();
        let first = coalescer.join("key", || async { Ok::<_, BoxError>(1) });
        assert_eq!(entry(&coalescer, "key"), Some(0));
        // As when another thread replaces the entry of an abandoned call while that call is
        // still being dropped.
        let second = coalescer.join("other", || async { Ok::<_, BoxError>(2) });
        lock(&coalescer.calls).by_key.insert("key", Entry { id: 1, call: second.downgrade().unwrap() });
        drop(first);
        assert_eq!(entry(&coalescer, "key"), Some(1), "the newer call must stay registered");
        drop(second);
        // The entry under "key" is now dead: the next caller replaces it with a fresh call.
        let third = coalescer.join("key", || async { Ok::<_, BoxError>(3) });
        assert_eq!(entry(&coalescer, "key"), Some(2));
        drop(third);
        assert_eq!(coalescer.in_flight(), 0);
    }

    #[test]
    fn a_shared_error_keeps_its_identity() {
        let shared: SharedError = Arc::new(std::io::Error::other("reset"));
        let again = into_shared(Box::new(Arc::clone(&shared)));
        assert!(Arc::ptr_eq(&shared, &again));
        let boxed = into_shared(Box::new(std::io::Error::other("reset")));
        assert!(boxed.downcast_ref::<std::io::Error>().is_some());
    }
}
