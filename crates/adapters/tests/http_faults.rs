//! Every server fault the HTTP fetcher must survive, inside a [`Group`]: one table, one row
//! per fault.
//!
//! Each case runs two HTTP sources in one group with a 2 s [`Deadline`]: `faulty` hits a
//! server that produces the fault, `other` hits a server that accepts the request and never
//! answers. Each case checks that
//!
//! 1. the group fails naming `faulty`, with the expected [`HttpError`] reachable through the
//!    error's source chain;
//! 2. it fails on time: at once for the immediate faults, at the fetch timeout (not before
//!    it) for the slow ones;
//! 3. `other` is reported as cancelled;
//! 4. `other`'s server sees its connection closed (a read returns 0): the cancellation
//!    reached the wire.
//!
//! The faulty server acts only once `other`'s request has arrived, so the cancellation always
//! hits a request in flight. The cases run concurrently, each with its own servers and client.
//! The last tests let the group's own deadline fire with both servers silent: the group
//! fails on time and both connections close, and it is reported as a `Timeout` with both
//! sources pending.
//!
//! Real clock, real sockets: every timing assertion has a generous margin and none depends on
//! the machine being fast.

#[path = "support/server.rs"]
mod server;

use std::error::Error as _;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster_adapters::http::{HttpClient, HttpError, HttpFetcher, StatusCode};
use muster_core::muster_options::Deadline;
use muster_core::{ErrorKind, Fetcher, Group, GroupError};
use server::{Conn, Server};
use tokio::io::AsyncReadExt as _;
use tokio::sync::{mpsc, watch};

/// The fetch timeout of the faulty source.
const TIMEOUT: Duration = ms(300);
/// How late past its expected time a group may fail on a slow, loaded machine.
const MARGIN: Duration = ms(250);
/// How early a timeout may fire: timer granularity.
const EARLY: Duration = ms(5);
/// The group deadline of the fault cases: far enough that only the fault can end the group.
const GROUP_DEADLINE: Duration = Duration::from_secs(2);
/// The group deadline of the case where it is the deadline that fires.
const SHORT_DEADLINE: Duration = ms(400);
/// How long a server waits for something the client should do at once.
const PATIENCE: Duration = Duration::from_secs(5);
/// The body limit of the faulty source.
const MAX_BODY: usize = 1024;

const fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// What the faulty server does once it has read the request (and `other`'s has arrived).
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Sends no response head before the fetch timeout.
    SlowHeaders,
    /// Resets the connection (RST, not FIN).
    Reset,
    /// Closes the connection without a byte.
    EmptyReply,
    /// Announces 100 bytes of body, sends 7 and closes.
    TruncatedBody,
    /// A chunked body with a chunk size that is not hex.
    MalformedChunked,
    /// 4 KiB of noise instead of a response, connection kept open.
    RandomBytes,
    /// The head at once, then one body byte every 20 ms.
    DribblingBody,
    /// `503 Service Unavailable` with a JSON body.
    Status503,
    /// `200` and `application/json`, but the JSON is cut short.
    InvalidJson,
    /// `200` with a `text/html` body.
    WrongContentType,
    /// A chunked body streamed 256 bytes at a time, far over [`MAX_BODY`].
    OversizedBody,
    /// `302 Found` to `/new` (which would answer 200 if it were followed).
    Redirect,
}

/// When the group should fail, counted from its creation.
#[derive(Clone, Copy, Debug)]
enum Expected {
    /// As soon as the fault is on the wire: within [`MARGIN`].
    Immediately,
    /// At the faulty source's fetch timeout: within `[TIMEOUT - EARLY, TIMEOUT + MARGIN]`.
    AtTimeout,
}

struct Case {
    fault: Fault,
    /// [`HttpError::kind`] of the faulty source's error.
    kind: &'static str,
    /// The variant and its fields.
    matches: fn(&HttpError) -> bool,
    when: Expected,
}

const CASES: &[Case] = &[
    Case {
        fault: Fault::SlowHeaders,
        kind: "timeout",
        matches: |error| matches!(error, HttpError::Timeout { after } if *after == TIMEOUT),
        when: Expected::AtTimeout,
    },
    Case {
        fault: Fault::Reset,
        kind: "protocol",
        matches: |error| matches!(error, HttpError::Protocol { .. }),
        when: Expected::Immediately,
    },
    Case {
        fault: Fault::EmptyReply,
        kind: "protocol",
        matches: |error| matches!(error, HttpError::Protocol { .. }),
        when: Expected::Immediately,
    },
    Case {
        fault: Fault::TruncatedBody,
        kind: "protocol",
        matches: |error| matches!(error, HttpError::Protocol { .. }),
        when: Expected::Immediately,
    },
    Case {
        fault: Fault::MalformedChunked,
        kind: "protocol",
        matches: |error| matches!(error, HttpError::Protocol { .. }),
        when: Expected::Immediately,
    },
    Case {
        fault: Fault::RandomBytes,
        kind: "protocol",
        matches: |error| matches!(error, HttpError::Protocol { .. }),
        when: Expected::Immediately,
    },
    Case {
        fault: Fault::DribblingBody,
        kind: "timeout",
        matches: |error| matches!(error, HttpError::Timeout { after } if *after == TIMEOUT),
        when: Expected::AtTimeout,
    },
    Case {
        fault: Fault::Status503,
        kind: "status",
        matches: |error| {
            matches!(error, HttpError::Status { status: StatusCode::SERVICE_UNAVAILABLE, body_excerpt }
                if body_excerpt == r#"{"error": "overloaded"}"#)
        },
        when: Expected::Immediately,
    },
    Case {
        fault: Fault::InvalidJson,
        kind: "invalid_json",
        matches: |error| matches!(error, HttpError::InvalidJson { .. }),
        when: Expected::Immediately,
    },
    Case {
        fault: Fault::WrongContentType,
        kind: "content_type",
        matches: |error| matches!(error, HttpError::ContentType { found: Some(found) } if found == "text/html; charset=utf-8"),
        when: Expected::Immediately,
    },
    Case {
        fault: Fault::OversizedBody,
        kind: "body_too_large",
        matches: |error| matches!(error, HttpError::BodyTooLarge { limit: MAX_BODY }),
        when: Expected::Immediately,
    },
    Case {
        fault: Fault::Redirect,
        kind: "redirect",
        matches: |error| {
            matches!(error, HttpError::Redirect { status: StatusCode::FOUND, location: Some(location) }
                if location == "/new")
        },
        when: Expected::Immediately,
    },
];

impl Fault {
    /// Serves one connection of the faulty server. `sibling` turns true once the silent
    /// server has received `other`'s request.
    async fn serve(self, mut conn: Conn, mut sibling: watch::Receiver<bool>) {
        if conn.read_request().await.is_none() {
            return;
        }
        // A missing sibling request fails the case on the other side; act anyway.
        let _ = tokio::time::timeout(PATIENCE, sibling.wait_for(|arrived| *arrived)).await;
        let json = [("content-type", "application/json")];
        match self {
            Self::SlowHeaders => {
                if !conn.closed_within(PATIENCE).await {
                    let _ = conn.respond("200 OK", &json, b"{}").await;
                }
            }
            Self::Reset => {
                // SO_LINGER 0: closing sends a RST instead of a FIN.
                conn.stream.set_zero_linger().expect("SO_LINGER");
                drop(conn);
            }
            Self::EmptyReply => drop(conn),
            Self::TruncatedBody => {
                let response =
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"a\": 1";
                let _ = conn.write(response).await;
                drop(conn);
            }
            Self::MalformedChunked => {
                let _ = conn.write(server::MALFORMED_CHUNKED).await;
                // Keep the connection open: the error must come from the bytes, not a close.
                conn.closed_within(PATIENCE).await;
            }
            Self::RandomBytes => {
                let _ = conn.write(server::noise(4096)).await;
                conn.closed_within(PATIENCE).await;
            }
            Self::DribblingBody => {
                server::dribble_body(&mut conn).await;
            }
            Self::Status503 => {
                let body = br#"{"error": "overloaded"}"#;
                let _ = conn.respond("503 Service Unavailable", &json, body).await;
                conn.closed_within(PATIENCE).await;
            }
            Self::InvalidJson => {
                let _ = conn.respond("200 OK", &json, br#"{"name": "Ada""#).await;
                conn.closed_within(PATIENCE).await;
            }
            Self::WrongContentType => {
                let html = [("content-type", "text/html; charset=utf-8")];
                let _ = conn.respond("200 OK", &html, b"<html>{}</html>").await;
                conn.closed_within(PATIENCE).await;
            }
            Self::OversizedBody => {
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                if conn.write(head).await.is_err() {
                    return;
                }
                // 1 MiB in 256-byte chunks, one every 2 ms: the limit is crossed by the 5th.
                let chunk = format!("100\r\n{}\r\n", " ".repeat(256));
                for _ in 0..4096 {
                    if conn.write(&chunk).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(ms(2)).await;
                }
            }
            Self::Redirect => {
                if conn.respond("302 Found", &[("location", "/new")], b"").await.is_err() {
                    return;
                }
                // Were the redirect followed, `/new` would succeed and the case would fail.
                while conn.read_request().await.is_some() {
                    if conn.respond("200 OK", &json, b"\"new\"").await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// How a silent server's connection ended, as its reads saw it.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// No request arrived: the connection closed before a complete request head.
    NoRequest,
    /// A read returned 0 bytes: the client closed the connection.
    Eof,
    /// A read failed.
    Error(io::ErrorKind),
    /// The client sent more bytes after its request.
    UnexpectedBytes,
    /// Still open after the server's patience ran out.
    StillOpen,
}

/// A server that accepts requests and never answers, and reports how each connection ended.
struct Silent {
    server: Server,
    ends: mpsc::UnboundedReceiver<(End, Instant)>,
}

impl Silent {
    /// Starts the server; `arrived` (if any) is set once a request head has been read.
    async fn start(arrived: Option<watch::Sender<bool>>) -> Self {
        let (ends_tx, ends) = mpsc::unbounded_channel();
        let arrived = Arc::new(arrived);
        let server = Server::start(move |mut conn: Conn| {
            let (ends_tx, arrived) = (ends_tx.clone(), arrived.clone());
            async move {
                let end = if conn.read_request().await.is_some() {
                    if let Some(arrived) = &*arrived {
                        arrived.send_replace(true);
                    }
                    read_until_closed(&mut conn, 2 * PATIENCE).await
                } else {
                    End::NoRequest
                };
                let _ = ends_tx.send((end, Instant::now()));
            }
        })
        .await;
        Self { server, ends }
    }

    /// Waits (at most [`PATIENCE`]) for the connection to end; asserts that it got exactly
    /// one request and then saw EOF. Returns how long after `since` the EOF was seen.
    async fn assert_closed_since(&mut self, since: Instant, who: &str) -> Duration {
        let ended = tokio::time::timeout(PATIENCE, self.ends.recv()).await;
        let Ok(Some((end, at))) = ended else {
            panic!("{who}: the server saw no end of its connection within {PATIENCE:?}")
        };
        assert_eq!(end, End::Eof, "{who}: the connection should have been closed by the client");
        assert_eq!(self.server.accepted(), 1, "{who}: connections accepted");
        assert_eq!(self.server.heads().len(), 1, "{who}: requests received");
        at.saturating_duration_since(since)
    }
}

/// Reads until the client closes the connection, fails, or `limit` passes.
async fn read_until_closed(conn: &mut Conn, limit: Duration) -> End {
    let mut chunk = [0; 4096];
    match tokio::time::timeout(limit, conn.stream.read(&mut chunk)).await {
        Ok(Ok(0)) => End::Eof,
        Ok(Ok(_)) => End::UnexpectedBytes,
        Ok(Err(error)) => End::Error(error.kind()),
        Err(_) => End::StillOpen,
    }
}

/// The `HttpError` in `error`'s source chain.
fn http_error(error: &GroupError) -> Option<&HttpError> {
    let mut cause = error.source();
    while let Some(inner) = cause {
        if let Some(http) = inner.downcast_ref::<HttpError>() {
            return Some(http);
        }
        cause = inner.source();
    }
    None
}

/// What a case measured, for the table printed at the end.
struct Row {
    fault: Fault,
    kind: &'static str,
    elapsed: Duration,
    eof_after: Duration,
}

/// Runs one case and asserts everything about it.
async fn run(case: &'static Case) -> Row {
    let fault = case.fault;
    let (arrived_tx, arrived_rx) = watch::channel(false);
    let mut other = Silent::start(Some(arrived_tx)).await;
    let faulty = Server::start(move |conn| fault.serve(conn, arrived_rx.clone())).await;

    let client = HttpClient::new();
    let faulty_fetcher = HttpFetcher::builder(&faulty.url("/v1/faulty/{id}"))
        .client(client.clone())
        .timeout(TIMEOUT)
        .max_body(MAX_BODY)
        .build()
        .expect("a valid template");
    let other_fetcher = HttpFetcher::builder(&other.server.url("/v1/other/{id}"))
        .client(client)
        .timeout(PATIENCE)
        .build()
        .expect("a valid template");

    let started = Instant::now();
    let mut group = Group::with_options(Deadline(GROUP_DEADLINE)).expect("a valid deadline");
    group.spawn("faulty", faulty_fetcher.fetch("7")).expect("a fresh name");
    group.spawn("other", other_fetcher.fetch("7")).expect("a fresh name");
    let result = group.wait().await;
    let elapsed = started.elapsed();
    let returned = Instant::now();

    let error = match result {
        Ok(outputs) => panic!("{fault:?}: the group succeeded: {outputs:?}"),
        Err(error) => error,
    };
    // (1) The root cause is `faulty`, with the typed error in the source chain.
    assert_eq!(error.kind(), ErrorKind::Failed, "{fault:?}: {error:?}");
    assert_eq!(error.source_name(), Some("faulty"), "{fault:?}: {error:?}");
    assert!(error.also_failed().is_empty(), "{fault:?}: {error:?}");
    let http = http_error(&error).unwrap_or_else(|| panic!("{fault:?}: no HttpError in the chain of {error:?}"));
    assert_eq!(http.kind().as_str(), case.kind, "{fault:?}: {http:?}");
    assert!((case.matches)(http), "{fault:?}: unexpected {http:?}");

    // (2) On time.
    match case.when {
        Expected::Immediately => assert!(elapsed <= MARGIN, "{fault:?}: failed after {elapsed:?}"),
        Expected::AtTimeout => {
            assert!(elapsed >= TIMEOUT - EARLY, "{fault:?}: timed out early, after {elapsed:?}");
            assert!(elapsed <= TIMEOUT + MARGIN, "{fault:?}: timed out late, after {elapsed:?}");
        }
    }

    // (3) The sibling was cancelled, (4) and its server saw the connection close.
    assert_eq!(error.cancelled(), ["other"], "{fault:?}: {error:?}");
    let eof_after = other.assert_closed_since(returned, &format!("{fault:?}, other")).await;

    // The faulty source sent one request on one connection: no retry, no redirect followed.
    assert_eq!(faulty.accepted(), 1, "{fault:?}: connections to the faulty server");
    assert_eq!(faulty.heads().len(), 1, "{fault:?}: requests to the faulty server");

    Row { fault, kind: case.kind, elapsed, eof_after }
}

#[tokio::test]
async fn every_fault_fails_the_group_on_time_and_cancels_the_sibling_on_the_wire() {
    let wall = Instant::now();
    let handles: Vec<_> = CASES.iter().map(|case| (case.fault, tokio::spawn(run(case)))).collect();
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for (fault, handle) in handles {
        match handle.await {
            Ok(row) => rows.push(row),
            Err(error) if error.is_panic() => {
                failures.push(format!("{fault:?}: {}", panic_text(&*error.into_panic())));
            }
            Err(error) => failures.push(format!("{fault:?}: {error}")),
        }
    }

    println!("{:<18} {:<15} {:>9} {:>14}", "fault", "kind", "elapsed", "EOF after wait");
    for Row { fault, kind, elapsed, eof_after } in &rows {
        println!("{:<18} {kind:<15} {elapsed:>9.1?} {eof_after:>14.1?}", format!("{fault:?}"));
    }
    println!("{} cases in {:.1?}", CASES.len(), wall.elapsed());
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), CASES.len(), failures.join("\n"));
}

/// Runs two sources against silent servers under a [`SHORT_DEADLINE`] group deadline;
/// asserts that the group failed on time and that both servers saw their connection close.
async fn two_silent_sources_under_the_group_deadline() -> GroupError {
    let mut first = Silent::start(None).await;
    let mut second = Silent::start(None).await;
    let client = HttpClient::new();
    let build = |silent: &Silent| {
        HttpFetcher::builder(&silent.server.url("/v1/users/{id}"))
            .client(client.clone())
            .timeout(PATIENCE)
            .build()
            .expect("a valid template")
    };
    let (first_fetcher, second_fetcher) = (build(&first), build(&second));

    let started = Instant::now();
    let mut group = Group::with_options(Deadline(SHORT_DEADLINE)).expect("a valid deadline");
    group.spawn("first", first_fetcher.fetch("7")).expect("a fresh name");
    group.spawn("second", second_fetcher.fetch("7")).expect("a fresh name");
    let error = group.wait().await.expect_err("neither server answers");
    let elapsed = started.elapsed();
    let returned = Instant::now();

    assert!(elapsed >= SHORT_DEADLINE - EARLY, "the deadline fired early, after {elapsed:?}: {error:?}");
    assert!(elapsed <= SHORT_DEADLINE + MARGIN, "the deadline fired late, after {elapsed:?}: {error:?}");
    first.assert_closed_since(returned, "first").await;
    second.assert_closed_since(returned, "second").await;
    error
}

#[tokio::test]
async fn the_group_deadline_ends_two_silent_sources_on_time_and_closes_both_connections() {
    let error = two_silent_sources_under_the_group_deadline().await;
    // Whoever reports it, the failure is the deadline: no other error is in the chain.
    let http = http_error(&error);
    assert!(http.is_none_or(|http| matches!(http, HttpError::Timeout { .. })), "{error:?}");
}

#[tokio::test]
async fn the_group_deadline_is_reported_as_a_timeout_with_both_sources_pending() {
    let error = two_silent_sources_under_the_group_deadline().await;
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error:?}");
    assert_eq!(error.source_name(), None, "{error:?}");
    assert_eq!(error.pending(), ["first", "second"], "{error:?}");
    assert_eq!(error.cancelled(), ["first", "second"], "{error:?}");
}

/// The text of a caught panic's payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> &str {
    (payload.downcast_ref::<&str>().copied())
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("non-string panic payload")
}
