//! Fail-fast aggregation: run named data sources concurrently under one deadline, merge what
//! they return, and on the first failure cancel everything still in flight and say which
//! source failed, why, and for which request.
//!
//! This is the crate to depend on. Build an [`Aggregator`] from named sources (anything that
//! implements [`Fetcher`]), each wrapped in the [`policy`] layers it needs, then call
//! [`aggregate`](Aggregator::aggregate) for each request. The outputs come back as a tuple in
//! declaration order, each with its own type:
//!
//! ```
//! use std::time::Duration;
//! use muster::{Aggregator, Deadline, Fallback, RequestContext, Retry, Timeout, fetcher_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! #[derive(Debug)]
//! struct Profile { name: String }
//!
//! // Sources: here closures; in a service, HTTP fetchers or your own `Fetcher` impls.
//! let profile = fetcher_fn(|user_id: &u64| {
//!     let user_id = *user_id;
//!     async move { Ok::<_, std::io::Error>(Profile { name: format!("user {user_id}") }) }
//! });
//! let transactions = fetcher_fn(|_: &u64| async {
//!     tokio::time::sleep(Duration::from_millis(20)).await;
//!     Ok::<_, std::io::Error>(vec![12_50_u64, 3_99])
//! });
//! let offers = fetcher_fn(|_: &u64| async { Err::<Vec<String>, _>(std::io::Error::other("offers are down")) });
//!
//! // Built once, shared by every request.
//! let aggregator = Aggregator::builder()
//!     .source("profile", profile) // required: its failure cancels the others
//!     .source_with("transactions", transactions, (Retry::attempts(2), Timeout(Duration::from_millis(300))))
//!     .source_with("offers", offers, Fallback(Vec::new())) // optional: falls back
//!     .options(Deadline(Duration::from_secs(1)))
//!     .build()?;
//!
//! let context = RequestContext::new().field("user_id", 42);
//! match aggregator.aggregate_with(&42, context).await {
//!     Ok(aggregate) => {
//!         let (profile, transactions, offers) = aggregate.outputs; // (Profile, Vec<u64>, Vec<String>)
//!         assert_eq!((profile.name.as_str(), transactions.len(), offers.len()), ("user 42", 2, 0));
//!         println!("{}", aggregate.report); // a text waterfall of every source
//!     }
//!     // The first required source to fail, or the deadline; the others were cancelled.
//!     Err(error) => eprintln!("{error} ({})\n{}", error.kind(), error.report()),
//! }
//! # Ok(()) }
//! ```
//!
//! # What you get
//!
//! - **Typed outputs**: a tuple in declaration order, checked at compile time; an
//!   [`Optional`] source is `Option<T>`, one with a [`Fallback`] is `T`. Sources of one type with
//!   names known at run time come back by name instead ([`Aggregator::by_name`]), and an
//!   aggregator is a source of another.
//! - **Fail-fast with real cancellation**: the first required source to fail ends the
//!   aggregation at once; the others are dropped (connections closed) before it returns, and
//!   the error names the source, the kind and the cause ([`AggregateError`]).
//! - **One kind, everywhere**: a source's error says what it is ([`Classify`]: an
//!   [`ErrorKind`] such as `status` or `connect`, or a word of its own, and whether it is
//!   retryable), every policy passes that on, and the error, the report, the `warn` event, the
//!   metrics and the HTTP error body all say the same word.
//! - **Policies are layers** ([`policy`]): [`Timeout`], [`Retry`] (asking the error through
//!   [`Classify`]), [`Hedge`](policy::Hedge), [`Optional`]/[`Fallback`], [`Coalesce`](policy::Coalesce), any tower layer
//!   ([`Tower`](policy::Tower), feature `tower`), and your own [`Policy`](policy::Policy); a tuple of them lists the
//!   outermost first, as tower's `ServiceBuilder` does.
//! - **Completion policies as values** ([`completion`]): the first success of several
//!   fetchers, `k` of `n`, every outcome, all or nothing, as one source that composes with the
//!   others ("profile and (transactions or cached transactions)").
//! - **Per-request context** ([`RequestContext`]): fields (user id, request id), a tighter
//!   deadline and a parent cancellation per call of a shared aggregator; the fields are
//!   separate structured fields of the `aggregate` span and are carried by the report and the
//!   error.
//! - **A source sees its call**: [`deadline`], [`remaining`] and [`cancellation`] (with the
//!   cause) inside `fetch`; [`report::record`] lets policies tell the report what they did.
//! - **A report** of every source (outcome, start, queueing, duration, attempts, notes), what
//!   triggered the cancellation and how long it took; its `Display` is a waterfall.
//! - **What is in flight, live** ([`in_flight`]): a bounded, redacted snapshot of the calls
//!   running now (context fields, elapsed, remaining budget, each source's state and attempt,
//!   why it was cancelled) and the last failed ones, free when nobody looks.
//! - **Tracing**: an `aggregate` span with the context fields, a `source` span per source,
//!   and exactly one `warn` event per failed aggregation (source, kind, elapsed, cause chain,
//!   cancelled siblings); one `info` event when the caller goes away; per-source detail at
//!   `debug`.
//!
//! # Writing a fetcher
//!
//! Everything [`Fetcher`] needs comes from this crate: [`async_trait`](macro@async_trait), the error types, and
//! the call's [`deadline`] and [`cancellation`]. See the trait's documentation for a complete
//! example.
//!
//! A source's error implements [`Classify`] (one line, `impl muster::Classify for MyError {}`,
//! makes it `failed` and not retryable) and converts into a [`BoxError`]; the policies also
//! need it to be an [`Error`](std::error::Error) that is `Send + Sync + 'static`. So a function
//! generic over sources, a builder that tests call with mocks, states one bound:
//!
//! ```
//! use std::error::Error;
//! use muster::{Aggregator, BuildError, Classify, Fetcher, Retry, Timeout};
//!
//! fn build<F>(profile: F) -> Result<Aggregator<u64, (String,)>, BuildError>
//! where
//!     F: Fetcher<u64, Output = String> + 'static,
//!     F::Error: Classify + Error + Send + Sync + 'static,
//! {
//!     let policy = (Retry::attempts(2), Timeout(std::time::Duration::from_millis(200)));
//!     Aggregator::builder().source_with("profile", profile, policy).build()
//! }
//! # let profile = muster::fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(String::new()) });
//! # build(profile)?;
//! # Ok::<(), BuildError>(())
//! ```
//!
//! # Features
//!
//! - `json`: [`json`] merging of `serde_json::Value` sources.
//! - `http`: the [`http`] fetcher (hyper 1, pooled), plain `http://` on its own.
//! - `tls` (implies `http`): https for the [`http`] fetcher, through rustls with the *ring*
//!   provider and the Mozilla roots of `webpki-roots`. Without it no TLS code is compiled, and
//!   an `https://` template is refused when its fetcher is built
//!   ([`HttpConfigError::Template`](http::HttpConfigError::Template)).
//! - `tower`: [`Tower`](policy::Tower) (any tower layer as a policy), [`ServiceFetcher`](service::ServiceFetcher) (any tower `Service`
//!   is a `Fetcher`) and [`FetcherService`](service::FetcherService) (any `Fetcher` is a `Service`).
//! - `mock`: the [`mock`] test doubles (scripted `MockFetcher`, mockall `MockSource`).
//! - `axum`: [`axum`] integration: `AggregateError` and `Aggregate` turn into JSON responses
//!   (200 keyed by source name; 502, 504, 503 with the source, kind, pending sources and
//!   request id, and no internal detail unless the operator opts in), and
//!   [`axum::handler`] mounts an aggregator in a router in one line; [`axum::stream`] streams
//!   each source's section the moment it completes (NDJSON or server-sent events).
//! - `metrics`: [`metrics`] on the `metrics` facade: per source calls, attempts, outcomes by
//!   kind, latency, time queued and cancellations by cause; per aggregation outcome and
//!   duration.
//! - `otel`: OpenTelemetry through `tracing-opentelemetry`: a caller's W3C `traceparent`
//!   ([`RequestContext::traceparent`]) continues the trace of the `aggregate` span, and each
//!   HTTP fetch is an `attempt` span under its `source` span, whose id is the outbound
//!   `traceparent`'s parent (a new one per retry or hedge). Install a `tracing-opentelemetry`
//!   layer with the exporter of your choice (OTLP, ...); muster adds none, and the
//!   `service.name` is your tracer provider's resource (`Resource::builder().with_service_name(..)`;
//!   the SDK reads `OTEL_SERVICE_NAME` by default).
//!   - An `attempt` follows the semantic conventions for HTTP client spans: span kind
//!     `client`, `http.request.method`, `server.address`, `server.port`, `url.full` (without
//!     the query, the fragment and any user info) and `http.response.status_code`.
//!   - A failed span has the error status (`otel.status_code = "ERROR"` and
//!     `otel.status_description`) and `error.type`: on an `attempt`, the status code of a
//!     status error, else the HTTP fetcher's kind (`connect`, `timeout`, ...); on a `source`
//!     and the `aggregate`, the kind ([`Classify`]).
//!   - A cancelled `attempt` or `source` (a sibling failed, the deadline, the caller went
//!     away, a timeout or hedge around it) has the error status and `cancelled` with the cause,
//!     e.g. ``cancelled by `profile`: unexpected status 503``, and an `attempt` has
//!     `error.type = "cancelled"`; an `aggregate` whose caller went away has `cancelled`.
//!
//! The minimum supported Rust version is 1.85.
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod aggregator;
mod call;
pub mod completion;
mod context;
pub mod error;
pub mod in_flight;
pub mod policy;
pub mod report;
mod sources;

// The handful of names every user types. Everything else lives in the module where a user
// would look for it: `policy`, `report`, `group`, `cancel`, `options`, `builder`, `error`,
// `service`.
pub use crate::aggregator::{Aggregate, Aggregator};
pub use crate::call::{Context, cancellation, context, deadline, remaining};
pub use crate::context::RequestContext;
pub use crate::error::{AggregateError, BuildError};
pub use crate::policy::{Fallback, Optional, Retry, Timeout};
#[doc(inline)]
pub use muster_core::{BoxError, Classify, ErrorKind, Fetcher, FetcherFn, Group, async_trait, fetcher_fn};
#[doc(inline)]
pub use muster_options::Deadline;

/// What [`Aggregator::builder`] builds with: the builder, the typed outputs it accumulates, and
/// the inputs of dependent sources ([`AggregatorBuilder::then`](builder::AggregatorBuilder::then)).
pub mod builder {
    pub use crate::aggregator::{AggregatorBuilder, Input, InputOf};
    pub use crate::sources::{Get, Push, SourceOutputs};
}

/// The fail-fast [`Group`] underneath the aggregator, for tasks of your own
/// (the counterpart of Go's `errgroup.WithContext`): its error, handle, report, outputs and
/// spawn errors.
pub mod group {
    #[doc(inline)]
    pub use muster_core::{
        GroupError, GroupHandle, GroupReport, IntoIter, Name, Outputs, SpawnError, TaskOutcome, TaskReport,
        TrySpawnError, Wait, WaitWithReport, with_deadline,
    };
}

/// Cancellation: the token a source reads through [`cancellation()`](crate::cancellation), the
/// future that waits on it, and why it was cancelled.
pub mod cancel {
    #[doc(inline)]
    pub use muster_core::{CancelToken, Cancelled, Cause, SharedError};
}

/// Option values for an aggregator or a [`Group`] (a deadline, a concurrency
/// limit, context fields, a parent span), and how to write your own.
pub mod options {
    #[doc(inline)]
    pub use muster_options::{
        Deadline, Field, GroupConfig, GroupOption, Limit, OptionError, OptionFn, ParentSpan, option_fn,
    };
}

// The README's examples compile and run as doc tests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#[cfg(feature = "json")]
pub mod json;

#[cfg(feature = "axum")]
pub mod axum;
#[cfg(feature = "metrics")]
pub mod metrics;

/// HTTP sources (feature `http`; https with `tls`): an
/// [`HttpFetcher`](http::HttpFetcher) GETs JSON from a URL template on a pooled
/// [`HttpClient`](http::HttpClient), with an [`HttpError`](http::HttpError) variant for every
/// way the exchange can fail. How it builds its requests and checks the
/// responses (URL templates, headers, timeouts, pooling) is described on
/// [`HttpFetcher`](http::HttpFetcher#url-templates).
#[cfg(feature = "http")]
pub mod http {
    #[doc(inline)]
    pub use muster_adapters::http::{
        Decoded, HttpClient, HttpClientBuilder, HttpConfigError, HttpError, HttpFetcher, HttpFetcherBuilder, UrlParams,
    };
    // The `http` crate's types that these take and return: linked, not copied.
    #[doc(no_inline)]
    pub use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
}

// Test doubles (feature `mock`), with their module docs.
#[cfg(feature = "mock")]
#[doc(inline)]
pub use muster_adapters::mock;

/// tower interop (feature `tower`): any tower `Service` is a source ([`ServiceFetcher`](service::ServiceFetcher),
/// [`from_service`](service::from_service)) and any source is a `Service` ([`FetcherService`](service::FetcherService)). A tower layer as a
/// policy is [`policy::Tower`].
#[cfg(feature = "tower")]
pub mod service {
    #[doc(inline)]
    pub use muster_adapters::tower::{FetcherService, ServiceFetcher, from_service};
}
