//! The transactions cache (issue 20): off by default; with `--stale-if-error-ms`, a failing
//! transactions backend is answered by the last good section, listed under `"stale"`, and
//! never for another caller (the key holds the user id and the authorization).

mod support;

use std::time::Duration;

use dashboard::limits::Limits;
use dashboard::{CacheConfig, DemoBackend, Service};

use support::{get, serve_config};

async fn start(cache: Option<CacheConfig>) -> std::net::SocketAddr {
    let profile = DemoBackend::start(Service::Profile).await.expect("profile backend");
    let transactions = DemoBackend::start(Service::Transactions).await.expect("transactions backend");
    let mut config = support::config(profile.url_template(), transactions.url_template(), Duration::from_secs(1));
    config.cache = cache;
    let (addr, server) = serve_config(config, Limits::default()).await;
    // The backends and the server live until the test's runtime ends.
    std::mem::forget((profile, transactions, server));
    addr
}

#[tokio::test]
async fn a_failing_backend_is_answered_stale_for_the_same_caller_only() {
    let cache = CacheConfig { ttl: Duration::ZERO, stale_if_error: Duration::from_secs(60), redis_url: None };
    let addr = start(Some(cache)).await;
    let alice = [("authorization", "Bearer alice")];
    let fresh = get(addr, "/dashboard/7", &alice).await;
    assert_eq!(fresh.status, 200, "{}", fresh.body);
    assert!(fresh.json().get("stale").is_none(), "a fresh answer lists nothing stale: {}", fresh.body);

    let stale = get(addr, "/dashboard/7?transactions_fail=1", &alice).await;
    assert_eq!(stale.status, 200, "{}", stale.body);
    let body = stale.json();
    assert_eq!(body["stale"], serde_json::json!(["transactions"]));
    assert_eq!(body["transactions"], fresh.json()["transactions"]);

    // Streamed, the last line lists it, as the README shows.
    let streamed = [alice[0], ("accept", "application/x-ndjson")];
    let stale = get(addr, "/dashboard/7?transactions_fail=1", &streamed).await;
    assert_eq!(stale.status, 200, "{}", stale.body);
    assert!(stale.body.contains(r#"{"outcome":"ok","stale":["transactions"]}"#), "{}", stale.body);

    let bob = get(addr, "/dashboard/7?transactions_fail=1", &[("authorization", "Bearer bob")]).await;
    assert_eq!(bob.status, 502, "another caller must never get Alice's cached section: {}", bob.body);
}

#[tokio::test]
async fn without_the_cache_a_failing_backend_fails_the_request() {
    let addr = start(None).await;
    assert_eq!(get(addr, "/dashboard/7", &[]).await.status, 200);
    assert_eq!(get(addr, "/dashboard/7?transactions_fail=1", &[]).await.status, 502);
}

#[tokio::test]
async fn an_unreachable_redis_at_start_is_not_fatal() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).unwrap().port();
    let redis_url = Some(format!("redis://127.0.0.1:{port}"));
    let cache = CacheConfig { ttl: Duration::ZERO, stale_if_error: Duration::from_secs(60), redis_url };
    let addr = start(Some(cache)).await;
    assert_eq!(get(addr, "/dashboard/7", &[]).await.status, 200);
    let stale = get(addr, "/dashboard/7?transactions_fail=1", &[]).await;
    assert_eq!(
        (stale.status, &stale.json()["stale"]),
        (200, &serde_json::json!(["transactions"])),
        "the local tier still answers"
    );
}

#[tokio::test]
async fn an_invalid_redis_url_or_an_empty_cache_is_refused_at_start() {
    let config = |cache| {
        let mut config = support::config("http://p/{id}".into(), "http://t/{id}".into(), Duration::from_secs(1));
        config.cache = Some(cache);
        config
    };
    let bad_url =
        CacheConfig { ttl: Duration::ZERO, stale_if_error: Duration::from_secs(1), redis_url: Some("http://r".into()) };
    let error = dashboard::AppState::new(&config(bad_url)).unwrap_err();
    assert!(matches!(error, dashboard::ConfigError::Redis(_)), "{error:?}");
    let empty = CacheConfig { ttl: Duration::ZERO, stale_if_error: Duration::ZERO, redis_url: None };
    let error = dashboard::AppState::new(&config(empty)).unwrap_err();
    let chain = format!("{error}: {}", std::error::Error::source(&error).map(ToString::to_string).unwrap_or_default());
    assert!(chain.contains("invalid aggregator configuration"), "{chain}");
}
