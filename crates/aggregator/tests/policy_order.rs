//! A tuple of policies lists them outermost first, as tower's tuples of layers and its
//! `ServiceBuilder` do: in `(A, B, C)` a fetch goes through `A`, then `B`, then `C`, then the
//! fetcher. A nested tuple is the flat one, a tower stack inside a tuple reads the same way,
//! and `check` adds up what every policy needs. The last tests show what a tuple written in
//! 0.2's order (inside first) now does, for the migration notes in the CHANGELOG.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use muster::report::Outcome::{FellBack, TimedOut};
use muster::{
    Aggregator, BuildError, Deadline, ErrorKind, Fallback, Fetcher, Optional, Retry, Timeout, async_trait, fetcher_fn,
    options::OptionError, policy::Coalesce, policy::Hedge, policy::Policy, report::TimeoutKind,
};
use muster_adapters::mock::{MockFetcher, Step};
use tokio::time::{Instant, sleep};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// What the recording policies and the fetcher saw, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(line);
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A policy that logs `> name` when a fetch enters it and `< name` when it leaves.
    fn record(&self, name: &'static str) -> Record {
        Record { name, log: self.clone() }
    }

    /// A fetcher that logs `fetch` and answers 1.
    fn fetcher(&self) -> impl Fetcher<u64, Output = u8, Error = std::io::Error> + Clone + use<> {
        let log = self.clone();
        fetcher_fn(move |_: &u64| {
            log.push("fetch".to_owned());
            async { Ok::<_, std::io::Error>(1_u8) }
        })
    }
}

/// The log of one fetch through `(outer, ..., inner)`: every `>` outside in, then every `<`.
fn nested(names: &[&str]) -> Vec<String> {
    let enter = names.iter().map(|name| format!("> {name}"));
    let leave = names.iter().rev().map(|name| format!("< {name}"));
    enter.chain(["fetch".to_owned()]).chain(leave).collect()
}

struct Record {
    name: &'static str,
    log: Log,
}

struct RecordFetcher<F> {
    name: &'static str,
    log: Log,
    inner: F,
}

impl<F> Policy<F> for Record {
    type Fetcher = RecordFetcher<F>;

    fn wrap(self, inner: F) -> RecordFetcher<F> {
        RecordFetcher { name: self.name, log: self.log, inner }
    }
}

#[async_trait]
impl<Req, F> Fetcher<Req> for RecordFetcher<F>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
{
    type Output = F::Output;
    type Error = F::Error;

    async fn fetch(&self, request: &Req) -> Result<F::Output, F::Error> {
        self.log.push(format!("> {}", self.name));
        let result = self.inner.fetch(request).await;
        self.log.push(format!("< {}", self.name));
        result
    }
}

/// A policy that wraps nothing and needs `0` (or refuses the source, for `None`).
struct Needs(Option<Duration>);

impl<F> Policy<F> for Needs {
    type Fetcher = F;

    fn wrap(self, inner: F) -> F {
        inner
    }

    fn check(&self) -> Result<Duration, OptionError> {
        self.0.ok_or(OptionError::ZeroTimeout)
    }
}

fn needs(n: u64) -> Needs {
    Needs(Some(ms(n)))
}

#[tokio::test(start_paused = true)]
async fn a_tuple_lists_its_policies_outermost_first() {
    let log = Log::default();
    let aggregator = Aggregator::builder()
        .source_with("profile", log.fetcher(), (log.record("a"), log.record("b"), log.record("c")))
        .build()
        .unwrap();
    assert_eq!(aggregator.aggregate(&7).await.unwrap().outputs, (1,));
    assert_eq!(log.take(), nested(&["a", "b", "c"]));

    let (a, b) = (log.record("a"), log.record("b"));
    assert_eq!((a, b).wrap(log.fetcher()).fetch(&7).await.unwrap(), 1);
    assert_eq!(log.take(), nested(&["a", "b"]), "a pair reads the same way");
    assert_eq!((log.record("a"),).wrap(log.fetcher()).fetch(&7).await.unwrap(), 1);
    assert_eq!(log.take(), nested(&["a"]));
}

#[tokio::test(start_paused = true)]
async fn a_nested_tuple_wraps_as_the_flat_one() {
    let log = Log::default();
    let r = |name| log.record(name);
    let flat = (r("a"), r("b"), r("c")).wrap(log.fetcher());
    let inner_pair = (r("a"), (r("b"), r("c"))).wrap(log.fetcher());
    let outer_pair = ((r("a"), r("b")), r("c")).wrap(log.fetcher());
    let with_units = ((), r("a"), ((), (r("b"),)), (r("c"), ())).wrap(log.fetcher());
    flat.fetch(&7).await.unwrap();
    let expected = log.take();
    assert_eq!(expected, nested(&["a", "b", "c"]));
    inner_pair.fetch(&7).await.unwrap();
    assert_eq!(log.take(), expected, "(a, (b, c))");
    outer_pair.fetch(&7).await.unwrap();
    assert_eq!(log.take(), expected, "((a, b), c)");
    with_units.fetch(&7).await.unwrap();
    assert_eq!(log.take(), expected, "`()` adds nothing");
}

#[tokio::test(start_paused = true)]
async fn twelve_policies_make_a_tuple_in_the_same_order() {
    let log = Log::default();
    let r = |name| log.record(name);
    let twelve = (r("1"), r("2"), r("3"), r("4"), r("5"), r("6"), r("7"), r("8"), r("9"), r("10"), r("11"), r("12"));
    let aggregator = Aggregator::builder().source_with("profile", log.fetcher(), twelve).build().unwrap();
    aggregator.aggregate(&7).await.unwrap();
    assert_eq!(log.take(), nested(&["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"]));
}

#[test]
fn check_adds_up_what_every_policy_of_a_tuple_needs() {
    type Wrapped = MockFetcher<u8>;
    assert_eq!(<(Needs,) as Policy<Wrapped>>::check(&(needs(1),)), Ok(ms(1)));
    assert_eq!(<(Needs, Needs, Needs) as Policy<Wrapped>>::check(&(needs(1), needs(2), needs(4))), Ok(ms(7)));
    let nested = (needs(1), (needs(2), (needs(4), needs(8))), ((), needs(16)));
    assert_eq!(Policy::<Wrapped>::check(&nested), Ok(ms(31)));
    let twelve = (needs(1), needs(1), needs(1), needs(1), needs(1), needs(1), (), (), (), needs(1), needs(1), needs(1));
    assert_eq!(Policy::<Wrapped>::check(&twelve), Ok(ms(9)));
    let retries = (Retry::attempts(2).backoff(ms(100), ms(100)), Retry::attempts(3).backoff(ms(10), ms(20)));
    assert_eq!(Policy::<Wrapped>::check(&retries), Ok(ms(130)), "a retry needs its backoffs");
    assert_eq!(Policy::<Wrapped>::check(&(needs(1), Needs(None), needs(2))), Err(OptionError::ZeroTimeout));

    // The builder refuses a source whose policies need the deadline, added up over the tuple.
    let builder = Aggregator::<u64, _>::builder()
        .source_with("profile", MockFetcher::ok(1_u8), (needs(300), (needs(150), needs(100))))
        .options(Deadline(ms(500)));
    let error = builder.build().unwrap_err();
    assert!(matches!(error, BuildError::Budget { needs, .. } if needs == ms(550)), "{error:?}");
}

#[tokio::test(start_paused = true)]
async fn a_retry_listed_before_a_timeout_times_each_attempt() {
    let slow_then_fast = || MockFetcher::script([Step::ok(1_u8).after(ms(500)), Step::ok(2).after(ms(5))]);
    let retry = || Retry::attempts(2).backoff(ms(10), ms(10)).jitter(0.0);

    let per_attempt = slow_then_fast();
    let aggregator =
        Aggregator::builder().source_with("profile", per_attempt.clone(), (retry(), Timeout(ms(50)))).build().unwrap();
    assert_eq!(aggregator.aggregate(&()).await.unwrap().outputs, (2,));
    assert_eq!(per_attempt.calls(), 2, "the timed-out attempt was retried");

    // 0.2's spelling of the same policies: now one timeout around every attempt together.
    let all_attempts = slow_then_fast();
    let aggregator =
        Aggregator::builder().source_with("profile", all_attempts.clone(), (Timeout(ms(50)), retry())).build().unwrap();
    assert_eq!(aggregator.aggregate(&()).await.unwrap_err().kind(), ErrorKind::Timeout);
    assert_eq!(all_attempts.calls(), 1, "the timeout outside the retry ended every attempt");
}

#[tokio::test(start_paused = true)]
async fn a_fallback_listed_last_answers_before_the_retry_sees_the_error() {
    let reset_then_ok = || MockFetcher::script([Step::err("reset"), Step::ok(4_u8)]);
    let retry = || Retry::attempts(2).backoff(ms(10), ms(10)).jitter(0.0);

    let outermost = reset_then_ok();
    let aggregator =
        Aggregator::builder().source_with("score", outermost.clone(), (Fallback(0_u8), retry())).build().unwrap();
    assert_eq!(aggregator.aggregate(&()).await.unwrap().outputs, (4,));
    assert_eq!(outermost.calls(), 2);

    // 0.2's spelling: the fallback is now inside the retry and replaces the first failure.
    let innermost = reset_then_ok();
    let aggregator =
        Aggregator::builder().source_with("score", innermost.clone(), (retry(), Fallback(0_u8))).build().unwrap();
    assert_eq!(aggregator.aggregate(&()).await.unwrap().outputs, (0,));
    assert_eq!(innermost.calls(), 1, "the retry never saw a failure");
}

#[tokio::test(start_paused = true)]
async fn an_optional_listed_last_still_answers_at_the_timeout_it_sits_in() {
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok(1_u8))
        .source_with("ads", MockFetcher::<u8>::hang(), (Optional, Timeout(ms(50))))
        .build()
        .unwrap();
    let aggregate = aggregator.aggregate(&()).await.unwrap();
    assert_eq!(aggregate.outputs, (1, None));
    let after = TimedOut { timeout: TimeoutKind::Source };
    assert_eq!(aggregate.report.source("ads").unwrap().outcome, FellBack { after: Box::new(after) });

    // 0.2's spelling: the same output type, `Option<u8>`, and the optional, now inside the
    // timeout, still answers when the timeout's deadline comes (it reads the deadline the
    // timeout set), and the report calls it the source's timeout.
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok(1_u8))
        .source_with("ads", MockFetcher::<u8>::hang(), (Timeout(ms(50)), Optional))
        .build()
        .unwrap();
    let aggregate = aggregator.aggregate(&()).await.unwrap();
    assert_eq!((aggregate.outputs, aggregate.report.elapsed), ((1, None), ms(50)));
    let after = TimedOut { timeout: TimeoutKind::Source };
    assert_eq!(aggregate.report.source("ads").unwrap().outcome, FellBack { after: Box::new(after) });
}

#[tokio::test(start_paused = true)]
async fn a_hedge_listed_before_a_timeout_times_each_hedged_attempt() {
    let replicas = || MockFetcher::script([Step::ok("slow").after(ms(1_000)), Step::ok("fast").after(ms(80))]);

    let each = replicas();
    let aggregator =
        Aggregator::builder().source_with("profile", each.clone(), (Hedge(ms(50)), Timeout(ms(100)))).build().unwrap();
    let started = Instant::now();
    assert_eq!(aggregator.aggregate(&()).await.unwrap().outputs, ("fast",));
    assert_eq!(started.elapsed(), ms(130), "the hedge, started at 50ms, had 100ms of its own");
    assert_eq!(each.calls(), 2);

    // 0.2's spelling: one timeout around both hedged attempts.
    let both = replicas();
    let aggregator =
        Aggregator::builder().source_with("profile", both.clone(), (Timeout(ms(100)), Hedge(ms(50)))).build().unwrap();
    let started = Instant::now();
    assert_eq!(aggregator.aggregate(&()).await.unwrap_err().kind(), ErrorKind::Timeout);
    assert_eq!(started.elapsed(), ms(100));
}

#[tokio::test(start_paused = true)]
async fn a_coalesce_listed_last_lets_each_waiter_keep_its_own_timeout() {
    // The call takes 120ms; a second aggregation joins it 40ms after the first.
    let call = || MockFetcher::script([Step::ok(1_u8).after(ms(120))]);
    let joined_later = |aggregator| async move {
        sleep(ms(40)).await;
        Aggregator::aggregate(aggregator, &7_u64).await
    };

    let shared = call();
    let aggregator =
        Aggregator::builder().source_with("profile", shared.clone(), (Timeout(ms(100)), Coalesce)).build().unwrap();
    let (first, second) = tokio::join!(aggregator.aggregate(&7), joined_later(&aggregator));
    assert_eq!(first.unwrap_err().kind(), ErrorKind::Timeout, "the first waiter's timeout, at 100ms");
    assert_eq!(second.unwrap().outputs, (1,), "the second waiter's timeout is at 140ms");
    assert_eq!(shared.calls(), 1, "one call, shared");

    // 0.2's spelling: the timeout is inside the shared call, so both waiters get the first's.
    let shared = call();
    let aggregator =
        Aggregator::builder().source_with("profile", shared.clone(), (Coalesce, Timeout(ms(100)))).build().unwrap();
    let (first, second) = tokio::join!(aggregator.aggregate(&7), joined_later(&aggregator));
    let cause = |error: &muster::AggregateError| error.source_error().map(ToString::to_string);
    let (first, second) = (first.unwrap_err(), second.unwrap_err());
    assert_eq!(cause(&first).as_deref(), Some("source timeout of 100ms elapsed"));
    assert_eq!(cause(&second).as_deref(), Some("source timeout of 100ms elapsed"));
    assert_eq!((first.kind(), second.kind()), (ErrorKind::Timeout, ErrorKind::Timeout), "the kind travels");
    assert_eq!((first.report().elapsed, second.report().elapsed), (ms(100), ms(60)), "one timeout for both");
    assert_eq!(shared.calls(), 1);
}

#[cfg(feature = "tower")]
mod tower_stacks {
    use tower::ServiceBuilder;
    use tower::util::{MapRequestLayer, MapResponseLayer};

    use super::*;
    use muster::policy::Tower;

    /// A tower layer that logs `> name` when a request passes it and `< name` when the
    /// response comes back.
    fn layer(
        log: &Log,
        name: &'static str,
    ) -> (MapRequestLayer<impl Fn(u64) -> u64 + Clone + use<>>, MapResponseLayer<impl Fn(u8) -> u8 + Clone + use<>>)
    {
        let (enter, leave) = (log.clone(), log.clone());
        let enter = MapRequestLayer::new(move |request| {
            enter.push(format!("> {name}"));
            request
        });
        let leave = MapResponseLayer::new(move |response| {
            leave.push(format!("< {name}"));
            response
        });
        (enter, leave)
    }

    async fn fetch_once<P>(log: &Log, policy: P) -> Vec<String>
    where
        P: Policy<MockFetcher<u8>>,
        P::Fetcher: Fetcher<u64, Output = u8> + 'static,
        <P::Fetcher as Fetcher<u64>>::Error: muster::Classify,
    {
        let aggregator = Aggregator::builder().source_with("profile", MockFetcher::ok(1_u8), policy).build();
        let aggregate = aggregator.expect("the policies are valid").aggregate(&7).await;
        assert_eq!(aggregate.expect("every layer passes the fetch on").outputs, (1,));
        log.take()
    }

    #[tokio::test(start_paused = true)]
    async fn a_tower_stack_inside_a_tuple_reads_the_same_way() {
        let log = Log::default();
        let expected: Vec<String> = ["> a", "> b", "> c", "> d", "< d", "< c", "< b", "< a"].map(str::to_owned).into();
        let l = |name| layer(&log, name);

        let one_tower_tuple = (log.record("a"), Tower((l("b"), l("c"))), log.record("d"));
        assert_eq!(fetch_once(&log, one_tower_tuple).await, expected, "a tower tuple inside a muster tuple");

        let towers = (Tower(l("a")), Tower(l("b")), Tower(l("c")), Tower(l("d")));
        assert_eq!(fetch_once(&log, towers).await, expected, "a muster tuple of tower layers");

        let builder = ServiceBuilder::new().layer(l("a")).layer(l("b")).layer(l("c")).layer(l("d")).into_inner();
        assert_eq!(fetch_once(&log, Tower(builder)).await, expected, "tower's `ServiceBuilder`");

        let all_tower = Tower((l("a"), l("b"), l("c"), l("d")));
        assert_eq!(fetch_once(&log, all_tower).await, expected, "one tower tuple");
    }
}
