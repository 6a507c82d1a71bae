//! The dashboard's HTTP side: the router, the handler, and how an aggregation's result becomes
//! a response.
//!
//! `GET /dashboard/{user_id}` runs one aggregation of the two HTTP sources, `profile` and
//! `transactions`, under the global deadline:
//!
//! - success: 200, `{"profile": <body>, "transactions": <body>}`, the backends' JSON passed
//!   through byte for byte, then `"stale": ["transactions"]` when a cached section stood in
//!   for a failing backend (`--stale-if-error-ms`);
//! - a source failed: 502, `{"error": <message>, "source": <name>, "kind": <kind>}`, where the
//!   kind is the HTTP fetcher's (`status`, `connect`, `timeout`, `invalid_json`, ...);
//! - the deadline passed: 504, `{"error": <message>, "source": null, "kind": "timeout",
//!   "pending": [<names>]}`.
//!
//! With `Accept: application/x-ndjson` (or `text/event-stream`) each section is sent the moment
//! its source completes, then a line with the outcome: [`muster::axum::stream`], whose docs give
//! the lines.
//!
//! Whatever happens, the other source has been cancelled (its connection closed) before the
//! answer is sent, and a client that goes away cancels the whole aggregation.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Router};
use muster::axum::{Answer, Format, StreamOutcome};
use muster::http::{HttpClient, HttpConfigError, HttpFetcher, UrlParams};
use muster::in_flight::InFlight;
use muster::policy::{self, Cache, CircuitBreaker, RedisTier};
use muster::{Aggregator, BuildError, Deadline, Fallback, Fetcher, RequestContext, Retry, builder::Input};

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
    /// The offers service's URL template, with `{tier}` for the tier the profile answered;
    /// `None`: no offers service, the section is always its empty fallback.
    pub offers_url: Option<String>,
    /// The global deadline of one aggregation.
    pub timeout: Duration,
    /// The client's request headers copied to the profile and transactions backends (issue
    /// 11): `authorization` by default in the binary (`--forward-headers`).
    pub forward_headers: Vec<HeaderName>,
    /// The client's request headers copied to the offers backend, which needs no credentials:
    /// none by default in the binary (`--offers-forward-headers`).
    pub offers_forward_headers: Vec<HeaderName>,
    /// The transactions section's cache (issue 20); `None` (the default): no cache.
    pub cache: Option<CacheConfig>,
}

/// The breaker, the retry budget and the retries on the profile and transactions backends
/// (issue 20): on by default, with the anchors' values (resilience4j's and Polly's breaker: 50 %
/// failures over at least 20 calls in 10 s, open 5 s doubling to 60 s, 1 probe; Finagle's
/// budget: 10 % of the calls, at least 5 a second, over 10 s; one retry, Envoy's default
/// `num_retries`). A backend whose breaker is open fails its section at once
/// with the kind `circuit_open`, instead of every request waiting for it.
///
/// The policies of a backend are `(CircuitBreaker, Budget, Retry)`, outermost first: the
/// breaker judges the whole call after its retries, and refuses it before anything else
/// runs (no budget token, no connection); the budget, inside it, governs the retries; the
/// retry asks the backend's error whether to try again (a 5xx or 429, a refused connection,
/// a protocol error or the fetcher's own timeout, never a 4xx or bad JSON), after a short
/// jittered backoff, and never starts one that would end past the deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resilience {
    /// The failure rate, in percent, that opens a backend's breaker (`--breaker-failure-rate`);
    /// `None`: no breaker (`off`).
    pub breaker_failure_rate: Option<u8>,
    /// The share of a backend's calls, in percent, that may be retried or hedged
    /// (`--retry-budget-percent`); `None`: no budget, every retryable failure is retried
    /// (`off`; for comparison only: in a brownout it adds load to the failing backend).
    pub retry_budget_percent: Option<u8>,
    /// The attempts a call to a backend may make, the first one included (`--retry-attempts`):
    /// 1 for no retries.
    pub retry_attempts: u32,
    /// Each attempt's own timeout on the profile and transactions backends
    /// (`--attempt-timeout-ms`). `None` (the default): the deadline answers a slow backend (504,
    /// the pending sources named), and the breaker does not count the deadline. Set below the
    /// deadline, an attempt at a backend that hangs fails with the kind `timeout`, is retried
    /// within the budget, and counts for the backend's breaker, which then cuts it off.
    pub attempt_timeout: Option<Duration>,
}

impl Default for Resilience {
    fn default() -> Self {
        Self {
            breaker_failure_rate: Some(50),
            retry_budget_percent: Some(10),
            retry_attempts: 2,
            attempt_timeout: None,
        }
    }
}

impl Resilience {
    /// Every policy off: no breaker, no budget, no retry (what `cargo xtask bench` compares
    /// the defaults with).
    pub const OFF: Self =
        Self { breaker_failure_rate: None, retry_budget_percent: None, retry_attempts: 1, attempt_timeout: None };

    fn breaker(&self) -> Option<CircuitBreaker> {
        self.breaker_failure_rate.map(|rate| CircuitBreaker::new().failure_rate(f64::from(rate)))
    }

    fn budget(&self) -> Option<policy::Budget> {
        self.retry_budget_percent.map(|percent| policy::Budget::new().percent(f64::from(percent)))
    }

    /// The retry under a deadline of `deadline`: a backoff from a twentieth of the deadline (at
    /// most 10 ms) doubling up to ten times that (at most 100 ms), with jitter, so that a short
    /// deadline still leaves room for the retry.
    fn retry(&self, deadline: Duration) -> Retry {
        let min = (deadline / 20).clamp(Duration::from_micros(100), Duration::from_millis(10));
        Retry::attempts(self.retry_attempts).backoff(min, (min * 10).min(Duration::from_millis(100)))
    }
}

/// Adds the source `$name` to `$builder` behind `$outer` (a cache, or `()`) and the policies of
/// `$resilience`, `(CircuitBreaker, Budget, Retry)`, leaving out a breaker or budget that is
/// off (each combination is another type of source; the aggregator erases it).
macro_rules! source_with_resilience {
    ($builder:expr, $name:expr, $fetcher:expr, $outer:expr, $resilience:expr, $deadline:expr) => {{
        let (resilience, outer): (&Resilience, _) = (&$resilience, $outer);
        let retry = resilience.retry($deadline);
        match (resilience.breaker(), resilience.budget()) {
            (Some(breaker), Some(budget)) => $builder.source_with($name, $fetcher, (outer, breaker, budget, retry)),
            (Some(breaker), None) => $builder.source_with($name, $fetcher, (outer, breaker, retry)),
            (None, Some(budget)) => $builder.source_with($name, $fetcher, (outer, budget, retry)),
            (None, None) => $builder.source_with($name, $fetcher, (outer, retry)),
        }
    }};
}

/// How the transactions section is cached: a fresh answer serves the same user for `ttl`
/// without asking the backend, and an answer up to `ttl + stale_if_error` old stands in when
/// the backend fails or is late (the body then lists it under `"stale"`).
///
/// The key is the user id **and** the forwarded `authorization` header: the backend's answer
/// depends on both, and a key without the caller's credentials would serve one caller's
/// transactions to another who asks for the same user id. The demo knobs are left out of the
/// key on purpose, so that `?transactions_fail=1` shows a stale answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CacheConfig {
    /// How long an answer is served without asking the backend (`--cache-ttl-ms`); zero:
    /// always ask, keep answers only to stand in.
    pub ttl: Duration,
    /// How long past its ttl an answer stands in for a failure (`--stale-if-error-ms`).
    pub stale_if_error: Duration,
    /// A Redis (or Valkey) shared by the replicas (`--redis-url`), e.g.
    /// `redis://127.0.0.1:6379`; `None`: each replica caches alone.
    pub redis_url: Option<String>,
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
    /// The aggregator refused the options (e.g. a zero timeout, or a cache with a zero ttl
    /// and a zero stale-if-error).
    #[error("invalid aggregator configuration")]
    Aggregator(#[from] BuildError),
    /// The Redis URL is not one (`--redis-url`). An unreachable Redis is not an error: the
    /// cache warns and answers from the backend and its local tier.
    #[error("--redis-url")]
    Redis(#[from] muster::policy::RedisTierError),
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

/// The aggregation of one dashboard request: the profile's, the transactions' and the offers'
/// JSON bodies, in that order, each as the backend sent it.
pub type Dashboard = Aggregator<DashboardRequest, (Box<RawValue>, Box<RawValue>, Box<RawValue>)>;

/// What the handler needs: the aggregator over the HTTP sources. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    aggregator: Dashboard,
    /// The client's headers that any source forwards ([`Config::forward_headers`] and
    /// [`Config::offers_forward_headers`]): only these go into each call's context.
    forward: std::sync::Arc<[HeaderName]>,
    /// Every aggregation while it runs, and the last failed ones: the live view (issue 21).
    in_flight: InFlight,
    /// Who may read the live view over HTTP; `None` (the default): nobody, 404.
    debug: Option<crate::debug::Access>,
}

impl AppState {
    /// Builds the HTTP fetchers (sharing one pooled client) and the aggregator.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the template or option that is wrong.
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        Self::with_resilience(config, Resilience::default())
    }

    /// As [`new`](Self::new), with the breaker, the budget and the retries of `resilience`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the template or option that is wrong (a rate over 100 %, zero
    /// attempts, or more retries than their backoffs can fit in the deadline).
    pub fn with_resilience(config: &Config, resilience: Resilience) -> Result<Self, ConfigError> {
        let client = HttpClient::new();
        // The global deadline is what answers a slow backend (504, pending named): when it
        // comes with the fetcher's own timeout, the fetcher leaves it to fire.
        let fetcher = |source_name: &'static str, template: &str, probe: &dyn UrlParams| {
            let timeout = match resilience.attempt_timeout {
                Some(attempt) if source_name != "offers" => attempt.min(config.timeout),
                _ => config.timeout,
            };
            let builder = HttpFetcher::builder(template).client(client.clone()).timeout(timeout);
            // Credentials go only where they are needed: an allow-list per source.
            let forward =
                if source_name == "offers" { &config.offers_forward_headers } else { &config.forward_headers };
            let builder = forward.iter().fold(builder, |builder, name| builder.forward_header(name.as_str()));
            let fetcher = builder.build().map_err(|error| ConfigError::Template {
                source_name,
                template: template.to_owned(),
                error,
            })?;
            if let Some(name) = fetcher.placeholders().find(|name| probe.param(name).is_none()) {
                let (template, name) = (template.to_owned(), name.to_owned());
                return Err(ConfigError::Placeholder { source_name, template, name });
            }
            Ok(fetcher)
        };
        let (dashboard, offers) = (DashboardRequest::default(), OffersRequest::default());
        let offers_fetcher = match &config.offers_url {
            Some(template) => Some(fetcher("offers", template, &offers)?),
            None => None,
        };
        // Offers need the profile's tier: a dependent source, started the instant the profile
        // is in; optional, with an empty list when it fails or is late.
        let (builder, deadline) = (Aggregator::builder(), config.timeout);
        let profile = fetcher("profile", &config.profile_url, &dashboard)?;
        let builder = source_with_resilience!(builder, "profile", profile, (), resilience, deadline);
        let transactions = fetcher("transactions", &config.transactions_url, &dashboard)?;
        let builder = match &config.cache {
            None => source_with_resilience!(builder, "transactions", transactions, (), resilience, deadline),
            Some(settings) => {
                let cache = Cache::new(cache_key).ttl(settings.ttl).stale_if_error(settings.stale_if_error);
                match &settings.redis_url {
                    None => source_with_resilience!(builder, "transactions", transactions, cache, resilience, deadline),
                    Some(url) => {
                        let tier = RedisTier::new(url)?.namespace("dashboard:transactions").hashed_keys();
                        warn_if_unreachable(tier.clone());
                        let cache = cache.redis(tier);
                        source_with_resilience!(builder, "transactions", transactions, cache, resilience, deadline)
                    }
                }
            }
        };
        let in_flight = InFlight::new(crate::debug::CALLS);
        let aggregator = builder
            .then_with("offers", Input::<0>, OffersRequest::new, Offers(offers_fetcher), Fallback(no_offers()))
            .options(Deadline(config.timeout))
            .in_flight(&in_flight)
            .build()?;
        // Every name any source forwards goes into the call's context; each fetcher then sends
        // only the names on its own allow-list.
        let mut forward = config.forward_headers.clone();
        forward.extend(
            config.offers_forward_headers.iter().filter(|name| !config.forward_headers.contains(name)).cloned(),
        );
        Ok(Self { aggregator, forward: forward.into(), in_flight, debug: None })
    }

    /// Serves the live view (`GET /debug/aggregations`, `GET /debug`) to requests bearing
    /// `token`; see [`debug`](crate::debug).
    #[must_use]
    pub fn with_debug_token(mut self, token: &str) -> Self {
        self.debug = Some(crate::debug::Access::new(token));
        self
    }

    /// The aggregations running now, and the last failed ones.
    pub fn in_flight(&self) -> &InFlight {
        &self.in_flight
    }

    pub(crate) fn debug_access(&self) -> Option<&crate::debug::Access> {
        self.debug.as_ref()
    }
}

/// The transactions cache's key: the user id and the caller's credentials (the forwarded
/// `authorization` header, from the call's context); see [`CacheConfig`].
fn cache_key(request: &DashboardRequest) -> (String, Option<String>) {
    let authorization = muster::context().and_then(|context| context.header("authorization").map(str::to_owned));
    (request.user_id.clone(), authorization)
}

/// Logs a warning at start when the Redis tier does not answer: the dashboard starts anyway,
/// and the cache answers from the backend and its local tier until Redis does.
fn warn_if_unreachable(tier: RedisTier) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
    runtime.spawn(async move {
        if let Err(error) = tier.ping().await {
            tracing::warn!(%error, "redis unreachable at start: caching locally until it answers");
        }
    });
}

/// The dashboard's router: `GET /dashboard/{user_id}`, `GET /healthz`, and an access log of
/// every request.
pub fn app(state: AppState) -> Router {
    let router = Router::new().route("/dashboard/{user_id}", get(dashboard)).route("/healthz", get(|| async { "ok" }));
    // `GET /debug` and `GET /debug/aggregations`: 404 unless `--debug-token` is given.
    let router = router.merge(crate::debug::routes());
    // `GET /metrics` in Prometheus text, when built with the `metrics` feature.
    #[cfg(feature = "metrics")]
    let router = {
        // Installed now, so that it records from the first aggregation on.
        let _ = crate::metrics::handle();
        router.route("/metrics", get(crate::metrics::render))
    };
    // Anything else is a JSON error too: no route (404), or not a GET (405).
    let router = router
        .fallback(|| async { json_error(StatusCode::NOT_FOUND, "not_found", "no such path", None) })
        .method_not_allowed_fallback(|| async {
            json_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "only GET is served", None)
        });
    router.with_state(state).layer(middleware::from_fn(access_log))
}

/// One dashboard request, as the sources see it: the [`UrlParams`] of their URL templates,
/// nothing more. The request id, `traceparent` and forwarded headers travel once, in the
/// call's `RequestContext`, and the HTTP fetchers read them from `muster::context()`.
#[derive(Clone, Debug, Default)]
pub struct DashboardRequest {
    /// The user id, percent-decoded from the dashboard's path (`{id}` in the templates).
    pub user_id: String,
    /// The demo knobs from the dashboard's query string.
    pub knobs: Knobs,
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
    /// `{profile_fail_rate}`.
    pub profile_fail_rate: String,
    /// `{transactions_delay_ms}`.
    pub transactions_delay_ms: String,
    /// `{transactions_fail}`.
    pub transactions_fail: String,
    /// `{transactions_fail_rate}`: the share of the transactions backend's answers that are
    /// 503, e.g. `0.5` (a brownout).
    pub transactions_fail_rate: String,
    /// `{offers_delay_ms}`.
    pub offers_delay_ms: String,
    /// `{offers_fail}`.
    pub offers_fail: String,
    /// `{offers_fail_rate}`.
    pub offers_fail_rate: String,
}

impl UrlParams for DashboardRequest {
    fn param(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        let value = match name {
            "id" => &self.user_id,
            "profile_delay_ms" => &self.knobs.profile_delay_ms,
            "profile_fail" => &self.knobs.profile_fail,
            "transactions_delay_ms" => &self.knobs.transactions_delay_ms,
            "transactions_fail" => &self.knobs.transactions_fail,
            "profile_fail_rate" => &self.knobs.profile_fail_rate,
            "transactions_fail_rate" => &self.knobs.transactions_fail_rate,
            _ => return None,
        };
        Some(value.as_str().into())
    }
}

/// The request of the offers source, made from the dashboard request and the profile: the
/// [`UrlParams`] of the offers template (`{tier}` and the offers knobs). Its context and
/// forwarded headers are the call's, as for the other sources.
#[derive(Clone, Debug, Default)]
pub struct OffersRequest {
    /// The tier of the profile's answer (`standard` if it has none).
    pub tier: String,
    /// The dashboard request it is for.
    pub request: DashboardRequest,
}

impl OffersRequest {
    /// The offers request of `request`, for the tier in `profile` (the profile service's JSON).
    #[allow(clippy::borrowed_box)] // reason: the profile source's output is a `Box<RawValue>`
    pub fn new(request: &DashboardRequest, profile: &Box<RawValue>) -> Self {
        #[derive(Deserialize)]
        struct Tier {
            tier: String,
        }
        let tier = serde_json::from_str::<Tier>(profile.get()).map_or_else(|_| "standard".to_owned(), |tier| tier.tier);
        Self { tier, request: request.clone() }
    }
}

impl UrlParams for OffersRequest {
    fn param(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        let value = match name {
            "tier" => &self.tier,
            "offers_delay_ms" => &self.request.knobs.offers_delay_ms,
            "offers_fail" => &self.request.knobs.offers_fail,
            "offers_fail_rate" => &self.request.knobs.offers_fail_rate,
            _ => return None,
        };
        Some(value.as_str().into())
    }
}

/// The offers source: the offers service if there is one, else always an empty list.
struct Offers(Option<HttpFetcher>);

#[muster::async_trait]
impl Fetcher<OffersRequest> for Offers {
    type Output = Box<RawValue>;
    type Error = muster::BoxError;

    async fn fetch(&self, request: &OffersRequest) -> Result<Box<RawValue>, muster::BoxError> {
        match &self.0 {
            Some(fetcher) => Ok(fetcher.fetch(request).await?),
            // No offers service: nothing to offer, and nothing to fall back from.
            None => Ok(no_offers()),
        }
    }
}

/// The offers section when there are none to show: `[]`.
fn no_offers() -> Box<RawValue> {
    RawValue::from_string("[]".to_owned()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// When the answer is due: the request's arrival plus the smaller of the configured deadline
/// and the caller's budget (`x-muster-deadline-ms`, `grpc-timeout`). Set by the server, which
/// measures from the arrival; without it the aggregator's own deadline applies.
#[derive(Clone, Copy, Debug)]
pub struct Budget(pub tokio::time::Instant);

/// The user id of the request being served, for the access log.
#[derive(Clone, Debug)]
struct UserId(String);

/// The request id of the request being served, set by the access log.
#[derive(Clone, Debug)]
struct RequestId(String);

async fn dashboard(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    budget: Option<Extension<Budget>>,
    headers: HeaderMap,
    user_id: Result<Path<String>, PathRejection>,
    knobs: Result<Query<Knobs>, QueryRejection>,
) -> Response {
    // The rejections' own texts are axum's and serde's: a client gets a fixed message.
    let Ok(Path(user_id)) = user_id else { return bad_request("the user id must be valid UTF-8") };
    let Ok(Query(knobs)) = knobs else { return bad_request("the query must be name=value pairs of UTF-8 text") };
    let traceparent = headers.get(TRACEPARENT).and_then(|value| printable(value, 512)).map(str::to_owned);
    // The request id, trace parent and forwarded headers, once: every source reads them from
    // its call's context (the request id is also a field of the span, the logs and the report).
    let mut context = RequestContext::new().field("user_id", &user_id).request_id(&request_id);
    if let Some(traceparent) = traceparent {
        // With muster's `otel` feature the aggregation continues the caller's trace.
        context = context.traceparent(traceparent);
    }
    for name in state.forward.iter() {
        if let Some(value) = headers.get(name).and_then(|value| value.to_str().ok()) {
            context = context.header(name.as_str(), value);
        }
    }
    if let Some(Extension(Budget(expires))) = budget {
        // The caller's budget, counted from the request's arrival: queueing counts.
        context = context.deadline(expires.saturating_duration_since(tokio::time::Instant::now()));
    }
    let format = Format::requested(&headers);
    let request = DashboardRequest { user_id: user_id.clone(), knobs };
    let mut response = match format {
        // Each section the moment its source completes, then the outcome.
        Some(format) => muster::axum::stream(&state.aggregator, request, context, format),
        None => match state.aggregator.aggregate_with(&request, context).await {
            // `{"profile": .., "transactions": .., "offers": ..}`, the bodies as they came.
            Ok(aggregate) => aggregate.into_response(),
            Err(error) => error.into_response(),
        },
    };
    response.extensions_mut().insert(UserId(user_id));
    response
}

fn bad_request(message: &str) -> Response {
    json_error(StatusCode::BAD_REQUEST, "bad_request", message, None)
}

/// The dashboard's JSON error body, `{"error", "source": null, "kind"}`, with `status`.
/// The dashboard's own JSON error body, `{"error", "source": null, "kind"}`, and the
/// `request_id` when given (the server's answers before the router), with `status`.
pub(crate) fn json_error(status: StatusCode, kind: &str, message: &str, request_id: Option<&str>) -> Response {
    let mut body = serde_json::json!({"error": message, "source": null, "kind": kind});
    if let Some(request_id) = request_id {
        body["request_id"] = request_id.into();
    }
    json_response(status, &body)
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
/// echoes it in the response, and logs one line per request when it has been answered: after
/// the answer has taken its share of the server's [`ResponseBudget`], so that the line has the
/// status the client gets.
async fn access_log(mut request: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let request_id = request_id(request.headers());
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let budget = request.extensions().get::<ResponseBudget>().cloned();
    request.extensions_mut().insert(RequestId(request_id.clone()));
    let mut response = next.run(request).await;
    if let Some(budget) = budget {
        response = budget.take(response, &request_id);
    }
    answered(&method, &path, &request_id, started, &mut response);
    response
}

/// The server's process-wide budget of response bytes held at once, in KiB, set on each
/// request it routes: an answer of known size takes its share before it is logged, and is a
/// 503 when the budget is spent.
#[derive(Clone, Debug)]
pub(crate) struct ResponseBudget(pub(crate) std::sync::Arc<tokio::sync::Semaphore>);

/// An answer's share of the [`ResponseBudget`] (`None` for an answer of unknown or no size),
/// in the response's extensions: the server holds it until the answer's bytes are written to
/// the socket.
#[derive(Clone, Debug)]
pub(crate) struct BudgetShare(pub(crate) Option<std::sync::Arc<tokio::sync::OwnedSemaphorePermit>>);

impl ResponseBudget {
    /// `response` with its [`BudgetShare`] in its extensions, or a 503 in its place.
    pub(crate) fn take(&self, response: Response, request_id: &str) -> Response {
        let size = axum::body::HttpBody::size_hint(response.body()).exact().unwrap_or(0);
        let kib = u32::try_from(size.div_ceil(1024)).unwrap_or(u32::MAX);
        let (mut response, share) = match self.0.clone().try_acquire_many_owned(kib) {
            _ if size == 0 => (response, None),
            Ok(share) => (response, Some(std::sync::Arc::new(share))),
            Err(_) => {
                tracing::warn!(bytes = size, kind = "overloaded", "response buffer budget spent: answering 503");
                (crate::server::overloaded("too many response bytes buffered", request_id), None)
            }
        };
        response.extensions_mut().insert(BudgetShare(share));
        response
    }
}

/// The id a request is served under: the client's `x-request-id` if it can be adopted (see
/// [`adoptable_id`]), else a new one.
pub(crate) fn request_id(headers: &HeaderMap) -> String {
    headers.get(REQUEST_ID).and_then(adoptable_id).map_or_else(new_request_id, str::to_owned)
}

/// Echoes `request_id` in `response` and logs the request's one access line. The server calls
/// it too, for what it answers before the router (limits, a spent budget).
pub(crate) fn answered(method: &Method, path: &str, request_id: &str, started: Instant, response: &mut Response) {
    if let Ok(value) = HeaderValue::from_str(request_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    let user_id = response.extensions().get::<UserId>().map(|UserId(user_id)| user_id.as_str());
    // A path refused as too long is logged by its start: one line per request stays small.
    let mut end = path.len().min(MAX_LOGGED_PATH);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    let path = &path[..end];
    if let Some(outcome) = response.extensions().get::<StreamOutcome>() {
        // A streamed answer is logged when its stream ends, with its real status and time;
        // `499` when the client went away first (the aggregation was cancelled).
        let (method, path, request_id) = (method.clone(), path.to_owned(), request_id.to_owned());
        let user_id = user_id.map(str::to_owned);
        outcome.on_end(move |end| {
            let status = end.status.map_or(499, |status| status.as_u16());
            let answer = Some(&end.answer);
            log(&method, &path, status, started, &request_id, user_id.as_deref(), answer);
        });
        return;
    }
    let answer = response.extensions().get::<Answer>();
    log(method, path, response.status().as_u16(), started, request_id, user_id, answer);
}

/// Counts the answer and logs its access line.
fn log(
    method: &Method,
    path: &str,
    status: u16,
    started: Instant,
    request_id: &str,
    user_id: Option<&str>,
    answer: Option<&Answer>,
) {
    crate::stats::stats().answered(status);
    // At `info`: a failed aggregation has logged its one `warn` event, with the whole cause.
    // Formatted by hand (see `logging::access`): a line costs a few µs, not tens.
    let line = crate::logging::AccessLine {
        method: method.as_str(),
        path,
        status,
        elapsed_ms: started.elapsed().as_millis() as u64,
        request_id,
        user_id,
        source: answer.and_then(|answer| answer.source.as_deref()),
        kind: answer.map(|answer| answer.kind),
    };
    crate::logging::access(&line);
}

/// The longest path an access log line shows, in bytes.
const MAX_LOGGED_PATH: usize = 2048;

/// The header's value if it is printable ASCII of at most `max` bytes: anything else from the
/// client is not worth propagating or logging.
fn printable(value: &HeaderValue, max: usize) -> Option<&str> {
    let value = value.to_str().ok()?;
    let sensible = !value.is_empty() && value.len() <= max && value.bytes().all(|byte| byte.is_ascii_graphic());
    sensible.then_some(value)
}

/// A client's `x-request-id` the dashboard adopts as its own (echoed, logged, sent to the
/// backends): 1 to 64 letters, digits, `-`, `_`, `.` or `:` (a UUID, a hex trace id, `req-7`).
/// Anything else gets a new id, so a client cannot put quotes, spaces or markup into the logs.
fn adoptable_id(value: &HeaderValue) -> Option<&str> {
    let value = value.to_str().ok()?;
    let adoptable = (1..=64).contains(&value.len())
        && value.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b':'));
    adoptable.then_some(value)
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

    /// The statuses of the access lines logged while it is the default subscriber.
    #[derive(Clone, Default)]
    struct Statuses(std::sync::Arc<std::sync::Mutex<Vec<u64>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Statuses {
        fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
            struct Status(Option<u64>);
            impl tracing::field::Visit for Status {
                fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
                    if field.name() == "status" {
                        self.0 = Some(value);
                    }
                }
                fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
            }
            if event.metadata().target() == crate::logging::ACCESS_TARGET {
                let mut status = Status(None);
                event.record(&mut status);
                self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(status.0);
            }
        }
    }

    #[tokio::test]
    async fn an_answer_past_the_response_budget_is_logged_with_the_503_the_client_gets() {
        use tracing_subscriber::layer::SubscriberExt as _;
        let statuses = Statuses::default();
        let _default = tracing::subscriber::set_default(tracing_subscriber::registry().with(statuses.clone()));
        let router: Router = Router::new()
            .route("/big", get(|| async { "x".repeat(4 * 1024) }))
            .route("/small", get(|| async { "ok" }))
            .layer(middleware::from_fn(access_log));
        // Room for 3 KiB: the 4 KiB answer does not fit, the small one does.
        let budget = ResponseBudget(std::sync::Arc::new(tokio::sync::Semaphore::new(3)));
        let mut answers = Vec::new();
        for path in ["/big", "/small"] {
            let mut request = Request::builder().uri(path).body(Body::empty()).unwrap();
            request.extensions_mut().insert(budget.clone());
            let Ok(response) = tower_service::Service::call(&mut router.clone(), request).await;
            let share = response.extensions().get::<BudgetShare>().map(|share| share.0.is_some());
            answers.push((response.status().as_u16(), share));
        }
        assert_eq!(answers, [(503, Some(false)), (200, Some(true))], "the answers and their shares");
        let logged = statuses.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        assert_eq!(logged, [503, 200], "the access lines say what the client got");
    }

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
    fn only_plain_short_request_ids_are_adopted() {
        for id in ["req-1", "0af7651916cd43dd8448eb211c80319c", "a:b.c_d", &"x".repeat(64)] {
            assert_eq!(adoptable_id(&HeaderValue::from_str(id).unwrap()), Some(id), "{id}");
        }
        for id in [r#""},"kind":"ok"#, "has space", "", "<b>", &"x".repeat(65)] {
            assert_eq!(adoptable_id(&HeaderValue::from_str(id).unwrap()), None, "{id}");
        }
    }

    #[test]
    fn url_params_are_the_id_and_the_knobs() {
        let request = DashboardRequest {
            user_id: "../a b".to_owned(),
            knobs: Knobs { transactions_fail: "1".to_owned(), ..Knobs::default() },
        };
        assert_eq!(request.param("id").as_deref(), Some("../a b"));
        assert_eq!(request.param("transactions_fail").as_deref(), Some("1"));
        assert_eq!(request.param("profile_delay_ms").as_deref(), Some(""));
        assert_eq!(request.param("user"), None);
    }
}
