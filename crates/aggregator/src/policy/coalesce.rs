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
use muster_core::{CancelToken, Cause, Classify, ErrorKind, Fetcher, async_trait};
use tokio::time::Instant;
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
/// - **A token of its own**: the call runs under a [`CancelToken`](crate::cancel::CancelToken) of its
///   own, which is what [`cancellation()`](crate::cancellation) returns inside it (and what a
///   nested aggregator or a completion policy inside it takes as its parent), never the token
///   of whichever waiter happens to poll it. One waiter's aggregation failing never cancels it;
///   when the last waiter leaves, the token is cancelled with that waiter's cause (its
///   aggregation's failure, deadline or caller; [`Cause::Dropped`](crate::cancel::Cause::Dropped) for a
///   fetch simply dropped, e.g. by its own timeout), and then the call is dropped, so its drop
///   guards read that cause.
/// - **The latest deadline**: inside the call, [`deadline()`](crate::deadline) is the latest
///   deadline of the waiters still waiting at that moment (none if one of them has none): a
///   waiter with a later deadline is never failed by an earlier waiter's, which that waiter's
///   own aggregation enforces for it alone. [`context()`](crate::context) is the context of the
///   fetch that started the call (whose request it makes), and the call runs in its span.
/// - **No inherited cancellation**: a fetch arriving after every earlier waiter has left starts
///   a fresh call; it never sees the abandoned one.
/// - **Panics**: a panic in the shared call is a panic in every waiter, with the same message
///   (so each aggregation reports its source as panicked); the coalescer stays usable.
/// - **No cache**: the call is forgotten the moment it ends.
/// - **Reported as shared**: a source whose result came from a call that more than one fetch
///   waited on reports [`SourceReport::shared`](crate::report::SourceReport::shared) (the number of
///   waiters; `shared by N` in the waterfall).
///
/// No task is spawned: the shared call is polled by its waiters. The wrapped fetcher is shared
/// with the call (it must be `'static`), and so is a clone of the request that started it
/// (`Clone + 'static`).
///
/// # The key, and the caller's identity
///
/// Plain `Coalesce` keys calls by the whole request (`Hash + Eq`), so two requests share a
/// call only if they are equal, identity included. [`Coalesce::by`] keys them by a function
/// of the request that you write, and then **the caller's identity must be part of the key**:
/// a key of the account alone (`Coalesce::by(|r: &Req| r.account_id)`) lets Bob join the call
/// Alice started for account 7 and receive what *Alice* may see. Key by everything the answer
/// depends on: `Coalesce::by(|r: &Req| (r.user.clone(), r.account_id))`. The same rule holds
/// for a [`Cache`](crate::policy::Cache)'s key (feature `cache`).
///
/// ```
/// use std::sync::Arc;
/// use std::sync::atomic::{AtomicUsize, Ordering};
/// use std::time::Duration;
/// use muster::{Aggregator, policy::Coalesce, fetcher_fn};
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

impl Coalesce {
    /// Coalescing keyed by `key(request)` rather than by the whole request: fetches whose
    /// requests give equal keys share one call (made with the request of the fetch that
    /// started it). The key must hold the caller's identity and everything else the answer
    /// depends on; see [why](Coalesce#the-key-and-the-callers-identity).
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::time::Duration;
    /// use muster::{Aggregator, policy::Coalesce, fetcher_fn};
    ///
    /// # #[allow(dead_code)] // the request id is the field the key leaves out
    /// #[derive(Clone)]
    /// struct Request {
    ///     user: String,
    ///     account: u64,
    ///     request_id: u64,
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let calls = Arc::new(AtomicUsize::new(0));
    /// let balance = {
    ///     let calls = Arc::clone(&calls);
    ///     fetcher_fn(move |request: &Request| {
    ///         calls.fetch_add(1, Ordering::SeqCst);
    ///         let answer = format!("{}'s account {}", request.user, request.account);
    ///         async move {
    ///             tokio::time::sleep(Duration::from_millis(20)).await;
    ///             Ok::<_, std::io::Error>(answer)
    ///         }
    ///     })
    /// };
    /// // Requests differing only in their request id share a call; two users never do.
    /// let coalesce = Coalesce::by(|request: &Request| (request.user.clone(), request.account));
    /// let aggregator = Aggregator::builder().source_with("balance", balance, coalesce).build()?;
    /// let request = |user: &str, request_id| Request { user: user.into(), account: 7, request_id };
    /// let (a, b, c) = (request("alice", 1), request("alice", 2), request("bob", 3));
    /// let (a, b, c) = tokio::join!(aggregator.aggregate(&a), aggregator.aggregate(&b), aggregator.aggregate(&c));
    /// assert_eq!((a?.outputs.0, b?.outputs.0), ("alice's account 7".into(), "alice's account 7".into()));
    /// assert_eq!(c?.outputs.0, "bob's account 7");
    /// assert_eq!(calls.load(Ordering::SeqCst), 2, "one call for alice's two requests, one for bob's");
    /// # Ok(()) }
    /// ```
    pub fn by<K>(key: K) -> CoalesceBy<K> {
        CoalesceBy(key)
    }
}

/// [`Coalesce`] keyed by a function of the request; made by [`Coalesce::by`].
#[derive(Clone, Copy)]
#[must_use = "a policy does nothing until it wraps a source"]
pub struct CoalesceBy<K>(K);

impl<K> fmt::Debug for CoalesceBy<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CoalesceBy").finish_non_exhaustive()
    }
}

impl<F> Policy<F> for Coalesce {
    type Fetcher = CoalesceFetcher<F>;

    fn wrap(self, inner: F) -> CoalesceFetcher<F> {
        CoalesceFetcher { inner: Arc::new(inner), key: self, calls: OnceLock::new() }
    }
}

impl<F, K> Policy<F> for CoalesceBy<K> {
    type Fetcher = CoalesceFetcher<F, CoalesceBy<K>>;

    fn wrap(self, inner: F) -> CoalesceFetcher<F, CoalesceBy<K>> {
        CoalesceFetcher { inner: Arc::new(inner), key: self, calls: OnceLock::new() }
    }
}

/// A fetcher whose concurrent fetches for an equal key share one call; see [`Coalesce`]. The
/// key is the request ([`Coalesce`]) or a function of it ([`CoalesceBy`]). The wrapped
/// fetcher's error needs `Classify + Error + Send + Sync + 'static`: it is shared by the
/// waiters in a [`CoalesceError`], which passes its kind on.
pub struct CoalesceFetcher<F, K = Coalesce> {
    inner: Arc<F>,
    /// How the key is made: [`Coalesce`] (the request) or [`CoalesceBy`].
    key: K,
    /// The calls in flight: a `Coalescer` of the key, output and error types, made on first
    /// use (the types are only known then).
    calls: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl<F, K> fmt::Debug for CoalesceFetcher<F, K> {
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
    fn status(&self) -> Option<u16> {
        self.0.status()
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
        self.fetch_keyed(request, request.clone()).await
    }
}

#[async_trait]
impl<Req, F, K, Key> Fetcher<Req> for CoalesceFetcher<F, CoalesceBy<K>>
where
    Req: Clone + Send + Sync + 'static,
    F: Fetcher<Req> + 'static,
    F::Output: Clone + Sync + 'static,
    F::Error: std::error::Error + Send + Sync + 'static,
    K: Fn(&Req) -> Key + Send + Sync,
    Key: Hash + Eq + Clone + Send + Sync + 'static,
{
    type Output = F::Output;
    type Error = CoalesceError<F::Error>;

    async fn fetch(&self, request: &Req) -> Result<F::Output, Self::Error> {
        self.fetch_keyed(request, (self.key.0)(request)).await
    }
}

impl<F, K> CoalesceFetcher<F, K> {
    /// Joins the call in flight for `key`, or starts one for `request`.
    async fn fetch_keyed<Req, Key>(&self, request: &Req, key: Key) -> Result<F::Output, CoalesceError<F::Error>>
    where
        Req: Clone + Send + Sync + 'static,
        Key: Hash + Eq + Clone + Send + Sync + 'static,
        F: Fetcher<Req> + 'static,
        F::Output: Clone + Sync + 'static,
        F::Error: std::error::Error + Send + Sync + 'static,
    {
        let calls = self.calls.get_or_init(|| Box::new(Coalescer::<Key, F::Output, F::Error>::default()));
        let Some(calls) = calls.downcast_ref::<Coalescer<Key, F::Output, F::Error>>() else {
            // Only if one fetcher serves requests of two types: those of the second type are
            // not coalesced.
            return self.inner.fetch(request).await.map_err(|error| CoalesceError(Arc::new(error)));
        };
        let (inner, owned) = (Arc::clone(&self.inner), request.clone());
        let (waiters, ended) = calls.join(key, move || async move { inner.fetch(&owned).await }).await;
        if waiters > 1 {
            crate::call::report(crate::report::Event::Shared { waiters });
        }
        match ended {
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

/// What a shared call gives every waiter: how many waiters it had in all, and its outcome.
type Outcome<V, E> = (usize, Result<V, Ended<E>>);

/// The shared call as every waiter holds it: panics caught, errors shared.
type Call<V, E> = Shared<BoxFuture<'static, Outcome<V, E>>>;

/// The calls in flight of one source, by key.
struct Coalescer<K, V, E> {
    calls: Arc<Mutex<Calls<K, V, E>>>,
}

struct Calls<K, V, E> {
    /// The id of the next call started; ids tell a call's entry from a newer one for its key.
    next_id: u64,
    by_key: HashMap<K, Entry<V, E>>,
}

/// A call in flight that a fetch may join: it has waiters and has not ended. Only the waiters
/// hold the call strongly, so it is dropped when they have all gone.
struct Entry<V, E> {
    id: u64,
    call: WeakShared<BoxFuture<'static, Outcome<V, E>>>,
    waiters: Arc<Mutex<Waiters>>,
}

/// The waiters of one call. Changed only with the calls' lock held too, so that a fetch never
/// joins a call whose last waiter is leaving.
#[derive(Default)]
struct Waiters {
    /// The id of the next waiter.
    next_id: u64,
    /// The waiters still waiting, each with its deadline.
    present: Vec<(u64, Option<Instant>)>,
    /// Every waiter that joined, those gone included.
    joined: usize,
    /// The call has its outcome: a waiter leaving now cancels nothing.
    ended: bool,
    /// The call's own token: what [`cancellation()`](crate::cancellation) is inside it.
    token: CancelToken,
}

impl Waiters {
    /// The latest deadline of the waiters still waiting, `None` if one of them has none (or
    /// none is left): the shared call's [`deadline()`](crate::deadline).
    fn latest(&self) -> Option<Instant> {
        self.present.iter().try_fold(None, |latest: Option<Instant>, (_, deadline)| {
            let deadline = (*deadline)?;
            Some(Some(latest.map_or(deadline, |latest| latest.max(deadline))))
        })?
    }

    fn join(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.present.push((id, muster_core::deadline()));
        self.joined += 1;
        id
    }
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
    /// Joins the call in flight for `key`, or starts a new one made with `call`, registered
    /// under `key`; the waiter leaves when dropped.
    ///
    /// A new call runs under a [`CancelToken`] of its own, cancelled only when its last waiter
    /// leaves (with that waiter's cause), under the latest deadline of its waiters, and in the
    /// span and [`context()`](muster_core::context) of the fetch that started it.
    fn join<C, Fut>(&self, key: K, call: C) -> Waiter<K, V, E>
    where
        C: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let mut calls = lock(&self.calls);
        // A call is joinable while it has waiters and no outcome: never an abandoned call.
        if let Some(entry) = calls.by_key.get(&key) {
            if let Some(joined) = entry.call.upgrade() {
                let mut waiters = lock_waiters(&entry.waiters);
                if !waiters.present.is_empty() && !waiters.ended {
                    let waiter = waiters.join();
                    let (id, state) = (entry.id, Arc::clone(&entry.waiters));
                    drop(waiters);
                    return Waiter { calls: Arc::clone(&self.calls), key, id, waiter, waiters: state, call: joined };
                }
            }
        }
        let id = calls.next_id;
        calls.next_id = calls.next_id.wrapping_add(1);
        let state = Arc::new(Mutex::new(Waiters::default()));
        let (waiter, token) = {
            let mut waiters = lock_waiters(&state);
            (waiters.join(), waiters.token.clone())
        };
        let mut forget = Forget { calls: Arc::clone(&self.calls), key: key.clone(), id, waiters: Arc::clone(&state) };
        let future = async move {
            let ended = match AssertUnwindSafe(async move { call().await }).catch_unwind().await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(error)) => Err(Ended::Failed(Arc::new(error))),
                Err(panic) => Err(Ended::Panicked(muster_core::panic_message(&*panic))),
            };
            // Forgotten before any waiter sees the outcome, so a later caller starts afresh;
            // the count of waiters is final from then on.
            (forget.end(), ended)
        };
        let latest = Arc::clone(&state);
        let future = muster_core::with_deadline_from(move || lock_waiters(&latest).latest(), future);
        let future = muster_core::with_cancellation(token.clone(), future);
        let started = match muster_core::context() {
            Some(context) => muster_core::with_context(context, future).in_current_span().boxed(),
            None => future.in_current_span().boxed(),
        }
        .shared();
        if let Some(call) = started.downgrade() {
            calls.by_key.insert(key.clone(), Entry { id, call, waiters: Arc::clone(&state) });
        }
        Waiter { calls: Arc::clone(&self.calls), key, id, waiter, waiters: state, call: started }
    }
}

/// A fetch waiting on a shared call: a future of the call's outcome. Dropped, it leaves: the
/// last waiter to leave before the call has its outcome cancels the call's token with its own
/// cause, and only then lets go of the call (which is dropped with its last hold), so that the
/// call's drop guards read that cause.
struct Waiter<K: Hash + Eq, V, E> {
    calls: Arc<Mutex<Calls<K, V, E>>>,
    key: K,
    /// The call's id.
    id: u64,
    /// This waiter's id among the call's.
    waiter: u64,
    waiters: Arc<Mutex<Waiters>>,
    call: Call<V, E>,
}

// Nothing is pinned: the call is a `Shared`, which is `Unpin`, and the key is never polled.
impl<K: Hash + Eq, V, E> Unpin for Waiter<K, V, E> {}

impl<K: Hash + Eq, V: Clone, E> Future for Waiter<K, V, E> {
    type Output = Outcome<V, E>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Outcome<V, E>> {
        std::pin::Pin::new(&mut self.call).poll(cx)
    }
}

impl<K: Hash + Eq, V, E> Drop for Waiter<K, V, E> {
    fn drop(&mut self) {
        let last = {
            let mut calls = lock(&self.calls);
            let mut waiters = lock_waiters(&self.waiters);
            waiters.present.retain(|(id, _)| *id != self.waiter);
            let last = waiters.present.is_empty() && !waiters.ended;
            if last && calls.by_key.get(&self.key).is_some_and(|entry| entry.id == self.id) {
                calls.by_key.remove(&self.key);
            }
            last
        };
        if last {
            // The waiter's own cause: its aggregation's failure, deadline or caller, or
            // `Dropped` when it was simply dropped (its own timeout, a select).
            let cause = muster_core::cancellation().and_then(|token| token.cause().cloned()).unwrap_or(Cause::Dropped);
            let token = lock_waiters(&self.waiters).token.clone();
            token.cancel_with(cause);
        }
    }
}

/// Removes a call's entry when the call ends or is dropped, unless a newer call has replaced
/// it already.
struct Forget<K: Hash + Eq, V, E> {
    calls: Arc<Mutex<Calls<K, V, E>>>,
    key: K,
    id: u64,
    waiters: Arc<Mutex<Waiters>>,
}

impl<K: Hash + Eq, V, E> Forget<K, V, E> {
    /// The call has its outcome: forgets it and returns how many waiters it had.
    fn end(&mut self) -> usize {
        let mut calls = lock(&self.calls);
        if calls.by_key.get(&self.key).is_some_and(|entry| entry.id == self.id) {
            calls.by_key.remove(&self.key);
        }
        let mut waiters = lock_waiters(&self.waiters);
        waiters.ended = true;
        waiters.joined
    }
}

impl<K: Hash + Eq, V, E> Drop for Forget<K, V, E> {
    fn drop(&mut self) {
        let mut calls = lock(&self.calls);
        if calls.by_key.get(&self.key).is_some_and(|entry| entry.id == self.id) {
            calls.by_key.remove(&self.key);
        }
    }
}

fn lock_waiters(waiters: &Mutex<Waiters>) -> MutexGuard<'_, Waiters> {
    waiters.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Locks the calls, ignoring poisoning: the map is never left half-updated by a panic (only a
/// panicking `Hash` or `Eq` could unwind while it is locked).
fn lock<K, V, E>(calls: &Mutex<Calls<K, V, E>>) -> MutexGuard<'_, Calls<K, V, E>> {
    calls.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
        let waiters = Arc::new(Mutex::new(Waiters::default()));
        lock_waiters(&waiters).join();
        let newer = Entry { id: 1, call: second.call.downgrade().unwrap(), waiters };
        lock(&coalescer.calls).by_key.insert("key", newer);
        drop(first);
        assert_eq!(entry(&coalescer, "key"), Some(1), "the newer call must stay registered");
        drop(second);
        // The entry under "key" is now dead: the next caller replaces it with a fresh call.
        let third = coalescer.join("key", || async { Ok(3) });
        assert_eq!(entry(&coalescer, "key"), Some(2));
        drop(third);
        assert!(lock(&coalescer.calls).by_key.is_empty());
    }

    #[test]
    fn the_shared_call_runs_under_the_latest_deadline_of_the_waiters_present() {
        let start = Instant::now();
        let mut waiters = Waiters {
            present: vec![(0, Some(start)), (1, Some(start + Duration::from_secs(2)))],
            ..Waiters::default()
        };
        assert_eq!(waiters.latest(), Some(start + Duration::from_secs(2)));
        waiters.present.push((2, None));
        assert_eq!(waiters.latest(), None, "a waiter without a deadline lifts it");
        waiters.present.clear();
        assert_eq!(waiters.latest(), None);
    }
}
