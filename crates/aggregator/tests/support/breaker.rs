//! A circuit breaker written as the policy docs write it, for the tests that use a
//! user-written policy (through `#[path]`).

#![allow(unreachable_pub)] // reason: `pub` for the test binaries that include it

use std::error::Error;
use std::sync::atomic::{AtomicU32, Ordering};

use muster::policy::Policy;
use muster::report::Event;
use muster::{Classify, ErrorKind, Fetcher, async_trait};

/// A circuit breaker written as the policy docs write it: it opens after `self.0` failures in
/// a row, passes the wrapped error's kind on, and has a kind of its own when open.
pub struct Breaker(pub u32);

pub struct BreakerFetcher<F> {
    inner: F,
    threshold: u32,
    failures: AtomicU32,
}

#[derive(Debug, thiserror::Error)]
pub enum BreakerError<E> {
    #[error("circuit open")]
    Open,
    #[error(transparent)]
    Inner(E),
}

impl<E: Classify> Classify for BreakerError<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Open => ErrorKind::new("circuit_open"),
            Self::Inner(error) => error.kind(),
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            Self::Open => false,
            Self::Inner(error) => error.is_retryable(),
        }
    }
}

impl<F> Policy<F> for Breaker {
    type Fetcher = BreakerFetcher<F>;

    fn wrap(self, inner: F) -> BreakerFetcher<F> {
        BreakerFetcher { inner, threshold: self.0, failures: AtomicU32::new(0) }
    }
}

#[async_trait]
impl<Req, F> Fetcher<Req> for BreakerFetcher<F>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
    F::Error: Error + Send + Sync + 'static,
{
    type Output = F::Output;
    type Error = BreakerError<F::Error>;

    async fn fetch(&self, request: &Req) -> Result<F::Output, Self::Error> {
        if self.failures.load(Ordering::Relaxed) >= self.threshold {
            muster::report::record(Event::Note("circuit open"));
            return Err(BreakerError::Open);
        }
        let result = self.inner.fetch(request).await;
        match &result {
            Ok(_) => self.failures.store(0, Ordering::Relaxed),
            Err(_) => _ = self.failures.fetch_add(1, Ordering::Relaxed),
        }
        result.map_err(BreakerError::Inner)
    }
}
