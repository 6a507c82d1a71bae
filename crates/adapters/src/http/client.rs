//! [`HttpClient`]: the pooled hyper client shared by fetchers, its pool limits, the bounded
//! DNS resolver, and the connection wrapper that tells a reused connection from a new one.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use ::http::{Extensions, Uri};
use bytes::Bytes;
use http_body_util::Full;
#[cfg(feature = "tls")]
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder, MaybeHttpsStream};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::error::HttpConfigError;

const DEFAULT_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_POOL_MAX_IDLE_PER_HOST: usize = 64;
const DEFAULT_DNS_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_DNS_CONCURRENCY: usize = 16;

/// The hyper client type behind [`HttpClient`].
pub(crate) type Inner = Client<Tracking, Full<Bytes>>;

/// A pooled HTTP/1.1 client for `http` and (with the `tls` feature) `https` URLs, shared by
/// [`HttpFetcher`](super::HttpFetcher)s.
///
/// Cloning is cheap and every clone shares one pool of keep-alive connections, so create one
/// client per process and hand it to every fetcher with
/// [`HttpFetcherBuilder::client`](super::HttpFetcherBuilder::client).
///
/// # TLS
///
/// With the `tls` feature, https uses rustls (with the *ring*
/// crypto provider, TLS 1.2 and 1.3) and trusts the Mozilla root certificates of
/// `webpki-roots`; `HttpClient::with_tls_config` (or `HttpClientBuilder::tls_config`) takes
/// your own rustls configuration (e.g. a private CA). Without it the client speaks plain
/// http only and no TLS code is compiled: an `https://` template is refused when its fetcher
/// is built ([`HttpConfigError::Template`]), and a URL that is not `http://` fails to connect.
///
/// # Limits
///
/// [`HttpClient::builder`] sets them; the defaults are:
///
/// | limit | default |
/// | --- | --- |
/// | idle keep-alive connections kept per host ([`pool_max_idle_per_host`](HttpClientBuilder::pool_max_idle_per_host)) | 64 |
/// | how long an idle connection is kept ([`pool_idle_timeout`](HttpClientBuilder::pool_idle_timeout)) | 30 s |
/// | DNS lookups running at once ([`dns_concurrency`](HttpClientBuilder::dns_concurrency)) | 16 |
/// | how long one lookup may take ([`dns_timeout`](HttpClientBuilder::dns_timeout)) | 5 s |
///
/// Connections past the idle cap are closed when their request ends, so a burst leaves at
/// most the cap open per host, and those close after the idle timeout.
///
/// # DNS
///
/// Host names are resolved with the system resolver (`getaddrinfo`, which honours
/// `/etc/hosts` and `nsswitch.conf`) on tokio's blocking pool, but never more than
/// [`dns_concurrency`](HttpClientBuilder::dns_concurrency) lookups at once per client: a
/// lookup waits for a slot, and fails as a connect error after
/// [`dns_timeout`](HttpClientBuilder::dns_timeout), counted from when it asked. `getaddrinfo`
/// cannot be cancelled, so a lookup that times out keeps its thread and its slot until the
/// system call returns; that is the point: a stalled DNS server holds at most that many
/// blocking threads, never one per abandoned request (tokio's pool stops at 512, and every
/// `spawn_blocking` in the process shares it). IP literals (`http://10.0.0.7:8080/...`)
/// are never looked up.
///
/// # Stale pooled connections
///
/// A backend may close an idle keep-alive connection just as the client picks it from the
/// pool. A request that fails on a *reused* connection before any byte of the response
/// arrived (hyper reports the connection closed, or reset, before a response) is sent once
/// more on a new connection if its method is idempotent (`GET`, `HEAD`, `PUT`, `DELETE`,
/// `OPTIONS`, `TRACE`); a request whose connection was new, or a `POST`, is not. A request
/// that could not even be written (the close was seen first) is always retried, as hyper-util
/// does ([`retry_canceled_requests`](hyper_util::client::legacy::Builder::retry_canceled_requests)).
///
/// Connections are opened on the tokio runtime of the fetch that needs them; use a client
/// within one runtime.
///
/// ```
/// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
/// use muster::http::{HttpClient, HttpFetcher};
///
/// # fn main() -> Result<(), muster_adapters::http::HttpConfigError> {
/// let client = HttpClient::new();
/// let profile = HttpFetcher::builder("https://profile.internal/v1/users/{id}").client(client.clone()).build()?;
/// let transactions =
///     HttpFetcher::builder("https://ledger.internal/v1/users/{id}/transactions").client(client).build()?;
/// # let _ = (profile, transactions);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct HttpClient {
    pub(crate) client: Inner,
    settings: Arc<Settings>,
}

#[derive(Debug, Clone, Copy)]
struct Settings {
    pool_max_idle_per_host: usize,
    pool_idle_timeout: Duration,
    dns_concurrency: usize,
    dns_timeout: Duration,
}

impl HttpClient {
    /// A client with the default limits; with the `tls` feature, https trusts the Mozilla root
    /// certificates (`webpki-roots`).
    pub fn new() -> Self {
        Self::builder().build_or_default()
    }

    /// A client using `config` for https connections, e.g. one that trusts a private CA or
    /// presents a client certificate, with the default limits. Its ALPN protocols are
    /// replaced by `http/1.1`.
    ///
    /// ```
    /// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
    /// use muster::http::HttpClient;
    ///
    /// let roots = rustls::RootCertStore::empty(); // add your CA's certificate with `roots.add(..)`
    /// // rustls' process-wide provider: the one its crate features name (muster enables
    /// // *ring*), or the one your program installed with `CryptoProvider::install_default`.
    /// let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    /// let client = HttpClient::with_tls_config(config);
    /// # let _ = client;
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn with_tls_config(config: rustls::ClientConfig) -> Self {
        Self::builder().tls_config(config).build_or_default()
    }

    /// Starts configuring a client's limits.
    ///
    /// ```
    /// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
    /// use std::time::Duration;
    /// use muster::http::HttpClient;
    ///
    /// # fn main() -> Result<(), muster_adapters::http::HttpConfigError> {
    /// let client = HttpClient::builder()
    ///     .pool_max_idle_per_host(8)
    ///     .pool_idle_timeout(Duration::from_secs(15))
    ///     .dns_concurrency(4)
    ///     .dns_timeout(Duration::from_secs(2))
    ///     .build()?;
    /// assert!(format!("{client:?}").contains("pool_max_idle_per_host: 8"));
    /// # Ok(()) }
    /// ```
    pub fn builder() -> HttpClientBuilder {
        HttpClientBuilder {
            #[cfg(feature = "tls")]
            tls: None,
            settings: Settings {
                pool_max_idle_per_host: DEFAULT_POOL_MAX_IDLE_PER_HOST,
                pool_idle_timeout: DEFAULT_POOL_IDLE_TIMEOUT,
                dns_concurrency: DEFAULT_DNS_CONCURRENCY,
                dns_timeout: DEFAULT_DNS_TIMEOUT,
            },
        }
    }
}

impl Default for HttpClient {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let settings = &*self.settings;
        f.debug_struct("HttpClient")
            .field("pool_max_idle_per_host", &settings.pool_max_idle_per_host)
            .field("pool_idle_timeout", &settings.pool_idle_timeout)
            .field("dns_concurrency", &settings.dns_concurrency)
            .field("dns_timeout", &settings.dns_timeout)
            .finish_non_exhaustive()
    }
}

/// Configures an [`HttpClient`]: TLS (feature `tls`), pool limits and DNS limits; made by
/// [`HttpClient::builder`]. Every limit has a default (see [`HttpClient`]).
#[must_use = "a builder does nothing until `build` is called"]
pub struct HttpClientBuilder {
    #[cfg(feature = "tls")]
    tls: Option<rustls::ClientConfig>,
    settings: Settings,
}

impl HttpClientBuilder {
    /// The rustls configuration for https connections (its ALPN protocols are replaced by
    /// `http/1.1`). By default: the Mozilla roots of `webpki-roots`, no client certificate.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_config(mut self, config: rustls::ClientConfig) -> Self {
        self.tls = Some(config);
        self
    }

    /// The most idle keep-alive connections kept per host (scheme, host and port): 64 by
    /// default. A connection whose request ends while the cap is reached is closed. 0 keeps
    /// none (every request opens a connection).
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.settings.pool_max_idle_per_host = max;
        self
    }

    /// How long an idle keep-alive connection is kept before it is closed: 30 s by default.
    /// Keep it below the backends' own idle timeout, so that the client, not the backend,
    /// closes idle connections. Must not be zero.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.settings.pool_idle_timeout = timeout;
        self
    }

    /// The most DNS lookups of this client running at once (each holds a thread of tokio's
    /// blocking pool): 16 by default. Must not be zero.
    pub fn dns_concurrency(mut self, max: usize) -> Self {
        self.settings.dns_concurrency = max;
        self
    }

    /// How long a DNS lookup may take, waiting for a slot included: 5 s by default; then
    /// the fetch fails as [`HttpError::Connect`](super::HttpError::Connect). Must not be zero.
    pub fn dns_timeout(mut self, timeout: Duration) -> Self {
        self.settings.dns_timeout = timeout;
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    ///
    /// [`HttpConfigError::Limit`] if the pool idle timeout, the DNS concurrency or the DNS
    /// timeout is zero.
    pub fn build(self) -> Result<HttpClient, HttpConfigError> {
        let settings = self.settings;
        let zero = |name: &'static str| Err(HttpConfigError::Limit { name, reason: "must be greater than zero" });
        if settings.pool_idle_timeout.is_zero() {
            return zero("pool_idle_timeout");
        }
        if settings.dns_concurrency == 0 {
            return zero("dns_concurrency");
        }
        if settings.dns_timeout.is_zero() {
            return zero("dns_timeout");
        }
        Ok(self.assemble())
    }

    /// Builds the client from settings already checked (or the defaults).
    fn build_or_default(self) -> HttpClient {
        self.assemble()
    }

    fn assemble(self) -> HttpClient {
        let settings = self.settings;
        let resolver = BoundedResolver {
            slots: Arc::new(Semaphore::new(settings.dns_concurrency.min(Semaphore::MAX_PERMITS))),
            timeout: settings.dns_timeout,
        };
        let mut http = HttpConnector::new_with_resolver(resolver);
        http.set_nodelay(true);
        #[cfg(feature = "tls")]
        let connector = {
            http.enforce_http(false);
            let config = self.tls.unwrap_or_else(super::tls::default_config);
            HttpsConnectorBuilder::new().with_tls_config(config).https_or_http().enable_http1().wrap_connector(http)
        };
        // Without TLS, a URL that is not `http://` fails to connect instead of being sent in
        // plain text.
        #[cfg(not(feature = "tls"))]
        let connector = {
            http.enforce_http(true);
            http
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(settings.pool_max_idle_per_host)
            // hyper-util's default, made explicit: a request that could not be written on a
            // pooled connection found closed is sent on another one.
            .retry_canceled_requests(true)
            .build(Tracking { inner: connector });
        HttpClient { client, settings: Arc::new(settings) }
    }
}

impl fmt::Debug for HttpClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut builder = f.debug_struct("HttpClientBuilder");
        #[cfg(feature = "tls")]
        builder.field("tls", &self.tls.as_ref().map(|_| "custom"));
        builder.field("settings", &self.settings).finish()
    }
}

/// `getaddrinfo` on the blocking pool, at most `slots` at once, each within `timeout`.
#[derive(Clone)]
pub(crate) struct BoundedResolver {
    slots: Arc<Semaphore>,
    timeout: Duration,
}

/// A lookup that failed, or did not finish in time.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DnsError {
    #[error("no DNS answer within {0:?}")]
    Timeout(Duration),
    #[error("DNS lookup failed")]
    Lookup(#[source] io::Error),
}

impl tower_service::Service<Name> for BoundedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = DnsError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DnsError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DnsError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let (slots, timeout) = (self.slots.clone(), self.timeout);
        Box::pin(async move {
            let lookup = async move {
                let Ok(slot) = slots.acquire_owned().await else {
                    return Err(DnsError::Lookup(io::Error::other("resolver closed")));
                };
                let host = name.as_str().to_owned();
                // The slot moves into the blocking task: it is released when `getaddrinfo`
                // returns, not when this lookup gives up waiting for it.
                let task = tokio::task::spawn_blocking(move || {
                    let _slot = slot;
                    (host.as_str(), 0).to_socket_addrs().map(Iterator::collect::<Vec<_>>)
                });
                match task.await {
                    Ok(Ok(addrs)) => Ok(addrs.into_iter()),
                    Ok(Err(error)) => Err(DnsError::Lookup(error)),
                    Err(join) => Err(DnsError::Lookup(io::Error::other(join))),
                }
            };
            tokio::time::timeout(timeout, lookup).await.unwrap_or(Err(DnsError::Timeout(timeout)))
        })
    }
}

/// How many responses a connection has carried; in the connection's `extra`, so that a
/// failed request can tell whether its connection was reused.
#[derive(Clone, Debug, Default)]
pub(crate) struct Uses(Arc<AtomicUsize>);

impl Uses {
    /// Counts a response received on the connection.
    pub(crate) fn count(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Whether the connection of a failed request had carried a response before.
pub(crate) fn was_reused(error: &hyper_util::client::legacy::Error) -> bool {
    let Some(connected) = error.connect_info() else { return false };
    let mut extensions = Extensions::new();
    connected.get_extras(&mut extensions);
    extensions.get::<Uses>().is_some_and(|uses| uses.0.load(Ordering::Relaxed) > 0)
}

/// The connector (https-or-http with the `tls` feature, http only without), whose connections
/// carry a [`Uses`] counter.
#[derive(Clone)]
pub(crate) struct Tracking {
    inner: Connector,
}

#[cfg(feature = "tls")]
type Connector = HttpsConnector<HttpConnector<BoundedResolver>>;
#[cfg(not(feature = "tls"))]
type Connector = HttpConnector<BoundedResolver>;

#[cfg(feature = "tls")]
type Stream = MaybeHttpsStream<TokioIo<TcpStream>>;
#[cfg(not(feature = "tls"))]
type Stream = TokioIo<TcpStream>;

impl tower_service::Service<Uri> for Tracking {
    type Response = Tracked;
    type Error = <Connector as tower_service::Service<Uri>>::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Tracked, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        Box::pin(async move { Ok(Tracked { io: connecting.await?, uses: Uses::default() }) })
    }
}

/// A connection and its [`Uses`].
pub(crate) struct Tracked {
    io: Stream,
    uses: Uses,
}

impl Connection for Tracked {
    fn connected(&self) -> Connected {
        self.io.connected().extra(self.uses.clone())
    }
}

impl hyper::rt::Read for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl hyper::rt::Write for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_refused() {
        let error = HttpClient::builder().dns_concurrency(0).build().unwrap_err();
        assert_eq!(error.to_string(), "invalid client limit `dns_concurrency`: must be greater than zero");
        assert!(HttpClient::builder().dns_timeout(Duration::ZERO).build().is_err());
        assert!(HttpClient::builder().pool_idle_timeout(Duration::ZERO).build().is_err());
        assert!(HttpClient::builder().pool_max_idle_per_host(0).build().is_ok(), "0 idle connections is valid");
    }

    #[cfg(not(feature = "tls"))]
    #[tokio::test]
    async fn without_tls_an_https_url_fails_to_connect_instead_of_going_out_in_plain_text() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let uri: Uri = format!("https://{}/", listener.local_addr().unwrap()).parse().unwrap();
        let request = ::http::Request::get(uri).body(Full::new(Bytes::new())).unwrap();
        let error = HttpClient::new().client.request(request).await.unwrap_err();
        assert!(error.is_connect(), "{error:?}");
        let accepted = tokio::time::timeout(Duration::from_millis(100), listener.accept()).await;
        assert!(accepted.is_err(), "no connection was opened");
    }

    #[tokio::test]
    async fn a_lookup_waits_for_a_slot_and_times_out_without_one() {
        let slots = Arc::new(Semaphore::new(1));
        let held = slots.clone().acquire_owned().await.unwrap();
        let mut resolver = BoundedResolver { slots, timeout: Duration::from_millis(50) };
        let error = tower_service::Service::call(&mut resolver, "localhost".parse().unwrap()).await.unwrap_err();
        assert!(matches!(error, DnsError::Timeout(_)), "{error:?}");
        drop(held);
        let addrs: Vec<SocketAddr> =
            tower_service::Service::call(&mut resolver, "localhost".parse().unwrap()).await.unwrap().collect();
        assert!(addrs.iter().any(|addr| addr.ip().is_loopback()), "{addrs:?}");
    }
}
