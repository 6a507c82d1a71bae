//! [`Retry`]: more attempts for retryable failures, within the deadline.

use std::time::Duration;

use muster_core::muster_options::OptionError;
use muster_core::{Classify, Fetcher, async_trait};
use tokio::time::Instant;
use tower::retry::backoff::{Backoff as _, ExponentialBackoffMaker, MakeBackoff as _};
use tower::util::rng::HasherRng;

use super::budget::Extra;
use super::{ByError, Policy, Retry};
use crate::call::{Event, report};

/// How a [`Retry`] decides whether an error may be retried: by asking the error
/// ([`ByError`], the default, through [`Classify::is_retryable`]) or with a closure of the wrapped
/// fetcher's error type ([`Retry::retry_if`]: the source's own, or a
/// [`TimeoutError`](crate::policy::TimeoutError) of it behind a per-attempt timeout).
#[diagnostic::on_unimplemented(
    message = "the retry cannot tell whether a `{E}` is worth retrying",
    label = "this retry asks the source's error, a `{E}`",
    note = "implement `muster::Classify` for `{E}` and override `is_retryable` (by default only the kinds `timeout`, `connect` and `protocol` are retried), or give the retry a classifier: `Retry::attempts(n).retry_if(|error: &{E}| ...)`"
)]
pub trait RetryIf<E> {
    /// Whether a failure with `error` may be retried.
    fn is_retryable(&self, error: &E) -> bool;
}

impl<E: Classify> RetryIf<E> for ByError {
    fn is_retryable(&self, error: &E) -> bool {
        error.is_retryable()
    }
}

impl<E, F: Fn(&E) -> bool> RetryIf<E> for F {
    fn is_retryable(&self, error: &E) -> bool {
        self(error)
    }
}

impl<F, C> Policy<F> for Retry<C> {
    type Fetcher = RetryFetcher<F, C>;

    fn wrap(self, inner: F) -> RetryFetcher<F, C> {
        RetryFetcher { inner, retry: self }
    }

    /// Refuses an impossible policy; needs at least its backoffs.
    fn check(&self) -> Result<Duration, OptionError> {
        self.validate().map(|()| self.min_total_backoff())
    }
}

/// A fetcher that retries retryable failures with jittered exponential backoff (tower's);
/// see [`Retry`].
///
/// Its error is the wrapped fetcher's last one, unchanged. By default the error says whether
/// it is retryable ([`Classify::is_retryable`]), so the wrapped fetcher's error needs
/// `Classify` (and `Send`); a [`retry_if`](Retry::retry_if) classifier needs nothing of it.
///
/// After a failure the classifier decides; a retry whose backoff would end at or after the
/// deadline ([`deadline()`](crate::deadline)), or that the source's [`Budget`](super::Budget)
/// refuses, is not started and the last real error is returned at once. A panic is never retried (it is not caught here). Each retry counts as an
/// attempt in the report.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use muster::{Fetcher, policy::Policy, Retry, fetcher_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let calls = AtomicU32::new(0);
/// let not_found = fetcher_fn(|_: &u64| {
///     calls.fetch_add(1, Ordering::SeqCst);
///     async { Err::<(), _>(std::io::Error::from(std::io::ErrorKind::NotFound)) }
/// });
/// assert!(Retry::attempts(3).wrap(&not_found).fetch(&1).await.is_err());
/// assert_eq!(calls.load(Ordering::SeqCst), 1, "not found is not retryable");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct RetryFetcher<F, C = ByError> {
    inner: F,
    retry: Retry<C>,
}

#[async_trait]
impl<Req, F, C> Fetcher<Req> for RetryFetcher<F, C>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
    F::Error: Send,
    C: RetryIf<F::Error> + Send + Sync,
{
    type Output = F::Output;
    type Error = F::Error;

    async fn fetch(&self, request: &Req) -> Result<F::Output, F::Error> {
        let mut error = match self.inner.fetch(request).await {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        let retry = &self.retry;
        let maker = ExponentialBackoffMaker::new(
            retry.min_backoff(),
            retry.max_backoff(),
            retry.jitter_ratio(),
            HasherRng::new(),
        );
        let Ok(mut maker) = maker else { return Err(error) };
        let mut backoff = maker.make_backoff();
        for attempt in 1..retry.max_attempts() {
            if !RetryIf::is_retryable(retry.classifier(), &error) {
                break;
            }
            let sleep = backoff.next_backoff();
            // A retry whose backoff would end at or after the deadline is not started: the
            // last real error is returned at once.
            if crate::deadline().is_some_and(|deadline| sleep.deadline() >= deadline) {
                break;
            }
            // A retry the source's budget refuses is not started either (the budget notes it).
            if !super::budget::allow(Extra::Retry, sleep.deadline()) {
                break;
            }
            let backoff_ms = (sleep.deadline() - Instant::now()).as_millis() as u64;
            tracing::debug!(attempt, backoff_ms, "retrying");
            sleep.await;
            report(Event::Attempt);
            error = match self.inner.fetch(request).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
        }
        Err(error)
    }
}
