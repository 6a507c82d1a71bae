//! Dependent sources on tokio's paused clock: a dependent starts the instant its input is
//! ready, under the same deadline and fail-fast rule; the report shows when; and a property
//! test checks random DAGs against a reference model (start times, result, cancelled set).

use std::time::Duration;

use muster::{
    Aggregator, BuildError, Deadline, ErrorKind, Fallback, Optional, Timeout, builder::Input, report::Outcome,
};
use muster_adapters::mock::{MockFetcher, Step};
use proptest::prelude::*;
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Clone, Debug, PartialEq)]
struct Profile {
    tier: String,
}

#[tokio::test(start_paused = true)]
async fn a_dependent_starts_the_instant_its_input_is_ready() {
    let offers = MockFetcher::ok_after(ms(20), vec!["gold card"]);
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok_after(ms(30), Profile { tier: "gold".into() }))
        .source("transactions", MockFetcher::ok_after(ms(40), 3u32))
        .then("offers", Input::<0>, |user: &u64, profile: &Profile| format!("{user}/{}", profile.tier), offers.clone())
        .build()
        .unwrap();
    let started = Instant::now();
    let aggregate = aggregator.aggregate(&7).await.unwrap();
    assert_eq!(started.elapsed(), ms(50), "30 ms for the profile, then 20 ms for the offers");
    let (profile, transactions, offers_out) = aggregate.outputs;
    assert_eq!((profile.tier.as_str(), transactions, offers_out), ("gold", 3, vec!["gold card"]));
    let timing = |name: &str| aggregate.report.source(name).map(|source| (source.start, source.duration));
    assert_eq!(timing("offers"), Some((Some(ms(30)), ms(20))));
    assert_eq!(timing("transactions"), Some((Some(ms(0)), ms(40))));
    let record = &offers.records()[0];
    assert_eq!(record.started() - started, ms(30), "not a poll later");
    let line = aggregate.report.to_string().lines().find(|line| line.contains("offers")).unwrap().to_owned();
    assert!(line.ends_with("ok (after `profile`)"), "{line}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_input_cancels_its_dependent_which_never_starts() {
    let offers = MockFetcher::ok_after(ms(20), 1u32);
    let slow = MockFetcher::ok_after(ms(1_000), 2u32);
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::<u32>::err_after(ms(30), "503"))
        .source("transactions", slow.clone())
        .then("offers", Input::<0>, |_: &(), _: &u32| (), offers.clone())
        .build()
        .unwrap();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    assert_eq!((error.source_name(), error.report().elapsed), (Some("profile"), ms(30)));
    assert_eq!(error.cancelled(), ["transactions", "offers"]);
    assert_eq!(offers.calls(), 0, "the dependent never started");
    assert!(slow.was_cancelled());
    assert_eq!(error.report().source("offers").unwrap().start, None);
}

#[tokio::test(start_paused = true)]
async fn an_optional_input_gives_its_dependent_an_option_and_a_dependent_can_fall_back() {
    let aggregator = Aggregator::builder()
        .source_with("profile", MockFetcher::<Profile>::err_after(ms(5), "down"), Optional)
        .then_with(
            "offers",
            Input::<0>,
            |_: &(), profile: &Option<Profile>| profile.as_ref().map_or("standard".to_owned(), |p| p.tier.clone()),
            MockFetcher::<Vec<&str>>::err_after(ms(10), "offers down"),
            (Fallback(Vec::new()), Timeout(ms(100))),
        )
        .build()
        .unwrap();
    let started = Instant::now();
    let aggregate = aggregator.aggregate(&()).await.unwrap();
    assert_eq!(started.elapsed(), ms(15));
    assert_eq!(aggregate.outputs, (None, vec![]));
    assert!(matches!(aggregate.report.source("offers").unwrap().outcome, Outcome::FellBack { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_chain_runs_in_stages_under_one_deadline() {
    let aggregator = Aggregator::builder()
        .source("a", MockFetcher::ok_after(ms(100), 1u32))
        .then("b", Input::<0>, |_: &(), a: &u32| *a, MockFetcher::ok_after(ms(100), 2u32))
        .then("c", Input::<1>, |_: &(), b: &u32| *b, MockFetcher::ok_after(ms(100), 3u32))
        .options(Deadline(ms(250)))
        .build()
        .unwrap();
    let started = Instant::now();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    assert_eq!((error.kind(), started.elapsed()), (ErrorKind::Timeout, ms(250)));
    assert_eq!(error.pending(), ["c"]);
    assert_eq!(error.report().source("c").unwrap().start, Some(ms(200)));
}

#[tokio::test(start_paused = true)]
async fn dependents_by_name_and_a_missing_input() {
    let mut builder = Aggregator::by_name();
    for i in 0..40u32 {
        builder = builder.source(format!("s{i}"), MockFetcher::ok_after(ms(u64::from(i)), i));
    }
    // Past 32 sources the group polls only the woken ones: the dependent is woken by its input.
    let aggregator =
        builder.then("last", "s39", |_: &(), input: &u32| *input, MockFetcher::ok_after(ms(1), 99u32)).build().unwrap();
    let started = Instant::now();
    let outputs = aggregator.aggregate(&()).await.unwrap().outputs;
    assert_eq!((outputs["last"], started.elapsed()), (99, ms(40)));

    let missing = Aggregator::by_name().source("a", MockFetcher::ok(1u8)).then(
        "b",
        "nope",
        |_: &(), a: &u8| *a,
        MockFetcher::ok(2u8),
    );
    assert!(matches!(missing.build(), Err(BuildError::MissingInput(name)) if name == "nope"));
}

/// One source of a random DAG: its input (an earlier source), its delay, whether it fails.
#[derive(Clone, Debug)]
struct Node {
    input: Option<usize>,
    delay: u64,
    fails: bool,
}

fn dag() -> impl Strategy<Value = Vec<Node>> {
    (1usize..=10).prop_flat_map(|n| {
        let nodes: Vec<_> = (0..n)
            .map(|i| {
                let input = if i == 0 { Just(None).boxed() } else { proptest::option::weighted(0.6, 0..i).boxed() };
                (input, 0u64..6, proptest::bool::weighted(0.15)).prop_map(|(input, delay, fails)| Node {
                    input,
                    delay: delay * 5,
                    fails,
                })
            })
            .collect();
        nodes
    })
}

/// The model: start and end of every source (None: never started), then the first failure by
/// time (ties to the earliest declared) or success at the last end.
struct Model {
    starts: Vec<Option<u64>>,
    failure: Option<(usize, u64)>,
    elapsed: u64,
    cancelled: Vec<usize>,
}

fn model(nodes: &[Node]) -> Model {
    let mut ends: Vec<Option<u64>> = Vec::new();
    let mut starts = Vec::new();
    for node in nodes {
        let start = match node.input {
            None => Some(0),
            // A dependent starts when its input ends, if the input succeeded.
            Some(input) => ends[input].filter(|_| !nodes[input].fails),
        };
        starts.push(start);
        ends.push(start.map(|start| start + node.delay));
    }
    let failure = (0..nodes.len())
        .filter(|&i| nodes[i].fails)
        .filter_map(|i| Some((i, ends[i]?)))
        .min_by_key(|&(i, end)| (end, i));
    match failure {
        Some((_, at)) => {
            // Everything not finished by then is cancelled, started or not (a dependent whose
            // input had not ended is waiting: cancelled too); a start after the failure never happens.
            let cancelled = (0..nodes.len()).filter(|&i| ends[i].is_none_or(|end| end > at)).collect();
            let starts = starts.into_iter().map(|start| start.filter(|&start| start <= at)).collect();
            Model { starts, failure, elapsed: at, cancelled }
        }
        None => {
            let elapsed = ends.iter().flatten().copied().max().unwrap_or(0);
            Model { starts, failure: None, elapsed, cancelled: Vec::new() }
        }
    }
}

fn check(nodes: &[Node]) -> Result<(), TestCaseError> {
    let expected = model(nodes);
    let mocks: Vec<MockFetcher<u32>> = (nodes.iter().enumerate())
        .map(|(i, node)| {
            let step = if node.fails { Step::err(format!("s{i} failed")) } else { Step::ok(i as u32) };
            MockFetcher::script([step.after(ms(node.delay))])
        })
        .collect();
    let mut builder = Aggregator::by_name();
    for (i, (node, mock)) in nodes.iter().zip(&mocks).enumerate() {
        builder = match node.input {
            None => builder.source(format!("s{i}"), mock.clone()),
            Some(input) => {
                builder.then(format!("s{i}"), format!("s{input}").as_str(), |_: &(), _: &u32| (), mock.clone())
            }
        };
    }
    let aggregator = builder.build().map_err(|error| TestCaseError::fail(error.to_string()))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?;
    runtime.block_on(async {
        let clock = Instant::now();
        let result = aggregator.aggregate(&()).await;
        prop_assert_eq!(clock.elapsed(), ms(expected.elapsed), "elapsed");
        let report = match (&expected.failure, result) {
            (None, Ok(aggregate)) => {
                let want: Vec<u32> = (0..nodes.len() as u32).collect();
                prop_assert_eq!(aggregate.outputs.iter().map(|(_, v)| *v).collect::<Vec<_>>(), want);
                aggregate.report
            }
            (Some((root, _)), Err(error)) => {
                let root = format!("s{root}");
                prop_assert_eq!(error.source_name(), Some(root.as_str()), "root");
                let cancelled: Vec<String> = expected.cancelled.iter().map(|i| format!("s{i}")).collect();
                prop_assert_eq!(error.cancelled().to_vec(), cancelled, "cancelled");
                error.report().clone()
            }
            (expected, result) => {
                return Err(TestCaseError::fail(format!("expected {expected:?}, got {:?}", result.map(|_| ()))));
            }
        };
        for (i, (source, mock)) in report.sources.iter().zip(&mocks).enumerate() {
            prop_assert_eq!(source.start, expected.starts[i].map(ms), "start of s{}", i);
            prop_assert_eq!(mock.calls(), usize::from(expected.starts[i].is_some()), "calls of s{}", i);
        }
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_dags_match_the_reference_model(nodes in dag()) {
        check(&nodes)?;
    }
}
