//! The kind travels with the error: an HTTP 500 from a real server on 127.0.0.1 reports
//! `status` through every order of the built-in wrappers (timeout, retry, hedge, coalescing, a
//! `first_ok`, `quorum` or `all` member, a nested aggregator, tower, and a user-written policy
//! in the docs' style), and a user's own error type reports its own kind, in all five places that
//! say it: the error, the report, the `warn` event, the `muster_source_outcomes_total` metric
//! and the axum body.
//!
//! Chains of every order are built at run time: each layer wraps the one before, erased to one
//! fetcher type by [`erase`], which boxes the layer's error with [`muster::error::boxed`] (keeping its
//! kind, as any `BoxError` can) so that layers of different types stack in any order. A few
//! chains are also written out statically, as policy tuples, including the issue's example.
#![allow(clippy::unwrap_used)]

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

use muster::completion::{all, first_ok, quorum};
use muster::http::{HttpError, HttpFetcher, StatusCode};
use muster::metrics::SOURCE_OUTCOMES;
use muster::{
    Aggregator, Classify, ErrorKind, Fetcher, Retry, Timeout, builder::SourceOutputs, error::Classified, fetcher_fn,
    policy::Coalesce, policy::Hedge, policy::Policy, policy::Tower,
};
use muster_adapters::mock::{MockFetcher, Step};
use serde_json::value::RawValue;
use tracing_subscriber::layer::SubscriberExt as _;

#[path = "support/breaker.rs"]
mod breaker;
#[path = "support/capture.rs"]
mod capture;
#[path = "support/recorder.rs"]
mod recorder;
#[path = "../../adapters/tests/support/server.rs"]
mod server;

use breaker::Breaker;
use capture::{Capture, field, with_message};
use recorder::TestRecorder;
use server::Server;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

type Json = Box<RawValue>;

/// A source whose layers are erased: its error is the layer's, boxed with its kind.
type Layered = Arc<dyn Fetcher<u64, Output = Json, Error = Classified>>;

/// A server that answers every request with `500 Internal Server Error` and a JSON body.
async fn failing_server() -> Server {
    Server::start(|mut conn| async move {
        while conn.read_request().await.is_some() {
            let headers = [("content-type", "application/json")];
            if conn.respond("500 Internal Server Error", &headers, b"{\"error\":\"db down\"}").await.is_err() {
                break;
            }
        }
    })
    .await
}

fn http(server: &Server) -> HttpFetcher {
    HttpFetcher::builder(&server.url("/v1/transactions/{id}")).build().unwrap()
}

/// `fetcher` with its type erased and its output turned back into JSON by `output`.
fn erase_with<F, M>(fetcher: F, output: M) -> Layered
where
    F: Fetcher<u64> + 'static,
    F::Error: Classify + Error + Send + Sync + 'static,
    M: Fn(F::Output) -> Json + Send + Sync + 'static,
{
    let (fetcher, output) = (Arc::new(fetcher), Arc::new(output));
    Arc::new(fetcher_fn(move |request: &u64| {
        let (fetcher, output, request) = (Arc::clone(&fetcher), Arc::clone(&output), *request);
        async move {
            match fetcher.fetch(&request).await {
                Ok(value) => Ok(output(value)),
                Err(error) => Err(*muster::error::boxed(error).downcast::<Classified>().unwrap()),
            }
        }
    }))
}

fn erase<F>(fetcher: F) -> Layered
where
    F: Fetcher<u64, Output = Json> + 'static,
    F::Error: Classify + Error + Send + Sync + 'static,
{
    erase_with(fetcher, |value| value)
}

/// The built-in wrappers and a user-written policy, as layers of a chain.
#[derive(Clone, Copy, Debug)]
enum Layer {
    Timeout,
    Retry,
    Hedge,
    Coalesce,
    FirstOk,
    Quorum,
    All,
    Nested,
    Breaker,
}

const LAYERS: [Layer; 9] = [
    Layer::Timeout,
    Layer::Retry,
    Layer::Hedge,
    Layer::Coalesce,
    Layer::FirstOk,
    Layer::Quorum,
    Layer::All,
    Layer::Nested,
    Layer::Breaker,
];

/// `inner` wrapped in `layer`. No layer decides the outcome: the timeout and the hedge's delay
/// are far longer than a loopback 500 takes, and the breaker never opens.
fn wrap(layer: Layer, inner: Layered) -> Layered {
    match layer {
        Layer::Timeout => erase(Timeout(ms(10_000)).wrap(inner)),
        Layer::Retry => erase(Retry::attempts(2).backoff(ms(1), ms(1)).jitter(0.0).wrap(inner)),
        Layer::Hedge => erase(Hedge(ms(5_000)).wrap(inner)),
        Layer::Coalesce => erase(Coalesce.wrap(inner)),
        Layer::FirstOk => erase(first_ok([("member", inner)]).unwrap()),
        Layer::Quorum => {
            erase_with(quorum(1, [("member", inner)]).unwrap(), |outputs| outputs.into_iter().next().unwrap().1)
        }
        Layer::All => erase_with(all([("member", inner)]).unwrap(), |outputs| outputs.into_iter().next().unwrap().1),
        Layer::Nested => erase_with(Aggregator::builder().source("inner", inner).build().unwrap(), |(value,)| value),
        Layer::Breaker => erase(Breaker(u32::MAX).wrap(inner)),
    }
}

/// `source` wrapped in `layers`, the first innermost.
fn chain(source: Layered, layers: &[Layer]) -> Layered {
    layers.iter().fold(source, |inner, layer| wrap(*layer, inner))
}

/// What each of the five places says of the failed source's kind: the error, the report, the
/// `warn` event, the outcome metric and the axum body.
#[derive(Debug, PartialEq)]
struct Five {
    error: String,
    report: Option<String>,
    event: Option<String>,
    metric: Option<String>,
    body: Option<String>,
}

impl Five {
    fn all(kind: &str) -> Self {
        let some = || Some(kind.to_owned());
        Self { error: kind.to_owned(), report: some(), event: some(), metric: some(), body: some() }
    }
}

/// Runs `aggregator` once, expecting `transactions` to fail it, and reads the five places.
async fn five_places<O: SourceOutputs<u64> + std::fmt::Debug>(aggregator: &Aggregator<u64, O>) -> Five {
    let capture = Capture::default();
    let _tracing = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let recorder = TestRecorder::default();
    let _metrics = metrics::set_default_local_recorder(&recorder);

    let error = aggregator.aggregate(&7).await.unwrap_err();
    assert_eq!(error.source_name(), Some("transactions"), "{error}");
    let events = capture.0.lock().unwrap().clone();
    // A nested aggregation logs its own failure too; this is the outer one's.
    let failed: Vec<_> = (with_message(&events, "aggregation failed").into_iter())
        .filter(|event| field(event, "source") == Some("transactions"))
        .collect();
    assert_eq!(failed.len(), 1, "one warn event: {events:#?}");
    let outcomes = recorder.counters_named(SOURCE_OUTCOMES);
    let metric = outcomes
        .keys()
        .find(|labels| labels.ends_with("source=transactions"))
        .and_then(|labels| labels.split(',').find_map(|label| label.strip_prefix("kind=")).map(str::to_owned));
    let (status, body) = muster::axum::error_body(&error);
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    Five {
        error: error.kind().to_string(),
        report: error.report().source("transactions").and_then(|source| source.kind).map(|kind| kind.to_string()),
        event: field(failed[0], "kind").map(str::to_owned),
        metric,
        body: body["kind"].as_str().map(str::to_owned),
    }
}

/// Every chain of the layers in `chains` around `source()` reports `kind` in all five places.
async fn every_chain_reports(kind: &str, source: impl Fn() -> Layered, chains: &[Vec<Layer>]) {
    for layers in chains {
        let aggregator = Aggregator::builder().source("transactions", chain(source(), layers)).build().unwrap();
        assert_eq!(five_places(&aggregator).await, Five::all(kind), "layers, inside first: {layers:?}");
    }
}

/// Every ordered choice of `n` distinct layers.
fn permutations(n: usize) -> Vec<Vec<Layer>> {
    if n == 0 {
        return vec![Vec::new()];
    }
    let mut chains = Vec::new();
    for shorter in permutations(n - 1) {
        for layer in LAYERS {
            if !shorter.iter().any(|taken| std::mem::discriminant(taken) == std::mem::discriminant(&layer)) {
                chains.push([shorter.clone(), vec![layer]].concat());
            }
        }
    }
    chains
}

/// Longer chains: every layer, in declaration order and reversed, and every rotation of that
/// order, cut to four layers.
fn long_chains() -> Vec<Vec<Layer>> {
    let mut chains = vec![LAYERS.to_vec(), LAYERS.iter().rev().copied().collect()];
    for start in 0..LAYERS.len() {
        chains.push((0..4).map(|i| LAYERS[(start + i) % LAYERS.len()]).collect());
        chains.push((0..4).map(|i| LAYERS[(start + 3 * i) % LAYERS.len()]).collect());
    }
    chains
}

#[tokio::test]
async fn an_http_500_is_status_in_all_five_places_through_every_order_of_two_wrappers() {
    let server = failing_server().await;
    let chains = [permutations(0), permutations(1), permutations(2)].concat();
    assert_eq!(chains.len(), 1 + 9 + 72);
    every_chain_reports("status", || erase(http(&server)), &chains).await;
}

#[tokio::test]
async fn an_http_500_is_status_in_all_five_places_through_every_order_of_three_wrappers_and_longer_chains() {
    let server = failing_server().await;
    let chains = [permutations(3), long_chains()].concat();
    assert_eq!(chains.len(), 504 + 20);
    every_chain_reports("status", || erase(http(&server)), &chains).await;
}

#[tokio::test]
async fn the_issues_example_and_static_policy_tuples_report_status() {
    let server = failing_server().await;
    // The issue's example: `first_ok` in a `Timeout`.
    let members = first_ok([("live", http(&server)), ("cached", http(&server))]).unwrap();
    let aggregator = Aggregator::builder().source_with("transactions", members, Timeout(ms(300))).build().unwrap();
    assert_eq!(five_places(&aggregator).await, Five::all("status"));

    // The docs' breaker with the built-in policies, as one tuple.
    let policies = (Breaker(5), Retry::attempts(2).backoff(ms(1), ms(1)), Hedge(ms(500)), Timeout(ms(1_000)), Coalesce);
    let aggregator = Aggregator::builder().source_with("transactions", http(&server), policies).build().unwrap();
    assert_eq!(five_places(&aggregator).await, Five::all("status"));

    // A quorum of timed-out members, nested in another aggregator, behind tower's timeout.
    let members = quorum(1, [("a", Timeout(ms(1_000)).wrap(http(&server)))]).unwrap();
    let inner = Aggregator::builder().source_with("ledger", members, Coalesce).build().unwrap();
    let layer = tower::timeout::TimeoutLayer::new(ms(1_000));
    let aggregator = Aggregator::builder().source_with("transactions", inner, Tower(layer)).build().unwrap();
    assert_eq!(five_places(&aggregator).await, Five::all("status"));
}

// The policies as values, for the static chains.
fn timeout() -> Timeout {
    Timeout(ms(10_000))
}

fn retry() -> Retry {
    Retry::attempts(2).backoff(ms(1), ms(1)).jitter(0.0)
}

fn hedge() -> Hedge {
    Hedge(ms(5_000))
}

fn coalesce() -> Coalesce {
    Coalesce
}

fn breaker() -> Breaker {
    Breaker(u32::MAX)
}

fn tower() -> Tower<tower::timeout::TimeoutLayer> {
    Tower(tower::timeout::TimeoutLayer::new(ms(10_000)))
}

/// An HTTP source wrapped in `policy` reports `status` in all five places.
async fn static_chain_reports_status<P>(server: &Server, policy: P, name: &str)
where
    P: Policy<HttpFetcher>,
    P::Fetcher: Fetcher<u64> + 'static,
    <P::Fetcher as Fetcher<u64>>::Error: Classify,
    <P::Fetcher as Fetcher<u64>>::Output: std::fmt::Debug + Send + 'static,
{
    let aggregator = Aggregator::builder().source_with("transactions", http(server), policy).build().unwrap();
    assert_eq!(five_places(&aggregator).await, Five::all("status"), "policies: {name}");
}

/// Every ordered pair of the policies listed, as a tuple: no erasure between them.
macro_rules! every_pair {
    ($server:expr; $all:tt) => {
        every_pair!(@rows $server; $all; $all)
    };
    (@rows $server:expr; [$($a:ident),*]; $all:tt) => {
        $(every_pair!(@row $server; $a; $all);)*
    };
    (@row $server:expr; $a:ident; [$($b:ident),*]) => {
        $(static_chain_reports_status($server, ($a(), $b()), concat!(stringify!($a), ", ", stringify!($b))).await;)*
    };
}

#[tokio::test]
async fn an_http_500_is_status_through_every_pair_of_policies_written_as_a_tuple() {
    let server = failing_server().await;
    every_pair!(&server; [timeout, retry, hedge, coalesce, breaker, tower]);
}

/// A database source's own error type, with a kind of its own.
#[derive(Debug, thiserror::Error)]
enum DbError {
    #[error("deadlock detected")]
    Deadlock,
}

impl Classify for DbError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::new("db_deadlock")
    }

    fn is_retryable(&self) -> bool {
        true
    }
}

#[tokio::test]
async fn a_user_defined_error_reports_its_own_kind_in_all_five_places() {
    let db = || erase(fetcher_fn(|_: &u64| async { Err::<Json, _>(DbError::Deadlock) }));
    let chains = [permutations(0), permutations(1), permutations(2)].concat();
    every_chain_reports("db_deadlock", db, &chains).await;

    let policies = (Coalesce, Retry::attempts(3).backoff(ms(1), ms(1)), Timeout(ms(100)));
    let db = fetcher_fn(|_: &u64| async { Err::<u32, _>(DbError::Deadlock) });
    let aggregator = Aggregator::builder().source_with("transactions", db, policies).build().unwrap();
    assert_eq!(five_places(&aggregator).await, Five::all("db_deadlock"));

    // A scripted mock error, and a user policy's own kind.
    let grpc = ErrorKind::new("grpc_unavailable");
    let mock = MockFetcher::<u32>::script([Step::err("unavailable").error_kind(grpc)]);
    let aggregator = Aggregator::builder().source_with("transactions", mock, Timeout(ms(100))).build().unwrap();
    assert_eq!(five_places(&aggregator).await, Five::all("grpc_unavailable"));
    let open = Breaker(0).wrap(MockFetcher::<u32>::err("unreachable"));
    let aggregator = Aggregator::builder().source_with("transactions", open, Timeout(ms(100))).build().unwrap();
    assert_eq!(five_places(&aggregator).await, Five::all("circuit_open"));
}

#[test]
fn http_error_and_error_kind_use_the_same_words() {
    let invalid_json = serde_json::from_str::<u8>("x").unwrap_err();
    let invalid_uri = "\0".parse::<::http::Uri>().unwrap_err();
    let cases = [
        (
            HttpError::Status { status: StatusCode::INTERNAL_SERVER_ERROR, body_excerpt: String::new() },
            ErrorKind::Status,
        ),
        (HttpError::Connect { source: "refused".into() }, ErrorKind::Connect),
        (HttpError::Timeout { after: ms(1) }, ErrorKind::Timeout),
        (HttpError::BodyTooLarge { limit: 1 }, ErrorKind::BodyTooLarge),
        (HttpError::InvalidJson { source: invalid_json }, ErrorKind::InvalidJson),
        (HttpError::ContentType { found: None }, ErrorKind::ContentType),
        (HttpError::Redirect { status: StatusCode::FOUND, location: None }, ErrorKind::Redirect),
        (HttpError::Protocol { source: "reset".into() }, ErrorKind::Protocol),
        (HttpError::MissingParam { name: "id".into() }, ErrorKind::InvalidRequest),
        (HttpError::Encoding { found: "gzip".into() }, ErrorKind::ContentType),
        (HttpError::InvalidUrl { source: invalid_uri }, ErrorKind::InvalidRequest),
    ];
    let core = [
        "failed",
        "panicked",
        "timeout",
        "cancelled",
        "status",
        "connect",
        "body_too_large",
        "invalid_json",
        "content_type",
        "redirect",
        "protocol",
        "invalid_request",
    ];
    for (error, kind) in cases {
        assert_eq!(error.kind(), kind, "{error:?}");
        assert_eq!(Classify::kind(&error), kind, "{error:?}");
        assert!(core.contains(&error.kind().as_str()), "`{}` is not one of core's words", error.kind());
    }
}
