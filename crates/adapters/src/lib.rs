//! Adapters that turn the outside world into muster [`Fetcher`](muster_core::Fetcher)s, and
//! test doubles that stand in for it.
//!
//! With the `mock` feature, `MockFetcher` plays a script of outcomes (a value, an error, a
//! hang or a panic, each after an optional delay) and records every call, including whether
//! it was cancelled; `MockSource` is a mockall mock for expectation-style tests. Delays run on
//! tokio's clock, so under a paused clock a timing test is exact and instant:
//!
//! ```
//! # #[cfg(feature = "mock")]
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use muster_adapters::MockFetcher;
//! use muster_core::{ErrorKind, Fetcher, Group};
//!
//! let profile = MockFetcher::err_after(Duration::from_millis(30), "503 service unavailable");
//! let transactions = MockFetcher::ok_after(Duration::from_secs(10), "[...]");
//!
//! let started = tokio::time::Instant::now();
//! let user_id = 7_u64;
//! let mut group = Group::new();
//! group.spawn("profile", profile.fetch(&user_id))?;
//! group.spawn("transactions", transactions.fetch(&user_id))?;
//! let error = group.wait().await.unwrap_err();
//!
//! assert_eq!(error.kind(), ErrorKind::Failed);
//! assert_eq!(error.source_name(), Some("profile"));
//! assert_eq!(started.elapsed(), Duration::from_millis(30)); // virtual time, no real wait
//! assert!(transactions.was_cancelled(), "the slow source was dropped at the failure");
//! # Ok(()) }
//! # #[cfg(not(feature = "mock"))] fn main() {}
//! ```
//!
//! # Features
//!
//! - `mock`: the `mock` module: the scripted `MockFetcher` (with `Step`, `CallRecord`,
//!   `CallOutcome` and `MockError`) and the mockall-generated `MockSource`, all re-exported
//!   here. Adds tokio (`time`), mockall, async-trait and thiserror.
//! - `tower`: the `tower` module: `ServiceFetcher` (`from_service`) makes any tower `Service` a
//!   `Fetcher` and `FetcherService` any `Fetcher` a `Service`, so tower's layers wrap sources.
//! - `http`: the `http` module: `HttpFetcher`, a JSON-over-HTTP fetcher built from a URL
//!   template (every substituted value percent-encoded as one path segment or query value),
//!   with typed errors, a whole-exchange timeout, a streamed body limit, deadline and trace
//!   propagation headers, allow-listed forwarded headers, any method with a JSON body, on the
//!   pooled `HttpClient` (hyper 1, plain http; per-host idle cap and idle timeout, one retry
//!   on a stale pooled connection, bounded DNS). Adds hyper, hyper-util, http, serde,
//!   serde_json, tokio, tower-service, async-trait and thiserror.
//! - `tls` (implies `http`): https for the HTTP fetcher, through rustls with the *ring*
//!   provider (TLS 1.2 and 1.3) and the Mozilla roots of `webpki-roots`, and
//!   `HttpClient::with_tls_config` for your own rustls configuration. Adds hyper-rustls,
//!   rustls, rustls-webpki and ring. Without it an `https://` template is refused when its
//!   fetcher is built.
//!
//! The minimum supported Rust version is 1.85.
#![doc(test(attr(deny(warnings))))]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod classify;
#[cfg(feature = "mock")]
mod error;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "mock")]
pub mod mock;
#[cfg(feature = "tower")]
pub mod tower;

#[cfg(feature = "http")]
#[doc(no_inline)]
pub use crate::http::{HttpClient, HttpError, HttpFetcher};
#[cfg(feature = "mock")]
#[doc(no_inline)]
pub use crate::mock::{CallOutcome, CallRecord, MockError, MockFetcher, MockSource, Step};
#[cfg(feature = "tower")]
#[doc(no_inline)]
pub use crate::tower::{FetcherService, ServiceFetcher, from_service};
#[doc(no_inline)]
pub use muster_core;
