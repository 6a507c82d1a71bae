//! The retry budget (issue 20, item 2): one governor per source for retries and hedges
//! together; the first attempt is never charged; a spent budget suppresses new extra attempts
//! (noted and counted) but never cancels one in flight; a circuit-open rejection takes no
//! token; fractional percents are exact (tower#857); the optional latency rule.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use muster::policy::{Budget, CircuitBreaker};
use muster::{
    Aggregator, BuildError, Deadline, Fallback, RequestContext, Retry, fetcher_fn, options::OptionError, policy::Hedge,
};
use tokio::time::Instant;

#[path = "support/recorder.rs"]
mod recorder;

use recorder::TestRecorder;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn retry(attempts: u32) -> Retry {
    Retry::attempts(attempts).backoff(ms(1), ms(1))
}

/// A source whose `n`th call (from 0) takes `delay(n)` and fails when `fails(n)`; counts its
/// calls.
fn scripted<D, F>(
    calls: &Arc<AtomicU32>,
    delay: D,
    fails: F,
) -> impl muster::Fetcher<u64, Output = u32, Error = std::io::Error> + use<D, F>
where
    D: Fn(u32) -> Duration + Send + Sync + 'static,
    F: Fn(u32) -> bool + Send + Sync + 'static,
{
    let calls = Arc::clone(calls);
    fetcher_fn(move |_: &u64| {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        let (delay, fails) = (delay(n), fails(n));
        async move {
            tokio::time::sleep(delay).await;
            if fails { Err(std::io::Error::other("503")) } else { Ok(n) }
        }
    })
}

#[tokio::test(start_paused = true)]
async fn fractional_percents_grant_exactly_their_share_of_retries() {
    // tower#857: `TpsBudget::new(ttl, 0, 0.6)` allowed a retry per deposit, 10 for 10 calls.
    let calls = Arc::new(AtomicU32::new(0));
    let source = scripted(&calls, |_| ms(1), |_| true);
    let budget = Budget::new().percent(60.0).min_per_second(0);
    let aggregator = Aggregator::builder().source_with("s", source, (budget, retry(2))).build().unwrap();
    for _ in 0..10 {
        aggregator.aggregate(&1).await.unwrap_err();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 10 + 6, "10 first attempts and 60 % of 10 retries");
}

#[tokio::test(start_paused = true)]
async fn the_first_attempt_is_never_charged_nor_refused() {
    let calls = Arc::new(AtomicU32::new(0));
    let source = scripted(&calls, |_| ms(1), |_| true);
    let aggregator = Aggregator::builder()
        .source_with("s", source, (Fallback(0), Budget::new().percent(0.0).min_per_second(0), retry(3)))
        .build()
        .unwrap();
    for _ in 0..100 {
        let aggregate = aggregator.aggregate(&1).await.unwrap();
        let report = aggregate.report.source("s").unwrap();
        assert_eq!(report.attempts, 1);
        assert!(report.notes.contains(&"retry skipped: budget spent".to_owned()), "{:?}", report.notes);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 100);
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_suppresses_retries_notes_and_counts_it() {
    let recorder = TestRecorder::default();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let calls = Arc::new(AtomicU32::new(0));
    let source = scripted(&calls, |_| ms(1), |_| true);
    // A floor of 1 per second over 1 s: one retry in all.
    let budget = Budget::new().percent(0.0).min_per_second(1).window(ms(1_000));
    let aggregator =
        Aggregator::builder().source_with("transactions", source, (Fallback(0), budget, retry(4))).build().unwrap();
    let first = aggregator.aggregate(&1).await.unwrap();
    let report = first.report.source("transactions").unwrap();
    assert_eq!(report.attempts, 2, "one retry, then the budget is spent");
    assert_eq!(report.notes.iter().filter(|note| *note == "retry skipped: budget spent").count(), 1);
    aggregator.aggregate(&1).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    assert_eq!(recorder.counter("muster_source_suppressed_total{attempt=retry,reason=budget,source=transactions}"), 2);
    // The window passes: the floor is back.
    tokio::time::advance(ms(1_100)).await;
    assert_eq!(aggregator.aggregate(&1).await.unwrap().report.source("transactions").unwrap().attempts, 2);
}

#[tokio::test(start_paused = true)]
async fn a_spent_budget_suppresses_hedges_and_the_first_attempt_goes_on() {
    let recorder = TestRecorder::default();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let calls = Arc::new(AtomicU32::new(0));
    let source = scripted(&calls, |_| ms(50), |_| false);
    let budget = Budget::new().percent(0.0).min_per_second(0);
    let aggregator = Aggregator::builder().source_with("s", source, (budget, Hedge(ms(10)))).build().unwrap();
    let started = Instant::now();
    let aggregate = aggregator.aggregate(&1).await.unwrap();
    assert_eq!((aggregate.outputs.0, started.elapsed()), (0, ms(50)), "the first attempt answered");
    let report = aggregate.report.source("s").unwrap();
    assert_eq!((report.hedges, report.notes.clone()), (0, vec!["hedge skipped: budget spent".to_owned()]));
    assert_eq!(recorder.counter("muster_source_suppressed_total{attempt=hedge,reason=budget,source=s}"), 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_budget_spent_by_other_calls_never_cancels_a_hedge_in_flight() {
    let calls = Arc::new(AtomicU32::new(0));
    // Call 0 is slow (the first attempt of the first aggregation), every other call takes 30 ms.
    let source = scripted(&calls, |n| if n == 0 { ms(1_000) } else { ms(30) }, |_| false);
    // One token in all: the first aggregation's hedge takes it.
    let budget = Budget::new().percent(0.0).min_per_second(1).window(ms(1_000));
    let aggregator = Aggregator::builder().source_with("s", source, (budget, Hedge(ms(10)))).build().unwrap();
    let first = aggregator.aggregate(&1);
    let later = async {
        tokio::time::sleep(ms(15)).await;
        aggregator.aggregate(&1).await
    };
    let (first, later) = tokio::join!(first, later);
    let first = first.unwrap();
    let report = first.report.source("s").unwrap();
    assert_eq!((report.hedges, report.notes.clone()), (1, vec!["hedge won".to_owned()]));
    assert_eq!(first.report.elapsed, ms(40), "the hedge in flight answered");
    let later = later.unwrap();
    assert_eq!(later.report.source("s").unwrap().hedges, 0, "the budget was spent");
}

#[tokio::test(start_paused = true)]
async fn retries_and_hedges_share_one_budget() {
    let calls = Arc::new(AtomicU32::new(0));
    let source = scripted(&calls, |_| ms(20), |_| true);
    // 100 %: each call earns exactly one extra attempt, a hedge or a retry.
    let budget = Budget::new().percent(100.0).min_per_second(0);
    let aggregator =
        Aggregator::builder().source_with("s", source, (Fallback(0), budget, retry(3), Hedge(ms(10)))).build().unwrap();
    let aggregate = aggregator.aggregate(&1).await.unwrap();
    let report = aggregate.report.source("s").unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2, "the first attempt and its hedge");
    assert_eq!(report.hedges, 1);
    assert!(report.notes.contains(&"retry skipped: budget spent".to_owned()), "{:?}", report.notes);
}

#[tokio::test(start_paused = true)]
async fn a_circuit_open_rejection_takes_no_token() {
    let calls = Arc::new(AtomicU32::new(0));
    let source = scripted(&calls, |_| ms(1), |_| true);
    let breaker = CircuitBreaker::new();
    let handle = breaker.handle();
    // 50 %: two calls earn a retry.
    let budget = Budget::new().percent(50.0).min_per_second(0);
    let aggregator =
        Aggregator::builder().source_with("s", source, (Fallback(0), breaker, budget, retry(2))).build().unwrap();
    handle.force_open();
    for _ in 0..100 {
        aggregator.aggregate(&1).await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    handle.force_close();
    // Had the 100 refusals deposited, this call would be retried.
    let aggregate = aggregator.aggregate(&1).await.unwrap();
    assert_eq!(aggregate.report.source("s").unwrap().attempts, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    aggregator.aggregate(&1).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3, "the second call earned the retry");
}

#[tokio::test(start_paused = true)]
async fn the_latency_rule_skips_a_retry_that_cannot_answer_in_time() {
    let recorder = TestRecorder::default();
    let _metrics = metrics::set_default_local_recorder(&recorder);
    let calls = Arc::new(AtomicU32::new(0));
    // Five successful calls of 200 ms, then fast failures.
    let source = scripted(&calls, |n| if n < 5 { ms(200) } else { ms(1) }, |n| n >= 5);
    let budget = Budget::new().percent(100.0).latency_aware();
    let aggregator = Aggregator::builder().source_with("s", source, (Fallback(0), budget, retry(2))).build().unwrap();
    for _ in 0..5 {
        aggregator.aggregate(&1).await.unwrap();
    }
    let aggregate = aggregator.aggregate_with(&1, RequestContext::new().deadline(ms(150))).await.unwrap();
    let report = aggregate.report.source("s").unwrap();
    assert_eq!(report.attempts, 1);
    let note = report.notes.first().unwrap();
    assert!(note.starts_with("retry skipped: p50 200ms > 14") && note.ends_with("ms left"), "{note}");
    assert_eq!(recorder.counter("muster_source_suppressed_total{attempt=retry,reason=latency,source=s}"), 1);
    // With time enough, the retry goes.
    let aggregator = Aggregator::builder()
        .source_with("s", scripted(&calls, |_| ms(1), |_| true), (Fallback(0), Budget::new().latency_aware(), retry(2)))
        .options(Deadline(ms(1_000)))
        .build()
        .unwrap();
    assert_eq!(aggregator.aggregate(&1).await.unwrap().report.source("s").unwrap().attempts, 2);
}

#[test]
fn bad_values_are_refused_when_the_aggregator_is_built() {
    let build = |budget: Budget| {
        let source = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(1) });
        match Aggregator::builder().source_with("s", source, budget).build() {
            Err(BuildError::Source { error: OptionError::Invalid { policy, problem }, .. }) => {
                format!("{policy}: {problem}")
            }
            Err(error) => panic!("another error: {error}"),
            Ok(_) => "accepted".to_owned(),
        }
    };
    let cases = [
        (Budget::new().percent(150.0), "budget: the percent must be in [0, 100], not 150"),
        (Budget::new().percent(-10.0), "budget: the percent must be in [0, 100], not -10"),
        (Budget::new().percent(f64::INFINITY), "budget: the percent must be in [0, 100], not inf"),
        (Budget::new().window(Duration::ZERO), "budget: the window must be at least 100ms, not 0ns"),
        (Budget::new().percent(0.0).min_per_second(0), "accepted"),
        (Budget::new(), "accepted"),
    ];
    for (budget, expected) in cases {
        assert_eq!(build(budget), expected);
    }
}
