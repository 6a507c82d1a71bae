//! `cargo xtask e2e`: the dashboard binary end to end. It is started on `127.0.0.1:0` with its
//! demo backends and checked over plain HTTP/1.1 with std only, the README's curl lines one by
//! one (a success with the offers of the profile's tier, offers that fall back, the streamed
//! sections, a failing source, the deadline), then killed by its pid whatever the checks found;
//! then again with the transactions cache on, for the brownout lines (stale answers); then
//! once more for the breaker, the retry budget and the retries (a brownout, a breaker opening).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::server::{Reply, Server, get};
use crate::{cargo, root};

/// The deadline the dashboard runs with.
const TIMEOUT: Duration = Duration::from_millis(500);
/// The slack allowed on top of the deadline for the 504 to arrive: generous, so that a busy
/// machine does not fail CI.
const MARGIN: Duration = Duration::from_secs(1);

/// The dashboard end to end: builds the binary (with the features of the `test` step, so CI
/// reuses what it built), starts it on `127.0.0.1:0` with its demo backends, and checks a
/// success, a failing source and the deadline over plain HTTP/1.1. The server is killed
/// whatever happens.
pub(crate) fn run() -> Result<(), String> {
    cargo(&["build", "--workspace", "--all-features", "--bin", "dashboard"])?;
    let binary = target_dir().join("debug").join(format!("dashboard{}", std::env::consts::EXE_SUFFIX));
    let log = target_dir().join("e2e-dashboard.log");
    let timeout_ms = TIMEOUT.as_millis().to_string();
    let args = ["--listen", "127.0.0.1:0", "--timeout-ms", &timeout_ms];
    let server = Server::start("dashboard", &binary, &args, &[], &log, 1)?;
    let checks = checks(server.addr);
    server.stop();
    if checks.is_err() {
        eprintln!("e2e: the dashboard's log is in {}", log.display());
    }
    checks?;
    // The README's brownout lines: the transactions cache on (issue 20).
    let args = [&args[..], &["--cache-ttl-ms", "0", "--stale-if-error-ms", "600000"]].concat();
    let server = Server::start("dashboard", &binary, &args, &[], &log, 1)?;
    let checks = brownout_checks(server.addr);
    server.stop();
    if checks.is_err() {
        eprintln!("e2e: the dashboard's log is in {}", log.display());
    }
    checks?;
    // The README's breaker and budget lines: a fresh dashboard, so that its breaker's window
    // holds only these calls. Three lines: the transactions backend's address is the third.
    let args = ["--listen", "127.0.0.1:0", "--timeout-ms", &timeout_ms];
    let server = Server::start("dashboard", &binary, &args, &[], &log, 3)?;
    let checks = resilience_checks(&server);
    server.stop();
    if checks.is_err() {
        eprintln!("e2e: the dashboard's log is in {}", log.display());
    }
    checks
}

/// The defaults: in a brownout a failed call is retried within the budget, and a backend that
/// fails every call is cut off by its breaker (`circuit_open` at once).
fn resilience_checks(server: &Server) -> Result<(), String> {
    const REQUESTS: usize = 40;
    let addr = server.addr;
    let backend = (server.lines.iter())
        .find_map(|line| line.strip_prefix("transactions backend: http://")?.split('/').next()?.parse().ok())
        .ok_or_else(|| format!("no transactions backend in the banner: {:?}", server.lines))?;
    let mut ok = 0;
    for _ in 0..REQUESTS {
        let reply = http_get(addr, "/dashboard/20?transactions_fail_rate=0.5")?;
        match reply.status {
            200 => ok += 1,
            _ => reply.expect(502, &[r#""source":"transactions""#, r#""kind":"status""#])?,
        }
    }
    let stats = http_get(backend, "/stats")?;
    let calls: usize = (stats.body.split(r#""started":"#).nth(1))
        .and_then(|rest| rest.split([',', '}']).next()?.parse().ok())
        .ok_or_else(|| format!("GET {backend}/stats: {}", stats.body))?;
    // Half of the first attempts fail; each is retried once while the budget's floor lasts
    // (50 retries in 10 s), so about three requests in four are answered.
    if calls <= REQUESTS || calls > REQUESTS + 50 || ok <= REQUESTS / 2 {
        return Err(format!("brownout: {ok} of {REQUESTS} answered with {calls} backend calls"));
    }
    eprintln!("e2e: brownout: {ok} of {REQUESTS} requests answered, {calls} calls to the transactions backend");
    // A backend failing every call: its breaker opens once half of the calls in its window
    // (at least 20) have failed, the brownout's included.
    let opened = (1..=60).try_fold(None, |opened, sent| match opened {
        Some(sent) => Ok(Some(sent)),
        None => {
            let reply = http_get(addr, "/dashboard/20?transactions_fail=1")?;
            reply.expect(502, &[r#""source":"transactions""#])?;
            Ok::<_, String>(reply.body.contains(r#""kind":"circuit_open""#).then_some(sent))
        }
    })?;
    let Some(opened) = opened else { return Err("the breaker did not open in 60 failing calls".to_owned()) };
    let reply = http_get(addr, "/dashboard/20")?;
    reply.expect(502, &[r#""kind":"circuit_open""#])?;
    eprintln!("e2e: the breaker opened at the failing request {opened}; the breaker and budget checks passed");
    Ok(())
}

/// With `--cache-ttl-ms 0 --stale-if-error-ms 600000`: a failing or late transactions backend
/// is answered by the last good section, listed under `stale`, for the same caller only.
fn brownout_checks(addr: SocketAddr) -> Result<(), String> {
    let reply = http_get(addr, "/dashboard/20")?;
    reply.expect(200, &[r#""transactions":{"#])?;
    if reply.body.contains(r#""stale""#) {
        return Err(format!("a fresh answer lists stale sections: {}", reply.body));
    }
    let reply = http_get(addr, "/dashboard/20?transactions_fail=1")?;
    reply.expect(200, &[r#""transactions":{"#, r#""stale":["transactions"]"#])?;
    let reply = http_get(addr, "/dashboard/20?transactions_delay_ms=3000")?;
    reply.expect(200, &[r#""transactions":{"#, r#""stale":["transactions"]"#])?;
    if reply.elapsed > TIMEOUT + MARGIN {
        return Err(format!("the stale answer came after {:?}, expected before the deadline", reply.elapsed));
    }
    let reply = http_get_with(addr, "/dashboard/20?transactions_fail=1", &[("authorization", "Bearer bob")])?;
    reply.expect(502, &[r#""source":"transactions""#])?;
    eprintln!("e2e: the brownout checks passed");
    Ok(())
}

fn checks(addr: SocketAddr) -> Result<(), String> {
    let reply = http_get(addr, "/healthz")?;
    reply.expect(200, &["ok"])?;

    let reply = http_get(addr, "/dashboard/42")?;
    reply.expect(200, &[r#""profile":{"#, r#""transactions":{"#, r#""balance":"#, r#""offers":["#])?;
    if reply.header("content-type") != Some("application/json") {
        return Err(format!("content-type {:?}, expected application/json", reply.header("content-type")));
    }

    let reply = http_get(addr, "/dashboard/42?offers_fail=1")?;
    reply.expect(200, &[r#""profile":{"#, r#""offers":[]"#])?;

    let reply = http_get_with(addr, "/dashboard/42", &[("accept", "application/x-ndjson")])?;
    reply.expect(200, &[r#"{"section":"profile","status":"ok""#, r#""section":"offers""#, r#"{"outcome":"ok"}"#])?;
    if reply.header("content-type") != Some("application/x-ndjson") {
        return Err(format!("content-type {:?}, expected application/x-ndjson", reply.header("content-type")));
    }

    let reply = http_get(addr, "/dashboard/42?profile_fail=1")?;
    reply.expect(502, &[r#""source":"profile""#, r#""kind":"status""#, r#""error":"#])?;

    let reply = http_get(addr, "/dashboard/42?transactions_delay_ms=3000")?;
    reply.expect(504, &[r#""source":null"#, r#""kind":"timeout""#, r#""pending":["transactions"]"#])?;
    if reply.elapsed < TIMEOUT || reply.elapsed > TIMEOUT + MARGIN {
        return Err(format!("the 504 came after {:?}, expected {TIMEOUT:?} + at most {MARGIN:?}", reply.elapsed));
    }
    eprintln!("e2e: all checks passed");
    Ok(())
}

impl Reply {
    /// Checks the status and that the body contains every one of `parts`, and prints the step.
    fn expect(&self, status: u16, parts: &[&str]) -> Result<(), String> {
        let shown = |body: &str| match body.char_indices().nth(300) {
            Some((end, _)) => format!("{}...", &body[..end]),
            None => body.to_owned(),
        };
        if self.status != status {
            return Err(format!(
                "GET {}: status {}, expected {status}: {}",
                self.target,
                self.status,
                shown(&self.body)
            ));
        }
        if let Some(missing) = parts.iter().find(|part| !self.body.contains(*part)) {
            return Err(format!("GET {}: no {missing} in {}", self.target, shown(&self.body)));
        }
        eprintln!("e2e: GET {} -> {} in {:?}: {}", self.target, self.status, self.elapsed, shown(&self.body));
        Ok(())
    }
}

/// `GET target`, 10 s at most, so a hung server fails the check instead of CI.
fn http_get(addr: SocketAddr, target: &str) -> Result<Reply, String> {
    http_get_with(addr, target, &[])
}

/// [`http_get`] with extra request headers.
fn http_get_with(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Result<Reply, String> {
    get(addr, target, headers, Duration::from_secs(10))
}

/// Where cargo puts its builds: `CARGO_TARGET_DIR`, or `target/` in the workspace root.
pub(crate) fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}
