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
//!
//! The HTTP fetcher and the tower interop will follow behind their own features. The minimum
//! supported Rust version is 1.85.
#![doc(test(attr(deny(warnings))))]

#[cfg(feature = "mock")]
mod error;
#[cfg(feature = "mock")]
pub mod mock;

#[cfg(feature = "mock")]
#[doc(no_inline)]
pub use crate::mock::{CallOutcome, CallRecord, MockError, MockFetcher, MockSource, Step};
#[doc(no_inline)]
pub use muster_core;
