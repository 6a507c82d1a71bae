//! Source policies as layers: each wraps a [`Fetcher`] in another `Fetcher`.
//!
//! A policy is a value implementing [`Policy`]: [`Timeout`], [`Retry`], [`Hedge`],
//! [`Optional`], [`Fallback`], [`Coalesce`], a tower layer in [`Tower`] (feature `tower`), or
//! one of your own. [`AggregatorBuilder::source_with`](crate::AggregatorBuilder::source_with)
//! takes one, or a tuple of them listed **from the inside out**: the first wraps the fetcher,
//! the next wraps that, and so on. [`Policy::wrap`] applies one outside an aggregator (e.g.
//! for a [`Group`](crate::Group) task).
//!
//! # The order, and why
//!
//! The built-in policies are meant to be listed in this order, inside first:
//!
//! 1. [`Coalesce`]: concurrent aggregations share the raw call, and each keeps its own
//!    timeout and retries around it.
//! 2. [`Timeout`]: a timeout per attempt, so that a retry gets a fresh one (a timeout outside
//!    the retry would bound all attempts together; the global deadline already does that).
//! 3. [`Hedge`]: a hedged attempt is one attempt of the retry.
//! 4. [`Retry`]: retries the whole hedged, timed attempt, asking the error
//!    ([`Classify`](crate::Classify)) whether to.
//! 5. Your own policies that judge the source as a whole (a circuit breaker, a cache).
//! 6. [`Optional`] or [`Fallback`], outermost: only the final failure is replaced, after every
//!    retry, and the fallback also answers when the global deadline comes first.
//!
//! # What a source's error needs
//!
//! Every built-in policy passes the wrapped error's [kind](crate::ErrorKind) and retry verdict
//! on ([`Classify`](crate::Classify)). [`Timeout`], [`Coalesce`], [`Tower`] and
//! the [`first_ok`](crate::completion::first_ok) / [`quorum`](crate::completion::quorum) /
//! [`all`](crate::completion::all) members need the source's error to be
//! `Classify + Error + Send + Sync + 'static`; [`Retry`], [`Hedge`], [`Optional`] and
//! [`Fallback`] need only what the aggregator needs of any source, `Classify + Into<BoxError>`
//! (and `Send`). Writing the first bound in a generic function covers them all.
//!
//! Policies report what they did through [`report`](crate::report) (a retry's attempts, a
//! timeout, a hedge's winner, a fallback): the [`Report`](crate::Report) shows it without the
//! aggregator knowing the policy.
//!
//! # Writing a policy
//!
//! A policy is a `Fetcher` around another one plus the `Policy` value that builds it. Its
//! error says what it is ([`Classify`](crate::Classify)), passing on the wrapped error's kind
//! and verdict, so that the report, logs, metrics and HTTP bodies keep the source's kind
//! (`status` for an HTTP 500) through it. A small circuit breaker that opens after three
//! failures in a row:
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use muster::{Classify, ErrorKind, Event, Fetcher, Policy, async_trait, report};
//!
//! struct Breaker;
//!
//! struct BreakerFetcher<F> {
//!     inner: F,
//!     failures: AtomicU32,
//! }
//!
//! #[derive(Debug, thiserror::Error)]
//! enum BreakerError<E> {
//!     #[error("circuit open")]
//!     Open,
//!     #[error(transparent)]
//!     Inner(E),
//! }
//!
//! // The breaker passes the kind on, one line per method, and has a kind of its own.
//! impl<E: Classify> Classify for BreakerError<E> {
//!     fn kind(&self) -> ErrorKind {
//!         match self {
//!             Self::Open => ErrorKind::new("circuit_open"),
//!             Self::Inner(error) => error.kind(),
//!         }
//!     }
//!
//!     fn is_retryable(&self) -> bool {
//!         match self {
//!             Self::Open => false,
//!             Self::Inner(error) => error.is_retryable(),
//!         }
//!     }
//! }
//!
//! impl<F> Policy<F> for Breaker {
//!     type Fetcher = BreakerFetcher<F>;
//!
//!     fn wrap(self, inner: F) -> BreakerFetcher<F> {
//!         BreakerFetcher { inner, failures: AtomicU32::new(0) }
//!     }
//! }
//!
//! #[async_trait]
//! impl<Req, F> Fetcher<Req> for BreakerFetcher<F>
//! where
//!     Req: ?Sized + Sync,
//!     F: Fetcher<Req>,
//!     F::Error: std::error::Error + Send + Sync + 'static,
//! {
//!     type Output = F::Output;
//!     type Error = BreakerError<F::Error>;
//!
//!     async fn fetch(&self, request: &Req) -> Result<F::Output, Self::Error> {
//!         if self.failures.load(Ordering::Relaxed) >= 3 {
//!             report(Event::Note("circuit open"));
//!             return Err(BreakerError::Open);
//!         }
//!         let result = self.inner.fetch(request).await;
//!         match &result {
//!             Ok(_) => self.failures.store(0, Ordering::Relaxed),
//!             Err(_) => _ = self.failures.fetch_add(1, Ordering::Relaxed),
//!         }
//!         result.map_err(BreakerError::Inner)
//!     }
//! }
//!
//! // Next to the built-in policies, inside the fallback:
//! # use muster::{Aggregator, Fallback, Timeout, fetcher_fn};
//! # let offers = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(vec![1_u32]) });
//! let aggregator = Aggregator::builder()
//!     .source_with("offers", offers, (Timeout(std::time::Duration::from_millis(200)), Breaker, Fallback(Vec::new())))
//!     .build()?;
//! # let _ = aggregator;
//! # Ok::<(), muster::BuildError>(())
//! ```
//!
//! `examples/basic` and the crate's tests use this breaker inside an aggregator, next to the
//! built-in policies.

use std::time::Duration;

use muster_core::muster_options::OptionError;

#[allow(unused_imports)] // for the docs' links
use muster_core::Fetcher;

pub(crate) mod coalesce;
pub(crate) mod fallback;
pub(crate) mod hedge;
pub(crate) mod retry;
pub(crate) mod timeout;
#[cfg(feature = "tower")]
pub(crate) mod tower;

pub use muster_options::{ByError, Fallback, Hedge, Optional, Retry, Timeout};

pub use self::coalesce::{Coalesce, CoalesceError, CoalesceFetcher};
pub use self::fallback::{FallbackFetcher, OptionalFetcher};
pub use self::hedge::HedgeFetcher;
pub use self::retry::{RetryFetcher, RetryIf};
pub use self::timeout::{TimeoutError, TimeoutFetcher};
#[cfg(feature = "tower")]
pub use self::tower::{Tower, TowerError, TowerFetcher};

/// A policy: wraps a fetcher `F` in another [`Fetcher`] that adds a behaviour (a timeout, a
/// retry, a fallback, ...). See the [module documentation](self) for the built-in ones, their
/// order and how to write one.
///
/// Tuples apply their policies from the inside out: `(Timeout(d), Retry::attempts(3))` wraps
/// the fetcher in the timeout, then that in the retry. `()` is no policy.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a policy that can wrap the source `{F}`",
    label = "not a policy for this source",
    note = "policies are `Timeout`, `Retry`, `Hedge`, `Optional`, `Fallback(value)` (a value of the source's output type), `Coalesce`, `Tower(layer)`, your own `Policy` impls, or a tuple of them, inside first"
)]
pub trait Policy<F> {
    /// The wrapped fetcher.
    type Fetcher;

    /// Wraps `inner`.
    fn wrap(self, inner: F) -> Self::Fetcher;

    /// Checks the policy's values when an aggregator is built, and returns the least time it
    /// needs (a retry's backoffs): the builder refuses a source whose policies need the whole
    /// deadline. The default accepts everything and needs nothing.
    ///
    /// # Errors
    ///
    /// The [`OptionError`] that makes the aggregator's builder refuse the source.
    fn check(&self) -> Result<Duration, OptionError> {
        Ok(Duration::ZERO)
    }
}

impl<F> Policy<F> for () {
    type Fetcher = F;

    fn wrap(self, inner: F) -> F {
        inner
    }
}

// Tuples apply their policies from the inside out; written out for up to six.
impl<S, P1> Policy<S> for (P1,)
where
    P1: Policy<S>,
{
    type Fetcher = <P1 as Policy<S>>::Fetcher;

    fn wrap(self, inner: S) -> Self::Fetcher {
        let (p1,) = self;
        p1.wrap(inner)
    }

    fn check(&self) -> Result<Duration, OptionError> {
        let mut needs = Duration::ZERO;
        let (p1,) = self;
        needs = needs.saturating_add(p1.check()?);
        Ok(needs)
    }
}

impl<S, P1, P2> Policy<S> for (P1, P2)
where
    P1: Policy<S>,
    P2: Policy<<P1 as Policy<S>>::Fetcher>,
{
    type Fetcher = <P2 as Policy<<P1 as Policy<S>>::Fetcher>>::Fetcher;

    fn wrap(self, inner: S) -> Self::Fetcher {
        let (p1, p2) = self;
        p2.wrap(p1.wrap(inner))
    }

    fn check(&self) -> Result<Duration, OptionError> {
        let mut needs = Duration::ZERO;
        let (p1, p2) = self;
        needs = needs.saturating_add(p1.check()?);
        needs = needs.saturating_add(p2.check()?);
        Ok(needs)
    }
}

impl<S, P1, P2, P3> Policy<S> for (P1, P2, P3)
where
    P1: Policy<S>,
    P2: Policy<<P1 as Policy<S>>::Fetcher>,
    P3: Policy<<P2 as Policy<<P1 as Policy<S>>::Fetcher>>::Fetcher>,
{
    type Fetcher = <P3 as Policy<<P2 as Policy<<P1 as Policy<S>>::Fetcher>>::Fetcher>>::Fetcher;

    fn wrap(self, inner: S) -> Self::Fetcher {
        let (p1, p2, p3) = self;
        p3.wrap(p2.wrap(p1.wrap(inner)))
    }

    fn check(&self) -> Result<Duration, OptionError> {
        let mut needs = Duration::ZERO;
        let (p1, p2, p3) = self;
        needs = needs.saturating_add(p1.check()?);
        needs = needs.saturating_add(p2.check()?);
        needs = needs.saturating_add(p3.check()?);
        Ok(needs)
    }
}

impl<S, P1, P2, P3, P4> Policy<S> for (P1, P2, P3, P4)
where
    P1: Policy<S>,
    P2: Policy<<P1 as Policy<S>>::Fetcher>,
    P3: Policy<<P2 as Policy<<P1 as Policy<S>>::Fetcher>>::Fetcher>,
    P4: Policy<<P3 as Policy<<P2 as Policy<<P1 as Policy<S>>::Fetcher>>::Fetcher>>::Fetcher>,
{
    type Fetcher =
        <P4 as Policy<<P3 as Policy<<P2 as Policy<<P1 as Policy<S>>::Fetcher>>::Fetcher>>::Fetcher>>::Fetcher;

    fn wrap(self, inner: S) -> Self::Fetcher {
        let (p1, p2, p3, p4) = self;
        p4.wrap(p3.wrap(p2.wrap(p1.wrap(inner))))
    }

    fn check(&self) -> Result<Duration, OptionError> {
        let mut needs = Duration::ZERO;
        let (p1, p2, p3, p4) = self;
        needs = needs.saturating_add(p1.check()?);
        needs = needs.saturating_add(p2.check()?);
        needs = needs.saturating_add(p3.check()?);
        needs = needs.saturating_add(p4.check()?);
        Ok(needs)
    }
}

impl<S, P1, P2, P3, P4, P5> Policy<S> for (P1, P2, P3, P4, P5)
where
    P1: Policy<S>,
    P2: Policy<<P1 as Policy<S>>::Fetcher>,
    P3: Policy<<P2 as Policy<<P1 as Policy<S>>::Fetcher>>::Fetcher>,
    P4: Policy<<P3 as Policy<<P2 as Policy<<P1 as Policy<S>>::Fetcher>>::Fetcher>>::Fetcher>,
    P5: Policy<<P4 as Policy<<P3 as Policy<<P2 as Policy<<P1 as Policy<S>>::Fetcher>>::Fetcher>>::Fetcher>>::Fetcher>,
{
    type Fetcher = <P5 as Policy<
        <P4 as Policy<<P3 as Policy<<P2 as Policy<<P1 as Policy<S>>::Fetcher>>::Fetcher>>::Fetcher>>::Fetcher,
    >>::Fetcher;

    fn wrap(self, inner: S) -> Self::Fetcher {
        let (p1, p2, p3, p4, p5) = self;
        p5.wrap(p4.wrap(p3.wrap(p2.wrap(p1.wrap(inner)))))
    }

    fn check(&self) -> Result<Duration, OptionError> {
        let mut needs = Duration::ZERO;
        let (p1, p2, p3, p4, p5) = self;
        needs = needs.saturating_add(p1.check()?);
        needs = needs.saturating_add(p2.check()?);
        needs = needs.saturating_add(p3.check()?);
        needs = needs.saturating_add(p4.check()?);
        needs = needs.saturating_add(p5.check()?);
        Ok(needs)
    }
}

impl<S, P1, P2, P3, P4, P5, P6> Policy<S> for (P1, P2, P3, P4, P5, P6)
where
    P1: Policy<S>,
    P2: Policy<<P1 as Policy<S>>::Fetcher>,
    P3: Policy<<P2 as Policy<<P1 as Policy<S>>::Fetcher>>::Fetcher>,
    P4: Policy<<P3 as Policy<<P2 as Policy<<P1 as Policy<S>>::Fetcher>>::Fetcher>>::Fetcher>,
    P5: Policy<<P4 as Policy<<P3 as Policy<<P2 as Policy<<P1 as Policy<S>>::Fetcher>>::Fetcher>>::Fetcher>>::Fetcher>,
    P6: Policy<
        <P5 as Policy<
            <P4 as Policy<<P3 as Policy<<P2 as Policy<<P1 as Policy<S>>::Fetcher>>::Fetcher>>::Fetcher>>::Fetcher,
        >>::Fetcher,
    >,
{
    type Fetcher = <P6 as Policy<
        <P5 as Policy<
            <P4 as Policy<<P3 as Policy<<P2 as Policy<<P1 as Policy<S>>::Fetcher>>::Fetcher>>::Fetcher>>::Fetcher,
        >>::Fetcher,
    >>::Fetcher;

    fn wrap(self, inner: S) -> Self::Fetcher {
        let (p1, p2, p3, p4, p5, p6) = self;
        p6.wrap(p5.wrap(p4.wrap(p3.wrap(p2.wrap(p1.wrap(inner))))))
    }

    fn check(&self) -> Result<Duration, OptionError> {
        let mut needs = Duration::ZERO;
        let (p1, p2, p3, p4, p5, p6) = self;
        needs = needs.saturating_add(p1.check()?);
        needs = needs.saturating_add(p2.check()?);
        needs = needs.saturating_add(p3.check()?);
        needs = needs.saturating_add(p4.check()?);
        needs = needs.saturating_add(p5.check()?);
        needs = needs.saturating_add(p6.check()?);
        Ok(needs)
    }
}
