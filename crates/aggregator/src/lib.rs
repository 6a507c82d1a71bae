//! Fail-fast aggregation: run named data sources concurrently under one deadline, merge what
//! they return, and on the first failure cancel everything still in flight and say which
//! source failed, why, and for which request.
//!
//! This is the crate to depend on. Build an [`Aggregator`] from named sources (anything that
//! implements [`Fetcher`]) and options, then call [`aggregate`](Aggregator::aggregate) for each
//! request:
//!
//! ```
//! use std::time::Duration;
//! use muster::{Aggregator, Deadline, ErrorKind, Field, Optional, Retry, Timeout, fetcher_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Sources: here closures; in a service, HTTP fetchers or your own `Fetcher` impls.
//! let profile = fetcher_fn(|user_id: &u64| {
//!     let user_id = *user_id;
//!     async move { Ok::<_, std::io::Error>(format!("profile of {user_id}")) }
//! });
//! let transactions = fetcher_fn(|_: &u64| async {
//!     tokio::time::sleep(Duration::from_millis(20)).await;
//!     Ok::<_, std::io::Error>(String::from("3 transactions"))
//! });
//! let offers = fetcher_fn(|_: &u64| async { Err::<String, _>(std::io::Error::other("offers are down")) });
//!
//! let aggregator = Aggregator::builder()
//!     .source("profile", profile)
//!     .source_with("transactions", transactions, (Timeout(Duration::from_millis(300)), Retry::attempts(2)))
//!     .source_with("offers", offers, Optional::value(String::from("no offers")))
//!     .options((Deadline(Duration::from_secs(1)), Field::new("service", "dashboard")))
//!     .build()?;
//!
//! match aggregator.aggregate(&42).await {
//!     Ok(aggregate) => {
//!         // Keyed by source name, in declaration order; the optional source fell back.
//!         assert_eq!(aggregate.outputs["profile"], "profile of 42");
//!         assert_eq!(aggregate.outputs["offers"], "no offers");
//!         println!("{}", aggregate.report); // a text waterfall of every source
//!     }
//!     Err(error) => {
//!         // The first required source to fail, or the deadline; the others were cancelled.
//!         eprintln!("{error}: {:?} from {:?}\n{}", error.kind(), error.source_name(), error.report());
//!         assert_ne!(error.kind(), ErrorKind::Panicked);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # What you get
//!
//! - **Fail-fast with real cancellation**: the first required source to fail ends the
//!   aggregation at once; the others are dropped (connections closed) before it returns, and
//!   the error names the source, the kind and the cause ([`AggregateError`]).
//! - **Policies per source** ([`SourceOption`]s): required or [`Optional`] with a fallback, a
//!   per-source [`Timeout`] capped by the global [`Deadline`], [`Retry`] with jittered
//!   exponential backoff (tower's) that never runs past the deadline, [`Hedge`]d second
//!   attempts, and request coalescing with [`Coalesced`].
//! - **Merging**: outputs by source name ([`Outputs`]); for sources of different types, typed
//!   [`Key`]s into an [`Aggregator<Req, AnyOutput>`](AnyOutput) build a struct with no string
//!   look-ups or casts; for JSON, [`json::merge_json`] (feature `json`) namespaces or merges
//!   objects with an explicit collision policy.
//! - **A report** of every source (outcome, start, duration, attempts), what triggered the
//!   cancellation and how long it took; its `Display` is a waterfall.
//! - **Tracing**: an `aggregate` span (with the [`Field`]s as `context`) inside the caller's
//!   span — run `aggregate` inside a span carrying the request's fields (`user_id`,
//!   `request_id`) and every event has them — a `source` span per source, events for failures,
//!   cancellations, fallbacks and retries, and one `aggregation finished` event with the whole
//!   report.
//! - **tower**: an `Aggregator` is a [`tower::Service`], and mounts in axum or hyper.
//!
//! # Features
//!
//! - `json`: [`json`] merging of `serde_json::Value` sources.
//! - `http`: the [`http`] fetcher (hyper 1, pooled, https via rustls).
//! - `tower`: [`ServiceFetcher`] (any tower `Service` is a `Fetcher`) and [`FetcherService`]
//!   (any `Fetcher` is a `Service`), so tower's layers compose with sources.
//! - `mock`: the [`mock`] test doubles (scripted `MockFetcher`, mockall `MockSource`).
//!
//! The minimum supported Rust version is 1.85.
#![doc(test(attr(deny(warnings))))]

mod aggregator;
mod coalesce;
mod error;
mod report;
mod source;

pub use crate::aggregator::{Aggregate, Aggregator, AnyOutput, Builder, Key};
pub use crate::coalesce::Coalesced;
pub use crate::error::{AggregateError, BuildError, MergeError, SourceTimeout};
pub use crate::report::{Outcome, Report, SourceReport, TimeoutKind, Trigger};

#[doc(inline)]
pub use muster_core::{
    BoxError, CancelToken, Cause, CoalesceError, Coalescer, ErrorKind, Fetcher, FetcherFn, Group, GroupError, Name,
    Outputs, SpawnError, fetcher_fn,
};
#[doc(inline)]
pub use muster_options::{
    Deadline, Fallback, Field, GroupConfig, GroupOption, Hedge, Limit, OptionError, Optional, ParentSpan, Retry,
    SourceConfig, SourceOption, Timeout, option_fn,
};

#[cfg(feature = "json")]
pub mod json;

/// HTTP sources: [`HttpFetcher`](http::HttpFetcher) with URL templates, typed errors and a
/// pooled [`HttpClient`](http::HttpClient) (feature `http`).
#[cfg(feature = "http")]
pub mod http {
    #[doc(inline)]
    pub use muster_adapters::http::*;
}

/// Test doubles: scripted [`MockFetcher`](mock::MockFetcher)s and a mockall
/// [`MockSource`](mock::MockSource) (feature `mock`).
#[cfg(feature = "mock")]
pub mod mock {
    #[doc(inline)]
    pub use muster_adapters::mock::*;
}

// tower interop (feature `tower`): services as sources, sources as services.
#[cfg(feature = "tower")]
#[doc(inline)]
pub use muster_adapters::tower::{FetcherService, ServiceFetcher, from_service};
