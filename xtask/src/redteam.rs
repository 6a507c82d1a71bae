//! `cargo xtask redteam`: the red team's findings against the release binary (issue 22,
//! section 2), each reproduced again against `target/release/dashboard` on 127.0.0.1, and a
//! markdown table of what they measure now: the finding and its fix, the red team's figure,
//! the figure measured now and the test that pins the fix. The table is printed and written
//! to `target/redteam-report.md`; `cargo xtask redteam 1 4` runs only those rows.
//!
//! Std and `socket2` (for a slow reader's small receive buffer). The dashboards are started on `127.0.0.1:0` and killed by their pid whatever
//! happens; the backends a finding needs (a backend answering a ~1 MB body, one recording the
//! request heads it gets) are std threads on 127.0.0.1, stopped before the row ends. Memory is
//! the process's `VmRSS`, descriptors the entries of `/proc/<pid>/fd`. Every loop is bounded
//! in count and in time; where the red team's figure would take too long to reproduce in full,
//! the row says how it was scaled.

use std::fmt::Write as _;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::cargo;
use crate::e2e::target_dir;
use crate::server::{Server, get, parse_status, rss_kib};

/// One finding of the issue: what it said and what now pins it.
#[derive(Debug)]
struct Finding {
    /// The finding, and what was done about it.
    finding: &'static str,
    /// The red team's figure, as the issue gives it.
    figure: &'static str,
    /// The test that pins the fix.
    test: &'static str,
    measure: fn(&Bench) -> Result<Measured, String>,
}

/// The figure measured now, and whether it is what the fix promises.
#[derive(Debug)]
struct Measured {
    text: String,
    holds: bool,
}

const FINDINGS: [Finding; 11] = [
    Finding {
        finding: "`/healthz` under a flood of reconnecting slow-head sockets (fix: at the connection cap the oldest \
                  connection without a complete head is shed once 50 ms old; new connections wait in a backlog of \
                  4,096, not 128)",
        figure: "2 of 16 probes answered, 33 MiB",
        test: "`limits.rs`: `healthz_answers_every_probe_under_a_flood_of_slow_heads`, \
               `at_the_cap_the_oldest_connection_without_a_complete_head_makes_room`, \
               `the_listener_queues_a_flood_of_connections_while_nothing_accepts`",
        measure: flood,
    },
    Finding {
        finding: "slow readers pin whole answers (fix: `--response-timeout-ms`, 30 s, a process-wide \
                  `--max-response-buffer-mib`, 64, and each connection's kernel send buffer capped at 256 KiB)",
        figure: "300 readers of 4 KiB / 3 s held 761 MiB, no time bound",
        test: "`limits.rs`: `a_slow_reader_is_cut_off_at_the_response_timeout`, \
               `slow_readers_hold_at_most_the_response_buffer_budget`, \
               `an_answer_small_enough_for_the_kernel_still_counts_against_the_budget_until_read`",
        measure: slow_readers,
    },
    Finding {
        finding: "descriptors left after 200 clients that never read their ~2 MiB answers (explained: the \
                  backend pool's idle connections, at most 64 per host for 30 s; README)",
        figure: "179 descriptors against 11 at start, RSS 133 MiB",
        test: "`limits.rs`: `a_client_that_does_not_read_pins_at_most_one_response_and_is_closed_at_the_write_timeout` \
               (no test of the pool's bound in the binary)",
        measure: descriptors_left,
    },
    Finding {
        finding: "a stalled stderr blocks exit (fix: the last stderr write waits 0.5 s at most; signals on a \
                  thread of their own)",
        figure: "SIGTERM never exits; a second SIGTERM is ignored",
        test: "`stderr.rs`: `a_stalled_stderr_blocks_neither_the_exit_nor_a_second_signal`",
        measure: stalled_stderr,
    },
    Finding {
        finding: "the descriptor budget is never checked (fix: the soft limit raised to the hard one; caps that \
                  do not fit are lowered with a warning)",
        figure: "552 × 502 `connect` in a 1,000-request burst (soft limit 1,024)",
        test: "`process.rs`: `the_soft_descriptor_limit_is_raised_to_the_hard_one`, \
               `caps_that_do_not_fit_the_descriptor_limit_are_lowered_and_a_burst_gets_no_connect_errors`",
        measure: descriptor_budget,
    },
    Finding {
        finding: "the demo backends record every request (fix: the latest 1,024 only)",
        figure: "7 → 118 MiB over 100,000 requests",
        test: "`demo.rs` (unit): `the_records_are_bounded_to_the_latest`",
        measure: demo_memory,
    },
    Finding {
        finding: "credentials go to every backend (fix: allow-lists per source; offers gets \
                  `--offers-forward-headers`, `none` by default)",
        figure: "offers got the user's `authorization`",
        test: "`forwarding.rs`: `credentials_go_only_to_the_sources_that_need_them`",
        measure: credentials,
    },
    Finding {
        finding: "a streamed request that failed is logged wrong (fix: its access line is written when the \
                  stream ends)",
        figure: "logged status 200, `elapsed_ms` 0",
        test: "`process.rs`: `streamed_requests_are_logged_when_they_end_with_their_real_outcome_and_time`",
        measure: streamed_log,
    },
    Finding {
        finding: "shutdown waits for connections without a complete request (fix: they are closed at once)",
        figure: "waited out the idle or write timeout",
        test: "`process.rs`: `sigterm_answers_what_is_in_flight_and_exits_within_the_grace_whatever_the_clients_hold`",
        measure: shutdown_idle,
    },
    Finding {
        finding: "the exit code with requests unanswered after the grace (fix: 1)",
        figure: "0",
        test: "`process.rs`: `sigterm_answers_what_is_in_flight_and_exits_within_the_grace_whatever_the_clients_hold`",
        measure: exit_code,
    },
    Finding {
        finding: "request heads over 64 KiB (fix: refused, 431, as the README says)",
        figure: "heads up to ~111 KiB passed",
        test: "`limits.rs`: `request_heads_over_64_kib_are_refused`",
        measure: head_size,
    },
];

/// Builds the release binary, measures every finding asked for (all without arguments, or the
/// rows numbered in `args`), prints the table and writes it to `target/redteam-report.md`.
/// Fails if a row could not be measured or does not hold.
pub(crate) fn run(args: &[String]) -> Result<(), String> {
    let rows = selected_rows(args, FINDINGS.len())?;
    cargo(&["build", "--release", "-p", "dashboard"])?;
    let bench = Bench { exe: target_dir().join("release").join(format!("dashboard{}", std::env::consts::EXE_SUFFIX)) };
    let started = Instant::now();
    let mut measured = Vec::new();
    for &row in &rows {
        let finding = &FINDINGS[row - 1];
        eprintln!("\nredteam: {row}. {}", finding.finding);
        let began = Instant::now();
        let result = (finding.measure)(&bench);
        match &result {
            Ok(measured) => eprintln!("redteam: {row}. measured in {:.1?}: {}", began.elapsed(), measured.text),
            Err(error) => eprintln!("redteam: {row}. failed after {:.1?}: {error}", began.elapsed()),
        }
        measured.push((row, result));
    }
    let report = report(&measured, started.elapsed());
    println!("{report}");
    let path = target_dir().join("redteam-report.md");
    std::fs::write(&path, &report).map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    eprintln!("redteam: the report is in {}", path.display());
    let failed: Vec<String> = (measured.iter())
        .filter(|(_, result)| !result.as_ref().is_ok_and(|measured| measured.holds))
        .map(|(row, _)| row.to_string())
        .collect();
    match failed.len() {
        0 => Ok(()),
        n => Err(format!(
            "not what the fix promises in {} {} (see the table)",
            if n == 1 { "row" } else { "rows" },
            failed.join(", ")
        )),
    }
}

/// The row numbers asked for: every row without arguments, else each argument, 1 to `count`.
fn selected_rows(args: &[String], count: usize) -> Result<Vec<usize>, String> {
    if args.is_empty() {
        return Ok((1..=count).collect());
    }
    args.iter()
        .map(|arg| match arg.parse::<usize>() {
            Ok(row) if (1..=count).contains(&row) => Ok(row),
            _ => Err(format!("`redteam` takes row numbers from 1 to {count}, not `{arg}`")),
        })
        .collect()
}

/// The markdown report: one row per finding measured.
fn report(measured: &[(usize, Result<Measured, String>)], took: Duration) -> String {
    let cores = thread::available_parallelism().map_or(0, usize::from);
    let mut out = String::from("## The red team's findings against the release binary (issue 22, section 2)\n\n");
    let _ = write!(
        out,
        "`cargo xtask redteam`: each finding reproduced again against `target/release/dashboard` (default \
         features) on 127.0.0.1, the attacker and the backends it needs as std threads of the xtask, on this \
         machine's {cores} cores; {:.0} s in all. Memory is the dashboard's RSS (`VmRSS`), descriptors the \
         entries of `/proc/<pid>/fd`; \"✗\" marks a figure that is not what the fix promises.\n\n",
        took.as_secs_f64()
    );
    out.push_str("| finding | the red team's figure | measured now | the test that pins it |\n");
    out.push_str("|---|---|---|---|\n");
    for (row, result) in measured {
        let finding = &FINDINGS[row - 1];
        let now = match result {
            Ok(Measured { text, holds: true }) => text.clone(),
            Ok(Measured { text, holds: false }) => format!("✗ {text}"),
            Err(error) => format!("✗ not measured: {error}"),
        };
        let cell = |text: &str| text.replace('|', "\\|").replace('\n', " ");
        let _ = writeln!(
            out,
            "| {row}. {} | {} | {} | {} |",
            cell(finding.finding),
            cell(finding.figure),
            cell(&now),
            cell(finding.test)
        );
    }
    out
}

/// What every row needs: the release binary.
#[derive(Debug)]
struct Bench {
    exe: PathBuf,
}

/// The longest the clients of a row may take to connect, all together (a connection the
/// listen queue dropped is retried by the kernel after 1 s).
const CONNECT_PHASE: Duration = Duration::from_secs(10);

/// The log level of the dashboards whose log is not looked at.
const QUIET: [(&str, &str); 1] = [("RUST_LOG", "warn")];

impl Bench {
    /// The dashboard with `args` after `--listen 127.0.0.1:0`, its stderr in
    /// `target/redteam-NAME.log`.
    fn start(&self, name: &'static str, args: &[&str], env: &[(&str, &str)]) -> Result<Server, String> {
        let args = [&["--listen", "127.0.0.1:0"][..], args].concat();
        Server::start(name, &self.exe, &args, env, &log(name), 1)
    }
}

fn log(name: &str) -> PathBuf {
    target_dir().join(format!("redteam-{name}.log"))
}

// 1. A flood of slow heads.

/// Slow-head sockets of the flood, as the issue's.
const FLOOD_SOCKETS: usize = 2_000;
/// Threads that hold them, each its share, non-blocking.
const FLOOD_THREADS: usize = 8;
/// The flood runs this long before the first probe: every socket connected.
const FLOOD_WARMUP: Duration = Duration::from_secs(2);
/// Probes, one every [`PROBE_EVERY`], each answered within [`PROBE_TIMEOUT`] or failed, as a
/// kubelet's liveness probe (`timeoutSeconds: 1`).
const PROBES: usize = 16;
const PROBE_EVERY: Duration = Duration::from_millis(500);
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The head every slow socket sends, never completed.
const SLOW_HEAD: &[u8] = b"GET /dashboard/1 HTTP/1.1\r\nhost: x\r\nx-slow: ";

/// What the flood's threads counted.
#[derive(Debug, Default)]
struct FloodCounts {
    connections: AtomicUsize,
    closed: AtomicUsize,
    refused: AtomicUsize,
}

fn flood(bench: &Bench) -> Result<Measured, String> {
    let server = bench.start("flood", &[], &QUIET)?;
    let (addr, pid) = (server.addr, server.pid());
    let overflows = listen_overflows();
    let rss = Sampler::start(pid);
    let counts = Arc::new(FloodCounts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let until = Instant::now() + FLOOD_WARMUP + PROBE_EVERY * PROBES as u32 + Duration::from_secs(5);
    let flooders: Vec<JoinHandle<()>> = (0..FLOOD_THREADS)
        .map(|_| {
            let (counts, stop) = (counts.clone(), stop.clone());
            thread::spawn(move || hold_slow_heads(addr, FLOOD_SOCKETS / FLOOD_THREADS, &stop, until, &counts))
        })
        .collect();
    thread::sleep(FLOOD_WARMUP);
    let flood_began = Instant::now();
    let (mut answered, mut slowest, mut failures) = (0, Duration::ZERO, Vec::new());
    for _ in 0..PROBES {
        let begun = Instant::now();
        match get(addr, "/healthz", &[], PROBE_TIMEOUT) {
            Ok(reply) if reply.status == 200 && reply.body == "ok" => {
                answered += 1;
                slowest = slowest.max(begun.elapsed());
            }
            Ok(reply) => failures.push(format!("{} after {}", reply.status, millis(begun.elapsed()))),
            Err(error) => failures.push(format!("{} after {}", probe_error(&error), millis(begun.elapsed()))),
        }
        thread::sleep(PROBE_EVERY.saturating_sub(begun.elapsed()));
    }
    let probing = flood_began.elapsed();
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        let _ = flooder.join();
    }
    let rss = rss.stop();
    let overflows = listen_overflows().zip(overflows).map(|(after, before)| after.saturating_sub(before));
    server.stop();
    let connections = counts.connections.load(Ordering::Relaxed);
    let closed = counts.closed.load(Ordering::Relaxed);
    Ok(Measured {
        text: format!(
            "{answered} of {PROBES} probes answered (1 s timeout each; the slowest answered in {}{}) under {} \
             slow-head sockets that reconnect once closed: {} connections made, {} closed by the server in {:.0} s, \
             {} connections dropped by the kernel at a full listen queue (TcpExt `ListenOverflows`, machine-wide; \
             the dashboard listens with a backlog of 4,096); RSS peak {}",
            millis(slowest),
            if failures.is_empty() { String::new() } else { format!("; failed: {}", failures.join(", ")) },
            thousands(FLOOD_SOCKETS),
            thousands(connections),
            thousands(closed),
            (FLOOD_WARMUP + probing).as_secs_f64(),
            overflows.map_or_else(|| "?".to_owned(), |count| count.to_string()),
            mib(rss.peak()),
        ),
        holds: answered == PROBES,
    })
}

/// Holds `sockets` connections that each sent [`SLOW_HEAD`], reconnecting each as soon as the
/// server closes it (or answers it), until `stop` or `until`.
fn hold_slow_heads(addr: SocketAddr, sockets: usize, stop: &AtomicBool, until: Instant, counts: &FloodCounts) {
    let mut held: Vec<Option<TcpStream>> = (0..sockets).map(|_| None).collect();
    let mut buffer = [0; 1024];
    let over = || stop.load(Ordering::Relaxed) || Instant::now() >= until;
    // At most one pass per 10 ms until `until`: bounded in count too.
    let passes = until.saturating_duration_since(Instant::now()).as_millis() / 10 + 1;
    for _ in 0..passes {
        for slot in &mut held {
            if over() {
                return;
            }
            if let Some(stream) = slot {
                match stream.read(&mut buffer) {
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                    _ => {
                        *slot = None;
                        counts.closed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            match connect_slow_head(addr) {
                Ok(stream) => {
                    *slot = Some(stream);
                    counts.connections.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => drop(counts.refused.fetch_add(1, Ordering::Relaxed)),
            }
        }
        if over() {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Connections the kernel dropped at a full listen queue so far, on the whole machine
/// (`ListenOverflows` in `/proc/net/netstat`).
fn listen_overflows() -> Option<u64> {
    parse_netstat(&std::fs::read_to_string("/proc/net/netstat").ok()?, "TcpExt", "ListenOverflows")
}

/// A counter of `/proc/net/netstat`: a line of names after `group:`, then a line of values.
fn parse_netstat(netstat: &str, group: &str, name: &str) -> Option<u64> {
    let prefix = format!("{group}:");
    let mut lines = netstat.lines().filter(|line| line.starts_with(&prefix));
    let (names, values) = (lines.next()?, lines.next()?);
    let index = names.split_whitespace().position(|word| word == name)?;
    values.split_whitespace().nth(index)?.parse().ok()
}

/// A probe's error, short: what failed (the connect, the answer) and how.
fn probe_error(error: &str) -> String {
    error.strip_prefix("GET /healthz: ").unwrap_or(error).to_owned()
}

fn connect_slow_head(addr: SocketAddr) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(100))?;
    stream.set_write_timeout(Some(Duration::from_millis(100)))?;
    stream.write_all(SLOW_HEAD)?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

// 2. Slow readers.

/// Slow readers, each reading [`SLOW_READ`] bytes every [`SLOW_EVERY`], as the issue's, through
/// a [`SLOW_WINDOW_BYTES`] receive buffer: with the one the kernel sizes on its own (up to
/// `tcp_rmem`'s 32 MiB here), a whole answer moves into the reader's own kernel at once and
/// pins nothing of the server's.
const SLOW_READERS: usize = 300;
const SLOW_WINDOW_BYTES: usize = 16 * 1024;
const SLOW_READ: usize = 4 * 1024;
const SLOW_EVERY: Duration = Duration::from_secs(3);
/// How long they read: past the response timeout the dashboard runs with here, the time to
/// connect them all and make the answers, and a reader's 3 s between reads.
const SLOW_WINDOW: Duration = Duration::from_secs(25);
/// The response timeout here: the default 30 s scaled down to fit the window.
const SLOW_RESPONSE_TIMEOUT_MS: &str = "10000";
/// What the kernel may hold for one connection: the dashboard asks for a 128 KiB send buffer,
/// which Linux doubles.
const KERNEL_PER_CONNECTION: u64 = 256 * 1024;
/// The default response budget, and the answers' size.
const RESPONSE_BUDGET: usize = 64 << 20;
const ANSWER: usize = 2 * BIG_BODY;
/// The body of each big backend's answer: two make a dashboard answer of ~2 MB, as the
/// issue's; under the HTTP fetcher's 1 MiB cap on a backend body.
const BIG_BODY: usize = 1_000_000;

/// Two big backends (profile and transactions, two hosts), and the dashboard's flags for them.
fn big_backends() -> Result<(Backend, Backend), String> {
    let response = big_response(BIG_BODY);
    Ok((Backend::start(response.clone(), false)?, Backend::start(response, false)?))
}

fn big_args(profile: &Backend, transactions: &Backend) -> Vec<String> {
    vec![
        "--profile-url".into(),
        format!("http://{}/profile/{{id}}", profile.addr),
        "--transactions-url".into(),
        format!("http://{}/transactions/{{id}}", transactions.addr),
        "--offers-url".into(),
        "none".into(),
        // The backends' megabytes must not meet the 1 s deadline on a busy machine.
        "--timeout-ms".into(),
        "10000".into(),
    ]
}

/// One slow reader: what it read and how it ended.
#[derive(Debug)]
struct SlowReader {
    stream: TcpStream,
    sent: Instant,
    read: usize,
    /// The first bytes of the answer, for its status.
    first: Vec<u8>,
    next: Instant,
    ended: Option<Duration>,
}

fn slow_readers(bench: &Bench) -> Result<Measured, String> {
    let (profile, transactions) = big_backends()?;
    let mut args = big_args(&profile, &transactions);
    args.extend(["--response-timeout-ms".into(), SLOW_RESPONSE_TIMEOUT_MS.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = bench.start("slow-readers", &args, &QUIET)?;
    let (addr, pid) = (server.addr, server.pid());
    let rss = Sampler::start(pid);
    let began = Instant::now();
    let mut readers = Vec::new();
    for i in 0..SLOW_READERS {
        if began.elapsed() > CONNECT_PHASE {
            break;
        }
        let Ok(mut stream) = slow_reader(addr) else { continue };
        let head = format!("GET /dashboard/{i} HTTP/1.1\r\nhost: {addr}\r\n\r\n");
        if stream.write_all(head.as_bytes()).is_err() || stream.set_nonblocking(true).is_err() {
            continue;
        }
        let now = Instant::now();
        readers.push(SlowReader { stream, sent: now, read: 0, first: Vec::new(), next: now, ended: None });
    }
    let mut chunk = vec![0; SLOW_READ];
    let until = began + SLOW_WINDOW;
    while Instant::now() < until {
        let now = Instant::now();
        for reader in readers.iter_mut().filter(|reader| reader.ended.is_none() && reader.next <= now) {
            match reader.stream.read(&mut chunk) {
                Ok(0) => reader.ended = Some(reader.sent.elapsed()),
                Ok(n) => {
                    if reader.first.len() < 16 {
                        reader.first.extend_from_slice(&chunk[..n.min(16)]);
                    }
                    reader.read += n;
                    reader.next = now + SLOW_EVERY;
                }
                // Nothing yet (the answer is being made): try again at the next tick.
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => reader.ended = Some(reader.sent.elapsed()),
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
    // What the kernel holds for the dashboard's connections, at the end of the window.
    let kernel = tcp_sockets(addr.port());
    let rss = rss.stop();
    for reader in &readers {
        let _ = reader.stream.shutdown(std::net::Shutdown::Both);
    }
    thread::sleep(Duration::from_secs(2));
    let rss_gone = rss_kib(pid);
    server.stop();
    drop((profile, transactions));
    let status = |reader: &SlowReader| parse_status(&reader.first);
    let big: Vec<&SlowReader> = readers.iter().filter(|reader| status(reader) == Some(200)).collect();
    let refused = readers.iter().filter(|reader| status(reader) == Some(503)).count();
    let cut: Vec<Duration> = big.iter().filter_map(|reader| reader.ended).collect();
    let cut_text = match (cut.iter().min(), cut.iter().max()) {
        (Some(first), Some(last)) => format!(
            "{} of them cut off {:.0}-{:.0} s after their request (seen at the next read, up to 3 s late)",
            cut.len(),
            first.as_secs_f64(),
            last.as_secs_f64()
        ),
        _ => format!("none cut off in {} s", SLOW_WINDOW.as_secs()),
    };
    let held = rss.max_between(Duration::from_secs(10), SLOW_WINDOW);
    let kernel_text = match &kernel {
        Some(kernel) => format!(
            "; at {} s the kernel held {} in the send queues of the dashboard's {} sockets ({} of them closed by the dashboard)",
            SLOW_WINDOW.as_secs(),
            mib(Some(kernel.queued / 1024)),
            kernel.sockets,
            kernel.closing,
        ),
        None => String::new(),
    };
    Ok(Measured {
        text: format!(
            "{} readers: {} answered 200 (~2 MB each), {refused} refused (503, past the 64 MiB response budget); \
             {cut_text} (`--response-timeout-ms {SLOW_RESPONSE_TIMEOUT_MS}`: the 30 s default scaled to the window); \
             RSS peak {} (while the answers were made: the budget counts an answer once made), from 10 s on at \
             most {}, 2 s after the readers left {} (glibc keeps the freed heap){kernel_text}",
            readers.len(),
            big.len(),
            mib(rss.peak()),
            mib(held),
            mib(rss_gone),
        ),
        // What the fix promises: the budget refuses what it cannot hold, every answer it took is
        // cut off at the response timeout, and the kernel holds at most its capped send buffer.
        holds: !big.is_empty()
            && big.len() <= RESPONSE_BUDGET / ANSWER + 1
            && cut.len() == big.len()
            && kernel.is_some_and(|kernel| kernel.queued <= kernel.sockets as u64 * KERNEL_PER_CONNECTION),
    })
}

/// A connection to `addr` with a [`SLOW_WINDOW_BYTES`] receive buffer, set before it connects
/// so that the window it offers stays that small.
fn slow_reader(addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_recv_buffer_size(SLOW_WINDOW_BYTES)?;
    socket.connect_timeout(&addr.into(), Duration::from_secs(3))?;
    Ok(socket.into())
}

/// The TCP sockets of the local `port` (IPv4), as `/proc/net/tcp` lists them.
#[derive(Debug, Default, PartialEq, Eq)]
struct TcpSockets {
    sockets: usize,
    /// Bytes in their send queues.
    queued: u64,
    /// Sockets closed by their owner and not gone yet (FIN_WAIT1, FIN_WAIT2, CLOSING, LAST_ACK).
    closing: usize,
}

fn tcp_sockets(port: u16) -> Option<TcpSockets> {
    Some(parse_tcp_sockets(&std::fs::read_to_string("/proc/net/tcp").ok()?, port))
}

fn parse_tcp_sockets(table: &str, port: u16) -> TcpSockets {
    let mut found = TcpSockets::default();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state), Some(queues)) = (fields.get(1), fields.get(3), fields.get(4)) else { continue };
        let local_port = local.rsplit(':').next().and_then(|hex| u16::from_str_radix(hex, 16).ok());
        // A listening socket (0A) is not a connection.
        if local_port != Some(port) || *state == "0A" {
            continue;
        }
        found.sockets += 1;
        let tx = queues.split(':').next().and_then(|hex| u64::from_str_radix(hex, 16).ok());
        found.queued += tx.unwrap_or(0);
        if matches!(*state, "04" | "05" | "0B" | "09") {
            found.closing += 1;
        }
    }
    found
}

// 3. Descriptors left behind.

/// Clients that never read their answers, as the issue's.
const NON_READERS: usize = 200;
/// How long they stay: past the write timeout (5 s), which cuts them off.
const NON_READERS_STAY: Duration = Duration::from_secs(7);
/// How long to wait for the descriptors to come back: past the pool's idle timeout (30 s) and
/// its reaper's period.
const DESCRIPTORS_WAIT: Duration = Duration::from_secs(70);

fn descriptors_left(bench: &Bench) -> Result<Measured, String> {
    let (profile, transactions) = big_backends()?;
    let args = big_args(&profile, &transactions);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = bench.start("descriptors", &args, &QUIET)?;
    let (addr, pid) = (server.addr, server.pid());
    thread::sleep(Duration::from_millis(300));
    let (fds_start, rss_start) = (descriptors(pid), rss_kib(pid));
    let mut clients = Vec::new();
    let connecting = Instant::now();
    for i in 0..NON_READERS {
        if connecting.elapsed() > CONNECT_PHASE {
            break;
        }
        let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) else { continue };
        let head = format!("GET /dashboard/{i} HTTP/1.1\r\nhost: {addr}\r\n\r\n");
        if stream.write_all(head.as_bytes()).is_ok() {
            clients.push(stream);
        }
    }
    let sent = clients.len();
    thread::sleep(NON_READERS_STAY);
    let fds_held = descriptors(pid);
    drop(clients);
    thread::sleep(Duration::from_millis(500));
    let (fds_after, rss_after) = (descriptors(pid), rss_kib(pid));
    let gone = Instant::now();
    let mut later = (fds_after, Duration::ZERO);
    while gone.elapsed() < DESCRIPTORS_WAIT {
        thread::sleep(Duration::from_secs(1));
        later = (descriptors(pid), gone.elapsed());
        if later.0.zip(fds_start).is_some_and(|(now, start)| now <= start + 2) {
            break;
        }
    }
    let rss_later = rss_kib(pid);
    server.stop();
    drop((profile, transactions));
    let count = |fds: Option<usize>| fds.map_or_else(|| "?".to_owned(), |fds| fds.to_string());
    Ok(Measured {
        text: format!(
            "descriptors: {} at start, {} while the {sent} clients were held ({} s, past the 5 s write timeout), {} \
             just after they went away (the backend pool: at most 64 idle connections per host, two hosts here), {} \
             at {:.0} s (the pool's 30 s idle timeout); RSS {} → {} after → {} at the end",
            count(fds_start),
            count(fds_held),
            NON_READERS_STAY.as_secs(),
            count(fds_after),
            count(later.0),
            (later.1 + Duration::from_millis(500)).as_secs_f64(),
            mib(rss_start),
            mib(rss_after),
            mib(rss_later),
        ),
        holds: later.0.zip(fds_start).is_some_and(|(now, start)| now <= start + 2),
    })
}

// 4. A stalled stderr.

/// Requests sent to fill the stderr pipe and the logger's buffer (at `RUST_LOG=trace`, each
/// logs tens of lines), at most, and for at most [`STALL_LIMIT`].
const STALL_REQUESTS: usize = 4_000;
const STALL_LIMIT: Duration = Duration::from_secs(20);
/// How long an exit is waited for.
const EXIT_LIMIT: Duration = Duration::from_secs(15);

fn stalled_stderr(bench: &Bench) -> Result<Measured, String> {
    let trace = [("RUST_LOG", "trace")];
    // The first SIGTERM, nothing in flight.
    let mut dashboard = Proc::start(&bench.exe, &[], &trace, None)?;
    let sent = fill_stderr(dashboard.addr);
    let signalled = Instant::now();
    dashboard.signal("TERM")?;
    let first = dashboard.wait(EXIT_LIMIT).map(|status| (status, signalled.elapsed()));
    let unread = dashboard.unread_stderr();
    drop(dashboard);

    // A second SIGTERM, a request in flight for longer than the grace.
    let args = ["--timeout-ms", "30000", "--shutdown-grace-ms", "30000"];
    let mut dashboard = Proc::start(&bench.exe, &args, &trace, None)?;
    let addr = dashboard.addr;
    fill_stderr(addr);
    let slow = thread::spawn(move || get(addr, "/dashboard/2?profile_delay_ms=25000", &[], Duration::from_secs(30)));
    thread::sleep(Duration::from_millis(100));
    dashboard.signal("TERM")?;
    thread::sleep(Duration::from_millis(100));
    let signalled = Instant::now();
    dashboard.signal("TERM")?;
    let second = dashboard.wait(EXIT_LIMIT).map(|status| (status, signalled.elapsed()));
    drop(dashboard);
    let _ = slow.join();

    let exit = |exit: &Option<(ExitStatus, Duration)>| match exit {
        Some((status, after)) => format!("{} s ({})", seconds(*after), code(*status)),
        None => format!("not in {} s (killed)", EXIT_LIMIT.as_secs()),
    };
    Ok(Measured {
        text: format!(
            "SIGTERM to exit: {}; a second SIGTERM (a request in flight, 30 s grace) to exit: {} — stderr a pipe \
             nobody reads, filled by {} requests at `RUST_LOG=trace` (full: {} KiB unread in it at exit)",
            exit(&first),
            exit(&second),
            thousands(sent),
            unread / 1024,
        ),
        holds: first.is_some_and(|(_, after)| after <= Duration::from_secs(4))
            && second.is_some_and(|(_, after)| after <= Duration::from_secs(1)),
    })
}

/// Sends requests on 8 keep-alive connections until [`STALL_REQUESTS`] are answered or
/// [`STALL_LIMIT`] passes; how many were answered.
fn fill_stderr(addr: SocketAddr) -> usize {
    let until = Instant::now() + STALL_LIMIT;
    let threads: Vec<_> = (0..8)
        .map(|t| thread::spawn(move || keep_alive_requests(addr, t, STALL_REQUESTS / 8, until, &AtomicUsize::new(0))))
        .collect();
    threads.into_iter().map(|thread| thread.join().unwrap_or(0)).sum()
}

// 5. The descriptor budget.

/// The burst: requests at once, each holding its backends [`BURST_DELAY_MS`].
const BURST: usize = 1_000;
const BURST_DELAY_MS: u64 = 1_000;

fn descriptor_budget(bench: &Bench) -> Result<Measured, String> {
    let mut parts = Vec::new();
    let mut holds = true;
    let limits = [("soft", "soft limit 1,024", "-S -n 1024"), ("hard", "soft and hard limit 1,024", "-n 1024")];
    for (name, label, ulimit) in limits {
        let script = format!("ulimit {ulimit} && exec \"$0\" \"$@\"");
        let exe = bench.exe.to_string_lossy();
        let args = ["-c", &script, &exe, "--listen", "127.0.0.1:0", "--timeout-ms", "5000"];
        let log = log(&format!("descriptor-budget-{name}"));
        let server = Server::start("dashboard (ulimit)", Path::new("sh"), &args, &QUIET, &log, 1)?;
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap_or_default();
        let targets: Vec<String> =
            (0..BURST).map(|i| format!("/dashboard/{i}?profile_delay_ms={BURST_DELAY_MS}")).collect();
        let sampler = Sampler::start(server.pid());
        let answers = burst(server.addr, &targets, Duration::from_secs(30));
        let peak = sampler.stop().peak_descriptors();
        server.stop();
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        let mut counts = Counts::default();
        for answer in &answers {
            counts.add(answer.as_deref().map_err(String::as_str));
        }
        let (soft, hard) = open_files(&limits).unwrap_or_default();
        let lowered = match logged.lines().find(|line| line.contains("lowering the caps")) {
            Some(line) => format!(
                ", the caps lowered with a warning (`max_connections` {}, `max_in_flight` {})",
                json_number(line, "max_connections").map_or_else(|| "?".to_owned(), |n| n.to_string()),
                json_number(line, "max_in_flight").map_or_else(|| "?".to_owned(), |n| n.to_string()),
            ),
            None => String::new(),
        };
        holds &= counts.connect == 0;
        let peak = peak.map_or_else(|| "?".to_owned(), thousands);
        parts.push(format!(
            "{label}: the process ran with {soft}/{hard}{lowered}, at most {peak} descriptors open; {counts}"
        ));
    }
    Ok(Measured {
        text: format!(
            "{} requests at once (`?profile_delay_ms={BURST_DELAY_MS}`): {}",
            thousands(BURST),
            parts.join("; ")
        ),
        holds,
    })
}

/// The answers of a burst, by kind.
#[derive(Debug, Default)]
struct Counts {
    ok: usize,
    connect: usize,
    bad_gateway: usize,
    unavailable: usize,
    other: usize,
    /// Requests with no answer, by why.
    unanswered: std::collections::BTreeMap<String, usize>,
}

impl Counts {
    fn add(&mut self, answer: Result<&[u8], &str>) {
        let answer = match answer {
            Ok(answer) => answer,
            Err(why) => {
                *self.unanswered.entry(why.to_owned()).or_default() += 1;
                return;
            }
        };
        let text = String::from_utf8_lossy(answer);
        match parse_status(answer) {
            Some(200) => self.ok += 1,
            Some(502) if text.contains(r#""kind":"connect""#) => self.connect += 1,
            Some(502) => self.bad_gateway += 1,
            Some(503) => self.unavailable += 1,
            Some(_) => self.other += 1,
            None => *self.unanswered.entry("not HTTP".to_owned()).or_default() += 1,
        }
    }
}

impl std::fmt::Display for Counts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (connect, ok, unavailable) = (thousands(self.connect), thousands(self.ok), thousands(self.unavailable));
        write!(f, "**{connect} × 502 `connect`**, {ok} × 200, {unavailable} × 503")?;
        if self.bad_gateway > 0 {
            write!(f, ", {} × 502 of other kinds", self.bad_gateway)?;
        }
        if self.other > 0 {
            write!(f, ", {} other statuses", self.other)?;
        }
        let unanswered: usize = self.unanswered.values().sum();
        if unanswered > 0 {
            let why: Vec<String> = self.unanswered.iter().map(|(why, count)| format!("{count} {why}")).collect();
            write!(f, ", {unanswered} unanswered ({})", why.join(", "))?;
        }
        Ok(())
    }
}

/// Sends every request of `targets` on a connection of its own, all connected and sent before
/// any answer is read, and reads the answers (to the end: `connection: close`) on non-blocking
/// sockets, for `limit` at most. An answer, or why there is none.
fn burst(addr: SocketAddr, targets: &[String], limit: Duration) -> Vec<Result<Vec<u8>, String>> {
    /// One request of the burst: its connection, what it received, and how it ended (`None`:
    /// still reading).
    type Pending = (Result<TcpStream, String>, Vec<u8>, Option<&'static str>);
    let until = Instant::now() + limit;
    // Each request sent as soon as its connection is up: a connection left silent while the
    // others connect would meet the idle timeout, which is not what a burst of requests is.
    let mut pending: Vec<Pending> = (targets.iter())
        .map(|target| {
            let left = until.saturating_duration_since(Instant::now());
            let sent = match left.is_zero() {
                true => Err("not connected in time".to_owned()),
                false => send(addr, target, left.min(Duration::from_secs(2))),
            };
            let ended = sent.is_err().then_some("not sent");
            (sent, Vec::new(), ended)
        })
        .collect();
    let mut chunk = [0; 16 * 1024];
    while Instant::now() < until && pending.iter().any(|(_, _, ended)| ended.is_none()) {
        let mut progress = false;
        for (stream, received, ended) in pending.iter_mut().filter(|(_, _, ended)| ended.is_none()) {
            let Ok(socket) = stream else { continue };
            match socket.read(&mut chunk) {
                Ok(0) => *ended = Some("closed unanswered"),
                Ok(n) => received.extend_from_slice(&chunk[..n]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => *ended = Some("reset unanswered"),
            }
            progress = true;
        }
        if !progress {
            thread::sleep(Duration::from_millis(2));
        }
    }
    (pending.into_iter())
        .map(|(stream, received, ended)| match stream {
            Err(error) => Err(error),
            Ok(_) if received.is_empty() => Err(ended.unwrap_or("timed out").to_owned()),
            Ok(_) => Ok(received),
        })
        .collect()
}

/// Connects to `addr` within `limit`, sends `GET target` with `connection: close`, and
/// makes the socket non-blocking.
fn send(addr: SocketAddr, target: &str, limit: Duration) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect_timeout(&addr, limit).map_err(|error| format!("connect: {error}"))?;
    let head = format!("GET {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    (stream.set_write_timeout(Some(limit)))
        .and_then(|()| stream.write_all(head.as_bytes()))
        .and_then(|()| stream.set_nonblocking(true))
        .map_err(|error| format!("send: {error}"))?;
    Ok(stream)
}

// 6. The demo backends' memory.

/// Requests, as the issue's, on [`DEMO_CONNECTIONS`] keep-alive connections, for at most
/// [`DEMO_LIMIT`].
const DEMO_REQUESTS: usize = 100_000;
const DEMO_CONNECTIONS: usize = 16;
const DEMO_LIMIT: Duration = Duration::from_secs(90);

fn demo_memory(bench: &Bench) -> Result<Measured, String> {
    let server = bench.start("demo-memory", &[], &QUIET)?;
    let (addr, pid) = (server.addr, server.pid());
    thread::sleep(Duration::from_millis(300));
    let start = rss_kib(pid);
    let done = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + DEMO_LIMIT;
    let threads: Vec<_> = (0..DEMO_CONNECTIONS)
        .map(|t| {
            let done = done.clone();
            thread::spawn(move || keep_alive_requests(addr, t, DEMO_REQUESTS / DEMO_CONNECTIONS, until, &done))
        })
        .collect();
    let began = Instant::now();
    let mut checkpoints = Vec::new();
    let mut next = DEMO_REQUESTS / 10;
    while threads.iter().any(|thread| !thread.is_finished()) && Instant::now() < until + Duration::from_secs(10) {
        if done.load(Ordering::Relaxed) >= next {
            checkpoints.push((next, rss_kib(pid)));
            next += DEMO_REQUESTS * 3 / 10;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let answered: usize = threads.into_iter().map(|thread| thread.join().unwrap_or(0)).sum();
    let took = began.elapsed();
    let end = rss_kib(pid);
    server.stop();
    let steps: String =
        checkpoints.iter().map(|(count, rss)| format!(" → {} after {}", mib(*rss), thousands(*count))).collect();
    let growth = end.zip(checkpoints.first().and_then(|(_, rss)| *rss)).map(|(end, early)| end.saturating_sub(early));
    Ok(Measured {
        text: format!(
            "RSS {} at start{steps} → {} after {} requests answered 200 ({:.0} s, {DEMO_CONNECTIONS} keep-alive \
             connections; the dashboard and its three in-process demo backends)",
            mib(start),
            mib(end),
            thousands(answered),
            took.as_secs_f64(),
        ),
        holds: answered == DEMO_REQUESTS && growth.is_some_and(|kib| kib < 16 * 1024),
    })
}

/// Sends `count` requests (`/dashboard/<id>`, varying ids) on a keep-alive connection,
/// reconnecting when closed, until `until`; counts those answered 200 in `done` and returns
/// that count. After 100 errors it stops.
fn keep_alive_requests(addr: SocketAddr, index: usize, count: usize, until: Instant, done: &AtomicUsize) -> usize {
    let (mut answered, mut errors) = (0, 0);
    let mut connection: Option<(TcpStream, BufReader<TcpStream>)> = None;
    for sent in 0..count {
        if Instant::now() >= until || errors >= 100 {
            break;
        }
        let target = format!("/dashboard/{}", (index * 7_919 + sent) % 1_000);
        let answer = connection.take().map_or_else(|| keep_alive(addr), Ok).and_then(|(mut stream, mut reader)| {
            write!(stream, "GET {target} HTTP/1.1\r\nhost: {addr}\r\n\r\n")?;
            let (status, close) = read_response(&mut reader)?;
            if !close {
                connection = Some((stream, reader));
            }
            Ok(status)
        });
        match answer {
            Ok(200) => {
                answered += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
            _ => errors += 1,
        }
    }
    answered
}

fn keep_alive(addr: SocketAddr) -> io::Result<(TcpStream, BufReader<TcpStream>)> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.set_nodelay(true)?;
    let reader = BufReader::new(stream.try_clone()?);
    Ok((stream, reader))
}

/// Reads one response (its body by `content-length` or chunked, or up to the end of the
/// stream): its status, and whether the connection ends with it.
fn read_response(reader: &mut impl BufRead) -> io::Result<(u16, bool)> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut line = String::new();
    next_line(reader, &mut line)?;
    let status = parse_status(line.as_bytes()).ok_or_else(|| invalid("bad status line"))?;
    let (mut length, mut chunked, mut close) = (None, false, false);
    loop {
        next_line(reader, &mut line)?;
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').ok_or_else(|| invalid("bad header line"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<u64>().map_err(|_| invalid("bad content-length"))?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    if chunked {
        loop {
            next_line(reader, &mut line)?;
            let size = line.trim_end().split(';').next().unwrap_or_default();
            let size = u64::from_str_radix(size.trim(), 16).map_err(|_| invalid("bad chunk size"))?;
            if size == 0 {
                next_line(reader, &mut line)?;
                break;
            }
            skip(reader, size + 2)?;
        }
    } else if let Some(length) = length {
        skip(reader, length)?;
    } else if !(status < 200 || status == 204 || status == 304) {
        io::copy(&mut *reader, &mut io::sink())?;
        close = true;
    }
    Ok((status, close))
}

/// Reads one line (16 KiB at most) into `line`; the end of the stream is an error.
fn next_line(reader: &mut impl BufRead, line: &mut String) -> io::Result<()> {
    line.clear();
    match Read::take(&mut *reader, 16 * 1024).read_line(line)? {
        0 => Err(io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

/// Reads past `count` bytes; the end of the stream before them is an error.
fn skip(reader: &mut impl Read, count: u64) -> io::Result<()> {
    match io::copy(&mut Read::take(&mut *reader, count), &mut io::sink())? {
        copied if copied == count => Ok(()),
        _ => Err(io::ErrorKind::UnexpectedEof.into()),
    }
}

// 7. Credentials.

fn credentials(bench: &Bench) -> Result<Measured, String> {
    let transactions = Backend::start(json_response(r#"{"id":"42","balance":"1.00"}"#), true)?;
    let offers = Backend::start(json_response("[]"), true)?;
    let transactions_url = format!("http://{}/transactions/{{id}}", transactions.addr);
    let offers_url = format!("http://{}/offers/{{tier}}", offers.addr);
    let args = ["--transactions-url", &transactions_url, "--offers-url", &offers_url];
    let server = bench.start("credentials", &args, &QUIET)?;
    let headers = [("authorization", "Bearer redteam-token"), ("cookie", "session=redteam")];
    let mut statuses = Vec::new();
    for id in ["20", "42", "7"] {
        let reply = get(server.addr, &format!("/dashboard/{id}"), &headers, Duration::from_secs(5))?;
        statuses.push(reply.status);
    }
    server.stop();
    let (offers, transactions) = (offers.heads(), transactions.heads());
    let carrying = |heads: &[String]| heads.iter().filter(|head| has_header(head, "authorization")).count();
    let (to_offers, to_transactions) = (carrying(&offers), carrying(&transactions));
    Ok(Measured {
        text: format!(
            "{} requests with `authorization` (answered {statuses:?}): the offers backend got {} of its {} requests \
             with it; transactions got {to_transactions} of {} (its allow-list, `--forward-headers`); the client's \
             cookie reached {}",
            statuses.len(),
            to_offers,
            offers.len(),
            transactions.len(),
            if offers.iter().chain(&transactions).any(|head| has_header(head, "cookie")) {
                "a backend"
            } else {
                "neither"
            },
        ),
        holds: !offers.is_empty() && to_offers == 0,
    })
}

/// Whether a recorded request head has a header `name`.
fn has_header(head: &str, name: &str) -> bool {
    head.lines().skip(1).filter_map(|line| line.split_once(':')).any(|(key, _)| key.trim().eq_ignore_ascii_case(name))
}

// 8. A streamed request that failed, in the access log.

fn streamed_log(bench: &Bench) -> Result<Measured, String> {
    let server = bench.start("streamed-log", &[], &[("RUST_LOG", "info")])?;
    let addr = server.addr;
    let streamed = [("accept", "application/x-ndjson")];
    let failed = "/dashboard/7?transactions_fail=1&transactions_delay_ms=200";
    let reply = get(addr, failed, &streamed, Duration::from_secs(5))?;
    // A client that goes away after the first section.
    let mut gone = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|error| error.to_string())?;
    write!(
        gone,
        "GET /dashboard/8?transactions_delay_ms=20000 HTTP/1.1\r\nhost: {addr}\r\naccept: application/x-ndjson\r\n\r\n"
    )
    .map_err(|error| error.to_string())?;
    let _ = gone.set_read_timeout(Some(Duration::from_secs(2)));
    let mut first = [0; 4096];
    let _ = gone.read(&mut first);
    // Gone 300 ms after the first section: the line is written then, with that time.
    thread::sleep(Duration::from_millis(300));
    drop(gone);
    let log = log("streamed-log");
    let began = Instant::now();
    let (mut seven, mut eight) = (None, None);
    while began.elapsed() < Duration::from_secs(5) && (seven.is_none() || eight.is_none()) {
        thread::sleep(Duration::from_millis(50));
        let logged = std::fs::read_to_string(&log).unwrap_or_default();
        seven = access_line(&logged, "/dashboard/7");
        eight = access_line(&logged, "/dashboard/8");
    }
    server.stop();
    let shown = |line: &Option<Access>| match line {
        Some(line) => format!("status {}, `elapsed_ms` {}", line.status, line.elapsed_ms),
        None => "no access line".to_owned(),
    };
    Ok(Measured {
        text: format!(
            "the client got {} with `\"outcome\":\"failed\"` in the stream: {}; logged {} \
             (`?transactions_fail=1&transactions_delay_ms=200`); a client gone 300 ms after the first section: \
             logged {}",
            reply.status,
            reply.body.contains(r#""outcome":"failed""#),
            shown(&seven),
            shown(&eight),
        ),
        holds: seven.is_some_and(|line| line.status == 502 && line.elapsed_ms >= 200)
            && eight.is_some_and(|line| line.status == 499),
    })
}

/// The fields of an access log line this row reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Access {
    status: u16,
    elapsed_ms: u64,
}

/// The access line (`"message":"request"`) of `path` in the JSON log, the last if several.
fn access_line(log: &str, path: &str) -> Option<Access> {
    let path = format!(r#""path":"{path}""#);
    let line = log.lines().rev().find(|line| line.contains(r#""message":"request""#) && line.contains(&path))?;
    Some(Access {
        status: u16::try_from(json_number(line, "status")?).ok()?,
        elapsed_ms: json_number(line, "elapsed_ms")?,
    })
}

/// The number after the first `"key":` in a JSON log line.
fn json_number(line: &str, key: &str) -> Option<u64> {
    let key = format!(r#""{key}":"#);
    let at = line.find(&key)? + key.len();
    let digits: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

// 9. Shutdown with idle and head-less connections.

fn shutdown_idle(bench: &Bench) -> Result<Measured, String> {
    // Timeouts longer than the row: waiting them out would show.
    let args = ["--idle-timeout-ms", "60000", "--header-read-timeout-ms", "60000", "--write-timeout-ms", "60000"];
    let mut dashboard = Proc::start(&bench.exe, &args, &QUIET, Some(&log("shutdown-idle")))?;
    let addr = dashboard.addr;
    let connect = || TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|error| error.to_string());
    let mut idle = connect()?;
    // One request answered, the connection kept open: idle between requests.
    write!(idle, "GET /healthz HTTP/1.1\r\nhost: {addr}\r\n\r\n").map_err(|error| error.to_string())?;
    let _ = idle.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reader = BufReader::new(idle.try_clone().map_err(|error| error.to_string())?);
    read_response(&mut reader).map_err(|error| format!("the keep-alive request: {error}"))?;
    let silent = connect()?;
    let mut half = connect()?;
    half.write_all(b"GET /dashboard/1 HTTP/1.1\r\nhost: x\r\n").map_err(|error| error.to_string())?;
    thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    dashboard.signal("TERM")?;
    let exit = dashboard.wait(EXIT_LIMIT).map(|status| (status, signalled.elapsed()));
    drop((idle, reader, silent, half, dashboard));
    let text = match exit {
        Some((status, after)) => format!("{} s ({})", seconds(after), code(status)),
        None => format!("not in {} s (killed)", EXIT_LIMIT.as_secs()),
    };
    Ok(Measured {
        text: format!(
            "SIGTERM to exit: {text}, with a keep-alive connection idle after its answer, one connected and silent \
             and one with half a head open (idle, header-read and write timeouts 60 s, grace 5 s)"
        ),
        holds: exit.is_some_and(|(status, after)| status.success() && after <= Duration::from_secs(1)),
    })
}

// 10. The exit code with requests unanswered after the grace.

fn exit_code(bench: &Bench) -> Result<Measured, String> {
    let args = ["--timeout-ms", "20000", "--shutdown-grace-ms", "1000"];
    let mut dashboard = Proc::start(&bench.exe, &args, &QUIET, Some(&log("exit-code")))?;
    let addr = dashboard.addr;
    let slow = thread::spawn(move || get(addr, "/dashboard/2?profile_delay_ms=15000", &[], Duration::from_secs(20)));
    thread::sleep(Duration::from_millis(300));
    let signalled = Instant::now();
    dashboard.signal("TERM")?;
    let exit = dashboard.wait(EXIT_LIMIT).map(|status| (status, signalled.elapsed()));
    drop(dashboard);
    let slow = slow.join().ok().and_then(Result::ok).map(|reply| reply.status);
    let text = match exit {
        Some((status, after)) => format!("{}, {} s after SIGTERM", code(status), seconds(after)),
        None => format!("no exit in {} s (killed)", EXIT_LIMIT.as_secs()),
    };
    Ok(Measured {
        text: format!(
            "{text} (`--shutdown-grace-ms 1000`, a request of 15 s in flight; the client got {})",
            slow.map_or_else(|| "no answer".to_owned(), |status| format!("status {status}"))
        ),
        holds: exit.is_some_and(|(status, after)| status.code() == Some(1) && after <= Duration::from_secs(2)),
    })
}

// 11. The request head limit.

fn head_size(bench: &Bench) -> Result<Measured, String> {
    let server = bench.start("head-size", &[], &QUIET)?;
    let mut answers = Vec::new();
    for kib in [60, 65, 100, 111] {
        let pad = "a".repeat(kib * 1024);
        let status = get(server.addr, "/healthz", &[("x-pad", &pad)], Duration::from_secs(5)).ok().map(|r| r.status);
        answers.push((kib, status));
    }
    server.stop();
    let shown: Vec<String> = (answers.iter())
        .map(|(kib, status)| match status {
            Some(status) => format!("{kib} KiB: {status}"),
            None => format!("{kib} KiB: closed unanswered"),
        })
        .collect();
    let refused = |status: &Option<u16>| status.is_none_or(|status| status == 431);
    Ok(Measured {
        text: format!("a `/healthz` request with a head of {}", shown.join(", ")),
        holds: answers[0].1 == Some(200) && answers[1..].iter().all(|(_, status)| refused(status)),
    })
}

// Processes.

/// A dashboard started by a row that signals it and waits for its exit (a [`Server`] does not
/// give its exit status): started on `127.0.0.1:0` with none of its settings from the
/// environment, killed by its pid when dropped.
#[derive(Debug)]
struct Proc {
    child: Child,
    addr: SocketAddr,
    /// Stderr as a pipe kept open and never read, when no log file was given.
    stderr: Option<ChildStderr>,
}

impl Proc {
    /// Starts the binary with `args` and `env`, its stderr to `log`, or to a pipe nobody reads,
    /// and reads its address from its first line (30 s at most); stdout is then drained.
    fn start(exe: &Path, args: &[&str], env: &[(&str, &str)], log: Option<&Path>) -> Result<Self, String> {
        let stderr = match log {
            Some(path) => {
                Stdio::from(std::fs::File::create(path).map_err(|error| format!("{}: {error}", path.display()))?)
            }
            None => Stdio::piped(),
        };
        let mut command = Command::new(exe);
        for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("DASHBOARD_") || key == "RUST_LOG") {
            command.env_remove(key);
        }
        let args = [&["--listen", "127.0.0.1:0"][..], args].concat();
        eprintln!("$ {} {}", exe.display(), args.join(" "));
        let mut child = command
            .args(&args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|error| format!("could not start {}: {error}", exe.display()))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let mut proc = Self { child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), stderr };
        let (sender, receiver) = mpsc::channel();
        if let Some(stdout) = stdout {
            thread::spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    let _ = sender.send(line);
                }
            });
        }
        let first = receiver.recv_timeout(Duration::from_secs(30)).map_err(|_| "no first line".to_owned())?;
        let addr = first.strip_prefix("listening on http://").and_then(|addr| addr.parse().ok());
        proc.addr = addr.ok_or_else(|| format!("expected `listening on http://ADDR`, got {first:?}"))?;
        Ok(proc)
    }

    /// Sends the signal `name` (`TERM`) with `kill`.
    fn signal(&self, name: &str) -> Result<(), String> {
        let status = Command::new("kill").args(["-s", name, &self.child.id().to_string()]).status();
        match status {
            Ok(status) if status.success() => Ok(()),
            _ => Err(format!("kill -s {name} {} failed", self.child.id())),
        }
    }

    /// Its exit status, if it exits within `limit` (polled every 5 ms).
    fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let began = Instant::now();
        while began.elapsed() < limit {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// The bytes left unread in its stderr pipe, read once it has exited (0 if it has not).
    fn unread_stderr(&mut self) -> usize {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            return 0;
        }
        let mut unread = Vec::new();
        self.stderr.take().map_or(0, |mut pipe| pipe.read_to_end(&mut unread).map_or(0, |_| unread.len()))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// The resident memory and the descriptors of `pid` over time, sampled every 50 ms on a thread
/// of its own until stopped (an hour at most).
#[derive(Debug)]
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Samples>,
}

/// Samples: when, the RSS in KiB and the descriptors open.
#[derive(Debug, Default)]
struct Samples(Vec<(Duration, u64, usize)>);

impl Sampler {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let began = Instant::now();
            let mut samples = Samples::default();
            while !stopped.load(Ordering::Relaxed) && samples.0.len() < 72_000 {
                if let (Some(kib), Some(fds)) = (rss_kib(pid), descriptors(pid)) {
                    samples.0.push((began.elapsed(), kib, fds));
                }
                thread::sleep(Duration::from_millis(50));
            }
            samples
        });
        Self { stop, thread }
    }

    fn stop(self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

impl Samples {
    fn peak(&self) -> Option<u64> {
        self.0.iter().map(|(_, kib, _)| *kib).max()
    }

    fn peak_descriptors(&self) -> Option<usize> {
        self.0.iter().map(|(_, _, fds)| *fds).max()
    }

    /// The largest sample taken from `from` to `to` after the start.
    fn max_between(&self, from: Duration, to: Duration) -> Option<u64> {
        self.0.iter().filter(|(at, _, _)| *at >= from && *at <= to).map(|(_, kib, _)| *kib).max()
    }
}

/// The descriptors `pid` holds open.
fn descriptors(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The soft and hard limits of open files in a `/proc/<pid>/limits`.
fn open_files(limits: &str) -> Option<(String, String)> {
    let line = limits.lines().find_map(|line| line.strip_prefix("Max open files"))?;
    let mut words = line.split_whitespace();
    Some((words.next()?.to_owned(), words.next()?.to_owned()))
}

// Backends.

/// A std HTTP/1.1 backend on 127.0.0.1 answering every request with the same bytes, keep-alive,
/// a thread per connection (4,096 at most); it records the request heads if asked. Stopped, its
/// threads joined, when dropped.
#[derive(Debug)]
struct Backend {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    heads: Arc<Mutex<Vec<String>>>,
    accept: Option<JoinHandle<()>>,
}

/// The most connections a [`Backend`] serves at once.
const BACKEND_CONNECTIONS: usize = 4_096;

impl Backend {
    fn start(response: Arc<[u8]>, record: bool) -> Result<Self, String> {
        let bind = |error: io::Error| format!("a backend on 127.0.0.1: {error}");
        let listener = TcpListener::bind("127.0.0.1:0").map_err(bind)?;
        let addr = listener.local_addr().map_err(bind)?;
        listener.set_nonblocking(true).map_err(bind)?;
        let stop = Arc::new(AtomicBool::new(false));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let (stopped, recorded) = (stop.clone(), heads.clone());
        let accept = thread::spawn(move || {
            let mut connections: Vec<JoinHandle<()>> = Vec::new();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        connections.retain(|connection| !connection.is_finished());
                        if connections.len() >= BACKEND_CONNECTIONS {
                            continue;
                        }
                        let (stopped, recorded, response) = (stopped.clone(), recorded.clone(), response.clone());
                        let recorded = record.then_some(recorded);
                        let spawned = thread::Builder::new()
                            .stack_size(128 * 1024)
                            .spawn(move || serve(stream, &response, &stopped, recorded.as_deref()));
                        connections.extend(spawned.ok());
                    }
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                        thread::sleep(Duration::from_millis(1));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
            for connection in connections {
                let _ = connection.join();
            }
        });
        Ok(Self { addr, stop, heads, accept: Some(accept) })
    }

    /// The request heads received so far, if recorded.
    fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

/// One backend connection: answers `response` to each request head until the client closes,
/// a read or write fails, or `stop` (checked every 200 ms).
fn serve(mut stream: TcpStream, response: &[u8], stop: &AtomicBool, heads: Option<&Mutex<Vec<String>>>) {
    if stream.set_nonblocking(false).is_err()
        || stream.set_read_timeout(Some(Duration::from_millis(200))).is_err()
        || stream.set_write_timeout(Some(Duration::from_secs(10))).is_err()
    {
        return;
    }
    let mut buffer = Vec::new();
    let mut chunk = [0; 8 * 1024];
    while !stop.load(Ordering::Relaxed) {
        while let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
            let head: Vec<u8> = buffer.drain(..end + 4).collect();
            if let Some(heads) = heads {
                heads.lock().unwrap_or_else(PoisonError::into_inner).push(String::from_utf8_lossy(&head).into_owned());
            }
            if stream.write_all(response).is_err() {
                return;
            }
        }
        if buffer.len() > 64 * 1024 {
            return;
        }
        match stream.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// A 200 answer with a JSON body.
fn json_response(body: &str) -> Arc<[u8]> {
    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
        .into()
}

/// A 200 answer with a JSON object of `size` bytes: a tier (so offers could be asked) and
/// padding.
fn big_response(size: usize) -> Arc<[u8]> {
    let frame = r#"{"id":"big","tier":"gold","pad":""}"#;
    let pad = "x".repeat(size.saturating_sub(frame.len()));
    json_response(&format!(r#"{{"id":"big","tier":"gold","pad":"{pad}"}}"#))
}

// Formatting.

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".to_owned(), |kib| format!("{:.1} MiB", kib as f64 / 1024.0))
}

fn millis(duration: Duration) -> String {
    format!("{:.0} ms", duration.as_secs_f64() * 1e3)
}

fn seconds(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64())
}

/// An exit status as the shell says it: `exit code 1`, or the signal that ended it.
fn code(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit code {code}"),
        None => status.to_string(),
    }
}

/// `100000` as `100,000`.
fn thousands(count: usize) -> String {
    let digits = count.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::parse_rss_kib;

    #[test]
    fn statuses_are_read_from_the_first_bytes() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(parse_status(b"HTTP/1.0 431 Request Header Fields Too Large"), Some(431));
        assert_eq!(parse_status(b"HTTP/1.1 50"), None);
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH"), None);
        assert_eq!(parse_status(b""), None);
    }

    #[test]
    fn responses_are_read_by_length_chunks_or_to_the_end() {
        let raw = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello\
                   HTTP/1.1 502 Bad Gateway\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n\
                   HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 2\r\n\r\nno\
                   HTTP/1.0 200 OK\r\n\r\nall the rest";
        let mut reader = BufReader::new(raw.as_bytes());
        let read: Vec<(u16, bool)> = (0..4).map(|_| read_response(&mut reader).expect("an answer")).collect();
        assert_eq!(read, [(200, false), (502, false), (503, true), (200, true)]);
        assert!(read_response(&mut reader).is_err(), "nothing left");
        let truncated = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhel";
        assert!(read_response(&mut BufReader::new(truncated.as_bytes())).is_err());
    }

    #[test]
    fn the_access_line_of_a_path_gives_its_status_and_time() {
        let log = r#"{"level":"WARN","fields":{"message":"aggregation failed","elapsed_ms":420}}
{"level":"INFO","fields":{"message":"request","method":"GET","path":"/dashboard/7","status":502,"elapsed_ms":420,"kind":"status"}}
{"level":"INFO","fields":{"message":"request","method":"GET","path":"/dashboard/70","status":200,"elapsed_ms":2}}"#;
        assert_eq!(access_line(log, "/dashboard/7"), Some(Access { status: 502, elapsed_ms: 420 }));
        assert_eq!(access_line(log, "/dashboard/70"), Some(Access { status: 200, elapsed_ms: 2 }));
        assert_eq!(access_line(log, "/dashboard/8"), None);
        let warning = r#"{"fields":{"descriptor_limit":1024,"max_connections":310,"max_in_flight":71,"message":"x"}}"#;
        assert_eq!(json_number(warning, "max_connections"), Some(310));
        assert_eq!(json_number(warning, "max_in_flight"), Some(71));
        assert_eq!(json_number(warning, "message"), None);
    }

    #[test]
    fn proc_files_are_parsed() {
        assert_eq!(parse_rss_kib("Name:\tdashboard\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\n"), Some(12_345));
        assert_eq!(parse_rss_kib("Name:\tdashboard\n"), None);
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95000                95000                processes \n\
                      Max open files            1024                 20000                files     \n";
        assert_eq!(open_files(limits), Some(("1024".to_owned(), "20000".to_owned())));
        assert!(rss_kib(std::process::id()).is_some_and(|kib| kib > 0) || !cfg!(target_os = "linux"));
    }

    #[test]
    fn the_tcp_table_gives_the_send_queues_of_a_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:8235 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1150 1\n\
   1: 0100007F:8235 0100007F:C38C 01 001E8480:00000000 00:00000000 00000000     0        0 0 3\n\
   2: 0100007F:8235 0100007F:C38D 04 00000400:00000000 00:00000000 00000000     0        0 0 3\n\
   3: 0100007F:C38C 0100007F:8235 01 00000000:00010000 00:00000000 00000000     0        0 0 3\n";
        assert_eq!(parse_tcp_sockets(table, 0x8235), TcpSockets { sockets: 2, queued: 2_000_000 + 1024, closing: 1 });
        assert_eq!(parse_tcp_sockets(table, 1), TcpSockets::default());
    }

    #[test]
    fn netstat_counters_are_found_by_group_and_name() {
        let netstat = "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 352574 31\n\
                       IpExt: InNoRoutes ListenOverflows\nIpExt: 1 2\n";
        assert_eq!(parse_netstat(netstat, "TcpExt", "ListenOverflows"), Some(352_574));
        assert_eq!(parse_netstat(netstat, "IpExt", "ListenOverflows"), Some(2));
        assert_eq!(parse_netstat(netstat, "TcpExt", "Nothing"), None);
    }

    #[test]
    fn burst_answers_are_counted_by_kind() {
        let mut counts = Counts::default();
        counts.add(Ok(b"HTTP/1.1 200 OK\r\n\r\n{}"));
        counts.add(Ok(b"HTTP/1.1 502 Bad Gateway\r\n\r\n{\"source\":\"profile\",\"kind\":\"connect\"}"));
        counts.add(Ok(b"HTTP/1.1 502 Bad Gateway\r\n\r\n{\"kind\":\"status\"}"));
        counts.add(Ok(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"));
        counts.add(Err("timed out"));
        counts.add(Err("timed out"));
        assert_eq!(
            (counts.ok, counts.connect, counts.bad_gateway, counts.unavailable, counts.unanswered.len()),
            (1, 1, 1, 1, 1)
        );
        assert_eq!(
            counts.to_string(),
            "**1 × 502 `connect`**, 1 × 200, 1 × 503, 1 × 502 of other kinds, 2 unanswered (2 timed out)"
        );
    }

    #[test]
    fn rows_are_all_or_the_numbers_given() {
        assert_eq!(selected_rows(&[], 3), Ok(vec![1, 2, 3]));
        assert_eq!(selected_rows(&["3".to_owned(), "1".to_owned()], 3), Ok(vec![3, 1]));
        assert!(selected_rows(&["4".to_owned()], 3).is_err());
        assert!(selected_rows(&["--quick".to_owned()], 3).is_err());
    }

    #[test]
    fn headers_of_a_recorded_head_are_found_by_name() {
        let head = "GET /offers/gold HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n";
        assert!(has_header(head, "authorization"));
        assert!(!has_header(head, "cookie"));
        assert!(!has_header("GET /authorization: HTTP/1.1\r\n\r\n", "get /authorization"));
    }

    #[test]
    fn numbers_and_big_bodies_are_shaped_for_the_table() {
        assert_eq!(thousands(100_000), "100,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(mib(Some(1536)), "1.5 MiB");
        let big = big_response(1_000);
        let text = String::from_utf8_lossy(&big);
        let body = text.split_once("\r\n\r\n").map(|(_, body)| body).expect("a body");
        assert_eq!(body.len(), 1_000);
        assert!(text.contains("content-length: 1000\r\n"), "{text}");
    }
}
