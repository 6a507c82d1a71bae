use std::fmt;
use std::hash::Hash;
use std::sync::Arc;

use muster_core::{CoalesceError, Coalescer, Fetcher};

/// Request coalescing (singleflight) for one source: concurrent aggregations that ask it for
/// an equal request share one call. Opt in per source by wrapping its fetcher:
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use muster::{Aggregator, Coalesced, fetcher_fn};
///
/// let profiles = fetcher_fn(|user_id: &u64| {
///     let user_id = *user_id;
///     async move { Ok::<_, std::io::Error>(format!("user {user_id}")) }
/// });
/// let aggregator = Aggregator::builder().source("profile", Coalesced::new(profiles)).build()?;
/// let (a, b) = tokio::join!(aggregator.aggregate(&7), aggregator.aggregate(&7)); // one call
/// assert_eq!(a?.outputs["profile"], b?.outputs["profile"]);
/// # Ok(()) }
/// ```
///
/// The shared call is cancelled only when every aggregation waiting for it has gone; an
/// aggregation arriving after that starts a fresh call and never inherits the cancellation.
/// Every waiter gets the real result or the real error (inside
/// [`CoalesceError::Failed`](muster_core::CoalesceError), its `source()`); a panic becomes
/// [`CoalesceError::Panicked`](muster_core::CoalesceError) for all of them. Nothing is cached
/// once the call ends. See [`Coalescer`].
///
/// The request is the key, so it must be `Clone + Hash + Eq + 'static`; the wrapped fetcher is
/// shared with the call (it must be `'static`).
pub struct Coalesced<F, Req, O> {
    fetcher: Arc<F>,
    calls: Coalescer<Req, O>,
}

impl<F, Req, O> Coalesced<F, Req, O>
where
    Req: Hash + Eq + Clone + Send + Sync + 'static,
    O: Clone + Send + Sync + 'static,
{
    /// Coalesces concurrent calls of `fetcher` for equal requests.
    pub fn new(fetcher: F) -> Self {
        Self { fetcher: Arc::new(fetcher), calls: Coalescer::new() }
    }
}

impl<F, Req, O> fmt::Debug for Coalesced<F, Req, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Coalesced").field("calls", &self.calls).finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl<F, Req, O> Fetcher<Req> for Coalesced<F, Req, O>
where
    F: Fetcher<Req, Output = O> + 'static,
    Req: Hash + Eq + Clone + Send + Sync + 'static,
    O: Clone + Send + Sync + 'static,
{
    type Output = O;
    type Error = CoalesceError;

    async fn fetch(&self, request: &Req) -> Result<O, CoalesceError> {
        let (fetcher, owned) = (Arc::clone(&self.fetcher), request.clone());
        self.calls.run(request.clone(), move || async move { fetcher.fetch(&owned).await }).await
    }
}
