//! The offers source (a dependent of the profile, optional) and streaming sections, end to end
//! over real HTTP on 127.0.0.1: the offers backend is asked with the profile's tier only once the
//! profile is in; with `Accept: application/x-ndjson` each section arrives the moment its source
//! completes, the first one long before the slowest source; a failure ends the stream with an
//! error line; a client going away cancels what is in flight.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use dashboard::limits::Limits;
use dashboard::{DemoBackend, Service};
use serde_json::{Value, json};
use support::{LIMIT, config, eventually, request, serve_config, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The dashboard with all three demo backends.
struct Full {
    addr: SocketAddr,
    profile: DemoBackend,
    transactions: DemoBackend,
    offers: DemoBackend,
    _server: tokio::task::JoinHandle<()>,
}

async fn full(timeout: Duration) -> Full {
    let profile = DemoBackend::start(Service::Profile).await.expect("profile backend");
    let transactions = DemoBackend::start(Service::Transactions).await.expect("transactions backend");
    let offers = DemoBackend::start(Service::Offers).await.expect("offers backend");
    let mut config = config(profile.url_template(), transactions.url_template(), timeout);
    config.offers_url = Some(offers.url_template());
    let (addr, server) = serve_config(config, Limits::default()).await;
    Full { addr, profile, transactions, offers, _server: server }
}

/// The tier the demo profile of `id` has.
fn tier(id: &str) -> String {
    Service::Profile.body(id)["tier"].as_str().map(str::to_owned).expect("a tier")
}

#[tokio::test]
async fn offers_are_fetched_for_the_profiles_tier_once_the_profile_is_in() {
    let dashboard = full(Duration::from_secs(5)).await;
    let reply = support::get(dashboard.addr, "/dashboard/42?profile_delay_ms=100", &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    let body = reply.json();
    assert_eq!(body["offers"], Service::Offers.body(&tier("42")), "{body}");
    let offers = dashboard.offers.stats().requests();
    assert_eq!(offers.len(), 1);
    assert!(offers[0].target.starts_with(&format!("/offers/{}?", tier("42"))), "{:?}", offers[0].target);
    assert_eq!(dashboard.profile.stats().completed(), 1);
    assert_eq!(dashboard.transactions.stats().completed(), 1);
}

#[tokio::test]
async fn failing_offers_fall_back_to_an_empty_list() {
    let dashboard = full(Duration::from_secs(5)).await;
    let reply = support::get(dashboard.addr, "/dashboard/42?offers_fail=1", &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.json()["offers"], json!([]));
}

/// A streamed response, line by line, with when each line arrived after the request was sent.
struct Stream {
    head: String,
    lines: Vec<(Duration, Value)>,
}

/// `GET target` with `accept: application/x-ndjson`, read to the end, each line timed.
async fn stream(addr: SocketAddr, target: &str) -> Stream {
    within(LIMIT, "the stream", async {
        let mut socket = TcpStream::connect(addr).await.expect("connect");
        let started = Instant::now();
        socket.write_all(request(addr, target, &[("accept", "application/x-ndjson")]).as_bytes()).await.expect("send");
        let (mut raw, mut lines, mut buffer) = (Vec::new(), Vec::new(), [0u8; 4096]);
        let mut head: Option<String> = None;
        loop {
            let read = socket.read(&mut buffer).await.expect("read");
            if read == 0 {
                break;
            }
            raw.extend_from_slice(&buffer[..read]);
            if head.is_none() {
                let Some(end) = raw.windows(4).position(|window| window == b"\r\n\r\n") else { continue };
                head = Some(String::from_utf8_lossy(&raw[..end]).into_owned());
                raw.drain(..end + 4);
            }
            // Chunked: `len\r\ndata\r\n`; every data chunk here is whole lines.
            while let Some(size_end) = raw.windows(2).position(|window| window == b"\r\n") {
                let size =
                    usize::from_str_radix(String::from_utf8_lossy(&raw[..size_end]).trim(), 16).expect("a chunk size");
                if raw.len() < size_end + 2 + size + 2 {
                    break;
                }
                let data: Vec<u8> = raw[size_end + 2..size_end + 2 + size].to_vec();
                raw.drain(..size_end + 2 + size + 2);
                for line in data.split(|&byte| byte == b'\n').filter(|line| !line.is_empty()) {
                    lines.push((started.elapsed(), serde_json::from_slice(line).expect("a JSON line")));
                }
            }
        }
        Stream { head: head.expect("a response head"), lines }
    })
    .await
}

#[tokio::test]
async fn each_section_arrives_the_moment_its_source_completes() {
    let dashboard = full(Duration::from_secs(5)).await;
    let slow = Duration::from_millis(400);
    let stream = stream(dashboard.addr, &format!("/dashboard/42?transactions_delay_ms={}", slow.as_millis())).await;
    assert!(stream.head.starts_with("HTTP/1.1 200"), "{}", stream.head);
    assert!(stream.head.to_ascii_lowercase().contains("content-type: application/x-ndjson"), "{}", stream.head);
    let names: Vec<&str> = stream.lines.iter().filter_map(|(_, line)| line["section"].as_str()).collect();
    assert_eq!(names, ["profile", "offers", "transactions"], "{:?}", stream.lines);
    let (first, profile) = &stream.lines[0];
    assert_eq!(profile["status"], "ok");
    assert_eq!(profile["body"], Service::Profile.body("42"));
    // The fastest source's section is out long before the slow one (bounded generously).
    assert!(*first < slow / 2, "the first section took {first:?}");
    let (transactions_at, _) = &stream.lines[2];
    assert!(*transactions_at >= slow, "transactions came at {transactions_at:?}");
    let (_, last) = stream.lines.last().expect("a last line");
    assert_eq!(last, &json!({"outcome": "ok"}));
}

#[tokio::test]
async fn a_failure_ends_the_stream_with_an_error_line_naming_the_source() {
    let dashboard = full(Duration::from_secs(5)).await;
    let stream = stream(dashboard.addr, "/dashboard/42?transactions_fail=1&profile_delay_ms=2000").await;
    let (_, last) = stream.lines.last().expect("a last line");
    assert_eq!(last["outcome"], "failed", "{last}");
    assert_eq!(
        (&last["source"], &last["kind"], &last["status"]),
        (&json!("transactions"), &json!("status"), &json!(502))
    );
    assert!(stream.lines.iter().all(|(_, line)| line["section"] != "profile"), "the profile was cancelled");
    let profile = dashboard.profile.stats();
    eventually("the profile request to be cancelled", || profile.cancelled() == 1).await;
}

#[tokio::test]
async fn a_client_going_away_cancels_what_is_in_flight() {
    let dashboard = full(Duration::from_secs(5)).await;
    let mut socket = TcpStream::connect(dashboard.addr).await.expect("connect");
    let target = "/dashboard/42?transactions_delay_ms=5000";
    socket
        .write_all(request(dashboard.addr, target, &[("accept", "application/x-ndjson")]).as_bytes())
        .await
        .expect("send");
    // The first section is there: the aggregation runs.
    support::first_section(&mut socket).await;
    drop(socket);
    let transactions = dashboard.transactions.stats();
    eventually("the transactions request to be cancelled", || transactions.cancelled() == 1).await;
    assert_eq!(transactions.completed(), 0);
}
