//! [`Timeout`]: a time limit for each attempt of a source, inside the global deadline.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use muster_core::muster_options::OptionError;
use muster_core::{Classify, ErrorKind, Fetcher, async_trait, with_deadline};
use tokio::time::Instant;

use super::{Policy, Timeout};
use crate::call::{Event, report};

impl<F> Policy<F> for Timeout {
    type Fetcher = TimeoutFetcher<F>;

    fn wrap(self, inner: F) -> TimeoutFetcher<F> {
        TimeoutFetcher { inner, after: self.0 }
    }

    fn check(&self) -> Result<Duration, OptionError> {
        self.validate().map(|()| Duration::ZERO)
    }
}

/// A fetcher whose every fetch is limited to a duration; see [`Timeout`].
///
/// Its error is a [`TimeoutError`], which [classifies](crate::Classify) as `timeout` when the
/// time ran out and as the wrapped error otherwise: the wrapped fetcher's error needs
/// `Classify + Error + Send + Sync + 'static`.
///
/// The fetch fails with [`TimeoutError::Elapsed`] when the time is up, unless the global
/// deadline comes at the same time or earlier: then the deadline is left to fire, and it is
/// what the aggregation reports. Inside the fetch, [`deadline()`](crate::deadline) is the
/// tighter of the two, so the wrapped fetcher can tell its backend.
///
/// ```
/// use std::time::Duration;
/// use muster::{Fetcher, policy::Policy, Timeout, policy::TimeoutError, fetcher_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let slow = fetcher_fn(|_: &u64| async {
///     tokio::time::sleep(Duration::from_secs(5)).await;
///     Ok::<_, std::io::Error>("late")
/// });
/// let limited = Timeout(Duration::from_millis(300)).wrap(slow);
/// let error = limited.fetch(&1).await.unwrap_err();
/// assert!(matches!(error, TimeoutError::Elapsed { .. }));
/// assert_eq!(error.to_string(), "source timeout of 300ms elapsed");
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TimeoutFetcher<F> {
    inner: F,
    after: Duration,
}

/// The error of a [`TimeoutFetcher`]: the time ran out, or the wrapped fetcher failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum TimeoutError<E> {
    /// The source's own timeout elapsed. Retryable.
    Elapsed {
        /// The timeout.
        after: Duration,
    },
    /// The wrapped fetcher's error, as it was.
    Inner(E),
}

impl<E> TimeoutError<E> {
    /// The wrapped fetcher's error, if that is what this is.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(error) => Some(error),
            Self::Elapsed { .. } => None,
        }
    }

    /// Whether the timeout elapsed.
    pub fn is_elapsed(&self) -> bool {
        matches!(self, Self::Elapsed { .. })
    }
}

impl<E: fmt::Display> fmt::Display for TimeoutError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Elapsed { after } => write!(f, "source timeout of {}ms elapsed", after.as_millis()),
            Self::Inner(error) => error.fmt(f),
        }
    }
}

impl<E: Error + 'static> Error for TimeoutError<E> {
    /// Transparent: the wrapped error's own source.
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Elapsed { .. } => None,
            Self::Inner(error) => error.source(),
        }
    }
}

/// An elapsed timeout is `timeout` and retryable; the wrapped error says what it is itself.
impl<E: Classify> Classify for TimeoutError<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Elapsed { .. } => ErrorKind::Timeout,
            Self::Inner(error) => error.kind(),
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            Self::Elapsed { .. } => true,
            Self::Inner(error) => error.is_retryable(),
        }
    }
    fn status(&self) -> Option<u16> {
        match self {
            Self::Elapsed { .. } => None,
            Self::Inner(error) => error.status(),
        }
    }
}

#[async_trait]
impl<Req, F> Fetcher<Req> for TimeoutFetcher<F>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
    F::Error: Error + Send + Sync + 'static,
{
    type Output = F::Output;
    type Error = TimeoutError<F::Error>;

    async fn fetch(&self, request: &Req) -> Result<F::Output, Self::Error> {
        let at = Instant::now() + self.after;
        if crate::deadline().is_some_and(|global| global <= at) {
            // When both fire together, the global deadline is what is reported.
            return self.inner.fetch(request).await.map_err(TimeoutError::Inner);
        }
        match tokio::time::timeout_at(at, with_deadline(at, self.inner.fetch(request))).await {
            Ok(result) => result.map_err(TimeoutError::Inner),
            Err(_) => {
                report(Event::TimedOut);
                Err(TimeoutError::Elapsed { after: self.after })
            }
        }
    }
}
