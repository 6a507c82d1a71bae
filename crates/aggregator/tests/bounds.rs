//! The bounds are where users meet them: a builder function generic over its source, as a
//! service writes one so that its tests can pass mocks, compiles with exactly the bound the
//! docs state (`F::Error: Classify + Error + Send + Sync + 'static`) under every built-in policy,
//! and takes a mock fetcher and an HTTP fetcher alike.
#![allow(clippy::unwrap_used)]

use std::error::Error;
use std::time::Duration;

use muster::http::HttpFetcher;
use muster::{
    Aggregator, BuildError, Classify, Fallback, Fetcher, Optional, Retry, Timeout, policy::Coalesce, policy::Hedge,
};
use muster_adapters::mock::MockFetcher;
use serde_json::{Value, json};

#[path = "../../adapters/tests/support/server.rs"]
mod server;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The dashboard's aggregator, over any `profile` source.
fn build<F>(profile: F) -> Result<Aggregator<u64, (Value, Option<Value>)>, BuildError>
where
    F: Fetcher<u64, Output = Value> + Clone + 'static,
    F::Error: Classify + Error + Send + Sync + 'static,
{
    let policies = (Fallback(json!({})), Retry::attempts(2), Hedge(ms(500)), Timeout(ms(1_000)), Coalesce);
    Aggregator::builder()
        .source_with("profile", profile.clone(), policies)
        .source_with("avatar", profile, Optional)
        .build()
}

#[tokio::test]
async fn a_generic_builder_takes_a_mock_and_an_http_fetcher() {
    let mock = MockFetcher::ok(json!({"name": "Ada"}));
    let (profile, avatar) = build(mock).unwrap().aggregate(&7).await.unwrap().outputs;
    assert_eq!((profile["name"].as_str(), avatar), (Some("Ada"), Some(json!({"name": "Ada"}))));

    let server = server::Server::json(r#"{"name":"Grace"}"#).await;
    let http = HttpFetcher::builder(&server.url("/v1/users/{id}")).build().unwrap().decode::<Value>();
    let (profile, _) = build(http).unwrap().aggregate(&7).await.unwrap().outputs;
    assert_eq!(profile["name"], "Grace");
    assert!(server.heads().iter().all(|head| head.target() == "/v1/users/7"), "{:?}", server.heads());
}
