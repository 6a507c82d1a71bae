//! Completion policies as values: sources made of several fetchers of one type, each with its
//! own rule for when it is done.
//!
//! The aggregator's own rule is *every required source succeeds, fail-fast*. Each function here
//! makes one source out of several members with another rule; the result is a [`Fetcher`], so
//! it is a source like any other, takes policies, and composes: "profile and (transactions or
//! cached transactions)" is a required `profile` next to a [`first_ok`] of two transactions
//! fetchers.
//!
//! | rule | function | output | fails when |
//! |---|---|---|---|
//! | every member succeeds, fail-fast | [`all`] | [`Outputs<T>`] by name | the first member fails |
//! | the first success wins, the rest are cancelled | [`first_ok`] | `T` | every member failed |
//! | `k` of `n` succeed, then the rest are cancelled | [`quorum`] | [`Outputs<T>`] of the first `k` | fewer than `k` can still succeed |
//! | every outcome, no fail-fast | [`settled`] | [`Outputs<Result<T, E>>`] | only when a member panics |
//!
//! Members run concurrently, polled in place inside the source's fetch (like a
//! [`Group`]'s tasks), under the aggregation's deadline and cancellation (as
//! [`cancellation()`](crate::cancellation) reads it where the source's fetch starts: inside a
//! [`Coalesce`](crate::policy::Coalesce)d call, the shared call's own token): when the
//! aggregation stops, every member is dropped: a completion source still waiting at the
//! deadline is a pending source like any other, and what its members had returned is dropped
//! with it. A member that panics fails the source with that panic, whatever the rule (a panic
//! is not one of the member's errors). *Partial results at the deadline* are the
//! [`Optional`](crate::Optional) and
//! [`Fallback`](crate::Fallback) policies on any source:
//! [`Aggregate::is_partial`](crate::Aggregate::is_partial) says whether one of them stood in.
//!
//! ```
//! use std::time::Duration;
//! use muster::{Aggregator, fetcher_fn};
//! use muster::completion::first_ok;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // One backend type, two instances (members of different types: box them as `BoxFetcher`).
//! let backend = |answer: &'static str, ms: u64| {
//!     fetcher_fn(move |_: &u64| async move {
//!         tokio::time::sleep(Duration::from_millis(ms)).await;
//!         Ok::<_, std::io::Error>(answer)
//!     })
//! };
//! let profile = backend("Ada", 10);
//! // profile and (live transactions or cached transactions)
//! let transactions = first_ok([("live", backend("live", 200)), ("cached", backend("cached", 5))])?;
//! let aggregator = Aggregator::builder().source("profile", profile).source("transactions", transactions).build()?;
//! let (profile, transactions) = aggregator.aggregate(&7).await?.outputs;
//! assert_eq!((profile, transactions), ("Ada", "cached"));
//! # Ok(()) }
//! ```

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::stream::{FuturesUnordered, StreamExt as _};
use muster_core::{Classify, ErrorKind, Fetcher, Group, GroupError, Name, Outputs, async_trait};

use crate::call::{Event, report};
use crate::error::{BuildError, check_names};

/// A boxed fetcher of `Req` returning `T` or `E`: what members of different fetcher types
/// become to share one completion policy.
pub type BoxFetcher<Req, T, E> = Box<dyn Fetcher<Req, Output = T, Error = E>>;

/// Named members, checked: at least one, names unique and not empty.
fn members<N: Into<Name>, F>(members: impl IntoIterator<Item = (N, F)>) -> Result<Vec<(Name, F)>, BuildError> {
    let members: Vec<(Name, F)> = members.into_iter().map(|(name, fetcher)| (name.into(), fetcher)).collect();
    if members.is_empty() {
        return Err(BuildError::NoMembers);
    }
    check_names(members.iter().map(|(name, _)| name))?;
    Ok(members)
}

/// Every member succeeds, fail-fast, like the aggregator itself: the output is every member's
/// output by name; the first member to fail fails the source (its [`GroupError`] names the
/// member, and [classifies](Classify) as the member's error did) and cancels the others. The
/// member's error is the group error's [`source()`](Error::source), boxed with its kind: a
/// [`Classified`](crate::error::Classified), whose `downcast_ref` reaches it.
///
/// # Errors
///
/// [`BuildError::NoMembers`], [`BuildError::EmptyName`] or [`BuildError::DuplicateSource`].
pub fn all<N: Into<Name>, F>(members: impl IntoIterator<Item = (N, F)>) -> Result<All<F>, BuildError> {
    self::members(members).map(|members| All { members })
}

/// The first member to succeed wins and the others are cancelled; the source fails only when
/// every member has failed, with their errors. The report's line for the source says who won
/// and who was cancelled (`` `cached` won; `live` cancelled ``), as for [`quorum`].
///
/// # Errors
///
/// [`BuildError::NoMembers`], [`BuildError::EmptyName`] or [`BuildError::DuplicateSource`].
pub fn first_ok<N: Into<Name>, F>(members: impl IntoIterator<Item = (N, F)>) -> Result<FirstOk<F>, BuildError> {
    self::members(members).map(|members| FirstOk { members })
}

/// `k` of the members succeed: the source succeeds with the first `k` successes (by name, in
/// declaration order) as soon as there are `k`, cancelling the others, and fails as soon as
/// fewer than `k` can still succeed.
///
/// # Errors
///
/// [`BuildError::Quorum`] if `k` is 0 or more than the members, and the errors of [`all`].
pub fn quorum<N: Into<Name>, F>(k: usize, members: impl IntoIterator<Item = (N, F)>) -> Result<Quorum<F>, BuildError> {
    let members = self::members(members)?;
    if k == 0 || k > members.len() {
        return Err(BuildError::Quorum { k, members: members.len() });
    }
    Ok(Quorum { k, members })
}

/// Every member's outcome, without fail-fast: the source waits for all of them, and each
/// member's result, `Ok` or `Err`, is in the output by name. It fails only when a member
/// panics; at the deadline it is still pending, like any source that has not finished.
///
/// # Errors
///
/// The errors of [`all`].
pub fn settled<N: Into<Name>, F>(members: impl IntoIterator<Item = (N, F)>) -> Result<Settled<F>, BuildError> {
    self::members(members).map(|members| Settled { members })
}

macro_rules! combinator {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name<F> {
            members: Vec<(Name, F)>,
        }

        impl<F> $name<F> {
            /// The members' names, in declaration order.
            pub fn names(&self) -> impl Iterator<Item = &str> {
                self.members.iter().map(|(name, _)| &**name)
            }
        }

        impl<F> fmt::Debug for $name<F> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($name)).field("members", &self.names().collect::<Vec<_>>()).finish()
            }
        }
    };
}

combinator!(
    /// Every member succeeds, fail-fast; see [`all`].
    All
);
combinator!(
    /// The first success wins; see [`first_ok`].
    FirstOk
);
combinator!(
    /// Every outcome; see [`settled`].
    Settled
);

/// `k` of `n` succeed; see [`quorum`].
pub struct Quorum<F> {
    k: usize,
    members: Vec<(Name, F)>,
}

impl<F> fmt::Debug for Quorum<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.members.iter().map(|(name, _)| &**name).collect();
        f.debug_struct("Quorum").field("k", &self.k).field("members", &names).finish()
    }
}

#[async_trait]
impl<Req, F> Fetcher<Req> for All<F>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
    F::Error: Classify + Error + Send + Sync + 'static,
{
    type Output = Outputs<F::Output>;
    type Error = GroupError;

    async fn fetch(&self, request: &Req) -> Result<Outputs<F::Output>, GroupError> {
        let mut group = Group::new();
        if let Some(parent) = crate::cancellation() {
            group = group.with_parent(&parent);
        }
        for (name, fetcher) in &self.members {
            // Names are unique (checked by `all`); a refusal means the group is closed, which
            // `wait` reports.
            // Boxed with its kind, which the group's error then gives (`Classify`).
            let fetch = fetcher.fetch(request);
            let _ = group.spawn(name.clone(), async move { fetch.await.map_err(muster_core::boxed) });
        }
        group.wait().await
    }
}

/// A member's fetch, as `async_trait` boxes it.
type Fetch<'a, T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'a>>;

/// The members' fetches, each tagged with its index, polled in place.
fn race<'a, Req, F>(
    members: &'a [(Name, F)],
    request: &'a Req,
) -> FuturesUnordered<Tagged<Fetch<'a, F::Output, F::Error>>>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
{
    (members.iter().enumerate()).map(|(index, (_, fetcher))| Tagged { index, future: fetcher.fetch(request) }).collect()
}

/// A member's future and its index.
struct Tagged<Fut> {
    index: usize,
    future: Fut,
}

impl<Fut: Future + Unpin> Future for Tagged<Fut> {
    type Output = (usize, Fut::Output);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let index = self.index;
        Pin::new(&mut self.future).poll(cx).map(|output| (index, output))
    }
}

#[async_trait]
impl<Req, F> Fetcher<Req> for FirstOk<F>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
    F::Error: Error + Send + Sync + 'static,
{
    type Output = F::Output;
    type Error = Failed<F::Error>;

    async fn fetch(&self, request: &Req) -> Result<F::Output, Failed<F::Error>> {
        let mut racing = race(&self.members, request);
        let mut errors: Vec<Option<F::Error>> = (0..self.members.len()).map(|_| None).collect();
        while let Some((index, result)) = racing.next().await {
            match result {
                // Returning drops the others: they are cancelled.
                Ok(value) => {
                    note(&self.members, &[index], |other| errors[other].is_none());
                    return Ok(value);
                }
                Err(error) => errors[index] = Some(error),
            }
        }
        Err(Failed::new(&self.members, errors))
    }
}

#[async_trait]
impl<Req, F> Fetcher<Req> for Quorum<F>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
    F::Error: Error + Send + Sync + 'static,
{
    type Output = Outputs<F::Output>;
    type Error = Failed<F::Error>;

    async fn fetch(&self, request: &Req) -> Result<Outputs<F::Output>, Failed<F::Error>> {
        let n = self.members.len();
        let mut racing = race(&self.members, request);
        let mut values: Vec<Option<F::Output>> = (0..n).map(|_| None).collect();
        let mut errors: Vec<Option<F::Error>> = (0..n).map(|_| None).collect();
        let (mut succeeded, mut failed) = (0, 0);
        while let Some((index, result)) = racing.next().await {
            match result {
                Ok(value) => {
                    values[index] = Some(value);
                    succeeded += 1;
                }
                Err(error) => {
                    errors[index] = Some(error);
                    failed += 1;
                }
            }
            if succeeded == self.k {
                let won: Vec<usize> = (0..n).filter(|&member| values[member].is_some()).collect();
                note(&self.members, &won, |other| errors[other].is_none());
                let names = self.members.iter().map(|(name, _)| name.clone());
                return Ok(names.zip(values).filter_map(|(name, value)| Some((name, value?))).collect());
            }
            if n - failed < self.k {
                break;
            }
        }
        Err(Failed::new(&self.members, errors))
    }
}

#[async_trait]
impl<Req, F> Fetcher<Req> for Settled<F>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
    F::Error: Send,
{
    type Output = Outputs<Result<F::Output, F::Error>>;
    type Error = std::convert::Infallible;

    async fn fetch(&self, request: &Req) -> Result<Self::Output, std::convert::Infallible> {
        let mut racing = race(&self.members, request);
        let mut results: Vec<Option<Result<F::Output, F::Error>>> = (0..self.members.len()).map(|_| None).collect();
        while let Some((index, result)) = racing.next().await {
            results[index] = Some(result);
        }
        let names = self.members.iter().map(|(name, _)| name.clone());
        Ok(names.zip(results).filter_map(|(name, result)| Some((name, result?))).collect())
    }
}

/// Tells the report which members decided the source (`` `cached` won; `live` cancelled ``):
/// `won`, and the others that `pending` says were still running, now cancelled.
fn note<F>(members: &[(Name, F)], won: &[usize], pending: impl Fn(usize) -> bool) {
    let names = |indices: &[usize]| indices.iter().map(|&index| format!("`{}`", members[index].0)).collect::<Vec<_>>();
    let cancelled: Vec<usize> = (0..members.len()).filter(|index| !won.contains(index) && pending(*index)).collect();
    let mut note = format!("{} won", names(won).join(", "));
    if !cancelled.is_empty() {
        note = format!("{note}; {} cancelled", names(&cancelled).join(", "));
    }
    report(Event::Note(&note));
}

/// Why a [`first_ok`] or a [`quorum`] failed: the members that failed, with their errors, in
/// declaration order. It [classifies](Classify) as its last member's error.
///
/// The members' error needs `Classify + Error + Send + Sync + 'static` (for [`all`] too, whose
/// [`GroupError`] passes the failed member's kind on).
#[derive(Debug)]
pub struct Failed<E> {
    errors: Vec<(Name, E)>,
}

impl<E> Failed<E> {
    fn new<F>(members: &[(Name, F)], errors: Vec<Option<E>>) -> Self {
        let names = members.iter().map(|(name, _)| name.clone());
        Self { errors: names.zip(errors).filter_map(|(name, error)| Some((name, error?))).collect() }
    }

    /// The failed members and their errors, in declaration order.
    pub fn errors(&self) -> &[(Name, E)] {
        &self.errors
    }
}

impl<E: fmt::Display> fmt::Display for Failed<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, error)) in self.errors.iter().enumerate() {
            let separator = if i == 0 { "" } else { "; " };
            write!(f, "{separator}`{name}`: {error}")?;
        }
        Ok(())
    }
}

/// No `source()`: `Display` already gives every member's error, and a cause chain would
/// repeat the last one. The errors themselves are in [`errors`](Failed::errors).
impl<E: Error + 'static> Error for Failed<E> {}

/// The kind and retry verdict of the last member in [`errors`](Failed::errors): a
/// [`first_ok`] of HTTP fetchers whose members all answered 500 is `status`, and retryable.
/// `failed`, not retryable, if no member failed (cannot happen: the source fails because
/// members did).
impl<E: Classify> Classify for Failed<E> {
    fn kind(&self) -> ErrorKind {
        self.errors.last().map_or(ErrorKind::Failed, |(_, error)| error.kind())
    }

    fn is_retryable(&self) -> bool {
        self.errors.last().is_some_and(|(_, error)| error.is_retryable())
    }
    fn status(&self) -> Option<u16> {
        self.errors.last().and_then(|(_, error)| error.status())
    }
}
