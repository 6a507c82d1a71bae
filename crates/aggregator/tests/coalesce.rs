//! The coalescing (singleflight) edge cases of DESIGN "Core semantics", one test per rule, on
//! the [`Coalesce`] policy: on tokio's paused clock with scripted mocks (each call plays the
//! next step), plus two multi-threaded tests on the real clock.

use std::panic::AssertUnwindSafe;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::FutureExt as _;
use futures::StreamExt as _;
use muster::policy::CoalesceFetcher;
use muster::{Classify, Fetcher, fetcher_fn, policy::Coalesce, policy::Policy};
use muster_adapters::mock::{CallOutcome, MockError, MockFetcher, Step};
use tokio::time::{Instant, timeout};

#[path = "../../core/tests/support/panics.rs"]
mod panics;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn coalesced(steps: impl IntoIterator<Item = Step<u32>>) -> (MockFetcher<u32>, CoalesceFetcher<MockFetcher<u32>>) {
    let mock = MockFetcher::script(steps);
    (mock.clone(), Coalesce.wrap(mock))
}

#[tokio::test(start_paused = true)]
async fn concurrent_fetches_for_one_key_share_one_call() {
    let (mock, profiles) = coalesced([Step::ok(1).after(ms(30)), Step::ok(2)]);
    let started = Instant::now();
    let (a, b, c) = tokio::join!(profiles.fetch(&"user-42"), profiles.fetch(&"user-42"), profiles.fetch(&"user-42"));
    assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), (1, 1, 1));
    assert_eq!(started.elapsed(), ms(30));
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn every_waiter_gets_the_same_real_error() {
    let (mock, profiles) = coalesced([Step::err("503 from profile").after(ms(10)).permanent()]);
    let (a, b) = tokio::join!(profiles.fetch(&"42"), profiles.fetch(&"42"));
    let (a, b) = (a.unwrap_err(), b.unwrap_err());
    assert_eq!(a.to_string(), "503 from profile", "displays as the error itself");
    assert!(std::ptr::eq(a.get_ref(), b.get_ref()), "one error, shared");
    assert_eq!(a.get_ref(), &MockError::new("503 from profile").permanent());
    assert!(!a.is_retryable(), "classifies as the error itself");
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_call_goes_on_when_the_waiter_that_started_it_leaves() {
    let (mock, profiles) = coalesced([Step::ok(1).after(ms(50)), Step::ok(2)]);
    let (impatient, patient) = tokio::join!(timeout(ms(10), profiles.fetch(&"key")), profiles.fetch(&"key"));
    assert!(impatient.is_err());
    assert_eq!(patient.unwrap(), 1, "the call started by the first waiter");
    assert_eq!(mock.records()[0].outcome(), CallOutcome::Ok);
}

#[tokio::test(start_paused = true)]
async fn the_call_goes_on_when_a_joining_waiter_leaves() {
    let (mock, profiles) = coalesced([Step::ok(1).after(ms(50))]);
    let (first, joining) = tokio::join!(profiles.fetch(&"key"), timeout(ms(10), profiles.fetch(&"key")));
    assert_eq!(first.unwrap(), 1);
    assert!(joining.is_err());
    assert_eq!(mock.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_call_is_dropped_exactly_when_the_last_waiter_leaves() {
    let (mock, profiles) = coalesced([Step::ok(1).after(ms(100))]);
    let started = Instant::now();
    let fetch = |patience| timeout(ms(patience), profiles.fetch(&"key"));
    let (a, b, c) = tokio::join!(fetch(10), fetch(30), fetch(20));
    assert!(a.is_err() && b.is_err() && c.is_err());
    let record = &mock.records()[0];
    assert!(record.is_cancelled());
    assert_eq!(record.ended().map(|ended| ended - started), Some(ms(30)), "dropped with the last waiter");
}

#[tokio::test(start_paused = true)]
async fn a_fetch_arriving_after_every_waiter_left_starts_a_fresh_call() {
    let (mock, profiles) = coalesced([Step::ok(1).after(ms(50)), Step::ok(2).after(ms(50))]);
    let mut abandoned = Box::pin(profiles.fetch(&"key"));
    assert!(futures::poll!(abandoned.as_mut()).is_pending());
    drop(abandoned);
    assert!(mock.records()[0].is_cancelled());
    assert_eq!(profiles.fetch(&"key").await.unwrap(), 2, "never the abandoned call");
    assert_eq!(mock.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_panic_is_a_panic_in_every_waiter_and_the_coalescer_stays_usable() {
    panics::quiet_deliberate_panics();
    let (mock, profiles) = coalesced([Step::panic(panics::PANIC_MESSAGE).after(ms(5)), Step::ok(3)]);
    let catch = || AssertUnwindSafe(profiles.fetch(&"key")).catch_unwind();
    let (a, b) = tokio::join!(catch(), catch());
    for payload in [a.unwrap_err(), b.unwrap_err()] {
        assert_eq!(payload.downcast_ref::<String>().map(String::as_str), Some(panics::PANIC_MESSAGE));
    }
    assert_eq!(profiles.fetch(&"key").await.unwrap(), 3);
    assert_eq!(mock.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn nothing_is_cached_after_the_call_ends() {
    let (mock, profiles) = coalesced([Step::ok(1), Step::ok(2), Step::err("down"), Step::ok(4)]);
    assert_eq!(profiles.fetch(&"key").await.unwrap(), 1);
    assert_eq!(profiles.fetch(&"key").await.unwrap(), 2);
    assert!(profiles.fetch(&"key").await.is_err());
    assert_eq!(profiles.fetch(&"key").await.unwrap(), 4, "errors are not cached");
    assert_eq!(mock.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_fetch_arriving_after_the_end_starts_a_new_call_even_before_every_waiter_has_read_the_result() {
    let (mock, profiles) = coalesced([Step::ok(1).after(ms(10)), Step::ok(3).after(ms(10))]);
    let mut a = pin!(profiles.fetch(&"key"));
    let mut b = pin!(profiles.fetch(&"key"));
    assert!(futures::poll!(a.as_mut()).is_pending());
    assert!(futures::poll!(b.as_mut()).is_pending());
    tokio::time::advance(ms(10)).await;
    assert_eq!(a.await.unwrap(), 1, "the call ended");
    let late = profiles.fetch(&"key").await;
    assert_eq!(b.await.unwrap(), 1, "an earlier waiter still gets the result");
    assert_eq!(late.unwrap(), 3, "the late fetch made its own call");
    assert_eq!(mock.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn distinct_keys_never_share_a_call() {
    let (mock, profiles) = coalesced([Step::ok(1).after(ms(10)), Step::ok(2).after(ms(10))]);
    let (a, b) = tokio::join!(profiles.fetch(&"alice"), profiles.fetch(&"bob"));
    assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
    assert_eq!(mock.calls(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_waiters_on_four_threads_share_one_call() {
    const WAITERS: usize = 64;
    let calls = Arc::new(AtomicUsize::new(0));
    let (open, gate) = futures::channel::oneshot::channel::<()>();
    let gate = gate.shared();
    let fetcher = {
        let calls = Arc::clone(&calls);
        fetcher_fn(move |_: &&str| {
            calls.fetch_add(1, Ordering::SeqCst);
            let gate = gate.clone();
            async move {
                gate.await.map_err(|_| std::io::Error::other("gate"))?;
                Ok::<_, std::io::Error>(7)
            }
        })
    };
    let profiles = Arc::new(Coalesce.wrap(fetcher));
    let (joined_tx, joined_rx) = futures::channel::mpsc::unbounded();
    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let (profiles, joined_tx) = (Arc::clone(&profiles), joined_tx.clone());
            tokio::spawn(async move {
                let mut fetch = pin!(profiles.fetch(&"key"));
                // The first poll starts or joins the call; the gate is still closed.
                assert!(futures::poll!(fetch.as_mut()).is_pending());
                joined_tx.unbounded_send(()).unwrap();
                fetch.await
            })
        })
        .collect();
    drop(joined_tx);
    assert_eq!(joined_rx.take(WAITERS).count().await, WAITERS);
    open.send(()).unwrap();
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().unwrap(), 7);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "{WAITERS} waiters must share one call");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_coming_and_going_on_four_threads_never_leak_a_call() {
    let mock = MockFetcher::script((0..20 * 32).map(|_| Step::ok(1u32).after(ms(2))));
    let profiles = Arc::new(Coalesce.wrap(mock.clone()));
    for round in 0..20_u64 {
        let waiters: Vec<_> = (0..32_u64)
            .map(|i| {
                let profiles = Arc::clone(&profiles);
                let patience = ms((i + round) % 4);
                tokio::spawn(async move { timeout(patience, profiles.fetch(&(i % 4))).await })
            })
            .collect();
        for waiter in waiters {
            if let Ok(result) = waiter.await.unwrap() {
                assert_eq!(result.unwrap(), 1);
            }
        }
        let pending = mock.records().iter().filter(|call| call.outcome() == CallOutcome::Pending).count();
        assert_eq!(pending, 0, "round {round} leaked a call");
    }
}

/// What a fetcher saw of its call: `(ms since the test started, cancelled?, deadline - start
/// in ms)` at each probe.
type Seen = Arc<std::sync::Mutex<Vec<(u64, bool, Option<u64>)>>>;

/// A fetcher that takes `muster::cancellation()` at its start, as the docs tell it to, and
/// probes its token and deadline at 0, 150 and 300 ms, returning `value` at 300 ms; `calls`
/// counts its calls. Like a backend told its budget, it gives up once its deadline has passed.
fn probing(
    started: Instant,
    seen: &Seen,
    calls: &Arc<AtomicUsize>,
    value: u32,
) -> impl Fetcher<u32, Output = u32, Error = std::io::Error> + Clone + use<> {
    let (seen, calls) = (Arc::clone(seen), Arc::clone(calls));
    fetcher_fn(move |_: &u32| {
        calls.fetch_add(1, Ordering::SeqCst);
        let token = muster::cancellation().expect("a source has a token");
        let seen = Arc::clone(&seen);
        async move {
            let probe = || {
                let at = |instant: Instant| (instant - started).as_millis() as u64;
                seen.lock().expect("not poisoned").push((
                    at(Instant::now()),
                    token.is_cancelled(),
                    muster::deadline().map(at),
                ));
            };
            let past = || muster::remaining().is_some_and(|left| left.is_zero());
            probe();
            tokio::time::sleep(ms(150)).await;
            probe();
            if past() {
                return Err(std::io::Error::other("past the call's deadline"));
            }
            tokio::time::sleep(ms(150)).await;
            probe();
            Ok(value)
        }
    })
}

/// Issue 18's scenario: aggregations X and Y share a coalesced `profile` call of 300 ms; X's
/// other source fails at 100 ms. Y gets the profile at 300 ms, and the call never saw a
/// cancellation: its token is its own, not X's.
#[tokio::test(start_paused = true)]
async fn a_waiter_whose_aggregation_fails_does_not_cancel_the_shared_call() {
    let started = Instant::now();
    let (seen, calls) = (Seen::default(), Arc::new(AtomicUsize::new(0)));
    let other = MockFetcher::script([Step::err("other down").after(ms(100)), Step::ok(0).after(ms(10))]);
    let aggregator = muster::Aggregator::builder()
        .source_with("profile", probing(started, &seen, &calls, 7), Coalesce)
        .source("other", other)
        .build()
        .unwrap();
    let y = async {
        let result = aggregator.aggregate(&42).await;
        (result, started.elapsed())
    };
    let (x, (y, y_elapsed)) = tokio::join!(aggregator.aggregate(&42), y);
    let x = x.unwrap_err();
    assert_eq!(x.source_name(), Some("other"));
    assert_eq!(x.report().elapsed, ms(100));
    let y = y.expect("Y gets the profile");
    assert_eq!(y.outputs, (7, 0));
    assert_eq!(y_elapsed, ms(300), "the profile came at 300 ms, not a cancellation at 100 ms");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "one shared call");
    let seen = seen.lock().unwrap().clone();
    let cancelled: Vec<(u64, bool)> = seen.iter().map(|&(at, cancelled, _)| (at, cancelled)).collect();
    assert_eq!(cancelled, [(0, false), (150, false), (300, false)], "the call saw no cancellation");
    let profile = &y.report.sources[0];
    assert_eq!(profile.shared, Some(2), "the report counts the waiters");
    assert!(y.report.to_string().contains("(shared by 2)"), "{}", y.report);
    assert_eq!(y.report.sources[1].shared, None, "a call of its own");
}

/// When every waiter has gone, the call's token is cancelled with the cause of the last one
/// to leave: the token the call took at its start reads it (here from a drop guard), and so
/// does `muster::cancellation()` as the call is dropped.
#[tokio::test(start_paused = true)]
async fn the_last_waiter_to_leave_cancels_the_call_with_its_cause() {
    type Dropped = Arc<std::sync::Mutex<Option<(Option<String>, Option<String>, u64)>>>;
    struct Guard(Dropped, muster::cancel::CancelToken, Instant);
    impl Drop for Guard {
        fn drop(&mut self) {
            let taken = self.1.cause().map(ToString::to_string);
            let current = muster::cancellation().and_then(|token| token.cause().map(ToString::to_string));
            let at = self.2.elapsed().as_millis() as u64;
            *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((taken, current, at));
        }
    }
    let started = Instant::now();
    let dropped = Dropped::default();
    let profile = {
        let dropped = Arc::clone(&dropped);
        fetcher_fn(move |_: &u32| {
            let token = muster::cancellation().expect("a source has a token");
            let guard = Guard(Arc::clone(&dropped), token, started);
            async move {
                tokio::time::sleep(ms(300)).await;
                drop(guard);
                Ok::<_, std::io::Error>(7_u32)
            }
        })
    };
    let other = MockFetcher::<u32>::script([Step::err("x down").after(ms(50)), Step::err("y down").after(ms(100))]);
    let aggregator =
        muster::Aggregator::builder().source_with("profile", profile, Coalesce).source("other", other).build().unwrap();
    let (x, y) = tokio::join!(aggregator.aggregate(&1), aggregator.aggregate(&1));
    assert_eq!((x.unwrap_err().report().elapsed, y.unwrap_err().report().elapsed), (ms(50), ms(100)));
    let y_cause = Some("cancelled by `other`: y down".to_owned());
    let dropped = dropped.lock().unwrap().clone();
    assert_eq!(
        dropped,
        Some((y_cause.clone(), y_cause, 100)),
        "Y left last, at 100 ms, and X's cause never reached it"
    );
}

/// The shared call runs under the latest deadline of the waiters still waiting: when X (whose
/// deadline is 100 ms) leaves, Y's later deadline (500 ms) is the call's, and nothing inside
/// the call fails Y by X's deadline.
#[tokio::test(start_paused = true)]
async fn a_waiter_with_a_later_deadline_is_not_failed_by_the_starters_deadline() {
    let started = Instant::now();
    let (seen, calls) = (Seen::default(), Arc::new(AtomicUsize::new(0)));
    let aggregator = muster::Aggregator::builder()
        .source_with("profile", probing(started, &seen, &calls, 7), Coalesce)
        .build()
        .unwrap();
    let within = |millis| muster::RequestContext::new().deadline(ms(millis));
    let (x, y) = tokio::join!(aggregator.aggregate_with(&1, within(100)), aggregator.aggregate_with(&1, within(500)));
    assert_eq!(x.unwrap_err().kind(), muster::ErrorKind::Timeout, "X's own deadline fails X");
    assert_eq!(y.expect("Y has until 500 ms").outputs, (7,));
    let seen = seen.lock().unwrap().clone();
    // At 0 ms only X had joined (its poll started the call); Y joined in the same tick.
    assert_eq!(seen, [(0, false, Some(100)), (150, false, Some(500)), (300, false, Some(500))]);
}

/// Inside a coalesced source, a tree of nested aggregators and completion members takes the
/// shared call's token as its parent: X's failure reaches none of them, and Y gets the tree.
#[tokio::test(start_paused = true)]
async fn a_tree_of_nested_aggregators_and_completion_members_follows_the_calls_token() {
    use muster::completion::{all, first_ok};
    let started = Instant::now();
    let (seen, calls) = (Seen::default(), Arc::new(AtomicUsize::new(0)));
    let leaf = |value| probing(started, &seen, &calls, value);
    let inner = muster::Aggregator::builder()
        .source("all", all([("a", leaf(1)), ("b", leaf(2))]).unwrap())
        .source("first_ok", first_ok([("c", leaf(3))]).unwrap())
        .build()
        .unwrap();
    let middle = muster::Aggregator::builder().source("inner", inner).source("d", leaf(4)).build().unwrap();
    let other = MockFetcher::script([Step::err("other down").after(ms(100)), Step::ok(0).after(ms(10))]);
    let outer =
        muster::Aggregator::builder().source_with("tree", middle, Coalesce).source("other", other).build().unwrap();
    let (x, y) = tokio::join!(outer.aggregate(&5), outer.aggregate(&5));
    assert_eq!(x.unwrap_err().source_name(), Some("other"));
    let y = y.expect("Y gets the whole tree");
    let ((inner, d), _) = y.outputs;
    let ((all, first), d) = (inner, d);
    assert_eq!((all["a"], all["b"], first, d), (1, 2, 3, 4));
    assert_eq!(calls.load(Ordering::SeqCst), 4, "every leaf ran once, for both aggregations");
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 12);
    assert!(seen.iter().all(|&(_, cancelled, _)| !cancelled), "no leaf saw X's cancellation: {seen:?}");
    assert_eq!(y.report.sources[0].shared, Some(2));
}
