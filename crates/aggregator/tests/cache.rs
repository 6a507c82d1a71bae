//! The `Cache` policy (issue 20, item 3), local tier: fresh values answer without a call,
//! stale ones answer any failure (the deadline included, before it fails the aggregation),
//! the key holds the identity, and bad settings are refused. On tokio's paused clock; plus
//! the identity property test over `Cache` and `Coalesce::by`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use muster::policy::Cache;
use muster::{
    Aggregator, Deadline, ErrorKind, Fallback, Retry, Timeout, fetcher_fn, options::OptionError, policy::Coalesce,
};
use muster_adapters::mock::{MockFetcher, Step};
use proptest::prelude::*;
use tokio::time::{Instant, advance};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn secs(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// A cache keyed by the request itself (a user id), fresh for 5 s, stale for 10 min more.
fn cache() -> Cache<fn(&u64) -> u64> {
    Cache::new((|user: &u64| *user) as fn(&u64) -> u64).ttl(secs(5)).stale_if_error(secs(600))
}

#[tokio::test(start_paused = true)]
async fn a_fresh_value_answers_without_calling_the_source() {
    let mock = MockFetcher::script([Step::ok(1), Step::ok(2)]);
    let aggregator = Aggregator::builder().source_with("balance", mock.clone(), cache()).build().unwrap();
    assert_eq!(aggregator.aggregate(&7).await.unwrap().outputs, (1,));
    advance(ms(4_900)).await;
    let second = aggregator.aggregate(&7).await.unwrap();
    assert_eq!(second.outputs, (1,));
    assert_eq!(mock.calls(), 1, "a fresh value must not call the source");
    assert_eq!(second.report.sources[0].notes, ["cache hit"]);
    assert_eq!(second.report.sources[0].stale, None, "a fresh value is not stale");
}

#[tokio::test(start_paused = true)]
async fn past_its_ttl_the_source_is_called_and_its_new_value_stored() {
    let mock = MockFetcher::script([Step::ok(1), Step::ok(2), Step::ok(3)]);
    let aggregator = Aggregator::builder().source_with("balance", mock.clone(), cache()).build().unwrap();
    assert_eq!(aggregator.aggregate(&7).await.unwrap().outputs, (1,));
    advance(secs(5)).await;
    assert_eq!(aggregator.aggregate(&7).await.unwrap().outputs, (2,));
    assert_eq!(aggregator.aggregate(&7).await.unwrap().outputs, (2,), "the new value is fresh");
    assert_eq!(mock.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_stale_value_answers_a_failure_of_any_kind() {
    let kinds = [
        ErrorKind::Status,
        ErrorKind::Connect,
        ErrorKind::Timeout,
        ErrorKind::Protocol,
        ErrorKind::new("circuit_open"),
    ];
    for kind in kinds {
        let mock = MockFetcher::script([Step::ok(1), Step::err("transactions are down").error_kind(kind)]);
        let aggregator = Aggregator::builder().source_with("transactions", mock.clone(), cache()).build().unwrap();
        aggregator.aggregate(&7).await.unwrap();
        advance(secs(94)).await;
        let stale = aggregator.aggregate(&7).await.unwrap_or_else(|error| panic!("{kind}: {error}"));
        assert_eq!(stale.outputs, (1,), "{kind}");
        let source = &stale.report.sources[0];
        assert_eq!(source.stale, Some(secs(94)), "{kind}");
        assert_eq!(source.notes, ["stale (age 94s)"], "{kind}");
        assert!(stale.report.to_string().contains("; stale (age 94s)"), "{kind}: {}", stale.report);
        assert_eq!(mock.calls(), 2, "{kind}: the source must be called past the ttl");
    }
}

#[tokio::test(start_paused = true)]
async fn a_stale_value_answers_after_the_retries_inside_it() {
    let mock = MockFetcher::script([Step::ok(1), Step::err("down").error_kind(ErrorKind::Connect)]);
    let policies = (cache(), Retry::attempts(3), Timeout(ms(100)));
    let aggregator = Aggregator::builder().source_with("transactions", mock.clone(), policies).build().unwrap();
    aggregator.aggregate(&7).await.unwrap();
    advance(secs(10)).await;
    let stale = aggregator.aggregate(&7).await.unwrap();
    assert_eq!(stale.outputs, (1,));
    let age = stale.report.sources[0].stale.expect("the stale value must be reported");
    assert!(age >= secs(10) && age < secs(11), "its age counts the retries' backoffs: {age:?}");
    assert_eq!(mock.calls(), 4, "one first call, then three attempts before the stale value");
}

#[tokio::test(start_paused = true)]
async fn a_stale_value_answers_just_before_the_global_deadline() {
    let mock = MockFetcher::script([Step::ok(1), Step::hang()]);
    let aggregator = Aggregator::builder()
        .source_with("transactions", mock.clone(), cache())
        .options(Deadline(secs(1)))
        .build()
        .unwrap();
    aggregator.aggregate(&7).await.unwrap();
    advance(secs(60)).await;
    let started = Instant::now();
    let stale = aggregator.aggregate(&7).await.expect("the stale value must answer before the deadline");
    assert_eq!(stale.outputs, (1,));
    assert_eq!(started.elapsed(), ms(995), "the source is given up 5 ms (the margin) before the deadline");
    assert_eq!(stale.report.sources[0].stale, Some(ms(60_995)));
    assert!(mock.was_cancelled(), "the hanging call must be dropped");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_margin_is_configurable() {
    let mock = MockFetcher::script([Step::ok(1), Step::hang()]);
    let cache = cache().deadline_margin(ms(50));
    let aggregator =
        Aggregator::builder().source_with("transactions", mock, cache).options(Deadline(secs(1))).build().unwrap();
    aggregator.aggregate(&7).await.unwrap();
    advance(secs(6)).await;
    let started = Instant::now();
    assert_eq!(aggregator.aggregate(&7).await.unwrap().outputs, (1,));
    assert_eq!(started.elapsed(), ms(950));
}

#[tokio::test(start_paused = true)]
async fn without_a_stale_value_the_source_keeps_the_whole_budget() {
    let mock = MockFetcher::script([Step::ok(1).after(ms(998))]);
    let aggregator =
        Aggregator::builder().source_with("transactions", mock, cache()).options(Deadline(secs(1))).build().unwrap();
    let fresh = aggregator.aggregate(&7).await.expect("no margin is taken when nothing could answer instead");
    assert_eq!(fresh.outputs, (1,));
}

#[tokio::test(start_paused = true)]
async fn past_the_stale_window_the_error_passes_through_to_the_fallback() {
    let mock = MockFetcher::script([Step::ok(1), Step::err("down").error_kind(ErrorKind::Status)]);
    let aggregator =
        Aggregator::builder().source_with("transactions", mock.clone(), (Fallback(0), cache())).build().unwrap();
    aggregator.aggregate(&7).await.unwrap();
    advance(secs(5 + 600)).await;
    let fallen = aggregator.aggregate(&7).await.unwrap();
    assert_eq!(fallen.outputs, (0,), "a value older than ttl + stale_if_error must not answer");
    assert_eq!(fallen.report.sources[0].stale, None);
    assert_eq!(fallen.report.sources[0].kind, Some(ErrorKind::Status));
}

#[tokio::test(start_paused = true)]
async fn without_a_fallback_an_error_with_nothing_cached_fails_the_aggregation() {
    let mock = MockFetcher::<u32>::script([Step::err("down").error_kind(ErrorKind::Connect)]);
    let aggregator = Aggregator::builder().source_with("transactions", mock, cache()).build().unwrap();
    let error = aggregator.aggregate(&7).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Connect, "the cache passes the error on unchanged");
}

#[tokio::test(start_paused = true)]
async fn a_zero_ttl_calls_the_source_every_time_and_keeps_values_for_stale() {
    let mock = MockFetcher::script([Step::ok(1), Step::ok(2), Step::err("down")]);
    let cache = Cache::new(|user: &u64| *user).stale_if_error(secs(60));
    let aggregator = Aggregator::builder().source_with("transactions", mock.clone(), cache).build().unwrap();
    assert_eq!(aggregator.aggregate(&7).await.unwrap().outputs, (1,));
    assert_eq!(aggregator.aggregate(&7).await.unwrap().outputs, (2,));
    let stale = aggregator.aggregate(&7).await.unwrap();
    assert_eq!((stale.outputs, stale.report.sources[0].stale), ((2,), Some(Duration::ZERO)));
    assert_eq!(mock.calls(), 3);
}

#[test]
fn a_cache_that_keeps_nothing_is_refused_when_the_aggregator_is_built() {
    let key = |user: &u64| *user;
    let nothing = Aggregator::builder().source_with("a", MockFetcher::ok(1), Cache::new(key)).build();
    let Err(error) = nothing else { panic!("a cache without a ttl or a stale window must be refused") };
    assert!(error.to_string().contains("a ttl or a stale_if_error window"), "{error}");
    let empty = Cache::new(key).ttl(secs(1)).capacity(0);
    let Err(error) = Aggregator::builder().source_with("a", MockFetcher::ok(1), empty).build() else {
        panic!("a cache of zero entries must be refused")
    };
    assert!(error.to_string().contains(&OptionError::ZeroCapacity.to_string()), "{error}");
}

#[tokio::test(start_paused = true)]
async fn the_identity_in_the_key_keeps_users_apart() {
    #[derive(Clone, PartialEq, Eq, Hash)]
    struct Request {
        user: &'static str,
        account: u64,
    }
    let balance = fetcher_fn(|request: &Request| {
        let answer = format!("{} sees account {}", request.user, request.account);
        async move { Ok::<_, std::io::Error>(answer) }
    });
    let cache = Cache::new(|request: &Request| (request.user, request.account)).ttl(secs(60));
    let aggregator = Aggregator::builder().source_with("balance", balance, cache).build().unwrap();
    let alice = aggregator.aggregate(&Request { user: "alice", account: 7 }).await.unwrap();
    let bob = aggregator.aggregate(&Request { user: "bob", account: 7 }).await.unwrap();
    assert_eq!(alice.outputs.0, "alice sees account 7");
    assert_eq!(bob.outputs.0, "bob sees account 7");
}

/// A request: an identity, what it asks for, and a field the answer does not depend on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Request {
    user: String,
    account: u64,
    request_id: u64,
}

/// Two requests with different identities and the same other fields.
fn request_pair() -> impl Strategy<Value = (Request, Request)> {
    ("[a-z]{1,8}", "[a-z]{1,8}", 0..4_u64, any::<u64>(), any::<u64>()).prop_filter_map(
        "the identities must differ",
        |(alice, bob, account, first_id, second_id)| {
            let differ = alice != bob;
            differ.then_some((
                Request { user: alice, account, request_id: first_id },
                Request { user: bob, account, request_id: second_id },
            ))
        },
    )
}

/// The reference model: the answer for a request depends on its identity and account only.
fn answer(request: &Request) -> String {
    format!("{}/{}", request.user, request.account)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn no_identity_ever_gets_another_identitys_cached_or_coalesced_value((first, second) in request_pair()) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async {
            let calls = Arc::new(AtomicUsize::new(0));
            let source = {
                let calls = Arc::clone(&calls);
                fetcher_fn(move |request: &Request| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    let answer = answer(request);
                    async move {
                        tokio::time::sleep(ms(10)).await;
                        Ok::<_, std::io::Error>(answer)
                    }
                })
            };
            let key = |request: &Request| (request.user.clone(), request.account);
            let policies = (Cache::new(key).ttl(secs(60)).stale_if_error(secs(60)), Coalesce::by(key));
            let aggregator = Aggregator::builder().source_with("balance", source, policies).build().unwrap();
            // Concurrently (coalescing), then one after the other (the cache), both ways.
            let (a, b) = tokio::join!(aggregator.aggregate(&first), aggregator.aggregate(&second));
            let (a, b) = (a.unwrap().outputs.0, b.unwrap().outputs.0);
            prop_assert_eq!(&a, &answer(&first), "the first identity got another's coalesced value");
            prop_assert_eq!(&b, &answer(&second), "the second identity got another's coalesced value");
            for request in [&second, &first] {
                let cached = aggregator.aggregate(request).await.unwrap();
                prop_assert_eq!(&cached.outputs.0, &answer(request), "an identity got another's cached value");
            }
            prop_assert_eq!(calls.load(Ordering::SeqCst), 2, "one call per identity, then cache hits");
            Ok(())
        })?;
    }
}

#[cfg(feature = "axum")]
#[tokio::test(start_paused = true)]
async fn the_axum_body_lists_the_stale_sources() {
    use axum::response::IntoResponse as _;

    let transactions = MockFetcher::script([Step::ok(vec![1, 2]), Step::err("down").error_kind(ErrorKind::Status)]);
    let profile = MockFetcher::ok("ada".to_owned());
    let aggregator = Aggregator::builder()
        .source("profile", profile)
        .source_with("transactions", transactions, cache())
        .build()
        .unwrap();
    let body = |response: axum::response::Response| async move {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    let fresh = aggregator.aggregate(&7).await.unwrap();
    assert_eq!(body(fresh.into_response()).await, r#"{"profile":"ada","transactions":[1,2]}"#);
    advance(secs(94)).await;
    let stale = aggregator.aggregate(&7).await.unwrap();
    assert_eq!(body(stale.into_response()).await, r#"{"profile":"ada","transactions":[1,2],"stale":["transactions"]}"#);
}
