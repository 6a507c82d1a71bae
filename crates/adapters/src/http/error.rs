//! The errors of the HTTP fetcher: [`HttpError`] for a failed fetch, [`HttpConfigError`] for a
//! fetcher that cannot be built.

use std::time::Duration;

use ::http::StatusCode;
use muster_core::{BoxError, ErrorKind};

/// Why an [`HttpFetcher`](super::HttpFetcher) fetch failed.
///
/// Each failure has its own variant, a [`kind`](Self::kind) in muster's one vocabulary
/// ([`ErrorKind`]) for logs, metrics and error bodies, and an
/// [`is_retryable`](Self::is_retryable) verdict for retry policies; it says both through
/// [`Classify`](muster_core::Classify), which muster's policies pass on. The error
/// does not name the source: the group or aggregator running the fetch adds the name.
///
/// `Display` never includes anything the backend sent (its body, its `Location`,
/// `Content-Type` or `Content-Encoding`), nor an address, so an error message can be returned
/// to a client without leaking what a backend said; the fields keep those values for the
/// logs that want them. The `#[source]` chain (hyper's and the OS's text) is for logs too.
///
/// ```
/// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
/// use std::time::Duration;
/// use muster::ErrorKind;
/// use muster::http::HttpError;
///
/// let error = HttpError::Timeout { after: Duration::from_millis(250) };
/// assert_eq!(error.kind(), ErrorKind::Timeout);
/// assert!(error.is_retryable());
/// assert_eq!(error.to_string(), "no complete response within 250ms");
///
/// let error = HttpError::BodyTooLarge { limit: 1 << 20 };
/// assert_eq!(error.kind().as_str(), "body_too_large");
/// assert!(!error.is_retryable());
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The server answered with a status other than 2xx (or 3xx, see
    /// [`Redirect`](Self::Redirect)).
    #[error("unexpected status {status}")]
    Status {
        /// The status the server sent.
        status: StatusCode,
        /// The first 200 bytes (at most) of the response body, decoded as lossy UTF-8. Reading
        /// it is bounded by the fetch's timeout; whatever arrived in time is kept.
        body_excerpt: String,
    },
    /// No connection could be made: the name did not resolve, the connection was refused, or
    /// the TLS handshake failed.
    #[error("could not connect")]
    Connect {
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// The whole exchange (connect, response head and body, redirects included) did not
    /// finish within the fetcher's [`timeout`](super::HttpFetcherBuilder::timeout) (`after`),
    /// or the fetch's deadline had already passed when it started, so nothing was sent
    /// (`after` is zero). A deadline does not shorten the timeout: the group or aggregator that
    /// set it cancels the fetch when it passes, and reports the deadline.
    #[error("no complete response within {after:?}")]
    Timeout {
        /// The time the fetch was given.
        after: Duration,
    },
    /// The response body is larger than the fetcher's limit. The body was read only up to
    /// the limit (or not at all, when `Content-Length` announced more), then the connection
    /// was closed.
    #[error("response body larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The response body is not valid JSON, or not the JSON a
    /// [`Decoded`](super::Decoded) fetcher expects.
    #[error("response body is not the expected JSON")]
    InvalidJson {
        /// What serde_json rejected.
        #[source]
        source: serde_json::Error,
    },
    /// A 2xx response whose `Content-Type` is neither `application/json` nor an
    /// `application/*+json` type.
    #[error("unexpected content type (not JSON)")]
    ContentType {
        /// The `Content-Type` the server sent (lossy UTF-8), or `None` if it sent none.
        found: Option<String>,
    },
    /// A 3xx response that was not followed: redirects are disabled (the default), the limit
    /// was reached, or the target is not an `http`/`https` URL with the original scheme.
    #[error("redirect ({status}) not followed")]
    Redirect {
        /// The 3xx status.
        status: StatusCode,
        /// The `Location` header (lossy UTF-8), or `None` if there was none.
        location: Option<String>,
    },
    /// The exchange broke mid-way: the connection was reset or closed before a complete
    /// response (an empty reply, a truncated body), or the server sent something that is not
    /// HTTP/1 (a malformed head or chunked body, random bytes).
    #[error("malformed or interrupted response")]
    Protocol {
        /// What hyper reported.
        #[source]
        source: BoxError,
    },
    /// The request has no value for a placeholder of the URL template, or an empty one for a
    /// placeholder in the path (an empty segment would address another resource: `/users/`
    /// instead of `/users/7`).
    #[error("no value for URL placeholder `{{{name}}}`")]
    MissingParam {
        /// The placeholder's name, without braces.
        name: String,
    },
    /// A 2xx response with a `Content-Encoding` the fetcher did not ask for. The fetcher
    /// never requests compression, so it never has to decompress (or size-check) a body.
    #[error("unrequested content encoding")]
    Encoding {
        /// The `Content-Encoding` the server sent (lossy UTF-8).
        found: String,
    },
    /// The URL built from the template and the request's values is not a valid URI; in
    /// practice, it is longer than the 65,534 bytes `http::Uri` accepts.
    #[error("the request URL is not valid")]
    InvalidUrl {
        /// Why `http::Uri` refused it.
        #[source]
        source: ::http::uri::InvalidUri,
    },
}

impl HttpError {
    /// What kind of failure it is, in muster's one vocabulary ([`ErrorKind`]): `status`,
    /// `connect`, `timeout`, `body_too_large`, `invalid_json`, `content_type` (an unexpected
    /// content type, or a content encoding that was not asked for), `redirect`, `protocol`, or
    /// `invalid_request` (a missing parameter or an invalid URL: the request could not be
    /// made). The same word is in the aggregator's error, report, log event, metrics and HTTP
    /// error body.
    ///
    /// ```
    /// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
    /// use muster::ErrorKind;
    /// use muster::http::HttpError;
    ///
    /// let error = HttpError::MissingParam { name: "id".into() };
    /// assert_eq!(error.kind(), ErrorKind::InvalidRequest);
    /// assert_eq!(error.to_string(), "no value for URL placeholder `{id}`");
    /// ```
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Status { .. } => ErrorKind::Status,
            Self::Connect { .. } => ErrorKind::Connect,
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::BodyTooLarge { .. } => ErrorKind::BodyTooLarge,
            Self::InvalidJson { .. } => ErrorKind::InvalidJson,
            Self::ContentType { .. } | Self::Encoding { .. } => ErrorKind::ContentType,
            Self::Redirect { .. } => ErrorKind::Redirect,
            Self::Protocol { .. } => ErrorKind::Protocol,
            Self::MissingParam { .. } | Self::InvalidUrl { .. } => ErrorKind::InvalidRequest,
        }
    }

    /// Whether trying again may succeed: connect errors, timeouts, broken exchanges, 5xx and
    /// `429 Too Many Requests` are retryable; everything else would fail the same way again.
    ///
    /// ```
    /// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
    /// use muster::http::{HttpError, StatusCode};
    ///
    /// let status = |status| HttpError::Status { status, body_excerpt: String::new() };
    /// assert!(status(StatusCode::SERVICE_UNAVAILABLE).is_retryable());
    /// assert!(status(StatusCode::TOO_MANY_REQUESTS).is_retryable());
    /// assert!(!status(StatusCode::NOT_FOUND).is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect { .. } | Self::Timeout { .. } | Self::Protocol { .. } => true,
            Self::Status { status, .. } => status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS,
            _ => false,
        }
    }

    /// The HTTP status, for [`Status`](Self::Status) and [`Redirect`](Self::Redirect) errors.
    ///
    /// ```
    /// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
    /// use muster::http::{HttpError, StatusCode};
    ///
    /// let error = HttpError::Redirect { status: StatusCode::FOUND, location: Some("/login".into()) };
    /// assert_eq!(error.status(), Some(StatusCode::FOUND));
    /// assert_eq!(error.to_string(), "redirect (302 Found) not followed", "the location is a field, for logs");
    /// ```
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Status { status, .. } | Self::Redirect { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Why an [`HttpFetcherBuilder`](super::HttpFetcherBuilder) could not build a fetcher.
///
/// ```
/// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
/// use muster::http::{HttpConfigError, HttpFetcher};
///
/// let error = HttpFetcher::builder("https://{tenant}.internal/v1/users/{id}").build().unwrap_err();
/// assert!(matches!(error, HttpConfigError::Template { .. }));
/// assert_eq!(
///     error.to_string(),
///     "invalid URL template `https://{tenant}.internal/v1/users/{id}`: \
///      placeholders are allowed in path segments and query values, not in the host or port",
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpConfigError {
    /// The URL template is not an absolute `http`/`https` URL with well-formed placeholders in
    /// path segments or query values only.
    #[error("invalid URL template `{template}`: {reason}")]
    Template {
        /// The template as given.
        template: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A static header has an invalid name or value, or is one the client manages itself
    /// (`host`, `content-length`, `transfer-encoding`, `connection`, ...).
    #[error("invalid header `{name}`: {reason}")]
    Header {
        /// The header name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The timeout is zero.
    #[error("the timeout must be greater than zero")]
    ZeroTimeout,
    /// The body limit is zero.
    #[error("the body limit must be at least one byte")]
    ZeroMaxBody,
    /// A limit of an [`HttpClientBuilder`](super::HttpClientBuilder) is out of range.
    #[error("invalid client limit `{name}`: {reason}")]
    Limit {
        /// The builder method that set it, e.g. `dns_concurrency`.
        name: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}
