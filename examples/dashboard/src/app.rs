//! The dashboard's HTTP side: the router, the handler, and how an aggregation's result becomes
//! a response.
//!
//! `GET /dashboard/{user_id}` runs one aggregation of the two HTTP sources, `profile` and
//! `transactions`, under the global deadline:
//!
//! - success: 200, `{"profile": <body>, "transactions": <body>}`, the backends' JSON passed
//!   through byte for byte;
//! - a source failed: 502, `{"error": <message>, "source": <name>, "kind": <kind>}`, where the
//!   kind is the HTTP fetcher's (`status`, `connect`, `timeout`, `invalid_json`, ...);
//! - the deadline passed: 504, `{"error": <message>, "source": null, "kind": "timeout",
//!   "pending": [<names>]}`.
//!
//! Whatever happens, the other source has been cancelled (its connection closed) before the
//! answer is sent, and a client that goes away cancels the whole aggregation.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use muster::http::{HttpClient, HttpConfigError, HttpError, HttpFetcher, UrlParams};
use muster::{AggregateError, Aggregator, BuildError, Deadline, ErrorKind, RequestContext};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The header carrying the request id, read from the client and sent to the backends.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The W3C trace context header, forwarded to the backends as it came.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// Where the backends are and how long an aggregation may take.
#[derive(Clone, Debug)]
pub struct Config {
    /// The profile service's URL template, with `{id}` for the user id.
    pub profile_url: String,
    /// The transactions service's URL template, with `{id}` for the user id.
    pub transactions_url: String,
    /// The global deadline of one aggregation.
    pub timeout: Duration,
    /// The client's request headers copied to both backends (issue 11): `authorization` by
    /// default in the binary (`--forward-headers`).
    pub forward_headers: Vec<HeaderName>,
}

/// Why a [`Config`] could not become an [`AppState`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A URL template is not usable.
    #[error("{source_name} backend")]
    Template {
        /// The source it was for: `profile` or `transactions`.
        source_name: &'static str,
        /// The template.
        template: String,
        /// What is wrong with it.
        #[source]
        error: HttpConfigError,
    },
    /// The aggregator refused the options (e.g. a zero timeout).
    #[error("invalid aggregator configuration")]
    Aggregator(#[from] BuildError),
    /// A URL template has a placeholder no dashboard request fills (e.g. `{tenant}`): every
    /// request would fail, so the service does not start.
    #[error(
        "{source_name} backend: the URL template `{template}` has a placeholder `{{{name}}}` that no request fills"
    )]
    Placeholder {
        /// The source it was for: `profile` or `transactions`.
        source_name: &'static str,
        /// The template.
        template: String,
        /// The placeholder, without braces.
        name: String,
    },
}

/// What the handler needs: the aggregator over the two HTTP sources, whose outputs are the
/// profile's and the transactions' JSON bodies, in that order. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    aggregator: Aggregator<DashboardRequest, (Box<RawValue>, Box<RawValue>)>,
}

impl AppState {
    /// Builds the HTTP fetchers (sharing one pooled client) and the aggregator.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the template or option that is wrong.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        let client = HttpClient::new();
        // The global deadline is what answers a slow backend (504, pending named). The
        // fetcher's own timeout is only a backstop, set past the deadline so it never wins.
        let backstop = config.timeout + Duration::from_secs(1);
        let fetcher = |source_name: &'static str, template: &str| {
            let builder = HttpFetcher::builder(template).client(client.clone()).timeout(backstop);
            let builder =
                config.forward_headers.iter().fold(builder, |builder, name| builder.forward_header(name.as_str()));
            let fetcher = builder.build().map_err(|error| ConfigError::Template {
                source_name,
                template: template.to_owned(),
                error,
            })?;
            let probe = DashboardRequest::default();
            if let Some(name) = fetcher.placeholders().find(|name| probe.param(name).is_none()) {
                let (template, name) = (template.to_owned(), name.to_owned());
                return Err(ConfigError::Placeholder { source_name, template, name });
            }
            Ok(fetcher)
        };
        let aggregator = Aggregator::builder()
            .source("profile", fetcher("profile", &config.profile_url)?)
            .source("transactions", fetcher("transactions", &config.transactions_url)?)
            .options(Deadline(config.timeout))
            .build()?;
        Ok(Self { aggregator })
    }
}

/// The dashboard's router: `GET /dashboard/{user_id}`, `GET /healthz`, and an access log of
/// every request.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/dashboard/{user_id}", get(dashboard))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(state)
        .layer(middleware::from_fn(access_log))
}

/// One dashboard request, as the sources see it: the [`UrlParams`] of their URL templates and
/// the context they propagate.
#[derive(Clone, Debug, Default)]
pub struct DashboardRequest {
    /// The user id, percent-decoded from the dashboard's path (`{id}` in the templates).
    pub user_id: String,
    /// The demo knobs from the dashboard's query string.
    pub knobs: Knobs,
    /// The incoming `x-request-id`, or a generated one.
    pub request_id: String,
    /// The incoming `traceparent`, if any.
    pub traceparent: Option<String>,
    /// The client's request headers: the sources forward the allow-listed ones
    /// ([`Config::forward_headers`]) and ignore the rest.
    pub headers: HeaderMap,
}

/// The knobs of the demo backends, from the dashboard request's query string; empty when not
/// given (the demo backends read empty as no delay, no failure).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default)]
pub struct Knobs {
    /// `{profile_delay_ms}`.
    pub profile_delay_ms: String,
    /// `{profile_fail}`.
    pub profile_fail: String,
    /// `{transactions_delay_ms}`.
    pub transactions_delay_ms: String,
    /// `{transactions_fail}`.
    pub transactions_fail: String,
}

impl UrlParams for DashboardRequest {
    fn param(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        let value = match name {
            "id" => &self.user_id,
            "profile_delay_ms" => &self.knobs.profile_delay_ms,
            "profile_fail" => &self.knobs.profile_fail,
            "transactions_delay_ms" => &self.knobs.transactions_delay_ms,
            "transactions_fail" => &self.knobs.transactions_fail,
            _ => return None,
        };
        Some(value.as_str().into())
    }

    fn request_id(&self) -> Option<&str> {
        Some(&self.request_id)
    }

    fn traceparent(&self) -> Option<&str> {
        self.traceparent.as_deref()
    }

    fn header(&self, name: &HeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }
}

/// The request id of the request being served, set by the access log.
#[derive(Clone, Debug)]
struct RequestId(String);

/// What the dashboard handler tells the access log about its answer.
#[derive(Clone, Debug)]
struct Answer {
    user_id: String,
    source: Option<String>,
    kind: &'static str,
}

async fn dashboard(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    user_id: Result<Path<String>, PathRejection>,
    knobs: Result<Query<Knobs>, QueryRejection>,
) -> Response {
    let user_id = match user_id {
        Ok(Path(user_id)) => user_id,
        Err(rejection) => return bad_request(&rejection.body_text()),
    };
    let knobs = match knobs {
        Ok(Query(knobs)) => knobs,
        Err(rejection) => return bad_request(&rejection.body_text()),
    };
    let traceparent = headers.get(TRACEPARENT).and_then(|value| printable(value, 512)).map(str::to_owned);
    let context = RequestContext::new().field("user_id", &user_id).field("request_id", &request_id);
    let request = DashboardRequest { user_id, knobs, request_id, traceparent, headers };
    let (mut response, source, kind) = match state.aggregator.aggregate_with(&request, context).await {
        Ok(aggregate) => {
            let (profile, transactions) = aggregate.outputs;
            (json_response(StatusCode::OK, &Dashboard { profile, transactions }), None, "ok")
        }
        Err(error) => failure(&error),
    };
    response.extensions_mut().insert(Answer { user_id: request.user_id, source, kind });
    response
}

/// The 200 body: each backend's JSON as it came, under its source's name, without re-parsing.
#[derive(Serialize)]
struct Dashboard {
    profile: Box<RawValue>,
    transactions: Box<RawValue>,
}

#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: String,
    source: Option<&'a str>,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending: Option<Vec<&'a str>>,
}

/// 504 for the global deadline, 502 for a failed source (with the HTTP fetcher's error kind
/// when it is an HTTP error), and the access log's source and kind.
fn failure(error: &AggregateError) -> (Response, Option<String>, &'static str) {
    let message = crate::server::client_message(error);
    if let Some(source) = error.source_name() {
        let kind = match error.source_error().and_then(|error| error.downcast_ref::<HttpError>()) {
            Some(http) => http.kind(),
            None => error.kind().as_str(),
        };
        let body = ErrorBody { error: message, source: Some(source), kind, pending: None };
        return (json_response(StatusCode::BAD_GATEWAY, &body), Some(source.to_owned()), kind);
    }
    let (status, kind) = match error.kind() {
        ErrorKind::Timeout => (StatusCode::GATEWAY_TIMEOUT, "timeout"),
        // Only a cancellation from outside the aggregation gets here; nothing in this
        // service cancels one, so it is reported as what it is.
        other => (StatusCode::SERVICE_UNAVAILABLE, other.as_str()),
    };
    let pending = Some(error.pending().iter().map(|name| &**name).collect());
    (json_response(status, &ErrorBody { error: message, source: None, kind, pending }), None, kind)
}

fn bad_request(message: &str) -> Response {
    let body = ErrorBody { error: message.to_owned(), source: None, kind: "bad_request", pending: None };
    json_response(StatusCode::BAD_REQUEST, &body)
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => {
            (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
        }
        Err(error) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("could not encode the response: {error}")).into_response()
        }
    }
}

/// Gives every request an id (the client's `x-request-id` if it is sensible, else a new one),
/// echoes it in the response, and logs one line per request when it has been answered.
async fn access_log(mut request: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let request_id = match request.headers().get(REQUEST_ID).and_then(|value| printable(value, 128)) {
        Some(id) => id.to_owned(),
        None => new_request_id(),
    };
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    request.extensions_mut().insert(RequestId(request_id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let status = response.status().as_u16();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let answer = response.extensions().get::<Answer>();
    let user_id = answer.map(|answer| answer.user_id.as_str());
    let source = answer.and_then(|answer| answer.source.as_deref());
    let kind = answer.map(|answer| answer.kind);
    if status >= 500 {
        tracing::warn!(%method, path, status, elapsed_ms, request_id, user_id, source, kind, "request failed");
    } else {
        tracing::info!(%method, path, status, elapsed_ms, request_id, user_id, kind, "request");
    }
    response
}

/// The header's value if it is printable ASCII of at most `max` bytes: anything else from the
/// client is not worth propagating or logging.
fn printable(value: &HeaderValue, max: usize) -> Option<&str> {
    let value = value.to_str().ok()?;
    let sensible = !value.is_empty() && value.len() <= max && value.bytes().all(|byte| byte.is_ascii_graphic());
    sensible.then_some(value)
}

/// A new request id: 16 hex digits from the process's random hash keys and a counter.
fn new_request_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    static KEYS: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{:016x}", KEYS.get_or_init(RandomState::new).hash_one(count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_new_every_time() {
        let (a, b) = (new_request_id(), new_request_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn only_printable_header_values_are_kept() {
        assert_eq!(printable(&HeaderValue::from_static("req-1"), 128), Some("req-1"));
        assert_eq!(printable(&HeaderValue::from_static("has space"), 128), None);
        assert_eq!(printable(&HeaderValue::from_static(""), 128), None);
        assert_eq!(printable(&HeaderValue::from_static("long"), 3), None);
    }

    #[test]
    fn url_params_are_the_id_and_the_knobs() {
        let request = DashboardRequest {
            user_id: "../a b".to_owned(),
            knobs: Knobs { transactions_fail: "1".to_owned(), ..Knobs::default() },
            request_id: "r-1".to_owned(),
            traceparent: None,
            headers: HeaderMap::new(),
        };
        assert_eq!(request.param("id").as_deref(), Some("../a b"));
        assert_eq!(request.param("transactions_fail").as_deref(), Some("1"));
        assert_eq!(request.param("profile_delay_ms").as_deref(), Some(""));
        assert_eq!(request.param("user"), None);
        assert_eq!(request.request_id(), Some("r-1"));
    }
}
