//! Feature `metrics`: what an aggregation records on the `metrics` facade, read back from a
//! small in-test recorder (set as the thread's local recorder; the aggregation runs on the
//! test's own thread, on tokio's paused clock).
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use metrics::Unit;
use muster::metrics::{
    AGGREGATION_DURATION, AGGREGATIONS, SOURCE_ATTEMPTS, SOURCE_CALLS, SOURCE_CANCELLATIONS, SOURCE_DURATION,
    SOURCE_HEDGES, SOURCE_OUTCOMES, SOURCE_QUEUED,
};
use muster::{
    Aggregator, Deadline, Fallback, RequestContext, Retry, Timeout, cancel::CancelToken, options::Limit, policy::Hedge,
};
use muster_adapters::mock::{MockFetcher, Step};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[path = "support/recorder.rs"]
mod recorder;

use recorder::TestRecorder;

#[tokio::test(start_paused = true)]
async fn a_successful_aggregation_records_calls_attempts_outcomes_and_latency() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let flaky = MockFetcher::script([Step::err("503").after(ms(10)), Step::ok(2u32).after(ms(20))]);
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok_after(ms(40), 1u32))
        .source_with("transactions", flaky, Retry::attempts(3).backoff(ms(5), ms(5)).jitter(0.0))
        .source_with("offers", MockFetcher::<u32>::err_after(ms(15), "down"), Fallback(0))
        .options(Deadline(ms(1_000)))
        .build()
        .unwrap();
    aggregator.aggregate(&()).await.unwrap();
    aggregator.aggregate(&()).await.unwrap(); // the script's last step repeats: no retry now.

    assert_eq!(recorder.counters_named(AGGREGATIONS), BTreeMap::from([("outcome=ok".into(), 2)]));
    assert_eq!(recorder.histogram(&format!("{AGGREGATION_DURATION}{{outcome=ok}}")), [0.04, 0.04]);

    // Two calls; three attempts: the first call's retry is the one beyond the calls.
    assert_eq!(recorder.counter(&format!("{SOURCE_CALLS}{{source=transactions}}")), 2);
    assert_eq!(recorder.counter(&format!("{SOURCE_ATTEMPTS}{{source=transactions}}")), 3);
    assert_eq!(recorder.counter(&format!("{SOURCE_CALLS}{{source=profile}}")), 2);
    assert_eq!(recorder.counter(&format!("{SOURCE_ATTEMPTS}{{source=profile}}")), 2);

    assert_eq!(
        recorder.counters_named(SOURCE_OUTCOMES),
        BTreeMap::from([
            ("kind=failed,outcome=fallback,source=offers".into(), 2),
            ("kind=ok,outcome=ok,source=profile".into(), 2),
            ("kind=ok,outcome=ok,source=transactions".into(), 2),
        ])
    );
    assert!(recorder.counters_named(SOURCE_CANCELLATIONS).is_empty());
    assert_eq!(recorder.histogram(&format!("{SOURCE_DURATION}{{outcome=ok,source=profile}}")), [0.04, 0.04]);
    // 10ms to fail, 5ms of backoff, 20ms to succeed; then 20ms at once.
    assert_eq!(recorder.histogram(&format!("{SOURCE_DURATION}{{outcome=ok,source=transactions}}")), [0.035, 0.02]);
    assert_eq!(recorder.histogram(&format!("{SOURCE_DURATION}{{outcome=fallback,source=offers}}")), [0.015, 0.015]);
    assert_eq!(recorder.histogram(&format!("{SOURCE_QUEUED}{{source=profile}}")), [0.0, 0.0]);
}

#[tokio::test(start_paused = true)]
async fn a_failure_records_the_failed_source_and_the_cancelled_siblings() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok_after(ms(500), 1u32))
        .source("transactions", MockFetcher::<u32>::err_after(ms(30), "503"))
        .options(Deadline(ms(1_000)))
        .build()
        .unwrap();
    aggregator.aggregate_with(&(), RequestContext::new().field("user_id", 42)).await.unwrap_err();

    assert_eq!(recorder.counters_named(AGGREGATIONS), BTreeMap::from([("outcome=failed".into(), 1)]));
    assert_eq!(
        recorder.counters_named(SOURCE_OUTCOMES),
        BTreeMap::from([
            ("kind=cancelled,outcome=cancelled,source=profile".into(), 1),
            ("kind=failed,outcome=failed,source=transactions".into(), 1),
        ])
    );
    assert_eq!(
        recorder.counters_named(SOURCE_CANCELLATIONS),
        BTreeMap::from([("cause=sibling,source=profile".into(), 1)])
    );
    assert_eq!(recorder.histogram(&format!("{SOURCE_DURATION}{{outcome=cancelled,source=profile}}")), [0.03]);
    assert_eq!(recorder.histogram(&format!("{AGGREGATION_DURATION}{{outcome=failed}}")), [0.03]);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_and_a_caller_cancellation_are_causes() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok_after(ms(10), 1u32))
        .source("transactions", MockFetcher::<u32>::hang())
        .options(Deadline(ms(100)))
        .build()
        .unwrap();
    aggregator.aggregate(&()).await.unwrap_err();
    let token = CancelToken::new();
    token.cancel();
    aggregator.aggregate_with(&(), RequestContext::new().cancel_on(&token)).await.unwrap_err();

    assert_eq!(
        recorder.counters_named(AGGREGATIONS),
        BTreeMap::from([("outcome=cancelled".into(), 1), ("outcome=timeout".into(), 1)])
    );
    assert_eq!(recorder.counter(&format!("{SOURCE_OUTCOMES}{{kind=timeout,outcome=timeout,source=transactions}}")), 1);
    assert_eq!(recorder.counter(&format!("{SOURCE_CANCELLATIONS}{{cause=deadline,source=transactions}}")), 1);
    let by_caller = recorder.counters_named(SOURCE_CANCELLATIONS);
    assert_eq!(by_caller.get("cause=caller,source=profile"), Some(&1), "{by_caller:#?}");
    assert_eq!(recorder.histogram(&format!("{AGGREGATION_DURATION}{{outcome=timeout}}")), [0.1]);
}

#[tokio::test(start_paused = true)]
async fn a_source_timeout_and_a_hedge_are_recorded() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let hedged = MockFetcher::script([Step::ok(1u32).after(ms(300)), Step::ok(2u32).after(ms(10))]);
    let aggregator = Aggregator::builder()
        .source_with("profile", hedged, Hedge(ms(50)))
        .source_with("transactions", MockFetcher::ok_after(ms(500), 1u32), Timeout(ms(200)))
        .options(Deadline(ms(1_000)))
        .build()
        .unwrap();
    aggregator.aggregate(&()).await.unwrap_err();

    assert_eq!(recorder.counters_named(AGGREGATIONS), BTreeMap::from([("outcome=timeout".into(), 1)]));
    assert_eq!(recorder.counter(&format!("{SOURCE_OUTCOMES}{{kind=timeout,outcome=timeout,source=transactions}}")), 1);
    assert_eq!(recorder.counter(&format!("{SOURCE_OUTCOMES}{{kind=ok,outcome=ok,source=profile}}")), 1);
    assert_eq!(recorder.counter(&format!("{SOURCE_CALLS}{{source=profile}}")), 1);
    assert_eq!(recorder.counter(&format!("{SOURCE_ATTEMPTS}{{source=profile}}")), 2, "the hedge is an attempt");
    assert_eq!(recorder.counter(&format!("{SOURCE_HEDGES}{{source=profile}}")), 1, "and counted apart");
}

#[tokio::test(start_paused = true)]
async fn time_queued_behind_the_limit_is_recorded() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let aggregator = Aggregator::builder()
        .source("a", MockFetcher::ok_after(ms(40), 1u32))
        .source("b", MockFetcher::ok_after(ms(10), 2u32))
        .options(Limit(1))
        .build()
        .unwrap();
    aggregator.aggregate(&()).await.unwrap();

    assert_eq!(recorder.histogram(&format!("{SOURCE_QUEUED}{{source=a}}")), [0.0]);
    assert_eq!(recorder.histogram(&format!("{SOURCE_QUEUED}{{source=b}}")), [0.04]);
}

#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn the_failed_sources_kind_is_the_http_fetchers() {
    use muster::http::HttpError;

    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let too_large = muster::fetcher_fn(|_: &()| async { Err::<u32, _>(HttpError::BodyTooLarge { limit: 1 << 20 }) });
    let aggregator = Aggregator::builder().source_with("transactions", too_large, Timeout(ms(100))).build().unwrap();
    aggregator.aggregate(&()).await.unwrap_err();

    assert_eq!(
        recorder.counters_named(SOURCE_OUTCOMES),
        BTreeMap::from([("kind=body_too_large,outcome=failed,source=transactions".into(), 1)])
    );
}

#[test]
fn describe_gives_every_metric_a_unit() {
    let recorder = TestRecorder::default();
    metrics::with_local_recorder(&recorder, muster::metrics::describe);
    let described = recorder.described.lock().unwrap().clone();
    let expected = [
        (AGGREGATIONS, Unit::Count),
        (AGGREGATION_DURATION, Unit::Seconds),
        (SOURCE_CALLS, Unit::Count),
        (SOURCE_ATTEMPTS, Unit::Count),
        (SOURCE_HEDGES, Unit::Count),
        (SOURCE_OUTCOMES, Unit::Count),
        (SOURCE_DURATION, Unit::Seconds),
        (SOURCE_QUEUED, Unit::Seconds),
        (SOURCE_CANCELLATIONS, Unit::Count),
        (muster::metrics::BREAKER_STATE, Unit::Count),
        (muster::metrics::BREAKER_TRANSITIONS, Unit::Count),
        (muster::metrics::BREAKER_REJECTIONS, Unit::Count),
        (muster::metrics::SOURCE_SUPPRESSED, Unit::Count),
        (muster::metrics::CACHE_REDIS_FAILURES, Unit::Count),
    ];
    assert_eq!(described, expected.map(|(name, unit)| (name.to_owned(), Some(unit))));
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_goes_away_is_a_cancelled_aggregation() {
    let recorder = TestRecorder::default();
    let _local = metrics::set_default_local_recorder(&recorder);
    let aggregator = Aggregator::builder().source("profile", MockFetcher::ok_after(ms(1_000), 1u32)).build().unwrap();
    assert!(tokio::time::timeout(ms(30), aggregator.aggregate(&())).await.is_err());
    assert_eq!(recorder.counters_named(AGGREGATIONS), BTreeMap::from([("outcome=cancelled".into(), 1)]));
    assert_eq!(recorder.histogram(&format!("{AGGREGATION_DURATION}{{outcome=cancelled}}")), [0.03]);
}
