//! [`Tower`]: any `tower::Layer` as a source policy (feature `tower`).

use std::error::Error;
use std::fmt;
use std::marker::PhantomData;

use muster_adapters::tower::{FetcherService, ServiceFetcher};
use muster_core::{BoxError, Classify, ErrorKind, Fetcher, async_trait};

use super::Policy;

/// A tower layer (timeout, concurrency or rate limit, load shedding, buffering, ...) used as a
/// source policy: the fetcher becomes a tower service ([`FetcherService`]), the layer wraps it,
/// and the result is a fetcher again ([`ServiceFetcher`]). Feature `tower`.
///
/// The request is cloned into the service for each fetch, so it must be `Clone + 'static`;
/// the error becomes a [`TowerError`] holding the layer's (tower boxes errors), which keeps
/// the kind: tower's timeout (`tower::timeout::error::Elapsed`) is reported as a timeout
/// ([`ErrorKind::Timeout`]), like muster's own [`Timeout`](crate::Timeout), and the source's
/// own error as its own kind. The source's error needs
/// `Classify + Error + Send + Sync + 'static`. A stateful layer whose state is per instance (a `RateLimit`)
/// goes behind a `Buffer`; see [`ServiceFetcher`].
///
/// ```
/// use muster::{Aggregator, policy::Tower, fetcher_fn};
/// use tower::limit::ConcurrencyLimitLayer;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let profile = fetcher_fn(|user_id: &u64| {
///     let user_id = *user_id;
///     async move { Ok::<_, std::io::Error>(format!("profile of {user_id}")) }
/// });
/// let aggregator = Aggregator::builder()
///     .source_with("profile", profile, Tower(ConcurrencyLimitLayer::new(8)))
///     .build()?;
/// let (profile,) = aggregator.aggregate(&7).await?.outputs;
/// assert_eq!(profile, "profile of 7");
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Tower<L>(pub L);

impl<F, L> Policy<F> for Tower<L>
where
    L: tower::Layer<FetcherService<F>>,
{
    type Fetcher = TowerFetcher<L::Service, F>;

    fn wrap(self, inner: F) -> Self::Fetcher {
        TowerFetcher { inner: ServiceFetcher::new(self.0.layer(FetcherService::new(inner))), _fetcher: PhantomData }
    }
}

/// A fetcher `F` behind a tower layer: a [`ServiceFetcher`] of the layered service whose error
/// remembers that the source's error is an `F::Error`; see [`Tower`].
pub struct TowerFetcher<S, F> {
    inner: ServiceFetcher<S>,
    _fetcher: PhantomData<fn() -> F>,
}

impl<S: fmt::Debug, F> fmt::Debug for TowerFetcher<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TowerFetcher").field("inner", &self.inner).finish()
    }
}

#[async_trait]
impl<Req, S, F> Fetcher<Req> for TowerFetcher<S, F>
where
    Req: Sync,
    ServiceFetcher<S>: Fetcher<Req>,
    F: Fetcher<Req>,
    F::Error: 'static,
{
    type Output = <ServiceFetcher<S> as Fetcher<Req>>::Output;
    type Error = TowerError<F::Error>;

    async fn fetch(&self, request: &Req) -> Result<Self::Output, Self::Error> {
        self.inner.fetch(request).await.map_err(|error| TowerError { error: error.into(), _inner: PhantomData })
    }
}

/// The error of a [`TowerFetcher`]: what the layered service failed with, boxed by tower (the
/// source's own error, a `E`, or a middleware's: a timeout, an overload, ...).
///
/// `Display`, `Debug` and [`Error::source`] are the boxed error's own. It
/// [classifies](Classify) as what it holds: tower's timeout (`tower::timeout::error::Elapsed`)
/// is `timeout` and retryable, like muster's own [`Timeout`](crate::Timeout); the source's own
/// error, an `E` found in the boxed error's `source()` chain, says what it is itself; anything
/// else is classified as a [`BoxError`] is.
pub struct TowerError<E> {
    error: BoxError,
    _inner: PhantomData<fn() -> E>,
}

impl<E> TowerError<E> {
    /// The boxed error.
    pub fn get_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.error
    }

    /// The boxed error.
    pub fn into_inner(self) -> BoxError {
        self.error
    }
}

impl<E: Classify + Error + 'static> TowerError<E> {
    /// The kind and verdict of the first error in the chain that tells them.
    fn classified(&self) -> Option<(ErrorKind, bool)> {
        let mut next: Option<&(dyn Error + 'static)> = Some(&*self.error);
        while let Some(error) = next {
            if error.is::<tower::timeout::error::Elapsed>() {
                return Some((ErrorKind::Timeout, true));
            }
            if let Some(error) = error.downcast_ref::<E>() {
                return Some((error.kind(), error.is_retryable()));
            }
            next = error.source();
        }
        None
    }
}

impl<E: Classify + Error + 'static> Classify for TowerError<E> {
    fn kind(&self) -> ErrorKind {
        self.classified().map_or_else(|| self.error.kind(), |(kind, _)| kind)
    }

    fn is_retryable(&self) -> bool {
        self.classified().map_or_else(|| self.error.is_retryable(), |(_, retryable)| retryable)
    }
    fn status(&self) -> Option<u16> {
        let mut next: Option<&(dyn Error + 'static)> = Some(&*self.error);
        while let Some(error) = next {
            if let Some(error) = error.downcast_ref::<E>() {
                return error.status();
            }
            next = error.source();
        }
        self.error.status()
    }
}

impl<E> fmt::Debug for TowerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.error, f)
    }
}

impl<E> fmt::Display for TowerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<E> Error for TowerError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.error.source()
    }
}
