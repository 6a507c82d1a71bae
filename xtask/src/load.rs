//! The HTTP benchmark of `cargo xtask bench`: the dashboard (muster) against `http-baseline`,
//! the same service written by hand with `tokio::try_join!` and a pooled client, hyper-util's
//! (the leanest) and reqwest's (what most teams write, and what DESIGN names), all release
//! builds, under the same closed-loop load on loopback. Std only.
//!
//! Four processes serve: a dashboard started only for its built-in demo backends, and the three
//! measured services, all pointed at those backends (`--profile-url`, `--transactions-url`),
//! so the CPU time and memory of a measured process are those of the aggregating service alone.
//! The load generator holds [`CONNECTIONS`] keep-alive HTTP/1.1 connections, one per thread,
//! each sending its next request as soon as the previous answer is read; per run it warms up,
//! then measures throughput, latency percentiles and the server's CPU time per request (from
//! `/proc/<pid>/stat`) and resident memory (`/proc/<pid>/status`). Runs alternate between the
//! services, round after round, and the report gives the median of the rounds.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cargo;
use crate::e2e::target_dir;
use crate::server::Server;

/// Client connections, one per thread.
const CONNECTIONS: usize = 32;
/// Read, write and connect timeout: a hung server fails a request, not the bench.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// A bound on the requests of one connection in one run, on top of the time bound.
const MAX_REQUESTS_PER_CONNECTION: u64 = 10_000_000;
/// After this many errors in one run a connection stops.
const MAX_ERRORS_PER_CONNECTION: u64 = 1_000;
/// The longest response head line accepted.
const MAX_LINE: usize = 16 * 1024;
/// The backend delays measured: the label and the dashboard request's query string.
const DELAYS: [(&str, &str); 2] = [("0 ms", ""), ("5 ms", "?profile_delay_ms=5&transactions_delay_ms=5")];

/// How long each run lasts and how many rounds there are.
#[derive(Clone, Copy, Debug)]
struct Plan {
    warmup: Duration,
    measure: Duration,
    rounds: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self { warmup: Duration::from_secs(1), measure: Duration::from_secs(3), rounds: 2 }
        } else {
            Self { warmup: Duration::from_secs(2), measure: Duration::from_secs(10), rounds: 3 }
        }
    }
}

/// The measured services: the dashboard, then the baselines, with their names in the report.
const SERVICES: [&str; 3] = ["dashboard (muster)", "baseline: hyper + try_join!", "baseline: reqwest + try_join!"];

/// Builds the services, runs the load against each, alternately, and answers the markdown
/// section of the report. Every server started is killed before it returns, whatever happens.
pub(crate) fn http_bench(quick: bool) -> Result<String, String> {
    let plan = Plan::new(quick);
    cargo(&["build", "--release", "-p", "dashboard", "-p", "http-baseline"])?;
    let release = target_dir().join("release");
    let exe = |name: &str| release.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));

    let quiet = [("RUST_LOG", "warn")];
    // The dashboard as in production: one access log line per request (to a file here).
    let logged = [("RUST_LOG", "info")];
    let log = |name: &str| target_dir().join(format!("bench-http-{name}.log"));
    let backends =
        Server::start("backends", &exe("dashboard"), &["--listen", "127.0.0.1:0"], &quiet, &log("backends"), 3)?;
    let template = |service: &str| {
        backends.lines.iter().find_map(|line| {
            let (name, rest) = line.split_once(" backend: ")?;
            (name.trim() == service).then(|| rest.split(' ').next().unwrap_or_default().to_owned())
        })
    };
    let (Some(profile), Some(transactions)) = (template("profile"), template("transactions")) else {
        return Err(format!("no demo backend URLs in the dashboard's banner: {:?}", backends.lines));
    };
    let args = ["--listen", "127.0.0.1:0", "--profile-url", &profile, "--transactions-url", &transactions];
    // The baseline has no offers source: neither has the dashboard here.
    let dashboard_args = [&args[..], &["--offers-url", "none"]].concat();
    let reqwest_args = [&args[..], &["--client", "reqwest"]].concat();
    let servers = [
        Server::start("dashboard", &exe("dashboard"), &dashboard_args, &logged, &log("dashboard"), 1)?,
        Server::start("baseline", &exe("http-baseline"), &args, &quiet, &log("baseline"), 1)?,
        Server::start("baseline-reqwest", &exe("http-baseline"), &reqwest_args, &quiet, &log("baseline-reqwest"), 1)?,
    ];

    let mut results = Vec::new();
    for (delay, query) in DELAYS {
        for server in &servers {
            check(server, query)?;
        }
        let mut runs: [Vec<Load>; SERVICES.len()] = Default::default();
        for round in 1..=plan.rounds {
            for (server, runs) in servers.iter().zip(&mut runs) {
                let load = run_load(server.addr, query, "", server.pid(), plan)?;
                eprintln!("bench http: delay {delay}, round {round}/{}, {}: {load}", plan.rounds, server.name);
                runs.push(load);
            }
        }
        results.push((delay, runs.map(|runs| Summary::median(&runs))));
    }
    // Streaming sections: the same dashboard, asked for NDJSON, against itself asked for JSON.
    let dashboard = &servers[0];
    let (mut plain, mut streamed) = (Vec::new(), Vec::new());
    for round in 1..=plan.rounds {
        plain.push(run_load(dashboard.addr, DELAYS[1].1, "", dashboard.pid(), plan)?);
        let load = run_load(dashboard.addr, DELAYS[1].1, STREAMED, dashboard.pid(), plan)?;
        eprintln!("bench http: streamed, round {round}/{}: {load}", plan.rounds);
        streamed.push(load);
    }
    let streaming = (Summary::median(&plain), Summary::median(&streamed));
    for server in servers {
        server.stop();
    }
    backends.stop();
    Ok(table(&results, plan) + &streaming_table(&streaming))
}

/// The header that asks the dashboard for streamed sections.
const STREAMED: &str = "accept: application/x-ndjson\r\n";

/// The streamed dashboard against the plain one.
fn streaming_table((plain, streamed): &(Summary, Summary)) -> String {
    let cpu = match (plain.cpu_us, streamed.cpu_us) {
        (Some(plain), Some(streamed)) => format!("{:.2}", streamed / plain.max(1e-12)),
        _ => "-".to_owned(),
    };
    format!(
        "\nStreaming sections (`accept: application/x-ndjson`, 5 ms backends) against the same dashboard answering \
         one JSON body: {:.2}x the throughput, {cpu}x the CPU per request.\n",
        streamed.rps / plain.rps.max(1e-12)
    )
}

/// The report's section: one row per service and delay, and the muster / baseline ratios.
fn table(results: &[(&str, [Summary; SERVICES.len()])], plan: Plan) -> String {
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mut out =
        String::from("## http: the dashboard vs a hand-written axum + `try_join!` service (hyper, reqwest)\n\n");
    let _ = write!(
        out,
        "Closed loop on loopback: {CONNECTIONS} keep-alive HTTP/1.1 connections (one std thread each, \
         `GET /dashboard/<id>` with varying ids), {} s measured after {} s of warm-up per run, \
         {} rounds alternating the dashboard and the baselines; medians of the rounds. The services are \
         release builds with a 1 s deadline, fed by the same demo backends running in another \
         process, so CPU time (utime + stime of the service over the measured window, per \
         successful request) and RSS (at the end of the run) are the aggregating service's own. \
         The dashboard runs with `RUST_LOG=info` (one JSON access log line per request, to a file; it also makes \
         request ids and sends the deadline header); the baselines log nothing. Load generator, \
         backends and services share this machine's {cores} cores. \"delay\" is the demo backends' \
         delay (`?profile_delay_ms=5&transactions_delay_ms=5`). Ratios are muster / baseline \
         (throughput: above 1 is better; latency, CPU, RSS: below 1 is better).\n\n",
        plan.measure.as_secs(),
        plan.warmup.as_secs(),
        plan.rounds,
    );
    out.push_str("| service | delay | req/s | p50 | p99 | CPU µs/request | of which kernel | RSS MiB | errors |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    let number =
        |value: Option<f64>, decimals: usize| value.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"));
    for (delay, rows) in results {
        for (name, row) in SERVICES.iter().zip(rows) {
            let _ = writeln!(
                out,
                "| {name} | {delay} | {:.0} | {:.2} ms | {:.2} ms | {} | {} | {} | {:.0} |",
                row.rps,
                row.p50_ms,
                row.p99_ms,
                number(row.cpu_us, 1),
                number(row.kernel_us, 1),
                number(row.rss_mib, 1),
                row.errors,
            );
        }
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".to_owned(),
        };
        let (muster, baselines) = (&rows[0], &rows[1..]);
        for (name, baseline) in SERVICES[1..].iter().zip(baselines) {
            let client = name.trim_start_matches("baseline: ").split(' ').next().unwrap_or_default();
            let _ = writeln!(
                out,
                "| **muster / {client}** | {delay} | {} | {} | {} | {} | {} | {} | |",
                ratio(Some(muster.rps), Some(baseline.rps)),
                ratio(Some(muster.p50_ms), Some(baseline.p50_ms)),
                ratio(Some(muster.p99_ms), Some(baseline.p99_ms)),
                ratio(muster.cpu_us, baseline.cpu_us),
                ratio(muster.kernel_us, baseline.kernel_us),
                ratio(muster.rss_mib, baseline.rss_mib),
            );
        }
    }
    out.push('\n');
    out
}

/// What one run measured.
#[derive(Debug)]
struct Load {
    /// Successful (200) responses completed in the measured window.
    requests: u64,
    /// Failed requests (I/O error, timeout or a status other than 200) in the window.
    errors: u64,
    window: Duration,
    /// Latencies of the successful requests, sorted.
    latencies: Vec<Duration>,
    /// The server's CPU time over the window, if `/proc` could tell: all of it, and the part
    /// spent in the kernel (system time).
    cpu: Option<(Duration, Duration)>,
    /// The server's resident memory at the end, in KiB, if `/proc` could tell.
    rss_kib: Option<u64>,
}

impl Load {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64()
    }

    fn percentile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let index = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[index]
    }

    fn cpu_us(&self) -> Option<f64> {
        self.per_request(self.cpu?.0)
    }

    fn kernel_us(&self) -> Option<f64> {
        self.per_request(self.cpu?.1)
    }

    fn per_request(&self, time: Duration) -> Option<f64> {
        (self.requests > 0).then(|| time.as_secs_f64() * 1e6 / self.requests as f64)
    }
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} req/s, p50 {:.2?}, p99 {:.2?}, {} errors, CPU {} µs/request, RSS {} KiB",
            self.rps(),
            self.percentile(0.5),
            self.percentile(0.99),
            self.errors,
            self.cpu_us().map_or_else(|| "-".to_owned(), |us| format!("{us:.1}")),
            self.rss_kib.map_or_else(|| "-".to_owned(), |kib| kib.to_string()),
        )
    }
}

/// The medians over the rounds of one service at one delay.
#[derive(Debug)]
struct Summary {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: Option<f64>,
    kernel_us: Option<f64>,
    rss_mib: Option<f64>,
    errors: f64,
}

impl Summary {
    fn median(runs: &[Load]) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let all = |values: Vec<Option<f64>>| values.into_iter().collect::<Option<Vec<f64>>>().map(median);
        Self {
            rps: median(runs.iter().map(Load::rps).collect()),
            p50_ms: median(runs.iter().map(|run| ms(run.percentile(0.5))).collect()),
            p99_ms: median(runs.iter().map(|run| ms(run.percentile(0.99))).collect()),
            cpu_us: all(runs.iter().map(Load::cpu_us).collect()),
            kernel_us: all(runs.iter().map(Load::kernel_us).collect()),
            rss_mib: all(runs.iter().map(|run| run.rss_kib.map(|kib| kib as f64 / 1024.0)).collect()),
            errors: median(runs.iter().map(|run| run.errors as f64).collect()),
        }
    }
}

/// The median; the mean of the middle two for an even count; 0 for none.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// One run: [`CONNECTIONS`] client threads against `addr` for the warm-up and the measured
/// window, and the server's CPU time over the window. Bounded in time (each thread stops at
/// the window's end, its last request within [`IO_TIMEOUT`]) and in count.
fn run_load(addr: SocketAddr, query: &str, headers: &'static str, pid: u32, plan: Plan) -> Result<Load, String> {
    let started = Instant::now();
    let from = started + plan.warmup;
    let until = from + plan.measure;
    let threads: Vec<_> = (0..CONNECTIONS)
        .map(|index| {
            let query = query.to_owned();
            std::thread::spawn(move || client(addr, &query, headers, index, from, until))
        })
        .collect();
    let ticks = clock_ticks();
    std::thread::sleep(from.saturating_duration_since(Instant::now()));
    let cpu_before = cpu_ticks(pid);
    std::thread::sleep(until.saturating_duration_since(Instant::now()));
    let cpu_after = cpu_ticks(pid);
    let rss_kib = rss_kib(pid);
    let mut load = Load { requests: 0, errors: 0, window: plan.measure, latencies: Vec::new(), cpu: None, rss_kib };
    for thread in threads {
        let client = thread.join().map_err(|_| "a load client thread panicked".to_owned())?;
        load.requests += client.latencies.len() as u64;
        load.errors += client.errors;
        load.latencies.extend(client.latencies);
    }
    load.latencies.sort_unstable();
    if let (Some((user_before, kernel_before)), Some((user_after, kernel_after))) = (cpu_before, cpu_after) {
        let time = |ticks_spent: u64| Duration::from_secs_f64(ticks_spent as f64 / ticks as f64);
        let kernel = kernel_after.saturating_sub(kernel_before);
        load.cpu = Some((time(user_after.saturating_sub(user_before) + kernel), time(kernel)));
    }
    if load.requests == 0 {
        return Err(format!("no successful request to {addr} in the measured window ({} errors)", load.errors));
    }
    Ok(load)
}

/// What one client thread saw in the measured window.
#[derive(Debug, Default)]
struct ClientRun {
    latencies: Vec<Duration>,
    errors: u64,
}

/// A closed loop of keep-alive requests until `until`, reconnecting after an error or a
/// `Connection: close`; only the requests that complete in `from..until` are recorded.
fn client(addr: SocketAddr, query: &str, headers: &str, index: usize, from: Instant, until: Instant) -> ClientRun {
    let mut run = ClientRun::default();
    let mut connection: Option<(TcpStream, Reader<TcpStream>)> = None;
    let mut all_errors = 0;
    let mut request = String::new();
    for sent in 0..MAX_REQUESTS_PER_CONNECTION {
        if Instant::now() >= until || all_errors >= MAX_ERRORS_PER_CONNECTION {
            break;
        }
        let id = (index as u64 * 7_919 + sent) % 1_000;
        request.clear();
        let _ = write!(request, "GET /dashboard/user-{id}{query} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n");
        let begun = Instant::now();
        let outcome = match connection.take().map_or_else(|| connect(addr), Ok) {
            Ok((mut stream, mut reader)) => {
                let answer = stream.write_all(request.as_bytes()).and_then(|()| reader.response());
                if answer.as_ref().is_ok_and(|response| !response.close) {
                    connection = Some((stream, reader));
                }
                answer.map(|response| response.status)
            }
            Err(error) => Err(error),
        };
        let done = Instant::now();
        let ok = matches!(outcome, Ok(200));
        if !ok {
            all_errors += 1;
            if outcome.is_err() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        if done >= from && done <= until {
            if ok {
                run.latencies.push(done - begun);
            } else {
                run.errors += 1;
            }
        }
    }
    run
}

fn connect(addr: SocketAddr) -> io::Result<(TcpStream, Reader<TcpStream>)> {
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let reader = Reader::new(stream.try_clone()?);
    Ok((stream, reader))
}

/// The head of a response, once its body has been read past.
#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    /// The server will close the connection (`Connection: close`, or a body up to the end).
    close: bool,
}

/// A buffered HTTP/1.1 response reader: status line, headers, and a body by `Content-Length`,
/// chunked, or up to the end of the stream.
#[derive(Debug)]
struct Reader<R> {
    inner: R,
    buf: Vec<u8>,
    pos: usize,
}

impl<R: Read> Reader<R> {
    fn new(inner: R) -> Self {
        Self { inner, buf: Vec::with_capacity(16 * 1024), pos: 0 }
    }

    /// Reads more bytes after the unread ones; the end of the stream is an error.
    fn fill(&mut self) -> io::Result<()> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let len = self.buf.len();
        self.buf.resize(len + 8 * 1024, 0);
        let read = self.inner.read(&mut self.buf[len..]);
        self.buf.truncate(len + *read.as_ref().unwrap_or(&0));
        match read? {
            0 => Err(io::ErrorKind::UnexpectedEof.into()),
            _ => Ok(()),
        }
    }

    fn line(&mut self) -> io::Result<String> {
        loop {
            let unread = &self.buf[self.pos..];
            if let Some(end) = unread.windows(2).position(|pair| pair == b"\r\n") {
                let line = String::from_utf8_lossy(&unread[..end]).into_owned();
                self.pos += end + 2;
                return Ok(line);
            }
            if unread.len() > MAX_LINE {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "response line too long"));
            }
            self.fill()?;
        }
    }

    fn skip(&mut self, mut count: usize) -> io::Result<()> {
        loop {
            let unread = self.buf.len() - self.pos;
            if unread >= count {
                self.pos += count;
                return Ok(());
            }
            count -= unread;
            self.pos = self.buf.len();
            self.fill()?;
        }
    }

    fn response(&mut self) -> io::Result<Response> {
        let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        let status_line = self.line()?;
        let mut words = status_line.split(' ');
        let status = match (words.next(), words.next().and_then(|code| code.parse::<u16>().ok())) {
            (Some(version), Some(status)) if version.starts_with("HTTP/1.") => status,
            _ => return Err(invalid("bad status line")),
        };
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            let line = self.line()?;
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else { return Err(invalid("bad header line")) };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().map_err(|_| invalid("bad content-length"))?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            }
        }
        if chunked {
            loop {
                let line = self.line()?;
                let size = line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16).map_err(|_| invalid("bad chunk size"))?;
                if size == 0 {
                    while !self.line()?.is_empty() {}
                    break;
                }
                self.skip(size + 2)?;
            }
        } else if let Some(length) = length {
            self.skip(length)?;
        } else if !(status < 200 || status == 204 || status == 304) {
            // No length: the body runs to the end of the stream.
            close = true;
            self.pos = self.buf.len();
            loop {
                match self.fill() {
                    Ok(()) => self.pos = self.buf.len(),
                    Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(error) => return Err(error),
                }
            }
        }
        Ok(Response { status, close })
    }
}

/// `utime + stime` of process `pid`, in clock ticks, from `/proc/<pid>/stat`.
/// The CPU time of process `pid` so far, in clock ticks: user and kernel (utime, stime).
fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    parse_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn parse_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    // `pid (comm) state ppid ...`: the command may hold spaces and parentheses, so count the
    // fields after the last `)`; utime and stime are fields 14 and 15 of the line.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some((fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?))
}

/// Clock ticks per second (`getconf CLK_TCK`), 100 if that cannot be read.
fn clock_ticks() -> u64 {
    let output = Command::new("getconf").arg("CLK_TCK").output().ok();
    let ticks = output.and_then(|output| String::from_utf8(output.stdout).ok()?.trim().parse().ok());
    ticks.filter(|ticks| *ticks > 0).unwrap_or(100)
}

/// The resident memory of process `pid` in KiB (`VmRSS` in `/proc/<pid>/status`).
fn rss_kib(pid: u32) -> Option<u64> {
    parse_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// One request to `server` must answer 200 before it is measured.
fn check(server: &Server, query: &str) -> Result<(), String> {
    let target = format!("/dashboard/42{query}");
    let error = |error: io::Error| format!("{}: GET {target}: {error}", server.name);
    let (mut stream, mut reader) = connect(server.addr).map_err(error)?;
    write!(stream, "GET {target} HTTP/1.1\r\nHost: {}\r\n\r\n", server.addr).map_err(error)?;
    match reader.response().map_err(error)? {
        Response { status: 200, .. } => Ok(()),
        Response { status, .. } => Err(format!("{}: GET {target} answered {status}, expected 200", server.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(raw: &str) -> Vec<io::Result<Response>> {
        let mut reader = Reader::new(raw.as_bytes());
        let mut responses = Vec::new();
        loop {
            let response = reader.response();
            let end = response.is_err();
            responses.push(response);
            if end || reader.pos == reader.buf.len() && reader.fill().is_err() {
                return responses;
            }
        }
    }

    #[test]
    fn responses_are_read_by_length_chunks_or_to_the_end() {
        let raw = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello\
                   HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n\
                   HTTP/1.1 204 No Content\r\n\r\n\
                   HTTP/1.1 504 Gateway Timeout\r\nConnection: close\r\ncontent-length: 2\r\n\r\nno\
                   HTTP/1.0 200 OK\r\n\r\nall the rest";
        let responses: Vec<Response> = read(raw).into_iter().map(|response| response.expect("a response")).collect();
        assert_eq!(
            responses,
            [
                Response { status: 200, close: false },
                Response { status: 502, close: false },
                Response { status: 204, close: false },
                Response { status: 504, close: true },
                Response { status: 200, close: true },
            ]
        );
    }

    #[test]
    fn truncated_or_garbled_responses_are_errors() {
        for raw in [
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel",
            "SSH-2.0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(read(raw).pop().is_some_and(|last| last.is_err()), "{raw:?} was accepted");
        }
    }

    #[test]
    fn proc_stat_and_status_are_parsed() {
        let stat = "1234 (tokio (worker) 1) S 1 1234 1234 0 -1 4194560 2000 0 0 0 250 50 0 0 20 0 3 0 100";
        assert_eq!(parse_cpu_ticks(stat), Some((250, 50)));
        assert_eq!(parse_cpu_ticks("garbage"), None);
        assert_eq!(parse_rss_kib("Name:\tdashboard\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\n"), Some(12_345));
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0]), 2.5);
        assert_eq!(median(Vec::new()), 0.0);
    }

    #[test]
    fn own_process_stats_are_readable_on_linux() {
        if cfg!(target_os = "linux") {
            let pid = std::process::id();
            assert!(cpu_ticks(pid).is_some());
            assert!(rss_kib(pid).is_some_and(|kib| kib > 0));
        }
    }
}
