//! [`Hedge`]: a second attempt when the first is slow.

use std::pin::pin;
use std::time::Duration;

use muster_core::muster_options::OptionError;
use muster_core::{Fetcher, async_trait};

use tokio::time::Instant;

use super::budget::Extra;
use super::{Hedge, Policy};
use crate::call::{Event, report};

impl<F> Policy<F> for Hedge {
    type Fetcher = HedgeFetcher<F>;

    fn wrap(self, inner: F) -> HedgeFetcher<F> {
        HedgeFetcher { inner, delay: self.0 }
    }

    fn check(&self) -> Result<Duration, OptionError> {
        self.validate().map(|()| Duration::ZERO)
    }
}

/// A fetcher that starts a second attempt if the first has not succeeded after a delay; see
/// [`Hedge`]. Its error is the wrapped fetcher's, unchanged (kind included): it needs
/// `Send`, and, as any source's, [`Classify`](crate::Classify).
///
/// The first success wins and the other attempt is dropped. If the first attempt fails before
/// the delay, the second starts at once. The fetch fails only when both attempts have failed,
/// with the last failure. No hedge starts once the deadline has passed, nor when the source's
/// [`Budget`](super::Budget) refuses it (the first attempt is never cancelled for that). The report counts the
/// second attempt and notes `hedge won` when it was the one that succeeded.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use muster::{Fetcher, policy::Hedge, policy::Policy, fetcher_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), std::io::Error> {
/// let calls = AtomicU32::new(0);
/// // The first call is slow, the second fast.
/// let flaky = fetcher_fn(|_: &u64| {
///     let slow = calls.fetch_add(1, Ordering::SeqCst) == 0;
///     async move {
///         tokio::time::sleep(Duration::from_millis(if slow { 900 } else { 20 })).await;
///         Ok::<_, std::io::Error>(if slow { "first" } else { "hedge" })
///     }
/// });
/// let start = tokio::time::Instant::now();
/// assert_eq!(Hedge(Duration::from_millis(50)).wrap(&flaky).fetch(&1).await?, "hedge");
/// assert_eq!(start.elapsed(), Duration::from_millis(70));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct HedgeFetcher<F> {
    inner: F,
    delay: Duration,
}

#[async_trait]
impl<Req, F> Fetcher<Req> for HedgeFetcher<F>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
    F::Error: Send,
{
    type Output = F::Output;
    type Error = F::Error;

    async fn fetch(&self, request: &Req) -> Result<F::Output, F::Error> {
        let mut first = pin!(self.inner.fetch(request));
        tokio::select! {
            biased;
            result = &mut first => match result {
                Ok(value) => return Ok(value),
                Err(error) => return self.again(request, error).await,
            },
            () = tokio::time::sleep(self.delay) => {}
        }
        // No hedge after the deadline, nor one the source's budget refuses: the first attempt
        // goes on either way.
        if crate::remaining().is_some_and(|left| left.is_zero()) || !super::budget::allow(Extra::Hedge, Instant::now())
        {
            return first.await;
        }
        tracing::debug!("hedging");
        report(Event::Hedge);
        let mut second = pin!(self.inner.fetch(request));
        tokio::select! {
            biased;
            result = &mut first => match result {
                Ok(value) => Ok(value),
                Err(_) => second.await.inspect(|_| report(Event::Note("hedge won"))),
            },
            result = &mut second => match result {
                Ok(value) => {
                    report(Event::Note("hedge won"));
                    Ok(value)
                }
                Err(_) => first.await,
            },
        }
    }
}

impl<F> HedgeFetcher<F> {
    /// The second attempt, at once, after the first failed before the delay.
    async fn again<Req>(&self, request: &Req, error: F::Error) -> Result<F::Output, F::Error>
    where
        Req: ?Sized + Sync,
        F: Fetcher<Req>,
        F::Error: Send,
    {
        if crate::remaining().is_some_and(|left| left.is_zero()) || !super::budget::allow(Extra::Hedge, Instant::now())
        {
            return Err(error);
        }
        report(Event::Hedge);
        self.inner.fetch(request).await
    }
}
