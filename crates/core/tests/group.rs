//! One test per point of DESIGN "Core semantics", on tokio's paused clock where time matters.

mod support;

use std::time::Duration;

use muster_core::{CancelToken, Cause, ErrorKind, Group, SpawnError};
use muster_options::{Deadline, Field, Limit};
use support::{Outcome, Probe, SourceError, ms};
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn a_duplicate_name_is_refused_and_the_first_task_keeps_running() {
    let probe = Probe::new();
    let mut group = Group::new();
    group.spawn("profile", probe.source("profile", ms(5), Outcome::Ok, 1)).unwrap();
    let refused = group.spawn("profile", probe.source("impostor", ms(1), Outcome::Ok, 2));
    assert!(matches!(refused, Err(SpawnError::DuplicateName(name)) if name == "profile"));

    let outputs = group.wait().await.unwrap();
    assert_eq!(outputs["profile"], 1);
    assert_eq!(outputs.len(), 1);
    assert_eq!(probe.state().started, ["profile"], "the refused task must never start");
}

#[tokio::test(start_paused = true)]
async fn outputs_come_back_by_name_and_in_spawn_order() {
    let probe = Probe::new();
    let started = Instant::now();
    let mut group = Group::new();
    for (name, delay, value) in [("c", 30, 3), ("a", 10, 1), ("b", 20, 2)] {
        group.spawn(name, probe.source(name, ms(delay), Outcome::Ok, value)).unwrap();
    }
    let outputs = group.wait().await.unwrap();
    assert_eq!(started.elapsed(), ms(30), "sources must run concurrently");
    assert_eq!(outputs.get("a"), Some(&1));
    assert_eq!(outputs.iter().collect::<Vec<_>>(), [("c", &3), ("a", &1), ("b", &2)]);
    assert_eq!(probe.state().finished, ["a", "b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn a_failure_at_30ms_cancels_a_sibling_that_would_take_10s() {
    let mut group = Group::new();
    let probe = Probe::with_token(group.token());
    group.spawn("profile", probe.source("profile", ms(30), Outcome::Err, 0)).unwrap();
    group.spawn("transactions", probe.source("transactions", ms(10_000), Outcome::Ok, 0)).unwrap();

    let started = Instant::now();
    let error = group.wait().await.unwrap_err();
    // Checked before anything else runs: the sibling was dropped before `wait` returned.
    let state = probe.state();
    assert_eq!(state.cancelled, ["transactions"]);
    assert_eq!(started.elapsed(), ms(30), "wait must return at the failure, not at 10 s");
    assert_eq!(error.kind(), ErrorKind::Failed);
    assert_eq!(error.source_name(), Some("profile"));
    assert_eq!(error.cancelled(), ["transactions"]);
    assert_eq!(error.elapsed(), ms(30));
    let source = std::error::Error::source(&error).and_then(|e| e.downcast_ref::<SourceError>());
    assert_eq!(source, Some(&SourceError("profile".into())));
    assert_eq!(
        state.causes,
        [Some("cancelled by `profile`: profile failed on purpose".to_owned())],
        "the cancelled sibling must see the cause while it is dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_wait_future_drops_every_task() {
    let mut group = Group::new();
    let token = group.token();
    let probe = Probe::with_token(token.clone());
    for name in ["a", "b", "c"] {
        group.spawn(name, probe.source(name, ms(10_000), Outcome::Ok, 0)).unwrap();
    }
    let outcome = tokio::time::timeout(ms(50), group.wait()).await;
    assert!(outcome.is_err(), "the group should still have been running");

    let mut state = probe.state();
    // Tasks polled in the same instant start in no particular order.
    state.started.sort();
    state.cancelled.sort();
    assert_eq!(state.started, ["a", "b", "c"]);
    assert_eq!(state.cancelled, ["a", "b", "c"]);
    assert_eq!(state.running, 0);
    assert!(state.causes.iter().all(|cause| cause.as_deref() == Some("the group was dropped")));
    assert!(matches!(token.cause(), Some(Cause::Dropped)));
}

#[tokio::test(start_paused = true)]
async fn a_deadline_of_1s_fails_a_2s_source_at_1s_naming_it() {
    let probe = Probe::new();
    let mut group = Group::with_options((Deadline(ms(1_000)), Field::new("user_id", 42))).unwrap();
    group.spawn("profile", probe.source("profile", ms(10), Outcome::Ok, 1)).unwrap();
    group.spawn("transactions", probe.source("transactions", ms(2_000), Outcome::Ok, 2)).unwrap();

    let started = Instant::now();
    let error = group.wait().await.unwrap_err();
    assert_eq!(started.elapsed(), ms(1_000));
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert_eq!(error.pending(), ["transactions"]);
    assert_eq!(error.cancelled(), ["transactions"]);
    assert_eq!(error.source_name(), None);
    assert_eq!(error.to_string(), "deadline of 1s elapsed; pending: `transactions` (user_id=42)");
    assert_eq!(probe.state().cancelled, ["transactions"]);
}

#[tokio::test(start_paused = true)]
async fn a_task_finishing_exactly_at_the_deadline_is_in_time() {
    let probe = Probe::new();
    let mut group = Group::with_options(Deadline(ms(100))).unwrap();
    group.spawn("edge", probe.source("edge", ms(100), Outcome::Ok, 7)).unwrap();
    assert_eq!(group.wait().await.unwrap()["edge"], 7);
}

#[tokio::test(start_paused = true)]
async fn the_deadline_counts_from_the_groups_creation() {
    let probe = Probe::new();
    let mut group = Group::with_options(Deadline(ms(100))).unwrap();
    tokio::time::sleep(ms(60)).await;
    group.spawn("late", probe.source("late", ms(50), Outcome::Ok, 0)).unwrap();
    let error = group.wait().await.unwrap_err();
    assert!(error.is_timeout());
    assert_eq!(error.elapsed(), ms(100));
}

#[tokio::test(start_paused = true)]
async fn the_token_tells_completed_after_success() {
    let mut group = Group::new();
    let token = group.token();
    group.spawn("a", async { Ok::<_, SourceError>(1) }).unwrap();
    group.wait().await.unwrap();
    assert!(token.is_cancelled());
    assert!(matches!(token.cause(), Some(cause @ Cause::Completed) if !cause.is_failure()));
}

#[tokio::test(start_paused = true)]
async fn a_parent_cancellation_stops_the_group_and_closes_it() {
    let request = CancelToken::new();
    let mut group = Group::new().with_parent(&request);
    let probe = Probe::with_token(group.token());
    group.spawn("slow", probe.source("slow", ms(10_000), Outcome::Ok, 0)).unwrap();
    let canceller = request.clone();
    tokio::spawn(async move {
        tokio::time::sleep(ms(20)).await;
        canceller.cancel();
    });

    let started = Instant::now();
    let error = group.wait().await.unwrap_err();
    assert_eq!(started.elapsed(), ms(20));
    assert_eq!(error.kind(), ErrorKind::Cancelled);
    assert!(matches!(error.cause(), Cause::Cancelled));
    assert_eq!(error.cancelled(), ["slow"]);
    assert_eq!(probe.state().causes, [Some("cancelled by the caller".to_owned())]);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_group_admits_no_new_task() {
    let probe = Probe::new();
    let mut group = Group::new();
    group.token().cancel_with(Cause::Dropped);
    let refused = group.spawn("late", probe.source("late", ms(1), Outcome::Ok, 0));
    assert!(matches!(refused, Err(SpawnError::Closed { ref name, cause: Cause::Dropped }) if name == "late"));
    assert!(group.is_empty());
    assert!(group.wait().await.unwrap_err().is_cancelled());
    assert!(probe.state().started.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_panic_becomes_the_tasks_error_and_cancels_its_siblings() {
    support::quiet_deliberate_panics();
    let probe = Probe::new();
    let mut group = Group::new();
    group.spawn("bomb", probe.source("bomb", ms(5), Outcome::Panic, 0)).unwrap();
    group.spawn("slow", probe.source("slow", ms(10_000), Outcome::Ok, 0)).unwrap();

    let error = group.wait().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Panicked);
    assert_eq!(error.source_name(), Some("bomb"));
    assert_eq!(error.elapsed(), ms(5));
    assert_eq!(error.to_string(), "source `bomb` panicked after 5ms: source panicked on purpose");
    assert_eq!(probe.state().cancelled, ["slow"]);
}

#[tokio::test(start_paused = true)]
async fn with_limit_k_at_most_k_tasks_run_at_once() {
    let probe = Probe::new();
    let mut group = Group::with_options(Limit(3)).unwrap();
    for i in 0..10u32 {
        let name = format!("s{i}");
        group.spawn(name.clone(), probe.source(name, ms(10 + u64::from(i)), Outcome::Ok, i)).unwrap();
    }
    let started = Instant::now();
    let outputs = group.wait().await.unwrap();
    assert_eq!(outputs.len(), 10);
    assert_eq!(probe.state().high_water, 3);
    assert!(started.elapsed() > ms(30), "ten 10 ms tasks three at a time take several rounds");
}

#[tokio::test(start_paused = true)]
async fn queued_tasks_never_start_after_a_failure() {
    let probe = Probe::new();
    let mut group = Group::with_options(Limit(2)).unwrap();
    group.spawn("ok", probe.source("ok", ms(10), Outcome::Ok, 0)).unwrap();
    group.spawn("bad", probe.source("bad", ms(10), Outcome::Err, 0)).unwrap();
    group.spawn("queued", probe.source("queued", ms(0), Outcome::Ok, 0)).unwrap();

    let error = group.wait().await.unwrap_err();
    assert_eq!(error.source_name(), Some("bad"));
    assert_eq!(error.cancelled(), ["queued"], "a queued task counts as cancelled");
    assert!(!probe.state().started.contains(&"queued".to_owned()), "the queued task must never start");
}

#[tokio::test(start_paused = true)]
async fn failures_at_the_same_instant_go_to_the_earlier_spawned_task() {
    let probe = Probe::new();
    let mut group = Group::new();
    // Spawned in this order, failing together: `first` is the root cause whatever the
    // runtime's wake order.
    for name in ["first", "second", "third"] {
        group.spawn(name, probe.source(name, ms(25), Outcome::Err, 0)).unwrap();
    }
    group.spawn("slow", probe.source("slow", ms(100), Outcome::Ok, 0)).unwrap();
    let error = group.wait().await.unwrap_err();
    assert_eq!(error.source_name(), Some("first"));
    assert_eq!(error.also_failed(), ["second", "third"]);
    assert_eq!(error.cancelled(), ["slow"]);
}

#[tokio::test(start_paused = true)]
async fn tasks_may_borrow_the_request() {
    let request = String::from("user-42");
    let mut group = Group::new();
    group.spawn("echo", async { Ok::<_, SourceError>(request.as_str()) }).unwrap();
    assert_eq!(group.wait().await.unwrap()["echo"], "user-42");
}

/// Counts the runtime's live tasks before and after groups end in every kind of outcome,
/// including sources that spawn helper tasks of their own and abort them on drop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alive_task_count_returns_to_baseline_after_every_outcome() {
    support::quiet_deliberate_panics();
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    // `Hang` under the 200 ms deadline times out; `(Hang, true)` drops the `wait` future first.
    let outcomes = [
        (Outcome::Ok, false),
        (Outcome::Err, false),
        (Outcome::Panic, false),
        (Outcome::Hang, false),
        (Outcome::Hang, true),
    ];
    for (outcome, drop_wait) in outcomes {
        let probe = Probe::new();
        let mut group = Group::with_options(Deadline(ms(200))).unwrap();
        for i in 0..4 {
            let source = probe.source(format!("s{i}"), ms(5), outcome, i);
            // Each source owns a helper task that is aborted when the source is dropped.
            group
                .spawn(format!("s{i}"), async move {
                    let helper = AbortOnDrop(tokio::spawn(std::future::pending::<()>()));
                    let result = source.await;
                    drop(helper);
                    result
                })
                .unwrap();
        }
        if drop_wait {
            assert!(tokio::time::timeout(ms(20), group.wait()).await.is_err(), "the group should still be running");
        } else {
            let _ = group.wait().await;
        }
        // An aborted task is released by the runtime shortly after `abort`; wait for that,
        // bounded, instead of guessing a sleep.
        let settled = tokio::time::timeout(Duration::from_secs(5), async {
            while metrics.num_alive_tasks() != baseline {
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(settled.is_ok(), "{outcome:?}: {} tasks alive, baseline {baseline}", metrics.num_alive_tasks());
        assert_eq!(probe.state().running, 0, "{outcome:?}: a source is still running");
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn fetchers_of_different_types_run_side_by_side_as_trait_objects() {
    use muster_core::{BoxError, Fetcher, fetcher_fn};

    struct Constant(&'static str);

    #[async_trait::async_trait]
    impl Fetcher<u64> for Constant {
        type Output = String;
        type Error = BoxError;

        async fn fetch(&self, id: &u64) -> Result<String, BoxError> {
            Ok(format!("{} {id}", self.0))
        }
    }

    let doubled = fetcher_fn(|id: &u64| {
        let id = *id;
        async move { Ok::<_, BoxError>(format!("{}", id * 2)) }
    });
    type Source = std::sync::Arc<dyn Fetcher<u64, Output = String, Error = BoxError>>;
    let sources: Vec<(&str, Source)> =
        vec![("constant", std::sync::Arc::new(Constant("user"))), ("doubled", std::sync::Arc::new(doubled))];
    let request = 21;
    let mut group = Group::new();
    for (name, source) in &sources {
        group.spawn(*name, source.fetch(&request)).unwrap();
    }
    let outputs = group.wait().await.unwrap();
    assert_eq!((&outputs["constant"][..], &outputs["doubled"][..]), ("user 21", "42"));
}
