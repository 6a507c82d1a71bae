//! [`Coalesce`]: concurrent aggregations asking a source for the same request share one call
//! (singleflight).

use std::any::Any;
use std::collections::HashMap;
use std::error::Error;
use std::fmt;
use std::hash::Hash;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared, WeakShared};
use muster_core::{Classify, ErrorKind, Fetcher, async_trait};
use tracing::Instrument as _;

use super::Policy;

/// Request coalescing (singleflight): concurrent fetches of one source for an equal request
/// share one call of the wrapped fetcher. List it last in a tuple (innermost), e.g.
/// `(Retry::attempts(3), Timeout(d), Coalesce)`, so that each waiter keeps its own timeout and
/// retries around the shared call.
///
/// - **Real results**: every waiter gets the call's value (a clone), or its error shared in a
///   [`CoalesceError`] that displays and classifies as the error itself.
/// - **Cancelled only when nobody waits**: a waiter leaves by dropping its fetch; the call goes
///   on while at least one waiter remains and is dropped (its connection closed) when the last
///   one leaves.
/// - **No inherited cancellation**: a fetch arriving after every earlier waiter has left starts
///   a fresh call; it never sees the abandoned one.
/// - **Panics**: a panic in the shared call is a panic in every waiter, with the same message
///   (so each aggregation reports its source as panicked); the coalescer stays usable.
/// - **No cache**: the call is forgotten the moment it ends.
///
/// No task is spawned: the shared call is polled by its waiters, in the span of the one that
/// started it. The request is the key (`Clone + Hash + Eq + 'static`); the wrapped fetcher is
/// shared with the call (it must be `'static`).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
/// use muster::{Aggregator, Coalesce, fetcher_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let calls = Arc::new(AtomicUsize::new(0));
/// let profiles = {
///     let calls = Arc::clone(&calls);
///     fetcher_fn(move |user_id: &u64| {
///         calls.fetch_add(1, Ordering::SeqCst);
///         let user_id = *user_id;
///         async move {
///             tokio::time::sleep(Duration::from_millis(20)).await;
///             Ok::<_, std::io::Error>(format!("user {user_id}"))
///         }
///     })
/// };
/// let aggregator = Aggregator::builder().source_with("profile", profiles, Coalesce).build()?;
/// let (a, b) = tokio::join!(aggregator.aggregate(&7), aggregator.aggregate(&7));
/// assert_eq!(a?.outputs, b?.outputs);
/// assert_eq!(calls.load(Ordering::SeqCst), 1, "one call for both aggregations");
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coalesce;

impl<F> Policy<F> for Coalesce {
    type Fetcher = CoalesceFetcher<F>;

    fn wrap(self, inner: F) -> CoalesceFetcher<F> {
        CoalesceFetcher { inner: Arc::new(inner), calls: OnceLock::new() }
    }
}

/// A fetcher whose concurrent fetches for an equal request share one call; see [`Coalesce`].
/// The wrapped fetcher's error needs `Classify + Error + Send + Sync + 'static`: it is shared
/// by the waiters in a [`CoalesceError`], which passes its kind on.
pub struct CoalesceFetcher<F> {
    inner: Arc<F>,
    /// The calls in flight: a `Coalescer` of the request, output and error types, made on
    /// first use (the types are only known then).
    calls: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl<F> fmt::Debug for CoalesceFetcher<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoalesceFetcher").finish_non_exhaustive()
    }
}

/// The error of a [`CoalesceFetcher`]: the shared call's error, the same one for every waiter.
///
/// It displays, classifies ([`Classify`]: its kind and retry verdict) and chains ([`Error::source`]) as the error
/// itself; [`get_ref`](Self::get_ref) gives the error.
pub struct CoalesceError<E>(Arc<E>);

impl<E> CoalesceError<E> {
    /// The shared call's error.
    pub fn get_ref(&self) -> &E {
        &self.0
    }
}

impl<E> Clone for CoalesceError<E> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<E: fmt::Debug> fmt::Debug for CoalesceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: fmt::Display> fmt::Display for CoalesceError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<E: Error> Error for CoalesceError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.0.source()
    }
}

impl<E: Classify> Classify for CoalesceError<E> {
    fn kind(&self) -> ErrorKind {
        self.0.kind()
    }

    fn is_retryable(&self) -> bool {
        self.0.is_retryable()
    }
}

#[async_trait]
impl<Req, F> Fetcher<Req> for CoalesceFetcher<F>
where
    Req: Hash + Eq + Clone + Send + Sync + 'static,
    F: Fetcher<Req> + 'static,
    F::Output: Clone + Sync + 'static,
    F::Error: std::error::Error + Send + Sync + 'static,
{
    type Output = F::Output;
    type Error = CoalesceError<F::Error>;

    async fn fetch(&self, request: &Req) -> Result<F::Output, Self::Error> {
        let calls = self.calls.get_or_init(|| Box::new(Coalescer::<Req, F::Output, F::Error>::default()));
        let Some(calls) = calls.downcast_ref::<Coalescer<Req, F::Output, F::Error>>() else {
            // Only if one fetcher serves requests of two types: those of the second type are
            // not coalesced.
            return self.inner.fetch(request).await.map_err(|error| CoalesceError(Arc::new(error)));
        };
        let (inner, owned) = (Arc::clone(&self.inner), request.clone());
        let call = calls.join(request.clone(), move || async move { inner.fetch(&owned).await });
        match call.await {
            Ok(value) => Ok(value),
            Err(Ended::Failed(error)) => Err(CoalesceError(error)),
            // The same panic in every waiter: each one's group reports its source as panicked.
            Err(Ended::Panicked(message)) => std::panic::resume_unwind(Box::new(message.to_string())),
        }
    }
}

/// How a shared call failed, as every waiter sees it.
enum Ended<E> {
    Failed(Arc<E>),
    Panicked(Arc<str>),
}

impl<E> Clone for Ended<E> {
    fn clone(&self) -> Self {
        match self {
            Self::Failed(error) => Self::Failed(Arc::clone(error)),
            Self::Panicked(message) => Self::Panicked(Arc::clone(message)),
        }
    }
}

/// The shared call as every waiter holds it: panics caught, errors shared.
type Call<V, E> = Shared<BoxFuture<'static, Result<V, Ended<E>>>>;

/// The calls in flight of one source, by key.
struct Coalescer<K, V, E> {
    calls: Arc<Mutex<Calls<K, V, E>>>,
}

struct Calls<K, V, E> {
    /// The id of the next call started; ids tell a call's entry from a newer one for its key.
    next_id: u64,
    by_key: HashMap<K, Entry<V, E>>,
}

/// A call in flight. Only the waiters hold it strongly, so it is dropped when they have all
/// gone, and a dead entry is one that a new caller replaces.
struct Entry<V, E> {
    id: u64,
    call: WeakShared<BoxFuture<'static, Result<V, Ended<E>>>>,
}

impl<K, V, E> Default for Coalescer<K, V, E> {
    fn default() -> Self {
        Self { calls: Arc::new(Mutex::new(Calls { next_id: 0, by_key: HashMap::new() })) }
    }
}

impl<K, V, E> Coalescer<K, V, E>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// The call in flight for `key`, or a new one made with `call`, registered under `key`.
    fn join<C, Fut>(&self, key: K, call: C) -> Call<V, E>
    where
        C: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let mut calls = lock(&self.calls);
        // Upgrading fails once every waiter has gone (or the call ended and was forgotten),
        // so a caller never joins an abandoned call.
        if let Some(joined) = calls.by_key.get(&key).and_then(|entry| entry.call.upgrade()) {
            return joined;
        }
        let id = calls.next_id;
        calls.next_id = calls.next_id.wrapping_add(1);
        let forget = Forget { calls: Arc::clone(&self.calls), key: key.clone(), id };
        let future = async move {
            let ended = match AssertUnwindSafe(async move { call().await }).catch_unwind().await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) => Err(Ended::Failed(Arc::new(error))),
                Err(panic) => Err(Ended::Panicked(crate::panic_message(&*panic))),
            };
            // Forgotten before any waiter sees the outcome, so a later caller starts afresh.
            drop(forget);
            ended
        };
        let started = future.in_current_span().boxed().shared();
        if let Some(call) = started.downgrade() {
            calls.by_key.insert(key, Entry { id, call });
        }
        started
    }
}

/// Removes a call's entry when the call ends or is dropped, unless a newer call has replaced
/// it already.
struct Forget<K: Hash + Eq, V, E> {
    calls: Arc<Mutex<Calls<K, V, E>>>,
    key: K,
    id: u64,
}

impl<K: Hash + Eq, V, E> Drop for Forget<K, V, E> {
    fn drop(&mut self) {
        let mut calls = lock(&self.calls);
        if calls.by_key.get(&self.key).is_some_and(|entry| entry.id == self.id) {
            calls.by_key.remove(&self.key);
        }
    }
}

/// Locks the calls, ignoring poisoning: the map is never left half-updated by a panic (only a
/// panicking `Hash` or `Eq` could unwind while it is locked).
fn lock<K, V, E>(calls: &Mutex<Calls<K, V, E>>) -> MutexGuard<'_, Calls<K, V, E>> {
    calls.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Test = Coalescer<&'static str, u32, std::io::Error>;

    fn entry(coalescer: &Test, key: &'static str) -> Option<u64> {
        lock(&coalescer.calls).by_key.get(key).map(|entry| entry.id)
    }

    #[test]
    fn a_stale_call_does_not_forget_the_newer_call_for_its_key() {
        let coalescer = Test::default();
        let first = coalescer.join("key", || async { Ok(1) });
        assert_eq!(entry(&coalescer, "key"), Some(0));
        // As when another thread replaces the entry of an abandoned call while that call is
        // still being dropped.
        let second = coalescer.join("other", || async { Ok(2) });
        lock(&coalescer.calls).by_key.insert("key", Entry { id: 1, call: second.downgrade().unwrap() });
        drop(first);
        assert_eq!(entry(&coalescer, "key"), Some(1), "the newer call must stay registered");
        drop(second);
        // The entry under "key" is now dead: the next caller replaces it with a fresh call.
        let third = coalescer.join("key", || async { Ok(3) });
        assert_eq!(entry(&coalescer, "key"), Some(2));
        drop(third);
        assert!(lock(&coalescer.calls).by_key.is_empty());
    }
}
