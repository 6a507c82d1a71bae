use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;

use crate::error::BoxError;

/// An asynchronous data source: turns a request into an output or an error.
///
/// The trait is object safe, so sources of different types live side by side as
/// `Box<dyn Fetcher<Req, Output = O, Error = E>>` or `Arc<dyn ...>`. The request is borrowed:
/// a [`Group`](crate::Group) polls fetches in place, so they may borrow it for as long as they
/// run.
///
/// ```
/// use async_trait::async_trait;
/// use muster_core::Fetcher;
///
/// struct Profiles;
///
/// #[async_trait]
/// impl Fetcher<u64> for Profiles {
///     type Output = String;
///     type Error = std::io::Error;
///
///     async fn fetch(&self, user_id: &u64) -> Result<String, std::io::Error> {
///         Ok(format!("profile of {user_id}"))
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), std::io::Error> {
/// let source: Box<dyn Fetcher<u64, Output = String, Error = std::io::Error>> = Box::new(Profiles);
/// assert_eq!(source.fetch(&7).await?, "profile of 7");
/// # Ok(()) }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `Fetcher` of `{Req}` requests",
    label = "this source cannot fetch for a `{Req}` request",
    note = "a source of an `Aggregator<{Req}, _>` implements `Fetcher<{Req}>`: write `#[muster::async_trait] impl Fetcher<{Req}> for ...`, or wrap a closure `|request: &{Req}| async move {{ ... }}` in `fetcher_fn`"
)]
#[async_trait]
pub trait Fetcher<Req: ?Sized + Sync>: Send + Sync {
    /// What a successful fetch returns.
    type Output: Send;
    /// What a failed fetch returns.
    type Error: Into<BoxError>;

    /// Fetches the output for `request`.
    ///
    /// # Cancellation safety
    ///
    /// The future may be dropped at any await point: that is how a group cancels a source.
    /// Implementations release what they hold (connections, permits) on drop.
    async fn fetch(&self, request: &Req) -> Result<Self::Output, Self::Error>;
}

/// The future of a [`Fetcher`]: what `#[async_trait]` makes of `async fn fetch`.
type FetchFuture<'a, O, E> = Pin<Box<dyn Future<Output = Result<O, E>> + Send + 'a>>;

// Written out instead of `#[async_trait]`: the pointer hands back the pointee's boxed future
// as it is, where an `async fn` would box a second future around it.
macro_rules! forward_fetcher {
    ($($pointer:ty),+) => {$(
        impl<Req, F> Fetcher<Req> for $pointer
        where
            Req: ?Sized + Sync,
            F: Fetcher<Req> + ?Sized,
        {
            type Output = F::Output;
            type Error = F::Error;

            fn fetch<'life0, 'life1, 'async_trait>(
                &'life0 self,
                request: &'life1 Req,
            ) -> FetchFuture<'async_trait, F::Output, F::Error>
            where
                'life0: 'async_trait,
                'life1: 'async_trait,
                Self: 'async_trait,
            {
                (**self).fetch(request)
            }
        }
    )+};
}

forward_fetcher!(&F, Box<F>, Arc<F>);

/// Turns a closure returning a future into a [`Fetcher`].
///
/// The closure gets the borrowed request and returns a future that does not borrow it (copy
/// what the future needs), which keeps closures free of lifetime annotations.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), std::io::Error> {
/// use muster_core::{Fetcher, fetcher_fn};
///
/// let balance = fetcher_fn(|user_id: &u64| {
///     let user_id = *user_id;
///     async move { Ok::<_, std::io::Error>(user_id * 100) }
/// });
/// assert_eq!(balance.fetch(&3).await?, 300);
/// # Ok(()) }
/// ```
pub fn fetcher_fn<F>(f: F) -> FetcherFn<F> {
    FetcherFn(f)
}

/// A closure used as a [`Fetcher`]; see [`fetcher_fn`].
#[derive(Clone, Copy)]
pub struct FetcherFn<F>(F);

impl<F> fmt::Debug for FetcherFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FetcherFn")
    }
}

#[async_trait]
impl<Req, F, Fut, O, E> Fetcher<Req> for FetcherFn<F>
where
    Req: ?Sized + Sync,
    F: Fn(&Req) -> Fut + Send + Sync,
    Fut: Future<Output = Result<O, E>> + Send,
    O: Send,
    E: Into<BoxError>,
{
    type Output = O;
    type Error = E;

    async fn fetch(&self, request: &Req) -> Result<O, E> {
        (self.0)(request).await
    }
}
