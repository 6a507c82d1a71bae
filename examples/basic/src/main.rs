//! The banking dashboard, in-process, on a real clock: a user's profile and recent transactions
//! are fetched in parallel from two mock services under a 1 s deadline.
//!
//! 1. Success: the JSON outputs merged into one object keyed by source name, with the report
//!    (a waterfall); an optional `offers` source fails and falls back without failing the rest.
//! 2. Typed merge: the same two sources with their own Rust types, assembled into a `Dashboard`.
//! 3. Fail-fast: `profile` fails after 30 ms, `transactions` (10 s) is cancelled at once, and
//!    the failure is logged as JSON lines tagged with the user id.
//!
//! Run with: cargo run -p basic

use std::error::Error;
use std::time::{Duration, Instant};

use muster::json::{JsonMerge, Value, merge_json};
use muster::mock::MockFetcher;
use muster::{Aggregator, AnyOutput, Deadline, Field, Key, Optional, ParentSpan};
use serde_json::json;

const USER_ID: u64 = 42;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    success().await?;
    println!();
    typed().await?;
    println!();
    fail_fast().await
}

/// The aggregator options of the dashboard: a 1 s deadline and the request's context.
fn dashboard_options() -> (Deadline, Field, ParentSpan) {
    let span = tracing::info_span!("dashboard", user_id = USER_ID);
    (Deadline(Duration::from_secs(1)), Field::new("user_id", USER_ID), ParentSpan(span))
}

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Both required sources succeed in parallel; the optional one fails and its fallback is used.
async fn success() -> Result<(), Box<dyn Error>> {
    println!("== success: profile (40 ms), transactions (60 ms), optional offers (fails at 20 ms)");
    let profile = json!({"name": "Ada Lovelace", "kyc": "verified"});
    let transactions = json!({
        "balance": "1204.50",
        "recent": [{"amount": "-12.50", "to": "Bakery"}, {"amount": "2500.00", "from": "Payroll"}],
    });
    let dashboard = Aggregator::<u64, Value>::builder()
        .source("profile", MockFetcher::ok_after(ms(40), profile))
        .source("transactions", MockFetcher::ok_after(ms(60), transactions))
        .source_with("offers", MockFetcher::err_after(ms(20), "offers: 503"), Optional::value(json!([])))
        .options(dashboard_options())
        .build()?;

    let started = Instant::now();
    let aggregate = dashboard.aggregate(&USER_ID).await?;
    let elapsed = started.elapsed();
    let outputs = aggregate.outputs.iter().map(|(name, value)| (name, value.clone()));
    let merged = merge_json(outputs, &JsonMerge::Namespaced)?;
    println!("merged: {}", serde_json::to_string_pretty(&merged)?);
    println!("elapsed: {elapsed:?} (about the slowest source, not the sum: they ran in parallel)");
    println!("{}", aggregate.report);
    Ok(())
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

#[derive(Debug)]
struct Dashboard {
    profile: Profile,
    transactions: Vec<Transaction>,
}

/// Sources of different types in one aggregator; each output comes back with its own type.
async fn typed() -> Result<(), Box<dyn Error>> {
    println!("== typed merge: Dashboard {{ profile: Profile, transactions: Vec<Transaction> }}");
    let profile_key = Key::<Profile>::new("profile");
    let transactions_key = Key::<Vec<Transaction>>::new("transactions");
    let profile = Profile { name: "Ada Lovelace".into(), kyc_verified: true };
    let transactions = vec![
        Transaction { amount_cents: -1250, counterparty: "Bakery".into() },
        Transaction { amount_cents: 250_000, counterparty: "Payroll".into() },
    ];
    let dashboard = Aggregator::<u64, AnyOutput>::builder()
        .typed(&profile_key, MockFetcher::ok_after(ms(40), profile))
        .typed(&transactions_key, MockFetcher::ok_after(ms(60), transactions))
        .options(dashboard_options())
        .build()?;

    let mut aggregate = dashboard.aggregate(&USER_ID).await?;
    let dashboard =
        Dashboard { profile: aggregate.take(&profile_key)?, transactions: aggregate.take(&transactions_key)? };
    println!("{dashboard:#?}");
    let Dashboard { profile, transactions } = &dashboard;
    let kyc = if profile.kyc_verified { "KYC verified" } else { "KYC pending" };
    println!("{} ({kyc}):", profile.name);
    for Transaction { amount_cents, counterparty } in transactions {
        println!("  {:>9.2}  {counterparty}", *amount_cents as f64 / 100.0);
    }
    Ok(())
}

/// `profile` fails after 30 ms; `transactions`, which would take 10 s, is cancelled at once.
async fn fail_fast() -> Result<(), Box<dyn Error>> {
    println!("== fail-fast: profile fails after 30 ms, transactions would take 10 s");
    // Installed before the dashboard span is created: a span made with no subscriber stays off.
    let logs = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(true)
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stdout)
        .finish();
    tracing::subscriber::set_global_default(logs)?;

    let transactions = MockFetcher::ok_after(Duration::from_secs(10), json!({"balance": "1204.50"}));
    let dashboard = Aggregator::<u64, Value>::builder()
        .source("profile", MockFetcher::err_after(ms(30), "profile service: 503 Service Unavailable"))
        .source("transactions", transactions.clone())
        .options(dashboard_options())
        .build()?;

    println!("== JSON log lines (level INFO and above)");
    let started = Instant::now();
    let Err(error) = dashboard.aggregate(&USER_ID).await else {
        return Err("the aggregation succeeded although `profile` failed".into());
    };
    println!("== the error, returned after {:?}", started.elapsed());
    println!("error: {error}");
    println!("kind: {}", error.kind());
    println!("source_name: {:?}", error.source_name());
    println!("transactions cancelled: {}", transactions.was_cancelled());
    println!("{}", error.report());
    Ok(())
}
