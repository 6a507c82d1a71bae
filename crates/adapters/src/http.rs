//! The HTTP fetcher: JSON over HTTP/1.1 (and, with the `tls` feature, https via rustls) from a
//! URL template, safe by default.
//!
//! Without `tls` (`features = ["http"]` alone in `muster`) no TLS code is
//! compiled and an `https://` template is refused when its fetcher is built; see
//! [`HttpClient`'s TLS section](HttpClient#tls).
//!
//! An [`HttpFetcher`] is a [`Fetcher`] that substitutes the request's values into a URL
//! template such as `https://profile.internal/v1/users/{id}`, sends a `GET` (or the
//! [`method`](HttpFetcherBuilder::method) you choose, with the request's JSON
//! [`body`](UrlParams::body)) on a pooled [`HttpClient`], and returns the validated JSON body as a
//! [`Box<RawValue>`](serde_json::value::RawValue) (kept as text, so an aggregator passes it on
//! without re-serialising it), or, through [`HttpFetcher::decode`], as any
//! `T: DeserializeOwned`. Every way the exchange can fail is its own [`HttpError`] variant.
//!
//! ```
//! # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
//! # async fn serve(body: &'static str) -> std::io::Result<std::net::SocketAddr> {
//! #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
//! #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! #     let addr = listener.local_addr()?;
//! #     tokio::spawn(async move {
//! #         while let Ok((mut socket, _)) = listener.accept().await {
//! #             let _ = socket.read(&mut [0; 4096]).await;
//! #             let head = format!(
//! #                 "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
//! #                 body.len(),
//! #             );
//! #             let _ = socket.write_all(format!("{head}{body}").as_bytes()).await;
//! #         }
//! #     });
//! #     Ok(addr)
//! # }
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use muster::http::{HttpClient, HttpFetcher};
//! use muster::{Fetcher, Group};
//! use muster::Deadline;
//!
//! let profile_addr = serve(r#"{"name": "Ada", "kyc": "verified"}"#).await?;
//! let balance_addr = serve(r#"{"balance": 1250}"#).await?;
//!
//! let client = HttpClient::new(); // one pool for every source and every aggregation
//! let profile = HttpFetcher::builder(&format!("http://{profile_addr}/v1/users/{{id}}"))
//!     .client(client.clone())
//!     .build()?;
//! let balance = HttpFetcher::builder(&format!("http://{balance_addr}/v1/balance/{{id}}"))
//!     .client(client)
//!     .timeout(Duration::from_millis(500))
//!     .build()?;
//!
//! let user_id = "7";
//! let mut group = Group::with_options(Deadline(Duration::from_secs(1)))?;
//! group.spawn("profile", profile.fetch(user_id))?;
//! group.spawn("balance", balance.fetch(user_id))?;
//! let outputs = group.wait().await?;
//! assert_eq!(outputs["profile"].get(), r#"{"name": "Ada", "kyc": "verified"}"#);
//! assert_eq!(outputs["balance"].get(), r#"{"balance": 1250}"#);
//! # Ok(()) }
//! ```
//!
//! How the fetcher builds its requests and checks the responses (URL templates, request
//! headers, the response, timeouts and cancellation, pooling) is described on [`HttpFetcher`].

use std::fmt;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use ::http::{Request, Response, Uri};
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use muster_core::Fetcher;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use tokio::time::{Instant, Sleep, sleep_until};

mod client;
mod error;
mod params;
mod template;
#[cfg(feature = "tls")]
mod tls;

pub use self::client::{HttpClient, HttpClientBuilder};
pub use self::error::{HttpConfigError, HttpError};
pub use self::params::UrlParams;
#[doc(no_inline)]
pub use ::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};

use self::template::{Template, resolve_redirect};

/// The header that carries the time left until the deadline, in whole milliseconds.
const DEADLINE_HEADER: HeaderName = HeaderName::from_static("x-muster-deadline-ms");
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
const TRACEPARENT_HEADER: HeaderName = HeaderName::from_static("traceparent");

/// How much of a non-2xx body is kept in [`HttpError::Status`].
const EXCERPT_LEN: usize = 200;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const DEFAULT_MAX_BODY: usize = 1024 * 1024;
/// The longest forwarded header value sent, in bytes.
const MAX_FORWARDED_VALUE: usize = 8 * 1024;

/// A [`Fetcher`] that GETs JSON from a URL template.
///
/// Its output is the validated JSON body as a [`Box<RawValue>`]; [`decode`](Self::decode)
/// turns it into a fetcher of any deserialisable type. It fetches any request that implements
/// [`UrlParams`] (`&str`, `String`, integers, maps, pairs, or your own type). Cloning is cheap
/// and clones share the configuration and the client.
///
/// ```
/// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
/// # async fn serve(body: &'static str) -> std::io::Result<std::net::SocketAddr> {
/// #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
/// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// #     let addr = listener.local_addr()?;
/// #     tokio::spawn(async move {
/// #         while let Ok((mut socket, _)) = listener.accept().await {
/// #             let _ = socket.read(&mut [0; 4096]).await;
/// #             let head = format!(
/// #                 "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
/// #                 body.len(),
/// #             );
/// #             let _ = socket.write_all(format!("{head}{body}").as_bytes()).await;
/// #         }
/// #     });
/// #     Ok(addr)
/// # }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use muster::http::{HttpError, HttpFetcher};
/// use muster::Fetcher;
///
/// let addr = serve(r#"{"id": 7, "name": "Ada"}"#).await?;
/// let profiles = HttpFetcher::builder(&format!("http://{addr}/v1/users/{{id}}")).build()?;
///
/// let profile = profiles.fetch("7").await?;
/// assert_eq!(profile.get(), r#"{"id": 7, "name": "Ada"}"#);
///
/// let by_name = HttpFetcher::builder(&format!("http://{addr}/v1/users?name={{name}}")).build()?;
/// let error = by_name.fetch(&[("id", "7")]).await.unwrap_err();
/// assert!(matches!(error, HttpError::MissingParam { name } if name == "name"));
/// # Ok(()) }
/// ```
///
/// # URL templates
///
/// A template is an absolute `http` or `https` URL. Each `{name}` placeholder (letters,
/// digits, `_`, `-`) stands in a path segment or a query value, never in the scheme, host or
/// port; [`HttpFetcherBuilder::build`] refuses anything else with an [`HttpConfigError`].
///
/// The value the request gives for a placeholder ([`UrlParams::param`]) is percent-encoded so
/// that it stays exactly one path segment (or one query value), whatever it contains: every
/// byte except the RFC 3986 unreserved characters `A-Z a-z 0-9 - _ ~` is encoded, and so is
/// `.`. `/`, `?`, `#`, `%`, `&`, `=`, spaces, CR and LF, and the UTF-8 bytes of non-ASCII
/// text are all encoded, so a value cannot change the host, the path structure or the query;
/// and `.` and `..` become `%2E` and `%2E%2E`, which are not dot segments, so no client,
/// proxy or server normalises them away (`/users/..` would otherwise address `/`). A path
/// placeholder's value must not be empty either: `/users/` addresses another resource than
/// `/users/7`. Query values may be empty.
///
/// The URL is then parsed as an [`http::Uri`] and sent as it is, never
/// normalised. That is why this fetcher is built on hyper rather than reqwest: reqwest parses
/// URLs with the WHATWG `url` crate, which, like a browser, decodes `%2E%2E` to a `..` dot
/// segment and removes it together with the segment before it, so an id of `..` would reach
/// the parent resource. `http::Uri` keeps `%2E%2E` as it is.
///
/// # Request headers
///
/// A request is a `GET` unless [`method`](HttpFetcherBuilder::method) says otherwise; it has a
/// body when the request gives one ([`UrlParams::body`], sent as `application/json`). Its
/// headers:
///
/// | header | value |
/// | --- | --- |
/// | `accept` | `application/json` |
/// | `user-agent` | `muster-adapters/<version>` |
/// | `x-request-id` | the request id of the call's [`context()`](muster_core::context) ([`Context::request_id`](muster_core::Context::request_id)), if it is a valid header value |
/// | `traceparent` | with the `otel` feature, the fetch's `attempt` span's; else the context's [`traceparent`](muster_core::Context::traceparent); only a valid W3C version-00 trace parent (lower-case hex, ids not all zero) |
/// | `x-muster-deadline-ms` | the time left until [`deadline()`](muster_core::deadline), in whole milliseconds (rounded down, decimal, at least 1: with less left nothing is sent), if the fetch runs under a deadline |
/// | any [`header`](HttpFetcherBuilder::header) | as configured (may replace `accept` and `user-agent`) |
/// | any [`forward_header`](HttpFetcherBuilder::forward_header) | the context's [`header`](muster_core::Context::header) of that name, if it is at most 8 KiB of visible ASCII, spaces and tabs (replaces a static header of the same name) |
/// | `content-type` | `application/json`, when there is a body |
///
/// The request itself ([`UrlParams`]) gives only URL values and the body; what is the
/// request's context comes from [`context()`](muster_core::context), which an aggregator sets
/// once per call from its `RequestContext` (`request_id`, `traceparent`, `header`). Forwarding
/// is an allow-list: the fetcher asks the context only for the names it was given, so a context
/// may hold all of its caller's headers (e.g. the end user's `authorization` and `cookie` among
/// others) and only the listed ones leave. Static and
/// forwarded headers go to the template's host and port only, never to another one after a
/// redirect.
///
/// `x-muster-deadline-ms` lets a backend give up on work whose answer would arrive too late.
/// With less than 1 ms left, nothing is sent (see [timeouts](HttpFetcher#timeouts-and-cancellation)).
///
/// # The response
///
/// - 2xx: the `Content-Type` must be `application/json` or `application/<something>+json`
///   ([`HttpError::ContentType`]); a `Content-Encoding` other than `identity` is refused
///   ([`HttpError::Encoding`]; the fetcher never asks for compression); the body is read frame
///   by frame and refused as soon as it exceeds the limit ([`HttpError::BodyTooLarge`]; the
///   excess is never buffered, and a `Content-Length` over the limit is refused before
///   reading); then it must be valid JSON ([`HttpError::InvalidJson`]).
/// - 3xx: an [`HttpError::Redirect`], unless [`follow_redirects`](HttpFetcherBuilder::follow_redirects)
///   allows following it: only to `http`/`https` URLs with the same scheme. Static and
///   forwarded headers are not sent to a different host or port. 307 and 308 repeat the
///   method and body; 303 (and 301 or 302 after anything but `GET` or `HEAD`) become a `GET`
///   without a body.
/// - anything else: an [`HttpError::Status`] with the start of the body.
///
/// # Timeouts and cancellation
///
/// The [`timeout`](HttpFetcherBuilder::timeout) (10 s by default) covers the whole exchange:
/// connecting, the response head, every redirect and the whole body, so a body that dribbles
/// in slowly times out too. The call's [`deadline()`](muster_core::deadline) (the one
/// deadline, stored once: the group's or aggregator's, tightened by a `Timeout` policy) is
/// read from there, sent to the backend, and ends the exchange too. When it comes at or before
/// the end of the fetcher's own timeout, the deadline is left to fire and is what is reported,
/// exactly as with the `Timeout` policy: the fetch gives the group (or the policy) that set
/// the deadline the tick in which it checks it, so the aggregation reports its deadline, not
/// a source timeout; only without one (a bare [`with_deadline`](muster_core::with_deadline))
/// does the fetch then fail with [`HttpError::Timeout`]. So there is no need for a "backstop"
/// timeout set past the deadline: give the fetcher its plain timeout, or none.
///
/// A remaining budget under 1 ms is never sent as `x-muster-deadline-ms: 0`: the request is
/// not sent, and the fetch times out at the deadline in the same way (the group reports its
/// deadline; without a group, [`HttpError::Timeout`]).
///
/// Dropping the fetch future (which is how a [`Group`](muster_core::Group) cancels a source)
/// aborts the request: a connection with a request in flight, or a body not read to the end,
/// is closed rather than returned to the pool; the server sees the connection close.
///
/// # Pooling
///
/// An [`HttpClient`] keeps idle keep-alive connections per host (at most 64 per host, for
/// 30 s, both set with [`HttpClient::builder`]) and is cheap to clone; share one across
/// fetchers and aggregations. A fetcher built without [`client`](HttpFetcherBuilder::client)
/// gets a pool of its own. An idempotent request on a pooled connection that the backend had
/// closed is sent once more on a new connection; DNS lookups are bounded in number and time
/// (see [`HttpClient`]).
#[derive(Clone)]
pub struct HttpFetcher {
    config: Arc<Config>,
}

struct Config {
    client: HttpClient,
    template: Template,
    method: Method,
    /// The headers copied from the call's context, in order.
    forward: Vec<HeaderName>,
    timeout: Duration,
    max_body: usize,
    max_redirects: usize,
    /// `accept`, `user-agent` and the static headers.
    headers: HeaderMap,
    /// The same without the static headers, for a redirect to another host.
    cross_origin_headers: HeaderMap,
}

impl HttpFetcher {
    /// Starts building a fetcher for `template`, e.g.
    /// `"https://profile.internal/v1/users/{id}"`. The template is checked by
    /// [`HttpFetcherBuilder::build`].
    pub fn builder(template: &str) -> HttpFetcherBuilder {
        HttpFetcherBuilder {
            template: template.to_owned(),
            client: None,
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
            max_redirects: 0,
            headers: Vec::new(),
            method: Method::GET,
            forward: Vec::new(),
        }
    }

    /// A fetcher that deserialises the JSON body into `T` instead of returning it raw.
    /// A body that does not deserialise is an [`HttpError::InvalidJson`].
    ///
    /// ```
    /// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
    /// # async fn serve(body: &'static str) -> std::io::Result<std::net::SocketAddr> {
    /// #     use tokio::io::{AsyncReadExt, AsyncWriteExt};
    /// #     let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// #     let addr = listener.local_addr()?;
    /// #     tokio::spawn(async move {
    /// #         while let Ok((mut socket, _)) = listener.accept().await {
    /// #             let _ = socket.read(&mut [0; 4096]).await;
    /// #             let head = format!(
    /// #                 "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
    /// #                 body.len(),
    /// #             );
    /// #             let _ = socket.write_all(format!("{head}{body}").as_bytes()).await;
    /// #         }
    /// #     });
    /// #     Ok(addr)
    /// # }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use muster::http::HttpFetcher;
    /// use muster::Fetcher;
    ///
    /// #[derive(serde::Deserialize)]
    /// struct Balance {
    ///     cents: i64,
    /// }
    ///
    /// let addr = serve(r#"{"cents": 125000}"#).await?;
    /// let balances = HttpFetcher::builder(&format!("http://{addr}/v1/balance/{{id}}")).build()?.decode::<Balance>();
    /// assert_eq!(balances.fetch(&7_u64).await?.cents, 125_000);
    /// # Ok(()) }
    /// ```
    pub fn decode<T: DeserializeOwned>(self) -> Decoded<T> {
        Decoded { fetcher: self, output: PhantomData }
    }

    /// The URL template, as given to [`builder`](Self::builder).
    pub fn template(&self) -> &str {
        self.config.template.as_str()
    }

    /// The names of the template's `{name}` placeholders, in order, e.g. to check at start-up
    /// that every request type you use fills them all (a placeholder no request fills fails
    /// every fetch with [`HttpError::MissingParam`]).
    ///
    /// ```
    /// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
    /// use muster::http::{HttpFetcher, UrlParams};
    ///
    /// # fn main() -> Result<(), muster_adapters::http::HttpConfigError> {
    /// let fetcher = HttpFetcher::builder("https://ledger.internal/v1/{tenant}/users/{id}?page={page}").build()?;
    /// assert_eq!(fetcher.placeholders().collect::<Vec<_>>(), ["tenant", "id", "page"]);
    /// let request = [("id", "7"), ("page", "1")];
    /// let unfilled: Vec<&str> = fetcher.placeholders().filter(|name| request.param(name).is_none()).collect();
    /// assert_eq!(unfilled, ["tenant"]);
    /// # Ok(()) }
    /// ```
    pub fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.config.template.placeholders()
    }

    /// Fetches the body of a 2xx JSON response for `request`, checked but not parsed.
    async fn fetch_body<P: UrlParams + ?Sized>(&self, request: &P) -> Result<Vec<u8>, HttpError> {
        let config = &*self.config;
        let uri = config.template.render(request)?;

        // The request's context (request id, trace parent, the caller's headers), set once per
        // call by the aggregator: one reference count, not a copy.
        let context = muster_core::context();
        let mut propagated = HeaderMap::new();
        if let Some(id) = context.as_ref().and_then(|context| HeaderValue::from_str(context.request_id()?).ok()) {
            propagated.insert(REQUEST_ID_HEADER, id);
        }
        // With OpenTelemetry, the exchange is an `attempt` span (alive until this fetch returns
        // or is dropped) and the backend's parent is that span; without, the request's own
        // trace parent goes on as it came.
        #[cfg(feature = "otel")]
        let (attempt, traceparent) = {
            let attempt = otel::Attempt::new(&config.method, &uri);
            let traceparent = otel::traceparent(attempt.span());
            (attempt, traceparent)
        };
        #[cfg(not(feature = "otel"))]
        let traceparent: Option<String> = None;
        let traceparent =
            traceparent.or_else(|| context.as_ref().and_then(|context| context.traceparent()).map(str::to_owned));
        if let Some(traceparent) = traceparent.filter(|value| is_valid_traceparent(value)) {
            if let Ok(value) = HeaderValue::from_str(&traceparent) {
                propagated.insert(TRACEPARENT_HEADER, value);
            }
        }
        // Forwarded headers are the caller's (e.g. the end user's `Authorization`): like the
        // static headers, they go to the template's origin only.
        let mut forwarded = HeaderMap::new();
        if let Some(context) = &context {
            for name in &config.forward {
                if let Some(value) = context.header(name.as_str()).and_then(|value| forwardable(name, value)) {
                    forwarded.insert(name.clone(), value);
                }
            }
        }
        let body = request.body().map(|json| Bytes::copy_from_slice(json.get().as_bytes()));
        let now = Instant::now();
        let mut budget = config.timeout;
        // Whether the deadline ends the exchange rather than the fetcher's own timeout.
        let mut deadline_first = false;
        if let Some(deadline) = muster_core::deadline() {
            let left = deadline.saturating_duration_since(now);
            if left < MIN_BUDGET {
                // Never sent as `x-muster-deadline-ms: 0`: nothing is sent, and the fetch times
                // out at the deadline, leaving whoever set it to report it.
                tokio::time::sleep_until(deadline).await;
                after_the_deadline().await;
                let result = Err(HttpError::Timeout { after: left });
                #[cfg(feature = "otel")]
                attempt.end(&result);
                return result;
            }
            let millis = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
            propagated.insert(DEADLINE_HEADER, HeaderValue::from(millis));
            if left <= budget {
                (budget, deadline_first) = (left, true);
            }
        }
        // One timer for the whole exchange, registered once however many frames arrive: the
        // fetcher's timeout, or the deadline if that comes first (or at the same time).
        let mut expiry = pin!(sleep_until(now + budget));
        let timed_out = || HttpError::Timeout { after: budget };

        let result = async {
            let origin = uri.authority().cloned();
            let mut exchange = Exchange { uri, method: config.method.clone(), body };
            let mut redirects = 0;
            let mut retried = false;
            loop {
                let same_origin = exchange.uri.authority() == origin.as_ref();
                let outgoing = exchange.request(config, same_origin, &propagated, &forwarded);
                let response = match before(expiry.as_mut(), config.client.client.request(outgoing)).await {
                    None => return Err(timed_out()),
                    Some(Ok(response)) => response,
                    Some(Err(error)) => {
                        if !retried && exchange.method.is_idempotent() && is_stale_connection(&error) {
                            // A pooled connection the backend had closed: once more, on a new one.
                            retried = true;
                            continue;
                        }
                        return Err(if error.is_connect() {
                            HttpError::Connect { source: error.into() }
                        } else {
                            HttpError::Protocol { source: error.into() }
                        });
                    }
                };
                if let Some(uses) = response.extensions().get::<client::Uses>() {
                    uses.count();
                }

                let status = response.status();
                #[cfg(feature = "otel")]
                attempt.status(status);
                if status.is_redirection() {
                    let location = response.headers().get(header::LOCATION).map(lossy);
                    let next = if redirects < config.max_redirects {
                        location.as_deref().and_then(|location| resolve_redirect(&exchange.uri, location))
                    } else {
                        None
                    };
                    match next {
                        Some(next) => {
                            redirects += 1;
                            exchange.redirect(status, next);
                            continue;
                        }
                        None => return Err(HttpError::Redirect { status, location }),
                    }
                }
                if !status.is_success() {
                    let body_excerpt = read_excerpt(response.into_body(), expiry.as_mut()).await;
                    return Err(HttpError::Status { status, body_excerpt });
                }
                check_json_headers(&response)?;
                return read_limited(response.into_body(), config.max_body, expiry.as_mut())
                    .await?
                    .ok_or_else(timed_out);
            }
        }
        .await;
        if deadline_first && matches!(result, Err(HttpError::Timeout { .. })) {
            after_the_deadline().await;
        }
        #[cfg(feature = "otel")]
        attempt.end(&result);
        result
    }
}

/// The least budget worth sending: a remaining budget under 1 ms would be sent as
/// `x-muster-deadline-ms: 0`.
const MIN_BUDGET: Duration = Duration::from_millis(1);

/// Lets the deadline that just passed fire first: the group (or the `Timeout` policy) that set
/// it checks it after polling its tasks in the same tick, and so cancels the fetch and reports
/// the deadline, exactly as when a source's timeout ends with the deadline. Without one (a
/// bare `with_deadline`), the fetch then fails with [`HttpError::Timeout`].
async fn after_the_deadline() {
    tokio::task::yield_now().await;
}

/// What one attempt sends: the URL, the method and the JSON body, which a redirect may change.
struct Exchange {
    uri: Uri,
    method: Method,
    body: Option<Bytes>,
}

impl Exchange {
    fn request(
        &self,
        config: &Config,
        same_origin: bool,
        propagated: &HeaderMap,
        forwarded: &HeaderMap,
    ) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone().unwrap_or_default()));
        *request.uri_mut() = self.uri.clone();
        *request.method_mut() = self.method.clone();
        let headers = request.headers_mut();
        if same_origin {
            headers.clone_from(&config.headers);
            for (name, value) in forwarded {
                headers.insert(name, value.clone());
            }
        } else {
            headers.clone_from(&config.cross_origin_headers);
        }
        if self.body.is_some() {
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        headers.extend(propagated.clone());
        request
    }

    /// Follows a redirect to `next`: 307 and 308 repeat the method and the body; 303, and
    /// 301 or 302 after anything but `GET` or `HEAD`, become a `GET` without a body (what
    /// browsers and curl do).
    fn redirect(&mut self, status: StatusCode, next: Uri) {
        self.uri = next;
        let keep = matches!(status, StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT)
            || self.method == Method::HEAD
            || (status != StatusCode::SEE_OTHER && self.method == Method::GET);
        if !keep {
            self.method = Method::GET;
            self.body = None;
        }
    }
}

/// Whether `error` is a reused pooled connection that the backend closed (or reset) before
/// answering: worth one more attempt on a new connection, for an idempotent request.
fn is_stale_connection(error: &hyper_util::client::legacy::Error) -> bool {
    if error.is_connect() || !client::was_reused(error) {
        return false;
    }
    let mut cause = std::error::Error::source(error);
    while let Some(error) = cause {
        if let Some(hyper) = error.downcast_ref::<hyper::Error>() {
            if hyper.is_incomplete_message() {
                return true;
            }
        }
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind;
            return matches!(
                io.kind(),
                ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe
            );
        }
        cause = error.source();
    }
    false
}

/// The value of a forwarded header if it is worth sending: at most 8 KiB of visible ASCII,
/// spaces and tabs (no control characters, no obs-text). Credentials are marked sensitive.
fn forwardable(name: &HeaderName, value: &str) -> Option<HeaderValue> {
    let clean = !value.is_empty()
        && value.len() <= MAX_FORWARDED_VALUE
        && value.bytes().all(|byte| byte == b'\t' || (b' '..=b'~').contains(&byte));
    let mut value = HeaderValue::from_str(value).ok().filter(|_| clean)?;
    if is_credential(name) {
        value.set_sensitive(true);
    }
    Some(value)
}

fn is_credential(name: &HeaderName) -> bool {
    *name == header::AUTHORIZATION || *name == header::COOKIE || *name == header::PROXY_AUTHORIZATION
}

impl fmt::Debug for HttpFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let config = &*self.config;
        // Header values may be credentials: show the names only.
        let headers: Vec<&str> = config.headers.keys().map(HeaderName::as_str).collect();
        f.debug_struct("HttpFetcher")
            .field("template", &config.template.as_str())
            .field("timeout", &config.timeout)
            .field("max_body", &config.max_body)
            .field("max_redirects", &config.max_redirects)
            .field("method", &config.method)
            .field("headers", &headers)
            .field("forward", &config.forward)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<Req: UrlParams + ?Sized + Sync> Fetcher<Req> for HttpFetcher {
    type Output = Box<RawValue>;
    type Error = HttpError;

    /// GETs the URL for `request` and returns its validated JSON body.
    ///
    /// # Errors
    ///
    /// Every failure is an [`HttpError`]; see its variants.
    ///
    /// # Cancellation safety
    ///
    /// Dropping the future aborts the request and closes its connection.
    async fn fetch(&self, request: &Req) -> Result<Box<RawValue>, HttpError> {
        let body = self.fetch_body(request).await?;
        serde_json::from_slice(&body).map_err(|source| HttpError::InvalidJson { source })
    }
}

/// An [`HttpFetcher`] whose output is the JSON body deserialised into `T`; made by
/// [`HttpFetcher::decode`].
pub struct Decoded<T> {
    fetcher: HttpFetcher,
    output: PhantomData<fn() -> T>,
}

impl<T> Decoded<T> {
    /// The underlying raw-JSON fetcher.
    ///
    /// ```
    /// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
    /// use muster::http::HttpFetcher;
    ///
    /// # fn main() -> Result<(), muster_adapters::http::HttpConfigError> {
    /// let template = "http://profile.internal/v1/users/{id}";
    /// let profiles = HttpFetcher::builder(template).build()?.decode::<serde_json::Value>();
    /// assert_eq!(profiles.get_ref().template(), template);
    /// # Ok(()) }
    /// ```
    pub fn get_ref(&self) -> &HttpFetcher {
        &self.fetcher
    }

    /// Unwraps the underlying raw-JSON fetcher.
    pub fn into_inner(self) -> HttpFetcher {
        self.fetcher
    }
}

impl<T> Clone for Decoded<T> {
    fn clone(&self) -> Self {
        Self { fetcher: self.fetcher.clone(), output: PhantomData }
    }
}

impl<T> fmt::Debug for Decoded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoded").field("fetcher", &self.fetcher).field("output", &std::any::type_name::<T>()).finish()
    }
}

#[async_trait]
impl<Req, T> Fetcher<Req> for Decoded<T>
where
    Req: UrlParams + ?Sized + Sync,
    T: DeserializeOwned + Send,
{
    type Output = T;
    type Error = HttpError;

    /// GETs the URL for `request` and deserialises its JSON body into `T`.
    ///
    /// # Errors
    ///
    /// Every failure is an [`HttpError`]; see its variants.
    ///
    /// # Cancellation safety
    ///
    /// Dropping the future aborts the request and closes its connection.
    async fn fetch(&self, request: &Req) -> Result<T, HttpError> {
        let body = self.fetcher.fetch_body(request).await?;
        serde_json::from_slice(&body).map_err(|source| HttpError::InvalidJson { source })
    }
}

/// Configures an [`HttpFetcher`]; made by [`HttpFetcher::builder`].
///
/// ```
/// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
/// use std::time::Duration;
/// use muster::http::{HttpClient, HttpFetcher};
///
/// # fn main() -> Result<(), muster_adapters::http::HttpConfigError> {
/// let transactions = HttpFetcher::builder("https://ledger.internal/v1/users/{id}/transactions?limit={limit}")
///     .client(HttpClient::new())
///     .timeout(Duration::from_millis(800))
///     .max_body(4 * 1024 * 1024)
///     .follow_redirects(2)
///     .header("authorization", "Bearer s3cr3t")
///     .build()?;
/// assert!(!format!("{transactions:?}").contains("s3cr3t"), "Debug shows header names only");
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct HttpFetcherBuilder {
    template: String,
    client: Option<HttpClient>,
    timeout: Duration,
    max_body: usize,
    max_redirects: usize,
    headers: Vec<(String, String)>,
    method: Method,
    forward: Vec<String>,
}

impl HttpFetcherBuilder {
    /// The request method: `GET` by default. A request with a JSON body
    /// ([`UrlParams::body`]) sends it with any method. Only idempotent methods (`GET`, `HEAD`,
    /// `PUT`, `DELETE`, `OPTIONS`, `TRACE`) are sent again when a pooled connection turns out
    /// to be closed (see [`HttpClient`]).
    ///
    /// ```
    /// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
    /// use muster::http::{HttpFetcher, Method};
    ///
    /// # fn main() -> Result<(), muster_adapters::http::HttpConfigError> {
    /// let search = HttpFetcher::builder("https://search.internal/v1/users/{id}/query").method(Method::POST).build()?;
    /// assert!(format!("{search:?}").contains("POST"));
    /// # Ok(()) }
    /// ```
    pub fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    /// Copies the header `name` from each call's [`context()`](muster_core::context)
    /// ([`Context::header`](muster_core::Context::header)) to the backend,
    /// e.g. the end user's `authorization` or `cookie`: an allow-list, one name per call.
    /// A value is sent only if it is at most 8 KiB of visible ASCII, spaces and tabs;
    /// anything else (or no value) is not sent. A forwarded value replaces a static
    /// [`header`](Self::header) of the same name; without one, the static header is sent.
    /// Like static headers, forwarded
    /// ones are not sent to another host or port after a redirect. The name is checked by
    /// [`build`](Self::build): headers the client manages itself and the propagation headers
    /// are refused.
    ///
    /// ```
    /// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
    /// use muster::http::HttpFetcher;
    ///
    /// # fn main() -> Result<(), muster_adapters::http::HttpConfigError> {
    /// let profile = HttpFetcher::builder("https://profile.internal/v1/users/{id}")
    ///     .forward_header("authorization")
    ///     .forward_header("cookie")
    ///     .build()?;
    /// # let _ = profile;
    /// assert!(HttpFetcher::builder("https://profile.internal/{id}").forward_header("host").build().is_err());
    /// # Ok(()) }
    /// ```
    pub fn forward_header(mut self, name: impl Into<String>) -> Self {
        self.forward.push(name.into());
        self
    }

    /// The client (and so the connection pool) to use. Without one, the fetcher gets a client
    /// of its own.
    pub fn client(mut self, client: HttpClient) -> Self {
        self.client = Some(client);
        self
    }

    /// The time the whole exchange may take: connecting, the response head, redirects and
    /// the whole body. 10 s by default. A [`deadline()`](muster_core::deadline) that comes
    /// first ends the exchange as well and is what is reported (see
    /// [timeouts](HttpFetcher#timeouts-and-cancellation)): never set this past the deadline as
    /// a backstop. Must not be zero.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The largest response body accepted, in bytes: 1 MiB by default. Enforced while the
    /// body streams in; the excess is never buffered. Must not be zero.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Follows up to `max` redirects (0, the default, follows none: a 3xx is an
    /// [`HttpError::Redirect`]). Only targets with the scheme of the original URL are
    /// followed; static headers are not sent to another host or port.
    pub fn follow_redirects(mut self, max: usize) -> Self {
        self.max_redirects = max;
        self
    }

    /// Adds a header sent with every request, e.g. an `authorization` token. Added twice,
    /// the header is sent twice. The name and value are checked by [`build`](Self::build);
    /// headers the client manages itself (`host`, `content-length`, `transfer-encoding`,
    /// `connection`, ...) and the per-request ones (`x-request-id`, `traceparent`,
    /// `x-muster-deadline-ms`) are refused.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Builds the fetcher.
    ///
    /// # Errors
    ///
    /// An [`HttpConfigError`] if the template is not an absolute `http`/`https` URL with
    /// well-formed `{name}` placeholders in path segments or query values only, if a header
    /// is invalid or reserved, or if the timeout or the body limit is zero.
    pub fn build(self) -> Result<HttpFetcher, HttpConfigError> {
        let template = Template::parse(&self.template)?;
        if self.timeout.is_zero() {
            return Err(HttpConfigError::ZeroTimeout);
        }
        if self.max_body == 0 {
            return Err(HttpConfigError::ZeroMaxBody);
        }

        let mut cross_origin_headers = HeaderMap::new();
        cross_origin_headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        cross_origin_headers.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("muster-adapters/", env!("CARGO_PKG_VERSION"))),
        );
        let mut statics = HeaderMap::new();
        for (name, value) in &self.headers {
            let invalid = |reason: &str| HttpConfigError::Header { name: name.clone(), reason: reason.to_owned() };
            let header_name = HeaderName::try_from(name.as_str()).map_err(|_| invalid("not a valid header name"))?;
            if is_reserved(&header_name) {
                return Err(invalid("set by the client itself"));
            }
            let mut header_value =
                HeaderValue::try_from(value.as_str()).map_err(|_| invalid("not a valid header value"))?;
            if is_credential(&header_name) {
                header_value.set_sensitive(true);
            }
            statics.append(header_name, header_value);
        }
        let mut headers = cross_origin_headers.clone();
        for name in statics.keys() {
            headers.remove(name);
        }
        for (name, value) in &statics {
            headers.append(name, value.clone());
        }

        let mut forward: Vec<HeaderName> = Vec::with_capacity(self.forward.len());
        for name in &self.forward {
            let invalid = |reason: &str| HttpConfigError::Header { name: name.clone(), reason: reason.to_owned() };
            let header_name = HeaderName::try_from(name.as_str()).map_err(|_| invalid("not a valid header name"))?;
            if is_reserved(&header_name) || header_name == header::CONTENT_TYPE {
                return Err(invalid("set by the client itself"));
            }
            if !forward.contains(&header_name) {
                forward.push(header_name);
            }
        }

        Ok(HttpFetcher {
            config: Arc::new(Config {
                client: self.client.unwrap_or_default(),
                template,
                method: self.method,
                forward,
                timeout: self.timeout,
                max_body: self.max_body,
                max_redirects: self.max_redirects,
                headers,
                cross_origin_headers,
            }),
        })
    }
}

impl fmt::Debug for HttpFetcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("HttpFetcherBuilder")
            .field("template", &self.template)
            .field("client", &self.client)
            .field("timeout", &self.timeout)
            .field("max_body", &self.max_body)
            .field("max_redirects", &self.max_redirects)
            .field("headers", &headers)
            .field("method", &self.method)
            .field("forward", &self.forward)
            .finish()
    }
}

/// Headers a static configuration may not set: framing and connection management belong to
/// the client, the propagation headers to each request.
fn is_reserved(name: &HeaderName) -> bool {
    [
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        header::ACCEPT_ENCODING,
        DEADLINE_HEADER,
        REQUEST_ID_HEADER,
        TRACEPARENT_HEADER,
    ]
    .contains(name)
        || matches!(name.as_str(), "keep-alive" | "proxy-connection")
}

/// OpenTelemetry (feature `otel`): the `traceparent` of a tracing span, from its
/// OpenTelemetry context.
#[cfg(feature = "otel")]
mod otel {
    use http::{Method, StatusCode, Uri};
    use opentelemetry::trace::TraceContextExt as _;
    use tracing::field::Empty;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;

    use super::HttpError;

    /// One HTTP exchange as an `attempt` span, after the OpenTelemetry semantic conventions for
    /// HTTP client spans: span kind `client` (named `attempt`, as in the logs); `http.request.method`,
    /// `server.address`, `server.port`, `url.full` (without the query, the fragment or any
    /// user info), `http.response.status_code` of the last response; on a failure `error.type`
    /// (the status code for a status error, else the error's kind) and the error status. An
    /// exchange dropped before it ended (cancelled) has `error.type` `cancelled`, `cancelled`
    /// with the cause, and the error status with that cause.
    pub(super) struct Attempt {
        span: tracing::Span,
        ended: bool,
    }

    impl Attempt {
        pub(super) fn new(method: &Method, uri: &Uri) -> Self {
            let scheme = uri.scheme_str().unwrap_or("http");
            let host = uri.host().unwrap_or("");
            let port = uri.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
            let authority = match uri.port_u16() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_owned(),
            };
            let url = format!("{scheme}://{authority}{}", uri.path());
            let span = tracing::info_span!(
                "attempt",
                "otel.kind" = "client",
                "http.request.method" = method.as_str(),
                "server.address" = host,
                "server.port" = i64::from(port),
                "url.full" = url.as_str(),
                "http.response.status_code" = Empty,
                "error.type" = Empty,
                cancelled = Empty,
                "otel.status_code" = Empty,
                "otel.status_description" = Empty,
            );
            Self { span, ended: false }
        }

        pub(super) fn span(&self) -> &tracing::Span {
            &self.span
        }

        /// A response came with `status` (each of a redirect chain: the last one stays).
        pub(super) fn status(&self, status: StatusCode) {
            self.span.record("http.response.status_code", i64::from(status.as_u16()));
        }

        /// The exchange ended with `result`.
        pub(super) fn end<T>(mut self, result: &Result<T, HttpError>) {
            self.ended = true;
            if let Err(error) = result {
                let kind = match error {
                    HttpError::Status { status, .. } => status.as_str().to_owned(),
                    error => error.kind().as_str().to_owned(),
                };
                self.span.record("error.type", kind.as_str());
                error_status(&self.span, &error.to_string());
            }
        }
    }

    impl Drop for Attempt {
        fn drop(&mut self) {
            if !self.ended {
                // The group's cause (a sibling failed, the deadline, the caller), else a policy
                // around this fetch stopped it: its timeout, or a hedge that won elsewhere.
                let timed_out = muster_core::deadline().is_some_and(|deadline| deadline <= tokio::time::Instant::now());
                let cause = muster_core::cancellation()
                    .and_then(|token| token.cause().map(ToString::to_string))
                    .unwrap_or_else(|| if timed_out { "the deadline passed" } else { "dropped" }.to_owned());
                self.span.record("error.type", "cancelled");
                self.span.record("cancelled", cause.as_str());
                error_status(&self.span, &format!("cancelled: {cause}"));
            }
        }
    }

    /// Gives `span` the error status with `description` (`otel.status_code`, then
    /// `otel.status_description`, which `tracing-opentelemetry` reads as the status).
    pub(super) fn error_status(span: &tracing::Span, description: &str) {
        span.record("otel.status_code", "ERROR");
        span.record("otel.status_description", description);
    }

    /// `span`'s W3C `traceparent` (`00-<trace id>-<span id>-<flags>`), if it has a valid
    /// OpenTelemetry span context (a `tracing-opentelemetry` layer is installed).
    pub(super) fn traceparent(span: &tracing::Span) -> Option<String> {
        let context = span.context();
        let span = context.span();
        let span = span.span_context();
        span.is_valid().then(|| format!("00-{}-{}-{:02x}", span.trace_id(), span.span_id(), span.trace_flags().to_u8()))
    }
}

/// Whether `value` is a W3C trace-context `traceparent` of version 00: `00-` 32 lower-case
/// hex digits (not all zero) `-` 16 (not all zero) `-` 2.
fn is_valid_traceparent(value: &str) -> bool {
    let fields: Vec<&str> = value.split('-').collect();
    let hex = |field: &str, len: usize| {
        field.len() == len && field.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
    };
    let nonzero = |field: &str| field.bytes().any(|byte| byte != b'0');
    matches!(fields.as_slice(), [version, trace_id, parent_id, flags]
        if *version == "00"
            && hex(trace_id, 32) && nonzero(trace_id)
            && hex(parent_id, 16) && nonzero(parent_id)
            && hex(flags, 2))
}

/// A header value as lossy UTF-8.
fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

/// Refuses a 2xx response that is not uncompressed JSON.
fn check_json_headers(response: &Response<Incoming>) -> Result<(), HttpError> {
    let headers = response.headers();
    for encoding in headers.get_all(header::CONTENT_ENCODING) {
        let identity = encoding.to_str().is_ok_and(|list| {
            list.split(',').map(str::trim).all(|coding| coding.is_empty() || coding.eq_ignore_ascii_case("identity"))
        });
        if !identity {
            return Err(HttpError::Encoding { found: lossy(encoding) });
        }
    }
    let content_type = headers.get(header::CONTENT_TYPE);
    if !content_type.is_some_and(is_json) {
        return Err(HttpError::ContentType { found: content_type.map(lossy) });
    }
    Ok(())
}

/// Whether a `Content-Type` is `application/json` or `application/*+json`, parameters aside.
fn is_json(content_type: &HeaderValue) -> bool {
    let Ok(content_type) = content_type.to_str() else { return false };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.split_once('/') {
        Some(("application", subtype)) => subtype == "json" || (subtype.ends_with("+json") && subtype.len() > 5),
        _ => false,
    }
}

/// `future`'s output, or `None` if `expiry` passes first.
async fn before<F: Future>(mut expiry: Pin<&mut Sleep>, future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    poll_fn(|cx| match future.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending => expiry.as_mut().poll(cx).map(|()| None),
    })
    .await
}

/// Reads the body up to `limit` bytes; `None` if `expiry` passes first.
async fn read_limited(
    mut body: Incoming,
    limit: usize,
    mut expiry: Pin<&mut Sleep>,
) -> Result<Option<Vec<u8>>, HttpError> {
    let announced = body.size_hint().exact();
    if announced.is_some_and(|len| len > limit as u64) {
        return Err(HttpError::BodyTooLarge { limit });
    }
    let capacity = announced.map_or(8 * 1024, |len| usize::try_from(len).unwrap_or(limit)).min(limit);
    let mut buffer = Vec::with_capacity(capacity);
    loop {
        let Some(frame) = before(expiry.as_mut(), body.frame()).await else { return Ok(None) };
        let Some(frame) = frame else { return Ok(Some(buffer)) };
        let frame = frame.map_err(|error| HttpError::Protocol { source: error.into() })?;
        if let Ok(data) = frame.into_data() {
            if data.len() > limit - buffer.len() {
                return Err(HttpError::BodyTooLarge { limit });
            }
            buffer.extend_from_slice(&data);
        }
    }
}

/// Reads the first [`EXCERPT_LEN`] bytes of an error body, or what arrives of them before
/// `expiry` or a broken connection, as lossy UTF-8 (a character cut at the end is dropped).
async fn read_excerpt(mut body: Incoming, mut expiry: Pin<&mut Sleep>) -> String {
    let mut excerpt = Vec::new();
    while excerpt.len() < EXCERPT_LEN {
        match before(expiry.as_mut(), body.frame()).await {
            Some(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    let take = data.len().min(EXCERPT_LEN - excerpt.len());
                    excerpt.extend_from_slice(&data[..take]);
                }
            }
            _ => break,
        }
    }
    if let Err(error) = std::str::from_utf8(&excerpt) {
        if error.error_len().is_none() {
            excerpt.truncate(error.valid_up_to());
        }
    }
    String::from_utf8_lossy(&excerpt).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_valid_version_00_traceparents_pass() {
        assert!(is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
        assert!(!is_valid_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"), "upper case");
        assert!(!is_valid_traceparent("00-00000000000000000000000000000000-00f067aa0ba902b7-01"), "zero trace id");
        assert!(!is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"), "zero parent id");
        assert!(!is_valid_traceparent("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), "version");
        assert!(!is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x"));
        assert!(!is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01"), "short");
        assert!(!is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g"));
        assert!(!is_valid_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nx: y"));
        assert!(!is_valid_traceparent(""));
    }

    #[test]
    fn json_content_types() {
        let json = |value: &'static str| is_json(&HeaderValue::from_static(value));
        assert!(json("application/json"));
        assert!(json("Application/JSON; charset=utf-8"));
        assert!(json("application/problem+json"));
        assert!(!json("application/+json"));
        assert!(!json("text/json"));
        assert!(!json("text/html"));
        assert!(!json("application/jsonp"));
        assert!(!json(""));
    }

    #[test]
    fn static_headers_are_checked_and_may_replace_the_defaults() {
        let builder = || HttpFetcher::builder("http://host/{id}");
        let error = builder().header("host", "evil").build().unwrap_err();
        assert_eq!(error.to_string(), "invalid header `host`: set by the client itself");
        let error = builder().header("x-muster-deadline-ms", "1").build().unwrap_err();
        assert!(matches!(error, HttpConfigError::Header { .. }));
        let error = builder().header("bad name", "1").build().unwrap_err();
        assert_eq!(error.to_string(), "invalid header `bad name`: not a valid header name");
        let error = builder().header("x-a", "a\r\nb").build().unwrap_err();
        assert_eq!(error.to_string(), "invalid header `x-a`: not a valid header value");
        assert_eq!(builder().timeout(Duration::ZERO).build().unwrap_err(), HttpConfigError::ZeroTimeout);
        assert_eq!(builder().max_body(0).build().unwrap_err(), HttpConfigError::ZeroMaxBody);

        let fetcher = builder().header("accept", "application/vnd.x+json").header("x-a", "1").header("x-a", "2");
        let fetcher = fetcher.build().unwrap();
        let headers = &fetcher.config.headers;
        assert_eq!(headers.get_all(header::ACCEPT).iter().collect::<Vec<_>>(), ["application/vnd.x+json"]);
        assert_eq!(headers.get_all("x-a").iter().collect::<Vec<_>>(), ["1", "2"]);
        assert!(fetcher.config.cross_origin_headers.get("x-a").is_none());
        assert_eq!(fetcher.config.cross_origin_headers[header::ACCEPT], "application/json");
    }
}
