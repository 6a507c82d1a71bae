//! What a source sees of its own call, from inside [`Fetcher::fetch`](crate::Fetcher::fetch):
//! its deadline, its cancellation and why, its request's context (fields, request id,
//! `traceparent`, forwarded headers), and a way for policies to tell the report what they did.
//!
//! These are free functions rather than arguments of `fetch`, so that a policy (a layer) can
//! wrap any fetcher without threading anything through it. They read task-local state that the
//! aggregator sets while it polls (and drops) a source; outside an aggregation they return
//! `None` (or do nothing).
//!
//! ```
//! use std::time::Duration;
//! use muster::{Aggregator, Deadline, fetcher_fn};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let budget = fetcher_fn(|_: &u64| async {
//!     // Tell the backend how long it has, e.g. as a header.
//!     Ok::<_, std::io::Error>(muster::remaining())
//! });
//! let aggregator = Aggregator::builder().source("budget", budget).options(Deadline(Duration::from_millis(800))).build()?;
//! let (remaining,) = aggregator.aggregate(&7).await?.outputs;
//! assert_eq!(remaining, Some(Duration::from_millis(800)));
//! assert_eq!(muster::remaining(), None, "outside an aggregation");
//! # Ok(()) }
//! ```

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use muster_core::BoxError;
use tokio::time::Instant;

use crate::report::{Entries, Recorder};

tokio::task_local! {
    static CALL: Call;
}

#[doc(hidden)]
/// The source being run, as its task-local state: the aggregation's recorder and token, and
/// which source it is.
#[derive(Clone, Debug)]
pub struct Call {
    pub(crate) shared: Arc<Shared>,
    pub(crate) index: usize,
}

#[doc(hidden)]
/// What every source of one aggregation shares: the report's recorder, the `on_ready` callback.
/// One allocation: the recorder, with its entries, is the last field.
pub struct Shared<E: ?Sized = dyn Entries> {
    pub(crate) names: Arc<[muster_core::Name]>,
    pub(crate) on_ready: Option<OnReady>,
    /// The aggregation's own deadline (its `Deadline`, the call's, or the enclosing one): a
    /// tighter [`deadline()`] inside a source is a source timeout's.
    pub(crate) deadline: Option<tokio::time::Instant>,
    pub(crate) recorder: Recorder<E>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("recorder", &&self.recorder).finish_non_exhaustive()
    }
}

/// A callback told about every source as it completes; see
/// [`RequestContext::on_ready`](crate::RequestContext::on_ready).
pub(crate) type OnReady = Arc<dyn Fn(Ready<'_>) + Send + Sync>;

/// A source that just completed, as [`RequestContext::on_ready`](crate::RequestContext::on_ready)
/// tells it: its name and position, and its output (or its error), the moment it has it, while
/// the others may still run. For streaming a response section by section.
#[derive(Clone, Copy)]
pub struct Ready<'a> {
    pub(crate) name: &'a str,
    pub(crate) index: usize,
    pub(crate) value: Result<&'a dyn Any, &'a BoxError>,
    pub(crate) fell_back: bool,
}

impl<'a> Ready<'a> {
    /// The source's name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// The source's position in declaration order, from 0.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The source's output, if it succeeded and its output is a `T` (the source's output
    /// type: `Option<T>` for an [`Optional`](crate::Optional) one).
    pub fn value<T: 'static>(&self) -> Option<&'a T> {
        self.value.ok().and_then(|value| value.downcast_ref())
    }

    /// The source's error, if it failed: the aggregation fails with it.
    pub fn error(&self) -> Option<&'a BoxError> {
        self.value.err()
    }

    /// Whether an optional source's fallback stands in for its output.
    pub fn is_fallback(&self) -> bool {
        self.fell_back
    }
}

impl fmt::Debug for Ready<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ready")
            .field("name", &self.name)
            .field("index", &self.index)
            .field("ok", &self.value.is_ok())
            .field("fell_back", &self.fell_back)
            .finish()
    }
}

impl Call {
    /// Runs `future` as this source's call.
    pub(crate) fn scope<F: Future>(self, future: F) -> impl Future<Output = F::Output> {
        CALL.scope(self, future)
    }
}

fn with_call(f: impl FnOnce(&Call)) {
    let _ = CALL.try_with(f);
}

/// The name of the source being run, for the policies that label what they record with it (a
/// circuit breaker's metrics); `None` outside an aggregation.
pub(crate) fn source_name() -> Option<muster_core::Name> {
    CALL.try_with(|call| call.shared.names.get(call.index).cloned()).ok().flatten()
}

/// The deadline the current source runs under: the aggregation's deadline (the tighter of the
/// aggregator's and the call's), or tighter still inside a per-source
/// [`Timeout`](crate::Timeout). `None` outside a source or without a deadline.
///
/// This is the one place the call's deadline is kept, as an instant: the timeout, retry,
/// hedge and fallback policies and the HTTP fetcher all read it from here (a source's timeout
/// that would end at or after it leaves it to fire, so the aggregation reports its deadline).
/// Inside a [`Coalesce`](crate::policy::Coalesce)d call it is the latest deadline of the waiters still
/// waiting.
///
/// # In a `Group`
///
#[doc(inline)]
pub use muster_core::deadline;

/// The time left until [`deadline()`], zero once it has passed; `None` without a deadline.
pub fn remaining() -> Option<Duration> {
    deadline().map(|deadline| deadline.saturating_duration_since(Instant::now()))
}

/// The cancellation token of the current source's aggregation: wait on it with
/// [`CancelToken::cancelled`](crate::cancel::CancelToken::cancelled), or read
/// [`CancelToken::cause`](crate::cancel::CancelToken::cause) (a sibling's failure, the deadline, the
/// caller going away, or completion), for example in a drop guard, since a cancelled source
/// is dropped. `None` outside a source. Inside a [`Coalesce`](crate::policy::Coalesce)d call it is the
/// shared call's own token, cancelled only when every waiter has gone.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use std::time::Duration;
/// use muster::{Aggregator, fetcher_fn};
///
/// struct Guard(Arc<Mutex<Option<String>>>);
/// impl Drop for Guard {
///     fn drop(&mut self) {
///         let cause = muster::cancellation().and_then(|token| token.cause().map(ToString::to_string));
///         *self.0.lock().unwrap() = cause;
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let seen = Arc::new(Mutex::new(None));
/// let slow = {
///     let seen = Arc::clone(&seen);
///     fetcher_fn(move |_: &u64| {
///         let guard = Guard(Arc::clone(&seen));
///         async move {
///             tokio::time::sleep(Duration::from_secs(5)).await;
///             drop(guard);
///             Ok::<_, std::io::Error>(())
///         }
///     })
/// };
/// let failing = fetcher_fn(|_: &u64| async { Err::<(), _>(std::io::Error::other("503")) });
/// let aggregator = Aggregator::builder().source("slow", slow).source("failing", failing).build()?;
/// assert!(aggregator.aggregate(&1).await.is_err());
/// assert_eq!(seen.lock().unwrap().as_deref(), Some("cancelled by `failing`: 503"));
/// # Ok(()) }
/// ```
///
/// # In a `Group`
///
#[doc(inline)]
pub use muster_core::cancellation;

/// The context of the request the current source serves: the fields, request id,
/// `traceparent` and headers of the call's [`RequestContext`](crate::RequestContext) (and the
/// aggregator's default [`Field`](crate::options::Field)s), made once per call and read by every source
/// and policy inside `fetch`. `None` outside an aggregation. Inside a
/// [`Coalesce`](crate::policy::Coalesce)d call it is the context of the fetch that started the call;
/// inside a nested aggregator whose call brings nothing of its own, the outer request's.
///
/// ```
/// use muster::{Aggregator, RequestContext, fetcher_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let whoami = fetcher_fn(|_: &u64| async {
///     let context = muster::context().expect("inside an aggregation");
///     let id = context.request_id().unwrap_or("none").to_owned();
///     Ok::<_, std::io::Error>((id, context.header("authorization").is_some()))
/// });
/// let aggregator = Aggregator::builder().source("whoami", whoami).build()?;
/// let context = RequestContext::new().request_id("r-1").header("Authorization", "Bearer t0k3n");
/// let ((id, authorized),) = aggregator.aggregate_with(&7, context).await?.outputs;
/// assert_eq!((id.as_str(), authorized), ("r-1", true));
/// assert!(muster::context().is_none(), "outside an aggregation");
/// # Ok(()) }
/// ```
///
/// # In a `Group`
///
#[doc(inline)]
pub use muster_core::context;

#[doc(inline)]
pub use muster_core::Context;

/// What policies tell the report about the source they wrap: the aggregator shows these in
/// the source's line of the [`Report`](crate::report::Report), whatever the policy is. Outside a
/// source this does nothing.
///
/// Built-in policies use it (a retry's attempts, a hedge, a timeout, a fallback); a policy of
/// your own (a circuit breaker, a cache) can too:
///
/// ```
/// muster::report::record(muster::report::Event::Note("circuit open"));
/// ```
pub fn report(event: Event<'_>) {
    with_call(|call| call.shared.recorder.event(call.index, event));
}

/// Something a policy did, for the [`report`] of the source it wraps.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// Another attempt started (a retry); the first attempt is counted by the aggregator.
    Attempt,
    /// A hedged attempt started: counted as an attempt and as a hedge.
    Hedge,
    /// The source's own timeout fired: unless a later attempt succeeds or fails otherwise, the
    /// source timed out.
    TimedOut,
    /// Free text shown after the outcome, e.g. `"circuit open"` or `"served from cache"`.
    Note(&'a str),
    /// The result came from a call shared by `waiters` fetches (a [`Coalesce`](crate::policy::Coalesce)d
    /// call): shown as [`SourceReport::shared`](crate::report::SourceReport::shared).
    Shared {
        /// How many fetches waited on the call, this one included.
        waiters: usize,
    },
    /// A stale value answered for the source (a [`Cache`](crate::policy::Cache)'s
    /// `stale_if_error`): shown as [`SourceReport::stale`](crate::report::SourceReport::stale) and
    /// noted `stale (age 94s)`.
    Stale {
        /// How old the value was.
        age: std::time::Duration,
    },
}

/// Records the report of an aggregation that ran as the current source: the outer waterfall
/// shows it under the source's line.
pub(crate) fn nested(report: crate::report::Report) {
    with_call(|call| call.shared.recorder.nested(call.index, report));
}

/// Whether `deadline` is tighter than the aggregation's own (or the aggregation has none):
/// set by a source's [`Timeout`](crate::Timeout), not the global deadline.
pub(crate) fn is_source_deadline(deadline: tokio::time::Instant) -> bool {
    CALL.try_with(|call| call.shared.deadline.is_none_or(|global| deadline < global)).unwrap_or(false)
}

/// Records that an optional source's fallback replaced `failure`: the report shows the source
/// as fallen back after it.
pub(crate) fn fell_back(failure: crate::report::Failure<'_>) {
    with_call(|call| call.shared.recorder.fell_back(call.index, failure));
}
