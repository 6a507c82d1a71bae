//! The banking dashboard, in-process, on a real clock: a user's profile and recent transactions
//! are fetched in parallel from two mock services under a 1 s deadline.
//!
//! 1. Typed: `profile`, `transactions` and an optional `offers` source with their own Rust
//!    types, straight into a `Dashboard` struct; `offers` fails and falls back.
//! 2. By name: JSON sources whose names are known at run time, merged into one object.
//! 3. A policy of your own: a small circuit breaker, next to the built-in timeout and fallback;
//!    the report shows what it did.
//! 4. Fail-fast: `profile` fails after 30 ms, `transactions` (10 s) is cancelled at once, and
//!    the failure is logged as one JSON line with the request's fields.
//!
//! Run with: cargo run -p basic

use std::error::Error;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use muster::json::{JsonMerge, Value, merge_json};
use muster::mock::MockFetcher;
use muster::{
    Aggregator, Deadline, Fallback, Fetcher, RequestContext, Timeout, async_trait, policy::Policy, report::Event,
};
use serde_json::json;

const USER_ID: u64 = 42;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    typed().await?;
    println!();
    by_name().await?;
    println!();
    breaker().await?;
    println!();
    fail_fast().await
}

/// The request's context: the same aggregator serves every user.
fn context() -> RequestContext {
    RequestContext::new().field("user_id", USER_ID).field("request_id", "req-1")
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[derive(Clone, Debug)]
struct Profile {
    name: String,
    kyc_verified: bool,
}

#[derive(Clone, Debug)]
struct Transaction {
    amount_cents: i64,
    counterparty: String,
}

#[derive(Clone, Debug)]
struct Offer {
    title: String,
}

#[derive(Debug)]
struct Dashboard {
    profile: Profile,
    transactions: Vec<Transaction>,
    offers: Vec<Offer>,
}

/// Sources of different types in one aggregator; each output comes back with its own type.
async fn typed() -> Result<(), Box<dyn Error>> {
    println!("== typed: profile (40 ms), transactions (60 ms), optional offers (fails at 20 ms)");
    let profile = Profile { name: "Ada Lovelace".into(), kyc_verified: true };
    let transactions = vec![
        Transaction { amount_cents: -1250, counterparty: "Bakery".into() },
        Transaction { amount_cents: 250_000, counterparty: "Payroll".into() },
    ];
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok_after(ms(40), profile))
        .source("transactions", MockFetcher::ok_after(ms(60), transactions))
        .source_with("offers", MockFetcher::<Vec<Offer>>::err_after(ms(20), "offers: 503"), Fallback(Vec::new()))
        .options(Deadline(Duration::from_secs(1)))
        .build()?;

    let started = Instant::now();
    let aggregate = aggregator.aggregate_with(&USER_ID, context()).await?;
    let elapsed = started.elapsed();
    let (profile, transactions, offers) = aggregate.outputs;
    let dashboard = Dashboard { profile, transactions, offers };
    let kyc = if dashboard.profile.kyc_verified { "KYC verified" } else { "KYC pending" };
    println!("{} ({kyc}), {} offers:", dashboard.profile.name, dashboard.offers.len());
    for Transaction { amount_cents, counterparty } in &dashboard.transactions {
        println!("  {:>9.2}  {counterparty}", *amount_cents as f64 / 100.0);
    }
    println!("elapsed: {} ms (the slowest source, not the sum: they ran in parallel)", elapsed.as_millis());
    println!("{}", aggregate.report);
    let _ = dashboard.offers.iter().map(|offer| &offer.title);
    Ok(())
}

/// JSON sources named at run time, merged into one object by name.
async fn by_name() -> Result<(), Box<dyn Error>> {
    println!("== by name: JSON sources from configuration, merged");
    let backends = [
        ("profile", json!({"name": "Ada Lovelace", "kyc": "verified"})),
        ("transactions", json!({"balance": "1204.50", "recent": [{"amount": "-12.50", "to": "Bakery"}]})),
    ];
    let mut builder = Aggregator::by_name();
    for (name, body) in backends {
        builder = builder.source(name, MockFetcher::ok_after(ms(20), body));
    }
    let aggregate = builder.build()?.aggregate(&USER_ID).await?;
    let merged: Value = merge_json(aggregate.outputs, &JsonMerge::Namespaced)?;
    println!("{}", serde_json::to_string_pretty(&merged)?);
    Ok(())
}

/// A circuit breaker: after two failures in a row it stops calling the backend and fails at
/// once. A policy like the built-in ones: a `Policy` value and the `Fetcher` it wraps around.
struct Breaker;

struct BreakerFetcher<F> {
    inner: F,
    failures: AtomicU32,
}

#[derive(Debug, thiserror::Error)]
enum BreakerError<E> {
    #[error("circuit open")]
    Open,
    #[error(transparent)]
    Inner(E),
}

// The breaker says what its errors are: its own kind when open, the wrapped error's otherwise.
impl<E: muster::Classify> muster::Classify for BreakerError<E> {
    fn kind(&self) -> muster::ErrorKind {
        match self {
            Self::Open => muster::ErrorKind::new("circuit_open"),
            Self::Inner(error) => error.kind(),
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            Self::Open => false,
            Self::Inner(error) => error.is_retryable(),
        }
    }
}

impl<F> Policy<F> for Breaker {
    type Fetcher = BreakerFetcher<F>;

    fn wrap(self, inner: F) -> BreakerFetcher<F> {
        BreakerFetcher { inner, failures: AtomicU32::new(0) }
    }
}

#[async_trait]
impl<Req, F> Fetcher<Req> for BreakerFetcher<F>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
    F::Error: Error + Send + Sync + 'static,
{
    type Output = F::Output;
    type Error = BreakerError<F::Error>;

    async fn fetch(&self, request: &Req) -> Result<F::Output, Self::Error> {
        if self.failures.load(Ordering::Relaxed) >= 2 {
            muster::report::record(Event::Note("circuit open"));
            return Err(BreakerError::Open);
        }
        let result = self.inner.fetch(request).await;
        match &result {
            Ok(_) => self.failures.store(0, Ordering::Relaxed),
            Err(_) => _ = self.failures.fetch_add(1, Ordering::Relaxed),
        }
        result.map_err(BreakerError::Inner)
    }
}

/// The breaker around a failing `offers` service, inside a fallback: the third request does
/// not call the service at all.
async fn breaker() -> Result<(), Box<dyn Error>> {
    println!("== a policy of your own: a circuit breaker around offers (always 503)");
    let offers = MockFetcher::<Vec<String>>::err_after(ms(15), "offers: 503");
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok_after(ms(10), "Ada Lovelace"))
        .source_with("offers", offers.clone(), (Fallback(Vec::new()), Breaker, Timeout(ms(100))))
        .build()?;
    for request in 1..=3 {
        let aggregate = aggregator.aggregate(&USER_ID).await?;
        println!("request {request}:\n{}", aggregate.report);
    }
    println!("offers called {} times for 3 requests", offers.calls());
    Ok(())
}

/// `profile` fails after 30 ms; `transactions`, which would take 10 s, is cancelled at once.
async fn fail_fast() -> Result<(), Box<dyn Error>> {
    println!("== fail-fast: profile fails after 30 ms, transactions would take 10 s");
    let logs = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stdout)
        .finish();
    tracing::subscriber::set_global_default(logs)?;

    let transactions = MockFetcher::ok_after(Duration::from_secs(10), json!({"balance": "1204.50"}));
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::<Value>::err_after(ms(30), "profile service: 503 Service Unavailable"))
        .source("transactions", transactions.clone())
        .options(Deadline(Duration::from_secs(1)))
        .build()?;

    println!("== JSON log lines (level INFO and above): one per failure");
    let started = Instant::now();
    let Err(error) = aggregator.aggregate_with(&USER_ID, context()).await else {
        return Err("the aggregation succeeded although `profile` failed".into());
    };
    println!("== the error, returned after {} ms", started.elapsed().as_millis());
    println!("error: {error}");
    println!("kind: {}", error.kind());
    println!("source_name: {:?}", error.source_name());
    println!("transactions cancelled: {}", transactions.was_cancelled());
    println!("{}", error.report());
    Ok(())
}
