//! Source policies as layers: each wraps a [`Fetcher`] in another `Fetcher`.
//!
//! A policy is a value implementing [`Policy`]: [`Timeout`], [`Retry`], [`Hedge`],
//! [`Optional`], [`Fallback`], [`Coalesce`], [`CircuitBreaker`], [`Budget`], `Cache` (feature
//! `cache`, with a Redis tier under the feature `redis`), a tower layer in [`Tower`] (feature
//! `tower`), or one of your own. [`AggregatorBuilder::source_with`](crate::builder::AggregatorBuilder::source_with)
//! takes one, or a tuple of them listed **outermost first**, as tower's tuples of layers and
//! its `ServiceBuilder` list theirs: in `(A, B, C)`, `C` wraps the fetcher, `B` wraps that,
//! and `A` wraps everything, so a call goes through `A` first. A tuple nests: `(A, (B, C))`
//! is `(A, B, C)`, and a tower stack inside one, `Tower((L1, L2))`, reads the same way (`L1`
//! outside `L2`). [`Policy::wrap`] applies one outside an aggregator (e.g. for a
//! [`Group`](crate::Group) task).
//!
//! # The order, and why
//!
//! The built-in policies are meant to be listed in this order, outermost first, e.g.
//! `(Fallback(v), Cache::new(key), CircuitBreaker::new(), Budget::new(), Retry::attempts(3), Hedge(h), Timeout(d), Coalesce)`:
//!
//! 1. [`Optional`] or [`Fallback`], outermost: only the final failure is replaced, after every
//!    retry, and the fallback also answers when the global deadline comes first.
//! 2. The `Cache` (feature `cache`), inside the fallback and outside the breaker and the
//!    retry. Outside them, a fresh hit makes no attempt at all (the breaker counts nothing, no
//!    retry budget is spent), and a stale value stands in for the *final* failure: after
//!    every retry, or at once when an open breaker rejects the call (`circuit_open`), rather
//!    than for the first attempt's error (which a retry might have fixed). Inside the
//!    fallback, a last-known-good value is preferred to the fallback's placeholder, which
//!    answers only when not even a stale value is at hand. It also answers stale just before
//!    the global deadline, which the fallback could only answer with its placeholder.
//! 3. The policies that judge the source as a whole (yours too):
//!    1. [`CircuitBreaker`]: it judges the whole call, after every retry (one verdict per
//!       call, so retries do not multiply the failures it counts), and when open refuses
//!       before anything inside runs: no attempt, no budget token, no connection, so the
//!       cache or fallback outside it answers at once.
//!    2. [`Budget`]: inside the breaker, so a refused call neither deposits nor withdraws;
//!       outside the retry and hedge, whose extra attempts it governs (they ask it before
//!       each one).
//! 4. [`Retry`]: retries the whole hedged, timed attempt, asking the error
//!    ([`Classify`](crate::Classify)) whether to.
//! 5. [`Hedge`]: a hedged attempt is one attempt of the retry.
//! 6. [`Timeout`]: a timeout per attempt, so that a retry gets a fresh one (a timeout outside
//!    the retry would bound all attempts together; the global deadline already does that).
//! 7. [`Coalesce`], innermost: concurrent aggregations share the raw call, and each keeps its
//!    own timeout and retries around it.
//!
//! All of it: `(Fallback(v), CircuitBreaker::new(), Budget::new(), Retry::attempts(3), Hedge(h), Timeout(d), Coalesce)`.
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
//! timeout, a hedge's winner, a fallback): the [`Report`](crate::report::Report) shows it without the
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
//! use muster::{Classify, ErrorKind, report::Event, Fetcher, policy::Policy, async_trait, report::record};
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
//!             record(Event::Note("circuit open"));
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
//!     .source_with("offers", offers, (Fallback(Vec::new()), Breaker, Timeout(std::time::Duration::from_millis(200))))
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

pub(crate) mod breaker;
pub(crate) mod budget;
#[cfg(feature = "cache")]
pub(crate) mod cache;
pub(crate) mod coalesce;
pub(crate) mod fallback;
pub(crate) mod hedge;
pub(crate) mod retry;
pub(crate) mod timeout;
#[cfg(feature = "tower")]
pub(crate) mod tower;

pub use muster_options::{ByError, Fallback, Hedge, Optional, Retry, Timeout};

pub use self::breaker::{
    BreakerError, BreakerFetcher, BreakerHandle, BreakerState, ByKind, CircuitBreaker, FailureIf, SlidingWindow,
};
pub use self::budget::{Budget, BudgetFetcher};
#[cfg(feature = "redis")]
pub use self::cache::redis::{RedisTier, RedisTierError};
#[cfg(feature = "cache")]
pub use self::cache::{Bytes, Cache, CacheFetcher, Entries, LocalOnly, Weigher};
pub use self::coalesce::{Coalesce, CoalesceBy, CoalesceError, CoalesceFetcher};
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
/// A tuple lists its policies outermost first, as tower's `(L1, L2)` and `ServiceBuilder` do:
/// `(Retry::attempts(3), Timeout(d))` wraps the fetcher in the timeout, then that in the
/// retry, so each attempt gets its own timeout. Tuples of up to twelve policies are policies,
/// and nest: `(A, (B, C))` is `(A, B, C)`. `()` is no policy. [`check`](Self::check) on a
/// tuple adds up what its policies need.
///
/// ```
/// use std::time::Duration;
/// use muster::policy::{FallbackFetcher, RetryFetcher, TimeoutFetcher};
/// use muster::{Fallback, Fetcher, policy::Policy, Retry, Timeout, fetcher_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let offers = fetcher_fn(|_: &u64| async { Err::<Vec<u32>, _>(std::io::Error::other("offers are down")) });
/// let policies = (Fallback(Vec::new()), Retry::attempts(3), Timeout(Duration::from_millis(200)));
/// // The first is outermost: a fallback around a retry around a timeout around the fetcher.
/// let offers: FallbackFetcher<RetryFetcher<TimeoutFetcher<_>>, _> = policies.wrap(offers);
/// assert_eq!(offers.fetch(&7).await, Ok(vec![]));
/// # }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a policy that can wrap the source `{F}`",
    label = "not a policy for this source",
    note = "policies are `Timeout`, `Retry`, `Hedge`, `Optional`, `Fallback(value)` (a value of the source's output type), `Coalesce`, `Tower(layer)`, your own `Policy` impls, or a tuple of them, outermost first"
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

// A tuple lists its policies outermost first, as tower-layer's tuples and `ServiceBuilder` do.
// Each impl is written recursively, as tower-layer writes its own: the head wraps what the tail
// (itself a tuple, down to `()`) made of the fetcher. `policy_tuple!` pairs each element with
// the next for the bounds (`P1: Policy<P2::Fetcher>`, ..., `Pn: Policy<F>`), so that a tuple
// that does not fit names the element at fault, and `check` can ask every element.
macro_rules! policy_tuple {
    ($($P:ident $p:ident),+) => {
        policy_tuple!(@bounds [] [$($P $p),+] $($P $p),+);
    };
    (@bounds [$($bound:tt)*] [$($all:tt)*] $P:ident $p:ident, $N:ident $n:ident $(, $R:ident $r:ident)*) => {
        policy_tuple!(@bounds [$($bound)* $P: Policy<$N::Fetcher>,] [$($all)*] $N $n $(, $R $r)*);
    };
    (@bounds [$($bound:tt)*] [$H:ident $h:ident $(, $T:ident $t:ident)*] $L:ident $l:ident) => {
        impl<F, $H $(, $T)*> Policy<F> for ($H, $($T,)*)
        where
            $($bound)*
            $L: Policy<F>,
        {
            type Fetcher = $H::Fetcher;

            fn wrap(self, inner: F) -> Self::Fetcher {
                let ($h, $($t,)*) = self;
                $h.wrap(($($t,)*).wrap(inner))
            }

            fn check(&self) -> Result<Duration, OptionError> {
                let ($h, $($t,)*) = self;
                let needs = $h.check()?;
                $(let needs = needs.saturating_add($t.check()?);)*
                Ok(needs)
            }
        }
    };
}

policy_tuple!(P1 p1);
policy_tuple!(P1 p1, P2 p2);
policy_tuple!(P1 p1, P2 p2, P3 p3);
policy_tuple!(P1 p1, P2 p2, P3 p3, P4 p4);
policy_tuple!(P1 p1, P2 p2, P3 p3, P4 p4, P5 p5);
policy_tuple!(P1 p1, P2 p2, P3 p3, P4 p4, P5 p5, P6 p6);
policy_tuple!(P1 p1, P2 p2, P3 p3, P4 p4, P5 p5, P6 p6, P7 p7);
policy_tuple!(P1 p1, P2 p2, P3 p3, P4 p4, P5 p5, P6 p6, P7 p7, P8 p8);
policy_tuple!(P1 p1, P2 p2, P3 p3, P4 p4, P5 p5, P6 p6, P7 p7, P8 p8, P9 p9);
policy_tuple!(P1 p1, P2 p2, P3 p3, P4 p4, P5 p5, P6 p6, P7 p7, P8 p8, P9 p9, P10 p10);
policy_tuple!(P1 p1, P2 p2, P3 p3, P4 p4, P5 p5, P6 p6, P7 p7, P8 p8, P9 p9, P10 p10, P11 p11);
policy_tuple!(P1 p1, P2 p2, P3 p3, P4 p4, P5 p5, P6 p6, P7 p7, P8 p8, P9 p9, P10 p10, P11 p11, P12 p12);
