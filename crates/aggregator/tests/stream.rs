//! Feature `axum`: `muster::axum::stream` from a user's own route, served by a real axum server
//! on a loopback port and read by a client over TCP: NDJSON and server-sent events, sections in
//! completion order with their own types, the outcome line on a failure and at the deadline,
//! and a client going away cancelling the sources; a middleware around the route hears each
//! stream's end from its `StreamOutcome`, the client going away included.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use muster::axum::{Format, StreamEnd, StreamOutcome};
use muster::{Aggregator, Deadline, Fallback, RequestContext, fetcher_fn};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[derive(Clone, Debug, Serialize)]
struct Profile {
    name: String,
    tier: &'static str,
}

/// Counts the fetches that were dropped before they ended.
#[derive(Clone, Default)]
struct Dropped(Arc<AtomicUsize>);

struct Guard(Dropped, bool);

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Dropped {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// The knobs of one request, from the path: how long each source takes, and which fails.
#[derive(Clone, Copy, Debug)]
struct Knobs {
    profile_ms: u64,
    balance_ms: u64,
    offers_ms: u64,
    balance_fails: bool,
}

type Dashboard = Aggregator<Knobs, (Profile, u64, Vec<String>)>;

fn dashboard(deadline: Duration, dropped: &Dropped) -> Dashboard {
    let sleep_for = |ms: u64, dropped: Dropped| async move {
        let mut guard = Guard(dropped, false);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        guard.1 = true;
    };
    let (a, b, c) = (dropped.clone(), dropped.clone(), dropped.clone());
    let profile = fetcher_fn(move |knobs: &Knobs| {
        let wait = sleep_for(knobs.profile_ms, a.clone());
        async move {
            wait.await;
            Ok::<_, std::io::Error>(Profile { name: "Ada".to_owned(), tier: "gold" })
        }
    });
    let balance = fetcher_fn(move |knobs: &Knobs| {
        let (wait, fails) = (sleep_for(knobs.balance_ms, b.clone()), knobs.balance_fails);
        async move {
            wait.await;
            if fails { Err(std::io::Error::other("ledger at 10.0.0.7 refused")) } else { Ok(1250_u64) }
        }
    });
    let offers = fetcher_fn(move |knobs: &Knobs| {
        let wait = sleep_for(knobs.offers_ms, c.clone());
        async move {
            wait.await;
            Err::<Vec<String>, _>(std::io::Error::other("offers down"))
        }
    });
    Aggregator::builder()
        .source("profile", profile)
        .source("balance", balance)
        .source_with("offers", offers, Fallback(Vec::new()))
        .options(Deadline(deadline))
        .build()
        .unwrap()
}

/// The user's own route: a few lines around `muster::axum::stream`.
async fn route(
    State(aggregator): State<Dashboard>,
    Path((profile_ms, balance_ms, offers_ms, fail)): Path<(u64, u64, u64, u8)>,
    headers: HeaderMap,
) -> Response {
    let knobs = Knobs { profile_ms, balance_ms, offers_ms, balance_fails: fail == 1 };
    let format = Format::requested(&headers).unwrap_or(Format::Ndjson);
    muster::axum::stream(&aggregator, knobs, RequestContext::new().request_id("r-1"), format)
}

/// What a middleware around the route heard of a stream's end, and how many fetches had been
/// dropped by then.
type Heard = (StreamEnd, usize);

/// Serves `aggregator` on a loopback port, behind a middleware that listens to each stream's
/// outcome (as an access log would) and sends what it hears.
async fn serve(aggregator: Dashboard, dropped: &Dropped) -> (SocketAddr, UnboundedReceiver<Heard>) {
    let (heard, ends) = tokio::sync::mpsc::unbounded_channel();
    let listen = {
        let dropped = dropped.clone();
        move |request: Request, next: Next| {
            let (heard, dropped): (UnboundedSender<Heard>, Dropped) = (heard.clone(), dropped.clone());
            async move {
                let response = next.run(request).await;
                if let Some(outcome) = response.extensions().get::<StreamOutcome>() {
                    outcome.on_end(move |end| {
                        let _ = heard.send((end.clone(), dropped.count()));
                    });
                }
                response
            }
        }
    };
    let app =
        Router::new().route("/d/{p}/{b}/{o}/{f}", get(route)).with_state(aggregator).layer(middleware::from_fn(listen));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, ends)
}

/// The one end heard.
async fn heard(ends: &mut UnboundedReceiver<Heard>) -> Heard {
    tokio::time::timeout(Duration::from_secs(60), ends.recv()).await.unwrap().unwrap()
}

async fn send(addr: SocketAddr, path: &str, accept: &str) -> TcpStream {
    let mut socket = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\naccept: {accept}\r\nconnection: close\r\n\r\n");
    socket.write_all(request.as_bytes()).await.unwrap();
    socket
}

/// The response head and its chunked body, decoded, read to the end.
async fn read_all(mut socket: TcpStream) -> (String, String) {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), socket.read_to_end(&mut raw)).await.unwrap().unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, mut rest) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.to_ascii_lowercase().contains("transfer-encoding: chunked"), "{head}");
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        body.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    (head.to_owned(), body)
}

fn ndjson(body: &str) -> Vec<Value> {
    body.lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

fn sections(lines: &[Value]) -> Vec<&str> {
    lines.iter().filter_map(|line| line["section"].as_str()).collect()
}

#[tokio::test(start_paused = true)]
async fn ndjson_sections_come_in_completion_order_with_their_own_types_then_the_outcome() {
    let dropped = Dropped::default();
    let (addr, mut ends) = serve(dashboard(ms(1_000), &dropped), &dropped).await;
    let socket = send(addr, "/d/30/20/10/0", "application/x-ndjson").await;
    let (head, body) = read_all(socket).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let lower = head.to_ascii_lowercase();
    for header in ["content-type: application/x-ndjson", "cache-control: no-cache", "x-accel-buffering: no"] {
        assert!(lower.contains(header), "no {header}: {head}");
    }
    let lines = ndjson(&body);
    assert_eq!(
        lines,
        [
            json!({"section": "offers", "status": "fallback", "body": []}),
            json!({"section": "balance", "status": "ok", "body": 1250}),
            json!({"section": "profile", "status": "ok", "body": {"name": "Ada", "tier": "gold"}}),
            json!({"outcome": "ok", "partial": true}),
        ],
        "{body}"
    );
    let (end, _) = heard(&mut ends).await;
    assert_eq!((end.status, end.answer.source, end.answer.kind), (Some(StatusCode::OK), None, "ok"));
    assert!(end.stale.is_empty());
}

#[tokio::test(start_paused = true)]
async fn server_sent_events_carry_the_same_json() {
    let dropped = Dropped::default();
    let (addr, _) = serve(dashboard(ms(1_000), &dropped), &dropped).await;
    let socket = send(addr, "/d/10/20/30/0", "text/event-stream").await;
    let (head, body) = read_all(socket).await;
    assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
    let events: Vec<(&str, Value)> = body
        .split("\n\n")
        .filter(|event| !event.is_empty())
        .map(|event| {
            let (name, data) = event.split_once('\n').unwrap();
            (name.strip_prefix("event: ").unwrap(), serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap())
        })
        .collect();
    let names: Vec<&str> = events.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, ["section", "section", "section", "end"], "{body}");
    let order: Vec<&str> = events.iter().filter_map(|(_, data)| data["section"].as_str()).collect();
    assert_eq!(order, ["profile", "balance", "offers"]);
    assert_eq!(events[0].1["body"], json!({"name": "Ada", "tier": "gold"}));
    assert_eq!(events[3].1, json!({"outcome": "ok", "partial": true}));
}

#[tokio::test(start_paused = true)]
async fn a_failure_ends_the_stream_with_the_outcome_naming_the_source() {
    let dropped = Dropped::default();
    let (addr, mut ends) = serve(dashboard(ms(1_000), &dropped), &dropped).await;
    let socket = send(addr, "/d/500/20/10/1", "application/x-ndjson").await;
    let (_, body) = read_all(socket).await;
    let lines = ndjson(&body);
    assert_eq!(sections(&lines), ["offers", "balance"], "{body}");
    assert_eq!(lines[1], json!({"section": "balance", "status": "failed", "kind": "failed"}));
    assert_eq!(
        lines.last().unwrap(),
        &json!({
            "outcome": "failed", "status": 502, "error": "source `balance` failed", "source": "balance",
            "kind": "failed", "request_id": "r-1"
        })
    );
    assert!(!body.contains("10.0.0.7"), "no internal detail: {body}");
    assert_eq!(dropped.count(), 1, "the profile was cancelled");
    let (end, _) = heard(&mut ends).await;
    let source = end.answer.source.as_deref();
    assert_eq!((end.status, source, end.answer.kind), (Some(StatusCode::BAD_GATEWAY), Some("balance"), "failed"));
}

#[tokio::test(start_paused = true)]
async fn the_deadline_ends_the_stream_with_the_outcome() {
    let dropped = Dropped::default();
    let (addr, mut ends) = serve(dashboard(ms(100), &dropped), &dropped).await;
    let socket = send(addr, "/d/10/5000/20/0", "application/x-ndjson").await;
    let (_, body) = read_all(socket).await;
    let lines = ndjson(&body);
    assert_eq!(sections(&lines), ["profile", "offers"], "{body}");
    let last = lines.last().unwrap();
    assert_eq!((&last["outcome"], &last["status"], &last["kind"]), (&json!("failed"), &json!(504), &json!("timeout")));
    assert_eq!(last["pending"], json!(["balance"]));
    assert_eq!(dropped.count(), 1, "the balance was cancelled");
    let (end, _) = heard(&mut ends).await;
    let expected = (Some(StatusCode::GATEWAY_TIMEOUT), None, "timeout");
    assert_eq!((end.status, end.answer.source.as_deref(), end.answer.kind), expected);
}

#[tokio::test(start_paused = true)]
async fn a_client_going_away_cancels_the_sources_and_the_outcome_hears_it() {
    let dropped = Dropped::default();
    let (addr, mut ends) = serve(dashboard(ms(3_600_000), &dropped), &dropped).await;
    let mut socket = send(addr, "/d/10/1800000/1800000/0", "application/x-ndjson").await;
    let started = tokio::time::Instant::now();
    // Read until the first section is in: the aggregation is running, two sources in flight.
    let mut raw = Vec::new();
    while !String::from_utf8_lossy(&raw).contains("\"section\":\"profile\"") {
        let mut buffer = [0; 1024];
        let read = socket.read(&mut buffer).await.unwrap();
        assert_ne!(read, 0, "the stream ended early: {}", String::from_utf8_lossy(&raw));
        raw.extend_from_slice(&buffer[..read]);
    }
    assert_eq!(dropped.count(), 0);
    assert!(ends.try_recv().is_err(), "the stream has not ended");
    drop(socket);
    // Nothing is spawned: the body owns the aggregation, and the server drops it with the
    // connection; the outcome hears it after both sources in flight were dropped.
    let (end, dropped_then) = heard(&mut ends).await;
    assert_eq!((end.status, end.answer.source, end.answer.kind), (None, None, "cancelled"));
    assert_eq!(dropped_then, 2, "both sources in flight were dropped before the outcome was told");
    assert!(started.elapsed() < ms(60_000), "the clock stayed well before any source would end");
}
