//! The in-flight view (issue 21), on tokio's paused clock: a call waiting on a slow source
//! shows it running on its attempt with its elapsed time and the call's remaining budget, a
//! dependent shows the input it waits on, a source behind the limit is queued, a call leaves
//! when it ends (or its caller goes away), a full table says it is truncated, and failed calls
//! are kept, redacted.

use std::time::Duration;

use muster::in_flight::{InFlight, Snapshot, SourceState};
use muster::{Aggregator, Deadline, RequestContext, Retry, builder::Input, fetcher_fn, report::Trigger};
use muster_adapters::mock::{MockFetcher, Step};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn state(snapshot: &Snapshot, call: usize, source: &str) -> SourceState {
    let call = snapshot.calls.get(call).unwrap_or_else(|| panic!("no call {call} in {snapshot:?}"));
    let source = call.sources.iter().find(|s| &*s.name == source).unwrap_or_else(|| panic!("no source {source}"));
    source.state.clone()
}

#[tokio::test(start_paused = true)]
async fn a_call_waiting_on_a_slow_source_shows_it_running_and_a_dependent_waiting() {
    let in_flight = InFlight::new(8);
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok_after(ms(30), 1_u64))
        .source("transactions", MockFetcher::ok_after(ms(2_000), 2_u64))
        .then("offers", Input::<1>, |_: &u64, transactions: &u64| *transactions, MockFetcher::ok(3_u64))
        .options(Deadline(ms(5_000)))
        .in_flight(&in_flight)
        .build()
        .unwrap();
    assert!(in_flight.snapshot().calls.is_empty());
    assert!(aggregator.in_flight().is_some(), "the aggregator knows its registry");
    let plain: Aggregator<u64, (u64,)> = Aggregator::builder().source("x", MockFetcher::ok(1_u64)).build().unwrap();
    assert!(plain.in_flight().is_none());
    let call = {
        let aggregator = aggregator.clone();
        let context = RequestContext::new().field("user_id", 42).header("authorization", "Bearer s3cr3t");
        tokio::spawn(async move { aggregator.aggregate_with(&7, context).await.map(|a| a.outputs) })
    };
    tokio::time::sleep(ms(500)).await;

    let snapshot = in_flight.snapshot();
    assert_eq!(snapshot.calls.len(), 1, "{snapshot}");
    assert!(!snapshot.is_truncated());
    let running = &snapshot.calls[0];
    assert_eq!(running.elapsed, ms(500));
    assert_eq!(running.remaining, Some(ms(4_500)));
    assert_eq!(running.fields.iter().map(|(n, v)| (&**n, v.as_str())).collect::<Vec<_>>(), [("user_id", "42")]);
    assert_eq!(state(&snapshot, 0, "profile"), SourceState::Done { outcome: "ok", kind: None });
    assert_eq!(state(&snapshot, 0, "transactions"), SourceState::Running { attempt: 1 });
    assert_eq!(state(&snapshot, 0, "offers"), SourceState::Waiting { input: "transactions".into() });
    let transactions = &running.sources[1];
    assert_eq!((transactions.start, transactions.elapsed), (Some(Duration::ZERO), ms(500)));
    assert_eq!(running.sources[0].elapsed, ms(30), "an ended source keeps its own duration");
    let text = snapshot.to_string();
    assert!(text.contains("running (attempt 1)") && text.contains("waiting on `transactions`"), "{text}");
    assert!(!text.contains("s3cr3t") && !format!("{snapshot:?}").contains("s3cr3t"), "a header value leaked: {text}");

    assert_eq!(call.await.unwrap().unwrap(), (1, 2, 3));
    let snapshot = in_flight.snapshot();
    assert!(snapshot.calls.is_empty() && snapshot.failed.is_empty(), "{snapshot}");
}

#[tokio::test(start_paused = true)]
async fn a_retried_source_shows_its_attempt() {
    let in_flight = InFlight::new(8);
    let flaky = MockFetcher::script([Step::err("503").after(ms(100)), Step::ok(1_u64).after(ms(1_000))]);
    let aggregator =
        Aggregator::builder().source_with("flaky", flaky, Retry::attempts(3)).in_flight(&in_flight).build().unwrap();
    let call = tokio::spawn(async move { aggregator.aggregate(&7).await.map(|a| a.outputs) });
    tokio::time::sleep(ms(300)).await;
    let snapshot = in_flight.snapshot();
    assert_eq!(state(&snapshot, 0, "flaky"), SourceState::Running { attempt: 2 }, "{snapshot}");
    assert_eq!(snapshot.calls[0].remaining, None, "no deadline");
    assert_eq!(call.await.unwrap().unwrap(), (1,));
}

#[tokio::test(start_paused = true)]
async fn a_call_whose_caller_went_away_leaves_the_table() {
    let in_flight = InFlight::new(8);
    let aggregator =
        Aggregator::builder().source("slow", MockFetcher::<u64>::hang()).in_flight(&in_flight).build().unwrap();
    let call = tokio::spawn(async move { aggregator.aggregate(&7).await.map(|_| ()) });
    tokio::time::sleep(ms(100)).await;
    assert_eq!(in_flight.snapshot().calls.len(), 1);
    call.abort();
    assert!(call.await.unwrap_err().is_cancelled());
    let snapshot = in_flight.snapshot();
    assert!(snapshot.calls.is_empty() && snapshot.failed.is_empty(), "{snapshot}");
}

#[tokio::test(start_paused = true)]
async fn a_full_table_says_the_snapshot_is_truncated() {
    let in_flight = InFlight::new(2);
    let aggregator = Aggregator::builder()
        .source(
            "slow",
            fetcher_fn(|_: &u64| async {
                tokio::time::sleep(ms(1_000)).await;
                Ok::<_, std::io::Error>(())
            }),
        )
        .in_flight(&in_flight)
        .build()
        .unwrap();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let aggregator = aggregator.clone();
            tokio::spawn(async move { aggregator.aggregate(&7).await.map(|_| ()) })
        })
        .collect();
    tokio::time::sleep(ms(10)).await;
    let snapshot = in_flight.snapshot();
    assert_eq!((snapshot.calls.len(), snapshot.untracked), (2, 3), "{snapshot}");
    assert!(snapshot.is_truncated());
    assert!(snapshot.to_string().contains("truncated: 3 more untracked"), "{snapshot}");
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let snapshot = in_flight.snapshot();
    assert!(snapshot.calls.is_empty() && !snapshot.is_truncated(), "{snapshot}");
}

#[tokio::test(start_paused = true)]
async fn failed_calls_are_kept_redacted_the_last_n() {
    let in_flight = InFlight::new(2);
    let failing = |n: u64| {
        Aggregator::builder()
            .source("slow", MockFetcher::ok_after(ms(1_000), 1_u64))
            .source(
                "bad",
                MockFetcher::<u64>::err_after(ms(50 * n), "connect to http://10.0.0.7/secret?token=x failed"),
            )
            .in_flight(&in_flight)
            .build()
            .unwrap()
    };
    for n in 1..=3 {
        failing(n).aggregate_with(&7, RequestContext::new().field("request_id", n)).await.unwrap_err();
    }
    let snapshot = in_flight.snapshot();
    assert!(snapshot.calls.is_empty());
    let ids: Vec<_> = snapshot.failed.iter().map(|call| call.fields[0].1.as_str()).collect();
    assert_eq!(ids, ["3", "2"], "the last two, the most recent first");
    let last = &snapshot.failed[0];
    assert_eq!((last.elapsed, last.stopped_by.clone()), (ms(150), Some(Trigger::Source("bad".into()))));
    assert!(matches!(&last.sources[1].state, SourceState::Done { outcome: "failed", kind: Some(_) }));
    assert_eq!(last.sources[0].state, SourceState::Cancelled { cause: "cancelled by `bad`".into() });
    let text = format!("{snapshot} {snapshot:?}");
    assert!(!text.contains("10.0.0.7") && !text.contains("token"), "a backend URL leaked: {text}");
}

#[tokio::test(start_paused = true)]
async fn a_source_behind_the_limit_is_queued() {
    let in_flight = InFlight::new(8);
    let aggregator = Aggregator::builder()
        .source("transactions", MockFetcher::ok_after(ms(1_000), 2_u64))
        .source("profile", MockFetcher::ok_after(ms(50), 1_u64))
        .options((Deadline(ms(5_000)), muster::options::Limit(1)))
        .in_flight(&in_flight)
        .build()
        .unwrap();
    let call = tokio::spawn(async move { aggregator.aggregate(&7).await.map(|a| a.outputs) });
    tokio::time::sleep(ms(500)).await;

    let snapshot = in_flight.snapshot();
    assert_eq!(state(&snapshot, 0, "transactions"), SourceState::Running { attempt: 1 });
    assert_eq!(state(&snapshot, 0, "profile"), SourceState::Queued, "{snapshot}");
    assert_eq!((snapshot.calls[0].sources[1].start, snapshot.calls[0].sources[1].elapsed), (None, Duration::ZERO));
    assert!(snapshot.to_string().contains("queued"), "{snapshot}");

    assert_eq!(call.await.unwrap().unwrap(), (2, 1));
}
