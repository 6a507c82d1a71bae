//! Property test: random aggregators on tokio's paused clock against a small reference model.
//!
//! Each case is 1..=12 scripted [`MockFetcher`] sources and an optional global [`Deadline`].
//! A source is required or optional (with a fallback value, or omitted), may have its own
//! [`Timeout`] and a jitter-free [`Retry`], and plays one step per attempt: a value, an error or
//! a panic after a delay, or a hang. Every time is on a 5 ms grid, so ties are common.
//!
//! The model runs each source alone (sources only meet through cancellation), then combines:
//! - An attempt ends at its delay, or at its timer if that comes strictly first: its own
//!   timeout, or the global deadline for an optional source (when both could fire, the global
//!   deadline is reported). A required source gets no timer at the global deadline: the group's
//!   deadline handles it.
//! - A failed attempt is retried (errors and timeouts, never panics) after the backoff, unless
//!   that backoff would end at or after the deadline.
//! - An optional source that fails falls back; a required one fails the aggregation at that
//!   instant (ties go to the earliest declared), and everything that has not finished by then
//!   is cancelled. A source finishing at the same instant as the failure, or at the deadline,
//!   is in time.
//! - Required sources still pending at the deadline make it a `Timeout` naming them.
//!
//! It predicts the result kind, the root cause and its error, the elapsed time, the outputs,
//! and for every source its reported outcome, duration and attempts, and every call the mock
//! saw (when it started and ended, and how).

use std::time::Duration;

use muster::{
    AggregateError, Aggregator, BoxError, BuildError, Classify, Deadline, ErrorKind, Fallback, Fetcher, Retry, Timeout,
    async_trait, group::Outputs, policy::Policy as _, report::Outcome, report::TimeoutKind, report::Trigger,
};
use muster_adapters::mock::{CallOutcome, MockFetcher, Step as MockStep};
use proptest::prelude::*;
use tokio::time::Instant;

/// Longer than any scenario can take: reaching it means the aggregation hangs.
const HORIZON: Duration = Duration::from_secs(3600);

/// The message of every deliberate panic, and the panic hook that keeps it quiet.
#[path = "../../core/tests/support/panics.rs"]
mod panics;

use panics::{PANIC_MESSAGE, quiet_deliberate_panics};

/// What one attempt of a source does once its delay has passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Act {
    Ok,
    Err,
    Panic,
    Hang,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Step {
    delay: u64,
    act: Act,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    Required,
    /// Optional, replaced by its fallback value.
    Value,
    /// Optional, left out of the outputs.
    Omit,
}

/// A jitter-free retry policy: `attempts` in all, backoffs from `min` doubling up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RetrySpec {
    attempts: u32,
    min: u64,
    max: u64,
}

impl RetrySpec {
    /// The backoff after the `n`th failed attempt (counting from 0).
    fn backoff(&self, n: u32) -> u64 {
        (self.min << n.min(32)).min(self.max)
    }

    /// What the backoffs take at least, as the builder checks it against the deadline.
    fn total_backoff(&self) -> u64 {
        (0..self.attempts - 1).map(|n| self.backoff(n)).sum()
    }
}

#[derive(Clone, Debug)]
struct Source {
    /// One step per attempt; the last one repeats.
    steps: Vec<Step>,
    policy: Policy,
    timeout: Option<u64>,
    retry: Option<RetrySpec>,
}

#[derive(Clone, Debug)]
struct Scenario {
    sources: Vec<Source>,
    deadline: Option<u64>,
}

/// Why an attempt, or a source, failed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Failure {
    Error(String),
    Panicked,
    TimedOut { kind: TimeoutKind, after: u64 },
}

impl Failure {
    fn outcome(&self) -> Outcome {
        match self {
            Self::Error(error) => Outcome::Failed { error: error.clone() },
            Self::Panicked => Outcome::Panicked { message: PANIC_MESSAGE.to_owned() },
            Self::TimedOut { kind, .. } => Outcome::TimedOut { timeout: *kind },
        }
    }

    /// The error the aggregation reports as its source, when this failure is the root cause.
    fn source_error(&self) -> Option<String> {
        match self {
            Self::Error(error) => Some(error.clone()),
            Self::Panicked => None,
            Self::TimedOut { after, .. } => Some(format!("source timeout of {after}ms elapsed")),
        }
    }

    /// The cause the siblings it cancelled report.
    fn cancelled_by(&self, root: usize) -> String {
        match self {
            Self::Panicked => format!("cancelled by `s{root}`: panicked: {PANIC_MESSAGE}"),
            other => format!("cancelled by `s{root}`: {}", other.source_error().unwrap_or_default()),
        }
    }

    fn kind(&self) -> ErrorKind {
        match self {
            Self::Error(_) => ErrorKind::Failed,
            Self::Panicked => ErrorKind::Panicked,
            Self::TimedOut { .. } => ErrorKind::Timeout,
        }
    }
}

/// One call to a source's mock, as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Call {
    start: u64,
    /// `None`: it never ends by itself.
    end: Option<u64>,
    outcome: CallOutcome,
}

/// A source run on its own, with nothing cancelling it.
#[derive(Clone, Debug)]
struct Solo {
    calls: Vec<Call>,
    /// When it finishes; `None`: never.
    end: Option<u64>,
    result: Option<Result<u32, Failure>>,
}

/// What happened to one source, as the report and the mock must say.
#[derive(Clone, Debug, PartialEq, Eq)]
struct SourceExpectation {
    outcome: Outcome,
    duration: u64,
    attempts: u32,
    calls: Vec<(u64, Option<u64>, CallOutcome)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expected {
    /// The builder refuses the retry policy of this source: it cannot fit in the deadline.
    Build {
        source: usize,
    },
    Ok {
        elapsed: u64,
        outputs: Vec<(usize, u32)>,
    },
    Failed {
        kind: ErrorKind,
        root: usize,
        source_error: Option<String>,
        also_failed: Vec<usize>,
        cancelled: Vec<usize>,
        elapsed: u64,
    },
    Timeout {
        pending: Vec<usize>,
        elapsed: u64,
    },
    Hang,
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn value(source: usize, attempt: usize) -> u32 {
    (source * 10 + attempt) as u32
}

fn fallback(source: usize) -> u32 {
    1000 + source as u32
}

fn message(source: usize, attempt: usize) -> String {
    format!("s{source} attempt {attempt} failed on purpose")
}

/// Runs source `index` alone under the global `deadline`.
fn solo(index: usize, source: &Source, deadline: Option<u64>) -> Solo {
    let optional = source.policy != Policy::Required;
    let mut calls = Vec::new();
    let mut now = 0;
    loop {
        let attempt = calls.len();
        let step = source.steps[attempt.min(source.steps.len() - 1)];
        let own = source.timeout.map(|after| (now + after, TimeoutKind::Source, after));
        let global = deadline.map(|at| (at, TimeoutKind::Global, at - now));
        let timer = match (own, global) {
            (Some(own), Some(global)) if own.0 >= global.0 => optional.then_some(global),
            (Some(own), _) => Some(own),
            (None, Some(global)) => optional.then_some(global),
            (None, None) => None,
        };
        let natural = (step.act != Act::Hang).then_some(now + step.delay);
        let (end, result) = match (timer, natural) {
            (Some((at, kind, after)), natural) if natural.is_none_or(|natural| natural > at) => {
                (Some(at), Some(Err(Failure::TimedOut { kind, after })))
            }
            (_, None) => (None, None),
            (_, Some(natural)) => (
                Some(natural),
                match step.act {
                    Act::Ok => Some(Ok(value(index, attempt))),
                    Act::Err => Some(Err(Failure::Error(message(index, attempt)))),
                    Act::Panic => Some(Err(Failure::Panicked)),
                    Act::Hang => unreachable!("a hang never ends by itself"),
                },
            ),
        };
        let outcome = match &result {
            None => CallOutcome::Pending,
            Some(Ok(_)) => CallOutcome::Ok,
            Some(Err(Failure::Error(_))) => CallOutcome::Err,
            Some(Err(Failure::Panicked)) => CallOutcome::Panicked,
            Some(Err(Failure::TimedOut { .. })) => CallOutcome::Cancelled,
        };
        calls.push(Call { start: now, end, outcome });
        let (Some(end), Some(Err(failure))) = (end, &result) else { return Solo { calls, end, result } };
        now = end;
        let retryable = !matches!(failure, Failure::Panicked);
        let backoff = match source.retry {
            Some(retry) if retryable && calls.len() < retry.attempts as usize => retry.backoff(calls.len() as u32 - 1),
            _ => return Solo { calls, end: Some(end), result },
        };
        if deadline.is_some_and(|deadline| now + backoff >= deadline) {
            return Solo { calls, end: Some(end), result };
        }
        now += backoff;
    }
}

/// The reference model: what the aggregation must return, and what it must report for every
/// source.
fn model(scenario: &Scenario) -> (Expected, Vec<SourceExpectation>) {
    let Scenario { sources, deadline } = scenario;
    let budget = |source: &Source| match (source.retry, deadline) {
        (Some(retry), Some(deadline)) => retry.total_backoff() >= *deadline,
        _ => false,
    };
    if let Some(source) = sources.iter().position(budget) {
        return (Expected::Build { source }, Vec::new());
    }
    let solos: Vec<Solo> = sources.iter().enumerate().map(|(i, source)| solo(i, source, *deadline)).collect();
    let required = |i: usize| sources[i].policy == Policy::Required;
    let in_time = |end: u64| deadline.is_none_or(|deadline| end <= deadline);
    let failure = |i: usize| match (&solos[i].result, solos[i].end) {
        (Some(Err(failure)), Some(end)) if required(i) && in_time(end) => Some((end, failure)),
        _ => None,
    };
    // The first failure by time; ties go to the earliest declared.
    let first_failure = (0..sources.len()).filter_map(|i| Some((i, failure(i)?))).min_by_key(|(i, (at, _))| (*at, *i));
    let finished_by = |i: usize, at: u64| solos[i].end.is_some_and(|end| end <= at);
    let (expected, stop) = if let Some((root, (at, root_failure))) = first_failure {
        let failed = |i: usize| failure(i).is_some_and(|(end, _)| end == at);
        let expected = Expected::Failed {
            kind: root_failure.kind(),
            root,
            source_error: root_failure.source_error(),
            also_failed: (0..sources.len()).filter(|&i| i != root && failed(i)).collect(),
            cancelled: (0..sources.len()).filter(|&i| !finished_by(i, at)).collect(),
            elapsed: at,
        };
        (expected, Some((at, Outcome::Cancelled { cause: root_failure.cancelled_by(root) })))
    } else if let Some(deadline) = *deadline
        && (0..sources.len()).any(|i| !finished_by(i, deadline))
    {
        let pending: Vec<usize> = (0..sources.len()).filter(|&i| !finished_by(i, deadline)).collect();
        assert!(pending.iter().all(|&i| required(i)), "an optional source outlived the deadline");
        let expected = Expected::Timeout { pending, elapsed: deadline };
        (expected, Some((deadline, Outcome::TimedOut { timeout: TimeoutKind::Global })))
    } else if solos.iter().any(|solo| solo.end.is_none()) {
        return (Expected::Hang, Vec::new());
    } else {
        let elapsed = solos.iter().filter_map(|solo| solo.end).max().unwrap_or(0);
        let outputs = (solos.iter().enumerate())
            .filter_map(|(i, solo)| match (&solo.result, sources[i].policy) {
                (Some(Ok(value)), _) => Some((i, *value)),
                (_, Policy::Value) => Some((i, fallback(i))),
                _ => None,
            })
            .collect();
        (Expected::Ok { elapsed, outputs }, None)
    };
    let reports = (solos.iter().enumerate())
        .map(|(i, solo)| {
            let stopped = stop.as_ref().filter(|(at, _)| !finished_by(i, *at));
            let outcome = match (stopped, &solo.result) {
                (Some((_, outcome)), _) => outcome.clone(),
                (None, Some(Ok(_))) => Outcome::Ok,
                (None, Some(Err(failure))) if required(i) => failure.outcome(),
                (None, Some(Err(failure))) => Outcome::FellBack { after: Box::new(failure.outcome()) },
                (None, None) => unreachable!("a source that never ends is stopped or hangs the aggregation"),
            };
            let until = stopped.map_or(u64::MAX, |(at, _)| *at);
            let calls: Vec<_> = (solo.calls.iter())
                .filter(|call| call.start <= until)
                .map(|call| match call.end {
                    Some(end) if end <= until => (call.start, Some(end), call.outcome),
                    _ => (call.start, Some(until), CallOutcome::Cancelled),
                })
                .collect();
            let duration = stopped.map_or_else(|| solo.end.unwrap_or_default(), |(at, _)| *at);
            SourceExpectation { outcome, duration, attempts: calls.len() as u32, calls }
        })
        .collect();
    (expected, reports)
}

fn names(indices: &[usize]) -> Vec<String> {
    indices.iter().map(|i| format!("s{i}")).collect()
}

/// The scripted fetcher of every source: one step per attempt. Outputs are `Some(value)`, so
/// that every source of the aggregation has one output type (an omitted source falls back to
/// `None`).
fn mocks(scenario: &Scenario) -> Vec<MockFetcher<Option<u32>>> {
    let script = |(i, source): (usize, &Source)| {
        MockFetcher::script(source.steps.iter().enumerate().map(|(attempt, step)| {
            let mock = match step.act {
                Act::Ok => MockStep::ok(Some(value(i, attempt))),
                Act::Err => MockStep::err(message(i, attempt)),
                Act::Panic => MockStep::panic(PANIC_MESSAGE),
                Act::Hang => MockStep::hang(),
            };
            mock.after(ms(step.delay))
        }))
    };
    scenario.sources.iter().enumerate().map(script).collect()
}

/// A source as the aggregation holds it: its policy stack, boxed, with its error boxed.
type Boxed = Box<dyn Fetcher<(), Output = Option<u32>, Error = BoxError>>;

/// A fetcher whose error is boxed, so that sources with different policy stacks share a type.
struct Erased<F>(F);

#[async_trait]
impl<F> Fetcher<()> for Erased<F>
where
    F: Fetcher<(), Output = Option<u32>>,
{
    type Output = Option<u32>;
    type Error = BoxError;

    async fn fetch(&self, request: &()) -> Result<Option<u32>, BoxError> {
        self.0.fetch(request).await.map_err(Into::into)
    }
}

/// The source's policies, inside out: its own timeout, its retry, its fallback.
fn stack(index: usize, source: &Source, mock: MockFetcher<Option<u32>>) -> Boxed {
    match source.timeout {
        Some(after) => with_retry(index, source, Timeout(ms(after)).wrap(mock)),
        None => with_retry(index, source, mock),
    }
}

fn with_retry<F>(index: usize, source: &Source, fetcher: F) -> Boxed
where
    F: Fetcher<(), Output = Option<u32>> + 'static,
    F::Error: Classify + std::fmt::Display + Send,
{
    match source.retry {
        Some(retry) => {
            let retry = Retry::attempts(retry.attempts).backoff(ms(retry.min), ms(retry.max)).jitter(0.0);
            with_fallback(index, source, retry.wrap(fetcher))
        }
        None => with_fallback(index, source, fetcher),
    }
}

fn with_fallback<F>(index: usize, source: &Source, fetcher: F) -> Boxed
where
    F: Fetcher<(), Output = Option<u32>> + 'static,
    F::Error: Classify + std::fmt::Display,
{
    match source.policy {
        Policy::Required => Box::new(Erased(fetcher)),
        Policy::Value => Box::new(Erased(Fallback(Some(fallback(index))).wrap(fetcher))),
        Policy::Omit => Box::new(Erased(Fallback(None).wrap(fetcher))),
    }
}

fn build(
    scenario: &Scenario,
    mocks: &[MockFetcher<Option<u32>>],
) -> Result<Aggregator<(), Outputs<Option<u32>>>, BuildError> {
    let mut builder = Aggregator::by_name();
    for (i, (source, mock)) in scenario.sources.iter().zip(mocks).enumerate() {
        let retry = source.retry.map(|retry| Retry::attempts(retry.attempts).backoff(ms(retry.min), ms(retry.max)));
        // The retry is given to the builder too (as a check only), for its budget.
        let budget = retry.map(|retry| (retry, ()));
        builder = builder.source_with(format!("s{i}"), stack(i, source, mock.clone()), Check(budget));
    }
    builder.options(scenario.deadline.map(|after| Deadline(ms(after)))).build()
}

/// A policy that wraps nothing and only checks: the budget of a source's retry, which `stack`
/// applies (boxed, where the builder cannot see it).
struct Check(Option<(Retry, ())>);

impl<F> muster::policy::Policy<F> for Check {
    type Fetcher = F;

    fn wrap(self, inner: F) -> F {
        inner
    }

    fn check(&self) -> Result<Duration, muster::options::OptionError> {
        match &self.0 {
            Some((retry, ())) => <Retry as muster::policy::Policy<F>>::check(retry),
            None => Ok(Duration::ZERO),
        }
    }
}

fn check(scenario: &Scenario) -> Result<(), TestCaseError> {
    let (expected, reports) = model(scenario);
    let mocks = mocks(scenario);
    let aggregator = match (&expected, build(scenario, &mocks)) {
        (Expected::Build { source }, Err(BuildError::Budget { name, .. })) => {
            prop_assert_eq!(&*name, format!("s{source}"), "the source whose retries cannot fit");
            return Ok(());
        }
        (expected, Err(error)) => {
            return Err(TestCaseError::fail(format!("expected {expected:?}, the build failed: {error}")));
        }
        (Expected::Build { source }, Ok(_)) => {
            return Err(TestCaseError::fail(format!("the retries of s{source} cannot fit, yet it built")));
        }
        (_, Ok(aggregator)) => aggregator,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?;
    runtime.block_on(async {
        let clock = Instant::now();
        let result = tokio::time::timeout(HORIZON, aggregator.aggregate(&())).await;
        let elapsed = clock.elapsed();
        for (i, mock) in mocks.iter().enumerate() {
            let pending = mock.records().iter().any(|call| call.outcome() == CallOutcome::Pending);
            prop_assert!(!pending, "a call to s{i} outlived the aggregation");
        }
        let report = match (&expected, result) {
            (Expected::Ok { elapsed: at, outputs }, Ok(Ok(aggregate))) => {
                prop_assert_eq!(elapsed, ms(*at), "elapsed");
                let got: Vec<(String, u32)> =
                    aggregate.outputs.iter().filter_map(|(name, value)| Some((name.to_owned(), (*value)?))).collect();
                let want: Vec<(String, u32)> = outputs.iter().map(|&(i, value)| (format!("s{i}"), value)).collect();
                prop_assert_eq!(got, want, "outputs");
                prop_assert_eq!(&aggregate.report.trigger, &None, "trigger");
                aggregate.report
            }
            (Expected::Failed { kind, root, source_error, also_failed, cancelled, elapsed: at }, Ok(Err(error))) => {
                prop_assert_eq!(elapsed, ms(*at), "elapsed");
                prop_assert_eq!(error.kind(), *kind, "kind: {}", error);
                let timed_out = error.report().source(&format!("s{root}")).map(|source| &source.outcome)
                    == Some(&Outcome::TimedOut { timeout: TimeoutKind::Source });
                prop_assert_eq!(timed_out, *kind == ErrorKind::Timeout, "the root's own timeout");
                let root = format!("s{root}");
                prop_assert_eq!(error.source_name(), Some(root.as_str()), "root cause");
                let got_error = error.source_error().map(ToString::to_string);
                prop_assert_eq!(&got_error, source_error, "the root's error");
                prop_assert!(error.pending().is_empty(), "nothing is pending after a failure");
                let group = group_error(&error)?;
                prop_assert_eq!(group.also_failed().to_vec(), names(also_failed), "lost the tie");
                prop_assert_eq!(group.cancelled().to_vec(), names(cancelled), "cancelled");
                prop_assert_eq!(group.elapsed(), ms(*at), "the group's elapsed");
                prop_assert_eq!(&error.report().trigger, &Some(Trigger::Source(root.into())), "trigger");
                error.report().clone()
            }
            (Expected::Timeout { pending, elapsed: at }, Ok(Err(error))) => {
                prop_assert_eq!(elapsed, ms(*at), "elapsed");
                prop_assert_eq!(error.kind(), ErrorKind::Timeout, "kind: {}", error);
                prop_assert_eq!(error.source_name(), None, "the deadline has no source");
                prop_assert_eq!(error.pending().to_vec(), names(pending), "pending at the deadline");
                let group = group_error(&error)?;
                prop_assert_eq!(group.cancelled().to_vec(), names(pending), "cancelled at the deadline");
                prop_assert_eq!(&error.report().trigger, &Some(Trigger::Deadline), "trigger");
                error.report().clone()
            }
            (Expected::Hang, Err(_)) => {
                prop_assert_eq!(elapsed, HORIZON, "elapsed");
                return Ok(());
            }
            (expected, result) => {
                let got = result.map(|inner| inner.map(|aggregate| aggregate.outputs.len()));
                return Err(TestCaseError::fail(format!("expected {expected:?}, got {got:?}")));
            }
        };
        prop_assert_eq!(report.elapsed, elapsed, "the report's elapsed");
        prop_assert_eq!(report.sources.len(), reports.len(), "one report per source");
        for (i, (got, want)) in report.sources.iter().zip(&reports).enumerate() {
            prop_assert_eq!(&*got.name, format!("s{i}"), "declaration order");
            prop_assert_eq!(&got.outcome, &want.outcome, "outcome of s{}", i);
            prop_assert_eq!(got.start, Some(Duration::ZERO), "start of s{}", i);
            prop_assert_eq!(got.duration, ms(want.duration), "duration of s{}", i);
            prop_assert_eq!(got.attempts, want.attempts, "attempts of s{}", i);
            let calls: Vec<_> = (mocks[i].records().iter())
                .map(|call| {
                    let offset = |at: Instant| (at - clock).as_millis() as u64;
                    (offset(call.started()), call.ended().map(offset), call.outcome())
                })
                .collect();
            prop_assert_eq!(&calls, &want.calls, "calls to s{}", i);
        }
        Ok(())
    })
}

fn group_error(error: &AggregateError) -> Result<&muster::group::GroupError, TestCaseError> {
    error.group_error().ok_or_else(|| TestCaseError::fail(format!("no group error in {error}")))
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![5 => Just(Act::Ok), 2 => Just(Act::Err), 1 => Just(Act::Panic), 1 => Just(Act::Hang)]
}

/// Delays on a 5 ms grid, so that ties at the same instant are common.
fn step() -> impl Strategy<Value = Step> {
    ((0u64..=12).prop_map(|steps| steps * 5), act()).prop_map(|(delay, act)| Step { delay, act })
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![2 => Just(Policy::Required), 1 => Just(Policy::Value), 1 => Just(Policy::Omit)]
}

fn retry() -> impl Strategy<Value = RetrySpec> {
    (2u32..=3, 1u64..=4, 0u64..=3).prop_map(|(attempts, min, extra)| RetrySpec {
        attempts,
        min: min * 5,
        max: (min + extra) * 5,
    })
}

fn source() -> impl Strategy<Value = Source> {
    (
        prop::collection::vec(step(), 3),
        policy(),
        prop::option::weighted(0.4, (1u64..=12).prop_map(|steps| steps * 5)),
        prop::option::weighted(0.2, retry()),
    )
        .prop_map(|(mut steps, policy, timeout, retry)| {
            steps.truncate(retry.map_or(1, |retry| retry.attempts as usize));
            Source { steps, policy, timeout, retry }
        })
}

/// Most scenarios drop the retry policies that cannot fit in the deadline, so that only a few
/// are refused by the builder.
fn scenario() -> impl Strategy<Value = Scenario> {
    (
        prop::collection::vec(source(), 1..=12),
        prop::option::weighted(0.7, (1u64..=16).prop_map(|steps| steps * 5)),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(mut sources, deadline, keep_impossible_retries)| {
            if !keep_impossible_retries && let Some(deadline) = deadline {
                for source in &mut sources {
                    if source.retry.is_some_and(|retry| retry.total_backoff() >= deadline) {
                        source.retry = None;
                        source.steps.truncate(1);
                    }
                }
            }
            Scenario { sources, deadline }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn aggregator_matches_the_reference_model(scenario in scenario()) {
        quiet_deliberate_panics();
        check(&scenario)?;
    }
}

fn required(delay: u64, act: Act) -> Source {
    Source { steps: vec![Step { delay, act }], policy: Policy::Required, timeout: None, retry: None }
}

fn optional(policy: Policy, delay: u64, act: Act) -> Source {
    Source { policy, ..required(delay, act) }
}

impl Source {
    fn timeout(self, after: u64) -> Self {
        Self { timeout: Some(after), ..self }
    }

    /// Retries with backoffs from `min` to `max`, the later attempts playing `then`.
    fn retry(mut self, attempts: u32, min: u64, max: u64, then: &[Step]) -> Self {
        self.steps.extend_from_slice(then);
        Self { retry: Some(RetrySpec { attempts, min, max }), ..self }
    }
}

/// Hand-picked scenarios, with what the model predicts for each.
fn hand_picked() -> Vec<(Scenario, Expected)> {
    use Act::*;
    let case = |sources: Vec<Source>, deadline: Option<u64>| Scenario { sources, deadline };
    let failed = |kind, root, source_error: Option<String>, also_failed: Vec<usize>, cancelled, elapsed| {
        Expected::Failed { kind, root, source_error, also_failed, cancelled, elapsed }
    };
    vec![
        (
            case(vec![required(10, Ok), required(20, Ok)], None),
            Expected::Ok { elapsed: 20, outputs: vec![(0, 0), (1, 10)] },
        ),
        (
            case(vec![required(10, Ok), required(5, Err), required(5, Panic), required(50, Ok)], None),
            failed(ErrorKind::Failed, 1, Some(message(1, 0)), vec![2], vec![0, 3], 5),
        ),
        (
            case(vec![required(5, Panic), required(10, Ok)], None),
            failed(ErrorKind::Panicked, 0, None, vec![], vec![1], 5),
        ),
        (
            case(vec![required(30, Ok).timeout(10), required(20, Ok)], Some(50)),
            failed(ErrorKind::Timeout, 0, Some("source timeout of 10ms elapsed".into()), vec![], vec![1], 10),
        ),
        // A required source whose own timeout is at the deadline leaves it to the group.
        (
            case(vec![required(30, Ok).timeout(20), required(5, Ok)], Some(20)),
            Expected::Timeout { pending: vec![0], elapsed: 20 },
        ),
        // Optional sources pending at the deadline fall back; finishing at the deadline is in time.
        (
            case(vec![required(20, Ok), optional(Policy::Value, 0, Hang), optional(Policy::Omit, 30, Ok)], Some(20)),
            Expected::Ok { elapsed: 20, outputs: vec![(0, 0), (1, 1001)] },
        ),
        // An optional failure cancels nothing.
        (
            case(vec![optional(Policy::Value, 5, Err), required(10, Ok)], None),
            Expected::Ok { elapsed: 10, outputs: vec![(0, 1000), (1, 10)] },
        ),
        (case(vec![required(5, Ok), required(0, Hang)], None), Expected::Hang),
        // The second attempt starts after a 5 ms backoff and succeeds.
        (
            case(vec![required(10, Err).retry(2, 5, 5, &[Step { delay: 5, act: Ok }])], None),
            Expected::Ok { elapsed: 20, outputs: vec![(0, 1)] },
        ),
        // A retry whose backoff would end at the deadline is not started.
        (
            case(vec![required(10, Err).retry(2, 10, 10, &[Step { delay: 0, act: Ok }]), required(15, Ok)], Some(20)),
            failed(ErrorKind::Failed, 0, Some(message(0, 0)), vec![], vec![1], 10),
        ),
        (case(vec![required(5, Ok).retry(3, 10, 10, &[])], Some(20)), Expected::Build { source: 0 }),
    ]
}

/// A hand-picked case of every kind, so a broken model cannot agree with a broken aggregator by
/// predicting nothing interesting.
#[test]
fn the_model_predicts_each_kind() {
    for (scenario, expected) in hand_picked() {
        assert_eq!(model(&scenario).0, expected, "{scenario:?}");
    }
}

#[test]
fn the_model_reports_fallbacks_and_cancellations() {
    let scenario = Scenario {
        sources: vec![optional(Policy::Value, 0, Act::Hang), required(5, Act::Err), required(10, Act::Ok)],
        deadline: Some(20),
    };
    let outcomes: Vec<Outcome> = model(&scenario).1.into_iter().map(|source| source.outcome).collect();
    let cancelled = Outcome::Cancelled { cause: format!("cancelled by `s1`: {}", message(1, 0)) };
    assert_eq!(outcomes, [cancelled.clone(), Outcome::Failed { error: message(1, 0) }, cancelled]);
    let scenario =
        Scenario { sources: vec![optional(Policy::Omit, 0, Act::Hang), required(10, Act::Ok)], deadline: Some(5) };
    let outcomes: Vec<Outcome> = model(&scenario).1.into_iter().map(|source| source.outcome).collect();
    let fell_back = Outcome::FellBack { after: Box::new(Outcome::TimedOut { timeout: TimeoutKind::Global }) };
    assert_eq!(outcomes, [fell_back, Outcome::TimedOut { timeout: TimeoutKind::Global }]);
}

#[test]
fn the_aggregator_agrees_with_the_model_on_the_hand_picked_cases() {
    quiet_deliberate_panics();
    for (scenario, _) in hand_picked() {
        if let Err(error) = check(&scenario) {
            panic!("{scenario:?}: {error}");
        }
    }
}
