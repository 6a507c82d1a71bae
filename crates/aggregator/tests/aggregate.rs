//! The seed's test strategy, on tokio's paused clock with scripted mock sources: the deadline is
//! respected, one failing source cancels the other, optional sources fall back, retries and
//! hedges behave, and the report says all of it.

use std::time::Duration;

use muster::{
    AggregateError, Aggregator, AnyOutput, BuildError, Deadline, ErrorKind, Field, Hedge, Key, Limit, OptionError,
    Optional, Outcome, Report, Retry, SourceTimeout, Timeout, TimeoutKind, Trigger,
};
use muster_adapters::mock::{MockError, MockFetcher, Step};
use tokio::time::Instant;

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
        .options((Deadline(ms(1_000)), Field::new("user_id", 42)))
        .build()
        .unwrap();

    let started = Instant::now();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    assert_eq!(started.elapsed(), ms(30), "fail-fast waited for the slow source");
    assert!(slow.was_cancelled(), "the slow source kept running");
    assert_eq!(error.kind(), ErrorKind::Failed);
    assert_eq!(error.source_name(), Some("profile"));
    assert_eq!(error.to_string(), "source `profile` failed after 30ms (user_id=42)");
    let report = error.report();
    assert_eq!(report.trigger, Some(Trigger::Source("profile".into())));
    assert_eq!(report.cancellation, Some(Duration::ZERO));
    assert_eq!(outcome(report, "profile"), Outcome::Failed { error: "503 Service Unavailable".into() });
    let cause = "cancelled by `profile`: 503 Service Unavailable".to_owned();
    assert_eq!(outcome(report, "transactions"), Outcome::Cancelled { cause });
    let transactions = report.source("transactions").unwrap();
    assert_eq!((transactions.start, transactions.duration), (Some(Duration::ZERO), ms(30)));
}

#[tokio::test(start_paused = true)]
async fn outputs_are_keyed_by_name_in_declaration_order() {
    let aggregator = Aggregator::builder()
        .source("b", MockFetcher::ok_after(ms(30), "second"))
        .source("a", MockFetcher::ok_after(ms(10), "first"))
        .build()
        .unwrap();
    let started = Instant::now();
    let aggregate = aggregator.aggregate(&7u64).await.unwrap();
    assert_eq!(started.elapsed(), ms(30), "sources run concurrently");
    assert_eq!(aggregate.outputs.iter().collect::<Vec<_>>(), [("b", &"second"), ("a", &"first")]);
    assert_eq!(aggregate.report.trigger, None);
    assert_eq!(aggregate.report.source("a").map(|a| (a.duration, a.attempts)), Some((ms(10), 1)));
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
    let timing = |name: &str| report.source(name).map(|source| (source.start, source.duration));
    assert_eq!(timing("first"), Some((Some(ms(0)), ms(10))));
    assert_eq!(timing("second"), Some((Some(ms(0)), ms(15))));
    // Queued until `first` ended at 10 ms, then 5 ms of its own.
    assert_eq!(timing("third"), Some((Some(ms(10)), ms(5))));
    assert_eq!(report.elapsed, ms(15));
}

#[tokio::test(start_paused = true)]
async fn an_optional_source_falls_back_while_the_required_one_succeeds() {
    let offers = MockFetcher::<Vec<&str>>::err_after(ms(5), "offers service down");
    let aggregator = Aggregator::builder()
        .source("transactions", MockFetcher::ok_after(ms(20), vec!["coffee"]))
        .source_with("offers", offers.clone(), Optional::value(vec![]))
        .source_with("ads", MockFetcher::<Vec<&str>>::hang(), (Optional::omit(), Timeout(ms(15))))
        .build()
        .unwrap();
    let aggregate = aggregator.aggregate(&()).await.unwrap();
    assert_eq!(aggregate.outputs.get("offers"), Some(&vec![]));
    assert_eq!(aggregate.outputs.get("ads"), None, "an omitted source is left out");
    assert_eq!(aggregate.outputs["transactions"], ["coffee"]);
    let report = &aggregate.report;
    assert_eq!(outcome(report, "offers"), fell_back(Outcome::Failed { error: "offers service down".into() }));
    assert_eq!(outcome(report, "ads"), fell_back(Outcome::TimedOut { timeout: TimeoutKind::Source }));
    assert_eq!(outcome(report, "transactions"), Outcome::Ok);
}

#[tokio::test(start_paused = true)]
async fn an_optional_source_pending_at_the_deadline_falls_back() {
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok_after(ms(100), 1))
        .source_with("offers", MockFetcher::ok_after(ms(5_000), 2), Optional::value(0))
        .options(Deadline(ms(200)))
        .build()
        .unwrap();
    let started = Instant::now();
    let aggregate = aggregator.aggregate(&()).await.unwrap();
    assert_eq!(started.elapsed(), ms(200));
    assert_eq!(aggregate.outputs["offers"], 0);
    assert_eq!(outcome(&aggregate.report, "offers"), fell_back(Outcome::TimedOut { timeout: TimeoutKind::Global }));
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
    assert_eq!(aggregate.outputs["balance"], 9);
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
async fn errors_not_classified_retryable_are_not_retried() {
    let failing = MockFetcher::<u32>::script([Step::err("404 not found").permanent()]);
    let retryable = |error: &(dyn std::error::Error + 'static)| {
        error.downcast_ref::<MockError>().is_some_and(MockError::is_retryable)
    };
    let retry = Retry::attempts(3).jitter(0.0).retry_if(retryable);
    let aggregator = Aggregator::builder().source_with("profile", failing.clone(), retry).build().unwrap();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    assert_eq!(failing.calls(), 1);
    assert_eq!(attempts(&error, "profile"), Some(1));
}

#[tokio::test(start_paused = true)]
async fn a_hedge_wins_and_its_loser_is_cancelled() {
    let source = MockFetcher::script([Step::ok("slow replica").after(ms(500)), Step::ok("fast replica").after(ms(10))]);
    let aggregator = Aggregator::builder().source_with("profile", source.clone(), Hedge(ms(50))).build().unwrap();
    let started = Instant::now();
    let aggregate = aggregator.aggregate(&()).await.unwrap();
    assert_eq!(started.elapsed(), ms(60));
    assert_eq!(aggregate.outputs["profile"], "fast replica");
    let records = source.records();
    assert!(records[0].is_cancelled(), "the losing attempt was not cancelled");
    assert!(!records[1].is_cancelled());
    assert_eq!(aggregate.report.source("profile").map(|source| source.attempts), Some(2));
}

#[tokio::test(start_paused = true)]
async fn a_hedge_starts_at_once_when_the_first_attempt_fails_early() {
    let source = MockFetcher::script([Step::err("refused").after(ms(5)), Step::ok(1).after(ms(10))]);
    let aggregator = Aggregator::builder().source_with("profile", source.clone(), Hedge(ms(50))).build().unwrap();
    let started = Instant::now();
    assert_eq!(aggregator.aggregate(&()).await.unwrap().outputs["profile"], 1);
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
    assert_eq!(error.timeout(), Some(&SourceTimeout { after: ms(100) }));
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
        .source_with("optional bomb", MockFetcher::<u32>::panic_after(ms(10), "small bang"), Optional::value(0))
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

#[derive(Debug, Clone, PartialEq)]
struct Profile {
    name: String,
}

#[derive(Debug, Clone, PartialEq)]
struct Transaction {
    cents: i64,
}

#[derive(Debug, PartialEq)]
struct Dashboard {
    profile: Profile,
    transactions: Vec<Transaction>,
}

#[tokio::test(start_paused = true)]
async fn a_typed_merge_builds_a_struct_without_lookups_or_casts() {
    let profile: Key<Profile> = Key::new("profile");
    let transactions: Key<Vec<Transaction>> = Key::new("transactions");
    let aggregator = Aggregator::<u64, AnyOutput>::builder()
        .typed(&profile, MockFetcher::ok_after(ms(10), Profile { name: "Ada".into() }))
        .typed_with(&transactions, MockFetcher::<Vec<Transaction>>::err("down"), Optional::value(vec![]))
        .build()
        .unwrap();
    let mut aggregate = aggregator.aggregate(&42).await.unwrap();
    let dashboard =
        Dashboard { profile: aggregate.take(&profile).unwrap(), transactions: aggregate.take(&transactions).unwrap() };
    assert_eq!(dashboard, Dashboard { profile: Profile { name: "Ada".into() }, transactions: vec![] });
    assert!(aggregate.take(&profile).is_err(), "an output can be taken once");
    let _ = Transaction { cents: 0 }.cents;
}

#[tokio::test(start_paused = true)]
async fn the_aggregator_is_a_tower_service() {
    use tower::ServiceExt as _;
    let aggregator = Aggregator::builder().source("echo", MockFetcher::ok(5u8)).build().unwrap();
    let aggregate = aggregator.oneshot(1u64).await.unwrap();
    assert_eq!(aggregate.outputs["echo"], 5);
}

#[test]
fn bad_configurations_are_refused_when_building() {
    let duplicate = Aggregator::<(), u8>::builder().source("a", MockFetcher::ok(1)).source("a", MockFetcher::ok(2));
    assert!(matches!(duplicate.build(), Err(BuildError::DuplicateSource(name)) if name == "a"));
    let zero = Aggregator::<(), u8>::builder().source("a", MockFetcher::ok(1)).options(Deadline(Duration::ZERO));
    assert!(matches!(zero.build(), Err(BuildError::Options(OptionError::ZeroDeadline))));
    let retry = Retry::attempts(4).backoff(ms(100), ms(1_000));
    let budget = Aggregator::<(), u8>::builder().source_with("a", MockFetcher::ok(1), retry).options(Deadline(ms(500)));
    let message = budget.build().unwrap_err().to_string();
    assert_eq!(message, "source `a`: 4 attempts need at least 700ms of backoff, more than the 500ms deadline");
    let timeout = Aggregator::<(), u8>::builder().source_with("a", MockFetcher::ok(1), Timeout(Duration::ZERO));
    assert!(matches!(timeout.build(), Err(BuildError::Source { error: OptionError::ZeroTimeout, .. })));
}

#[tokio::test(start_paused = true)]
async fn the_report_renders_a_waterfall() {
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::<u32>::err_after(ms(30), "503"))
        .source("transactions", MockFetcher::ok_after(ms(10_000), 1u32))
        .source("offers", MockFetcher::ok_after(ms(15), 2u32))
        .build()
        .unwrap();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    let text = error.report().to_string();
    let lines: Vec<&str> = text.lines().collect();
    let (full, half) = ("█".repeat(40), format!("{}{}", "█".repeat(20), " ".repeat(20)));
    assert_eq!(lines[0], "aggregation took 30ms, stopped by `profile`; cancellation took 0ns");
    assert_eq!(lines[1], format!("  profile      |{full}|      30ms  failed: 503"));
    assert_eq!(lines[2], format!("  transactions |{full}|      30ms  cancelled by `profile`: 503"));
    assert_eq!(lines[3], format!("  offers       |{half}|      15ms  ok"));
}

#[tokio::test(start_paused = true)]
async fn coalesced_aggregations_share_one_call_until_every_waiter_has_gone() {
    let profiles = MockFetcher::script([Step::ok("ada").after(ms(50)), Step::ok("fresh").after(ms(50))]);
    let aggregator = Aggregator::builder().source("profile", muster::Coalesced::new(profiles.clone())).build().unwrap();

    let (a, b) = tokio::join!(aggregator.aggregate(&42u64), aggregator.aggregate(&42u64));
    assert_eq!((a.unwrap().outputs["profile"], b.unwrap().outputs["profile"]), ("ada", "ada"));
    assert_eq!(profiles.calls(), 1, "concurrent aggregations share one call");

    // Both waiters leave mid-call: the shared call is cancelled, and a later aggregation starts
    // a fresh call instead of inheriting the cancellation.
    let (x, y) = (aggregator.aggregate(&42u64), aggregator.aggregate(&42u64));
    let left = tokio::time::timeout(ms(10), async { tokio::join!(x, y) }).await;
    assert!(left.is_err());
    assert!(profiles.records()[1].is_cancelled(), "the abandoned call was not cancelled");
    let again = aggregator.aggregate(&42u64).await.unwrap();
    assert_eq!(again.outputs["profile"], "fresh");
    assert_eq!(profiles.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_fetcher_sees_the_tighter_of_its_timeout_and_the_deadline() {
    let budget = muster::fetcher_fn(|_: &()| async { Ok::<_, std::io::Error>(muster_core::deadline()) });
    let aggregator = Aggregator::builder()
        .source("global", budget)
        .source_with("own", budget, Timeout(ms(100)))
        .options(Deadline(ms(500)))
        .build()
        .unwrap();
    let started = Instant::now();
    let aggregate = aggregator.aggregate(&()).await.unwrap();
    assert_eq!(aggregate.outputs["global"], Some(started + ms(500)));
    assert_eq!(aggregate.outputs["own"], Some(started + ms(100)));
}
