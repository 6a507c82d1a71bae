//! The live view of what is in flight (issue 21), on the real binary: off by default, 404
//! without the bearer token, redacted, rate-capped, drawn by the `/debug` page in a real
//! headless Chromium (a screenshot under `target/`), and logged on `SIGUSR1`.

#[allow(dead_code)] // this file uses a part of the helpers
#[path = "support/running.rs"]
mod running;
mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use running::Running;
use serde_json::Value;
use support::{LIMIT, Reply, get, within};
use tokio::task::JoinHandle;

const TOKEN: &str = "t0ken-for-the-debug-view";
/// A credential the client sends, forwarded to the backends: never in the view.
const CLIENT_SECRET: &str = "Bearer client-s3cret";

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

/// The dashboard with the view on, a 20 s deadline, and stderr going to `stderr`.
async fn with_the_view(stderr: Stdio) -> (Running, SocketAddr) {
    Running::start(&["--debug-token", TOKEN, "--timeout-ms", "20000"], stderr, &[]).await
}

/// A request whose transactions backend answers after 15 s, running in the background.
fn slow_request(addr: SocketAddr) -> JoinHandle<Reply> {
    tokio::spawn(async move {
        let headers = [("authorization", CLIENT_SECRET), ("x-request-id", "r-slow")];
        get(addr, "/dashboard/20?transactions_delay_ms=15000", &headers).await
    })
}

/// Polls the JSON view until a call shows its `transactions` running.
async fn until_running(addr: SocketAddr) -> (Reply, Value) {
    within(LIMIT, "the slow call to show", async {
        loop {
            let reply = get(addr, "/debug/aggregations", &[("authorization", &bearer())]).await;
            if reply.status == 200 {
                let json = reply.json();
                let running = json["calls"].as_array().into_iter().flatten().any(|call| {
                    call["sources"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|source| source["name"] == "transactions" && source["state"] == "running")
                });
                if running {
                    return (reply, json);
                }
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    })
    .await
}

#[tokio::test]
async fn the_view_is_off_by_default_and_a_404_without_the_token() {
    let not_found = |reply: &Reply, what: &str| {
        assert_eq!((reply.status, reply.body.contains("not_found")), (404, true), "{what}: {}", reply.body);
    };
    let (_off, addr) = Running::start(&[], Stdio::null(), &[]).await;
    let unknown = get(addr, "/no-such-path", &[]).await;
    for path in ["/debug/aggregations", "/debug"] {
        let reply = get(addr, path, &[("authorization", &bearer())]).await;
        not_found(&reply, "view off");
        assert_eq!(reply.body, unknown.body, "the same 404 as an unknown path");
    }

    let (_on, addr) = with_the_view(Stdio::null()).await;
    let wrong = format!("Bearer {}x", &TOKEN[..TOKEN.len() - 1]);
    for path in ["/debug/aggregations", "/debug"] {
        for headers in [vec![], vec![("authorization", wrong.as_str())], vec![("authorization", TOKEN)]] {
            let reply = get(addr, path, &headers).await;
            not_found(&reply, &format!("{path} {headers:?}"));
            assert_eq!(reply.body, unknown.body, "the same 404 as an unknown path");
        }
    }
    let reply = get(addr, "/debug/aggregations", &[("authorization", &format!("bearer {TOKEN}"))]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["calls"], Value::Array(Vec::new()));
    let page = get(addr, "/debug", &[("authorization", &bearer())]).await;
    assert_eq!((page.status, page.header("content-type")), (200, Some("text/html; charset=utf-8")));
}

#[tokio::test]
async fn the_json_shows_a_request_waiting_on_a_slow_source_redacted() {
    let (_running, addr) = with_the_view(Stdio::null()).await;
    let failed =
        get(addr, "/dashboard/21?transactions_fail=1&profile_delay_ms=5000", &[("authorization", CLIENT_SECRET)]);
    assert_eq!(failed.await.status, 502);
    let slow = slow_request(addr);
    let (reply, json) = until_running(addr).await;
    println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());

    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!((json["truncated"].as_bool(), json["untracked"].as_u64()), (Some(false), Some(0)));
    let call = &json["calls"][0];
    assert_eq!(call["fields"]["user_id"], "20");
    assert_eq!(call["fields"]["request_id"], "r-slow");
    let remaining = call["remaining_ms"].as_f64().unwrap_or_default();
    assert!(remaining > 5_000.0 && remaining < 20_000.0, "remaining {remaining}");
    let source = |name: &str| call["sources"].as_array().into_iter().flatten().find(|s| s["name"] == name).cloned();
    let transactions = source("transactions").unwrap_or_default();
    assert_eq!((transactions["state"].as_str(), transactions["attempt"].as_u64()), (Some("running"), Some(1)));
    assert_eq!(transactions["text"], "running (attempt 1)");
    assert!(transactions["elapsed_ms"].as_f64().unwrap_or_default() > 0.0);
    let profile = source("profile").unwrap_or_default();
    assert_eq!((profile["state"].as_str(), profile["outcome"].as_str()), (Some("done"), Some("ok")));

    let failed = &json["failed"][0];
    assert_eq!(
        (failed["stopped_by"].as_str(), failed["fields"]["user_id"].as_str()),
        (Some("transactions"), Some("21"))
    );
    let states: Vec<_> = failed["sources"].as_array().into_iter().flatten().map(|s| s["text"].as_str()).collect();
    assert_eq!(
        states,
        [Some("cancelled by `transactions`"), Some("failed (status)"), Some("cancelled by `transactions`")]
    );

    for secret in ["client-s3cret", "127.0.0.1", "http://", TOKEN] {
        assert!(!reply.body.contains(secret), "`{secret}` leaked into the view: {}", reply.body);
    }
    slow.abort();
}

#[tokio::test]
async fn the_view_is_rate_capped() {
    let (_running, addr) = with_the_view(Stdio::null()).await;
    let mut statuses = Vec::new();
    for _ in 0..=dashboard::debug::RATE_CAP {
        statuses.push(get(addr, "/debug/aggregations", &[("authorization", &bearer())]).await);
    }
    let capped = statuses.iter().filter(|reply| reply.status == 429).collect::<Vec<_>>();
    assert!(!capped.is_empty(), "{:?}", statuses.iter().map(|reply| reply.status).collect::<Vec<_>>());
    assert_eq!(capped[0].header("retry-after"), Some("1"));
    // Unauthorized requests are not counted, and still get the 404.
    assert_eq!(get(addr, "/debug/aggregations", &[]).await.status, 404);
}

#[tokio::test]
async fn sigusr1_logs_the_snapshot() {
    let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("debug-sigusr1-{}.log", std::process::id()));
    let file = std::fs::File::create(&log).expect("log file");
    let (running, addr) = with_the_view(Stdio::from(file)).await;
    let slow = slow_request(addr);
    until_running(addr).await;
    running.signal("USR1");
    let line = within(LIMIT, "the SIGUSR1 line", async {
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(line) = text.lines().find(|line| line.contains("in-flight aggregations (SIGUSR1)")) {
                return line.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let line: Value = serde_json::from_str(&line).expect("a JSON log line");
    let snapshot: Value = serde_json::from_str(line["fields"]["snapshot"].as_str().unwrap_or_default())
        .unwrap_or_else(|error| panic!("the snapshot field is JSON: {error}: {line}"));
    assert_eq!(snapshot["calls"][0]["fields"]["request_id"], "r-slow", "{snapshot}");
    assert!(!line.to_string().contains("client-s3cret"));
    slow.abort();
}

/// An authenticating proxy in front of `upstream` on `127.0.0.1:0`: it adds `Authorization:
/// Bearer TOKEN` to each request (GETs: a head and no body) and serves one per connection.
async fn with_the_token(upstream: SocketAddr) -> SocketAddr {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
    let addr = listener.local_addr().expect("the proxy's address");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = client.into_split();
                let mut head = String::new();
                let mut lines = BufReader::new(read);
                loop {
                    let mut line = String::new();
                    if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                    let name = line.split(':').next().unwrap_or_default().to_ascii_lowercase();
                    if name != "connection" && name != "authorization" {
                        head.push_str(&line);
                    }
                }
                head.push_str(&format!("authorization: {}\r\nconnection: close\r\n\r\n", bearer()));
                let Ok(mut server) = tokio::net::TcpStream::connect(upstream).await else { return };
                if server.write_all(head.as_bytes()).await.is_ok() {
                    let _ = tokio::io::copy(&mut server, &mut write).await;
                }
            });
        }
    });
    addr
}

/// Chromium from the distribution's packages (`.ci/run` installs it): `CHROMIUM`, else
/// `chromium` or `chromium-browser` on the `PATH`. Missing is a failure, never a skip.
fn chromium() -> PathBuf {
    let candidates = std::env::var_os("CHROMIUM").map(PathBuf::from).into_iter();
    let on_path = ["chromium", "chromium-browser"].into_iter().flat_map(|name| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(move |dir| dir.join(name))
            .collect::<Vec<_>>()
    });
    candidates.chain(on_path).find(|path| path.is_file()).unwrap_or_else(|| {
        panic!("no Chromium: install the distribution's `chromium` package (.ci/run does), or set CHROMIUM")
    })
}

/// Runs headless Chromium on `url` with `args`, in a fresh profile, killed after [`LIMIT`]; its
/// stdout.
fn headless(url: &str, args: &[&str]) -> String {
    let profile =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chromium-{}-{}", std::process::id(), args.len()));
    let _ = std::fs::remove_dir_all(&profile);
    let mut child = Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic"])
        .args(["--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--window-size=1200,800", "--virtual-time-budget=3000"])
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", chromium().display()));
    let started = Instant::now();
    while child.try_wait().ok().flatten().is_none() {
        if started.elapsed() > LIMIT * 3 {
            let _ = child.kill();
            panic!("chromium took longer than {:?}", LIMIT * 3);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let output = child.wait_with_output().expect("chromium's output");
    let _ = std::fs::remove_dir_all(&profile);
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[tokio::test]
async fn the_page_draws_a_running_slow_source_in_a_real_browser() {
    let (_running, addr) = with_the_view(Stdio::null()).await;
    // A failed call first: the transactions fail while the profile is still running.
    let failed = get(addr, "/dashboard/21?transactions_fail=1&profile_delay_ms=5000", &[]).await;
    assert_eq!(failed.status, 502, "{}", failed.body);
    let slow = slow_request(addr);
    until_running(addr).await;
    // The browser reaches the view as an operator's would: through a proxy that adds the token.
    let proxy = with_the_token(addr).await;
    let url = format!("http://{proxy}/debug");

    let dom = tokio::task::spawn_blocking({
        let url = url.clone();
        move || headless(&url, &["--dump-dom"])
    })
    .await
    .expect("chromium");
    assert!(dom.contains("1 in flight"), "the page did not load the view: {dom}");
    assert!(dom.contains("transactions") && dom.contains("running (attempt 1)"), "{dom}");
    assert!(dom.contains("user_id=20"), "{dom}");
    assert!(dom.contains("failed after") && dom.contains("stopped by transactions"), "{dom}");
    assert!(dom.contains("cancelled by `transactions`") && dom.contains("user_id=21"), "{dom}");
    assert!(!dom.contains(TOKEN), "the token is in the page: {dom}");

    let screenshot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("debug-page.png");
    let _ = std::fs::remove_file(&screenshot);
    let argument = format!("--screenshot={}", screenshot.display());
    tokio::task::spawn_blocking(move || headless(&url, &[&argument])).await.expect("chromium");
    let png =
        std::fs::read(&screenshot).unwrap_or_else(|error| panic!("no screenshot at {}: {error}", screenshot.display()));
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "not a screenshot: {} bytes", png.len());
    println!("screenshot: {}", screenshot.display());
    slow.abort();
}
