//! The `dashboard` process under signals, broken pipes and a low descriptor limit: a signal is
//! handled from the moment the server says it is up, SIGTERM drains and exits within the grace
//! period whatever the clients hold, a second signal exits
//! at once, a stderr nobody reads does not stop serving, a closed stdout is not a panic, the
//! connection cap keeps `/healthz` alive under `ulimit -n 64`, and running out of descriptors
//! is logged as such, with backoff.

#[path = "support/running.rs"]
mod running;
mod support;

use std::io::Read;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use running::{BINARY, Running, dashboard, without_settings};
use support::{LIMIT, MARGIN, get, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

#[tokio::test]
async fn a_signal_sent_as_soon_as_the_server_says_it_is_up_shuts_it_down_gracefully() {
    // The listeners are registered before the `listening on` line: a SIGTERM or Ctrl-C right
    // after it drains and exits 0, rather than meeting the default action (killed by the signal).
    for signal in ["TERM", "INT", "TERM", "INT"] {
        let (mut running, _) = Running::start(&[], Stdio::null(), &[]).await;
        running.signal(signal);
        let status = running.exited_within(LIMIT).await;
        assert!(status.is_some_and(|status| status.success()), "SIG{signal} at once: exit status {status:?}");
    }
}

#[tokio::test]
async fn sigterm_answers_what_is_in_flight_and_exits_within_the_grace_whatever_the_clients_hold() {
    let args = ["--timeout-ms", "20000", "--shutdown-grace-ms", "700"];
    let limits = ["--header-read-timeout-ms", "60000", "--idle-timeout-ms", "60000", "--write-timeout-ms", "60000"];
    let args: Vec<&str> = args.iter().chain(&limits).copied().collect();
    let (mut running, addr) = Running::start(&args, Stdio::null(), &[]).await;
    // A half-sent head, a request slower than the grace, and one that finishes within it.
    let mut half = TcpStream::connect(addr).await.expect("connect");
    half.write_all(b"GET /dashboard/1 HTTP/1.1\r\nhost: x\r\n").await.expect("send");
    let slow = tokio::spawn(async move { get(addr, "/dashboard/2?profile_delay_ms=15000", &[]).await });
    let quick = tokio::spawn(async move { get(addr, "/dashboard/3?profile_delay_ms=300", &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let signalled = Instant::now();
    running.signal("TERM");
    let status = running.exited_within(LIMIT).await;

    let elapsed = signalled.elapsed();
    // A request was still unanswered when the grace ended: not a clean exit.
    assert_eq!(status.and_then(|status| status.code()), Some(1), "exit status {status:?}");
    assert!(elapsed <= Duration::from_millis(700) + MARGIN, "exited {elapsed:?} after SIGTERM; the grace is 700 ms");
    assert_eq!(quick.await.expect("quick").status, 200, "the request in flight was answered");
    // The request slower than the grace gets no answer: its connection closes with the process.
    let slow = within(LIMIT, "the slow request", slow).await;
    assert!(slow.as_ref().map_or(true, |reply| reply.status != 200), "{slow:?}");
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting after the shutdown");
}

#[tokio::test]
async fn a_second_signal_exits_at_once() {
    const TOKEN: &str = "a-token-for-the-live-view";
    let args = ["--timeout-ms", "30000", "--shutdown-grace-ms", "30000", "--debug-token", TOKEN];
    let (mut running, addr) = Running::start(&args, Stdio::null(), &[]).await;
    let _slow = tokio::spawn(async move { get(addr, "/dashboard/2?profile_delay_ms=25000", &[]).await });
    // The request is in flight once the live view shows it.
    within(LIMIT, "the request in flight", async {
        loop {
            let view = get(addr, "/debug/aggregations", &[("authorization", &format!("Bearer {TOKEN}"))]).await;
            if view.status == 200 && view.json()["calls"].as_array().is_some_and(|calls| !calls.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    running.signal("TERM");
    // The first signal has been handled once the listener is closed.
    within(LIMIT, "the listener to close", async {
        while TcpStream::connect(addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(running.0.try_wait().expect("try_wait").is_none(), "the first signal waits for the request in flight");
    let signalled = Instant::now();
    running.signal("INT");
    let status = running.exited_within(LIMIT).await;

    assert_eq!(status.and_then(|status| status.code()), Some(130), "{status:?}");
    assert!(signalled.elapsed() <= MARGIN, "took {:?} after the second signal", signalled.elapsed());
}

#[tokio::test]
async fn a_stderr_nobody_reads_does_not_stop_serving() {
    // Every request logs a line; a pipe holds 64 KiB. Nothing reads this one.
    let (mut running, addr) = Running::start(&[], Stdio::piped(), &[("RUST_LOG", "info")]).await;
    let _stderr = running.0.stderr.take();

    let started = Instant::now();
    for i in 0..1500 {
        let path = if i % 2 == 0 { format!("/dashboard/{i}") } else { "/healthz".to_owned() };
        let reply = get(addr, &path, &[("x-request-id", &format!("request-{i:04}-{}", "x".repeat(64)))]).await;
        assert_eq!(reply.status, 200, "request {i} after {:?}: {reply:?}", started.elapsed());
    }

    running.signal("TERM");
    let status = running.exited_within(LIMIT).await;
    assert!(status.is_some_and(|status| status.success()), "exit status {status:?}");
}

#[tokio::test]
async fn a_closed_stdout_is_not_a_panic() {
    // The address must be known beforehand: stdout is closed before anything is printed.
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|listener| listener.local_addr()).expect("a port");
    let listen = port.to_string();
    let mut command = dashboard(&["--listen", &listen], &[]);
    let child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start");
    let mut running = Running(child);
    drop(running.0.stdout.take());

    let mut up = false;
    for _ in 0..500 {
        if TcpStream::connect(port).await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(up, "the dashboard did not start");
    assert_eq!(get(port, "/dashboard/42", &[]).await.status, 200, "serves with a closed stdout");
    running.signal("TERM");
    let status = running.exited_within(LIMIT).await;

    let mut stderr = String::new();
    if let Some(mut pipe) = running.0.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(status.is_some_and(|status| status.success()), "exit status {status:?}: {stderr}");
}

/// The binary under `ulimit -n 64`, its stderr to `log`.
async fn start_with_few_descriptors(args: &[&str], log: &std::path::Path) -> (Running, SocketAddr) {
    start_with_ulimit("-n 64", args, log).await
}

/// The binary under `ulimit {ulimit}` (e.g. `-n 256`: soft and hard; `-S -n 256`: soft only),
/// its stderr to `log`.
async fn start_with_ulimit(ulimit: &str, args: &[&str], log: &std::path::Path) -> (Running, SocketAddr) {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(format!("ulimit {ulimit} && exec \"$0\" \"$@\""))
        .arg(BINARY)
        .args(["--listen", "127.0.0.1:0"])
        .args(args);
    without_settings(&mut command);
    let stderr = std::fs::File::create(log).expect("log file");
    Running::launch(command, stderr.into()).await
}

/// Opens `count` connections that each send half a request head, as fast as the server takes
/// them; connections the server refuses or closes are kept too (they cost the test nothing).
async fn hold(addr: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..count {
        if let Ok(Ok(mut stream)) = tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(addr)).await {
            let _ = stream.write_all(b"GET /dashboard/1 HTTP/1.1\r\n").await;
            held.push(stream);
        }
    }
    held
}

/// `/healthz` answered 200 within `limit`, retrying on refused or closed connections.
async fn healthz_within(addr: SocketAddr, limit: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < limit {
        let attempt = async {
            let mut stream = TcpStream::connect(addr).await.ok()?;
            stream.write_all(support::request(addr, "/healthz", &[]).as_bytes()).await.ok()?;
            let mut raw = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut raw).await.ok()?;
            Some(raw.starts_with(b"HTTP/1.1 200"))
        };
        if tokio::time::timeout(Duration::from_millis(500), attempt).await.ok().flatten() == Some(true) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn with_a_connection_cap_under_the_descriptor_limit_healthz_stays_alive_under_slowloris() {
    let log = std::env::temp_dir().join(format!("dashboard-cap-{}.log", std::process::id()));
    let args = ["--max-connections", "20", "--header-read-timeout-ms", "30000", "--idle-timeout-ms", "30000"];
    let (_running, addr) = start_with_few_descriptors(&args, &log).await;

    let held = hold(addr, 100).await;

    assert!(healthz_within(addr, Duration::from_secs(5)).await, "/healthz died with {} slow clients", held.len());
    let log = std::fs::read_to_string(&log).inspect(|_| drop(std::fs::remove_file(&log))).unwrap_or_default();
    assert!(log.contains("connection cap reached"), "the cap was not logged: {log}");
    assert!(!log.contains("out of file descriptors"), "the cap did not keep the process under its fd limit: {log}");
}

/// Sets the open-files limit of the running process `pid` (util-linux `prlimit`).
fn prlimit(pid: u32, nofile: &str) {
    let status = Command::new("prlimit").args(["--pid", &pid.to_string(), &format!("--nofile={nofile}")]).status();
    assert!(status.is_ok_and(|status| status.success()), "prlimit --nofile={nofile} failed");
}

#[tokio::test]
async fn running_out_of_descriptors_is_logged_as_such_and_the_server_recovers() {
    // The caps fit the limit at start; the limit is then lowered under the process's feet, as
    // descriptors used elsewhere would.
    let log = std::env::temp_dir().join(format!("dashboard-emfile-{}.log", std::process::id()));
    let args = ["--max-connections", "1000", "--header-read-timeout-ms", "30000", "--idle-timeout-ms", "30000"];
    let (running, addr) = start_with_few_descriptors(&args, &log).await;
    prlimit(running.0.id(), "24:64");

    let held = hold(addr, 100).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    drop(held);
    prlimit(running.0.id(), "64:64");

    assert!(logged.contains("out of file descriptors"), "EMFILE was not logged as such: {logged}");
    let lines = logged.lines().filter(|line| line.contains("out of file descriptors")).count();
    assert!(lines < 20, "{lines} lines in 300 ms: the accept loop did not back off");
    assert!(healthz_within(addr, Duration::from_secs(5)).await, "the server did not recover");
}

#[tokio::test]
async fn caps_that_do_not_fit_the_descriptor_limit_are_lowered_and_a_burst_gets_no_connect_errors() {
    let log = std::env::temp_dir().join(format!("dashboard-fit-{}.log", std::process::id()));
    // The default caps (1024 connections, 512 aggregations) under a hard limit of 256.
    let (_running, addr) = start_with_ulimit("-n 256", &["--timeout-ms", "5000"], &log).await;

    // A burst larger than the descriptors, each aggregation holding its backends a while.
    let burst: Vec<_> = (0..300)
        .map(|i| {
            tokio::spawn(async move {
                let request = async {
                    let mut stream = TcpStream::connect(addr).await.ok()?;
                    let target = format!("/dashboard/{i}?profile_delay_ms=200");
                    stream.write_all(support::request(addr, &target, &[]).as_bytes()).await.ok()?;
                    let mut raw = Vec::new();
                    tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut raw).await.ok()?;
                    Some(String::from_utf8_lossy(&raw).into_owned())
                };
                within(LIMIT, "an answer", request).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for request in burst {
        answers.push(request.await.expect("join"));
    }
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);

    assert!(logged.contains("lowering the caps to fit"), "no warning: {logged}");
    let served = answers.iter().flatten().filter(|answer| answer.starts_with("HTTP/1.1 200")).count();
    let bad_gateway: Vec<&String> = answers.iter().flatten().filter(|answer| answer.contains(" 502 ")).collect();
    assert!(bad_gateway.is_empty(), "{} answers 502, e.g. {:?}", bad_gateway.len(), bad_gateway.first());
    assert!(served > 0, "nothing served: {answers:?}");
    assert!(!logged.contains("out of file descriptors"), "the caps did not fit: {logged}");
}

#[tokio::test]
async fn the_soft_descriptor_limit_is_raised_to_the_hard_one() {
    let log = std::env::temp_dir().join(format!("dashboard-raise-{}.log", std::process::id()));
    let (running, _addr) = start_with_ulimit("-S -n 256", &[], &log).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", running.0.id())).unwrap_or_default();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);

    let open_files = limits.lines().find(|line| line.starts_with("Max open files")).unwrap_or_default();
    let numbers: Vec<&str> = open_files.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers.len(), 2, "{limits}");
    assert_eq!(numbers[0], numbers[1], "soft {} not raised to hard {}", numbers[0], numbers[1]);
    assert_ne!(numbers[0], "256", "{open_files}");
    if numbers[0].parse::<usize>().is_ok_and(|soft| soft >= 5000) {
        assert!(!logged.contains("lowering the caps"), "the caps fit the raised limit: {logged}");
    }
}

/// A one-shot OTLP/HTTP collector on 127.0.0.1: records the path, content type and body of
/// every request it gets, and answers 200.
#[cfg(feature = "otel")]
async fn collector() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<(String, String, Vec<u8>)>>>) {
    use tokio::io::AsyncReadExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the collector");
    let addr = listener.local_addr().expect("its address");
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = std::sync::Arc::clone(&received);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = std::sync::Arc::clone(&log);
            tokio::spawn(async move {
                let mut raw = Vec::new();
                let mut buffer = [0u8; 8192];
                loop {
                    let Ok(read) = socket.read(&mut buffer).await else { return };
                    if read == 0 {
                        return;
                    }
                    raw.extend_from_slice(&buffer[..read]);
                    let Some(end) = raw.windows(4).position(|window| window == b"\r\n\r\n") else { continue };
                    let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
                    let header = |name: &str| {
                        head.lines().find_map(|line| line.strip_prefix(&format!("{name}: ")).map(str::to_owned))
                    };
                    let length: usize =
                        header("content-length").and_then(|value| value.trim().parse().ok()).unwrap_or(0);
                    if raw.len() < end + 4 + length {
                        continue;
                    }
                    let path = head.split(' ').nth(1).unwrap_or("").to_owned();
                    let body = raw[end + 4..end + 4 + length].to_vec();
                    log.lock().expect("the log").push((path, header("content-type").unwrap_or_default(), body));
                    raw.drain(..end + 4 + length);
                    let reply = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if tokio::io::AsyncWriteExt::write_all(&mut socket, reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, received)
}

#[cfg(feature = "otel")]
#[tokio::test]
async fn with_an_otlp_endpoint_the_spans_are_exported_at_the_latest_on_shutdown() {
    let (collector, received) = collector().await;
    let endpoint = format!("http://{collector}/v1/traces");
    let (mut running, addr) = Running::start(&["--otlp-endpoint", &endpoint], Stdio::null(), &[]).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = get(addr, "/dashboard/20", &[("traceparent", traceparent)]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    running.signal("TERM");
    assert!(running.exited_within(LIMIT).await.is_some_and(|status| status.success()));
    let received = received.lock().expect("the log").clone();
    assert!(!received.is_empty(), "nothing was exported");
    let (path, content_type, _) = &received[0];
    assert_eq!((path.as_str(), content_type.trim()), ("/v1/traces", "application/x-protobuf"));
    let body: Vec<u8> = received.iter().flat_map(|(_, _, body)| body.clone()).collect();
    let has = |needle: &[u8]| body.windows(needle.len()).any(|window| window == needle);
    for name in [&b"aggregate"[..], b"source", b"attempt"] {
        assert!(has(name), "no `{}` span exported", String::from_utf8_lossy(name));
    }
    // The caller's trace id (raw bytes in the protobuf): the trace went on.
    let trace: Vec<u8> =
        (0..16).map(|i| u8::from_str_radix(&traceparent[3 + 2 * i..5 + 2 * i], 16).expect("hex")).collect();
    assert!(has(&trace), "the caller's trace id is not in the export");
}

#[tokio::test]
async fn streamed_requests_are_logged_when_they_end_with_their_real_outcome_and_time() {
    let log = std::env::temp_dir().join(format!("dashboard-stream-log-{}.log", std::process::id()));
    let stderr = std::fs::File::create(&log).expect("log file");
    let (mut running, addr) = Running::start(&[], stderr.into(), &[("RUST_LOG", "info")]).await;
    let streamed = [("accept", "application/x-ndjson")];
    let reply = get(addr, "/dashboard/7?transactions_fail=1&transactions_delay_ms=200", &streamed).await;
    assert_eq!(reply.status, 200, "the head went out before the failure: {reply:?}");
    assert!(reply.body.contains("\"outcome\":\"failed\""), "{reply:?}");

    // A client that goes away after the first section: the stream never ends on its own.
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    let gone = support::request(addr, "/dashboard/8?transactions_delay_ms=20000", &streamed);
    socket.write_all(gone.as_bytes()).await.expect("send");
    support::first_section(&mut socket).await;
    drop(socket);
    let logged = || std::fs::read_to_string(&log).unwrap_or_default();
    support::eventually("the access line of the stream the client left", || logged().contains("/dashboard/8")).await;
    running.signal("TERM");
    assert!(running.exited_within(LIMIT).await.is_some());
    let logged = logged();
    let _ = std::fs::remove_file(&log);

    let access = |path: &str| {
        let lines: Vec<serde_json::Value> = logged
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| line["fields"]["message"] == "request" && line["fields"]["path"] == path)
            .map(|line| line["fields"].clone())
            .collect();
        assert_eq!(lines.len(), 1, "one access line for {path}: {logged}");
        lines.into_iter().next().unwrap_or_default()
    };
    let fields = access("/dashboard/7");
    assert_eq!(fields["status"], 502, "{fields}");
    assert!(fields["elapsed_ms"].as_u64().is_some_and(|elapsed| elapsed >= 200), "{fields}");
    assert_eq!((fields["source"].as_str(), fields["user_id"].as_str()), (Some("transactions"), Some("7")), "{fields}");
    // The client went away: `499`, the aggregation cancelled, logged when it was.
    let fields = access("/dashboard/8");
    assert_eq!((&fields["status"], fields["kind"].as_str()), (&serde_json::json!(499), Some("cancelled")), "{fields}");
    assert_eq!((fields["source"].as_str(), fields["user_id"].as_str()), (None, Some("8")), "{fields}");
}
