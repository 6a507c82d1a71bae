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
use muster::{Classify, Coalesce, Fetcher, Policy, fetcher_fn};
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
