//! The HTTP benchmark of `cargo xtask bench`: the dashboard (muster) against `http-baseline`,
//! the same service written by hand with `tokio::try_join!` and a pooled client, hyper-util's
//! (the leanest) and reqwest's (what most teams write, and what DESIGN names), all release
//! builds, under the same closed-loop load on loopback.
//!
//! Four processes serve: a dashboard started only for its built-in demo backends, and the three
//! measured services, all pointed at those backends (`--profile-url`, `--transactions-url`),
//! so the CPU time and memory of a measured process are those of the aggregating service alone.
//! The load is wrk's (Debian's `wrk`, installed when missing, as DESIGN names it): [`CONNECTIONS`]
//! keep-alive HTTP/1.1 connections on [`THREADS`] threads, each sending its next request as soon
//! as the previous answer is read. Per run it warms up, then measures throughput and latency
//! percentiles (wrk's), and the server's CPU time per request, user and kernel (from
//! `/proc/<pid>/stat`), and resident memory (`/proc/<pid>/status`). Runs alternate between the
//! services, round after round, and the report gives the median of the rounds.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::cargo;
use crate::e2e::target_dir;
use crate::server::{Server, get, rss_kib};

/// wrk's connections, and its threads.
const CONNECTIONS: usize = 32;
const THREADS: usize = 2;
/// wrk's request timeout: a hung server fails a request, not the bench.
const TIMEOUT: &str = "5s";
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
    if !crate::bench::install("wrk", "wrk") {
        return Err("the HTTP benchmark needs wrk (Debian's `wrk`), which is not installed and could not be".to_owned());
    }
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
                let load = run_load(server.addr, query, None, server.pid(), plan)?;
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
        plain.push(run_load(dashboard.addr, DELAYS[1].1, None, dashboard.pid(), plan)?);
        let load = run_load(dashboard.addr, DELAYS[1].1, Some(STREAMED), dashboard.pid(), plan)?;
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
const STREAMED: &str = "accept: application/x-ndjson";

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
        "Closed loop on loopback: wrk, {CONNECTIONS} keep-alive HTTP/1.1 connections on {THREADS} threads \
         (`GET /dashboard/42`), {} s measured after {} s of warm-up per run, \
         {} rounds alternating the dashboard and the baselines; medians of the rounds. The services are \
         release builds with a 1 s deadline, fed by the same demo backends running in another \
         process, so CPU time (utime + stime of the service over the measured window, per \
         successful request; \"of which kernel\": stime) and RSS (at the end of the run) are the aggregating \
         service's own; latencies are wrk's percentiles. \
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
#[derive(Debug, Default, PartialEq)]
struct Load {
    /// Successful (2xx or 3xx) responses completed in the measured window.
    requests: u64,
    /// Failed requests (other statuses, and wrk's connect, read, write and timeout errors).
    errors: u64,
    window: Duration,
    p50: Duration,
    p99: Duration,
    /// The server's CPU time over the window, if `/proc` could tell: all of it, and the part
    /// spent in the kernel (system time).
    cpu: Option<(Duration, Duration)>,
    /// The server's resident memory at the end, in KiB, if `/proc` could tell.
    rss_kib: Option<u64>,
}

impl Load {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64().max(1e-9)
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
        let us = |value: Option<f64>| value.map_or_else(|| "-".to_owned(), |us| format!("{us:.1}"));
        write!(
            f,
            "{:.0} req/s, p50 {:.2?}, p99 {:.2?}, {} errors, CPU {} µs/request ({} in the kernel), RSS {} KiB",
            self.rps(),
            self.p50,
            self.p99,
            self.errors,
            us(self.cpu_us()),
            us(self.kernel_us()),
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
            p50_ms: median(runs.iter().map(|run| ms(run.p50)).collect()),
            p99_ms: median(runs.iter().map(|run| ms(run.p99)).collect()),
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

/// One run: wrk against `addr` for the warm-up, then for the measured window, with the
/// server's CPU time over the window. Bounded in time by wrk's duration and request timeout.
fn run_load(addr: SocketAddr, query: &str, header: Option<&str>, pid: u32, plan: Plan) -> Result<Load, String> {
    wrk(addr, query, header, plan.warmup)?;
    let ticks = clock_ticks();
    let cpu_before = cpu_ticks(pid);
    let output = wrk(addr, query, header, plan.measure)?;
    let cpu_after = cpu_ticks(pid);
    let mut load = parse_wrk(&output).ok_or_else(|| format!("wrk's output could not be read:\n{output}"))?;
    load.rss_kib = rss_kib(pid);
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

/// wrk's report of one run of `duration` against `/dashboard/42{query}` on `addr`.
fn wrk(addr: SocketAddr, query: &str, header: Option<&str>, duration: Duration) -> Result<String, String> {
    let mut command = Command::new("wrk");
    command.args(["--threads", &THREADS.to_string(), "--connections", &CONNECTIONS.to_string()]);
    command.args(["--duration", &format!("{}s", duration.as_secs().max(1)), "--timeout", TIMEOUT, "--latency"]);
    if let Some(header) = header {
        command.args(["--header", header]);
    }
    command.arg(format!("http://{addr}/dashboard/42{query}"));
    let output = command.stdin(std::process::Stdio::null()).output().map_err(|error| format!("wrk: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        return Err(format!("wrk failed ({}): {stdout}{}", output.status, String::from_utf8_lossy(&output.stderr)));
    }
    Ok(stdout)
}

/// The requests, errors, window and latency percentiles of wrk's report (`--latency`); `None`
/// when a line the bench needs is missing.
fn parse_wrk(output: &str) -> Option<Load> {
    let mut load = Load::default();
    let (mut total, mut statuses, mut p50, mut p99) = (None, 0, None, None);
    for line in output.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            // `19091 requests in 2.00s, 7.98MB read`
            [count, "requests", "in", window, ..] => {
                total = Some(count.parse::<u64>().ok()?);
                load.window = duration(window.trim_end_matches(','))?;
            }
            ["50%", latency] => p50 = duration(latency),
            ["99%", latency] => p99 = duration(latency),
            // `Non-2xx or 3xx responses: 12`
            ["Non-2xx", "or", "3xx", "responses:", count] => statuses = count.parse::<u64>().ok()?,
            // `Socket errors: connect 0, read 0, write 0, timeout 0`
            ["Socket", "errors:", rest @ ..] => {
                for count in rest.iter().skip(1).step_by(2) {
                    load.errors += count.trim_end_matches(',').parse::<u64>().ok()?;
                }
            }
            _ => {}
        }
    }
    // wrk counts the answers with other statuses among its requests, and the socket errors apart.
    load.requests = total?.checked_sub(statuses)?;
    load.errors += statuses;
    (load.p50, load.p99) = (p50?, p99?);
    Some(load)
}

/// wrk's durations: `812.00us`, `3.35ms`, `1.02s`, `2.00m`.
fn duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().ok()?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

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

/// One request to `server` must answer 200 before it is measured.
fn check(server: &Server, query: &str) -> Result<(), String> {
    let reply = get(server.addr, &format!("/dashboard/42{query}"), &[], Duration::from_secs(5))?;
    match reply.status {
        200 => Ok(()),
        status => Err(format!("{}: GET {} answered {status}, expected 200", server.name, reply.target)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::parse_rss_kib;

    const REPORT: &str = "Running 3s test @ http://127.0.0.1:40015/dashboard/42
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.50ms    2.09ms  24.79ms   84.71%
    Req/Sec     4.79k   662.63     6.08k    80.00%
  Latency Distribution
     50%  812.00us
     75%    4.15ms
     90%    5.15ms
     99%   11.81ms
  19091 requests in 3.00s, 7.98MB read
  Socket errors: connect 1, read 2, write 0, timeout 4
  Non-2xx or 3xx responses: 91
Requests/sec:   6363.54
Transfer/sec:      2.66MB
";

    #[test]
    fn wrk_reports_are_read() {
        let load = parse_wrk(REPORT).expect("a report");
        assert_eq!(
            load,
            Load {
                requests: 19_000,
                errors: 98,
                window: Duration::from_secs(3),
                p50: Duration::from_micros(812),
                p99: Duration::from_micros(11_810),
                cpu: None,
                rss_kib: None,
            }
        );
        let clean: String = REPORT
            .lines()
            .filter(|line| !line.contains("errors") && !line.contains("Non-2xx"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(parse_wrk(&clean).map(|load| (load.requests, load.errors)), Some((19_091, 0)));
    }

    #[test]
    fn a_wrk_report_without_its_figures_is_refused() {
        for missing in ["requests in", "50%", "99%"] {
            let cut: String =
                REPORT.lines().filter(|line| !line.contains(missing)).map(|line| format!("{line}\n")).collect();
            assert_eq!(parse_wrk(&cut), None, "without {missing:?}");
        }
        assert_eq!(duration("2.5m"), Some(Duration::from_secs(150)));
        assert_eq!(duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(duration("7"), None);
        assert_eq!(duration("7ns"), None);
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
