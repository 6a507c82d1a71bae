//! The brownout benchmark of `cargo xtask bench` (issue 20): the dashboard binary's breaker,
//! retry budget and retries against its built-in demo backends on loopback, side by side with
//! the same dashboard with the retries unbudgeted and with every policy off. Std only.
//!
//! One dashboard process serves only its demo backends; each measured dashboard is another
//! process pointed at them (`--profile-url`, `--transactions-url`, no offers), fresh for each
//! run so that no breaker or budget carries over. Two scenarios:
//!
//! - **Brownout**: the transactions backend answers 503 to half of its calls
//!   (`?transactions_fail_rate=0.5`). A closed loop of [`CONNECTIONS`] keep-alive connections
//!   sends a fixed number of requests; the transactions backend's own count of the requests it
//!   received (`GET /stats`, before and after) gives the upstream attempts per request.
//! - **Down**: the transactions backend is down (its URL is a closed port: connections are
//!   refused). The breaker is opened by a first burst of requests, then one connection sends
//!   batches alternately to that dashboard and to the same dashboard whose transactions backend
//!   answers, and the request p99s are compared; then the same down backend with every policy
//!   off, and a backend that accepts connections and never answers.
//!
//! Every process and thread it starts is stopped before it returns; every loop is bounded in
//! count and in time.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::cargo;
use crate::e2e::target_dir;
use crate::server::Server;

/// Client connections of the brownout run, one thread each.
const CONNECTIONS: usize = 8;
/// Read, write and connect timeout of one request: a hung server fails the request.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest a run may take, whatever its count.
const RUN_LIMIT: Duration = Duration::from_secs(60);
/// The largest response accepted.
const MAX_RESPONSE: usize = 1 << 20;
/// The query of a brownout request.
const BROWNOUT: &str = "?transactions_fail_rate=0.5";

/// The three configurations compared: a name for the report and the dashboard's flags.
const VARIANTS: [(&str, &[&str]); 3] = [
    ("policies on (the defaults: breaker 50 %, budget 10 % and at least 5/s over 10 s, `--retry-attempts 2`)", &[]),
    ("retries unbudgeted (`--retry-budget-percent off`)", &["--retry-budget-percent", "off"]),
    (
        "policies off (`--breaker-failure-rate off --retry-budget-percent off --retry-attempts 1`)",
        &["--breaker-failure-rate", "off", "--retry-budget-percent", "off", "--retry-attempts", "1"],
    ),
];

/// How many requests each part sends.
#[derive(Clone, Copy, Debug)]
struct Plan {
    /// Requests of one brownout run.
    brownout: usize,
    /// Rounds of the down scenario, each a batch to either dashboard.
    rounds: usize,
    /// Requests per batch.
    batch: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self { brownout: 2_000, rounds: 6, batch: 250 }
        } else {
            Self { brownout: 6_000, rounds: 20, batch: 250 }
        }
    }
}

/// Builds the dashboard, runs both scenarios and answers the report's section.
pub(crate) fn bench(quick: bool) -> Result<String, String> {
    let plan = Plan::new(quick);
    cargo(&["build", "--release", "-p", "dashboard"])?;
    let exe = target_dir().join("release").join(format!("dashboard{}", std::env::consts::EXE_SUFFIX));
    let log = |name: &str| target_dir().join(format!("bench-brownout-{name}.log"));
    let quiet = [("RUST_LOG", "warn")];
    let backends = Server::start("backends", &exe, &["--listen", "127.0.0.1:0"], &quiet, &log("backends"), 3)?;
    let template = |service: &str| {
        backends.lines.iter().find_map(|line| {
            let (name, rest) = line.split_once(" backend: ")?;
            (name.trim() == service).then(|| rest.split(' ').next().unwrap_or_default().to_owned())
        })
    };
    let (Some(profile), Some(transactions)) = (template("profile"), template("transactions")) else {
        return Err(format!("no demo backend URLs in the dashboard's banner: {:?}", backends.lines));
    };
    let transactions_addr = backend_addr(&transactions)?;
    let start = |name: &'static str, transactions: &str, flags: &[&str]| {
        let args = ["--listen", "127.0.0.1:0", "--profile-url", &profile, "--transactions-url", transactions];
        let args = [&args[..], &["--offers-url", "none"], flags].concat();
        Server::start(name, &exe, &args, &quiet, &log(name), 1)
    };

    let mut brownout = Vec::new();
    for (variant, flags) in VARIANTS {
        let dashboard = start("brownout", &transactions, flags)?;
        let before = started(transactions_addr)?;
        let run = closed_loop(dashboard.addr, BROWNOUT, plan.brownout)?;
        let attempts = started(transactions_addr)? - before;
        eprintln!("bench brownout: {variant}: {attempts} attempts, {run}");
        brownout.push((variant, attempts, run));
        dashboard.stop();
    }

    // Down: a port nobody listens on, and a listener that never answers.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| format!("bind: {error}"))?;
        listener.local_addr().map_err(|error| format!("bind: {error}"))?
    };
    let down_url = format!("http://{closed}/transactions/{{id}}");
    let open = start("down", &down_url, &[])?;
    let healthy = start("healthy", &transactions, &[])?;
    let opened = open_breaker(open.addr)?;
    let (mut open_samples, mut healthy_samples) = (Samples::default(), Samples::default());
    for _ in 0..plan.rounds {
        open_samples.extend(sequential(open.addr, "", plan.batch)?);
        healthy_samples.extend(sequential(healthy.addr, "", plan.batch)?);
    }
    open.stop();
    healthy.stop();
    let off = start("down-off", &down_url, VARIANTS[2].1)?;
    let off_samples = sequential(off.addr, "", plan.batch * plan.rounds / 5)?;
    off.stop();
    let hang = Hang::start()?;
    let hang_url = format!("http://{}/transactions/{{id}}", hang.addr);
    let hanging = start("hanging", &hang_url, &[])?;
    let hanging_run = closed_loop(hanging.addr, "", 3 * CONNECTIONS)?;
    hanging.stop();
    // The same backend, each attempt with its own timeout: the breaker counts it.
    let cut = start("hanging-cut", &hang_url, &["--attempt-timeout-ms", &ATTEMPT_TIMEOUT_MS.to_string()])?;
    let cut_run = closed_loop(cut.addr, "", plan.batch)?;
    cut.stop();
    hang.stop();
    backends.stop();

    let mut out = String::from("## brownout: the dashboard's breaker, budget and retries (issue 20)\n\n");
    let _ = write!(
        out,
        "`cargo xtask bench --brownout` (also part of `cargo xtask bench`): the release dashboard binary against \
         its built-in demo backends (another dashboard process) on 127.0.0.1, no offers source, a 1 s deadline; \
         each configuration a fresh process. Upstream attempts are the transactions backend's own count of the \
         requests it received.\n\n"
    );
    brownout_table(&brownout, plan, &mut out);
    let down = Down {
        opened,
        open: open_samples,
        healthy: healthy_samples,
        off: off_samples,
        hanging: hanging_run,
        cut: cut_run,
    };
    down_table(&down, plan, &mut out);
    Ok(out)
}

/// The brownout rows and the target's verdict.
fn brownout_table(rows: &[(&str, usize, Run)], plan: Plan, out: &mut String) {
    let _ = writeln!(
        out,
        "| brownout: transactions answers 503 to half its calls (`{BROWNOUT}`); {} requests, {CONNECTIONS} \
         keep-alive connections | transactions attempts | per request | 200 | 502 (`status`) | 502 (`circuit_open`) | req/s |",
        plan.brownout
    );
    out.push_str("|---|---|---|---|---|---|---|\n");
    for (variant, attempts, run) in rows {
        let _ = writeln!(
            out,
            "| {variant} | {attempts} | {:.3} | {} | {} | {} | {:.0} |",
            *attempts as f64 / run.requests().max(1) as f64,
            run.ok,
            run.failed,
            run.circuit_open,
            run.requests() as f64 / run.took.as_secs_f64().max(1e-9),
        );
    }
    if let Some((_, attempts, run)) = rows.first() {
        let per_request = *attempts as f64 / run.requests().max(1) as f64;
        let met = if per_request <= 1.1 { "met" } else { "**not met**" };
        let _ = writeln!(out, "\nPolicies on: {per_request:.3} attempts per request (target: at most 1.1): {met}.\n");
    }
}

/// What the down scenario measured.
#[derive(Debug)]
struct Down {
    /// Requests it took to open the breaker.
    opened: usize,
    open: Samples,
    healthy: Samples,
    off: Samples,
    hanging: Run,
    /// The hanging backend with `--attempt-timeout-ms`.
    cut: Run,
}

/// The per-attempt timeout of the hanging backend that the breaker cuts off.
const ATTEMPT_TIMEOUT_MS: u64 = 100;

fn down_table(down: &Down, plan: Plan, out: &mut String) {
    let _ = writeln!(
        out,
        "| transactions down (connections refused); one keep-alive connection, {} batches of {} alternating \
         between the first two | requests | p50 | p99 | answers |",
        2 * plan.rounds,
        plan.batch
    );
    out.push_str("|---|---|---|---|---|\n");
    let mut row = |name: &str, samples: &Samples| {
        let _ = writeln!(
            out,
            "| {name} | {} | {:.3} ms | {:.3} ms | {} |",
            samples.latencies.len(),
            ms(samples.percentile(0.5)),
            ms(samples.percentile(0.99)),
            samples.answers(),
        );
    };
    row("down, breaker open (the defaults; it opened after the first requests)", &down.open);
    row("transactions answering (the same flags): the other sources' p99", &down.healthy);
    row("down, policies off (every request tries to connect)", &down.off);
    for (name, run) in [
        ("hanging (accepts, never answers), the defaults", &down.hanging),
        (&*format!("hanging, `--attempt-timeout-ms {ATTEMPT_TIMEOUT_MS}`"), &down.cut),
    ] {
        let _ = writeln!(
            out,
            "| {name} | {} | - | {:.0} ms (slowest) | {} 504 or 502 (`timeout`), {} 502 (`circuit_open`) in {:.2?} |",
            run.requests(),
            ms(run.slowest),
            run.failed,
            run.circuit_open,
            run.took,
        );
    }
    let delta = ms(down.open.percentile(0.99)) - ms(down.healthy.percentile(0.99));
    let met = if delta <= 1.0 { "met" } else { "**not met**" };
    let _ = writeln!(
        out,
        "\nThe breaker opened after {} requests. Breaker open minus transactions answering: {delta:+.3} ms at p99 \
         (target: at most +1 ms): {met}. With the defaults a backend that hangs is not cut off: the dashboard's HTTP \
         sources have the deadline as their timeout, the deadline ends each call, and a breaker does not count the \
         deadline as the source's failure, so every request waits for the deadline (504). With \
         `--attempt-timeout-ms`, each attempt fails as the backend's own timeout, which the breaker counts: after \
         its first calls every request is `circuit_open` at once.\n",
        down.opened
    );
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// `host:port` of a URL template `http://host:port/...`.
fn backend_addr(template: &str) -> Result<SocketAddr, String> {
    let rest = template.strip_prefix("http://").unwrap_or(template);
    let authority = rest.split('/').next().unwrap_or_default();
    authority.parse().map_err(|_| format!("no address in the backend URL {template}"))
}

/// The requests a demo backend has started, from its `GET /stats`.
fn started(backend: SocketAddr) -> Result<usize, String> {
    let mut client = Client::connect(backend).map_err(|error| format!("{backend}: {error}"))?;
    let (status, body) = client.get(backend, "/stats").map_err(|error| format!("GET {backend}/stats: {error}"))?;
    let number = body.split("\"started\":").nth(1).map(|rest| rest.chars().take_while(char::is_ascii_digit));
    match (status, number.map(String::from_iter).and_then(|digits| digits.parse().ok())) {
        (200, Some(started)) => Ok(started),
        _ => Err(format!("GET {backend}/stats answered {status}: {body}")),
    }
}

/// Sends requests until the dashboard answers `circuit_open` (200 at most); how many it took.
fn open_breaker(addr: SocketAddr) -> Result<usize, String> {
    let mut client = Client::connect(addr).map_err(|error| format!("{addr}: {error}"))?;
    for sent in 1..=200 {
        let (_, body) = client.get(addr, "/dashboard/1").map_err(|error| format!("{addr}: {error}"))?;
        if body.contains("\"kind\":\"circuit_open\"") {
            return Ok(sent);
        }
    }
    Err(format!("{addr}: the breaker did not open in 200 requests to a backend that is down"))
}

/// Latencies and answers of requests sent one after another.
#[derive(Debug, Default)]
struct Samples {
    latencies: Vec<Duration>,
    ok: usize,
    circuit_open: usize,
    failed: usize,
}

impl Samples {
    fn extend(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.ok += other.ok;
        self.circuit_open += other.circuit_open;
        self.failed += other.failed;
    }

    fn percentile(&self, q: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
        sorted.get(index).copied().unwrap_or_default()
    }

    fn answers(&self) -> String {
        let parts = [(self.ok, "200"), (self.failed, "502 (`connect`)"), (self.circuit_open, "502 (`circuit_open`)")];
        let parts: Vec<String> =
            parts.iter().filter(|(count, _)| *count > 0).map(|(count, what)| format!("{count} {what}")).collect();
        parts.join(", ")
    }
}

/// `count` requests (at most [`RUN_LIMIT`]) over one keep-alive connection, one after another.
fn sequential(addr: SocketAddr, query: &str, count: usize) -> Result<Samples, String> {
    let mut client = Client::connect(addr).map_err(|error| format!("{addr}: {error}"))?;
    let mut samples = Samples { latencies: Vec::with_capacity(count), ..Samples::default() };
    let limit = Instant::now() + RUN_LIMIT;
    for i in 0..count {
        if Instant::now() >= limit {
            break;
        }
        let begun = Instant::now();
        let (status, body) = client
            .get(addr, &format!("/dashboard/user-{}{query}", i % 1_000))
            .map_err(|error| format!("{addr}: {error}"))?;
        samples.latencies.push(begun.elapsed());
        match status {
            200 => samples.ok += 1,
            _ if body.contains("\"kind\":\"circuit_open\"") => samples.circuit_open += 1,
            _ => samples.failed += 1,
        }
    }
    Ok(samples)
}

/// What a closed-loop run saw.
#[derive(Debug, Default)]
struct Run {
    ok: usize,
    circuit_open: usize,
    /// Any other answer (a 502 with another kind, a 504).
    failed: usize,
    /// Requests that got no answer (an I/O error or a timeout).
    errors: usize,
    slowest: Duration,
    took: Duration,
}

impl Run {
    fn requests(&self) -> usize {
        self.ok + self.circuit_open + self.failed + self.errors
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests in {:.2?}: {} ok, {} circuit_open, {} other failures, {} errors",
            self.requests(),
            self.took,
            self.ok,
            self.circuit_open,
            self.failed,
            self.errors
        )
    }
}

/// `count` requests with `query` over [`CONNECTIONS`] keep-alive connections, each sending its
/// next request when the previous one is answered; [`RUN_LIMIT`] at most.
fn closed_loop(addr: SocketAddr, query: &str, count: usize) -> Result<Run, String> {
    let started = Instant::now();
    let limit = started + RUN_LIMIT;
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|index| {
            let query = query.to_owned();
            let share = count / CONNECTIONS + usize::from(index < count % CONNECTIONS);
            std::thread::spawn(move || {
                let mut run = Run::default();
                let mut client = None;
                for i in 0..share {
                    if Instant::now() >= limit {
                        break;
                    }
                    let begun = Instant::now();
                    let answer = match client.take().map_or_else(|| Client::connect(addr), Ok) {
                        Ok(mut connected) => {
                            let target = format!("/dashboard/user-{}{query}", (index * 7_919 + i) % 1_000);
                            let answer = connected.get(addr, &target);
                            if answer.is_ok() {
                                client = Some(connected);
                            }
                            answer
                        }
                        Err(error) => Err(error),
                    };
                    run.slowest = run.slowest.max(begun.elapsed());
                    match answer {
                        Ok((200, _)) => run.ok += 1,
                        Ok((_, body)) if body.contains("\"kind\":\"circuit_open\"") => run.circuit_open += 1,
                        Ok(_) => run.failed += 1,
                        Err(_) => run.errors += 1,
                    }
                }
                run
            })
        })
        .collect();
    let mut total = Run::default();
    for thread in threads {
        let run = thread.join().map_err(|_| "a brownout client thread panicked".to_owned())?;
        total.ok += run.ok;
        total.circuit_open += run.circuit_open;
        total.failed += run.failed;
        total.errors += run.errors;
        total.slowest = total.slowest.max(run.slowest);
    }
    total.took = started.elapsed();
    if total.errors > 0 {
        return Err(format!("{addr}: {} requests got no answer ({total})", total.errors));
    }
    Ok(total)
}

/// A keep-alive HTTP/1.1 client reading responses by `Content-Length`.
#[derive(Debug)]
struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(Self { stream, buf: Vec::with_capacity(8 * 1024) })
    }

    /// `GET target`: the status and the body.
    fn get(&mut self, addr: SocketAddr, target: &str) -> io::Result<(u16, String)> {
        // One write, one segment: `write!` on the stream would send each piece on its own.
        self.stream.write_all(format!("GET {target} HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())?;
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let head_end = loop {
            if let Some(end) = self.buf.windows(4).position(|window| window == b"\r\n\r\n") {
                break end;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        let status = head.split(' ').nth(1).and_then(|code| code.parse().ok()).ok_or_else(|| invalid("status"))?;
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then(|| value.trim().parse::<usize>().ok())?
            })
            .ok_or_else(|| invalid("no content-length"))?;
        if length > MAX_RESPONSE {
            return Err(invalid("response too large"));
        }
        while self.buf.len() < head_end + 4 + length {
            self.fill()?;
        }
        let body = String::from_utf8_lossy(&self.buf[head_end + 4..head_end + 4 + length]).into_owned();
        self.buf.drain(..head_end + 4 + length);
        Ok((status, body))
    }

    fn fill(&mut self) -> io::Result<()> {
        if self.buf.len() > MAX_RESPONSE {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "response too large"));
        }
        let mut chunk = [0; 8 * 1024];
        match self.stream.read(&mut chunk)? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            read => {
                self.buf.extend_from_slice(&chunk[..read]);
                Ok(())
            }
        }
    }
}

/// A backend that accepts connections and never answers, until stopped; it holds at most
/// [`Hang::MAX_HELD`] connections.
#[derive(Debug)]
struct Hang {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Hang {
    const MAX_HELD: usize = 1_024;

    fn start() -> Result<Self, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|error| format!("bind: {error}"))?;
        let addr = listener.local_addr().map_err(|error| format!("bind: {error}"))?;
        listener.set_nonblocking(true).map_err(|error| format!("bind: {error}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) if held.len() < Self::MAX_HELD => held.push(stream),
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Self { addr, stop, thread })
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_address_comes_from_its_template() {
        let template = "http://127.0.0.1:4242/transactions/{id}?delay_ms={transactions_delay_ms}";
        assert_eq!(backend_addr(template), Ok(SocketAddr::from(([127, 0, 0, 1], 4242))));
        assert!(backend_addr("http://backend/{id}").is_err());
    }

    #[test]
    fn percentiles_round_up_to_a_sample() {
        let latencies = (1..=100).map(Duration::from_millis).collect();
        let samples = Samples { latencies, ..Samples::default() };
        assert_eq!(samples.percentile(0.99), Duration::from_millis(99));
        assert_eq!(samples.percentile(0.5), Duration::from_millis(50));
        assert_eq!(Samples::default().percentile(0.99), Duration::ZERO);
    }

    #[test]
    fn a_response_is_read_by_its_length_and_the_next_one_after_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut chunk = [0; 1024];
            while !request.ends_with(b"\r\n\r\n") {
                let read = stream.read(&mut chunk).unwrap();
                assert!(read > 0, "the client closed before its request was complete");
                request.extend_from_slice(&chunk[..read]);
            }
            let two = "HTTP/1.1 502 Bad Gateway\r\ncontent-length: 25\r\n\r\n{\"kind\":\"circuit_open\"}\n\n\
                       HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
            stream.write_all(two.as_bytes()).unwrap();
            let _ = stream.read(&mut chunk).unwrap();
        });
        let mut client = Client::connect(addr).unwrap();
        assert_eq!(client.get(addr, "/a").unwrap(), (502, "{\"kind\":\"circuit_open\"}\n\n".to_owned()));
        assert_eq!(client.get(addr, "/b").unwrap(), (200, "{}".to_owned()));
        drop(client);
        server.join().unwrap();
    }
}
