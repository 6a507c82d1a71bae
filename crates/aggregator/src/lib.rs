//! Fail-fast aggregation: run named data sources concurrently under one deadline, and on the
//! first failure cancel everything still in flight and say which source failed and why.
//!
//! This is the crate to depend on. It re-exports the [`Group`] and [`Fetcher`] of
//! `muster-core` and the options of `muster-options`; the aggregator (named sources, policies,
//! merge, report) builds on them.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use muster::{Deadline, Fetcher, Group, fetcher_fn};
//!
//! let profile = fetcher_fn(|id: &u64| { let id = *id; async move { Ok::<_, std::io::Error>(format!("user {id}")) } });
//! let balance = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(String::from("12.50")) });
//!
//! let user_id = 42;
//! let mut group = Group::with_options(Deadline(Duration::from_secs(1)))?;
//! group.spawn("profile", profile.fetch(&user_id))?;
//! group.spawn("balance", balance.fetch(&user_id))?;
//! let outputs = group.wait().await?;
//! assert_eq!(outputs["profile"], "user 42");
//! # Ok(()) }
//! ```
#![doc(test(attr(deny(warnings))))]

mod aggregator;
mod error;
mod report;
mod source;

pub use crate::aggregator::{Aggregate, Aggregator, AnyOutput, Builder, Key};
pub use crate::error::{AggregateError, BuildError, MergeError, SourceTimeout};
pub use crate::report::{Outcome, Report, SourceReport, TimeoutKind, Trigger};

#[doc(inline)]
pub use muster_core::{
    BoxError, CancelToken, Cause, ErrorKind, Fetcher, FetcherFn, Group, GroupError, Name, Outputs, SpawnError,
    fetcher_fn,
};
#[doc(inline)]
pub use muster_options::{
    Deadline, Fallback, Field, GroupConfig, GroupOption, Hedge, Limit, OptionError, Optional, ParentSpan, Retry,
    SourceConfig, SourceOption, Timeout, option_fn,
};

#[cfg(feature = "json")]
pub mod json;

/// Test doubles: scripted [`MockFetcher`](mock::MockFetcher)s and a mockall
/// [`MockSource`](mock::MockSource) (feature `mock`).
#[cfg(feature = "mock")]
pub mod mock {
    #[doc(inline)]
    pub use muster_adapters::mock::*;
}
