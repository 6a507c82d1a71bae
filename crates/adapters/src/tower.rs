//! tower interop: any [`Service`] is a [`Fetcher`], and any [`Fetcher`] is a [`Service`].
//!
//! The two adapters let tower's middleware (timeout, retry, rate and concurrency limits, load
//! shedding, buffering) compose with muster sources: turn a fetcher into a service with
//! [`FetcherService`], stack layers on it with a [`ServiceBuilder`](tower::ServiceBuilder),
//! and turn the result back into a fetcher with [`from_service`] for a group or an aggregator.
//!
//! ```
//! # #[allow(unused_imports)] mod muster { pub use muster_adapters::tower::*; pub use muster_core::*; }
//! use std::time::Duration;
//! use muster::{FetcherService, from_service};
//! use muster::{Fetcher, fetcher_fn};
//! use tower::ServiceBuilder;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), muster_core::BoxError> {
//! let profile = fetcher_fn(|user_id: &u64| {
//!     let user_id = *user_id;
//!     async move { Ok::<_, std::io::Error>(format!("profile of {user_id}")) }
//! });
//! let profile = ServiceBuilder::new()
//!     .timeout(Duration::from_millis(300))
//!     .concurrency_limit(8)
//!     .service(FetcherService::new(profile));
//! let profile = from_service(profile); // a `Fetcher<u64>` again, with tower's `BoxError`
//! assert_eq!(profile.fetch(&7).await?, "profile of 7");
//! # Ok(()) }
//! ```
//!
//! Fetchers take their request by reference and services by value, so a [`ServiceFetcher`]
//! clones the request for every call: requests that are cheap to clone (ids, small structs,
//! an `Arc`) suit it best.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use muster_core::{BoxError, Fetcher};
use tower::{Service, ServiceExt as _};

/// A tower [`Service`] used as a [`Fetcher`]; see [`from_service`].
///
/// Each fetch clones the service, waits until the clone is ready
/// ([`ServiceExt::ready`](tower::ServiceExt::ready)), then calls it with a clone of the
/// borrowed request. The fetch's error is the service's error, from `poll_ready` or from the
/// call.
///
/// # Why a clone per fetch
///
/// A service is driven through `&mut self` (`poll_ready`, then `call`), while a fetcher is
/// shared: a group or an aggregator runs many fetches through one `&self` at once. Cloning is
/// tower's idiom for sharing a service: clones of a middleware share its state (the semaphore
/// of a `ConcurrencyLimit`, the channel of a `Buffer`), so a limit holds across every fetch,
/// while each clone keeps its own readiness (the permit or slot that `poll_ready` reserved)
/// until its own `call`. Locking a single service instead would serialise the fetches and let
/// one fetch's readiness be spent by another's call.
///
/// Clones must therefore be cheap and share state. A service that is not `Clone`, or whose
/// state is per instance (tower's `RateLimit` counts per instance), goes behind a
/// `tower::buffer::Buffer`: a cheap, cloneable handle to one shared service.
///
/// # Cancellation safety
///
/// Dropping the fetch drops the clone and its response future, which releases whatever its
/// readiness reserved (a concurrency permit, a buffer slot).
///
/// ```
/// # #[allow(unused_imports)] mod muster { pub use muster_adapters::tower::*; pub use muster_core::*; }
/// use muster::ServiceFetcher;
/// use muster::Fetcher;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), std::io::Error> {
/// let service = tower::service_fn(|user_id: u64| async move { Ok::<_, std::io::Error>(user_id * 100) });
/// let balance = ServiceFetcher::new(service);
/// assert_eq!(balance.fetch(&3).await?, 300);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct ServiceFetcher<S> {
    service: S,
}

impl<S> ServiceFetcher<S> {
    /// Wraps `service`; it is cloned for every fetch.
    pub fn new(service: S) -> Self {
        Self { service }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.service
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.service
    }
}

/// Turns a tower [`Service`] into a [`Fetcher`]: the same as [`ServiceFetcher::new`].
///
/// ```
/// # #[allow(unused_imports)] mod muster { pub use muster_adapters::tower::*; pub use muster_core::*; }
/// use std::time::Duration;
/// use muster::from_service;
/// use muster::{Fetcher, Group};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let slow = tower::service_fn(|_: ()| async {
///     tokio::time::sleep(Duration::from_secs(10)).await;
///     Ok::<_, std::io::Error>("too late")
/// });
/// let slow = from_service(tower::timeout::Timeout::new(slow, Duration::from_millis(50)));
///
/// let mut group = Group::new();
/// group.spawn("slow", slow.fetch(&()))?;
/// let error = group.wait().await.unwrap_err();
/// assert_eq!(error.source_name(), Some("slow"));
/// assert!(std::error::Error::source(&error).is_some_and(|cause| cause.is::<tower::timeout::error::Elapsed>()));
/// # Ok(()) }
/// ```
pub fn from_service<S>(service: S) -> ServiceFetcher<S> {
    ServiceFetcher::new(service)
}

#[async_trait]
impl<Req, S> Fetcher<Req> for ServiceFetcher<S>
where
    Req: Clone + Send + Sync,
    S: Service<Req> + Clone + Send + Sync,
    S::Response: Send,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    type Output = S::Response;
    type Error = S::Error;

    async fn fetch(&self, request: &Req) -> Result<S::Response, S::Error> {
        let mut service = self.service.clone();
        service.ready().await?;
        service.call(request.clone()).await
    }
}

/// A [`Fetcher`] used as a tower [`Service`], so tower's layers can wrap it.
///
/// The fetcher is shared behind an [`Arc`]: clones are cheap and call the same fetcher. The
/// service takes its request by value and lends it to the fetch; it is always ready (a fetcher
/// has no capacity of its own: add tower's limits in front of it), and its response and error
/// are the fetcher's.
///
/// ```
/// # #[allow(unused_imports)] mod muster { pub use muster_adapters::tower::*; pub use muster_core::*; }
/// use muster::FetcherService;
/// use muster::fetcher_fn;
/// use tower::ServiceExt as _;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), std::io::Error> {
/// let balance = fetcher_fn(|user_id: &u64| {
///     let user_id = *user_id;
///     async move { Ok::<_, std::io::Error>(user_id * 100) }
/// });
/// let service = FetcherService::new(balance);
/// assert_eq!(service.clone().oneshot(3).await?, 300);
/// assert_eq!(service.oneshot(4).await?, 400);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct FetcherService<F> {
    fetcher: Arc<F>,
}

impl<F> FetcherService<F> {
    /// Wraps `fetcher`, shared by every clone of the service.
    pub fn new(fetcher: F) -> Self {
        Self { fetcher: Arc::new(fetcher) }
    }

    /// The wrapped fetcher.
    pub fn get_ref(&self) -> &F {
        &self.fetcher
    }
}

impl<F> Clone for FetcherService<F> {
    fn clone(&self) -> Self {
        Self { fetcher: Arc::clone(&self.fetcher) }
    }
}

impl<Req, F> Service<Req> for FetcherService<F>
where
    Req: Send + Sync + 'static,
    F: Fetcher<Req> + 'static,
{
    type Response = F::Output;
    type Error = F::Error;
    type Future = Pin<Box<dyn Future<Output = Result<F::Output, F::Error>> + Send>>;

    /// Always ready: a fetcher has no capacity of its own.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), F::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let fetcher = Arc::clone(&self.fetcher);
        Box::pin(async move { fetcher.fetch(&request).await })
    }
}
