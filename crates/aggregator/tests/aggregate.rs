//! The seed's test strategy, on tokio's paused clock with scripted mock sources: the deadline is
//! respected, one failing source cancels the other, optional sources fall back, retries and
//! hedges behave, and the report says all of it; plus the 0.2 API: typed outputs, policies as
//! layers (a user-written one included), per-request context, and what a source sees of its
//! call.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster::{
    AggregateError, Aggregator, BuildError, Deadline, ErrorKind, Fallback, Fetcher, Optional, RequestContext, Retry,
    Timeout, cancel::CancelToken, fetcher_fn, group::Outputs, options::Field, options::Limit, options::OptionError,
    policy::Coalesce, policy::Hedge, policy::Policy, policy::TimeoutError, report::Outcome, report::Report,
    report::TimeoutKind, report::Trigger,
};
use muster_adapters::mock::{MockError, MockFetcher, Step};
use tokio::time::Instant;

#[path = "support/breaker.rs"]
mod breaker;
use breaker::Breaker;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn outcome(report: &Report, name: &str) -> Outcome {
    report.source(name).map(|source| source.outcome.clone()).unwrap_or_else(|| panic!("no source {name}"))
}

fn fell_back(after: Outcome) -> Outcome {
    Outcome::FellBack { after: Box::new(after) }
}

fn attempts(error: &AggregateError, name: &str) -> Option<u32> {
    error.report().source(name).map(|source| source.attempts)
}

#[tokio::test(start_paused = true)]
async fn the_deadline_is_respected() {
    let slow = MockFetcher::ok_after(ms(2_000), 2u32);
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok_after(ms(10), 1u32))
        .source("transactions", slow.clone())
        .options(Deadline(ms(1_000)))
        .build()
        .unwrap();

    let started = Instant::now();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    assert_eq!(started.elapsed(), ms(1_000));
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert_eq!(error.pending(), ["transactions"]);
    assert!(slow.was_cancelled());
    assert_eq!(outcome(error.report(), "profile"), Outcome::Ok);
    assert_eq!(outcome(error.report(), "transactions"), Outcome::TimedOut { timeout: TimeoutKind::Global });
    assert_eq!(error.report().trigger, Some(Trigger::Deadline));
}

#[tokio::test(start_paused = true)]
async fn one_failing_source_cancels_the_other() {
    let slow = MockFetcher::ok_after(ms(10_000), 1u32);
    let aggregator = Aggregator::builder()
        .source("transactions", slow.clone())
        .source("profile", MockFetcher::<u32>::err_after(ms(30), "503 Service Unavailable"))
        .options((Deadline(ms(1_000)), Field::new("service", "dashboard")))
        .build()
        .unwrap();

    let started = Instant::now();
    let error = aggregator.aggregate_with(&(), RequestContext::new().field("user_id", 42)).await.unwrap_err();
    assert_eq!(started.elapsed(), ms(30), "fail-fast waited for the slow source");
    assert!(slow.was_cancelled(), "the slow source kept running");
    assert_eq!(error.kind(), ErrorKind::Failed);
    assert_eq!(error.source_name(), Some("profile"));
    assert_eq!(error.cancelled(), ["transactions"]);
    assert_eq!(error.to_string(), "source `profile` failed after 30ms (service=dashboard, user_id=42)");
    assert_eq!(
        error.chain(),
        "source `profile` failed after 30ms (service=dashboard, user_id=42): 503 Service Unavailable"
    );
    let report = error.report();
    assert_eq!(report.trigger, Some(Trigger::Source("profile".into())));
    assert_eq!(report.cancellation, Some(Duration::ZERO));
    assert_eq!(outcome(report, "profile"), Outcome::Failed { error: "503 Service Unavailable".into() });
    let cause = "cancelled by `profile`: 503 Service Unavailable".to_owned();
    assert_eq!(outcome(report, "transactions"), Outcome::Cancelled { cause });
    let transactions = report.source("transactions").unwrap();
    assert_eq!((transactions.start, transactions.duration), (Some(Duration::ZERO), ms(30)));
}

#[derive(Debug, Clone, PartialEq)]
struct Profile {
    name: String,
}

#[derive(Debug, Clone, PartialEq)]
struct Transaction {
    cents: i64,
}

#[tokio::test(start_paused = true)]
async fn outputs_keep_their_types_in_declaration_order() {
    type Outputs = (Profile, Vec<Transaction>, Option<Vec<&'static str>>, u8);
    let aggregator: Aggregator<u64, Outputs> = Aggregator::builder()
        .source("profile", MockFetcher::ok_after(ms(30), Profile { name: "Ada".into() }))
        .source("transactions", MockFetcher::ok_after(ms(10), vec![Transaction { cents: 1250 }]))
        .source_with("offers", MockFetcher::<Vec<&str>>::err("down"), Optional)
        .source_with("score", MockFetcher::<u8>::err("down"), Fallback(7))
        .build()
        .unwrap();
    let started = Instant::now();
    let aggregate = aggregator.aggregate(&7).await.unwrap();
    assert_eq!(started.elapsed(), ms(30), "sources run concurrently");
    let (profile, transactions, offers, score) = aggregate.outputs;
    assert_eq!(profile.name, "Ada");
    assert_eq!(transactions[0].cents, 1250);
    assert_eq!((offers, score), (None, 7));
    assert_eq!(aggregator.source_names().collect::<Vec<_>>(), ["profile", "transactions", "offers", "score"]);
    assert_eq!(aggregate.report.source("transactions").map(|t| (t.duration, t.attempts)), Some((ms(10), 1)));
}

#[tokio::test(start_paused = true)]
async fn sources_named_at_run_time_come_back_by_name() {
    let mut builder = Aggregator::by_name();
    for (name, delay) in [("eu", 30), ("us", 10), ("apac", 20)] {
        builder = builder.source(name, MockFetcher::ok_after(ms(delay), delay));
    }
    let aggregator = builder.source_with("backup", MockFetcher::<u64>::err("down"), Fallback(0)).build().unwrap();
    let outputs: Outputs<u64> = aggregator.aggregate(&()).await.unwrap().outputs;
    assert_eq!(outputs.iter().collect::<Vec<_>>(), [("eu", &30), ("us", &10), ("apac", &20), ("backup", &0)]);

    let failing = Aggregator::by_name()
        .source("eu", MockFetcher::ok_after(ms(50), 1u8))
        .source("us", MockFetcher::<u8>::err_after(ms(5), "refused"))
        .build()
        .unwrap();
    let error = failing.aggregate(&()).await.unwrap_err();
    assert_eq!((error.source_name(), error.cancelled()), (Some("us"), &["eu".into()][..]));
}

#[tokio::test(start_paused = true)]
async fn an_aggregator_is_a_source_of_another_and_its_sources_are_cancelled_with_the_outer_cause() {
    let inner_slow = MockFetcher::ok_after(ms(1_000), 1u32);
    let inner = Aggregator::builder().source("ledger", inner_slow.clone()).build().unwrap();
    let outer = Aggregator::builder()
        .source("accounts", inner)
        .source("profile", MockFetcher::<u32>::err_after(ms(20), "503"))
        .build()
        .unwrap();
    let error = outer.aggregate(&()).await.unwrap_err();
    assert_eq!(error.source_name(), Some("profile"));
    assert!(inner_slow.was_cancelled());
    assert_eq!(outcome(error.report(), "accounts"), Outcome::Cancelled { cause: "cancelled by `profile`: 503".into() });
    // Dropped before it ended, the inner aggregation has no report to nest; its cause chains
    // to the outer failure (the ledger's drop saw it: see a_source_reads_why_it_was_cancelled).

    let nested = Aggregator::builder()
        .source("accounts", Aggregator::builder().source("ledger", MockFetcher::ok(5u8)).build().unwrap())
        .build()
        .unwrap();
    let aggregate = nested.aggregate(&()).await.unwrap();
    let ((ledger,),) = aggregate.outputs;
    assert_eq!(ledger, 5);
    let inner = aggregate.report.source("accounts").and_then(|source| source.nested.as_deref()).unwrap();
    assert_eq!(inner.source("ledger").map(|ledger| &ledger.outcome), Some(&Outcome::Ok));
    let text = aggregate.report.to_string();
    assert!(text.lines().any(|line| line.starts_with("      ledger |")), "the inner waterfall is nested:\n{text}");
}

/// The outer deadline is the outer aggregation's to report: a nested aggregator still running
/// when it passes is a pending source of a timed-out aggregation (504, "pending: accounts"),
/// not a source that failed (502), although its own sources see that deadline. A deadline of
/// the inner aggregator's own that is tighter fails it as a source, like a source's timeout.
#[tokio::test(start_paused = true)]
async fn a_nested_aggregator_pending_at_the_outer_deadline_is_reported_pending() {
    let start = Instant::now();
    let seen = fetcher_fn(move |_: &()| async move {
        assert_eq!(muster::deadline(), Some(start + ms(50)), "the inner sources see the outer deadline");
        tokio::time::sleep(ms(1_000)).await;
        Ok::<_, std::io::Error>(1u8)
    });
    let ledger = MockFetcher::ok_after(ms(1_000), 2u8);
    let inner = Aggregator::builder().source("deadline", seen).source("ledger", ledger.clone()).build().unwrap();
    let outer = Aggregator::builder()
        .source("accounts", inner)
        .source("profile", MockFetcher::ok_after(ms(10), 3u8))
        .options(Deadline(ms(50)))
        .build()
        .unwrap();
    let error = outer.aggregate(&()).await.unwrap_err();
    assert_eq!((error.kind(), error.source_name()), (ErrorKind::Timeout, None), "{error}");
    assert_eq!(error.pending(), ["accounts"]);
    assert_eq!(Instant::now() - start, ms(50));
    assert!(ledger.was_cancelled());

    let tight = Aggregator::builder()
        .source("ledger", MockFetcher::ok_after(ms(1_000), 2u8))
        .options(Deadline(ms(20)))
        .build()
        .unwrap();
    let outer = Aggregator::builder().source("accounts", tight).options(Deadline(ms(50))).build().unwrap();
    let start = Instant::now();
    let error = outer.aggregate(&()).await.unwrap_err();
    assert_eq!((error.kind(), error.source_name()), (ErrorKind::Timeout, Some("accounts")), "{error}");
    assert_eq!(Instant::now() - start, ms(20));
}

#[tokio::test(start_paused = true)]
async fn the_report_times_sources_queued_behind_a_limit() {
    let aggregator = Aggregator::builder()
        .source("first", MockFetcher::ok_after(ms(10), 1u32))
        .source("second", MockFetcher::ok_after(ms(15), 2u32))
        .source("third", MockFetcher::ok_after(ms(5), 3u32))
        .options(Limit(2))
        .build()
        .unwrap();
    let report = aggregator.aggregate(&()).await.unwrap().report;
    let timing = |name: &str| report.source(name).map(|source| (source.start, source.duration, source.queued));
    assert_eq!(timing("first"), Some((Some(ms(0)), ms(10), ms(0))));
    assert_eq!(timing("second"), Some((Some(ms(0)), ms(15), ms(0))));
    // Queued until `first` ended at 10 ms, then 5 ms of its own.
    assert_eq!(timing("third"), Some((Some(ms(10)), ms(5), ms(10))));
    assert_eq!(report.elapsed, ms(15));
}

#[tokio::test(start_paused = true)]
async fn an_optional_source_falls_back_while_the_required_one_succeeds() {
    let offers = MockFetcher::<Vec<&str>>::err_after(ms(5), "offers service down");
    let aggregator = Aggregator::builder()
        .source("transactions", MockFetcher::ok_after(ms(20), vec!["coffee"]))
        .source_with("offers", offers.clone(), Fallback(vec![]))
        .source_with("ads", MockFetcher::<Vec<&str>>::hang(), (Optional, Timeout(ms(15))))
        .build()
        .unwrap();
    let aggregate = aggregator.aggregate(&()).await.unwrap();
    let (transactions, offers, ads) = aggregate.outputs;
    assert_eq!((transactions, offers, ads), (vec!["coffee"], vec![], None));
    let report = &aggregate.report;
    assert_eq!(outcome(report, "offers"), fell_back(Outcome::Failed { error: "offers service down".into() }));
    assert_eq!(outcome(report, "ads"), fell_back(Outcome::TimedOut { timeout: TimeoutKind::Source }));
    assert_eq!(outcome(report, "transactions"), Outcome::Ok);
}

#[tokio::test(start_paused = true)]
async fn an_optional_source_pending_at_the_deadline_falls_back() {
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok_after(ms(100), 1))
        .source_with("offers", MockFetcher::ok_after(ms(5_000), 2), Fallback(0))
        .options(Deadline(ms(200)))
        .build()
        .unwrap();
    let started = Instant::now();
    let aggregate = aggregator.aggregate(&()).await.unwrap();
    assert_eq!(started.elapsed(), ms(200));
    assert_eq!(aggregate.outputs, (1, 0));
    assert_eq!(outcome(&aggregate.report, "offers"), fell_back(Outcome::TimedOut { timeout: TimeoutKind::Global }));
}

#[tokio::test(start_paused = true)]
async fn a_call_deadline_tightens_the_aggregators() {
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok_after(ms(500), 1u8))
        .options(Deadline(ms(1_000)))
        .build()
        .unwrap();
    let started = Instant::now();
    let error = aggregator.aggregate_with(&(), RequestContext::new().deadline(ms(300))).await.unwrap_err();
    assert_eq!((error.kind(), started.elapsed()), (ErrorKind::Timeout, ms(300)));
    // A looser call deadline does not extend the aggregator's.
    let started = Instant::now();
    assert!(aggregator.aggregate_with(&(), RequestContext::new().deadline(ms(5_000))).await.is_ok());
    assert_eq!(started.elapsed(), ms(500));
}

#[tokio::test(start_paused = true)]
async fn a_parent_token_cancels_the_aggregation_with_its_cause() {
    let parent = CancelToken::new();
    let slow = MockFetcher::ok_after(ms(1_000), 1u8);
    let aggregator = Aggregator::builder().source("profile", slow.clone()).build().unwrap();
    let aggregation = aggregator.aggregate_with(&(), RequestContext::new().cancel_on(&parent));
    let cancel = async {
        tokio::time::sleep(ms(40)).await;
        parent.cancel();
    };
    let (result, ()) = tokio::join!(aggregation, cancel);
    let error = result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Cancelled);
    assert!(slow.was_cancelled());
    assert_eq!(error.report().trigger, Some(Trigger::Cancelled));
}

#[tokio::test(start_paused = true)]
async fn a_retry_succeeds_on_the_third_attempt_within_budget() {
    let flaky = MockFetcher::script([Step::err("reset").after(ms(5)), Step::err("reset").after(ms(5)), Step::ok(9)]);
    let retry = Retry::attempts(3).backoff(ms(10), ms(100)).jitter(0.0);
    let aggregator = Aggregator::builder()
        .source_with("balance", flaky.clone(), retry)
        .options(Deadline(ms(1_000)))
        .build()
        .unwrap();
    let started = Instant::now();
    let aggregate = aggregator.aggregate(&()).await.unwrap();
    assert_eq!(aggregate.outputs, (9,));
    // 5 ms attempt + 10 ms backoff + 5 ms attempt + 20 ms backoff + immediate success.
    assert_eq!(started.elapsed(), ms(40));
    assert_eq!(flaky.calls(), 3);
    assert_eq!(aggregate.report.source("balance").map(|source| source.attempts), Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_retry_stops_when_the_budget_would_be_exceeded() {
    let failing = MockFetcher::<u32>::err_after(ms(30), "overloaded");
    // The backoffs alone (20 + 40 ms) fit the deadline, so the policy is accepted at build time.
    let retry = Retry::attempts(3).backoff(ms(20), ms(1_000)).jitter(0.0);
    let aggregator = Aggregator::builder()
        .source_with("balance", failing.clone(), retry)
        .options(Deadline(ms(100)))
        .build()
        .unwrap();
    let started = Instant::now();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    // Attempt 1 ends at 30 ms, backoff 20 ms, attempt 2 ends at 80 ms; the next backoff (40 ms)
    // would end after the 100 ms deadline, so the last real error comes back at once.
    assert_eq!(started.elapsed(), ms(80));
    assert_eq!(error.kind(), ErrorKind::Failed);
    assert_eq!(error.source_name(), Some("balance"));
    assert_eq!(failing.calls(), 2);
    assert_eq!(attempts(&error, "balance"), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_retry_asks_the_error_whether_to_retry() {
    let permanent = MockFetcher::<u32>::script([Step::err("404 not found").permanent()]);
    let aggregator =
        Aggregator::builder().source_with("profile", permanent.clone(), Retry::attempts(3)).build().unwrap();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    assert_eq!((permanent.calls(), attempts(&error, "profile")), (1, Some(1)), "a permanent error is not retried");

    let not_found = Arc::new(AtomicU32::new(0));
    let io = {
        let calls = Arc::clone(&not_found);
        fetcher_fn(move |_: &()| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<u32, _>(std::io::Error::from(std::io::ErrorKind::NotFound)) }
        })
    };
    let aggregator = Aggregator::builder().source_with("io", io, Retry::attempts(3)).build().unwrap();
    assert!(aggregator.aggregate(&()).await.is_err());
    assert_eq!(not_found.load(Ordering::SeqCst), 1, "an io NotFound is not retried");

    // A timeout inside the retry is retryable.
    let slow = MockFetcher::script([Step::ok(1u32).after(ms(500)), Step::ok(2).after(ms(5))]);
    let retry = Retry::attempts(2).backoff(ms(10), ms(10)).jitter(0.0);
    let aggregator = Aggregator::builder().source_with("slow", slow.clone(), (retry, Timeout(ms(50)))).build().unwrap();
    let aggregate = aggregator.aggregate(&()).await.unwrap();
    assert_eq!((aggregate.outputs, slow.calls()), ((2,), 2));
    assert!(slow.records()[0].is_cancelled(), "the timed-out attempt was dropped");
}

#[tokio::test(start_paused = true)]
async fn a_per_source_classifier_overrides_the_error() {
    let retryable = MockFetcher::<u32>::script([Step::err("busy"), Step::err("busy"), Step::ok(3)]);
    let never = Retry::attempts(3).jitter(0.0).retry_if(|error: &MockError| error.message() != "busy");
    let aggregator = Aggregator::builder().source_with("profile", retryable.clone(), never).build().unwrap();
    assert!(aggregator.aggregate(&()).await.is_err());
    assert_eq!(retryable.calls(), 1);
}

/// Behind a per-attempt timeout, the classifier takes the timeout's error: it decides for the
/// timeouts too, as `retry_if` says.
#[tokio::test(start_paused = true)]
async fn a_classifier_behind_a_timeout_decides_for_the_timeouts_too() {
    let script = || MockFetcher::<u32>::script([Step::hang(), Step::hang(), Step::ok(3)]);
    let timeouts = |error: &TimeoutError<MockError>| matches!(error, TimeoutError::Elapsed { .. });
    let hanging = script();
    let retry = Retry::attempts(3).backoff(ms(1), ms(1)).jitter(0.0).retry_if(timeouts);
    let aggregator =
        Aggregator::builder().source_with("profile", hanging.clone(), (retry, Timeout(ms(10)))).build().unwrap();
    assert_eq!(aggregator.aggregate(&()).await.unwrap().outputs, (3,));
    assert_eq!(hanging.calls(), 3);

    let hanging = script();
    let never = Retry::attempts(3).jitter(0.0).retry_if(|_: &TimeoutError<MockError>| false);
    let aggregator =
        Aggregator::builder().source_with("profile", hanging.clone(), (never, Timeout(ms(10)))).build().unwrap();
    assert_eq!(aggregator.aggregate(&()).await.unwrap_err().kind(), ErrorKind::Timeout);
    assert_eq!(hanging.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hedge_wins_and_its_loser_is_cancelled() {
    let source = MockFetcher::script([Step::ok("slow replica").after(ms(500)), Step::ok("fast replica").after(ms(10))]);
    let aggregator = Aggregator::builder().source_with("profile", source.clone(), Hedge(ms(50))).build().unwrap();
    let started = Instant::now();
    let aggregate = aggregator.aggregate(&()).await.unwrap();
    assert_eq!(started.elapsed(), ms(60));
    assert_eq!(aggregate.outputs, ("fast replica",));
    let records = source.records();
    assert!(records[0].is_cancelled(), "the losing attempt was not cancelled");
    assert!(!records[1].is_cancelled());
    let profile = aggregate.report.source("profile").unwrap();
    assert_eq!((profile.attempts, profile.notes.clone()), (2, vec!["hedge won".to_owned()]));
}

#[tokio::test(start_paused = true)]
async fn a_hedge_starts_at_once_when_the_first_attempt_fails_early() {
    let source = MockFetcher::script([Step::err("refused").after(ms(5)), Step::ok(1).after(ms(10))]);
    let aggregator = Aggregator::builder().source_with("profile", source.clone(), Hedge(ms(50))).build().unwrap();
    let started = Instant::now();
    assert_eq!(aggregator.aggregate(&()).await.unwrap().outputs, (1,));
    assert_eq!(started.elapsed(), ms(15));
}

#[tokio::test(start_paused = true)]
async fn a_hedged_source_fails_with_the_last_failure() {
    let source = MockFetcher::<u32>::script([Step::err("first").after(ms(80)), Step::err("second").after(ms(10))]);
    let aggregator = Aggregator::builder().source_with("profile", source, Hedge(ms(50))).build().unwrap();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    assert_eq!(error.source_error().map(ToString::to_string).as_deref(), Some("first"));
    let profile = error.report().source("profile").map(|source| (source.duration, source.attempts));
    assert_eq!(profile, Some((ms(80), 2)));
}

#[tokio::test(start_paused = true)]
async fn a_source_timeout_fails_the_source_and_names_it() {
    let aggregator = Aggregator::builder()
        .source_with("profile", MockFetcher::ok_after(ms(1_000), 1u32), Timeout(ms(100)))
        .source("transactions", MockFetcher::ok_after(ms(1_000), 2u32))
        .options(Deadline(ms(500)))
        .build()
        .unwrap();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert_eq!(error.source_name(), Some("profile"));
    let elapsed = error.source_error().and_then(|error| error.downcast_ref::<TimeoutError<MockError>>());
    assert!(elapsed.is_some_and(TimeoutError::is_elapsed));
    assert_eq!(error.source_error().map(ToString::to_string).as_deref(), Some("source timeout of 100ms elapsed"));
    assert_eq!(error.report().elapsed, ms(100));
    assert_eq!(outcome(error.report(), "profile"), Outcome::TimedOut { timeout: TimeoutKind::Source });
}

#[tokio::test(start_paused = true)]
async fn a_source_timeout_at_the_deadline_leaves_it_to_the_global_deadline() {
    let aggregator = Aggregator::builder()
        .source_with("profile", MockFetcher::ok_after(ms(1_000), 1u32), Timeout(ms(300)))
        .options(Deadline(ms(300)))
        .build()
        .unwrap();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert_eq!(error.source_name(), None, "the global deadline is what is reported");
    assert_eq!(outcome(error.report(), "profile"), Outcome::TimedOut { timeout: TimeoutKind::Global });
}

#[tokio::test(start_paused = true)]
async fn a_panicking_source_becomes_an_error_and_cancels_its_siblings() {
    let slow = MockFetcher::ok_after(ms(1_000), 1u32);
    let aggregator = Aggregator::builder()
        .source("slow", slow.clone())
        .source("bomb", MockFetcher::<u32>::panic_after(ms(20), "bomb went off"))
        .source_with("optional bomb", MockFetcher::<u32>::panic_after(ms(10), "small bang"), Fallback(0))
        .build()
        .unwrap();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Panicked);
    assert_eq!(error.source_name(), Some("bomb"));
    assert!(slow.was_cancelled());
    assert_eq!(outcome(error.report(), "bomb"), Outcome::Panicked { message: "bomb went off".into() });
    let panicked = Outcome::Panicked { message: "small bang".into() };
    assert_eq!(outcome(error.report(), "optional bomb"), fell_back(panicked));
}

#[tokio::test(start_paused = true)]
async fn the_aggregator_is_a_tower_service() {
    use tower::ServiceExt as _;
    let aggregator = Aggregator::builder().source("echo", MockFetcher::ok(5u8)).build().unwrap();
    let aggregate = aggregator.oneshot(1u64).await.unwrap();
    assert_eq!(aggregate.outputs, (5,));
}

#[cfg(feature = "tower")]
#[tokio::test(start_paused = true)]
async fn any_tower_layer_is_a_policy() {
    let slow = MockFetcher::ok_after(ms(1_000), 1u8);
    let layer = tower::timeout::TimeoutLayer::new(ms(50));
    let aggregator =
        Aggregator::builder().source_with("slow", slow.clone(), muster::policy::Tower(layer)).build().unwrap();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    assert_eq!(error.report().elapsed, ms(50));
    // The source's error is the policy's `TowerError`, holding what tower failed with.
    let tower_error =
        error.source_error().and_then(|error| error.downcast_ref::<muster::policy::TowerError<MockError>>());
    assert!(tower_error.is_some_and(|error| error.get_ref().is::<tower::timeout::error::Elapsed>()), "{error:?}");
    assert_eq!(error.kind(), ErrorKind::Timeout, "tower's timeout is a timeout, as muster's own is");
    assert!(slow.was_cancelled());
}

#[test]
fn bad_configurations_are_refused_when_building() {
    let duplicate = Aggregator::<(), _>::builder().source("a", MockFetcher::ok(1u8)).source("a", MockFetcher::ok(2u8));
    assert!(matches!(duplicate.build(), Err(BuildError::DuplicateSource(name)) if name == "a"));
    let zero = Aggregator::<(), _>::builder().source("a", MockFetcher::ok(1u8)).options(Deadline(Duration::ZERO));
    let error = zero.build().unwrap_err();
    // Printed alone (`build()?` in `main`, a log line), the error says why.
    assert_eq!(error.to_string(), "invalid aggregator option: the deadline must be greater than zero");
    assert!(matches!(error, BuildError::Options(OptionError::ZeroDeadline)));
    let retry = Retry::attempts(4).backoff(ms(100), ms(1_000));
    let budget =
        Aggregator::<(), _>::builder().source_with("a", MockFetcher::ok(1u8), retry).options(Deadline(ms(500)));
    let message = budget.build().unwrap_err().to_string();
    assert_eq!(message, "source `a`: its retry backoffs take at least 700ms, which does not fit in the 500ms deadline");
    let timeout =
        Aggregator::<(), _>::builder().source_with("a", MockFetcher::ok(1u8), (Timeout(Duration::ZERO), Optional));
    let error = timeout.build().unwrap_err();
    assert_eq!(error.to_string(), "invalid policy for source `a`: the source timeout must be greater than zero");
    assert!(matches!(error, BuildError::Source { error: OptionError::ZeroTimeout, .. }));
    assert!(std::error::Error::source(&error).is_none(), "the reason is in the message, not repeated as a source");
    let empty = Aggregator::<(), _>::by_name().source("", MockFetcher::ok(1u8));
    assert!(matches!(empty.build(), Err(BuildError::EmptyName)));
}

#[tokio::test(start_paused = true)]
async fn the_report_renders_a_waterfall() {
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::<u32>::err_after(ms(30), "503"))
        .source("transactions", MockFetcher::ok_after(ms(10_000), 1u32))
        .source("offers", MockFetcher::ok_after(ms(15), 2u32))
        .build()
        .unwrap();
    let error = aggregator.aggregate_with(&(), RequestContext::new().field("user_id", 42)).await.unwrap_err();
    let text = error.report().to_string();
    let lines: Vec<&str> = text.lines().collect();
    let (full, half) = ("█".repeat(40), format!("{}{}", "█".repeat(20), " ".repeat(20)));
    assert_eq!(lines[0], "aggregation took 30ms, stopped by `profile`; cancellation took 0ms user_id=42");
    assert_eq!(lines[1], format!("  profile      |{full}|    30ms  failed: 503"));
    assert_eq!(lines[2], format!("  transactions |{full}|    30ms  cancelled by `profile`: 503"));
    assert_eq!(lines[3], format!("  offers       |{half}|    15ms  ok"));
}

#[tokio::test(start_paused = true)]
async fn coalesced_aggregations_share_one_call_until_every_waiter_has_gone() {
    let profiles = MockFetcher::script([Step::ok("ada").after(ms(50)), Step::ok("fresh").after(ms(50))]);
    let aggregator = Aggregator::builder().source_with("profile", profiles.clone(), Coalesce).build().unwrap();

    let (a, b) = tokio::join!(aggregator.aggregate(&42u64), aggregator.aggregate(&42u64));
    assert_eq!((a.unwrap().outputs, b.unwrap().outputs), (("ada",), ("ada",)));
    assert_eq!(profiles.calls(), 1, "concurrent aggregations share one call");

    // Both waiters leave mid-call: the shared call is cancelled, and a later aggregation starts
    // a fresh call instead of inheriting the cancellation.
    let (x, y) = (aggregator.aggregate(&42u64), aggregator.aggregate(&42u64));
    let left = tokio::time::timeout(ms(10), async { tokio::join!(x, y) }).await;
    assert!(left.is_err());
    assert!(profiles.records()[1].is_cancelled(), "the abandoned call was not cancelled");
    let again = aggregator.aggregate(&42u64).await.unwrap();
    assert_eq!(again.outputs, ("fresh",));
    assert_eq!(profiles.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_coalesced_failure_keeps_its_real_error_and_a_panic_is_a_panic_for_every_waiter() {
    let failing = MockFetcher::<u32>::err_after(ms(10), "503 from profile");
    let aggregator = Aggregator::builder().source_with("profile", failing, Coalesce).build().unwrap();
    let (a, b) = tokio::join!(aggregator.aggregate(&1u64), aggregator.aggregate(&1u64));
    for error in [a.unwrap_err(), b.unwrap_err()] {
        assert_eq!(outcome(error.report(), "profile"), Outcome::Failed { error: "503 from profile".into() });
    }

    let bomb = MockFetcher::<u32>::panic_after(ms(10), "shared bang");
    let aggregator = Aggregator::builder().source_with("profile", bomb.clone(), Coalesce).build().unwrap();
    let (a, b) = tokio::join!(aggregator.aggregate(&1u64), aggregator.aggregate(&1u64));
    for error in [a.unwrap_err(), b.unwrap_err()] {
        assert_eq!(error.kind(), ErrorKind::Panicked);
        assert_eq!(outcome(error.report(), "profile"), Outcome::Panicked { message: "shared bang".into() });
    }
    assert_eq!(bomb.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_source_sees_its_deadline_the_tighter_of_its_timeout_and_the_aggregations() {
    let budget = fetcher_fn(|_: &()| async { Ok::<_, std::io::Error>((muster::deadline(), muster::remaining())) });
    let aggregator = Aggregator::builder()
        .source("global", budget)
        .source_with("own", budget, Timeout(ms(100)))
        .options(Deadline(ms(500)))
        .build()
        .unwrap();
    let started = Instant::now();
    let (global, own) = aggregator.aggregate(&()).await.unwrap().outputs;
    assert_eq!(global, (Some(started + ms(500)), Some(ms(500))));
    assert_eq!(own, (Some(started + ms(100)), Some(ms(100))));
}

/// What a source reads of its request's context inside `fetch`: `(request id, user id,
/// authorization, traceparent, every field)`.
type Seen = (Option<String>, Option<String>, Option<String>, Option<String>, Vec<(String, String)>);

fn read_context() -> Seen {
    let context = muster::context().expect("inside a source");
    let owned = |value: Option<&str>| value.map(str::to_owned);
    let fields = context.fields().map(|(name, value)| (name.to_owned(), value.to_owned())).collect();
    (
        owned(context.request_id()),
        owned(context.field("user_id")),
        owned(context.header("Authorization")),
        owned(context.traceparent()),
        fields,
    )
}

/// Every source (behind any policy, inside a nested aggregator, a dependent) reads the call's
/// context with `muster::context()`: the fields (the aggregator's defaults, then the call's),
/// the request id (the field `request_id`, also in the report), the trace parent and the
/// headers, made once per call.
#[tokio::test(start_paused = true)]
async fn a_source_reads_its_requests_context() {
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reader = || fetcher_fn(|_: &()| async { Ok::<_, std::io::Error>(read_context()) });
    let nested = Aggregator::builder().source("inner", reader()).build().unwrap();
    let aggregator = Aggregator::builder()
        .source("plain", reader())
        .source_with("wrapped", reader(), (Retry::attempts(2), Timeout(ms(100))))
        .source("nested", nested)
        .then("dependent", muster::builder::Input::<0>, |_: &(), _: &Seen| (), reader())
        .options(Field::new("region", "eu"))
        .build()
        .unwrap();
    let context = RequestContext::new()
        .field("user_id", 42)
        .request_id("r-1")
        .traceparent(TRACEPARENT)
        .header("AUTHORIZATION", "Bearer t0k3n");

    let aggregate = aggregator.aggregate_with(&(), context).await.unwrap();

    let expected: Seen = (
        Some("r-1".into()),
        Some("42".into()),
        Some("Bearer t0k3n".into()),
        Some(TRACEPARENT.into()),
        vec![("region".into(), "eu".into()), ("user_id".into(), "42".into()), ("request_id".into(), "r-1".into())],
    );
    let (plain, wrapped, (inner,), dependent) = aggregate.outputs;
    assert_eq!(plain, expected);
    assert_eq!(wrapped, expected, "behind policies");
    assert_eq!(inner, expected, "inside a nested aggregator whose call brings nothing of its own");
    assert_eq!(dependent, expected);
    assert_eq!(aggregate.report.field("request_id"), Some("r-1"), "the request id is a field of the report");
    assert!(muster::context().is_none(), "nothing outside an aggregation");
}

/// A call without a context of its own still gives its sources the aggregator's default
/// fields, and no request id.
#[tokio::test(start_paused = true)]
async fn a_call_without_a_context_gives_the_aggregators_fields() {
    let reader = fetcher_fn(|_: &()| async { Ok::<_, std::io::Error>(read_context()) });
    let aggregator =
        Aggregator::builder().source("reader", reader).options(Field::new("region", "eu")).build().unwrap();
    let ((request_id, _, authorization, traceparent, fields),) = aggregator.aggregate(&()).await.unwrap().outputs;
    assert_eq!((request_id, authorization, traceparent), (None, None, None));
    assert_eq!(fields, [("region".to_owned(), "eu".to_owned())]);
}

/// Records the cause its source reads from `muster::cancellation()` when it is dropped.
struct CauseProbe(Arc<Mutex<Option<String>>>);

impl Drop for CauseProbe {
    fn drop(&mut self) {
        let cause = muster::cancellation().and_then(|token| token.cause().map(ToString::to_string));
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = cause;
    }
}

#[tokio::test(start_paused = true)]
async fn a_source_reads_why_it_was_cancelled() {
    let seen = Arc::new(Mutex::new(None));
    let probe = {
        let seen = Arc::clone(&seen);
        fetcher_fn(move |_: &()| {
            let probe = CauseProbe(Arc::clone(&seen));
            async move {
                let token = muster::cancellation().expect("inside a source");
                assert!(!token.is_cancelled());
                tokio::time::sleep(ms(1_000)).await;
                drop(probe);
                Ok::<_, std::io::Error>(())
            }
        })
    };
    let aggregator = Aggregator::builder()
        .source("probe", probe)
        .source("profile", MockFetcher::<()>::err_after(ms(10), "503"))
        .build()
        .unwrap();
    assert!(aggregator.aggregate(&()).await.is_err());
    assert_eq!(seen.lock().unwrap().as_deref(), Some("cancelled by `profile`: 503"));
    assert!(muster::cancellation().is_none(), "nothing outside a source");
}

#[tokio::test(start_paused = true)]
async fn a_user_written_policy_composes_with_the_built_in_ones_and_shows_in_the_report() {
    let backend = MockFetcher::<Vec<u32>>::err_after(ms(5), "503");
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok(1u8))
        .source_with("offers", backend.clone(), (Fallback(Vec::new()), Breaker(2), Timeout(ms(100))))
        .build()
        .unwrap();
    for _ in 0..2 {
        let aggregate = aggregator.aggregate(&()).await.unwrap();
        assert_eq!(outcome(&aggregate.report, "offers"), fell_back(Outcome::Failed { error: "503".into() }));
    }
    let aggregate = aggregator.aggregate(&()).await.unwrap();
    assert_eq!(aggregate.outputs, (1, vec![]));
    let offers = aggregate.report.source("offers").unwrap();
    assert_eq!(offers.outcome, fell_back(Outcome::Failed { error: "circuit open".into() }));
    assert_eq!(offers.notes, ["circuit open"]);
    assert_eq!(backend.calls(), 2, "the open circuit did not call the backend");
    assert!(aggregate.report.to_string().contains("fell back after failed: circuit open; circuit open"));
}

#[tokio::test(start_paused = true)]
async fn context_fields_are_per_call_on_a_shared_aggregator() {
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::<u8>::err_after(ms(5), "503"))
        .options(Field::new("service", "dashboard"))
        .build()
        .unwrap();
    let (a, b) = tokio::join!(
        aggregator.aggregate_with(&(), RequestContext::new().field("user_id", 1).field("request_id", "r-1")),
        aggregator.aggregate_with(&(), RequestContext::new().field("user_id", 2)),
    );
    let (a, b) = (a.unwrap_err(), b.unwrap_err());
    assert_eq!(
        (a.field("user_id"), a.field("request_id"), a.field("service")),
        (Some("1"), Some("r-1"), Some("dashboard"))
    );
    assert_eq!((b.field("user_id"), b.field("request_id")), (Some("2"), None));
    assert_eq!(a.report().fields.len(), 3);
    let overridden = aggregator.aggregate_with(&(), RequestContext::new().field("service", "batch")).await.unwrap_err();
    assert_eq!(overridden.field("service"), Some("batch"));
}

#[tokio::test(start_paused = true)]
async fn a_policy_wraps_a_fetcher_outside_an_aggregator() {
    let optional = Optional.wrap(MockFetcher::<u8>::err("down"));
    assert_eq!(optional.fetch(&()).await, Ok(None));
    let retried = Retry::attempts(2).jitter(0.0).wrap(MockFetcher::script([Step::err("reset"), Step::ok(4u8)]));
    assert_eq!(retried.fetch(&()).await.unwrap(), 4);
}

#[tokio::test(start_paused = true)]
async fn on_ready_tells_each_source_the_moment_it_completes() {
    let started = Instant::now();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let context = RequestContext::new().on_ready(move |ready| {
        let value = ready.value::<u32>().copied().or(ready.value::<Option<u32>>().copied().flatten());
        let error = ready.error().map(ToString::to_string);
        log.lock().unwrap().push((
            ready.name().to_owned(),
            ready.index(),
            value,
            error,
            ready.is_fallback(),
            started.elapsed(),
        ));
    });
    let aggregator = Aggregator::builder()
        .source("slow", MockFetcher::ok_after(ms(30), 1u32))
        .source_with("offers", MockFetcher::<u32>::err_after(ms(5), "down"), Fallback(0))
        .source_with("ads", MockFetcher::ok_after(ms(10), 3u32), Optional)
        .build()
        .unwrap();
    aggregator.aggregate_with(&(), context).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            ("offers".to_owned(), 1, Some(0), None, true, ms(5)),
            ("ads".to_owned(), 2, Some(3), None, false, ms(10)),
            ("slow".to_owned(), 0, Some(1), None, false, ms(30)),
        ]
    );

    let failed = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&failed);
    let context =
        RequestContext::new().on_ready(move |ready| log.lock().unwrap().push(ready.error().map(ToString::to_string)));
    let aggregator =
        Aggregator::builder().source("profile", MockFetcher::<u8>::err_after(ms(5), "503")).build().unwrap();
    assert!(aggregator.aggregate_with(&(), context).await.is_err());
    assert_eq!(*failed.lock().unwrap(), [Some("503".to_owned())]);
}

#[tokio::test(start_paused = true)]
async fn a_nested_aggregations_source_reads_the_outer_failure_as_its_cause() {
    let seen = Arc::new(Mutex::new(None));
    let probe = {
        let seen = Arc::clone(&seen);
        fetcher_fn(move |_: &()| {
            let probe = CauseProbe(Arc::clone(&seen));
            async move {
                tokio::time::sleep(ms(1_000)).await;
                drop(probe);
                Ok::<_, std::io::Error>(())
            }
        })
    };
    let inner = Aggregator::builder().source("ledger", probe).build().unwrap();
    let outer = Aggregator::builder()
        .source("accounts", inner)
        .source("profile", MockFetcher::<()>::err_after(ms(10), "503"))
        .build()
        .unwrap();
    assert!(outer.aggregate(&()).await.is_err());
    assert_eq!(seen.lock().unwrap().as_deref(), Some("cancelled by `profile`: 503"), "the outer cause, not `dropped`");
}

#[tokio::test(start_paused = true)]
async fn the_report_gives_each_failure_its_kind_in_the_one_vocabulary() {
    let aggregator = Aggregator::builder()
        .source_with("slow", MockFetcher::ok_after(ms(500), 1u32), (Fallback(0), Timeout(ms(50))))
        .source_with("down", MockFetcher::<u32>::err("503"), Optional)
        .source("fine", MockFetcher::ok(2u32))
        .build()
        .unwrap();
    let report = aggregator.aggregate(&()).await.unwrap().report;
    let kind = |name: &str| report.source(name).and_then(|source| source.kind);
    assert_eq!((kind("slow"), kind("down"), kind("fine")), (Some(ErrorKind::Timeout), Some(ErrorKind::Failed), None));
}

#[tokio::test(start_paused = true)]
async fn a_source_dropped_because_its_caller_went_away_still_reads_its_context() {
    /// Records the request id its owner's context has when it is dropped.
    struct OnDrop(Arc<Mutex<Option<Option<String>>>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            let id = muster::context().and_then(|context| context.request_id().map(str::to_owned));
            *self.0.lock().unwrap() = Some(id);
        }
    }
    let seen = Arc::new(Mutex::new(None));
    let source = {
        let seen = Arc::clone(&seen);
        fetcher_fn(move |_: &()| {
            let guard = OnDrop(Arc::clone(&seen));
            async move {
                let _guard = guard;
                tokio::time::sleep(ms(1_000)).await;
                Ok::<_, std::io::Error>(())
            }
        })
    };
    let aggregator = Aggregator::builder().source("slow", source).build().unwrap();

    let call = aggregator.aggregate_with(&(), RequestContext::new().request_id("r-gone"));
    assert!(tokio::time::timeout(ms(10), call).await.is_err(), "the caller gives up first");

    assert_eq!(*seen.lock().unwrap(), Some(Some("r-gone".to_owned())), "dropped inside its context");
}
