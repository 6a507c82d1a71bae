//! Property test: random groups on tokio's paused clock against a small reference model.
//!
//! Each case is 1..=48 sources (beyond 32 the group switches to its `FuturesUnordered` path), each with a delay and an outcome (ok, error, panic, hang), an
//! optional deadline and an optional concurrency limit. The model simulates the group in
//! virtual milliseconds and predicts the result kind, the root cause, the sources that lost a
//! tie, the elapsed time, which sources started and exactly which were cancelled.
//!
//! Ties: sources completing at the same instant complete in one *wave*; the failure of the
//! earliest-spawned source in the wave is the root cause, the other failures of that wave are
//! `also_failed`, and successes of that wave count as finished. Queued sources start only after
//! a wave without failure, in spawn order, and may complete in a further wave at that instant.

mod support;

use std::time::Duration;

use muster_core::{ErrorKind, Group};
use muster_options::{Deadline, Limit};
use proptest::prelude::*;
use support::{Outcome, Probe, ms};

/// Longer than any scenario can take: reaching it means the group hangs.
const HORIZON: Duration = Duration::from_secs(3600);

#[derive(Clone, Debug)]
struct Scenario {
    sources: Vec<(u64, Outcome)>,
    deadline: Option<u64>,
    limit: Option<usize>,
}

#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Ok { elapsed: u64 },
    Failed { kind: ErrorKind, root: usize, also_failed: Vec<usize>, cancelled: Vec<usize>, elapsed: u64 },
    Timeout { pending: Vec<usize>, elapsed: u64 },
    Hang,
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![6 => Just(Outcome::Ok), 2 => Just(Outcome::Err), 1 => Just(Outcome::Panic), 1 => Just(Outcome::Hang)]
}

/// Delays on a 5 ms grid, so that ties at the same instant are common.
fn source() -> impl Strategy<Value = (u64, Outcome)> {
    ((0u64..10).prop_map(|steps| steps * 5), outcome())
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(source(), 1..=48),
        prop::option::of((1u64..12).prop_map(|steps| steps * 5)),
        prop::option::of(1usize..=6),
    )
        .prop_map(|(sources, deadline, limit)| Scenario { sources, deadline, limit })
}

/// The reference model: returns what the group must do, and which sources start.
fn model(scenario: &Scenario) -> (Expected, Vec<usize>) {
    let n = scenario.sources.len();
    let limit = scenario.limit.unwrap_or(n);
    let outcome = |i: usize| scenario.sources[i].1;
    let mut finish: Vec<Option<u64>> = vec![None; n];
    let mut done = vec![false; n];
    let mut started = Vec::new();
    let mut running: Vec<usize> = Vec::new();
    let mut next = 0;
    let mut start = |now: u64, running: &mut Vec<usize>, finish: &mut Vec<Option<u64>>| {
        while running.len() < limit && next < n {
            finish[next] = (outcome(next) != Outcome::Hang).then(|| now + scenario.sources[next].0);
            running.push(next);
            started.push(next);
            next += 1;
        }
    };
    start(0, &mut running, &mut finish);
    let unfinished = |done: &[bool], failed: &[usize]| -> Vec<usize> {
        (0..n).filter(|i| !done[*i] && !failed.contains(i)).collect()
    };
    let expected = loop {
        let event = running.iter().filter_map(|&i| finish[i]).min();
        let now = match (event, scenario.deadline) {
            (Some(at), Some(deadline)) if at > deadline => {
                break Expected::Timeout { pending: unfinished(&done, &[]), elapsed: deadline };
            }
            (None, Some(deadline)) => break Expected::Timeout { pending: unfinished(&done, &[]), elapsed: deadline },
            (None, None) => break Expected::Hang,
            (Some(at), _) => at,
        };
        let mut failure = None;
        loop {
            let wave: Vec<usize> = running.iter().copied().filter(|&i| finish[i] == Some(now)).collect();
            if wave.is_empty() {
                break;
            }
            running.retain(|i| !wave.contains(i));
            let failed: Vec<usize> =
                wave.iter().copied().filter(|&i| matches!(outcome(i), Outcome::Err | Outcome::Panic)).collect();
            wave.iter().filter(|i| !failed.contains(i)).for_each(|&i| done[i] = true);
            if let Some(&root) = failed.iter().min() {
                let kind = if outcome(root) == Outcome::Err { ErrorKind::Failed } else { ErrorKind::Panicked };
                let also_failed = failed.iter().copied().filter(|&i| i != root).collect();
                let cancelled = unfinished(&done, &failed);
                failure = Some(Expected::Failed { kind, root, also_failed, cancelled, elapsed: now });
                break;
            }
            start(now, &mut running, &mut finish);
        }
        if let Some(failure) = failure {
            break failure;
        }
        if running.is_empty() {
            break Expected::Ok { elapsed: now };
        }
    };
    started.sort_unstable();
    (expected, started)
}

fn names(indices: &[usize]) -> Vec<String> {
    indices.iter().map(|i| format!("s{i}")).collect()
}

fn check(scenario: &Scenario) -> Result<(), TestCaseError> {
    let (expected, expected_started) = model(scenario);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?;
    runtime.block_on(async {
        let probe = Probe::new();
        let options = (scenario.deadline.map(|d| Deadline(ms(d))), scenario.limit.map(Limit));
        let mut group = Group::with_options(options)?;
        for (i, &(delay, outcome)) in scenario.sources.iter().enumerate() {
            group.spawn(format!("s{i}"), probe.source(format!("s{i}"), ms(delay), outcome, i as u32))?;
        }
        let clock = tokio::time::Instant::now();
        let result = tokio::time::timeout(HORIZON, group.wait()).await;
        let elapsed = clock.elapsed();

        let state = probe.state();
        prop_assert_eq!(state.running, 0, "a source outlived the group");
        let mut started = state.started.clone();
        started.sort_by_key(|name| name[1..].parse::<usize>().unwrap_or(usize::MAX));
        prop_assert_eq!(&started, &names(&expected_started), "started sources");
        match (&expected, result) {
            (Expected::Ok { elapsed: at }, Ok(Ok(outputs))) => {
                prop_assert_eq!(elapsed, ms(*at), "elapsed");
                let values: Vec<u32> = outputs.iter().map(|(_, value)| *value).collect();
                prop_assert_eq!(values, (0..scenario.sources.len() as u32).collect::<Vec<_>>());
                prop_assert!(state.cancelled.is_empty(), "nothing is cancelled on success");
            }
            (Expected::Failed { kind, root, also_failed, cancelled, elapsed: at }, Ok(Err(error))) => {
                prop_assert_eq!(error.kind(), *kind);
                let root = format!("s{root}");
                prop_assert_eq!(error.source_name(), Some(root.as_str()), "root cause");
                prop_assert_eq!(error.also_failed().to_vec(), names(also_failed), "lost the tie");
                prop_assert_eq!(error.cancelled().to_vec(), names(cancelled), "reported as cancelled");
                prop_assert_eq!((elapsed, error.elapsed()), (ms(*at), ms(*at)), "elapsed");
                let mut dropped = state.cancelled.clone();
                dropped.sort_by_key(|name| name[1..].parse::<usize>().unwrap_or(usize::MAX));
                let running: Vec<usize> = cancelled.iter().copied().filter(|i| expected_started.contains(i)).collect();
                prop_assert_eq!(dropped, names(&running), "dropped while running");
            }
            (Expected::Timeout { pending, elapsed: at }, Ok(Err(error))) => {
                prop_assert_eq!(error.kind(), ErrorKind::Timeout);
                prop_assert_eq!(error.pending().to_vec(), names(pending), "pending at the deadline");
                prop_assert_eq!(error.cancelled().to_vec(), names(pending), "cancelled at the deadline");
                prop_assert_eq!((elapsed, error.elapsed()), (ms(*at), ms(*at)), "elapsed");
            }
            (Expected::Hang, Err(_)) => {
                prop_assert_eq!(elapsed, HORIZON);
            }
            (expected, result) => {
                let got = result.map(|inner| inner.map(|outputs| outputs.len()));
                prop_assert!(false, "expected {expected:?}, got {got:?}");
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn group_matches_the_reference_model(scenario in scenario()) {
        support::quiet_deliberate_panics();
        check(&scenario)?;
    }
}

/// A hand-picked case of every kind, so a broken model cannot agree with a broken group by
/// predicting nothing interesting.
#[test]
fn the_model_predicts_each_kind() {
    use Outcome::*;
    let case = |sources: Vec<(u64, Outcome)>, deadline, limit| model(&Scenario { sources, deadline, limit }).0;
    assert_eq!(case(vec![(10, Ok), (20, Ok)], None, None), Expected::Ok { elapsed: 20 });
    assert_eq!(
        case(vec![(10, Ok), (5, Err), (5, Panic), (50, Ok)], None, None),
        Expected::Failed { kind: ErrorKind::Failed, root: 1, also_failed: vec![2], cancelled: vec![0, 3], elapsed: 5 }
    );
    assert_eq!(
        case(vec![(10, Ok), (0, Err), (0, Ok)], None, Some(1)),
        Expected::Failed { kind: ErrorKind::Failed, root: 1, also_failed: vec![], cancelled: vec![2], elapsed: 10 }
    );
    assert_eq!(case(vec![(10, Ok), (30, Ok)], Some(20), None), Expected::Timeout { pending: vec![1], elapsed: 20 });
    assert_eq!(case(vec![(20, Ok)], Some(20), None), Expected::Ok { elapsed: 20 });
    assert_eq!(case(vec![(5, Ok), (0, Hang)], None, None), Expected::Hang);
}

// ---------------------------------------------------------------------------------------------
// Tasks that spawn siblings through a `GroupHandle`, with `spawn` or `try_spawn`.
//
// A source may have a child: when the source finishes with a value or an error (not a panic,
// not a hang), it spawns the child through the group's handle just before returning. With
// `spawn` the child is admitted (the group closes only after the wave); with `try_spawn` it is
// admitted only if a slot is free at that moment: running tasks (the spawning source included,
// it has not returned yet; sources that finished earlier in the wave excluded) plus queued ones
// plus children admitted but not yet taken in, below the limit. Admitted children enter the
// group after the wave, in spawn order: running if a slot is free and nothing is queued, else
// queued. Sources are polled in spawn order, so at most 32 tasks (no `FuturesUnordered`).

use muster_core::GroupHandle;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Spawn,
    TrySpawn,
}

#[derive(Clone, Debug)]
struct Spawner {
    delay: u64,
    outcome: Outcome,
    child: Option<(u64, Outcome, Mode)>,
}

#[derive(Clone, Debug)]
struct HandleScenario {
    sources: Vec<Spawner>,
    deadline: Option<u64>,
    limit: Option<usize>,
}

/// What the group must do, by task name (`s{i}` for the sources, `c{i}` for the child of `s{i}`).
#[derive(Debug, PartialEq, Eq)]
enum HandleExpected {
    Ok { names: Vec<String>, elapsed: u64 },
    Failed { kind: ErrorKind, root: String, also_failed: Vec<String>, cancelled: Vec<String>, elapsed: u64 },
    Timeout { pending: Vec<String>, elapsed: u64 },
    Hang,
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Spawn), Just(Mode::TrySpawn)]
}

fn spawner() -> impl Strategy<Value = Spawner> {
    (source(), prop::option::weighted(0.6, (source(), mode()))).prop_map(|((delay, outcome), child)| Spawner {
        delay,
        outcome,
        child: child.map(|((d, o), m)| (d, o, m)),
    })
}

fn handle_scenario() -> impl Strategy<Value = HandleScenario> {
    (
        prop::collection::vec(spawner(), 1..=16),
        prop::option::of((1u64..12).prop_map(|steps| steps * 5)),
        prop::option::of(1usize..=4),
    )
        .prop_map(|(sources, deadline, limit)| HandleScenario { sources, deadline, limit })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Queued,
    Running(Option<u64>),
    Done,
    Failed,
}

struct ModelTask {
    name: String,
    delay: u64,
    outcome: Outcome,
    child: Option<(usize, u64, Outcome, Mode)>,
    slot: Slot,
}

/// The reference model with handles: returns what the group must do and which tasks start.
fn handle_model(scenario: &HandleScenario) -> (HandleExpected, Vec<String>) {
    let limit = scenario.limit.unwrap_or(usize::MAX);
    let mut tasks: Vec<ModelTask> = (scenario.sources.iter().enumerate())
        .map(|(i, s)| ModelTask {
            name: format!("s{i}"),
            delay: s.delay,
            outcome: s.outcome,
            child: s.child.map(|(d, o, m)| (i, d, o, m)),
            slot: Slot::Queued,
        })
        .collect();
    let mut started = Vec::new();
    let running = |tasks: &[ModelTask]| tasks.iter().filter(|t| matches!(t.slot, Slot::Running(_))).count();
    let queued = |tasks: &[ModelTask]| tasks.iter().filter(|t| t.slot == Slot::Queued).count();
    let start = |task: &mut ModelTask, now: u64, started: &mut Vec<String>| {
        task.slot = Slot::Running((task.outcome != Outcome::Hang).then(|| now + task.delay));
        started.push(task.name.clone());
    };
    for i in 0..tasks.len().min(limit) {
        start(&mut tasks[i], 0, &mut started);
    }
    let unfinished = |tasks: &[ModelTask]| -> Vec<String> {
        (tasks.iter()).filter(|t| matches!(t.slot, Slot::Queued | Slot::Running(_))).map(|t| t.name.clone()).collect()
    };
    let expected = loop {
        let event = tasks.iter().filter_map(|t| if let Slot::Running(at) = t.slot { at } else { None }).min();
        let now = match (event, scenario.deadline) {
            (Some(at), Some(deadline)) if at > deadline => {
                break HandleExpected::Timeout { pending: unfinished(&tasks), elapsed: deadline };
            }
            (None, Some(deadline)) => break HandleExpected::Timeout { pending: unfinished(&tasks), elapsed: deadline },
            (None, None) => break HandleExpected::Hang,
            (Some(at), _) => at,
        };
        let mut failure = None;
        loop {
            let wave: Vec<usize> = (0..tasks.len()).filter(|&i| tasks[i].slot == Slot::Running(Some(now))).collect();
            if wave.is_empty() {
                break;
            }
            let mut inbox: Vec<ModelTask> = Vec::new();
            let mut failed = Vec::new();
            for &i in &wave {
                if let (Some((parent, delay, outcome, mode)), Outcome::Ok | Outcome::Err) =
                    (tasks[i].child, tasks[i].outcome)
                {
                    let free = running(&tasks) + queued(&tasks) + inbox.len() < limit;
                    if mode == Mode::Spawn || free {
                        let name = format!("c{parent}");
                        inbox.push(ModelTask { name, delay, outcome, child: None, slot: Slot::Queued });
                    }
                }
                if matches!(tasks[i].outcome, Outcome::Err | Outcome::Panic) {
                    tasks[i].slot = Slot::Failed;
                    failed.push(i);
                } else {
                    tasks[i].slot = Slot::Done;
                }
            }
            if let Some(&root) = failed.first() {
                let kind = if tasks[root].outcome == Outcome::Err { ErrorKind::Failed } else { ErrorKind::Panicked };
                let also_failed = failed[1..].iter().map(|&i| tasks[i].name.clone()).collect();
                let mut cancelled = unfinished(&tasks);
                cancelled.extend(inbox.iter().map(|t| t.name.clone()));
                failure = Some(HandleExpected::Failed {
                    kind,
                    root: tasks[root].name.clone(),
                    also_failed,
                    cancelled,
                    elapsed: now,
                });
                break;
            }
            for mut task in inbox {
                if running(&tasks) < limit && queued(&tasks) == 0 {
                    start(&mut task, now, &mut started);
                }
                tasks.push(task);
            }
            for i in 0..tasks.len() {
                if tasks[i].slot == Slot::Queued && running(&tasks) < limit {
                    start(&mut tasks[i], now, &mut started);
                }
            }
        }
        if let Some(failure) = failure {
            break failure;
        }
        if running(&tasks) == 0 && queued(&tasks) == 0 {
            break HandleExpected::Ok { names: tasks.iter().map(|t| t.name.clone()).collect(), elapsed: now };
        }
    };
    (expected, started)
}

/// Source `i` of `scenario`, spawning its child through `handle` as the model says.
fn spawner_task(
    probe: &Probe,
    handle: GroupHandle<'static, u32>,
    i: usize,
    spawner: &Spawner,
) -> impl std::future::Future<Output = Result<u32, support::SourceError>> + Send + 'static {
    let own = probe.source(format!("s{i}"), ms(spawner.delay), spawner.outcome, 0);
    let child =
        spawner.child.map(|(delay, outcome, mode)| (probe.source(format!("c{i}"), ms(delay), outcome, 0), mode));
    async move {
        let result = own.await;
        if let Some((child, mode)) = child {
            let admitted = match mode {
                Mode::Spawn => handle.spawn(format!("c{i}"), child).map_err(|error| error.to_string()),
                Mode::TrySpawn => handle.try_spawn(format!("c{i}"), child).map_err(|error| error.to_string()),
            };
            // A `spawn` is never refused while the group runs; a `try_spawn` only for lack of a slot.
            if let Err(error) = admitted {
                assert!(mode == Mode::TrySpawn && error.contains("slots are taken"), "{error}");
            }
        }
        result
    }
}

fn check_handles(scenario: &HandleScenario) -> Result<(), TestCaseError> {
    let (expected, mut expected_started) = handle_model(scenario);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?;
    runtime.block_on(async {
        let probe = Probe::new();
        let options = (scenario.deadline.map(|d| Deadline(ms(d))), scenario.limit.map(Limit));
        let mut group = Group::with_options(options)?;
        let handle = group.handle();
        for (i, spawner) in scenario.sources.iter().enumerate() {
            group.spawn(format!("s{i}"), spawner_task(&probe, handle.clone(), i, spawner))?;
        }
        drop(handle);
        let clock = tokio::time::Instant::now();
        let result = tokio::time::timeout(HORIZON, group.wait()).await;
        let elapsed = clock.elapsed();

        let state = probe.state();
        prop_assert_eq!(state.running, 0, "a task outlived the group");
        let mut started = state.started.clone();
        started.sort();
        expected_started.sort();
        prop_assert_eq!(&started, &expected_started, "started tasks");
        match (&expected, result) {
            (HandleExpected::Ok { names, elapsed: at }, Ok(Ok(outputs))) => {
                prop_assert_eq!(elapsed, ms(*at), "elapsed");
                prop_assert_eq!(&outputs.names().collect::<Vec<_>>(), names, "outputs, in spawn order");
            }
            (HandleExpected::Failed { kind, root, also_failed, cancelled, elapsed: at }, Ok(Err(error))) => {
                prop_assert_eq!(error.kind(), *kind);
                prop_assert_eq!(error.source_name(), Some(root.as_str()), "root cause");
                prop_assert_eq!(&error.also_failed().to_vec(), also_failed, "lost the tie");
                prop_assert_eq!(&error.cancelled().to_vec(), cancelled, "reported as cancelled");
                prop_assert_eq!((elapsed, error.elapsed()), (ms(*at), ms(*at)), "elapsed");
            }
            (HandleExpected::Timeout { pending, elapsed: at }, Ok(Err(error))) => {
                prop_assert_eq!(error.kind(), ErrorKind::Timeout);
                prop_assert_eq!(&error.pending().to_vec(), pending, "pending at the deadline");
                prop_assert_eq!((elapsed, error.elapsed()), (ms(*at), ms(*at)), "elapsed");
            }
            (HandleExpected::Hang, Err(_)) => prop_assert_eq!(elapsed, HORIZON),
            (expected, result) => {
                let got = result.map(|inner| inner.map(|outputs| outputs.len()));
                prop_assert!(false, "expected {expected:?}, got {got:?}");
            }
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_group_whose_tasks_spawn_siblings_matches_the_reference_model(scenario in handle_scenario()) {
        support::quiet_deliberate_panics();
        check_handles(&scenario)?;
    }
}

/// Hand-picked handle cases, so the model cannot agree with the group by predicting nothing.
#[test]
fn the_handle_model_predicts_spawns_refusals_and_late_children() {
    use Outcome::*;
    let names = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect::<Vec<_>>();
    let case = |sources: Vec<Spawner>, deadline, limit| handle_model(&HandleScenario { sources, deadline, limit }).0;
    let s = |delay, outcome, child| Spawner { delay, outcome, child };
    // A child spawned at 10 ms that takes 20 ms: the group ends at 30 ms.
    assert_eq!(
        case(vec![s(10, Ok, Some((20, Ok, Mode::Spawn)))], None, None),
        HandleExpected::Ok { names: names(&["s0", "c0"]), elapsed: 30 }
    );
    // Limit 1, `s1` queued: `s0`'s try_spawn at 10 ms is refused (s0 runs, s1 is queued).
    assert_eq!(
        case(vec![s(10, Ok, Some((5, Ok, Mode::TrySpawn))), s(10, Ok, None)], None, Some(1)),
        HandleExpected::Ok { names: names(&["s0", "s1"]), elapsed: 20 }
    );
    // A child admitted in the wave that fails is cancelled without starting.
    assert_eq!(
        case(vec![s(10, Ok, Some((5, Ok, Mode::Spawn))), s(10, Err, None)], None, None),
        HandleExpected::Failed {
            kind: ErrorKind::Failed,
            root: "s1".into(),
            also_failed: vec![],
            cancelled: names(&["c0"]),
            elapsed: 10
        }
    );
}
