//! Fail-fast structured concurrency: named [`Fetcher`]s run in a [`Group`].
//!
//! A [`Group`] runs named tasks concurrently under one optional deadline and returns every
//! output by name, or the first failure; the moment one task fails, every other task is
//! cancelled by being dropped, and the error names the failed task, the reason and what was
//! cancelled. It is the counterpart of Go's `errgroup.WithContext`, Python's `TaskGroup` and
//! Trio's nursery, with real cancellation.
//!
//! ```
//! # use muster_core as muster;
//! use std::time::Duration;
//! use muster::{ErrorKind, Group};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let started = tokio::time::Instant::now();
//! let mut group = Group::new();
//! group.spawn("profile", async {
//!     tokio::time::sleep(Duration::from_millis(30)).await;
//!     Err::<&str, _>("profile service: 503 Service Unavailable")
//! })?;
//! group.spawn("transactions", async {
//!     tokio::time::sleep(Duration::from_secs(10)).await; // cancelled long before this
//!     Ok::<_, &str>("[...]")
//! })?;
//!
//! let error = group.wait().await.unwrap_err();
//! assert_eq!(error.kind(), ErrorKind::Failed);
//! assert_eq!(error.source_name(), Some("profile"));
//! assert_eq!(error.cancelled(), ["transactions"]);
//! assert_eq!(started.elapsed(), Duration::from_millis(30));
//! assert_eq!(error.to_string(), "source `profile` failed after 30ms");
//! # Ok(()) }
//! ```
//!
//! # Guarantees
//!
//! - **Names**: tasks are named, a duplicate name is refused; outputs come back by name and in
//!   spawn order ([`Outputs`]).
//! - **First failure wins**: the first task to fail, by completion time, is the group's error;
//!   ties at the same instant go to the earlier-spawned task. The siblings it cancelled are
//!   listed as cancelled, never as errors of their own.
//! - **Real cancellation**: cancelled tasks are dropped (their connections closed, their drop
//!   guards run) before [`Group::wait`] returns. Dropping the `wait` future drops them too.
//! - **Deadline**: an optional deadline fails the group naming the pending tasks.
//! - **Cause**: the error and the group's [`CancelToken`] say why: the failed task (name and
//!   error), the deadline, the caller's cancellation (with a reason, [`Cause::Reason`]), or
//!   completion. A cause, once set, is never overwritten: a nested group's tasks read the
//!   outer failure, not "dropped"; [`Cause::chain`] walks down into nested groups' causes.
//! - **Inside a task**: [`cancellation()`] is the group's token and [`deadline()`] its
//!   deadline, while the task is polled and while it is dropped (so drop guards can tell why);
//!   [`with_cancellation`] and [`with_deadline_from`] give work shared by several callers its
//!   own token and deadline, and [`context()`] is the request's [`Context`] where an
//!   aggregator set one ([`with_context`]).
//! - **Panics** become the task's error and cancel its siblings; the process does not crash.
//!   A panic while a cancelled task is dropped is contained and recorded as a
//!   [secondary failure](GroupError::secondary).
//! - **Concurrency limit**: queued tasks start in spawn order and never after a failure;
//!   [`Group::try_spawn`] refuses instead of queueing and hands the task back.
//! - **Spawning from inside**: a [`GroupHandle`] lets running tasks spawn siblings; once the
//!   group has closed every spawn is refused with the cause.
//! - **Report**: [`Group::wait_with_report`] gives every task's outcome, start and duration
//!   ([`GroupReport`], printable as a waterfall); plain [`Group::wait`] records nothing.
//! - **Tracing**: every task runs in a `source` span (field `source = <name>`) inside the
//!   caller's span.
//!
//! # Stability
//!
//! muster-core is the part of muster meant to change rarely (like `tower-service` or
//! `tracing-core`), so that fetchers and adapters written against it keep working across
//! releases of the aggregator. Stable, within a major version: the [`Fetcher`] trait and
//! [`fetcher_fn`]; [`Group`] with [`GroupHandle`], [`Wait`], [`WaitWithReport`], [`Outputs`]
//! and the semantics listed above; [`CancelToken`] with [`Cancelled`], and [`Cause`]; the
//! errors ([`GroupError`], [`SpawnError`], [`TrySpawnError`], [`ErrorKind`] and its built-in
//! words); [`Classify`], [`boxed`] and [`Classified`]; [`deadline()`], [`with_deadline`],
//! [`with_deadline_from`], [`cancellation()`], [`with_cancellation`], [`context()`] and
//! [`Context`]; [`GroupReport`]. Enums and report structs are
//! `#[non_exhaustive]`: new variants (a new [`Cause`], a new [`TaskOutcome`]) and fields may
//! come in minor releases, so match them with a wildcard arm. The texts of `Display` are for
//! people and may be reworded; match on kinds and variants instead.
//!
//! # Polling in place, not spawning
//!
//! A group polls its tasks inside the `wait` future rather than spawning one runtime task per
//! source. That removes the `'static` bound (sources borrow the request), makes cancellation a
//! synchronous drop that is complete when `wait` returns (an aborted spawned task is only
//! dropped later, at the runtime's convenience), and costs one allocation per task instead of a
//! spawn. The price is that tasks share one thread: put CPU-heavy work in
//! `tokio::task::spawn_blocking` inside the task. `benches/group.rs` measures the group against
//! `futures::future::try_join_all`, `tokio::try_join!`, `tokio::task::JoinSet` and spawn +
//! `CancellationToken` (the figures are in the workspace's `BENCHMARKS.md`).
//!
//! Options (deadline, concurrency limit, tracing span, request-context fields) come from
//! [`muster_options`]. The minimum supported Rust version is 1.85.
#![doc(test(attr(deny(warnings))))]

mod cancel;
mod classify;
mod context;
mod deadline;
mod error;
mod fetcher;
mod group;
mod report;

pub use crate::cancel::{CancelToken, Cancelled, Cause, Name, SharedError};
pub use crate::classify::{Classified, Classify, boxed};
pub use crate::context::{Context, context, with_context};
pub use crate::deadline::{
    WithCancellation, WithDeadlineFrom, cancellation, deadline, with_cancellation, with_deadline, with_deadline_from,
};
#[doc(hidden)]
pub use crate::error::rounded_ms;
pub use crate::error::{BoxError, ErrorKind, GroupError, SpawnError, TrySpawnError};
pub use crate::fetcher::{Fetcher, FetcherFn, fetcher_fn};
pub use crate::group::{Group, GroupHandle, IntoIter, Outputs, Wait, WaitWithReport};
#[doc(hidden)]
pub use crate::group::{Timeline, panic_message};
pub use crate::report::{GroupReport, TaskOutcome, TaskReport};
#[doc(hidden)]
pub use crate::report::{Millis, bar as waterfall_bar};
#[doc(no_inline)]
pub use async_trait::async_trait;
#[doc(no_inline)]
pub use muster_options;
#[doc(no_inline)]
pub use muster_options::{Deadline, Field, GroupConfig, GroupOption, Limit, OptionError, ParentSpan};
