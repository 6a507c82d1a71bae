//! tower's layers around a muster source, on a real clock: a flaky `quotes` service gets
//! tower's retry, concurrency limit and rate limit as one policy (`muster::policy::Tower`), and is
//! aggregated with a `profile` source by a `muster::Aggregator`, for three users at once.
//!
//! `quotes` takes 50 ms and fails user 1's first call. At most two calls run at once and at
//! most three start per 500 ms, so user 3 waits for a concurrency slot, and user 1's retry
//! (20 ms after the failure) waits for the rate limit's next window: the waterfalls show both.
//!
//! Run with: cargo run -p tower-layers

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use muster::{Aggregator, BoxError, Deadline, fetcher_fn, policy::Tower};
use tokio::time::{Sleep, sleep};
use tower::ServiceBuilder;
use tower::retry::Policy;

/// Retries a failed call up to this many times, 20 ms after the failure.
#[derive(Clone, Debug)]
struct Attempts(usize);

impl Policy<u64, String, BoxError> for Attempts {
    type Future = Sleep;

    fn retry(&mut self, _: &mut u64, result: &mut Result<String, BoxError>) -> Option<Sleep> {
        let retry = result.is_err() && self.0 > 0;
        self.0 = self.0.saturating_sub(usize::from(retry));
        retry.then(|| sleep(Duration::from_millis(20)))
    }

    fn clone_request(&mut self, user_id: &u64) -> Option<u64> {
        Some(*user_id)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let calls = Arc::new(AtomicUsize::new(0));
    let (counted, failed_once) = (Arc::clone(&calls), Arc::new(AtomicBool::new(false)));
    let quotes = fetcher_fn(move |user_id: &u64| {
        counted.fetch_add(1, Ordering::SeqCst);
        let fail = *user_id == 1 && !failed_once.swap(true, Ordering::SeqCst);
        let user_id = *user_id;
        async move {
            sleep(Duration::from_millis(50)).await;
            if fail {
                Err(std::io::Error::other(format!("quotes for user {user_id}: 503")))
            } else {
                Ok(format!("3 quotes for user {user_id}"))
            }
        }
    });
    // Outermost first. `RateLimit` counts per instance and is not `Clone`, so it sits behind
    // a `Buffer`: one shared rate limiter, reached through cheap clones.
    let layers = ServiceBuilder::new()
        .retry(Attempts(2))
        .concurrency_limit(2)
        .buffer(16)
        .rate_limit(3, Duration::from_millis(500))
        .into_inner();
    let profile = fetcher_fn(|user_id: &u64| {
        let user_id = *user_id;
        async move {
            sleep(Duration::from_millis(30)).await;
            Ok::<_, BoxError>(format!("profile of user {user_id}"))
        }
    });

    let aggregator = Aggregator::builder()
        .source("profile", profile)
        .source_with("quotes", quotes, Tower(layers))
        .options(Deadline(Duration::from_secs(2)))
        .build()?;
    let (first, second, third) =
        tokio::join!(aggregator.aggregate(&1), aggregator.aggregate(&2), aggregator.aggregate(&3));
    for (user_id, aggregate) in [(1, first?), (2, second?), (3, third?)] {
        let (profile, quotes) = aggregate.outputs;
        println!("== user {user_id}: {profile}, {quotes}\n{}\n", aggregate.report);
    }
    println!("quotes calls, retries included: {}", calls.load(Ordering::SeqCst));
    Ok(())
}
