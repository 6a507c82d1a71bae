//! The HTTP fetcher against real servers on 127.0.0.1: the happy path and the request it
//! sends, every fault a server can produce (each a typed error, within the timeout), hostile
//! ids, propagation headers, redirects, pooling and cancellation.
//!
//! These tests use the real clock (real sockets, real hyper timers): every timing assertion
//! has a generous margin and none depends on the machine being fast.

#[path = "support/server.rs"]
mod server;

use std::error::Error as _;
use std::time::{Duration, Instant};

use muster_adapters::http::{HttpClient, HttpError, HttpFetcher, StatusCode};
use muster_core::muster_options::Deadline;
use muster_core::{Fetcher, Group, with_context, with_deadline};
use server::{Conn, Server};
use tokio::sync::mpsc;

/// The fetch timeout of the fault tests.
const TIMEOUT: Duration = Duration::from_millis(300);
/// How late past its timeout a fetch may end on a slow, loaded machine.
const MARGIN: Duration = Duration::from_millis(250);
/// How long a server waits for something the client should do at once.
const PATIENCE: Duration = Duration::from_secs(5);

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

fn fetcher(server: &Server, path: &str) -> HttpFetcher {
    HttpFetcher::builder(&server.url(path)).timeout(TIMEOUT).build().expect("a valid template")
}

/// Fetches `id` and returns the error, asserting it came within the timeout plus the margin.
async fn fetch_err(fetcher: &HttpFetcher, id: &str) -> HttpError {
    let started = Instant::now();
    let result = fetcher.fetch(id).await;
    let elapsed = started.elapsed();
    assert!(elapsed <= TIMEOUT + MARGIN, "the fetch took {elapsed:?}");
    match result {
        Ok(body) => panic!("expected an error, got {}", body.get()),
        Err(error) => error,
    }
}

/// Asserts that `elapsed` is the timeout: not before it, not much after it.
fn assert_timed_out_on_time(elapsed: Duration, timeout: Duration) {
    assert!(elapsed >= timeout - ms(5), "timed out early, after {elapsed:?}");
    assert!(elapsed <= timeout + MARGIN, "timed out late, after {elapsed:?}");
}

/// The percent-encoding the fetcher promises, written out independently.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => char::from(byte).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

fn decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("an ASCII escape");
            out.push(u8::from_str_radix(hex, 16).expect("a hex escape"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

/// Answers `200` with `body` as `application/json`.
async fn ok_json(conn: &mut Conn, body: &str) {
    let _ = conn.respond("200 OK", &[("content-type", "application/json")], body.as_bytes()).await;
}

#[tokio::test]
async fn a_json_body_comes_back_raw_and_the_request_is_a_plain_get() {
    let server = Server::json(r#" {"name": "Ada", "tags": ["a", "b"]} "#).await;
    let body = fetcher(&server, "/v1/users/{id}").fetch("7").await.unwrap();

    assert_eq!(body.get(), r#"{"name": "Ada", "tags": ["a", "b"]}"#);
    let head = server.only_head();
    assert_eq!(head.line, "GET /v1/users/7 HTTP/1.1");
    assert_eq!(head.header("host"), Some(server.addr.to_string().as_str()));
    assert_eq!(head.header("accept"), Some("application/json"));
    assert!(head.header("user-agent").is_some_and(|agent| agent.starts_with("muster-adapters/")));
    for absent in ["x-request-id", "traceparent", "x-muster-deadline-ms", "accept-encoding", "content-length"] {
        assert!(head.all(absent).is_empty(), "unexpected `{absent}` header in {head:?}");
    }
}

#[tokio::test]
async fn decode_deserialises_the_body_into_a_type() {
    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Balance {
        cents: i64,
    }

    let server = Server::json(r#"{"cents": 125000}"#).await;
    let balances = fetcher(&server, "/v1/balance/{id}").decode::<Balance>();
    assert_eq!(balances.fetch(&7_u64).await.unwrap(), Balance { cents: 125_000 });

    let wrong_shape = fetcher(&server, "/v1/balance/{id}").decode::<Vec<String>>();
    let error = wrong_shape.fetch("7").await.unwrap_err();
    assert!(matches!(error, HttpError::InvalidJson { .. }), "{error:?}");
}

#[tokio::test]
async fn slow_response_headers_time_out() {
    let server = Server::start(|mut conn| async move {
        conn.read_request().await;
        tokio::time::sleep(PATIENCE).await;
        ok_json(&mut conn, "{}").await;
    })
    .await;

    let started = Instant::now();
    let error = fetcher(&server, "/slow/{id}").fetch("7").await.unwrap_err();
    assert_timed_out_on_time(started.elapsed(), TIMEOUT);
    assert!(matches!(error, HttpError::Timeout { after } if after == TIMEOUT), "{error:?}");
    assert_eq!(error.kind().as_str(), "timeout");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn a_body_that_dribbles_in_times_out() {
    let server = Server::start(|mut conn| async move {
        conn.read_request().await;
        server::dribble_body(&mut conn).await;
    })
    .await;

    let started = Instant::now();
    let error = fetcher(&server, "/dribble/{id}").fetch("7").await.unwrap_err();
    assert_timed_out_on_time(started.elapsed(), TIMEOUT);
    assert!(matches!(error, HttpError::Timeout { .. }), "{error:?}");
}

#[tokio::test]
async fn a_reset_connection_is_a_protocol_error() {
    let server = Server::start(|mut conn| async move {
        conn.read_request().await;
        // SO_LINGER 0: closing sends a RST instead of a FIN.
        conn.stream.set_zero_linger().unwrap();
        drop(conn);
    })
    .await;

    let error = fetch_err(&fetcher(&server, "/reset/{id}"), "7").await;
    assert!(matches!(error, HttpError::Protocol { .. }), "{error:?}");
    assert_eq!(error.kind().as_str(), "protocol");
    assert!(error.is_retryable());
}

#[tokio::test]
async fn an_empty_reply_is_a_protocol_error() {
    let server = Server::start(|mut conn| async move {
        conn.read_request().await;
        drop(conn);
    })
    .await;

    let error = fetch_err(&fetcher(&server, "/empty/{id}"), "7").await;
    assert!(matches!(error, HttpError::Protocol { .. }), "{error:?}");
    assert!(error.source().is_some(), "the protocol error keeps hyper's error as its source");
}

#[tokio::test]
async fn a_truncated_body_is_a_protocol_error() {
    let server = Server::start(|mut conn| async move {
        conn.read_request().await;
        let response = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\": 1";
        let _ = conn.write(response).await;
        drop(conn);
    })
    .await;

    let error = fetch_err(&fetcher(&server, "/truncated/{id}"), "7").await;
    assert!(matches!(error, HttpError::Protocol { .. }), "{error:?}");
}

#[tokio::test]
async fn a_malformed_chunked_body_is_a_protocol_error() {
    let server = Server::start(|mut conn| async move {
        conn.read_request().await;
        let _ = conn.write(server::MALFORMED_CHUNKED).await;
        conn.closed_within(PATIENCE).await;
    })
    .await;

    let error = fetch_err(&fetcher(&server, "/chunked/{id}"), "7").await;
    assert!(matches!(error, HttpError::Protocol { .. }), "{error:?}");
}

#[tokio::test]
async fn random_bytes_are_a_protocol_error() {
    let server = Server::start(|mut conn| async move {
        conn.read_request().await;
        let _ = conn.write(server::noise(4096)).await;
        // Keep the connection open: the error must come from the bytes, not from a close.
        conn.closed_within(PATIENCE).await;
    })
    .await;

    let error = fetch_err(&fetcher(&server, "/noise/{id}"), "7").await;
    assert!(matches!(error, HttpError::Protocol { .. }), "{error:?}");
}

#[tokio::test]
async fn a_non_2xx_status_keeps_an_excerpt_of_the_body() {
    let server = Server::start(|mut conn| async move {
        while let Some(head) = conn.read_request().await {
            let result = if head.target().ends_with("/busy") {
                let body = format!("{{\"error\": \"overloaded\", \"detail\": \"{}\"}}", "x".repeat(1000));
                conn.respond("503 Service Unavailable", &[("content-type", "application/json")], body.as_bytes()).await
            } else {
                conn.respond("404 Not Found", &[("content-type", "text/plain")], "no such user: é".as_bytes()).await
            };
            if result.is_err() {
                return;
            }
        }
    })
    .await;
    let fetcher = fetcher(&server, "/v1/users/{id}");

    let error = fetch_err(&fetcher, "busy").await;
    let HttpError::Status { status, body_excerpt } = &error else { panic!("expected a status error, got {error:?}") };
    assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body_excerpt.len(), 200);
    assert!(body_excerpt.starts_with(r#"{"error": "overloaded", "detail": "xxx"#), "{body_excerpt}");
    assert_eq!(error.kind().as_str(), "status");
    assert!(error.is_retryable(), "5xx is retryable");
    assert_eq!(error.to_string(), "unexpected status 503 Service Unavailable", "the body stays out of the message");

    let error = fetch_err(&fetcher, "ada").await;
    assert!(
        matches!(&error, HttpError::Status { status: StatusCode::NOT_FOUND, body_excerpt } if body_excerpt == "no such user: é"),
        "{error:?}"
    );
    assert!(!error.is_retryable(), "404 is not retryable");
}

#[tokio::test]
async fn invalid_json_is_refused() {
    let server = Server::json(r#"{"name": "Ada""#).await;
    let error = fetch_err(&fetcher(&server, "/v1/users/{id}"), "7").await;
    assert!(matches!(error, HttpError::InvalidJson { .. }), "{error:?}");
    assert_eq!(error.kind().as_str(), "invalid_json");
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn a_content_type_other_than_json_is_refused() {
    let server = Server::start(|mut conn| async move {
        while let Some(head) = conn.read_request().await {
            let headers: &[(&str, &str)] = match head.target() {
                "/html" => &[("content-type", "text/html; charset=utf-8")],
                "/problem" => &[("content-type", "application/problem+json")],
                _ => &[],
            };
            if conn.respond("200 OK", headers, b"{}").await.is_err() {
                return;
            }
        }
    })
    .await;

    let error = fetch_err(&fetcher(&server, "/{id}"), "html").await;
    assert!(
        matches!(&error, HttpError::ContentType { found: Some(found) } if found == "text/html; charset=utf-8"),
        "{error:?}"
    );
    assert_eq!(error.kind().as_str(), "content_type");
    let error = fetch_err(&fetcher(&server, "/{id}"), "none").await;
    assert!(matches!(&error, HttpError::ContentType { found: None }), "{error:?}");
    assert_eq!(fetcher(&server, "/{id}").fetch("problem").await.unwrap().get(), "{}");
}

#[tokio::test]
async fn an_unrequested_content_encoding_is_refused() {
    let server = Server::start(|mut conn| async move {
        conn.read_request().await;
        let headers = [("content-type", "application/json"), ("content-encoding", "gzip")];
        let _ = conn.respond("200 OK", &headers, b"\x1f\x8b\x08\x00").await;
    })
    .await;

    let error = fetch_err(&fetcher(&server, "/{id}"), "7").await;
    assert!(matches!(&error, HttpError::Encoding { found } if found == "gzip"), "{error:?}");
    // A fault of the response, not of the request.
    assert_eq!(error.kind(), muster_core::ErrorKind::ContentType);
}

#[tokio::test]
async fn an_oversized_body_is_cut_off_at_the_limit_while_streaming() {
    const TOTAL: usize = 10 * 1024 * 1024;
    const CHUNK: usize = 64 * 1024;
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel();
    let server = Server::start(move |mut conn| {
        let sent_tx = sent_tx.clone();
        async move {
            conn.read_request().await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
            let mut sent = 0;
            let mut finished = conn.write(head).await.is_ok();
            // 10 MiB in 64 KiB chunks, one every 5 ms: at least 800 ms for the whole body.
            while finished && sent < TOTAL {
                let chunk = format!("{CHUNK:x}\r\n{}\r\n", " ".repeat(CHUNK));
                finished = conn.write(chunk).await.is_ok();
                if finished {
                    sent += CHUNK;
                }
                tokio::time::sleep(ms(5)).await;
            }
            let _ = sent_tx.send((sent, finished));
        }
    })
    .await;

    let limit = 1024 * 1024;
    let fetcher = HttpFetcher::builder(&server.url("/big/{id}")).timeout(PATIENCE).max_body(limit).build().unwrap();
    let started = Instant::now();
    let error = fetcher.fetch("7").await.unwrap_err();
    let elapsed = started.elapsed();
    assert!(matches!(error, HttpError::BodyTooLarge { limit: 1_048_576 }), "{error:?}");
    assert_eq!(error.kind().as_str(), "body_too_large");

    let (sent, finished) = tokio::time::timeout(PATIENCE, sent_rx.recv()).await.unwrap().unwrap();
    assert!(!finished, "the server sent all {sent} bytes: the client kept reading past the limit");
    assert!(sent < TOTAL / 2, "the server sent {sent} bytes before the client stopped it");
    assert!(elapsed < PATIENCE, "the fetch took {elapsed:?}");
}

#[tokio::test]
async fn a_content_length_over_the_limit_is_refused_before_reading() {
    let server = Server::start(|mut conn| async move {
        conn.read_request().await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2000000\r\n\r\n";
        let _ = conn.write(head).await;
        // Send no body at all: a client that waited for it would time out.
        conn.closed_within(PATIENCE).await;
    })
    .await;

    let fetcher = HttpFetcher::builder(&server.url("/{id}")).timeout(TIMEOUT).max_body(1000).build().unwrap();
    let error = fetch_err(&fetcher, "7").await;
    assert!(matches!(error, HttpError::BodyTooLarge { limit: 1000 }), "{error:?}");
}

/// A server where `/old` redirects to `/new`, `/loop` to itself, `/tls` to https and
/// `/new` answers JSON.
async fn redirecting_server() -> Server {
    Server::start(|mut conn| async move {
        while let Some(head) = conn.read_request().await {
            let location = match head.target() {
                "/new" => None,
                "/old" => Some("/new".to_owned()),
                "/loop" => Some("loop".to_owned()),
                _ => Some(format!("https://{}/new", head.header("host").unwrap_or_default())),
            };
            let result = match location {
                None => conn.respond("200 OK", &[("content-type", "application/json")], b"\"new\"").await,
                Some(location) => conn.respond("302 Found", &[("location", &location)], b"").await,
            };
            if result.is_err() {
                return;
            }
        }
    })
    .await
}

#[tokio::test]
async fn redirects_are_not_followed_by_default() {
    let server = redirecting_server().await;
    let error = fetch_err(&fetcher(&server, "/{id}"), "old").await;
    assert!(
        matches!(&error, HttpError::Redirect { status: StatusCode::FOUND, location: Some(location) } if location == "/new"),
        "{error:?}"
    );
    assert_eq!(error.kind().as_str(), "redirect");
    assert!(!error.is_retryable());
    assert_eq!(server.heads().len(), 1, "nothing was requested after the redirect");
}

#[tokio::test]
async fn redirects_are_followed_when_enabled_up_to_the_limit_and_never_to_another_scheme() {
    let server = redirecting_server().await;
    let following = HttpFetcher::builder(&server.url("/{id}")).timeout(TIMEOUT).follow_redirects(2).build().unwrap();

    assert_eq!(following.fetch("old").await.unwrap().get(), "\"new\"");
    let lines: Vec<String> = server.heads().into_iter().map(|head| head.line).collect();
    assert_eq!(lines, ["GET /old HTTP/1.1", "GET /new HTTP/1.1"]);

    let error = fetch_err(&following, "loop").await;
    assert!(matches!(&error, HttpError::Redirect { location: Some(location), .. } if location == "loop"), "{error:?}");
    assert_eq!(server.heads().len(), 2 + 3, "the first request and two redirects");

    let error = fetch_err(&following, "tls").await;
    assert!(
        matches!(&error, HttpError::Redirect { location: Some(location), .. } if location.starts_with("https://")),
        "{error:?}"
    );
    assert_eq!(server.heads().len(), 5 + 1, "the https target was not followed");
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);

    let fetcher = HttpFetcher::builder(&format!("http://{addr}/v1/users/{{id}}")).timeout(TIMEOUT).build().unwrap();
    let error = fetch_err(&fetcher, "7").await;
    assert!(matches!(error, HttpError::Connect { .. }), "{error:?}");
    assert_eq!(error.kind().as_str(), "connect");
    assert!(error.is_retryable());
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn https_urls_go_through_tls() {
    let (hello_tx, mut hello_rx) = mpsc::unbounded_channel();
    let server = Server::start(move |mut conn| {
        let hello_tx = hello_tx.clone();
        async move {
            use tokio::io::AsyncReadExt;
            let mut first = [0; 1];
            let _ = conn.stream.read_exact(&mut first).await;
            let _ = hello_tx.send(first[0]);
            // Answer the TLS client hello in plain text.
            let _ = conn.write("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
        }
    })
    .await;

    let fetcher = HttpFetcher::builder(&format!("https://{}/v1/users/{{id}}", server.addr))
        .client(HttpClient::new())
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let error = fetch_err(&fetcher, "7").await;
    assert!(matches!(error, HttpError::Connect { .. }), "a failed TLS handshake is a connect error: {error:?}");
    assert_eq!(hello_rx.recv().await, Some(0x16), "the first byte is a TLS handshake record");
}

#[tokio::test]
async fn dropping_the_fetch_while_waiting_for_the_response_closes_the_connection() {
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    let server = Server::start(move |mut conn| {
        let closed_tx = closed_tx.clone();
        async move {
            conn.read_request().await;
            let _ = closed_tx.send(conn.closed_within(PATIENCE).await);
        }
    })
    .await;

    let fetcher = HttpFetcher::builder(&server.url("/{id}")).timeout(PATIENCE).build().unwrap();
    // The fetch is dropped when the outer timeout fires, as a group drops a cancelled source.
    let outcome = tokio::time::timeout(ms(200), fetcher.fetch("7")).await;
    assert!(outcome.is_err(), "the server never answers");
    let closed = tokio::time::timeout(PATIENCE, closed_rx.recv()).await.unwrap();
    assert_eq!(closed, Some(true), "the server saw the connection close");
    assert_eq!(server.heads().len(), 1);
}

#[tokio::test]
async fn dropping_the_fetch_mid_body_closes_the_connection() {
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    let server = Server::start(move |mut conn| {
        let closed_tx = closed_tx.clone();
        async move {
            conn.read_request().await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n[1,";
            let _ = conn.write(head).await;
            let _ = closed_tx.send(conn.closed_within(PATIENCE).await);
        }
    })
    .await;

    let fetcher = HttpFetcher::builder(&server.url("/{id}")).timeout(PATIENCE).build().unwrap();
    let outcome = tokio::time::timeout(ms(200), fetcher.fetch("7")).await;
    assert!(outcome.is_err(), "the body never completes");
    let closed = tokio::time::timeout(PATIENCE, closed_rx.recv()).await.unwrap();
    assert_eq!(closed, Some(true), "the server saw the connection close");
}

#[tokio::test]
async fn a_failing_source_cancels_its_sibling_whose_connection_closes() {
    let (closed_tx, mut closed_rx) = mpsc::unbounded_channel();
    let slow = Server::start(move |mut conn| {
        let closed_tx = closed_tx.clone();
        async move {
            conn.read_request().await;
            let _ = closed_tx.send(conn.closed_within(PATIENCE).await);
        }
    })
    .await;
    let failing = Server::start(|mut conn| async move {
        conn.read_request().await;
        tokio::time::sleep(ms(50)).await;
        let _ = conn.respond("503 Service Unavailable", &[], b"").await;
    })
    .await;

    let client = HttpClient::new();
    let build = |server: &Server| {
        HttpFetcher::builder(&server.url("/v1/users/{id}")).client(client.clone()).timeout(PATIENCE).build().unwrap()
    };
    let (profile, transactions) = (build(&failing), build(&slow));
    let started = Instant::now();
    let mut group = Group::new();
    group.spawn("profile", profile.fetch("7")).unwrap();
    group.spawn("transactions", transactions.fetch("7")).unwrap();
    let error = group.wait().await.unwrap_err();

    assert!(started.elapsed() < PATIENCE, "the group waited for the slow source");
    assert_eq!(error.source_name(), Some("profile"));
    assert_eq!(error.cancelled(), ["transactions"]);
    let mut cause = error.source();
    while let Some(inner) = cause.filter(|inner| !inner.is::<HttpError>()) {
        cause = inner.source();
    }
    let cause = cause.and_then(|cause| cause.downcast_ref::<HttpError>());
    assert!(matches!(cause, Some(HttpError::Status { status: StatusCode::SERVICE_UNAVAILABLE, .. })), "{error:?}");
    let closed = tokio::time::timeout(PATIENCE, closed_rx.recv()).await.unwrap();
    assert_eq!(closed, Some(true), "the cancelled source's connection was closed");
}

#[tokio::test]
async fn hostile_ids_stay_in_their_one_path_segment_or_query_value() {
    let server = Server::json("{}").await;
    let client = HttpClient::new();
    let in_path =
        HttpFetcher::builder(&server.url("/v1/users/{id}")).client(client.clone()).timeout(PATIENCE).build().unwrap();
    let in_query = HttpFetcher::builder(&server.url("/v1/search?q={id}&limit=5"))
        .client(client)
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let host = server.addr.to_string();

    let long_id = "x/".repeat(5_000);
    let hostile = [
        "../admin",
        "..",
        ".",
        "a/b",
        "x?y=1",
        "%2e%2e",
        "%2E%2E%2F",
        "a#b",
        "a\r\nHost: evil",
        "a b&c=d;e",
        long_id.as_str(),
        "ü€😀",
        "7",
    ];
    for id in hostile {
        let shown = id.chars().take(20).collect::<String>();

        in_path.fetch(id).await.unwrap();
        let head = server.heads().pop().unwrap();
        assert_eq!(head.line, format!("GET /v1/users/{} HTTP/1.1", encode(id)), "id {shown:?}");
        let segment = head.target().strip_prefix("/v1/users/").unwrap();
        assert!(!segment.contains(['/', '?', '#', '.']), "id {shown:?} leaked out of its segment: {segment}");
        assert_eq!(decode(segment), id, "id {shown:?}");
        assert_eq!(head.header("host"), Some(host.as_str()), "id {shown:?}");

        in_query.fetch(id).await.unwrap();
        let head = server.heads().pop().unwrap();
        assert_eq!(head.line, format!("GET /v1/search?q={}&limit=5 HTTP/1.1", encode(id)), "id {shown:?}");
        let value = head.target().strip_prefix("/v1/search?q=").unwrap().strip_suffix("&limit=5").unwrap();
        assert_eq!(decode(value), id, "id {shown:?}");
        assert_eq!(head.header("host"), Some(host.as_str()), "id {shown:?}");
    }
    assert_eq!(server.heads().len(), 2 * hostile.len());
    assert_eq!(server.accepted(), 1, "every request went to the configured host, on one connection");
}

#[tokio::test]
async fn ids_that_cannot_make_a_request_fail_before_anything_is_sent() {
    let server = Server::json("{}").await;
    let fetcher = fetcher(&server, "/v1/users/{id}/accounts/{account}");

    let error = fetcher.fetch(&[("id", "7")]).await.unwrap_err();
    assert!(matches!(&error, HttpError::MissingParam { name } if name == "account"), "{error:?}");
    assert_eq!(error.kind().as_str(), "invalid_request");
    let error = fetcher.fetch("").await.unwrap_err();
    assert!(matches!(&error, HttpError::MissingParam { name } if name == "id"), "an empty segment: {error:?}");
    let error = fetcher.fetch("a".repeat(70_000).as_str()).await.unwrap_err();
    assert!(matches!(error, HttpError::InvalidUrl { .. }), "{error:?}");
    assert_eq!(error.kind().as_str(), "invalid_request");

    assert_eq!(server.accepted(), 0, "nothing was sent");
}

/// The context of a call with `request_id` and `traceparent`, as an aggregator sets it.
fn context(request_id: &str, traceparent: &str) -> muster_core::Context {
    muster_core::Context::new().with_request_id(request_id).with_traceparent(traceparent)
}

#[tokio::test]
async fn request_id_and_valid_traceparents_are_propagated_from_the_context() {
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let server = Server::json("{}").await;
    let fetcher = HttpFetcher::builder(&server.url("/v1/users/{id}"))
        .header("authorization", "Bearer token")
        .header("x-tenant", "bank")
        .build()
        .unwrap();

    with_context(context("req-42", TRACEPARENT), fetcher.fetch("7")).await.unwrap();
    let head = server.heads().pop().unwrap();
    assert_eq!(head.header("x-request-id"), Some("req-42"));
    assert_eq!(head.header("traceparent"), Some(TRACEPARENT));
    assert_eq!(head.header("authorization"), Some("Bearer token"));
    assert_eq!(head.header("x-tenant"), Some("bank"));

    let invalid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7";
    with_context(context("req\r\nx-evil: 1", invalid), fetcher.fetch("7")).await.unwrap();
    let head = server.heads().pop().unwrap();
    assert_eq!(head.all("traceparent"), Vec::<&str>::new(), "an invalid traceparent is dropped");
    assert_eq!(head.all("x-request-id"), Vec::<&str>::new(), "a request id that is no header value is dropped");
    assert_eq!(head.all("x-evil"), Vec::<&str>::new());
}

#[tokio::test]
async fn the_remaining_group_deadline_is_sent_in_milliseconds() {
    let server = Server::json("{}").await;
    let fetcher = fetcher(&server, "/v1/users/{id}");

    let started = Instant::now();
    let mut group = Group::with_options(Deadline(Duration::from_secs(2))).unwrap();
    group.spawn("profile", fetcher.fetch("7")).unwrap();
    group.wait().await.unwrap();
    let elapsed = u64::try_from(started.elapsed().as_millis()).unwrap();

    let head = server.only_head();
    let header = head.header("x-muster-deadline-ms").unwrap();
    let left: u64 = header.parse().unwrap_or_else(|_| panic!("not an integer: {header:?}"));
    assert!(left <= 2000, "more than the group's deadline left: {left}");
    assert!(left + elapsed + 1 >= 2000, "{left} ms left, but only {elapsed} ms went by");

    fetcher.fetch("7").await.unwrap();
    assert_eq!(server.heads()[1].all("x-muster-deadline-ms"), Vec::<&str>::new(), "no deadline, no header");
}

#[tokio::test]
async fn the_deadline_is_left_to_the_group_that_set_it() {
    let server = Server::start(|mut conn| async move {
        conn.read_request().await;
        tokio::time::sleep(PATIENCE).await;
        ok_json(&mut conn, "{}").await;
    })
    .await;
    let fetcher = HttpFetcher::builder(&server.url("/{id}")).timeout(Duration::from_secs(10)).build().unwrap();

    // The group's deadline, not a fetcher timeout on the same tick, is what fails the group.
    let started = Instant::now();
    let mut group = Group::with_options(muster_core::muster_options::Deadline(TIMEOUT)).unwrap();
    group.spawn("slow", fetcher.fetch("7")).unwrap();
    let error = group.wait().await.unwrap_err();
    assert_timed_out_on_time(started.elapsed(), TIMEOUT);
    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(error.pending(), ["slow"]);
}

#[tokio::test]
async fn a_fetch_past_its_deadline_sends_nothing() {
    let server = Server::json("{}").await;
    let fetcher = fetcher(&server, "/{id}");

    let error = with_deadline(tokio::time::Instant::now(), fetcher.fetch("7")).await.unwrap_err();
    assert!(matches!(error, HttpError::Timeout { after: Duration::ZERO }), "{error:?}");
    tokio::time::sleep(ms(50)).await;
    assert_eq!(server.accepted(), 0);
}

/// A server that reads requests and never answers.
async fn silent() -> Server {
    Server::start(|mut conn| async move { while conn.read_request().await.is_some() {} }).await
}

/// Outside a group, a budget under 1 ms is never sent as `x-muster-deadline-ms: 0`: nothing is
/// sent, and the fetch times out at the deadline.
#[tokio::test(start_paused = true)]
async fn a_budget_under_a_millisecond_is_not_sent_and_times_out_at_the_deadline() {
    let server = Server::json("{}").await;
    let fetcher = fetcher(&server, "/{id}");
    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_micros(900);

    let error = with_deadline(deadline, fetcher.fetch("7")).await.unwrap_err();

    assert!(matches!(error, HttpError::Timeout { .. }), "{error:?}");
    assert!(tokio::time::Instant::now() >= deadline, "it timed out at the deadline, not at once");
    assert!(started.elapsed() < ms(2), "and not later: {:?}", started.elapsed());
    tokio::time::sleep(ms(50)).await;
    assert_eq!(server.accepted(), 0, "nothing was sent");
}

/// In a group, a source left with under 1 ms sends nothing and waits: the group reports its
/// deadline, naming the source as pending, not a failed source.
#[tokio::test(start_paused = true)]
async fn in_a_group_a_budget_under_a_millisecond_leaves_the_group_to_report_its_deadline() {
    let server = Server::json("{}").await;
    let fetcher = fetcher(&server, "/{id}");
    let mut group = Group::with_options(Deadline(Duration::from_secs(1))).unwrap();
    group
        .spawn("late", async {
            tokio::time::advance(Duration::from_micros(999_500)).await;
            fetcher.fetch("7").await
        })
        .unwrap();

    let error = group.wait().await.unwrap_err();

    assert!(error.is_timeout(), "{error:?}");
    assert_eq!(error.pending(), ["late"]);
    tokio::time::sleep(ms(50)).await;
    assert_eq!(server.accepted(), 0, "nothing was sent");
}

/// The fetcher's own timeout ending with the group's deadline: the deadline is what is
/// reported (as with the `Timeout` policy), so no "backstop" timeout past it is needed.
#[tokio::test(start_paused = true)]
async fn when_the_timeout_and_the_deadline_end_together_the_deadline_is_reported() {
    let server = silent().await;
    let fetcher = HttpFetcher::builder(&server.url("/{id}")).timeout(Duration::from_secs(1)).build().unwrap();
    let mut group = Group::with_options(Deadline(Duration::from_secs(1))).unwrap();
    group.spawn("slow", fetcher.fetch("7")).unwrap();

    let error = group.wait().await.unwrap_err();

    assert!(error.is_timeout(), "the deadline, not a failed source: {error:?}");
    assert_eq!(error.pending(), ["slow"]);
}

/// Outside a group, a deadline before the fetcher's own timeout ends the exchange with an
/// `HttpError::Timeout` at the deadline.
#[tokio::test(start_paused = true)]
async fn outside_a_group_a_deadline_before_the_timeout_ends_the_fetch_at_the_deadline() {
    let server = silent().await;
    let fetcher = HttpFetcher::builder(&server.url("/{id}")).timeout(Duration::from_secs(10)).build().unwrap();
    let started = tokio::time::Instant::now();

    let error = with_deadline(started + ms(300), fetcher.fetch("7")).await.unwrap_err();

    assert!(matches!(error, HttpError::Timeout { after } if after == ms(300)), "{error:?}");
    assert_eq!(started.elapsed(), ms(300));
}

#[tokio::test]
async fn sequential_fetches_reuse_one_pooled_connection() {
    let server = Server::json(r#"{"ok": true}"#).await;
    let client = HttpClient::new();
    let profile = HttpFetcher::builder(&server.url("/v1/users/{id}")).client(client.clone()).build().unwrap();
    let balance = HttpFetcher::builder(&server.url("/v1/balance/{id}")).client(client).build().unwrap();

    profile.fetch("7").await.unwrap();
    balance.fetch("7").await.unwrap();
    profile.fetch("8").await.unwrap();

    assert_eq!(server.heads().len(), 3);
    assert_eq!(server.accepted(), 1, "every fetch after the first reused the pooled connection");
}
