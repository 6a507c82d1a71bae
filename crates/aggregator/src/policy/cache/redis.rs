//! [`RedisTier`]: a [`Cache`](super::Cache) tier on Redis or Valkey, shared by replicas.

use std::fmt;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use muster_core::{Classify, Fetcher, async_trait};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CacheFetcher, SharedTier};

/// The operations whose failures are counted apart (`operation` of the failures' metric).
const READ: &str = "read";
const WRITE: &str = "write";

/// The default bound of a read.
const DEFAULT_READ_TIMEOUT: Duration = Duration::from_millis(20);
/// The default bound of a write, which runs in the background.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(1);
/// The default bound of the writes in flight at once.
const DEFAULT_WRITES_IN_FLIGHT: usize = 64;

/// A shared tier for a [`Cache`](crate::policy::Cache), on Redis or Valkey (feature `redis`):
/// several replicas of a service behind one load balancer share their last-known-good values,
/// so a replica that never saw a value can still answer it stale. Circuit breaker and budget
/// state stay local to each replica.
///
/// - **Reads** happen when the local tier has no fresh value, bounded by a short
///   [`read_timeout`](Self::read_timeout) (20 ms by default) and by the time left before the
///   [`deadline()`](crate::deadline) less the cache's
///   [`deadline_margin`](crate::policy::Cache::deadline_margin): a slow Redis never delays
///   the answer by more, and never eats the time a stale value needs to answer.
/// - **Writes** (after each success of the source) run in a spawned task, bounded in time and
///   in number ([`writes_in_flight`](Self::writes_in_flight), 64 by default; a write beyond
///   that is skipped): they never delay the answer. Each entry expires in Redis
///   `ttl + stale_if_error` after it was written.
/// - **Failures fail open**: a connection refused, an error reply, a timeout or an entry that
///   does not decode reads as a miss, so the source and the local tier answer. Each failure
///   is counted ([`failures`](Self::failures); with the feature `metrics`,
///   `muster_cache_redis_failures_total`, by `namespace` and `operation`: `read` or
///   `write`), and logged once per transition: one `warn` when
///   the tier starts failing, one `info` when it answers again.
/// - **Values** are stored as JSON with serde (`{"at": <unix ms>, "value": ...}`): the key
///   and the source's output must be `Serialize`, and the output `DeserializeOwned`.
/// - **Keys** are `<namespace>:<the key as JSON>`, or with [`hashed_keys`](Self::hashed_keys)
///   `<namespace>:<SHA-256 of it, in hex>` (for long keys, or keys that should not show user
///   ids in Redis). Give each cached source a namespace of its own (e.g.
///   `myapp:transactions`): two sources with one namespace and one key would read each
///   other's values.
///
/// Nothing connects when the tier is made: the connection is made on first use and remade
/// after a failure. An unreachable Redis at start is a `warn` and a miss, never a crash.
///
/// ```
/// use std::time::Duration;
/// use muster::policy::{Cache, RedisTier};
///
/// # fn main() -> Result<(), muster::policy::RedisTierError> {
/// let tier = RedisTier::new("redis://127.0.0.1:6379")?.namespace("dashboard:transactions").hashed_keys();
/// let cache = Cache::new(|user_id: &u64| *user_id)
///     .ttl(Duration::from_secs(5))
///     .stale_if_error(Duration::from_secs(600))
///     .redis(tier);
/// # let _ = cache;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use = "a tier does nothing until a cache uses it"]
pub struct RedisTier {
    namespace: String,
    hashed: bool,
    read_timeout: Duration,
    write_timeout: Duration,
    writes_in_flight: usize,
    state: Arc<State>,
}

/// What the clones of a tier share: the connection and the health.
struct State {
    url: String,
    client: redis::Client,
    manager: OnceLock<Result<ConnectionManager, String>>,
    healthy: AtomicBool,
    failures: AtomicU64,
    writes: AtomicUsize,
}

/// Why a [`RedisTier`] could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisTierError {
    /// The URL is not a Redis URL (`redis://host:port/db`, `rediss://...`,
    /// `redis+unix:///path`).
    #[error("invalid redis url `{url}`")]
    Url {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        #[source]
        source: redis::RedisError,
    },
}

impl RedisTier {
    /// A tier on the Redis server at `url`, namespace `muster`. Only parses the URL: nothing
    /// connects until the first read or write.
    ///
    /// # Errors
    ///
    /// [`RedisTierError::Url`] when `url` is not a Redis URL.
    pub fn new(url: &str) -> Result<Self, RedisTierError> {
        let client = redis::Client::open(url).map_err(|source| RedisTierError::Url { url: url.to_owned(), source })?;
        Ok(Self {
            namespace: "muster".to_owned(),
            hashed: false,
            read_timeout: DEFAULT_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            writes_in_flight: DEFAULT_WRITES_IN_FLIGHT,
            state: Arc::new(State {
                url: url.to_owned(),
                client,
                manager: OnceLock::new(),
                healthy: AtomicBool::new(true),
                failures: AtomicU64::new(0),
                writes: AtomicUsize::new(0),
            }),
        })
    }

    /// The prefix of every key: one per cached source (`muster` by default). A clone with
    /// another namespace shares the connection.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Stores each key as the SHA-256 of its JSON, in hex, after the namespace.
    pub fn hashed_keys(mut self) -> Self {
        self.hashed = true;
        self
    }

    /// The longest a read may take (20 ms by default), within the time left before the
    /// deadline; a slower read is a miss, counted as a failure.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// The longest a background write may take (1 s by default).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The most writes in flight at once (64 by default); a write beyond that is skipped.
    pub fn writes_in_flight(mut self, writes: usize) -> Self {
        self.writes_in_flight = writes;
        self
    }

    /// How many reads and writes failed (error, timeout, undecodable entry), over every clone
    /// of this tier.
    pub fn failures(&self) -> u64 {
        self.state.failures.load(Ordering::Relaxed)
    }

    /// Whether the last read or write succeeded (true before the first).
    pub fn is_healthy(&self) -> bool {
        self.state.healthy.load(Ordering::Relaxed)
    }

    /// Checks that Redis answers a `PING` within the read timeout, e.g. to log at start up;
    /// the tier works (failing open) either way.
    ///
    /// # Errors
    ///
    /// Why Redis did not answer, as text.
    pub async fn ping(&self) -> Result<(), String> {
        let mut connection = self.connection().map_err(str::to_owned)?;
        match tokio::time::timeout(self.read_timeout, redis::cmd("PING").query_async::<String>(&mut connection)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.read_timeout)),
        }
    }

    /// The connection, made on first use (inside the runtime).
    fn connection(&self) -> Result<ConnectionManager, &str> {
        let manager = self.state.manager.get_or_init(|| {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.read_timeout.max(Duration::from_millis(100))))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(200));
            ConnectionManager::new_lazy_with_config(self.state.client.clone(), config)
                .map_err(|error| error.to_string())
        });
        manager.as_ref().cloned().map_err(String::as_str)
    }

    /// The key in Redis; `operation` (`read`, `write`) counts the failure of one that does not
    /// serialize.
    fn key<Key: Serialize>(&self, key: &Key, operation: &'static str) -> Option<String> {
        let json = match serde_json::to_string(key) {
            Ok(json) => json,
            Err(error) => {
                self.failed(operation, &format!("the key does not serialize: {error}"));
                return None;
            }
        };
        if !self.hashed {
            return Some(format!("{}:{json}", self.namespace));
        }
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(json.as_bytes());
        let mut key = String::with_capacity(self.namespace.len() + 1 + 64);
        key.push_str(&self.namespace);
        key.push(':');
        for byte in digest {
            key.push_str(&format!("{byte:02x}"));
        }
        Some(key)
    }

    fn succeeded(&self) {
        if !self.state.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!(url = %self.state.url, "redis cache tier answers again");
        }
    }

    /// A read or write failed (`operation`: `read`, `write`): counted, and logged when the
    /// tier was healthy until now.
    fn failed(&self, operation: &'static str, error: &str) {
        self.state.failures.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        crate::metrics::redis_failure(&self.namespace, operation);
        if self.state.healthy.swap(false, Ordering::Relaxed) {
            tracing::warn!(url = %self.state.url, operation, error, "redis cache tier failing: answering from the source and the local tier");
        }
    }
}

impl fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTier")
            .field("namespace", &self.namespace)
            .field("hashed", &self.hashed)
            .field("read_timeout", &self.read_timeout)
            .field("healthy", &self.is_healthy())
            .field("failures", &self.failures())
            .finish_non_exhaustive()
    }
}

/// An entry as written.
#[derive(Serialize)]
struct Entry<'a, V> {
    /// When it was stored, in milliseconds since the Unix epoch.
    at: u64,
    value: &'a V,
}

/// An entry as read.
#[derive(serde::Deserialize)]
struct Read<V> {
    at: u64,
    value: V,
}

fn unix_millis() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

impl<Key, V> SharedTier<Key, V> for RedisTier
where
    Key: Serialize + Sync,
    V: Serialize + DeserializeOwned + Send + Sync,
{
    async fn read(&self, key: &Key, margin: Duration) -> Option<(V, Duration)> {
        let key = self.key(key, READ)?;
        let bound = match crate::call::remaining() {
            Some(left) => self.read_timeout.min(left.saturating_sub(margin)),
            None => self.read_timeout,
        };
        if bound.is_zero() {
            return None;
        }
        let mut connection = match self.connection() {
            Ok(connection) => connection,
            Err(error) => {
                self.failed(READ, error);
                return None;
            }
        };
        let mut get = redis::cmd("GET");
        get.arg(&key);
        let read = get.query_async::<Option<Vec<u8>>>(&mut connection);
        match tokio::time::timeout(bound, read).await {
            Ok(Ok(Some(bytes))) => match serde_json::from_slice::<Read<V>>(&bytes) {
                Ok(entry) => {
                    self.succeeded();
                    Some((entry.value, Duration::from_millis(unix_millis().saturating_sub(entry.at))))
                }
                Err(error) => {
                    self.failed(READ, &format!("the entry under `{key}` does not decode: {error}"));
                    None
                }
            },
            Ok(Ok(None)) => {
                self.succeeded();
                None
            }
            Ok(Err(error)) => {
                self.failed(READ, &error.to_string());
                None
            }
            Err(_) => {
                self.failed(READ, &format!("no answer within {bound:?}"));
                None
            }
        }
    }

    fn write(&self, key: &Key, value: &V, keep: Duration) {
        let Some(key) = self.key(key, WRITE) else { return };
        let bytes = match serde_json::to_vec(&Entry { at: unix_millis(), value }) {
            Ok(bytes) => bytes,
            Err(error) => {
                self.failed(WRITE, &format!("the value does not serialize: {error}"));
                return;
            }
        };
        // Outside a runtime (a cache used from a blocking context) nothing can run the write.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let state = &self.state;
        if state.writes.fetch_add(1, Ordering::Relaxed) >= self.writes_in_flight {
            state.writes.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!("redis cache tier: too many writes in flight, one skipped");
            return;
        }
        let mut connection = match self.connection() {
            Ok(connection) => connection,
            Err(error) => {
                state.writes.fetch_sub(1, Ordering::Relaxed);
                self.failed(WRITE, error);
                return;
            }
        };
        let tier = self.clone();
        let keep = u64::try_from(keep.as_millis()).unwrap_or(u64::MAX).max(1);
        runtime.spawn(async move {
            let mut set = redis::cmd("SET");
            set.arg(&key).arg(bytes).arg("PX").arg(keep);
            match tokio::time::timeout(tier.write_timeout, set.query_async::<()>(&mut connection)).await {
                Ok(Ok(())) => tier.succeeded(),
                Ok(Err(error)) => tier.failed(WRITE, &error.to_string()),
                Err(_) => tier.failed(WRITE, &format!("no answer within {:?}", tier.write_timeout)),
            }
            tier.state.writes.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

#[async_trait]
impl<Req, F, K, Key, W> Fetcher<Req> for CacheFetcher<F, K, RedisTier, W>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
    F::Error: Classify,
    F::Output: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
    K: Fn(&Req) -> Key + Send + Sync,
    Key: Hash + Eq + Serialize + Send + Sync + 'static,
    W: super::Weigher<F::Output>,
{
    type Output = F::Output;
    type Error = F::Error;

    async fn fetch(&self, request: &Req) -> Result<F::Output, F::Error> {
        self.run(request, &self.cache.tier).await
    }
}
