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
/// Everything an implementation needs comes from the `muster` crate: the
/// [`async_trait`](macro@crate::async_trait) attribute that makes `async fn fetch` object safe, the
/// call's remaining deadline (`muster::remaining()`) and its cancellation with the cause
/// (`muster::cancellation()`), and [`Classify`](crate::Classify), through which the error says
/// what kind it is and whether it is retryable.
///
/// # What the error needs
///
/// The trait asks only `Into<BoxError>`. A source of an aggregator asks
/// `Classify + Into<BoxError>` (the aggregator reads the kind before it boxes the error), and
/// the policies (timeout, retry, hedge, coalescing, fallback, completion) ask
/// `Classify + Error + Send + Sync + 'static`, which covers both. So a function generic over
/// fetchers states that bound once:
///
/// ```
/// # use muster_core as muster;
/// use std::error::Error;
/// use muster::{Classify, Fetcher};
///
/// fn check<F>(_: &F)
/// where
///     F: Fetcher<u64, Output = String>,
///     F::Error: Classify + Error + Send + Sync + 'static,
/// {
/// }
/// # let _ = check::<muster::FetcherFn<fn(&u64) -> std::future::Ready<Result<String, std::io::Error>>>>;
/// ```
///
/// A complete fetcher on an HTTP client (here a stand-in with reqwest's API):
///
/// ```
/// # use muster_core as muster;
/// # mod reqwest {
/// #     pub struct Client;
/// #     pub struct RequestBuilder;
/// #     pub struct Response(u16);
/// #     #[derive(Debug)] pub struct Error;
/// #     impl std::fmt::Display for Error { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("connection refused") } }
/// #     impl std::error::Error for Error {}
/// #     impl Client {
/// #         pub fn get(&self, _: String) -> RequestBuilder { RequestBuilder }
/// #     }
/// #     impl RequestBuilder {
/// #         pub fn header(self, _: &str, _: String) -> Self { self }
/// #         pub fn timeout(self, _: std::time::Duration) -> Self { self }
/// #         pub async fn send(self) -> Result<Response, Error> { Ok(Response(200)) }
/// #     }
/// #     impl Response {
/// #         pub fn status(&self) -> u16 { self.0 }
/// #         pub async fn text(self) -> Result<String, Error> { Ok(String::from("{\"name\":\"Ada\"}")) }
/// #     }
/// # }
/// use muster::{Classify, ErrorKind, Fetcher, async_trait};
///
/// struct Profiles {
///     client: reqwest::Client,
///     base: String,
/// }
///
/// #[derive(Debug, thiserror::Error)]
/// enum ProfileError {
///     #[error("could not reach the profile service")]
///     Connect(#[source] reqwest::Error),
///     #[error("the profile service answered {0}")]
///     Status(u16),
/// }
///
/// impl Classify for ProfileError {
///     fn kind(&self) -> ErrorKind {
///         match self {
///             Self::Connect(_) => ErrorKind::Connect,
///             Self::Status(_) => ErrorKind::Status,
///         }
///     }
///
///     fn is_retryable(&self) -> bool {
///         match self {
///             Self::Connect(_) => true,
///             Self::Status(status) => *status >= 500,
///         }
///     }
/// }
///
/// #[async_trait]
/// impl Fetcher<u64> for Profiles {
///     type Output = String;
///     type Error = ProfileError;
///
///     async fn fetch(&self, user_id: &u64) -> Result<String, ProfileError> {
///         let mut request = self.client.get(format!("{}/users/{user_id}", self.base));
///         // Tell the backend how long it has, and never wait longer than that.
///         if let Some(left) = muster::deadline().map(|at| at.saturating_duration_since(tokio::time::Instant::now())) {
///             request = request.header("x-muster-deadline-ms", left.as_millis().to_string()).timeout(left);
///         }
///         let response = request.send().await.map_err(ProfileError::Connect)?;
///         match response.status() {
///             200 => response.text().await.map_err(ProfileError::Connect),
///             status => Err(ProfileError::Status(status)),
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), ProfileError> {
/// let profiles = Profiles { client: reqwest::Client, base: "http://profile.internal/v1".into() };
/// assert_eq!(profiles.fetch(&7).await?, r#"{"name":"Ada"}"#);
/// // Object safe: sources of different types side by side.
/// let source: Box<dyn Fetcher<u64, Output = String, Error = ProfileError>> = Box::new(profiles);
/// # drop(source);
/// # Ok(()) }
/// ```
///
/// Dropping the future returned by `fetch` is how a source is cancelled: the request above
/// is aborted (its connection closed) when that happens.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a `Fetcher` of `{Req}` requests",
    label = "this source cannot fetch for a `{Req}` request",
    note = "a source of an `Aggregator<{Req}, _>` implements `Fetcher<{Req}>`: write `#[muster::async_trait] impl Fetcher<{Req}> for ...`, or wrap a closure `|request: &{Req}| async move {{ ... }}` in `fetcher_fn`"
)]
#[async_trait]
pub trait Fetcher<Req: ?Sized + Sync>: Send + Sync {
    /// What a successful fetch returns.
    type Output: Send;
    /// What a failed fetch returns. A source of an aggregator also needs it to implement
    /// [`Classify`](crate::Classify), and the policies need
    /// `Classify + Error + Send + Sync + 'static` (see [above](Fetcher#what-the-error-needs)).
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
/// # use muster_core as muster;
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), std::io::Error> {
/// use muster::{Fetcher, fetcher_fn};
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
