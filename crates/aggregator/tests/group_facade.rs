//! The `Group` features of issue 10 through the facade's paths only (`muster::…`), as a user
//! of the `muster` crate writes them: the handle, `try_spawn`, the report and its outcomes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster::{
    Group, group::GroupHandle, group::GroupReport, group::SpawnError, group::TaskOutcome, group::TrySpawnError,
    options::Limit,
};

#[tokio::test(start_paused = true)]
async fn handle_spawns_and_is_refused_after_close() {
    let mut group: Group<'_, u32> = Group::new();
    let handle: GroupHandle<'_, u32> = group.handle();
    let h2 = handle.clone();
    group
        .spawn("root", async move {
            h2.spawn("child", async { Ok::<_, std::io::Error>(2) })?;
            Ok::<_, SpawnError>(1)
        })
        .unwrap();
    let outputs = group.wait().await.unwrap();
    assert_eq!(outputs["child"], 2);
    assert!(handle.is_closed());
    let polled = Arc::new(Mutex::new(false));
    let p = polled.clone();
    let err = handle
        .spawn("late", async move {
            *p.lock().unwrap() = true;
            Ok::<_, std::io::Error>(3)
        })
        .unwrap_err();
    assert!(matches!(err, SpawnError::Closed { .. }), "{err:?}");
    assert!(!*polled.lock().unwrap());
}

#[tokio::test(start_paused = true)]
async fn try_spawn_refuses_when_full_and_gives_the_task_back() {
    let mut group: Group<'_, u32> = Group::with_options(Limit(1)).unwrap();
    group.try_spawn("a", async { Ok::<_, std::io::Error>(1) }).map_err(|error| error.to_string()).unwrap();
    let refused: TrySpawnError<_> = group.try_spawn("b", async { Ok::<_, std::io::Error>(2) }).unwrap_err();
    assert!(matches!(refused.error(), SpawnError::Full { .. }));
    let task = refused.into_task();
    assert_eq!(task.await.unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn report_on_success_and_error() {
    let mut group = Group::new();
    group
        .spawn("fast", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, std::io::Error>(1)
        })
        .unwrap();
    group
        .spawn("bad", async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            Err::<u32, _>(std::io::Error::other("503"))
        })
        .unwrap();
    group
        .spawn("slow", async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok::<_, std::io::Error>(3)
        })
        .unwrap();
    let (result, report): (_, GroupReport) = group.wait_with_report().await;
    assert!(result.is_err());
    assert!(matches!(report.task("fast").unwrap().outcome, TaskOutcome::Ok));
    assert!(matches!(report.task("bad").unwrap().outcome, TaskOutcome::Failed { .. }));
    assert!(matches!(report.task("slow").unwrap().outcome, TaskOutcome::Cancelled { .. }));
    assert_eq!(report.task("bad").unwrap().duration, Duration::from_millis(20));
    let waterfall = report.to_string();
    assert!(waterfall.contains("stopped by `bad`"), "{waterfall}");
    assert!(waterfall.contains("cancelled by `bad`: 503"), "{waterfall}");
}

/// The task-local functions the `Group` documentation names are callable through `muster::`:
/// inside a bare group's task, `muster::cancellation()` is the group's token (a drop guard
/// reads the failed sibling) and `muster::deadline()` the group's deadline.
#[tokio::test(start_paused = true)]
async fn a_bare_groups_tasks_read_its_token_and_deadline_through_the_facade() {
    struct Guard(Arc<Mutex<Option<String>>>);
    impl Drop for Guard {
        fn drop(&mut self) {
            let cause = muster::cancellation().and_then(|token| token.cause().map(ToString::to_string));
            *self.0.lock().unwrap() = cause;
        }
    }

    let start = tokio::time::Instant::now();
    let seen = Arc::new(Mutex::new(None));
    let mut group = Group::with_options(muster::Deadline(Duration::from_secs(1))).unwrap();
    let guard = Guard(Arc::clone(&seen));
    group
        .spawn("slow", async move {
            let _guard = guard;
            assert_eq!(muster::deadline(), Some(start + Duration::from_secs(1)));
            tokio::time::sleep(Duration::from_millis(500)).await;
            Ok::<u32, std::io::Error>(1)
        })
        .unwrap();
    group
        .spawn("bad", async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err::<u32, _>(std::io::Error::other("503"))
        })
        .unwrap();
    let error = group.wait().await.unwrap_err();
    assert_eq!(error.source_name(), Some("bad"));
    assert_eq!(seen.lock().unwrap().as_deref(), Some("cancelled by `bad`: 503"));
    assert!(muster::cancellation().is_none() && muster::deadline().is_none(), "nothing outside a task");
}
