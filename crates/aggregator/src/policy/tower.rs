//! [`Tower`]: any `tower::Layer` as a source policy (feature `tower`).

use muster_adapters::tower::{FetcherService, ServiceFetcher};

use super::Policy;

/// A tower layer (timeout, concurrency or rate limit, load shedding, buffering, ...) used as a
/// source policy: the fetcher becomes a tower service ([`FetcherService`]), the layer wraps it,
/// and the result is a fetcher again ([`ServiceFetcher`]). Feature `tower`.
///
/// The request is cloned into the service for each fetch, so it must be `Clone + 'static`;
/// the error becomes the layer's (usually tower's `BoxError`). tower's timeout
/// (`tower::timeout::error::Elapsed`) is reported as a timeout
/// ([`ErrorKind::Timeout`](crate::ErrorKind::Timeout)), like muster's own
/// [`Timeout`](crate::Timeout). A stateful layer whose state is per instance (a `RateLimit`)
/// goes behind a `Buffer`; see [`ServiceFetcher`].
///
/// ```
/// use muster::{Aggregator, Tower, fetcher_fn};
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
    type Fetcher = ServiceFetcher<L::Service>;

    fn wrap(self, inner: F) -> Self::Fetcher {
        ServiceFetcher::new(self.0.layer(FetcherService::new(inner)))
    }
}
