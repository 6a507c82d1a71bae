//! Helpers of the dashboard's tests: the dashboard and its demo backends on `127.0.0.1:0`, a
//! raw HTTP/1.1 client that sends request targets exactly as written, and polling with a limit.
#![allow(dead_code)] // each test file uses a part of these

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use dashboard::limits::Limits;
use dashboard::server::Server;
use dashboard::{AppState, Config, DemoBackend, Resilience, Service};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// How long anything in these tests may take before it counts as a hang.
pub(crate) const LIMIT: Duration = Duration::from_secs(10);

/// The slack allowed on top of the deadline for an answer to arrive: generous, so that a slow
/// or busy machine does not fail the tests.
pub(crate) const MARGIN: Duration = Duration::from_secs(1);

/// The dashboard served on an ephemeral port, with its two demo backends.
pub(crate) struct Dashboard {
    pub(crate) addr: SocketAddr,
    pub(crate) profile: DemoBackend,
    pub(crate) transactions: DemoBackend,
    server: JoinHandle<()>,
}

impl Dashboard {
    /// Both demo backends and the dashboard, with `timeout` as its deadline.
    pub(crate) async fn start(timeout: Duration) -> Self {
        Self::start_with(timeout, Limits::default()).await
    }

    /// Both demo backends and the dashboard, with `timeout` as its deadline and `limits`.
    pub(crate) async fn start_with(timeout: Duration, limits: Limits) -> Self {
        let profile = DemoBackend::start(Service::Profile).await.expect("profile backend");
        let transactions = DemoBackend::start(Service::Transactions).await.expect("transactions backend");
        let config = config(profile.url_template(), transactions.url_template(), timeout);
        let (addr, server) = serve_config(config, limits).await;
        Self { addr, profile, transactions, server }
    }

    /// `GET target` on the dashboard.
    pub(crate) async fn get(&self, target: &str) -> Reply {
        get(self.addr, target, &[]).await
    }
}

impl Drop for Dashboard {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// The binary's default configuration for these templates: `authorization` forwarded.
pub(crate) fn config(profile_url: String, transactions_url: String, timeout: Duration) -> Config {
    Config {
        profile_url,
        transactions_url,
        offers_url: None,
        timeout,
        forward_headers: vec![axum::http::header::AUTHORIZATION],
        cache: None,
        offers_forward_headers: Vec::new(),
    }
}

/// Serves the dashboard for these templates on `127.0.0.1:0`, with the default limits.
pub(crate) async fn serve(
    profile_url: String,
    transactions_url: String,
    timeout: Duration,
) -> (SocketAddr, JoinHandle<()>) {
    serve_config(config(profile_url, transactions_url, timeout), Limits::default()).await
}

/// Serves the dashboard for `config` on `127.0.0.1:0` with `limits`, as the binary does.
pub(crate) async fn serve_config(config: Config, limits: Limits) -> (SocketAddr, JoinHandle<()>) {
    serve_resilient(config, limits, Resilience::default()).await
}

/// [`serve_config`] with the breaker, budget and retries of `resilience`.
pub(crate) async fn serve_resilient(
    config: Config,
    limits: Limits,
    resilience: Resilience,
) -> (SocketAddr, JoinHandle<()>) {
    let state = AppState::with_resilience(&config, resilience).expect("valid config");
    let listener = dashboard::server::listen((Ipv4Addr::LOCALHOST, 0).into()).expect("bind the dashboard");
    let addr = listener.local_addr().expect("local address");
    let server = Server::new(dashboard::app(state), limits, config.timeout);
    let server = tokio::spawn(async move {
        server.serve(listener, std::future::pending()).await;
    });
    (addr, server)
}

/// A parsed HTTP/1.1 response.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
    /// From sending the request to the end of the response.
    pub(crate) elapsed: Duration,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }
}

/// The request head for `GET target`, sent as is: no normalisation, no encoding.
pub(crate) fn request(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> String {
    let mut head = format!("GET {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    head + "\r\n"
}

/// `GET target` over a new connection, read until the server closes it; fails the test after
/// [`LIMIT`].
pub(crate) async fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Reply {
    within(LIMIT, "the response", async {
        let started = Instant::now();
        let mut stream = TcpStream::connect(addr).await.expect("connect to the dashboard");
        stream.write_all(request(addr, target, headers).as_bytes()).await.expect("send the request");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("read the response");
        parse(&raw, started.elapsed())
    })
    .await
}

fn parse(raw: &[u8], elapsed: Duration) -> Reply {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_else(|| panic!("no response head in {text:?}"));
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split(' ').nth(1).and_then(|code| code.parse().ok());
    let status = status.unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let mut body = body.to_owned();
    if let Some(length) = headers.iter().find(|(name, _)| name == "content-length") {
        body.truncate(length.1.parse().expect("a numeric content-length"));
    }
    Reply { status, headers, body, elapsed }
}

/// Reads a streamed answer from `socket` until its first section has arrived, within [`LIMIT`].
pub(crate) async fn first_section(socket: &mut TcpStream) {
    within(LIMIT, "the first section", async {
        let (mut seen, mut buffer) = (Vec::new(), [0u8; 4096]);
        while !String::from_utf8_lossy(&seen).contains("\"section\"") {
            let read = socket.read(&mut buffer).await.expect("read");
            assert!(read > 0, "the stream ended before a section");
            seen.extend_from_slice(&buffer[..read]);
        }
    })
    .await;
}

/// Awaits `future`, failing the test if it takes longer than `limit`.
pub(crate) async fn within<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, future).await.unwrap_or_else(|_| panic!("{what} took longer than {limit:?}"))
}

/// Polls `condition` until it holds, failing the test after [`LIMIT`].
pub(crate) async fn eventually(what: &str, condition: impl Fn() -> bool) {
    within(LIMIT, what, async {
        while !condition() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Percent-decodes `encoded` the way a server decodes one path segment or query value.
pub(crate) fn percent_decode(encoded: &str) -> Vec<u8> {
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|hex| std::str::from_utf8(hex).ok());
        match (bytes[i], hex.and_then(|hex| u8::from_str_radix(hex, 16).ok())) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    decoded
}
