//! [`Optional`] and [`Fallback`]: a source whose failure does not fail the aggregation.

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt as _;
use muster_core::{Classify, Fetcher, async_trait};

use super::{Fallback, Optional, Policy};
use crate::report::Failure;

impl<F> Policy<F> for Optional {
    type Fetcher = OptionalFetcher<F>;

    fn wrap(self, inner: F) -> OptionalFetcher<F> {
        OptionalFetcher { inner }
    }
}

impl<F, T> Policy<F> for Fallback<T> {
    type Fetcher = FallbackFetcher<F, T>;

    fn wrap(self, inner: F) -> FallbackFetcher<F, T> {
        FallbackFetcher { inner, value: self.0 }
    }
}

/// A fetcher that never fails: `Some(output)`, or `None` when the wrapped fetcher failed,
/// panicked or was still pending at the global deadline; see [`Optional`].
///
/// In an aggregation, such a source never cancels the others and the report says what it
/// replaced (`fell back after failed: ...`), with the kind of the error it replaced. The
/// wrapped fetcher's error must implement [`Classify`](crate::Classify) (for that kind) and
/// `Into<BoxError>`.
///
/// ```
/// use muster::{Fetcher, Optional, policy::Policy, fetcher_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let offers = fetcher_fn(|_: &u64| async { Err::<Vec<u32>, _>(std::io::Error::other("offers are down")) });
/// assert_eq!(Optional.wrap(offers).fetch(&1).await, Ok(None));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct OptionalFetcher<F> {
    inner: F,
}

/// A fetcher that never fails: the wrapped fetcher's output, or a clone of the fallback value
/// when it failed, panicked or was still pending at the global deadline; see [`Fallback`].
///
/// ```
/// use muster::{Fallback, Fetcher, policy::Policy, fetcher_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let offers = fetcher_fn(|_: &u64| async { Err::<Vec<u32>, _>(std::io::Error::other("offers are down")) });
/// assert_eq!(Fallback(Vec::new()).wrap(offers).fetch(&1).await, Ok(vec![]));
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct FallbackFetcher<F, T> {
    inner: F,
    value: T,
}

#[async_trait]
impl<Req, F> Fetcher<Req> for OptionalFetcher<F>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
    F::Error: Classify,
{
    type Output = Option<F::Output>;
    type Error = Infallible;

    async fn fetch(&self, request: &Req) -> Result<Option<F::Output>, Infallible> {
        Ok(guarded(&self.inner, request).await)
    }
}

#[async_trait]
impl<Req, F, T> Fetcher<Req> for FallbackFetcher<F, T>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req, Output = T>,
    F::Error: Classify,
    T: Clone + Send + Sync,
{
    type Output = T;
    type Error = Infallible;

    async fn fetch(&self, request: &Req) -> Result<T, Infallible> {
        Ok(guarded(&self.inner, request).await.unwrap_or_else(|| self.value.clone()))
    }
}

/// Runs `inner`, turning its failure, its panic or the global deadline into `None` and
/// telling the report which it was.
async fn guarded<Req, F>(inner: &F, request: &Req) -> Option<F::Output>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
    F::Error: Classify,
{
    let fetch = AssertUnwindSafe(inner.fetch(request)).catch_unwind();
    let result = match crate::deadline() {
        // A fetch that ends exactly at the deadline is in time: it is polled first.
        Some(deadline) => tokio::select! {
            biased;
            result = fetch => result,
            () = tokio::time::sleep_until(deadline) => {
                tracing::debug!("source fell back at the deadline");
                // A `Timeout` around the fallback set this deadline when it is tighter than
                // the aggregation's: the source's own timeout, not the global deadline.
                let own = crate::call::is_source_deadline(deadline);
                crate::call::fell_back(if own { Failure::TimedOut } else { Failure::Deadline });
                return None;
            }
        },
        None => fetch.await,
    };
    match result {
        Ok(Ok(value)) => Some(value),
        Ok(Err(error)) => {
            let (kind, retryable) = (error.kind(), error.is_retryable());
            let error: muster_core::BoxError = error.into();
            tracing::debug!(error = %error, "source fell back");
            crate::call::fell_back(Failure::Error(&*error, kind, retryable));
            None
        }
        Err(panic) => {
            let message = muster_core::panic_message(&*panic);
            tracing::debug!(panic = %message, "source fell back");
            crate::call::fell_back(Failure::Panicked(&message));
            None
        }
    }
}
