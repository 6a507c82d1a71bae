//! tower interop: services as fetchers and fetchers as services, both ways, and tower's layers
//! (timeout, concurrency limit, load shedding, buffered rate limit, retry) around sources
//! running in a `muster_core::Group`, on the paused clock.

use std::convert::Infallible;
use std::error::Error as _;
use std::future::{Ready, ready};
use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use muster_adapters::tower::{FetcherService, ServiceFetcher, from_service};
use muster_core::{BoxError, ErrorKind, Fetcher, Group, fetcher_fn};
use tokio::time::{Instant, Sleep, sleep};
use tower::limit::ConcurrencyLimitLayer;
use tower::retry::{Policy, RetryLayer};
use tower::timeout::TimeoutLayer;
use tower::{Layer as _, Service, ServiceBuilder, ServiceExt as _};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// How many fetches started and how many completed.
#[derive(Clone, Default)]
struct Counts {
    started: Arc<AtomicUsize>,
    completed: Arc<AtomicUsize>,
}

impl Counts {
    fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    fn completed(&self) -> usize {
        self.completed.load(Ordering::SeqCst)
    }
}

/// A fetcher that answers `value` after `delay`, counting its calls.
fn slow(
    delay: Duration,
    value: &'static str,
    counts: &Counts,
) -> impl Fetcher<(), Output = &'static str, Error = io::Error> + use<> {
    let counts = counts.clone();
    fetcher_fn(move |_: &()| {
        let counts = counts.clone();
        async move {
            counts.started.fetch_add(1, Ordering::SeqCst);
            sleep(delay).await;
            counts.completed.fetch_add(1, Ordering::SeqCst);
            Ok(value)
        }
    })
}

/// A fetcher whose first `failures` calls fail after 10 ms; later calls succeed after 10 ms.
fn flaky(failures: usize, counts: &Counts) -> impl Fetcher<(), Output = &'static str, Error = io::Error> + use<> {
    let counts = counts.clone();
    fetcher_fn(move |_: &()| {
        let call = counts.started.fetch_add(1, Ordering::SeqCst);
        async move {
            sleep(ms(10)).await;
            if call < failures { Err(io::Error::other(format!("call {call}: 503"))) } else { Ok("quotes") }
        }
    })
}

/// Retries every error up to `retries` times, after a fixed backoff.
#[derive(Clone)]
struct Retries {
    retries: usize,
    backoff: Duration,
}

impl<Req: Clone, Res, E> Policy<Req, Res, E> for Retries {
    type Future = Sleep;

    fn retry(&mut self, _: &mut Req, result: &mut Result<Res, E>) -> Option<Sleep> {
        if result.is_err() && self.retries > 0 {
            self.retries -= 1;
            Some(sleep(self.backoff))
        } else {
            None
        }
    }

    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        Some(request.clone())
    }
}

#[tokio::test]
async fn a_service_is_a_fetcher_that_gets_a_clone_of_the_request() {
    let length = tower::service_fn(|name: String| async move { Ok::<_, Infallible>(name.len()) });
    let fetcher = ServiceFetcher::new(length);
    assert_eq!(fetcher.fetch(&String::from("Ada")).await.unwrap(), 3);

    let boxed: Box<dyn Fetcher<String, Output = usize, Error = Infallible>> = Box::new(fetcher);
    assert_eq!(boxed.fetch(&String::from("Lovelace")).await.unwrap(), 8);
}

#[tokio::test]
async fn a_fetcher_is_a_service_whose_clones_share_the_fetcher() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let balance = fetcher_fn(move |user_id: &u64| {
        counted.fetch_add(1, Ordering::SeqCst);
        let user_id = *user_id;
        async move { Ok::<_, io::Error>(user_id * 100) }
    });
    let mut service = FetcherService::new(balance);
    assert_eq!(service.ready().await.unwrap().call(2).await.unwrap(), 200);
    assert_eq!(service.clone().oneshot(3).await.unwrap(), 300);
    assert_eq!(service.get_ref().fetch(&4).await.unwrap(), 400);
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_round_trip_keeps_the_output_and_the_error_type() {
    let lookup = fetcher_fn(|user_id: &u64| {
        let user_id = *user_id;
        async move {
            match user_id {
                7 => Ok(String::from("Ada")),
                _ => Err(io::Error::new(io::ErrorKind::NotFound, format!("no user {user_id}"))),
            }
        }
    });
    let round_trip = from_service(FetcherService::new(lookup));
    assert_eq!(round_trip.fetch(&7).await.unwrap(), "Ada");
    let error: io::Error = round_trip.fetch(&8).await.unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::NotFound);
    assert_eq!(error.to_string(), "no user 8");
    assert_eq!(round_trip.into_inner().get_ref().fetch(&7).await.unwrap(), "Ada");
}

/// A service that is never able to take a request.
#[derive(Clone)]
struct Closed;

impl Service<()> for Closed {
    type Response = ();
    type Error = io::Error;
    type Future = Ready<Result<(), io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Err(io::Error::other("service closed")))
    }

    fn call(&mut self, (): ()) -> Self::Future {
        ready(Err(io::Error::other("called although not ready")))
    }
}

#[tokio::test]
async fn a_readiness_error_fails_the_fetch_without_a_call() {
    let error = from_service(Closed).fetch(&()).await.unwrap_err();
    assert_eq!(error.to_string(), "service closed");
}

/// Runs `fetcher` twice in one group, as `first` and `second`; returns the outputs in order.
async fn run_twice<F>(fetcher: &F) -> Result<Vec<&'static str>, muster_core::GroupError>
where
    F: Fetcher<(), Output = &'static str>,
{
    let mut group = Group::new();
    for name in ["first", "second"] {
        // Both names are new and the group is open, so `spawn` cannot fail here.
        let spawned = group.spawn(name, fetcher.fetch(&()));
        assert!(spawned.is_ok(), "{spawned:?}");
    }
    let outputs = group.wait().await?;
    Ok(outputs.iter().map(|(_, output)| *output).collect())
}

#[tokio::test(start_paused = true)]
async fn a_concurrency_limit_of_one_serialises_two_fetches_in_a_group() {
    let counts = Counts::default();
    let unlimited = slow(ms(100), "profile", &counts);
    let started = Instant::now();
    assert_eq!(run_twice(&unlimited).await.unwrap(), ["profile", "profile"]);
    assert_eq!(started.elapsed(), ms(100), "without a limit the fetches overlap");

    let limited = ServiceBuilder::new().layer(ConcurrencyLimitLayer::new(1)).service(FetcherService::new(slow(
        ms(100),
        "profile",
        &counts,
    )));
    let limited = from_service(limited);
    let started = Instant::now();
    assert_eq!(run_twice(&limited).await.unwrap(), ["profile", "profile"]);
    assert_eq!(started.elapsed(), ms(200), "the limit shared by the clones serialised the fetches");
    assert_eq!(counts.completed(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_timeout_layer_fails_the_group_naming_the_source() {
    let counts = Counts::default();
    let slow_source = ServiceBuilder::new().layer(TimeoutLayer::new(ms(50))).service(FetcherService::new(slow(
        Duration::from_secs(10),
        "late",
        &counts,
    )));
    let slow_source = from_service(slow_source);
    let sibling = slow(Duration::from_secs(1), "sibling", &Counts::default());

    let started = Instant::now();
    let mut group = Group::new();
    group.spawn("slow", slow_source.fetch(&())).unwrap();
    group.spawn("sibling", async { sibling.fetch(&()).await.map_err(BoxError::from) }).unwrap();
    let error = group.wait().await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Failed);
    assert_eq!(error.source_name(), Some("slow"));
    assert_eq!(error.cancelled(), ["sibling"]);
    assert_eq!(started.elapsed(), ms(50));
    let cause = error.source().unwrap();
    assert!(cause.is::<tower::timeout::error::Elapsed>(), "not tower's Elapsed: {cause:?}");
    assert_eq!(cause.to_string(), "request timed out");
    assert_eq!((counts.started(), counts.completed()), (1, 0), "the timed-out fetch was dropped");
}

#[tokio::test(start_paused = true)]
async fn load_shedding_rejects_a_fetch_while_the_limit_is_full_and_cancellation_frees_the_permit() {
    let counts = Counts::default();
    let shedding = ServiceBuilder::new().load_shed().concurrency_limit(1).service(FetcherService::new(slow(
        ms(100),
        "profile",
        &counts,
    )));
    let shedding = from_service(shedding);

    let error = run_twice(&shedding).await.unwrap_err();
    assert_eq!(error.source_name(), Some("second"));
    assert_eq!(error.cancelled(), ["first"]);
    assert_eq!(error.elapsed(), Duration::ZERO, "the second fetch was shed at once");
    let cause = error.source().unwrap();
    assert!(cause.is::<tower::load_shed::error::Overloaded>(), "not tower's Overloaded: {cause:?}");

    // Dropping the cancelled first fetch gave its permit back.
    let started = Instant::now();
    assert_eq!(shedding.fetch(&()).await.unwrap(), "profile");
    assert_eq!(started.elapsed(), ms(100));
    assert_eq!((counts.started(), counts.completed()), (2, 1));
}

#[tokio::test(start_paused = true)]
async fn a_buffered_rate_limit_is_shared_by_every_fetch() {
    let counts = Counts::default();
    let rate_limited = ServiceBuilder::new()
        .buffer(8)
        .rate_limit(1, Duration::from_secs(1))
        .service(FetcherService::new(slow(ms(10), "quotes", &counts)));
    let rate_limited = from_service(rate_limited);

    let started = Instant::now();
    let mut group = Group::new();
    for name in ["a", "b", "c"] {
        group.spawn(name, rate_limited.fetch(&())).unwrap();
    }
    let outputs = group.wait().await.unwrap();
    assert_eq!(outputs.len(), 3);
    assert_eq!(started.elapsed(), Duration::from_secs(2) + ms(10), "one call a second, the last at 2 s");
    assert_eq!(counts.completed(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_retry_policy_retries_a_flaky_fetcher() {
    let counts = Counts::default();
    let policy = Retries { retries: 2, backoff: ms(20) };
    let quotes = ServiceBuilder::new().layer(RetryLayer::new(policy)).service(FetcherService::new(flaky(2, &counts)));
    let quotes = from_service(quotes);

    let started = Instant::now();
    let mut group = Group::new();
    group.spawn("quotes", quotes.fetch(&())).unwrap();
    let outputs = group.wait().await.unwrap();
    assert_eq!(outputs["quotes"], "quotes");
    assert_eq!(counts.started(), 3, "two failures, then a success");
    assert_eq!(started.elapsed(), ms(3 * 10 + 2 * 20), "three calls and two backoffs");
}

#[tokio::test(start_paused = true)]
async fn a_retry_policy_gives_up_with_the_last_error() {
    let counts = Counts::default();
    let policy = Retries { retries: 1, backoff: ms(20) };
    let quotes = from_service(RetryLayer::new(policy).layer(FetcherService::new(flaky(5, &counts))));

    let mut group = Group::new();
    group.spawn("quotes", quotes.fetch(&())).unwrap();
    let error = group.wait().await.unwrap_err();
    assert_eq!(error.source_name(), Some("quotes"));
    assert_eq!(error.source().unwrap().to_string(), "call 1: 503");
    assert_eq!(counts.started(), 2);
}

/// Whatever the layers, the result is still a `Fetcher` an aggregator can own.
#[test]
fn a_service_with_many_layers_is_still_a_fetcher() {
    fn assert_fetcher<F: Fetcher<(), Output = &'static str> + 'static>(_: &F) {}
    let layered = ServiceBuilder::new()
        .retry(Retries { retries: 1, backoff: ms(1) })
        .load_shed()
        .timeout(ms(100))
        .concurrency_limit(4)
        .service(FetcherService::new(slow(ms(1), "profile", &Counts::default())));
    assert_fetcher(&from_service(layered));
}
