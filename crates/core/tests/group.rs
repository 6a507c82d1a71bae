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
    assert_eq!(error.to_string(), "deadline of 1000ms elapsed; pending: `transactions` (user_id=42)");
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

// ---------------------------------------------------------------------------------------------
// Round 2 (issue 10): causes that survive nesting, contained drop panics, the handle,
// `try_spawn`, cancelling with a reason, the report and `cancellation`.

use std::sync::{Arc, Mutex};

use muster_core::{GroupHandle, TaskOutcome, cancellation};

/// Runs `on_drop` when dropped: a drop guard.
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)();
    }
}

/// A shared list of what guards saw.
type Seen = Arc<Mutex<Vec<String>>>;

fn seen() -> Seen {
    Arc::default()
}

fn read(seen: &Seen) -> Vec<String> {
    seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

#[tokio::test(start_paused = true)]
async fn a_grandchilds_drop_guard_reads_the_outer_failure_not_that_its_group_was_dropped() {
    let guard_saw = seen();
    let mut outer = Group::new();
    outer.spawn("profile", Probe::new().source("profile", ms(30), Outcome::Err, 0)).unwrap();
    let saw = Arc::clone(&guard_saw);
    outer
        .spawn("accounts", async move {
            let parent = cancellation().expect("a task of a group has a token");
            let mut inner = Group::new().with_parent(&parent);
            inner
                .spawn("ledger", async move {
                    // Taken while polled, so the inner group's token exists when its group is
                    // dropped (and would be cancelled with `Dropped` if causes were overwritten).
                    let token = cancellation().expect("a task of a group has a token");
                    let _guard = OnDrop(move || {
                        let cause = token.cause().map(|cause| format!("{}|{:?}", cause, cause.source_name()));
                        saw.lock().unwrap().push(cause.unwrap_or_default());
                    });
                    std::future::pending::<Result<u32, SourceError>>().await
                })
                .unwrap();
            inner.wait().await.map(|outputs| outputs["ledger"])
        })
        .unwrap();

    let error = outer.wait().await.unwrap_err();
    assert_eq!(error.source_name(), Some("profile"));
    assert_eq!(error.cancelled(), ["accounts"]);
    assert_eq!(read(&guard_saw), ["cancelled by `profile`: profile failed on purpose|Some(\"profile\")"]);
}

#[tokio::test(start_paused = true)]
async fn a_child_token_cancelled_through_its_parent_keeps_the_parents_cause() {
    let parent = CancelToken::new();
    let child = parent.child();
    let grandchild = child.child();
    parent.cancel_with(Cause::Deadline { after: ms(5), pending: Arc::from(vec!["a".into()]) });
    child.cancel_with(Cause::Dropped);
    grandchild.cancel_with(Cause::Completed);
    for token in [&child, &grandchild] {
        assert!(matches!(token.cause(), Some(Cause::Deadline { .. })), "{token:?}");
    }
    // And a cause set on a token first is never replaced by a later one.
    let token = CancelToken::new();
    token.cancel_because("first");
    token.cancel_with(Cause::Dropped);
    assert_eq!(token.cause().map(ToString::to_string).as_deref(), Some("cancelled by the caller: first"));
}

#[tokio::test(start_paused = true)]
async fn a_nested_groups_failure_is_reachable_through_the_cause_chain() {
    let mut outer = Group::new();
    outer.spawn("slow", Probe::new().source("slow", ms(10_000), Outcome::Ok, 0)).unwrap();
    outer
        .spawn("accounts", async {
            let mut inner = Group::with_options(Deadline(ms(50))).unwrap();
            inner.spawn("ledger", Probe::new().source("ledger", ms(10), Outcome::Err, 0)).unwrap();
            inner.spawn("cards", Probe::new().source("cards", ms(1_000), Outcome::Ok, 0)).unwrap();
            inner.wait().await.map(|outputs| outputs["ledger"])
        })
        .unwrap();
    let error = outer.wait().await.unwrap_err();
    let chain: Vec<Option<&str>> = error.cause().chain().map(Cause::source_name).collect();
    assert_eq!(chain, [Some("accounts"), Some("ledger")]);
    let inner = error.cause().nested().expect("the inner group's cause");
    assert_eq!(inner.to_string(), "cancelled by `ledger`: ledger failed on purpose");
    assert!(inner.nested().is_none());
}

/// A task that fails at `after`, and a sibling whose drop guard panics when it is cancelled.
fn spawn_failure_and_panicking_guard(group: &mut Group<'_, u32>, after: u64) {
    group.spawn("bad", Probe::new().source("bad", ms(after), Outcome::Err, 0)).expect("a new name");
    group
        .spawn("bomb", async {
            let _guard = OnDrop(|| panic!("{}", support::PANIC_MESSAGE));
            std::future::pending::<Result<u32, SourceError>>().await
        })
        .expect("a new name");
}

#[tokio::test(start_paused = true)]
async fn a_panic_while_dropping_a_cancelled_task_is_contained_and_recorded() {
    support::quiet_deliberate_panics();
    let mut group = Group::new();
    spawn_failure_and_panicking_guard(&mut group, 10);
    group.spawn("slow", Probe::new().source("slow", ms(10_000), Outcome::Ok, 0)).unwrap();
    let (result, report) = group.wait_with_report().await;
    let error = result.unwrap_err();
    assert_eq!(error.source_name(), Some("bad"), "the root failure stands");
    assert_eq!(error.cancelled(), ["bomb", "slow"]);
    assert!(
        matches!(error.secondary(), [Cause::Panicked { name, message }] if name == "bomb" && &**message == support::PANIC_MESSAGE),
        "{:?}",
        error.secondary()
    );
    let bomb = report.task("bomb").unwrap();
    assert!(matches!(bomb.outcome, TaskOutcome::Cancelled { .. }));
    assert!(matches!(&bomb.secondary, Some(Cause::Panicked { .. })));
    assert!(report.task("slow").unwrap().secondary.is_none());
    assert!(report.to_string().contains("then panicked while dropped: source panicked on purpose"), "{report}");
}

#[tokio::test(start_paused = true)]
async fn the_error_names_cancelled_tasks_and_drop_panics_by_their_owned_names_without_a_report() {
    support::quiet_deliberate_panics();
    let mut group = Group::new();
    spawn_failure_and_panicking_guard(&mut group, 10);
    for i in 0..3 {
        group.spawn(format!("slow-{i}"), Probe::new().source("slow", ms(10_000), Outcome::Ok, 0)).unwrap();
    }
    let error = group.wait().await.unwrap_err();
    assert_eq!(error.source_name(), Some("bad"));
    assert_eq!(error.cancelled(), ["bomb", "slow-0", "slow-1", "slow-2"]);
    assert!(matches!(error.secondary(), [Cause::Panicked { name, .. }] if name == "bomb"), "{:?}", error.secondary());
}

#[tokio::test(start_paused = true)]
async fn a_drop_panic_in_a_large_group_or_when_the_group_is_dropped_does_not_unwind() {
    support::quiet_deliberate_panics();
    // Beyond 32 tasks the group polls through a `FuturesUnordered`: the same containment.
    let mut group = Group::new();
    spawn_failure_and_panicking_guard(&mut group, 10);
    for i in 0..40 {
        group.spawn(format!("s{i}"), Probe::new().source("s", ms(10_000), Outcome::Ok, 0)).unwrap();
    }
    let error = group.wait().await.unwrap_err();
    assert_eq!(error.source_name(), Some("bad"));
    assert!(matches!(error.secondary(), [Cause::Panicked { name, .. }] if name == "bomb"), "{:?}", error.secondary());
    let cancelled: Vec<String> = std::iter::once("bomb".to_owned()).chain((0..40).map(|i| format!("s{i}"))).collect();
    assert_eq!(error.cancelled(), cancelled, "owned names, moved out of the slots");

    // Dropping the `wait` future, and dropping a group that never ran.
    let mut group = Group::new();
    spawn_failure_and_panicking_guard(&mut group, 10_000);
    assert!(tokio::time::timeout(ms(5), group.wait()).await.is_err());
    let mut group = Group::new();
    spawn_failure_and_panicking_guard(&mut group, 10_000);
    drop(group);
}

#[tokio::test(start_paused = true)]
async fn a_running_task_spawns_siblings_through_the_handle() {
    let probe = Probe::new();
    let mut group = Group::new();
    let handle = group.handle();
    let children = probe.clone();
    group
        .spawn("accounts", async move {
            tokio::time::sleep(ms(10)).await;
            for i in 1..=3u32 {
                let name = format!("balance-{i}");
                handle.spawn(name.clone(), children.source(name, ms(20), Outcome::Ok, i)).unwrap();
            }
            let duplicate = handle.spawn("balance-1", children.source("impostor", ms(1), Outcome::Ok, 0));
            assert!(matches!(duplicate, Err(SpawnError::DuplicateName(_))));
            Ok::<_, SourceError>(0)
        })
        .unwrap();
    let started = Instant::now();
    let outputs = group.wait().await.unwrap();
    assert_eq!(started.elapsed(), ms(30), "the siblings ran concurrently, right after their spawn");
    assert_eq!(
        outputs.iter().collect::<Vec<_>>(),
        [("accounts", &0), ("balance-1", &1), ("balance-2", &2), ("balance-3", &3)]
    );
    assert!(!probe.state().started.contains(&"impostor".to_owned()));
}

#[tokio::test(start_paused = true)]
async fn a_handle_used_from_outside_the_group_wakes_it() {
    let mut group = Group::new();
    let handle = group.handle();
    group.spawn("slow", Probe::new().source("slow", ms(50), Outcome::Ok, 1)).unwrap();
    let started = Instant::now();
    let outside = tokio::spawn(async move {
        tokio::time::sleep(ms(10)).await;
        handle.spawn("late", async move { Ok::<_, SourceError>(started.elapsed().as_millis() as u32) })
    });
    let outputs = group.wait().await.unwrap();
    outside.await.unwrap().unwrap();
    assert_eq!(outputs.get("late"), Some(&10), "the late task must start when spawned, not when `slow` ends");
}

/// Whether the future was ever polled.
fn unpolled_marker(
    polled: &Seen,
    name: &'static str,
) -> impl std::future::Future<Output = Result<u32, SourceError>> + Send + 'static {
    let polled = Arc::clone(polled);
    async move {
        polled.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(name.to_owned());
        Ok(0)
    }
}

#[tokio::test(start_paused = true)]
async fn spawns_after_the_group_closed_are_refused_with_the_cause_drop_guards_included() {
    let polled = seen();
    let refusals = seen();

    // A failure: the cancelled sibling's drop guard tries to spawn.
    let mut group = Group::new();
    let handle = group.handle();
    group.spawn("bad", Probe::new().source("bad", ms(10), Outcome::Err, 0)).unwrap();
    let (guard_handle, guard_refusals, guard_polled) = (handle.clone(), Arc::clone(&refusals), Arc::clone(&polled));
    group
        .spawn("slow", async move {
            let _guard = OnDrop(move || {
                let refused = guard_handle.spawn("from-guard", unpolled_marker(&guard_polled, "from-guard"));
                guard_refusals.lock().unwrap().push(format!("{refused:?}"));
            });
            std::future::pending::<Result<u32, SourceError>>().await
        })
        .unwrap();
    assert_eq!(group.wait().await.unwrap_err().source_name(), Some("bad"));
    assert!(handle.is_closed());
    let after_failure = handle.spawn("after-failure", unpolled_marker(&polled, "after-failure"));
    assert!(
        matches!(after_failure, Err(SpawnError::Closed { cause: Cause::Failed { ref name, .. }, .. }) if name == "bad")
    );
    assert_eq!(read(&refusals).len(), 1);
    assert!(
        read(&refusals)[0].starts_with("Err(Closed { name: \"from-guard\", cause: Failed { name: \"bad\""),
        "{:?}",
        read(&refusals)
    );

    // Completion, the deadline and the caller's cancellation.
    let mut group = Group::new();
    let handle = group.handle();
    group.spawn("a", async { Ok::<_, SourceError>(1) }).unwrap();
    group.wait().await.unwrap();
    let refused = handle.spawn("after-completion", unpolled_marker(&polled, "after-completion"));
    assert!(matches!(refused, Err(SpawnError::Closed { cause: Cause::Completed, .. })), "{refused:?}");

    let mut group = Group::with_options(Deadline(ms(20))).unwrap();
    let handle = group.handle();
    group.spawn("slow", Probe::new().source("slow", ms(100), Outcome::Ok, 0)).unwrap();
    assert!(group.wait().await.unwrap_err().is_timeout());
    let refused = handle.spawn("after-deadline", unpolled_marker(&polled, "after-deadline"));
    assert!(matches!(refused, Err(SpawnError::Closed { cause: Cause::Deadline { .. }, .. })), "{refused:?}");

    let request = CancelToken::new();
    let group = Group::<u32>::new().with_parent(&request);
    let handle = group.handle();
    request.cancel_because("client went away");
    let refused = handle.spawn("after-cancel", unpolled_marker(&polled, "after-cancel"));
    assert!(matches!(refused, Err(SpawnError::Closed { cause: Cause::Reason { .. }, .. })), "{refused:?}");
    assert!(group.wait().await.unwrap_err().is_cancelled());

    assert!(read(&polled).is_empty(), "a refused task was polled: {:?}", read(&polled));
}

#[tokio::test(start_paused = true)]
async fn try_spawn_refuses_instead_of_queueing_and_returns_the_task() {
    let mut group = Group::with_options(Limit(2)).unwrap();
    group.try_spawn("a", Probe::new().source("a", ms(10), Outcome::Ok, 1)).unwrap();
    let handle: GroupHandle<'_, u32> = group.handle();
    let probe = Probe::new();
    let inner = probe.clone();
    group
        .try_spawn("b", async move {
            // Both slots taken (by `a` and by this task): refused, and the task comes back.
            let refused = handle.try_spawn("c", inner.source("c", ms(1), Outcome::Ok, 3)).unwrap_err();
            assert!(matches!(refused.error(), SpawnError::Full { limit: 2, .. }), "{refused}");
            let task = refused.into_task();
            tokio::time::sleep(ms(20)).await;
            // `a` has finished: a slot is free now.
            handle.try_spawn("c", task).unwrap();
            Ok::<_, SourceError>(2)
        })
        .map_err(|refused| refused.to_string())
        .unwrap();
    let refused = group.try_spawn("d", probe.source("d", ms(1), Outcome::Ok, 4)).unwrap_err();
    assert_eq!(refused.to_string(), "task `d` refused: all 2 slots are taken");
    // A plain spawn queues instead.
    group.spawn("d", refused.into_task()).unwrap();
    let outputs = group.wait().await.unwrap();
    assert_eq!(
        outputs.iter().map(|(name, value)| (name, *value)).collect::<Vec<_>>(),
        [("a", 1), ("b", 2), ("d", 4), ("c", 3)]
    );
    assert_eq!(probe.state().high_water, 1);
}

#[tokio::test(start_paused = true)]
async fn the_caller_cancels_with_a_reason_that_tasks_read_and_the_error_carries() {
    let mut group = Group::new();
    let token = group.token();
    let probe = Probe::with_token(token.clone());
    group.spawn("slow", probe.source("slow", ms(10_000), Outcome::Ok, 0)).unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(ms(20)).await;
        token.cancel_because("the client disconnected");
    });
    let started = Instant::now();
    let error = group.wait().await.unwrap_err();
    assert_eq!(started.elapsed(), ms(20));
    assert_eq!(error.kind(), ErrorKind::Cancelled);
    assert!(matches!(error.cause(), Cause::Reason { .. }));
    assert_eq!(error.to_string(), "group stopped after 20ms: cancelled by the caller");
    let reason = std::error::Error::source(&error).map(ToString::to_string);
    assert_eq!(reason.as_deref(), Some("the client disconnected"));
    assert_eq!(probe.state().causes, [Some("cancelled by the caller: the client disconnected".to_owned())]);

    // A parent's reason, as an error, reaches a child group too.
    let request = CancelToken::new();
    let mut group = Group::new().with_parent(&request);
    let probe = Probe::with_token(group.token());
    group.spawn("slow", probe.source("slow", ms(10_000), Outcome::Ok, 0)).unwrap();
    request.cancel_because(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer"));
    let error = group.wait().await.unwrap_err();
    let source = std::error::Error::source(&error).and_then(|e| e.downcast_ref::<std::io::Error>());
    assert_eq!(source.map(std::io::Error::kind), Some(std::io::ErrorKind::ConnectionReset));
}

#[tokio::test(start_paused = true)]
async fn the_report_gives_every_tasks_outcome_start_and_duration_on_success_and_error() {
    support::quiet_deliberate_panics();
    let mut group = Group::with_options(Limit(2)).unwrap();
    group.spawn("profile", Probe::new().source("profile", ms(10), Outcome::Ok, 1)).unwrap();
    group.spawn("balance", Probe::new().source("balance", ms(20), Outcome::Ok, 2)).unwrap();
    group.spawn("offers", Probe::new().source("offers", ms(5), Outcome::Ok, 3)).unwrap();
    let (result, report) = group.wait_with_report().await;
    assert_eq!(result.unwrap().len(), 3);
    assert_eq!(report.elapsed, ms(20));
    assert!(report.cause.is_none());
    let rows: Vec<_> =
        report.tasks.iter().map(|task| (&*task.name, task.outcome.as_str(), task.start, task.duration)).collect();
    assert_eq!(
        rows,
        [
            ("profile", "ok", Some(ms(0)), ms(10)),
            ("balance", "ok", Some(ms(0)), ms(20)),
            ("offers", "ok", Some(ms(10)), ms(5)),
        ]
    );
    assert_eq!(
        report.to_string(),
        "group took 20ms\n  profile |████████████████████                    |    10ms  ok\n  balance |████████████████████████████████████████|    20ms  ok\n  offers  |                    ██████████          |     5ms  ok"
    );

    // Failed, panicked (losing the tie), timed out and never started.
    let mut group = Group::with_options((Deadline(ms(100)), Limit(4))).unwrap();
    group.spawn("bad", Probe::new().source("bad", ms(30), Outcome::Err, 0)).unwrap();
    group.spawn("bomb", Probe::new().source("bomb", ms(30), Outcome::Panic, 0)).unwrap();
    group.spawn("slow", Probe::new().source("slow", ms(1_000), Outcome::Ok, 0)).unwrap();
    let (result, report) = group.wait_with_report().await;
    assert_eq!(result.unwrap_err().also_failed(), ["bomb"]);
    let outcome = |name: &str| report.task(name).map(|task| task.outcome.to_string());
    assert_eq!(outcome("bad").as_deref(), Some("failed: bad failed on purpose"));
    assert_eq!(outcome("bomb").as_deref(), Some("panicked: source panicked on purpose"));
    assert_eq!(outcome("slow").as_deref(), Some("cancelled by `bad`: bad failed on purpose"));
    assert_eq!(report.task("slow").map(|task| task.duration), Some(ms(30)));
    assert!(matches!(report.cause, Some(Cause::Failed { .. })));

    let mut group = Group::with_options((Deadline(ms(100)), Limit(1))).unwrap();
    group.spawn("slow", Probe::new().source("slow", ms(1_000), Outcome::Ok, 0)).unwrap();
    group.spawn("queued", Probe::new().source("queued", ms(1), Outcome::Ok, 0)).unwrap();
    let (result, report) = group.wait_with_report().await;
    assert!(result.unwrap_err().is_timeout());
    let slow = report.task("slow").unwrap();
    assert!(matches!(slow.outcome, TaskOutcome::TimedOut));
    assert_eq!((slow.start, slow.duration), (Some(ms(0)), ms(100)));
    let queued = report.task("queued").unwrap();
    assert!(matches!(queued.outcome, TaskOutcome::Cancelled { cause: Cause::Deadline { .. } }));
    assert_eq!(queued.start, None);
    assert!(report.to_string().starts_with("group took 100ms, stopped by the deadline\n"), "{report}");
}

#[tokio::test(start_paused = true)]
async fn the_report_times_tasks_spawned_through_a_handle_from_their_own_start() {
    let probe = Probe::new();
    let mut group = Group::new();
    let handle = group.handle();
    let children = probe.clone();
    group
        .spawn("accounts", async move {
            tokio::time::sleep(ms(10)).await;
            for i in 1..=3u32 {
                let name = format!("balance-{i}");
                handle.spawn(name.clone(), children.source(name, ms(20 + u64::from(i)), Outcome::Ok, i)).unwrap();
            }
            Ok::<_, SourceError>(0)
        })
        .unwrap();
    let (result, report) = group.wait_with_report().await;
    assert_eq!(result.unwrap().len(), 4);
    let rows: Vec<_> = report.tasks.iter().map(|task| (&*task.name, task.start, task.duration)).collect();
    assert_eq!(
        rows,
        [
            ("accounts", Some(ms(0)), ms(10)),
            ("balance-1", Some(ms(10)), ms(21)),
            ("balance-2", Some(ms(10)), ms(22)),
            ("balance-3", Some(ms(10)), ms(23)),
        ]
    );
    assert_eq!(report.elapsed, ms(33), "the last end");
}

#[tokio::test(start_paused = true)]
async fn a_task_reads_its_groups_token_while_polled_and_dropped() {
    assert!(cancellation().is_none(), "no group outside a task");
    // While polled: the group's own token; cancelling it cancels the group.
    let mut group = Group::new();
    let token = group.token();
    group
        .spawn("a", async {
            tokio::time::sleep(ms(5)).await;
            cancellation().expect("the group's token").cancel_because("enough");
            std::future::pending::<Result<u32, SourceError>>().await
        })
        .unwrap();
    let error = group.wait().await.unwrap_err();
    assert!(error.is_cancelled());
    assert!(matches!(token.cause(), Some(Cause::Reason { .. })));

    // Made lazily by the task, it still cancels the group and ends `Completed` on success.
    let mut group = Group::new();
    let kept = Arc::new(Mutex::new(None));
    let keep = Arc::clone(&kept);
    group
        .spawn("a", async move {
            *keep.lock().unwrap() = cancellation();
            Ok::<_, SourceError>(1)
        })
        .unwrap();
    group.wait().await.unwrap();
    let kept = kept.lock().unwrap().clone().expect("a token inside the task");
    assert!(matches!(kept.cause(), Some(Cause::Completed)));

    let mut group = Group::new();
    group
        .spawn("a", async {
            tokio::time::sleep(ms(5)).await;
            cancellation().expect("the group's token").cancel();
            std::future::pending::<Result<u32, SourceError>>().await
        })
        .unwrap();
    let started = Instant::now();
    assert!(group.wait().await.unwrap_err().is_cancelled());
    assert_eq!(started.elapsed(), ms(5));

    // While dropped: a guard reads the cause though nobody made the token before.
    let guard_saw = seen();
    let saw = Arc::clone(&guard_saw);
    let mut group = Group::new();
    group.spawn("bad", Probe::new().source("bad", ms(10), Outcome::Err, 0)).unwrap();
    group
        .spawn("slow", async move {
            let _guard = OnDrop(move || {
                let cause = cancellation().and_then(|token| token.cause().map(ToString::to_string));
                saw.lock().unwrap().push(cause.unwrap_or_default());
            });
            std::future::pending::<Result<u32, SourceError>>().await
        })
        .unwrap();
    group.wait().await.unwrap_err();
    assert_eq!(read(&guard_saw), ["cancelled by `bad`: bad failed on purpose"]);
}

#[tokio::test(start_paused = true)]
async fn an_inner_group_cancelled_because_the_outer_failed_carries_the_outer_failure() {
    let mut outer = Group::new();
    let outer_token = outer.token();
    // The inner group runs on its own runtime task, so it is not dropped with the outer
    // group's tasks: it sees the outer failure through its parent token and fails with it.
    let mut inner = Group::new().with_parent(&outer_token);
    let inner_probe = Probe::with_token(inner.token());
    inner.spawn("ledger", inner_probe.source("ledger", ms(10_000), Outcome::Ok, 0)).unwrap();
    let inner = tokio::spawn(inner.wait());
    outer.spawn("profile", Probe::new().source("profile", ms(30), Outcome::Err, 0)).unwrap();
    assert_eq!(outer.wait().await.unwrap_err().source_name(), Some("profile"));

    let error = inner.await.unwrap().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Cancelled);
    assert_eq!(error.cause().source_name(), Some("profile"), "the outer failure, name and error");
    assert_eq!(error.source_name(), None, "`profile` is not a task of the inner group");
    assert_eq!(error.to_string(), "group stopped after 30ms: cancelled by `profile`");
    let source = std::error::Error::source(&error).and_then(|e| e.downcast_ref::<SourceError>());
    assert_eq!(source, Some(&SourceError("profile".into())));
    assert_eq!(inner_probe.state().causes, [Some("cancelled by `profile`: profile failed on purpose".to_owned())]);
}

#[tokio::test(start_paused = true)]
async fn a_task_spawning_past_32_siblings_moves_the_group_to_its_large_mode_without_losing_any() {
    let mut group = Group::new();
    let handle = group.handle();
    group
        .spawn("fan-out", async move {
            for i in 0..40u32 {
                let name = format!("child-{i}");
                handle.spawn(name, async move {
                    tokio::time::sleep(ms(u64::from(40 - i))).await;
                    Ok::<_, SourceError>(i)
                })?;
            }
            Ok::<_, SpawnError>(40)
        })
        .unwrap();
    let started = Instant::now();
    let outputs = group.wait().await.unwrap();
    assert_eq!(started.elapsed(), ms(40));
    assert_eq!(outputs.len(), 41);
    let values: Vec<u32> = outputs.iter().map(|(_, value)| *value).collect();
    assert_eq!(values, std::iter::once(40).chain(0..40).collect::<Vec<_>>(), "in spawn order");
}
