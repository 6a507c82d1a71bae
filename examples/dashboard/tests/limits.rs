//! The production limits over real sockets: slow and idle clients are closed at their
//! timeouts, the connection and in-flight caps answer 503 at once while `/healthz` still
//! answers, a burst is answered within the deadline or refused at once, a client that does
//! not read pins at most one response, and the caller's deadline shortens the aggregation.
//!
//! Every limit is set short here (hundreds of milliseconds); the checks are "the server closed
//! the connection" and counts, with generous upper bounds where time is measured.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use dashboard::limits::Limits;
use support::{Dashboard, LIMIT, MARGIN, get, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

fn ms(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

/// Short timeouts, the defaults otherwise.
fn short() -> Limits {
    Limits { header_read_timeout: ms(400), idle_timeout: ms(300), write_timeout: ms(300), ..Limits::default() }
}

/// Reads until the server closes the connection (EOF or reset) and returns what was read and
/// when it ended; fails the test if the server keeps it open past [`LIMIT`].
async fn until_closed(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    within(LIMIT, "the server to close the connection", async {
        let mut received = Vec::new();
        let mut chunk = [0; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return (received, Instant::now()),
                Ok(n) => received.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_slowloris_head_is_cut_off_at_the_header_read_timeout() {
    // The idle timeout is longer than the test: only the header-read timeout can close it.
    let limits = Limits { idle_timeout: ms(30_000), ..short() };
    let dashboard = Dashboard::start_with(ms(1000), limits).await;
    let mut stream = TcpStream::connect(dashboard.addr).await.expect("connect");
    let started = Instant::now();
    let drip = async {
        // One byte every 50 ms: always some progress, never a complete head.
        for byte in b"GET /dashboard/42 HTTP/1.1\r\nhost: x\r\nx-slow: ".iter().cycle().take(200) {
            if stream.write_all(&[*byte]).await.is_err() {
                return;
            }
            tokio::time::sleep(ms(50)).await;
        }
    };
    within(LIMIT, "the slow head to be cut off", drip).await;
    let (received, closed) = until_closed(&mut stream).await;

    let elapsed = closed - started;
    assert!(elapsed >= ms(350), "closed before the header-read timeout: {elapsed:?}");
    assert!(elapsed <= ms(400) + MARGIN, "closed late: {elapsed:?}");
    assert!(!String::from_utf8_lossy(&received).contains("200 OK"), "{received:?}");
    assert_eq!(dashboard.profile.stats().started(), 0, "no backend was called");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_at_the_idle_timeout() {
    let limits = Limits { header_read_timeout: ms(30_000), ..short() };
    let dashboard = Dashboard::start_with(ms(1000), limits).await;
    let started = Instant::now();
    let mut stream = TcpStream::connect(dashboard.addr).await.expect("connect");

    let (received, closed) = until_closed(&mut stream).await;

    let elapsed = closed - started;
    assert!(received.is_empty(), "{received:?}");
    assert!(elapsed >= ms(250), "closed before the idle timeout: {elapsed:?}");
    assert!(elapsed <= ms(300) + MARGIN, "closed late: {elapsed:?}");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout_after_its_answer() {
    let limits = Limits { header_read_timeout: ms(30_000), ..short() };
    let dashboard = Dashboard::start_with(ms(1000), limits).await;
    let mut stream = TcpStream::connect(dashboard.addr).await.expect("connect");
    let head = format!("GET /healthz HTTP/1.1\r\nhost: {}\r\n\r\n", dashboard.addr);
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    while !answer.ends_with(b"ok") {
        let mut chunk = [0; 1024];
        let n = within(LIMIT, "the answer", stream.read(&mut chunk)).await.expect("read");
        assert!(n > 0, "closed before answering: {answer:?}");
        answer.extend_from_slice(&chunk[..n]);
    }
    let answered = Instant::now();

    let (rest, closed) = until_closed(&mut stream).await;

    assert!(String::from_utf8_lossy(&answer).starts_with("HTTP/1.1 200"), "{answer:?}");
    assert!(rest.is_empty(), "{rest:?}");
    let idle = closed - answered;
    assert!(idle >= ms(250) && idle <= ms(300) + MARGIN, "closed after {idle:?} idle");
}

#[tokio::test]
async fn past_the_connection_cap_of_busy_connections_new_ones_get_503_at_once_and_healthz_still_answers() {
    let limits = Limits { max_connections: 4, idle_timeout: ms(30_000), header_read_timeout: ms(30_000), ..short() };
    // A long deadline: the held requests are served (busy) for the whole test.
    let dashboard = Dashboard::start_with(ms(20_000), limits).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(dashboard.addr).await.expect("connect");
        let head = "GET /dashboard/1?profile_delay_ms=15000 HTTP/1.1\r\nhost: x\r\n\r\n";
        stream.write_all(head.as_bytes()).await.expect("send");
        held.push(stream);
    }
    // The held requests are accepted and started; give the server a moment to count them.
    support::eventually("the held requests to start", || dashboard.profile.stats().started() == 4).await;

    let refused = get(dashboard.addr, "/dashboard/42", &[("x-request-id", "refused-1")]).await;
    let health = get(dashboard.addr, "/healthz", &[]).await;

    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    // Answered before the router, it still carries its request id, as every answer does.
    assert_eq!(refused.header("x-request-id"), Some("refused-1"));
    assert_eq!(refused.json()["request_id"], "refused-1");
    assert_eq!(refused.json()["kind"], "overloaded");
    assert!(refused.elapsed < MARGIN, "not at once: {:?}", refused.elapsed);
    assert_eq!((health.status, health.body.as_str()), (200, "ok"), "{health:?}");
    assert_eq!(dashboard.profile.stats().started(), 4, "nothing past the cap reached a backend");

    drop(held);
    let mut served = None;
    for _ in 0..100 {
        let reply = get(dashboard.addr, "/dashboard/42", &[]).await;
        if reply.status == 200 {
            served = Some(reply);
            break;
        }
        tokio::time::sleep(ms(20)).await;
    }
    assert!(served.is_some(), "never served again after the held connections closed");
}

#[tokio::test]
async fn past_the_in_flight_cap_a_request_is_503_at_once_and_healthz_still_answers() {
    let limits = Limits { max_in_flight: 2, ..Limits::default() };
    let dashboard = Dashboard::start_with(ms(5000), limits).await;
    let slow = || get(dashboard.addr, "/dashboard/1?profile_delay_ms=1000", &[]);
    let (first, second) = (tokio::spawn(slow()), tokio::spawn(slow()));
    support::eventually("both slow requests to reach the backend", || dashboard.profile.stats().started() == 2).await;

    let refused = get(dashboard.addr, "/dashboard/42", &[]).await;
    let health = get(dashboard.addr, "/healthz", &[]).await;

    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.elapsed < ms(500), "not at once: {:?}", refused.elapsed);
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    assert_eq!(dashboard.profile.stats().started(), 2, "the refused request called no backend");
    for slow in [first, second] {
        assert_eq!(slow.await.expect("slow request").status, 200);
    }
    assert_eq!(dashboard.get("/dashboard/42").await.status, 200, "the permits came back");
}

#[tokio::test]
async fn a_burst_is_answered_within_the_deadline_or_refused_at_once() {
    let deadline = ms(300);
    let limits = Limits { max_in_flight: 8, ..Limits::default() };
    let dashboard = Dashboard::start_with(deadline, limits).await;
    let addr = dashboard.addr;

    // 64 requests at once whose profile is too slow: each is a 504 at the deadline, or a 503.
    let burst: Vec<_> = (0..64)
        .map(|i| tokio::spawn(async move { get(addr, &format!("/dashboard/{i}?profile_delay_ms=5000"), &[]).await }))
        .collect();
    let mut counts = [0_usize; 2];
    for reply in burst {
        let reply = reply.await.expect("a reply");
        match reply.status {
            504 => {
                counts[0] += 1;
                assert!(reply.elapsed <= deadline + ms(50) + MARGIN, "a 504 after {:?}", reply.elapsed);
            }
            503 => {
                counts[1] += 1;
                assert!(reply.elapsed < deadline, "a 503 that was not at once: {:?}", reply.elapsed);
            }
            other => panic!("unexpected status {other}: {reply:?}"),
        }
    }
    assert!(counts[0] >= 8, "the in-flight slots were used: {counts:?}");
    assert!(counts[1] > 0, "the burst was larger than the cap: {counts:?}");
}

/// A backend answering every request with a 256 KiB JSON body, counting the requests.
async fn big_backend() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        let body = format!("[{}0]", "0,".repeat(128 * 1024));
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let response: Arc<[u8]> = response.into_bytes().into();
        while let Ok((mut stream, _)) = listener.accept().await {
            let (counter, response) = (counter.clone(), response.clone());
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0; 4096];
                loop {
                    while let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                        buffer.drain(..end + 4);
                        counter.fetch_add(1, Ordering::SeqCst);
                        if stream.write_all(&response).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, served)
}

#[tokio::test]
async fn a_client_that_does_not_read_pins_at_most_one_response_and_is_closed_at_the_write_timeout() {
    let (big, served) = big_backend().await;
    let transactions = dashboard::DemoBackend::start(dashboard::Service::Transactions).await.expect("backend");
    let config = support::config(format!("http://{big}/profile/{{id}}"), transactions.url_template(), ms(5000));
    let (addr, _server) = support::serve_config(config, short()).await;

    // A small receive window, and 100 pipelined requests that are never read. hyper serves
    // a connection's requests one after another, so the process holds one response at a
    // time; what the kernel's socket buffers take (bounded by `tcp_wmem`) is all the rest.
    let requests = 100;
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("recv buffer");
    let mut stream = socket.connect(addr).await.expect("connect");
    let head = format!("GET /dashboard/42 HTTP/1.1\r\nhost: {addr}\r\n\r\n");
    stream.write_all(head.repeat(requests).as_bytes()).await.expect("send the requests");
    // Long enough for the writes to stall and the write timeout to fire.
    tokio::time::sleep(ms(300) + MARGIN).await;
    let stalled = served.load(Ordering::SeqCst);
    tokio::time::sleep(ms(300)).await;

    let (_, _) = until_closed(&mut stream).await;

    assert!(stalled < requests / 2, "{stalled} of {requests} responses were built for a client that reads none");
    assert_eq!(served.load(Ordering::SeqCst), stalled, "responses were still being built after the stall");
}

#[tokio::test]
async fn the_callers_deadline_shortens_the_aggregation_and_reaches_the_backends() {
    let dashboard = Dashboard::start(ms(5000)).await;

    for header in [("x-muster-deadline-ms", "300"), ("grpc-timeout", "300m")] {
        let reply = get(dashboard.addr, "/dashboard/42?profile_delay_ms=3000", &[header]).await;

        assert_eq!(reply.status, 504, "{header:?}: {reply:?}");
        assert_eq!(reply.json()["kind"], "timeout", "{header:?}");
        assert!(reply.elapsed >= ms(250), "{header:?}: before the caller's budget: {:?}", reply.elapsed);
        assert!(reply.elapsed <= ms(300) + MARGIN, "{header:?}: the configured 5 s was used: {:?}", reply.elapsed);
    }
    for recorded in dashboard.transactions.stats().requests() {
        let sent: u64 = recorded.deadline_ms.as_deref().and_then(|ms| ms.parse().ok()).expect("a deadline header");
        assert!(sent <= 290, "the backend was told {sent} ms, more than the caller's budget less the margin");
    }

    let spent = get(dashboard.addr, "/dashboard/42", &[("x-muster-deadline-ms", "3")]).await;
    assert_eq!(spent.status, 504, "{spent:?}");
    let request_id = spent.header("x-request-id").expect("a request id, made for this answer too");
    assert_eq!(spent.json()["request_id"], request_id);
    let calls = dashboard.profile.stats().started();
    assert_eq!(calls, 2, "a spent budget calls no backend");
}

/// A flood of slow heads: `sockets` clients that each send an incomplete head and reconnect
/// the moment the server closes them, until `until`; returns how many connections were made.
async fn slowloris_flood(addr: SocketAddr, sockets: usize, until: Instant) -> usize {
    let connections = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    for _ in 0..sockets {
        let connections = connections.clone();
        attackers.push(tokio::spawn(async move {
            while Instant::now() < until {
                let Ok(mut stream) = TcpStream::connect(addr).await else {
                    tokio::time::sleep(ms(5)).await;
                    continue;
                };
                connections.fetch_add(1, Ordering::Relaxed);
                if stream.write_all(b"GET /dashboard/1 HTTP/1.1\r\nhost: x\r\nx-slow: ").await.is_err() {
                    continue;
                }
                let mut byte = [0; 1];
                // Held until the server closes it, or the flood ends.
                let left = until.saturating_duration_since(Instant::now());
                let _ = tokio::time::timeout(left, stream.read(&mut byte)).await;
            }
        }));
    }
    for attacker in attackers {
        let _ = attacker.await;
    }
    connections.load(Ordering::Relaxed)
}

#[tokio::test]
async fn at_the_cap_the_oldest_connection_without_a_complete_head_makes_room() {
    let limits = Limits { max_connections: 4, idle_timeout: ms(30_000), header_read_timeout: ms(30_000), ..short() };
    let dashboard = Dashboard::start_with(ms(1000), limits).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(dashboard.addr).await.expect("connect");
        stream.write_all(b"GET /dashboard/1 HTTP/1.1\r\n").await.expect("send");
        held.push(stream);
        tokio::time::sleep(ms(20)).await;
    }
    tokio::time::sleep(ms(100)).await;

    let served = get(dashboard.addr, "/dashboard/42", &[]).await;

    assert_eq!(served.status, 200, "{served:?}");
    let (received, _) = until_closed(&mut held[0]).await;
    assert!(received.is_empty(), "the oldest slow head was closed unanswered: {received:?}");
}

#[tokio::test]
async fn healthz_answers_every_probe_under_a_flood_of_slow_heads() {
    // Slow heads are cut off only after 10 s: within the flood, the cap is what they hit.
    let limits = Limits { header_read_timeout: ms(10_000), idle_timeout: ms(10_000), max_connections: 32, ..short() };
    let dashboard = Dashboard::start_with(ms(1000), limits).await;
    let until = Instant::now() + ms(2500);
    let flood = tokio::spawn(slowloris_flood(dashboard.addr, 150, until));
    tokio::time::sleep(ms(500)).await;

    let mut answered = 0;
    let probes = 12;
    for _ in 0..probes {
        let probe = tokio::time::timeout(ms(1000), get(dashboard.addr, "/healthz", &[])).await;
        if probe.is_ok_and(|reply| reply.status == 200 && reply.body == "ok") {
            answered += 1;
        }
        tokio::time::sleep(ms(100)).await;
    }
    let connections = within(LIMIT, "the flood to end", flood).await.expect("the flood");

    assert_eq!(answered, probes, "/healthz answered {answered} of {probes} probes under {connections} connections");
    assert!(connections > 150, "the flood reconnected: {connections} connections");
    assert!(dashboard::stats::stats().shed_total() > 0, "slow heads were shed");
}

/// The status of the answer to `GET /healthz` with a header of `pad` bytes, or `None` if the
/// connection closed unanswered.
async fn healthz_with_head_of(addr: SocketAddr, pad: usize) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let head = format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\nconnection: close\r\n\r\n", "a".repeat(pad));
    // All of it at once: the server's reads then come as large as it asks.
    let _ = stream.write_all(head.as_bytes()).await;
    let (received, _) = until_closed(&mut stream).await;
    let text = String::from_utf8_lossy(&received);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[tokio::test]
async fn request_heads_over_64_kib_are_refused() {
    let dashboard = Dashboard::start_with(ms(1000), Limits::default()).await;

    assert_eq!(healthz_with_head_of(dashboard.addr, 60 * 1024).await, Some(200), "a 60 KiB head");
    for pad in [65 * 1024, 80 * 1024, 110 * 1024] {
        let status = healthz_with_head_of(dashboard.addr, pad).await;
        assert!(status.is_none_or(|status| status == 431), "a head of {pad} bytes was answered {status:?}");
    }
}

/// A server of `/big` (a `size`-byte body) and `/healthz` with `limits`.
async fn serve_big(size: usize, limits: Limits) -> SocketAddr {
    let big = axum::body::Bytes::from(vec![b'x'; size]);
    let router = axum::Router::new()
        .route("/big", axum::routing::get(move || std::future::ready(big.clone())))
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    let listener = dashboard::server::listen("127.0.0.1:0".parse().expect("an address")).expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = dashboard::server::Server::new(router, limits, ms(1000));
    tokio::spawn(server.serve(listener, std::future::pending()));
    addr
}

/// Asks for `/big` and reads 4 KiB every 100 ms (always some progress, never the whole of it)
/// until the server closes the connection or `limit` passes; what was read, and when it ended.
async fn read_slowly(addr: SocketAddr, limit: Duration) -> (usize, Duration) {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("a small receive buffer");
    let mut stream = socket.connect(addr).await.expect("connect");
    stream.write_all(b"GET /big HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("send");
    let started = Instant::now();
    let mut received = 0;
    let mut chunk = [0; 4096];
    while started.elapsed() < limit {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => received += n,
        }
        tokio::time::sleep(ms(100)).await;
    }
    (received, started.elapsed())
}

#[tokio::test]
async fn a_slow_reader_is_cut_off_at_the_response_timeout() {
    const SIZE: usize = 32 << 20;
    // The write timeout never fires: the client reads something every 100 ms.
    let limits = Limits { write_timeout: ms(1000), response_timeout: ms(1500), ..Limits::default() };
    let addr = serve_big(SIZE, limits).await;

    let (received, elapsed) = read_slowly(addr, LIMIT).await;

    assert!(received < SIZE, "read it all: {received}");
    assert!(elapsed >= ms(1400), "cut off early: {elapsed:?}");
    assert!(elapsed <= ms(1500) + ms(1000) + MARGIN, "cut off after {elapsed:?}; the response timeout is 1.5 s");
}

#[tokio::test]
async fn an_answer_small_enough_for_the_kernel_still_counts_against_the_budget_until_read() {
    // 2 MiB fits whole in a socket's send buffer as the kernel sizes it on its own (up to
    // 4 MiB): the answer would count as written at once, and slow readers would pin it in the
    // kernel, out of the budget's sight and the response timeout's. Room for one, not two.
    const SIZE: usize = 2 << 20;
    let (_, second, slow) = beside_a_slow_reader(SIZE, 3 << 20).await;

    assert_eq!(second.status, 503, "a second answer past the budget: {}", second.status);
    let (received, _) = slow.await.expect("the slow reader");
    assert!(received < SIZE, "{received}");
}

#[tokio::test]
async fn slow_readers_hold_at_most_the_response_buffer_budget() {
    const SIZE: usize = 24 << 20;
    // Room for one 24 MiB answer, not two.
    let (addr, second, slow) = beside_a_slow_reader(SIZE, 40 << 20).await;
    let health = get(addr, "/healthz", &[]).await;

    assert_eq!(second.status, 503, "a second big answer past the budget: {}", second.status);
    assert_eq!(second.header("retry-after"), Some("1"));
    assert_eq!((health.status, health.body.as_str()), (200, "ok"), "small answers still fit");
    let (received, _) = slow.await.expect("the slow reader");
    assert!(received < SIZE, "{received}");
}

/// Serves `size`-byte answers under a response budget of `budget` bytes, has one of them read
/// slowly for 2 s, and asks for a second one meanwhile: the server, the second answer, and
/// the slow reader, still reading.
async fn beside_a_slow_reader(
    size: usize,
    budget: usize,
) -> (SocketAddr, support::Reply, tokio::task::JoinHandle<(usize, Duration)>) {
    let addr = serve_big(size, Limits { max_response_buffer: budget, ..Limits::default() }).await;
    let slow = tokio::spawn(read_slowly(addr, ms(2000)));
    tokio::time::sleep(ms(300)).await;
    let second = get(addr, "/big", &[]).await;
    (addr, second, slow)
}

#[tokio::test]
async fn the_listener_queues_a_flood_of_connections_while_nothing_accepts() {
    // At the connection cap the accept loop waits for a connection to shed, and new ones wait
    // in the backlog. With the usual 128, the kernel drops a connection attempt past it, and
    // the client only tries again a second later: a liveness probe times out.
    const CLIENTS: usize = 400;
    let listener = dashboard::server::listen("127.0.0.1:0".parse().expect("an address")).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut connects = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        connects.spawn(tokio::time::timeout(ms(500), TcpStream::connect(addr)));
    }
    let mut connected = Vec::new();
    while let Some(result) = connects.join_next().await {
        if let Ok(Ok(stream)) = result.expect("a connect task") {
            connected.push(stream);
        }
    }
    // Linux caps the backlog at `net.core.somaxconn`.
    let cap = std::fs::read_to_string("/proc/sys/net/core/somaxconn").ok().and_then(|cap| cap.trim().parse().ok());
    let expected = cap.map_or(CLIENTS, |cap: usize| cap.min(CLIENTS));
    assert!(connected.len() >= expected, "{} of {CLIENTS} connected within 500 ms, none accepted", connected.len());
    drop(listener);
}
