//! Completion policies (`muster::completion`) on tokio's paused clock: each pins its exact
//! timings and which members are cancelled; they compose inside an aggregator; partial results
//! at the deadline are optional sources that fell back.

use std::time::Duration;

use muster::completion::{all, first_ok, quorum, settled};
use muster::{Aggregator, BuildError, Deadline, ErrorKind, Fetcher, Optional, report::Outcome, report::TimeoutKind};
use muster_adapters::mock::{MockFetcher, Step};
use tokio::time::Instant;

#[path = "../../core/tests/support/panics.rs"]
mod panics;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn ok(delay: u64, value: u32) -> MockFetcher<u32> {
    MockFetcher::ok_after(ms(delay), value)
}

fn err(delay: u64, message: &str) -> MockFetcher<u32> {
    MockFetcher::script([Step::err(message).after(ms(delay))])
}

#[tokio::test(start_paused = true)]
async fn first_ok_returns_the_first_success_and_cancels_the_rest() {
    let (a, b, c) = (err(10, "a down"), ok(30, 2), ok(50, 3));
    let any = first_ok([("a", a.clone()), ("b", b.clone()), ("c", c.clone())]).unwrap();
    let started = Instant::now();
    assert_eq!(any.fetch(&()).await.unwrap(), 2);
    assert_eq!(started.elapsed(), ms(30));
    assert!(!a.was_cancelled() && !b.was_cancelled());
    assert!(c.was_cancelled(), "the slower member was dropped at the first success");
}

#[tokio::test(start_paused = true)]
async fn first_ok_fails_only_when_every_member_has_failed() {
    let any = first_ok([("a", err(10, "a down")), ("b", err(25, "b down"))]).unwrap();
    let started = Instant::now();
    let error = any.fetch(&()).await.unwrap_err();
    assert_eq!(started.elapsed(), ms(25));
    assert_eq!(error.to_string(), "`a`: a down; `b`: b down");
    assert_eq!(error.errors().len(), 2);
    assert!(std::error::Error::source(&error).is_none(), "the message has every member's error: no chain repeats one");
}

/// A failed completion source has the kind of its last member's error, here a nested
/// aggregation's deadline, although its error has no `source()` to walk.
#[tokio::test(start_paused = true)]
async fn a_failed_completion_source_has_its_members_kind() {
    let replica = || {
        Aggregator::builder()
            .source("ledger", MockFetcher::ok_after(ms(1_000), 1u8))
            .options(Deadline(ms(20)))
            .build()
            .unwrap()
    };
    let any = first_ok([("eu", replica()), ("us", replica())]).unwrap();
    let aggregator = Aggregator::builder().source("balance", any).build().unwrap();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    assert_eq!((error.source_name(), error.kind()), (Some("balance"), ErrorKind::Timeout), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_quorum_succeeds_at_the_kth_success_and_cancels_the_rest() {
    let (a, b, c) = (ok(10, 1), ok(100, 2), ok(40, 3));
    let two = quorum(2, [("a", a.clone()), ("b", b.clone()), ("c", c.clone())]).unwrap();
    let started = Instant::now();
    let outputs = two.fetch(&()).await.unwrap();
    assert_eq!(started.elapsed(), ms(40));
    assert_eq!(outputs.iter().collect::<Vec<_>>(), [("a", &1), ("c", &3)], "by name, in declaration order");
    assert!(b.was_cancelled());

    let two = quorum(2, [("a", ok(10, 1)), ("b", ok(100, 2)), ("c", ok(40, 3))]).unwrap();
    let aggregate = Aggregator::builder().source("replicas", two).build().unwrap().aggregate(&()).await.unwrap();
    let notes = &aggregate.report.source("replicas").unwrap().notes;
    assert_eq!(notes, &["`a`, `c` won; `b` cancelled".to_owned()]);
}

#[tokio::test(start_paused = true)]
async fn a_quorum_fails_as_soon_as_it_cannot_be_reached() {
    let slow = ok(1_000, 3);
    let two = quorum(2, [("a", err(10, "a down")), ("b", err(20, "b down")), ("c", slow.clone())]).unwrap();
    let started = Instant::now();
    let error = two.fetch(&()).await.unwrap_err();
    assert_eq!(started.elapsed(), ms(20), "two failures of three leave one possible success");
    assert_eq!(error.to_string(), "`a`: a down; `b`: b down");
    assert!(slow.was_cancelled());
}

#[tokio::test(start_paused = true)]
async fn settled_collects_every_outcome_without_fail_fast() {
    let (a, b) = (err(10, "a down"), ok(30, 2));
    let every = settled([("a", a.clone()), ("b", b.clone())]).unwrap();
    let started = Instant::now();
    let outputs = every.fetch(&()).await.unwrap();
    assert_eq!(started.elapsed(), ms(30));
    assert_eq!(outputs["a"].as_ref().unwrap_err().to_string(), "a down");
    assert_eq!(outputs["b"].as_ref().ok(), Some(&2));
    assert!(!a.was_cancelled() && !b.was_cancelled());
}

#[tokio::test(start_paused = true)]
async fn all_is_fail_fast_and_names_the_member() {
    let slow = ok(1_000, 1);
    let every = all([("slow", slow.clone()), ("bad", err(15, "bad down"))]).unwrap();
    let error = every.fetch(&()).await.unwrap_err();
    assert_eq!((error.source_name(), error.elapsed()), (Some("bad"), ms(15)));
    assert!(slow.was_cancelled());
    let fine = all([("x", ok(5, 1)), ("y", ok(10, 2))]).unwrap().fetch(&()).await.unwrap();
    assert_eq!(fine.iter().collect::<Vec<_>>(), [("x", &1), ("y", &2)]);
}

#[tokio::test(start_paused = true)]
async fn profile_and_transactions_or_cached_transactions() {
    let (live, cached) = (ok(200, 1), ok(5, 2));
    let transactions = first_ok([("live", live.clone()), ("cached", cached)]).unwrap();
    let aggregator = Aggregator::builder()
        .source("profile", ok(20, 7))
        .source("transactions", transactions)
        .options(Deadline(ms(1_000)))
        .build()
        .unwrap();
    let started = Instant::now();
    let aggregate = aggregator.aggregate(&()).await.unwrap();
    assert_eq!((aggregate.outputs, started.elapsed()), ((7, 2), ms(20)));
    assert!(live.was_cancelled(), "the slower alternative was cancelled at the cached answer");
    let notes = &aggregate.report.source("transactions").unwrap().notes;
    assert_eq!(notes, &["`cached` won; `live` cancelled".to_owned()], "the report says which member decided");

    // The required profile failing cancels both alternatives.
    let (live, cached) = (ok(200, 1), ok(100, 2));
    let transactions = first_ok([("live", live.clone()), ("cached", cached.clone())]).unwrap();
    let aggregator =
        Aggregator::builder().source("profile", err(20, "503")).source("transactions", transactions).build().unwrap();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    assert_eq!((error.source_name(), error.report().elapsed), (Some("profile"), ms(20)));
    assert!(live.was_cancelled() && cached.was_cancelled());
}

#[tokio::test(start_paused = true)]
async fn partial_at_the_deadline_returns_what_finished_and_says_so() {
    let aggregator = Aggregator::builder()
        .source_with("profile", ok(10, 1), Optional)
        .source_with("transactions", ok(500, 2), Optional)
        .options(Deadline(ms(100)))
        .build()
        .unwrap();
    let started = Instant::now();
    let aggregate = aggregator.aggregate(&()).await.unwrap();
    assert_eq!(started.elapsed(), ms(100));
    assert!(aggregate.is_partial());
    assert_eq!(aggregate.outputs, (Some(1), None));
    let outcome = &aggregate.report.source("transactions").unwrap().outcome;
    assert_eq!(outcome, &Outcome::FellBack { after: Box::new(Outcome::TimedOut { timeout: TimeoutKind::Global }) });

    let complete = Aggregator::builder().source_with("profile", ok(10, 1), Optional).build().unwrap();
    assert!(!complete.aggregate(&()).await.unwrap().is_partial());
}

#[tokio::test(start_paused = true)]
async fn a_panicking_member_fails_the_source_with_that_panic() {
    panics::quiet_deliberate_panics();
    let bomb = MockFetcher::<u32>::panic_after(ms(5), panics::PANIC_MESSAGE);
    let any = first_ok([("bomb", bomb), ("slow", ok(100, 1))]).unwrap();
    let aggregator = Aggregator::builder().source("transactions", any).build().unwrap();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Panicked);
    assert_eq!(error.report().elapsed, ms(5));
}

#[test]
fn bad_member_lists_are_refused() {
    let none: [(&str, MockFetcher<u32>); 0] = [];
    assert!(matches!(first_ok(none), Err(BuildError::NoMembers)));
    assert!(
        matches!(first_ok([("a", ok(1, 1)), ("a", ok(1, 2))]), Err(BuildError::DuplicateSource(name)) if name == "a")
    );
    assert!(matches!(quorum(0, [("a", ok(1, 1))]), Err(BuildError::Quorum { k: 0, members: 1 })));
    assert!(matches!(quorum(3, [("a", ok(1, 1)), ("b", ok(1, 1))]), Err(BuildError::Quorum { k: 3, members: 2 })));
    assert!(matches!(settled([("", ok(1, 1))]), Err(BuildError::EmptyName)));
}
