//! The mock fetchers: scripts, delays on the paused clock, cancellation, panics, and the
//! mockall mock, alone and inside a `muster_core::Group`.

use std::time::Duration;

use mockall::predicate::eq;
use muster_adapters::{CallOutcome, MockError, MockFetcher, MockSource, Step};
use muster_core::{BoxError, ErrorKind, Fetcher, Group};
use tokio::time::Instant;

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn outcomes<O>(fetcher: &MockFetcher<O>) -> Vec<CallOutcome> {
    fetcher.records().iter().map(|call| call.outcome()).collect()
}

#[tokio::test(start_paused = true)]
async fn each_call_plays_the_next_step_and_the_last_step_repeats() {
    let fetcher = MockFetcher::script([Step::ok(1), Step::err("second call fails"), Step::ok(3)]);
    assert_eq!(fetcher.fetch(&()).await.unwrap(), 1);
    assert_eq!(fetcher.fetch(&()).await.unwrap_err().message(), "second call fails");
    assert_eq!(fetcher.fetch(&()).await.unwrap(), 3);
    assert_eq!(fetcher.fetch(&()).await.unwrap(), 3);

    assert_eq!(fetcher.calls(), 4);
    assert_eq!(outcomes(&fetcher), [CallOutcome::Ok, CallOutcome::Err, CallOutcome::Ok, CallOutcome::Ok]);
    let indices: Vec<_> = fetcher.records().iter().map(|call| call.index()).collect();
    assert_eq!(indices, [0, 1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn any_request_type_gets_the_same_script() {
    let fetcher = MockFetcher::ok("same");
    assert_eq!(Fetcher::<u64>::fetch(&fetcher, &7).await.unwrap(), "same");
    assert_eq!(Fetcher::<str>::fetch(&fetcher, "user-7").await.unwrap(), "same");
    let boxed: Box<dyn Fetcher<[u8], Output = &str, Error = MockError>> = Box::new(fetcher.clone());
    assert_eq!(boxed.fetch(b"raw").await.unwrap(), "same");
    assert_eq!(fetcher.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn delays_take_exactly_their_virtual_time() {
    let fetcher = MockFetcher::script([Step::ok("first").after(ms(250)), Step::err("second").after(ms(40))]);
    let started = Instant::now();
    assert_eq!(fetcher.fetch(&()).await.unwrap(), "first");
    assert_eq!(started.elapsed(), ms(250));
    assert!(fetcher.fetch(&()).await.is_err());
    assert_eq!(started.elapsed(), ms(290));

    let records = fetcher.records();
    assert_eq!(records[0].started(), started);
    assert_eq!(records[0].ended(), Some(started + ms(250)));
    assert_eq!(records[1].started(), started + ms(250));
    assert_eq!(records[1].duration(), Some(ms(40)));
}

#[tokio::test(start_paused = true)]
async fn a_step_without_a_delay_answers_at_once() {
    let fetcher = MockFetcher::ok(5);
    let started = Instant::now();
    assert_eq!(fetcher.fetch(&()).await.unwrap(), 5);
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(fetcher.records()[0].duration(), Some(Duration::ZERO));
}

#[tokio::test(start_paused = true)]
async fn concurrent_calls_take_consecutive_steps_and_run_side_by_side() {
    let fetcher = MockFetcher::script([Step::ok("slow").after(ms(30)), Step::ok("fast").after(ms(10))]);
    let started = Instant::now();
    let (slow, fast) = tokio::join!(fetcher.fetch(&()), fetcher.fetch(&()));
    assert_eq!((slow.unwrap(), fast.unwrap()), ("slow", "fast"));
    assert_eq!(started.elapsed(), ms(30), "the calls must overlap");

    let records = fetcher.records();
    assert_eq!(records[0].started(), records[1].started());
    assert_eq!(records[1].ended(), Some(started + ms(10)));
}

#[tokio::test(start_paused = true)]
async fn a_running_call_is_recorded_as_pending() {
    let fetcher = MockFetcher::ok_after(ms(100), "late");
    let task = tokio::spawn({
        let fetcher = fetcher.clone();
        async move { fetcher.fetch(&()).await }
    });
    tokio::time::sleep(ms(60)).await;
    let call = fetcher.records()[0].clone();
    assert_eq!((call.outcome(), call.ended(), call.duration()), (CallOutcome::Pending, None, None));
    assert!(!fetcher.was_cancelled());

    assert_eq!(task.await.unwrap().unwrap(), "late");
    assert_eq!(outcomes(&fetcher), [CallOutcome::Ok]);
}

#[tokio::test(start_paused = true)]
async fn a_hanging_call_is_recorded_as_cancelled_when_its_future_is_dropped() {
    let fetcher = MockFetcher::<u32>::hang();
    let started = Instant::now();
    let outcome = tokio::time::timeout(ms(500), fetcher.fetch(&())).await;
    assert!(outcome.is_err(), "a hanging call must not complete");
    assert_eq!(started.elapsed(), ms(500));

    assert!(fetcher.was_cancelled());
    assert_eq!(fetcher.cancelled_calls(), 1);
    let call = &fetcher.records()[0];
    assert!(call.is_cancelled());
    assert_eq!(call.ended(), Some(started + ms(500)));
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_mid_delay_is_cancelled_and_the_next_call_takes_the_next_step() {
    let fetcher = MockFetcher::script([Step::ok(1).after(Duration::from_secs(10)), Step::ok(2)]);
    assert!(tokio::time::timeout(ms(20), fetcher.fetch(&())).await.is_err());
    assert_eq!(fetcher.fetch(&()).await.unwrap(), 2);

    assert_eq!(outcomes(&fetcher), [CallOutcome::Cancelled, CallOutcome::Ok]);
    assert_eq!(fetcher.records()[0].duration(), Some(ms(20)));
    assert_eq!(fetcher.cancelled_calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_future_dropped_before_its_first_poll_is_not_a_call() {
    let fetcher = MockFetcher::ok(1);
    drop(fetcher.fetch(&()));
    assert_eq!(fetcher.calls(), 0);
    assert!(!fetcher.was_cancelled());
}

#[tokio::test(start_paused = true)]
async fn a_panic_step_panics_the_fetch_future_after_its_delay() {
    let fetcher = MockFetcher::<u32>::panic_after(ms(75), "corrupt cache entry");
    let started = Instant::now();
    let task = tokio::spawn({
        let fetcher = fetcher.clone();
        async move { fetcher.fetch(&()).await }
    });
    let panic = task.await.unwrap_err().into_panic();
    assert_eq!(panic.downcast_ref::<String>().map(String::as_str), Some("corrupt cache entry"));
    assert_eq!(started.elapsed(), ms(75));

    assert_eq!(outcomes(&fetcher), [CallOutcome::Panicked]);
    assert_eq!(fetcher.records()[0].duration(), Some(ms(75)));
    assert!(!fetcher.was_cancelled(), "a panic is not a cancellation");
}

#[tokio::test(start_paused = true)]
async fn a_scripted_error_is_retryable_unless_made_permanent() {
    let fetcher = MockFetcher::<()>::script([
        Step::err("503 service unavailable"),
        Step::err("404 not found").permanent().after(ms(5)),
    ]);
    let first = fetcher.fetch(&()).await.unwrap_err();
    assert!(first.is_retryable());
    assert_eq!(first.to_string(), "503 service unavailable");
    assert_eq!(first, MockError::new("503 service unavailable"));

    let second = fetcher.fetch(&()).await.unwrap_err();
    assert!(!second.is_retryable());
    assert_eq!(second.message(), "404 not found");
    assert_eq!(second, MockError::new("404 not found").permanent());

    let from_constructor = MockFetcher::<()>::err_after(ms(5), "timeout").fetch(&()).await.unwrap_err();
    assert!(from_constructor.is_retryable());
}

#[tokio::test(start_paused = true)]
async fn clones_share_the_script_and_the_call_log() {
    let fetcher = MockFetcher::script([Step::ok('a'), Step::ok('b')]);
    let clone = fetcher.clone();
    assert_eq!(clone.fetch(&()).await.unwrap(), 'a');
    assert_eq!(fetcher.fetch(&()).await.unwrap(), 'b');
    assert_eq!((fetcher.calls(), clone.calls()), (2, 2));
    assert_eq!(fetcher.records(), clone.records());
}

#[test]
fn an_empty_script_is_refused_with_a_panic() {
    let refused = std::panic::catch_unwind(|| MockFetcher::<u32>::script([]));
    let message = refused.unwrap_err().downcast_ref::<&str>().copied();
    assert_eq!(message, Some("MockFetcher::script needs at least one step"));
}

#[tokio::test(start_paused = true)]
async fn in_a_group_a_failing_mock_cancels_its_slow_sibling_at_once() {
    let (profile, transactions) = (MockFetcher::err_after(ms(30), "503"), MockFetcher::ok_after(ms(10_000), 1));
    let started = Instant::now();
    let mut group = Group::new();
    group.spawn("profile", profile.fetch(&7_u64)).unwrap();
    group.spawn("transactions", transactions.fetch(&7_u64)).unwrap();
    let error = group.wait().await.unwrap_err();

    assert_eq!(started.elapsed(), ms(30));
    assert_eq!(error.kind(), ErrorKind::Failed);
    assert_eq!(error.source_name(), Some("profile"));
    assert_eq!(error.cancelled(), ["transactions"]);
    let cause = std::error::Error::source(&error).and_then(|cause| cause.downcast_ref::<MockError>());
    assert_eq!(cause, Some(&MockError::new("503")));
    assert_eq!(outcomes(&transactions), [CallOutcome::Cancelled]);
    assert_eq!(transactions.records()[0].ended(), Some(started + ms(30)));
}

#[tokio::test(start_paused = true)]
async fn in_a_group_a_panicking_mock_becomes_a_panicked_error_and_its_sibling_is_cancelled() {
    let (panicky, sibling) = (MockFetcher::<u32>::panic_after(ms(20), "index out of range"), MockFetcher::hang());
    let started = Instant::now();
    let mut group = Group::new();
    group.spawn("panicky", panicky.fetch(&())).unwrap();
    group.spawn("sibling", sibling.fetch(&())).unwrap();
    let error = group.wait().await.unwrap_err();

    assert_eq!(error.kind(), ErrorKind::Panicked);
    assert_eq!(error.source_name(), Some("panicky"));
    assert_eq!(error.to_string(), "source `panicky` panicked after 20ms: index out of range");
    assert_eq!(error.cancelled(), ["sibling"]);
    assert_eq!(started.elapsed(), ms(20));
    assert_eq!(outcomes(&panicky), [CallOutcome::Panicked]);
    assert!(sibling.was_cancelled(), "the sibling must be dropped when its neighbour panics");
    assert_eq!(sibling.records()[0].ended(), Some(started + ms(20)));
}

#[tokio::test(start_paused = true)]
async fn in_a_group_mocks_that_succeed_return_their_values_by_name() {
    let (profile, balance) = (MockFetcher::ok_after(ms(15), 1), MockFetcher::ok_after(ms(25), 2));
    let started = Instant::now();
    let mut group = Group::new();
    group.spawn("profile", profile.fetch(&())).unwrap();
    group.spawn("balance", balance.fetch(&())).unwrap();
    let outputs = group.wait().await.unwrap();

    assert_eq!((outputs["profile"], outputs["balance"]), (1, 2));
    assert_eq!(started.elapsed(), ms(25));
    assert!(!profile.was_cancelled() && !balance.was_cancelled());
}

#[tokio::test]
async fn the_mockall_source_meets_its_expectations() {
    let mut profiles = MockSource::<u64, String>::new();
    profiles.expect_fetch().with(eq(7)).times(1).returning(|user_id| Ok(format!("profile of {user_id}")));
    profiles.expect_fetch().with(eq(13)).times(1).returning(|_| Err(BoxError::from("user 13 is locked")));

    assert_eq!(profiles.fetch(&7).await.unwrap(), "profile of 7");
    assert_eq!(profiles.fetch(&13).await.unwrap_err().to_string(), "user 13 is locked");
    profiles.checkpoint();
}

#[tokio::test]
async fn the_mockall_source_works_as_a_trait_object_in_a_group() {
    let mut balance = MockSource::<u64, u32>::new();
    balance.expect_fetch().times(1).returning(|user_id| Ok(u32::try_from(*user_id * 100).unwrap()));
    let balance: Box<dyn Fetcher<u64, Output = u32, Error = BoxError>> = Box::new(balance);

    let mut group = Group::new();
    group.spawn("balance", balance.fetch(&3)).unwrap();
    assert_eq!(group.wait().await.unwrap()["balance"], 300);
}
