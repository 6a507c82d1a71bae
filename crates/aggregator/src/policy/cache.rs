//! [`Cache`]: a fresh value answers without calling the source, and a stale one answers when
//! the source fails (`stale_if_error`), from a bounded local tier and, with the feature
//! `redis`, a Redis tier that replicas share.

use std::any::Any;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use muster_core::muster_options::OptionError;
use muster_core::{Classify, Fetcher, async_trait};
use tokio::time::Instant;

use super::Policy;
use crate::call::{Event, report};

#[cfg(feature = "redis")]
pub(crate) mod redis;

/// How long before the deadline a source that has a stale value to fall back on is given up,
/// so that the stale value answers before the deadline fails the aggregation.
const DEFAULT_MARGIN: Duration = Duration::from_millis(5);

/// The longest time to live given to the local tier (moka's limit is 1,000 years).
const MAX_TIME_TO_LIVE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The default capacity of the local tier, in entries.
const DEFAULT_CAPACITY: u64 = 10_000;

/// Caches a source's values by a key **you write**, from the request: a fresh value (younger
/// than [`ttl`](Self::ttl)) answers without calling the source; an older one, within
/// [`stale_if_error`](Self::stale_if_error), answers when the source fails.
///
/// # The key, and why you must write it
///
/// `Cache::new(|request: &Req| key)` takes a function of the request, and there is no default:
/// the key must hold everything the source's answer depends on, **the caller's identity
/// first**. A key without the user (`|r: &Req| r.account_id` for a source that answers what
/// *the signed-in user* may see of that account) serves one user's cached data to another:
/// the first request for account 7 fills the cache with what Alice may see, and Bob's request
/// for account 7 gets it. Put the identity in the key, e.g. `|r: &Req| (r.user.clone(),
/// r.account_id)`. The same rule holds for [`Coalesce::by`](crate::policy::Coalesce::by).
///
/// # What answers
///
/// - **Fresh** (age `< ttl`): the cached value, without calling the source; the report notes
///   `cache hit`.
/// - **Stale** (`ttl <= age < ttl + stale_if_error`): the source is called; if it fails *for
///   any reason* (an error of any kind: `status`, `connect`, its own `timeout`,
///   `circuit_open`, ...) the stale value answers instead of the error. The report marks the
///   source `stale (age 94s)` and sets [`SourceReport::stale`](crate::report::SourceReport::stale);
///   the axum body lists it under `"stale"`.
/// - **At the deadline**: the global deadline cancels a source by dropping it, after which
///   nothing can answer. So when a stale value is at hand, the cache gives the source until
///   the current [`deadline()`](crate::deadline) minus a [margin](Self::deadline_margin)
///   (5 ms by default), and answers stale then. Without a stale value the source keeps the
///   whole budget.
/// - **Nothing usable**: the source's result, unchanged. A success is stored.
///
/// Panics are not caught: a source that panics is reported as panicked.
///
/// # The local tier
///
/// A bounded in-memory cache ([moka](https://docs.rs/moka)): at most
/// [`capacity`](Self::capacity) entries (10,000 by default), or with
/// [`max_bytes`](Self::max_bytes) at most that many bytes of values as a function of yours
/// counts them; the least useful go first, and each is evicted `ttl + stale_if_error` after it
/// was stored. Values are cloned out of it, so the
/// source's output must be `Clone` (wrap a large one in an `Arc`). Freshness is measured on
/// tokio's clock, so tests can run on paused time.
///
/// With the feature `redis`, [`redis`](Self::redis) adds a shared tier behind it
/// ([`RedisTier`](crate::policy::RedisTier)).
///
/// # Bad input
///
/// A zero `ttl` is allowed: every call goes to the source and values are kept only to answer
/// stale. A zero `ttl` *and* a zero `stale_if_error` (the defaults) keep nothing, and a zero
/// capacity stores nothing: the aggregator's builder refuses both
/// ([`OptionError::ZeroCache`], [`OptionError::ZeroCapacity`]).
///
/// # Where it goes
///
/// Outside the retry and the breaker, inside [`Optional`](crate::Optional) /
/// [`Fallback`](crate::Fallback): `(Fallback(v), Cache::new(key), Breaker, Retry::attempts(3),
/// Timeout(d))`. A hit then makes no attempt at all; a stale value stands in for the *final*
/// failure (after every retry, or an open circuit) rather than for the first attempt's; and a
/// fallback only answers when there is not even a stale value.
///
/// ```
/// use std::time::Duration;
/// use muster::policy::Cache;
/// use muster::{Aggregator, Retry, Timeout, fetcher_fn};
///
/// #[derive(Clone, PartialEq, Eq, Hash)]
/// struct Request {
///     user: String,
///     account: u64,
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let balance = fetcher_fn(|request: &Request| {
///     let account = request.account;
///     async move { Ok::<_, std::io::Error>(account * 100) }
/// });
/// // The user is part of the key: never one user's balance for another.
/// let cache = Cache::new(|request: &Request| (request.user.clone(), request.account))
///     .ttl(Duration::from_secs(5))
///     .stale_if_error(Duration::from_secs(300));
/// let aggregator = Aggregator::builder()
///     .source_with("balance", balance, (cache, Retry::attempts(2), Timeout(Duration::from_millis(300))))
///     .build()?;
/// let request = Request { user: "alice".into(), account: 7 };
/// let (balance,) = aggregator.aggregate(&request).await?.outputs;
/// assert_eq!(balance, 700);
/// # Ok(()) }
/// ```
#[must_use = "a policy does nothing until it wraps a source"]
#[derive(Clone)]
pub struct Cache<K, T = LocalOnly, W = Entries> {
    key: K,
    ttl: Duration,
    stale_if_error: Duration,
    /// In entries, or in what `weigher` counts.
    capacity: u64,
    margin: Duration,
    tier: T,
    weigher: W,
}

/// How the local tier of a [`Cache`] counts its capacity: [`Entries`] (the default) or
/// [`Bytes`] ([`Cache::max_bytes`]).
pub trait Weigher<V>: Clone + Send + Sync + 'static {
    /// What `value` counts against the capacity.
    fn weigh(&self, value: &V) -> u32;
}

/// Each value counts one against the capacity: [`Cache::capacity`] is in entries.
#[derive(Clone, Copy, Debug, Default)]
pub struct Entries;

impl<V> Weigher<V> for Entries {
    fn weigh(&self, _: &V) -> u32 {
        1
    }
}

/// Each value counts its size in bytes, as the function given to [`Cache::max_bytes`] tells.
pub struct Bytes<G>(Arc<G>);

impl<G> Clone for Bytes<G> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<G> fmt::Debug for Bytes<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Bytes")
    }
}

impl<V, G: Fn(&V) -> usize + Send + Sync + 'static> Weigher<V> for Bytes<G> {
    fn weigh(&self, value: &V) -> u32 {
        // A value of 4 GiB or more counts as 4 GiB: it still goes first when space is short.
        u32::try_from((self.0)(value)).unwrap_or(u32::MAX)
    }
}

/// The tier of a [`Cache`] without a shared tier: the local one only.
#[derive(Clone, Copy, Debug, Default)]
pub struct LocalOnly;

impl<K> Cache<K> {
    /// A cache keyed by `key(request)`: the key must hold the caller's identity and everything
    /// else the answer depends on (see [why](Cache#the-key-and-why-you-must-write-it)). Set a
    /// [`ttl`](Self::ttl), a [`stale_if_error`](Self::stale_if_error), or both.
    pub fn new(key: K) -> Self {
        Self {
            key,
            ttl: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            capacity: DEFAULT_CAPACITY,
            margin: DEFAULT_MARGIN,
            tier: LocalOnly,
            weigher: Entries,
        }
    }
}

impl<K, T> Cache<K, T> {
    /// Bounds the local tier by the bytes of its values rather than by their number: at most
    /// `bytes`, each value counting `size(value)` (e.g. `|body: &String| body.len()`). The
    /// function's argument is the source's output, so a wrong type does not compile.
    ///
    /// ```
    /// use muster::policy::Cache;
    /// use std::time::Duration;
    ///
    /// // At most 64 MiB of bodies, however many users.
    /// let cache = Cache::new(|user: &u64| *user)
    ///     .ttl(Duration::from_secs(5))
    ///     .max_bytes(64 << 20, |body: &String| body.len());
    /// # let _ = cache;
    /// ```
    pub fn max_bytes<V, G>(self, bytes: u64, size: G) -> Cache<K, T, Bytes<G>>
    where
        G: Fn(&V) -> usize + Send + Sync + 'static,
    {
        let Self { key, ttl, stale_if_error, capacity: _, margin, tier, weigher: Entries } = self;
        Cache { key, ttl, stale_if_error, capacity: bytes, margin, tier, weigher: Bytes(Arc::new(size)) }
    }

    /// The most entries the local tier holds (10,000 by default).
    pub fn capacity(mut self, entries: u64) -> Self {
        self.capacity = entries;
        self
    }
}

impl<K, T, W> Cache<K, T, W> {
    /// How long a stored value answers without calling the source; zero: never (every call
    /// goes to the source, and values only answer stale).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long past its `ttl` a stored value still answers when the source fails; zero (the
    /// default): never.
    pub fn stale_if_error(mut self, stale_if_error: Duration) -> Self {
        self.stale_if_error = stale_if_error;
        self
    }

    /// How long before the [`deadline()`](crate::deadline) the source is given up when a stale
    /// value can answer instead (5 ms by default): enough for the answer to reach the
    /// aggregation before its deadline does.
    pub fn deadline_margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// Adds a shared tier behind the local one: see [`RedisTier`](crate::policy::RedisTier).
    /// The source's output and the key must then be `serde` values.
    #[cfg(feature = "redis")]
    pub fn redis(self, tier: crate::policy::RedisTier) -> Cache<K, crate::policy::RedisTier, W> {
        let Self { key, ttl, stale_if_error, capacity, margin, tier: _, weigher } = self;
        Cache { key, ttl, stale_if_error, capacity, margin, tier, weigher }
    }

    fn validate(&self) -> Result<(), OptionError> {
        if self.ttl.is_zero() && self.stale_if_error.is_zero() {
            return Err(OptionError::ZeroCache);
        }
        if self.capacity == 0 {
            return Err(OptionError::ZeroCapacity);
        }
        Ok(())
    }
}

impl<K, T: fmt::Debug, W: fmt::Debug> fmt::Debug for Cache<K, T, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("ttl", &self.ttl)
            .field("stale_if_error", &self.stale_if_error)
            .field("capacity", &self.capacity)
            .field("margin", &self.margin)
            .field("tier", &self.tier)
            .field("weigher", &self.weigher)
            .finish_non_exhaustive()
    }
}

impl<F, K, T, W> Policy<F> for Cache<K, T, W> {
    type Fetcher = CacheFetcher<F, K, T, W>;

    fn wrap(self, inner: F) -> CacheFetcher<F, K, T, W> {
        CacheFetcher { inner, cache: self, local: OnceLock::new() }
    }

    fn check(&self) -> Result<Duration, OptionError> {
        self.validate().map(|()| Duration::ZERO)
    }
}

/// A fetcher answering from a cache when it can; see [`Cache`]. Its error is the wrapped
/// fetcher's, unchanged: a stale value answers instead of it, or it passes through.
pub struct CacheFetcher<F, K, T = LocalOnly, W = Entries> {
    inner: F,
    cache: Cache<K, T, W>,
    /// The local tier: a `moka::sync::Cache` of the key and value types, made on first use
    /// (the types are only known then).
    local: OnceLock<Box<dyn Any + Send + Sync>>,
}

impl<F, K, T: fmt::Debug, W: fmt::Debug> fmt::Debug for CacheFetcher<F, K, T, W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CacheFetcher").field("cache", &self.cache).finish_non_exhaustive()
    }
}

/// A value in the local tier, with when it was stored (on tokio's clock).
struct Stored<V> {
    value: V,
    at: Instant,
}

type Local<Key, V> = moka::sync::Cache<Key, Arc<Stored<V>>>;

/// A tier behind the local one: how the fetch reads and writes it.
pub(crate) trait SharedTier<Key, V>: Send + Sync {
    /// The value stored under `key` and its age, if the tier answers in time: at the latest
    /// `margin` before the deadline, so that the source still has a chance.
    fn read(&self, key: &Key, margin: Duration) -> impl Future<Output = Option<(V, Duration)>> + Send;

    /// Stores `value` under `key` for `keep`, without delaying the caller.
    fn write(&self, key: &Key, value: &V, keep: Duration);
}

impl<Key: Sync, V: Send> SharedTier<Key, V> for LocalOnly {
    async fn read(&self, _: &Key, _: Duration) -> Option<(V, Duration)> {
        None
    }

    fn write(&self, _: &Key, _: &V, _: Duration) {}
}

impl<F, K, T, W> CacheFetcher<F, K, T, W> {
    /// The local tier, made on first use; `None` only if one fetcher serves requests of two
    /// key or value types, whose second is then not cached.
    fn local<Key, V>(&self) -> Option<&Local<Key, V>>
    where
        Key: Hash + Eq + Send + Sync + 'static,
        V: Send + Sync + 'static,
        W: Weigher<V>,
    {
        let keep = self.cache.ttl.saturating_add(self.cache.stale_if_error);
        let local = self.local.get_or_init(|| {
            let weigher = self.cache.weigher.clone();
            let mut builder = moka::sync::Cache::builder()
                .max_capacity(self.cache.capacity)
                .weigher(move |_: &Key, stored: &Arc<Stored<V>>| weigher.weigh(&stored.value));
            if !keep.is_zero() {
                // moka refuses (panics on) a time to live over 1,000 years: past that a value
                // is kept as long as the capacity allows, and its age still decides.
                builder = builder.time_to_live(keep.min(MAX_TIME_TO_LIVE));
            }
            Box::new(builder.build() as Local<Key, V>)
        });
        local.downcast_ref()
    }

    /// The fetch, with the shared tier `shared`.
    async fn run<Req, Key, S>(&self, request: &Req, shared: &S) -> Result<F::Output, F::Error>
    where
        Req: ?Sized + Sync,
        F: Fetcher<Req>,
        F::Error: Classify,
        F::Output: Clone + Send + Sync + 'static,
        K: Fn(&Req) -> Key + Send + Sync,
        Key: Hash + Eq + Send + Sync + 'static,
        S: SharedTier<Key, F::Output>,
        W: Weigher<F::Output>,
    {
        let key = (self.cache.key)(request);
        let Some(local) = self.local::<Key, F::Output>() else {
            return self.inner.fetch(request).await;
        };
        let (ttl, keep) = (self.cache.ttl, self.cache.ttl.saturating_add(self.cache.stale_if_error));
        let now = Instant::now();
        let mut stale = None;
        if let Some(stored) = local.get(&key) {
            let age = now.saturating_duration_since(stored.at);
            if age < ttl {
                report(Event::Note("cache hit"));
                return Ok(stored.value.clone());
            }
            if age < keep {
                stale = Some((stored.value.clone(), stored.at));
            }
        }
        if let Some((value, age)) = shared.read(&key, self.cache.margin).await {
            // The shared tier's clock is the wall clock: its age is carried over to ours.
            let at = now.checked_sub(age).unwrap_or(now);
            if age < ttl {
                report(Event::Note("cache hit (shared tier)"));
                local.insert(key, Arc::new(Stored { value: value.clone(), at }));
                return Ok(value);
            }
            if age < keep && stale.as_ref().is_none_or(|(_, stored)| at > *stored) {
                stale = Some((value, at));
            }
        }
        let Some((value, at)) = stale else {
            let result = self.inner.fetch(request).await;
            if let Ok(value) = &result {
                self.store(local, shared, key, value, keep);
            }
            return result;
        };
        let fetch = self.inner.fetch(request);
        let result = match crate::deadline() {
            Some(deadline) => {
                let give_up = deadline.checked_sub(self.cache.margin).unwrap_or(deadline);
                tokio::select! {
                    biased;
                    result = fetch => Some(result),
                    () = tokio::time::sleep_until(give_up) => None,
                }
            }
            None => Some(fetch.await),
        };
        match result {
            Some(Ok(fresh)) => {
                self.store(local, shared, key, &fresh, keep);
                Ok(fresh)
            }
            Some(Err(error)) => {
                tracing::debug!(kind = %error.kind(), "source failed: answering a stale value");
                report(Event::Stale { age: Instant::now().saturating_duration_since(at) });
                Ok(value)
            }
            None => {
                tracing::debug!("deadline near: answering a stale value");
                report(Event::Stale { age: Instant::now().saturating_duration_since(at) });
                Ok(value)
            }
        }
    }

    fn store<Key, V, S>(&self, local: &Local<Key, V>, shared: &S, key: Key, value: &V, keep: Duration)
    where
        Key: Hash + Eq + Send + Sync + 'static,
        V: Clone + Send + Sync + 'static,
        S: SharedTier<Key, V>,
    {
        shared.write(&key, value, keep);
        local.insert(key, Arc::new(Stored { value: value.clone(), at: Instant::now() }));
    }
}

#[async_trait]
impl<Req, F, K, Key, W> Fetcher<Req> for CacheFetcher<F, K, LocalOnly, W>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
    F::Error: Classify,
    F::Output: Clone + Send + Sync + 'static,
    K: Fn(&Req) -> Key + Send + Sync,
    Key: Hash + Eq + Send + Sync + 'static,
    W: Weigher<F::Output>,
{
    type Output = F::Output;
    type Error = F::Error;

    async fn fetch(&self, request: &Req) -> Result<F::Output, F::Error> {
        self.run(request, &LocalOnly).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_that_keeps_nothing_is_refused() {
        let key = |request: &u64| *request;
        assert_eq!(Policy::<()>::check(&Cache::new(key)), Err(OptionError::ZeroCache));
        let ttl_only = Cache::new(key).ttl(Duration::from_secs(1));
        assert_eq!(Policy::<()>::check(&ttl_only), Ok(Duration::ZERO));
        let stale_only = Cache::new(key).stale_if_error(Duration::from_secs(1));
        assert_eq!(Policy::<()>::check(&stale_only), Ok(Duration::ZERO), "a zero ttl is documented: stale only");
        let empty = Cache::new(key).ttl(Duration::from_secs(1)).capacity(0);
        assert_eq!(Policy::<()>::check(&empty), Err(OptionError::ZeroCapacity));
    }

    #[tokio::test]
    async fn a_ttl_past_what_moka_accepts_does_not_panic() {
        let fetcher = fetcher(|request: &u64| *request);
        let forever =
            Cache::new(|request: &u64| *request).ttl(Duration::MAX).stale_if_error(Duration::MAX).wrap(fetcher);
        assert_eq!(forever.fetch(&7).await.ok(), Some(7));
        assert_eq!(forever.fetch(&7).await.ok(), Some(7));
    }

    #[tokio::test]
    async fn a_byte_bound_holds_at_most_that_many_bytes_of_values() {
        // Values of 100 bytes under a bound of 1,000 bytes: at most 10 stay, however many go in.
        let body = crate::fetcher_fn(|request: &u64| {
            let body = format!("{request:0>100}");
            async move { Ok::<_, std::io::Error>(body) }
        });
        let cache = Cache::new(|request: &u64| *request)
            .ttl(Duration::from_secs(60))
            .max_bytes(1_000, |body: &String| body.len())
            .wrap(body);
        for request in 0..50 {
            assert_eq!(cache.fetch(&request).await.map(|body| body.len()).ok(), Some(100));
        }
        let local = cache.local::<u64, String>().map(|local| {
            local.run_pending_tasks();
            (local.weighted_size(), local.entry_count())
        });
        let (bytes, entries) = local.unwrap_or_default();
        assert!(bytes <= 1_000 && entries <= 10, "{bytes} bytes in {entries} entries");
        assert!(entries > 0, "the bound keeps what fits");
        // Counted in entries, the same 50 values all stay.
        let by_entries = Cache::new(|request: &u64| *request).ttl(Duration::from_secs(60)).capacity(1_000).wrap(
            crate::fetcher_fn(|request: &u64| {
                let body = format!("{request:0>100}");
                async move { Ok::<_, std::io::Error>(body) }
            }),
        );
        for request in 0..50 {
            let _ = by_entries.fetch(&request).await;
        }
        let entries = by_entries.local::<u64, String>().map(|local| {
            local.run_pending_tasks();
            local.entry_count()
        });
        assert_eq!(entries, Some(50));
    }

    fn fetcher(answer: fn(&u64) -> u64) -> impl Fetcher<u64, Output = u64, Error = std::io::Error> {
        crate::fetcher_fn(move |request: &u64| {
            let value = answer(request);
            async move { Ok(value) }
        })
    }
}
