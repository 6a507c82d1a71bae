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
