//! The coalescing (singleflight) edge case of DESIGN "Core semantics": one test per rule, on
//! tokio's paused clock, plus two multi-threaded tests on the real clock.

use std::error::Error as _;
use std::fmt;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Poll;
use std::time::Duration;

use futures::FutureExt as _;
use futures::StreamExt as _;
use muster_core::{CoalesceError, Coalescer, SharedError};
use tokio::time::{Instant, timeout};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// The error a failing test call returns.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SourceError(&'static str);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed on purpose", self.0)
    }
}

impl std::error::Error for SourceError {}

const PANIC_MESSAGE: &str = "call panicked on purpose";

/// What a test call does once its delay has passed.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Ok(u32),
    Err(&'static str),
    Panic,
}

#[derive(Debug, Default)]
struct State {
    started: usize,
    finished: usize,
    /// When each call that was dropped before its end was dropped, counted from the probe's
    /// creation.
    cancelled: Vec<Duration>,
}

type CallFuture = Pin<Box<dyn Future<Output = Result<u32, SourceError>> + Send>>;

/// Counts the calls started, finished and dropped before their end (cancelled).
#[derive(Clone, Debug)]
struct Probe {
    state: Arc<Mutex<State>>,
    epoch: Instant,
}

impl Probe {
    fn new() -> Self {
        Self { state: Arc::default(), epoch: Instant::now() }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A call that takes `delay`, then ends with `outcome`.
    fn call(&self, delay: Duration, outcome: Outcome) -> impl FnOnce() -> CallFuture + Send + 'static {
        let probe = self.clone();
        move || {
            Box::pin(async move {
                let mut running = Running::start(probe);
                tokio::time::sleep(delay).await;
                running.finished = true;
                match outcome {
                    Outcome::Ok(value) => Ok(value),
                    Outcome::Err(name) => Err(SourceError(name)),
                    Outcome::Panic => panic!("{PANIC_MESSAGE}"),
                }
            })
        }
    }
}

/// A drop guard inside a call: records whether the call was dropped before its end, and when.
struct Running {
    probe: Probe,
    finished: bool,
}

impl Running {
    fn start(probe: Probe) -> Self {
        probe.state().started += 1;
        Self { probe, finished: false }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let at = self.probe.epoch.elapsed();
        let mut state = self.probe.state();
        if self.finished {
            state.finished += 1;
        } else {
            state.cancelled.push(at);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn concurrent_runs_for_one_key_share_one_call() {
    let probe = Probe::new();
    let coalescer = Coalescer::new();
    let clone = coalescer.clone();
    let (a, b, c) = tokio::join!(
        coalescer.run("user-42", probe.call(ms(30), Outcome::Ok(1))),
        clone.run("user-42", probe.call(ms(30), Outcome::Ok(2))),
        coalescer.run("user-42", probe.call(ms(30), Outcome::Ok(3))),
    );
    assert_eq!((a.unwrap(), b.unwrap(), c.unwrap()), (1, 1, 1), "every waiter gets the first caller's call");
    assert_eq!(probe.epoch.elapsed(), ms(30));
    let state = probe.state();
    assert_eq!((state.started, state.finished), (1, 1), "one call for three waiters");
    assert!(state.cancelled.is_empty());
    assert_eq!(coalescer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn every_waiter_gets_the_same_real_error() {
    let probe = Probe::new();
    let coalescer = Coalescer::new();
    let (a, b) = tokio::join!(
        coalescer.run(42, probe.call(ms(10), Outcome::Err("profile"))),
        coalescer.run(42, probe.call(ms(10), Outcome::Ok(2))),
    );
    let (a, b) = (a.unwrap_err(), b.unwrap_err());
    assert!(a.is_failed() && !a.is_panic());
    assert_eq!(a.to_string(), "shared call failed");
    assert!(Arc::ptr_eq(a.get_ref().unwrap(), b.get_ref().unwrap()), "waiters must share one error");
    assert_eq!(a.get_ref().unwrap().downcast_ref::<SourceError>(), Some(&SourceError("profile")));
    let source = b.source().unwrap();
    assert_eq!(source.downcast_ref::<SourceError>(), Some(&SourceError("profile")), "source() is the real error");
    assert_eq!(b.into_shared().downcast_ref::<SourceError>(), Some(&SourceError("profile")));
    assert_eq!(probe.state().started, 1);
}

#[tokio::test(start_paused = true)]
async fn a_shared_error_returned_by_the_call_reaches_the_waiters_unwrapped() {
    let coalescer = Coalescer::<u32, u32>::new();
    let original: SharedError = Arc::new(SourceError("profile"));
    let returned = Arc::clone(&original);
    let error = coalescer.run(1, move || async move { Err(returned) }).await.unwrap_err();
    assert!(Arc::ptr_eq(&error.into_shared(), &original));
}

#[tokio::test(start_paused = true)]
async fn the_call_goes_on_when_the_waiter_that_started_it_leaves() {
    let probe = Probe::new();
    let coalescer = Coalescer::new();
    let (starter, joiner, ()) = tokio::join!(
        timeout(ms(10), coalescer.run("key", probe.call(ms(50), Outcome::Ok(1)))),
        coalescer.run("key", probe.call(ms(50), Outcome::Ok(2))),
        async {
            tokio::time::sleep(ms(20)).await;
            assert!(probe.state().cancelled.is_empty(), "the call was dropped with a waiter left");
            assert_eq!(coalescer.in_flight(), 1);
        },
    );
    assert!(starter.is_err(), "the starter timed out");
    assert_eq!(joiner.unwrap(), 1, "the joiner gets the starter's call");
    assert_eq!(probe.epoch.elapsed(), ms(50));
    let state = probe.state();
    assert_eq!((state.started, state.finished), (1, 1));
    assert!(state.cancelled.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_call_goes_on_when_a_joining_waiter_leaves() {
    let probe = Probe::new();
    let coalescer = Coalescer::new();
    let (starter, joiner) = tokio::join!(
        coalescer.run("key", probe.call(ms(50), Outcome::Ok(1))),
        timeout(ms(10), coalescer.run("key", probe.call(ms(50), Outcome::Ok(2)))),
    );
    assert_eq!(starter.unwrap(), 1);
    assert!(joiner.is_err(), "the joiner timed out");
    let state = probe.state();
    assert_eq!((state.started, state.finished), (1, 1));
    assert!(state.cancelled.is_empty());
}

#[tokio::test(start_paused = true)]
async fn the_call_is_dropped_exactly_when_the_last_waiter_leaves() {
    let probe = Probe::new();
    let coalescer = Coalescer::new();
    let run = |patience| timeout(ms(patience), coalescer.run("key", probe.call(ms(100), Outcome::Ok(1))));
    let (a, b, c) = tokio::join!(run(10), run(30), run(20));
    assert!(a.is_err() && b.is_err() && c.is_err(), "every waiter timed out");
    let state = probe.state();
    assert_eq!(state.started, 1);
    assert_eq!(state.finished, 0);
    assert_eq!(state.cancelled, [ms(30)], "dropped once, when the last waiter left at 30ms");
    assert_eq!(coalescer.in_flight(), 0, "an abandoned call must not stay registered");
}

#[tokio::test(start_paused = true)]
async fn a_caller_arriving_after_every_waiter_left_starts_a_fresh_call() {
    let probe = Probe::new();
    let coalescer = Coalescer::new();
    let mut abandoned = Box::pin(coalescer.run("key", probe.call(ms(50), Outcome::Ok(1))));
    assert!(futures::poll!(&mut abandoned).is_pending());
    assert_eq!(coalescer.in_flight(), 1);
    drop(abandoned);
    assert_eq!(probe.state().cancelled, [ms(0)]);
    assert_eq!(coalescer.in_flight(), 0);

    // At the same instant: the newcomer must not see the abandoned call.
    let fresh = coalescer.run("key", probe.call(ms(50), Outcome::Ok(2))).await;
    assert_eq!(fresh.unwrap(), 2, "the newcomer ran its own call to the end");
    assert_eq!(probe.epoch.elapsed(), ms(50));
    let state = probe.state();
    assert_eq!((state.started, state.finished, state.cancelled.len()), (2, 1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_caller_arriving_after_a_timed_out_waiter_starts_a_fresh_call() {
    let probe = Probe::new();
    let coalescer = Coalescer::new();
    let first = timeout(ms(10), coalescer.run("key", probe.call(ms(50), Outcome::Ok(1)))).await;
    assert!(first.is_err());
    let second = coalescer.run("key", probe.call(ms(50), Outcome::Ok(2))).await;
    assert_eq!(second.unwrap(), 2);
    assert_eq!(probe.epoch.elapsed(), ms(60), "the second call ran for its full 50ms");
    let state = probe.state();
    assert_eq!((state.started, state.finished), (2, 1));
    assert_eq!(state.cancelled, [ms(10)]);
}

#[tokio::test(start_paused = true)]
async fn a_panic_becomes_an_error_for_every_waiter() {
    let probe = Probe::new();
    let coalescer = Coalescer::new();
    let (a, b) = tokio::join!(
        coalescer.run("key", probe.call(ms(5), Outcome::Panic)),
        coalescer.run("key", probe.call(ms(5), Outcome::Ok(2))),
    );
    for error in [a.unwrap_err(), b.unwrap_err()] {
        assert!(matches!(&error, CoalesceError::Panicked { message } if &**message == PANIC_MESSAGE));
        assert!(error.is_panic());
        assert_eq!(error.panic_message(), Some(PANIC_MESSAGE));
        assert_eq!(error.to_string(), format!("shared call panicked: {PANIC_MESSAGE}"));
        assert!(error.get_ref().is_none() && error.source().is_none());
    }
    assert_eq!(probe.state().started, 1);
    assert_eq!(coalescer.in_flight(), 0);

    let after = coalescer.run("key", probe.call(ms(5), Outcome::Ok(3))).await;
    assert_eq!(after.unwrap(), 3, "the coalescer stays usable after a panic");
}

#[tokio::test(start_paused = true)]
async fn a_panic_while_creating_the_call_is_caught_too() {
    let coalescer = Coalescer::<&str, u32>::new();
    let call = || -> std::future::Ready<Result<u32, SourceError>> { panic!("{PANIC_MESSAGE}") };
    let error = coalescer.run("key", call).await.unwrap_err();
    assert_eq!(error.panic_message(), Some(PANIC_MESSAGE));
    assert_eq!(coalescer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn nothing_is_cached_after_the_call_ends() {
    let probe = Probe::new();
    let coalescer = Coalescer::new();
    assert_eq!(coalescer.run("key", probe.call(ms(10), Outcome::Ok(1))).await.unwrap(), 1);
    assert_eq!(coalescer.in_flight(), 0);
    assert_eq!(coalescer.run("key", probe.call(ms(10), Outcome::Ok(2))).await.unwrap(), 2);
    assert!(coalescer.run("key", probe.call(ms(10), Outcome::Err("profile"))).await.is_err());
    assert_eq!(coalescer.run("key", probe.call(ms(10), Outcome::Ok(4))).await.unwrap(), 4, "errors are not cached");
    assert_eq!(probe.state().started, 4);
}

#[tokio::test(start_paused = true)]
async fn a_caller_arriving_after_the_end_starts_a_new_call_even_before_every_waiter_has_read_the_result() {
    let probe = Probe::new();
    let coalescer = Coalescer::new();
    let mut a = Box::pin(coalescer.run("key", probe.call(ms(10), Outcome::Ok(1))));
    let mut b = Box::pin(coalescer.run("key", probe.call(ms(10), Outcome::Ok(2))));
    assert!(futures::poll!(&mut a).is_pending());
    assert!(futures::poll!(&mut b).is_pending());
    tokio::time::advance(ms(10)).await;
    assert!(matches!(futures::poll!(&mut a), Poll::Ready(Ok(1))));
    assert_eq!(coalescer.in_flight(), 0, "the call is forgotten as soon as it ends");

    let late = coalescer.run("key", probe.call(ms(10), Outcome::Ok(3)));
    let (b, late) = tokio::join!(b, late);
    assert_eq!(b.unwrap(), 1, "an earlier waiter still gets the result");
    assert_eq!(late.unwrap(), 3, "the late caller made its own call");
    assert_eq!(probe.state().started, 2);
}

#[tokio::test(start_paused = true)]
async fn distinct_keys_never_share_a_call() {
    let probe = Probe::new();
    let coalescer = Coalescer::new();
    let (a, b) = tokio::join!(
        coalescer.run("alice", probe.call(ms(10), Outcome::Ok(1))),
        coalescer.run("bob", probe.call(ms(10), Outcome::Ok(2))),
    );
    assert_eq!((a.unwrap(), b.unwrap()), (1, 2));
    assert_eq!(probe.state().started, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_waiters_on_four_threads_share_one_call() {
    const WAITERS: usize = 64;
    let coalescer = Coalescer::<&str, u32>::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let (open, gate) = futures::channel::oneshot::channel::<()>();
    let gate = gate.shared();
    let (joined_tx, joined_rx) = futures::channel::mpsc::unbounded();

    let waiters: Vec<_> = (0..WAITERS)
        .map(|_| {
            let (coalescer, calls, gate, joined_tx) =
                (coalescer.clone(), calls.clone(), gate.clone(), joined_tx.clone());
            tokio::spawn(async move {
                let call = move || async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    gate.await.map_err(|_| SourceError("gate"))?;
                    Ok::<_, SourceError>(7)
                };
                let mut run = pin!(coalescer.run("key", call));
                // The first poll starts or joins the call; the gate is still closed.
                assert!(futures::poll!(run.as_mut()).is_pending());
                joined_tx.unbounded_send(()).unwrap();
                run.await
            })
        })
        .collect();
    drop(joined_tx);
    assert_eq!(joined_rx.take(WAITERS).count().await, WAITERS);
    assert_eq!(coalescer.in_flight(), 1);
    open.send(()).unwrap();

    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().unwrap(), 7);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "{WAITERS} waiters must share one call");
    assert_eq!(coalescer.in_flight(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn waiters_coming_and_going_on_four_threads_never_leak_a_call() {
    let probe = Probe::new();
    let coalescer = Coalescer::new();
    for round in 0..20_u64 {
        let waiters: Vec<_> = (0..32_u64)
            .map(|i| {
                let (coalescer, call) = (coalescer.clone(), probe.call(ms(2), Outcome::Ok(1)));
                let patience = ms((i + round) % 4);
                tokio::spawn(async move { timeout(patience, coalescer.run(i % 4, call)).await })
            })
            .collect();
        for waiter in waiters {
            if let Ok(result) = waiter.await.unwrap() {
                assert_eq!(result.unwrap(), 1);
            }
        }
        assert_eq!(coalescer.in_flight(), 0, "round {round} left a call registered");
        let state = probe.state();
        assert_eq!(state.started, state.finished + state.cancelled.len(), "round {round} leaked a call");
    }
}
