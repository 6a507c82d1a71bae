//! The HTTP client's pool against real servers on 127.0.0.1: the per-host idle cap, the idle
//! timeout, the one retry of an idempotent request on a pooled connection the backend closed,
//! and host names through the bounded resolver.

#[path = "support/server.rs"]
mod server;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use muster_adapters::http::{HttpClient, HttpError, HttpFetcher, Method};
use muster_core::Fetcher;
use server::Server;

const PATIENCE: Duration = Duration::from_secs(5);

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Waits (polling, bounded) until `condition` holds; `false` if it never does within
/// [`PATIENCE`].
async fn eventually(condition: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < PATIENCE {
        if condition() {
            return true;
        }
        tokio::time::sleep(ms(5)).await;
    }
    condition()
}

/// A server that answers each request after `delay`, keeps connections alive, and counts the
/// connections the client closed.
async fn counting_server(delay: Duration) -> (Server, Arc<AtomicUsize>) {
    let closed = Arc::new(AtomicUsize::new(0));
    let counter = closed.clone();
    let server = Server::start(move |mut conn| {
        let counter = counter.clone();
        async move {
            while conn.read_request().await.is_some() {
                tokio::time::sleep(delay).await;
                if conn.respond("200 OK", &[("content-type", "application/json")], b"{}").await.is_err() {
                    break;
                }
            }
            counter.fetch_add(1, Ordering::SeqCst);
        }
    })
    .await;
    (server, closed)
}

#[tokio::test]
async fn a_burst_leaves_at_most_the_idle_cap_of_connections_open() {
    let (server, closed) = counting_server(ms(100)).await;
    let client = HttpClient::builder().pool_max_idle_per_host(2).build().unwrap();
    let fetcher = HttpFetcher::builder(&server.url("/{id}")).client(client).build().unwrap();

    // Eight at once: eight connections, since each answer takes 100 ms.
    let burst: Vec<_> = (0..8)
        .map(|i| {
            let fetcher = fetcher.clone();
            tokio::spawn(async move { fetcher.fetch(&i).await })
        })
        .collect();
    for fetch in burst {
        fetch.await.unwrap().unwrap();
    }

    assert_eq!(server.accepted(), 8);
    assert!(eventually(|| closed.load(Ordering::SeqCst) == 6).await, "closed: {}", closed.load(Ordering::SeqCst));
    tokio::time::sleep(ms(200)).await;
    assert_eq!(closed.load(Ordering::SeqCst), 6, "the two idle connections under the cap stay open");
    fetcher.fetch(&9).await.unwrap();
    assert_eq!(server.accepted(), 8, "the next request reuses a pooled connection");
}

#[tokio::test]
async fn an_idle_pooled_connection_is_closed_after_the_idle_timeout() {
    let (server, closed) = counting_server(Duration::ZERO).await;
    let client = HttpClient::builder().pool_idle_timeout(ms(200)).build().unwrap();
    let fetcher = HttpFetcher::builder(&server.url("/{id}")).client(client).build().unwrap();

    fetcher.fetch("1").await.unwrap();
    let fetched = Instant::now();

    assert!(eventually(|| closed.load(Ordering::SeqCst) == 1).await, "the idle connection was never closed");
    // hyper-util's reaper runs on the idle timeout's period: up to twice the timeout.
    assert!(fetched.elapsed() >= ms(150), "closed before the idle timeout: {:?}", fetched.elapsed());
}

/// A server whose first connection answers one request, then reads the next one and closes
/// without a byte (a backend closing an idle keep-alive connection as the client reuses it);
/// every later connection answers normally.
async fn closing_after_one_server() -> Server {
    let connections = Arc::new(AtomicUsize::new(0));
    Server::start(move |mut conn| {
        let first = connections.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            let mut answered = 0;
            while let Some(head) = conn.read_request().await {
                if let Some(len) = head.header("content-length").and_then(|len| len.parse().ok()) {
                    let _ = conn.read_body(len).await;
                }
                if first && answered == 1 {
                    return;
                }
                if conn.respond("200 OK", &[("content-type", "application/json")], b"{}").await.is_err() {
                    return;
                }
                answered += 1;
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_get_on_a_pooled_connection_the_backend_closed_is_sent_once_more_on_a_new_one() {
    let server = closing_after_one_server().await;
    let fetcher = HttpFetcher::builder(&server.url("/{id}")).client(HttpClient::new()).build().unwrap();

    fetcher.fetch("1").await.unwrap();
    let second = fetcher.fetch("2").await;

    assert!(second.is_ok(), "{second:?}");
    assert_eq!(server.accepted(), 2, "the retry went on a new connection");
    let targets: Vec<String> = server.heads().iter().map(|head| head.target().to_owned()).collect();
    assert_eq!(targets, ["/1", "/2", "/2"], "sent once more, not more");
}

#[tokio::test]
async fn a_post_on_a_pooled_connection_the_backend_closed_is_not_sent_again() {
    let server = closing_after_one_server().await;
    let fetcher =
        HttpFetcher::builder(&server.url("/{id}")).client(HttpClient::new()).method(Method::POST).build().unwrap();

    fetcher.fetch("1").await.unwrap();
    let error = fetcher.fetch("2").await.unwrap_err();

    assert!(matches!(error, HttpError::Protocol { .. }), "{error:?}");
    assert_eq!(server.heads().len(), 2, "a POST is never repeated");
}

#[tokio::test]
async fn a_new_connection_closed_without_an_answer_is_not_retried() {
    let server = Server::start(|mut conn| async move {
        let _ = conn.read_request().await;
    })
    .await;
    let fetcher = HttpFetcher::builder(&server.url("/{id}")).build().unwrap();

    let error = fetcher.fetch("1").await.unwrap_err();

    assert!(matches!(error, HttpError::Protocol { .. }), "{error:?}");
    assert_eq!(server.accepted(), 1, "only a reused connection is retried");
}

#[tokio::test]
async fn host_names_resolve_through_the_bounded_resolver() {
    let server = Server::json(r#"{"ok": true}"#).await;
    let client = HttpClient::builder().dns_concurrency(1).dns_timeout(ms(2000)).build().unwrap();
    let url = format!("http://localhost:{}/{{id}}", server.addr.port());
    let fetcher = HttpFetcher::builder(&url).client(client).build().unwrap();

    for id in 0..3 {
        assert_eq!(fetcher.fetch(&id).await.unwrap().get(), r#"{"ok": true}"#);
    }
}

#[tokio::test]
async fn a_host_that_does_not_resolve_is_a_connect_error() {
    let client = HttpClient::builder().dns_timeout(ms(2000)).build().unwrap();
    let fetcher = HttpFetcher::builder("http://no-such-host.invalid/{id}").client(client).build().unwrap();

    let error = fetcher.fetch("1").await.unwrap_err();

    assert!(matches!(error, HttpError::Connect { .. }), "{error:?}");
}
