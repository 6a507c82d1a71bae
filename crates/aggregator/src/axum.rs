//! axum integration (feature `axum`): an [`Aggregator`] mounted in a router in one line, and
//! aggregations that turn into responses.
//!
//! [`handler`] makes an axum [`Handler`] of an aggregator. The request type is built from the
//! axum request by its own [`FromRequestParts`] implementation (path parameters, headers, the
//! query, ...): that is the one thing a user writes. What goes into the call's
//! [`RequestContext`] (the user id, the request id) comes from the request through
//! [`AggregateHandler::context`]; without it the context is empty.
//!
//! The example calls the router in place with `oneshot`, from `tower::ServiceExt` (the `tower`
//! crate with its `util` feature, in your dev-dependencies); a server would pass the router to
//! `axum::serve` instead.
//!
//! ```
//! use std::time::Duration;
//! use axum::Router;
//! use axum::body::Body;
//! use axum::extract::{FromRequestParts, Path};
//! use axum::http::{Request, StatusCode, request::Parts};
//! use axum::response::{IntoResponse, Response};
//! use axum::routing::get;
//! use muster::{Aggregator, Deadline, RequestContext, fetcher_fn};
//! use tower::ServiceExt as _;
//!
//! /// One dashboard request: the user id from the path, the request id from a header.
//! struct Dashboard {
//!     user_id: u64,
//!     request_id: Option<String>,
//! }
//!
//! impl<S: Send + Sync> FromRequestParts<S> for Dashboard {
//!     type Rejection = Response;
//!
//!     async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
//!         let Path(user_id) = Path::<u64>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
//!         let request_id = parts.headers.get("x-request-id").and_then(|value| value.to_str().ok());
//!         Ok(Self { user_id, request_id: request_id.map(str::to_owned) })
//!     }
//! }
//!
//! impl Dashboard {
//!     /// The fields of this request's logs, report and error.
//!     fn context(&self) -> RequestContext {
//!         let context = RequestContext::new().field("user_id", self.user_id);
//!         match &self.request_id {
//!             Some(request_id) => context.request_id(request_id),
//!             None => context,
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let profile = fetcher_fn(|request: &Dashboard| {
//!     let user_id = request.user_id;
//!     async move { Ok::<_, std::io::Error>(format!("user {user_id}")) }
//! });
//! let balance = fetcher_fn(|_: &Dashboard| async { Ok::<_, std::io::Error>(1250_u64) });
//! let aggregator = Aggregator::builder()
//!     .source("profile", profile)
//!     .source("balance", balance)
//!     .options(Deadline(Duration::from_secs(1)))
//!     .build()?;
//!
//! let app: Router = Router::new()
//!     .route("/dashboard/{user_id}", get(muster::axum::handler(aggregator).context(Dashboard::context)));
//!
//! let response = app.oneshot(Request::get("/dashboard/7").body(Body::empty())?).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! let body = axum::body::to_bytes(response.into_body(), 1 << 16).await?;
//! assert_eq!(body, r#"{"profile":"user 7","balance":1250}"#);
//! # Ok(()) }
//! ```
//!
//! # Responses
//!
//! An [`Aggregate`] whose outputs serialize ([`SerializeOutputs`]: tuples of `Serialize`
//! outputs, [`Outputs<T>`](crate::group::Outputs)) is a `200 application/json` object keyed by source
//! name, in declaration order; an omitted [`Optional`](crate::Optional) source is `null`.
//! An [`AggregateError`] is a JSON error, always with the same four fields:
//!
//! | what happened | status | body |
//! |---|---|---|
//! | a required source failed (error, its own timeout, panic) | 502 | `{"error": "source `transactions` failed (connect)", "source": "transactions", "kind": "connect", "request_id": "r-1"}` |
//! | the global deadline passed | 504 | `{"error": "deadline of 1000ms elapsed; pending: transactions", "source": null, "kind": "timeout", "pending": ["transactions"], "request_id": "r-1"}` |
//! | the aggregation was cancelled from outside | 503 | `{"error": "aggregation cancelled", "source": null, "kind": "cancelled", "request_id": "r-1"}` |
//!
//! `kind` is [`AggregateError::kind`], the word the report, the log event and the metrics
//! say too: for a failed source, the kind its error gave ([`Classify`](crate::Classify),
//! passed on by every policy: the HTTP fetcher's `status`, `connect`, `timeout`,
//! `body_too_large`, ..., or a user's own word such as `db_deadlock`); else `panicked`,
//! `timeout` or `cancelled`. The `error` text names the kind in brackets only where it adds to
//! the words: "source `x` failed" for `failed`, "source `x` panicked", "source `x` timed out",
//! and "source `x` failed (connect)" for any other kind.
//! `request_id` is the call's request id ([`RequestContext::request_id`](crate::RequestContext::request_id), the context field `request_id`), `null`
//! when it has none. Every response also carries an [`Answer`] in its extensions (the failed
//! source and the kind, `ok` for a success) for an access log around the handler.
//!
//! # Streaming
//!
//! [`stream`] answers with each source's section the moment it completes (NDJSON or
//! server-sent events, [`Format`]), then a line with the outcome; the response body owns the
//! aggregation, so a client that goes away cancels it. Its [`StreamOutcome`], in the response's
//! extensions, tells a middleware around the handler how the stream ended.
//!
//! # What a client sees
//!
//! The `error` text a client gets says which source failed and how, and nothing else: no
//! address, host name, library text or cause chain, which may describe the service's
//! internals. That detail is in the one `warn` event the aggregator logs for the failure (with
//! the whole cause chain), and in [`AggregateError::chain`]. An operator who wants it in the
//! responses too (a development setup) opts in with [`AggregateHandler::expose_errors`], or
//! answers with [`Verbose`] in a handler of their own.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use ::axum::extract::{FromRequestParts, Request};
use ::axum::handler::Handler;
use ::axum::http::{HeaderValue, StatusCode, header};
use ::axum::response::{IntoResponse, Response};
use muster_core::{ErrorKind, Name, Outputs};
use serde::ser::{Serialize, SerializeMap as _, Serializer};

use crate::aggregator::{Aggregate, Aggregator};
use crate::context::RequestContext;
use crate::error::AggregateError;
use crate::sources::SourceOutputs;

mod stream;

pub use stream::{Format, SerializeSections, StreamEnd, StreamOutcome, stream};

/// The context field whose value error responses carry as `request_id`.
const REQUEST_ID: &str = "request_id";

/// An axum [`Handler`] that runs `aggregator` for each request: the request type `Req` is
/// extracted with its [`FromRequestParts`] implementation (its rejection is the response if
/// that fails), then aggregated; the [`Aggregate`] or the [`AggregateError`] is the response.
/// Mount it with `get(muster::axum::handler(aggregator))`.
///
/// A client that goes away cancels the aggregation: axum drops the handler's future, and with
/// it every source's fetch.
///
/// If the router says `AggregateHandler<Req, O>: Handler<_, _>` is not satisfied, `Req`
/// does not implement [`FromRequestParts`] for the router's state, or is not
/// `Send + Sync + 'static`.
///
/// ```
/// use axum::Router;
/// use axum::extract::Path;
/// use axum::routing::get;
/// use muster::{Aggregator, fetcher_fn};
///
/// # fn main() -> Result<(), muster::BuildError> {
/// let greeting = fetcher_fn(|Path(name): &Path<String>| {
///     let greeting = format!("hello, {name}");
///     async move { Ok::<_, std::io::Error>(greeting) }
/// });
/// let aggregator = Aggregator::builder().source("greeting", greeting).build()?;
/// let app: Router = Router::new().route("/hello/{name}", get(muster::axum::handler(aggregator)));
/// # let _ = app;
/// # Ok(()) }
/// ```
pub fn handler<Req, O>(aggregator: Aggregator<Req, O>) -> AggregateHandler<Req, O>
where
    O: SourceOutputs<Req> + SerializeOutputs,
{
    AggregateHandler { aggregator, context: |_| RequestContext::new(), errors: Errors::Safe }
}

/// The axum [`Handler`] made by [`handler`]: an [`Aggregator`], how a request gives its
/// [`RequestContext`], and how much an error response says.
#[must_use = "a handler does nothing until it is mounted in a router"]
pub struct AggregateHandler<Req, O: SourceOutputs<Req>> {
    aggregator: Aggregator<Req, O>,
    context: fn(&Req) -> RequestContext,
    errors: Errors,
}

/// How much an error response says.
#[derive(Clone, Copy, Debug)]
enum Errors {
    /// Which source, the kind, the pending sources and the request id.
    Safe,
    /// That, with the whole cause chain as the `error` text.
    Exposed,
}

impl<Req, O: SourceOutputs<Req>> AggregateHandler<Req, O> {
    /// Builds each call's [`RequestContext`] from the extracted request with `context` (the
    /// default gives an empty one): the user id, the request id (which error responses carry
    /// as `request_id`), a tighter deadline from a header. `context` is a function, or a
    /// closure that captures nothing: what it needs comes from the request, so put anything
    /// else it needs (a header's value, the service's name) into the request type.
    ///
    /// ```
    /// use axum::extract::Path;
    /// use axum::routing::get;
    /// use muster::{Aggregator, RequestContext, fetcher_fn};
    ///
    /// # fn main() -> Result<(), muster::BuildError> {
    /// let profile = fetcher_fn(|Path(user_id): &Path<u64>| {
    ///     let user_id = *user_id;
    ///     async move { Ok::<_, std::io::Error>(user_id) }
    /// });
    /// let aggregator = Aggregator::builder().source("profile", profile).build()?;
    /// let route = get(muster::axum::handler(aggregator).context(|Path(user_id)| RequestContext::new().field("user_id", user_id)));
    /// # let _: axum::routing::MethodRouter = route;
    /// # Ok(()) }
    /// ```
    pub fn context(mut self, context: fn(&Req) -> RequestContext) -> Self {
        self.context = context;
        self
    }

    /// Puts the failure's whole cause chain ([`AggregateError::chain`]) in the `error` text of
    /// error responses, as [`Verbose`] does: addresses, host names, the libraries' messages.
    /// For development setups; by default a client is told only which source failed and how.
    pub fn expose_errors(mut self) -> Self {
        self.errors = Errors::Exposed;
        self
    }
}

impl<Req, O: SourceOutputs<Req>> Clone for AggregateHandler<Req, O> {
    fn clone(&self) -> Self {
        Self { aggregator: self.aggregator.clone(), context: self.context, errors: self.errors }
    }
}

impl<Req, O: SourceOutputs<Req>> fmt::Debug for AggregateHandler<Req, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregateHandler")
            .field("aggregator", &self.aggregator)
            .field("errors", &self.errors)
            .finish_non_exhaustive()
    }
}

impl<Req, O, S> Handler<(Req, O), S> for AggregateHandler<Req, O>
where
    Req: FromRequestParts<S> + Send + Sync + 'static,
    O: SourceOutputs<Req> + SerializeOutputs,
    S: Send + Sync + 'static,
{
    type Future = Pin<Box<dyn Future<Output = Response> + Send>>;

    fn call(self, request: Request, state: S) -> Self::Future {
        Box::pin(async move {
            let (mut parts, _body) = request.into_parts();
            let request = match Req::from_request_parts(&mut parts, &state).await {
                Ok(request) => request,
                Err(rejection) => return rejection.into_response(),
            };
            let context = (self.context)(&request);
            match self.aggregator.aggregate_with(&request, context).await {
                Ok(aggregate) => aggregate.into_response(),
                Err(error) => error_response(&error, self.errors),
            }
        })
    }
}

/// Outputs that serialize as one JSON object keyed by source name: tuples (up to 12) of
/// `Serialize` outputs, `()`, and [`Outputs<T>`](crate::group::Outputs) of a `Serialize` `T`. Not
/// meant to be implemented elsewhere.
///
/// ```
/// use muster::{Aggregator, fetcher_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let name = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>("Ada") });
/// let balance = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(1250_u64) });
/// let aggregator = Aggregator::builder().source("name", name).source("balance", balance).build()?;
/// let json = muster::axum::Json::from(aggregator.aggregate(&7).await?);
/// assert_eq!(serde_json::to_string(&json)?, r#"{"name":"Ada","balance":1250}"#);
/// # Ok(()) }
/// ```
#[diagnostic::on_unimplemented(
    message = "the outputs `{Self}` do not serialize as one JSON object",
    label = "every source's output must implement `serde::Serialize`",
    note = "an aggregator's outputs are a tuple of its sources' outputs, or `muster::group::Outputs<T>`"
)]
pub trait SerializeOutputs {
    /// Serializes the outputs as a map: the output of the `i`-th source under `names[i]`
    /// (under `i` if `names` is too short). [`Outputs`] use their own names.
    ///
    /// # Errors
    ///
    /// The serializer's error, or an output's.
    fn serialize_outputs<S: Serializer>(&self, names: &[Name], serializer: S) -> Result<S::Ok, S::Error>;
}

impl SerializeOutputs for () {
    fn serialize_outputs<S: Serializer>(&self, _: &[Name], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_map(Some(0))?.end()
    }
}

impl<T: Serialize> SerializeOutputs for Outputs<T> {
    fn serialize_outputs<S: Serializer>(&self, _: &[Name], serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.len()))?;
        for (name, output) in self.iter() {
            map.serialize_entry(name, output)?;
        }
        map.end()
    }
}

macro_rules! serialize_outputs {
    ($len:literal; $($T:ident $i:tt),+) => {
        impl<$($T: Serialize),+> SerializeOutputs for ($($T,)+) {
            fn serialize_outputs<S: Serializer>(&self, names: &[Name], serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some($len))?;
                $(
                    match names.get($i) {
                        Some(name) => map.serialize_entry(&**name, &self.$i)?,
                        None => map.serialize_entry(&$i, &self.$i)?,
                    }
                )+
                map.end()
            }
        }
    };
}

serialize_outputs!(1; A 0);
serialize_outputs!(2; A 0, B 1);
serialize_outputs!(3; A 0, B 1, C 2);
serialize_outputs!(4; A 0, B 1, C 2, D 3);
serialize_outputs!(5; A 0, B 1, C 2, D 3, E 4);
serialize_outputs!(6; A 0, B 1, C 2, D 3, E 4, F 5);
serialize_outputs!(7; A 0, B 1, C 2, D 3, E 4, F 5, G 6);
serialize_outputs!(8; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
serialize_outputs!(9; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
serialize_outputs!(10; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
serialize_outputs!(11; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
serialize_outputs!(12; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

/// An aggregation's outputs with their sources' names: serializes (and responds, `200
/// application/json`) as one JSON object keyed by source name, in declaration order. Made from
/// an [`Aggregate`] (which responds the same way itself), or from names and outputs.
///
/// ```
/// use muster::group::Outputs;
/// use muster::axum::Json;
///
/// # fn main() -> Result<(), serde_json::Error> {
/// let tuple = Json::new(["profile", "offers"], ("Ada", None::<Vec<String>>));
/// assert_eq!(serde_json::to_string(&tuple)?, r#"{"profile":"Ada","offers":null}"#);
///
/// let outputs: Outputs<u32> = [("eu".into(), 3), ("us".into(), 5)].into_iter().collect();
/// assert_eq!(serde_json::to_string(&Json::from(outputs))?, r#"{"eu":3,"us":5}"#);
/// # Ok(()) }
/// ```
///
/// When a stale value answered for a source (a [`Cache`](crate::policy::Cache)'s
/// `stale_if_error`, feature `cache`), the object ends with `"stale": [<names>]`, so that a
/// client can show the section as out of date; without stale sources the body is the outputs
/// alone. (A source itself named `stale` keeps its key: the list is then left out.)
#[derive(Clone, Debug)]
pub struct Json<O> {
    names: Vec<Name>,
    /// The sources that answered with a stale value, in order.
    stale: Vec<Name>,
    /// The outputs, as the aggregation gave them.
    pub outputs: O,
}

impl<O> Json<O> {
    /// The outputs `outputs` under `names`, in order (names are not needed for
    /// [`Outputs`], which have their own).
    pub fn new<N: AsRef<str>>(names: impl IntoIterator<Item = N>, outputs: O) -> Self {
        let names = names.into_iter().map(|name| Name::Owned(name.as_ref().to_owned())).collect();
        Self { names, stale: Vec::new(), outputs }
    }

    /// The source names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(|name| &**name)
    }
}

impl<O> From<Aggregate<O>> for Json<O> {
    /// The outputs under their sources' names, taken from the report.
    fn from(aggregate: Aggregate<O>) -> Self {
        let Aggregate { outputs, report } = aggregate;
        let stale =
            report.sources.iter().filter(|source| source.stale.is_some()).map(|source| source.name.clone()).collect();
        Self { names: report.sources.into_iter().map(|source| source.name).collect(), stale, outputs }
    }
}

impl<T> From<Outputs<T>> for Json<Outputs<T>> {
    /// The outputs under their own names.
    fn from(outputs: Outputs<T>) -> Self {
        Self { names: Vec::new(), stale: Vec::new(), outputs }
    }
}

impl<O> Json<O> {
    /// The names of the sources that answered with a stale value, in order.
    pub fn stale(&self) -> impl Iterator<Item = &str> {
        self.stale.iter().map(|name| &**name)
    }
}

impl<O: SerializeOutputs> Serialize for Json<O> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.stale.is_empty() || self.names.iter().any(|name| &**name == "stale") {
            return self.outputs.serialize_outputs(&self.names, serializer);
        }
        // Rare (a brownout): the outputs as a JSON object, then the list after them.
        struct Outputs<'a, O>(&'a Json<O>);
        impl<O: SerializeOutputs> Serialize for Outputs<'_, O> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.0.outputs.serialize_outputs(&self.0.names, serializer)
            }
        }
        let mut body = serde_json::to_value(Outputs(self)).map_err(serde::ser::Error::custom)?;
        if let Some(object) = body.as_object_mut() {
            let stale = self.stale.iter().map(|name| serde_json::Value::from(&**name)).collect();
            object.insert("stale".to_owned(), serde_json::Value::Array(stale));
        }
        body.serialize(serializer)
    }
}

impl<O: SerializeOutputs> IntoResponse for Json<O> {
    /// `200 application/json`, or a 500 JSON error (logged) if an output does not serialize.
    fn into_response(self) -> Response {
        let mut response = json(StatusCode::OK, &self);
        response.extensions_mut().insert(Answer { source: None, kind: "ok" });
        response
    }
}

impl<O: SerializeOutputs> IntoResponse for Aggregate<O> {
    /// As its [`Json`]: `200 application/json`, keyed by source name.
    fn into_response(self) -> Response {
        Json::from(self).into_response()
    }
}

impl IntoResponse for AggregateError {
    /// The JSON error of the [module docs](self#responses): which source failed, the kind,
    /// the pending sources (for the deadline) and the request id; no internal detail.
    fn into_response(self) -> Response {
        error_response(&self, Errors::Safe)
    }
}

/// An [`AggregateError`] that responds with its whole cause chain
/// ([`AggregateError::chain`]) as the `error` text, for development setups: it may tell a
/// client internal detail (addresses, host names, the libraries' messages). Otherwise the
/// same response as the error's own.
///
/// ```
/// use axum::response::IntoResponse;
/// use muster::{Aggregator, fetcher_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let failing = fetcher_fn(|_: &u64| async { Err::<u64, _>(std::io::Error::other("connection refused (10.0.0.7:443)")) });
/// let aggregator = Aggregator::builder().source("balance", failing).build()?;
/// let Err(error) = aggregator.aggregate(&7).await else { unreachable!() };
/// let response = muster::axum::Verbose(error).into_response();
/// let body = axum::body::to_bytes(response.into_body(), 1 << 16).await?;
/// assert!(String::from_utf8(body.to_vec())?.contains("10.0.0.7"));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Verbose(pub AggregateError);

impl IntoResponse for Verbose {
    fn into_response(self) -> Response {
        error_response(&self.0, Errors::Exposed)
    }
}

/// What a response of this module says, in the response's extensions: for an access log or a
/// metrics middleware around the handler, which can read it without parsing the body. A
/// [streamed](stream) response, whose outcome comes after its head, carries a
/// [`StreamOutcome`] instead, whose [`StreamEnd`] has the `Answer`.
///
/// ```
/// use axum::response::IntoResponse;
/// use muster::{Aggregator, fetcher_fn};
/// use muster::axum::Answer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let failing = fetcher_fn(|_: &u64| async { Err::<u64, _>(std::io::Error::other("down")) });
/// let aggregator = Aggregator::builder().source("balance", failing).build()?;
/// let response = aggregator.aggregate(&7).await.into_response();
/// let answer = response.extensions().get::<Answer>().cloned();
/// assert_eq!(answer.map(|answer| (answer.source.as_deref() == Some("balance"), answer.kind)), Some((true, "failed")));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Answer {
    /// The source that failed the aggregation, if one did.
    pub source: Option<Name>,
    /// The body's `kind` ([`AggregateError::kind`]'s word: the failed source's kind, or
    /// `panicked`, `timeout`, `cancelled`), or `ok` for a success.
    pub kind: &'static str,
}

/// The body of an error response.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: String,
    source: Option<&'a str>,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending: Option<Vec<&'a str>>,
    request_id: Option<&'a str>,
}

impl ErrorBody<'_> {
    /// What the body says, for the response's extensions.
    fn answer(&self) -> Answer {
        Answer { source: self.source.map(|source| Name::Owned(source.to_owned())), kind: self.kind }
    }
}

/// The status and the JSON body that `error` answers with ([`IntoResponse`] sends them): for
/// a response of your own, e.g. the last line of a streamed one.
///
/// ```
/// use muster::{Aggregator, fetcher_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let failing = fetcher_fn(|_: &u64| async { Err::<u64, _>(std::io::Error::other("down")) });
/// let aggregator = Aggregator::builder().source("balance", failing).build()?;
/// let Err(error) = aggregator.aggregate(&7).await else { unreachable!() };
/// let (status, body) = muster::axum::error_body(&error);
/// assert_eq!((status.as_u16(), body["source"].as_str(), body["kind"].as_str()), (502, Some("balance"), Some("failed")));
/// # Ok(()) }
/// ```
pub fn error_body(error: &AggregateError) -> (StatusCode, serde_json::Value) {
    let (status, body) = error_parts(error);
    (status, serde_json::to_value(&body).unwrap_or(serde_json::Value::Null))
}

/// The status and body for `error`: 502 for a failed source, 504 for the deadline, 503 for a
/// cancellation, 500 for anything else.
fn error_parts(error: &AggregateError) -> (StatusCode, ErrorBody<'_>) {
    let request_id = error.field(REQUEST_ID);
    match error.source_name() {
        Some(source) => {
            let kind = error.kind().as_str();
            let error = match kind {
                "panicked" => format!("source `{source}` panicked"),
                "timeout" => format!("source `{source}` timed out"),
                "failed" => format!("source `{source}` failed"),
                kind => format!("source `{source}` failed ({kind})"),
            };
            (StatusCode::BAD_GATEWAY, ErrorBody { error, source: Some(source), kind, pending: None, request_id })
        }
        None => match error.kind() {
            ErrorKind::Timeout => {
                let pending: Vec<&str> = error.pending().iter().map(|name| &**name).collect();
                let after = match error.group_error().map(|error| error.cause()) {
                    Some(muster_core::Cause::Deadline { after, .. }) => *after,
                    _ => error.report().elapsed,
                };
                let error = format!(
                    "deadline of {}ms elapsed; pending: {}",
                    muster_core::rounded_ms(after),
                    pending.join(", ")
                );
                let body = ErrorBody { error, source: None, kind: "timeout", pending: Some(pending), request_id };
                (StatusCode::GATEWAY_TIMEOUT, body)
            }
            ErrorKind::Cancelled => {
                let error = "aggregation cancelled".to_owned();
                let body = ErrorBody { error, source: None, kind: "cancelled", pending: None, request_id };
                (StatusCode::SERVICE_UNAVAILABLE, body)
            }
            kind => {
                let error = "aggregation failed".to_owned();
                let body = ErrorBody { error, source: None, kind: kind.as_str(), pending: None, request_id };
                (StatusCode::INTERNAL_SERVER_ERROR, body)
            }
        },
    }
}

/// The response for `error`.
fn error_response(error: &AggregateError, errors: Errors) -> Response {
    let (status, body) = error_parts(error);
    let answer = body.answer();
    let body = match errors {
        Errors::Safe => body,
        Errors::Exposed => ErrorBody { error: error.chain(), ..body },
    };
    let mut response = json(status, &body);
    response.extensions_mut().insert(answer);
    response
}

/// `body` as a JSON response with `status`; a 500 if it does not serialize.
fn json(status: StatusCode, body: &impl Serialize) -> Response {
    const JSON: HeaderValue = HeaderValue::from_static("application/json");
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, JSON)], bytes).into_response(),
        Err(error) => {
            tracing::error!(error = %error, "the response body could not be serialized");
            let body =
                r#"{"error":"the response could not be serialized","source":null,"kind":"internal","request_id":null}"#;
            (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, JSON)], body).into_response()
        }
    }
}
