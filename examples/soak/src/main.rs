//! Soak: many aggregations with random outcomes on a real multi-thread runtime, then checks that
//! nothing leaked: live runtime tasks back to baseline, resident memory growth under a bound,
//! open file descriptors back to baseline, and every aggregation ending as its script says.
//!
//! A second phase does the same over HTTP: the dashboard and its two demo backends served
//! in-process on loopback ports, loaded through one pooled client with random knobs (slow and
//! failing backends, clients giving up mid-request); every answer must have the status its
//! knobs call for, no backend request may outlive its aggregation, and once the servers are
//! shut down the tasks and file descriptors must be back to where they were.
//!
//! Run with: `cargo run --release -p soak` (200,000 aggregations, then 10,000 dashboard
//! requests) or `-- --quick` (5,000 and 250; what `cargo xtask ci` runs); `-- --count N` for N
//! aggregations and N / 20 requests. Exits non-zero on a failed check.

use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dashboard::{AppState, Config, Service, Stats};
use futures_util::StreamExt as _;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use muster::{Aggregator, Deadline, ErrorKind, Fallback, Optional, Timeout, fetcher_fn};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// What one source does in one aggregation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    Ok,
    Fail,
    Hang,
    Panic,
}

/// One aggregation's script: a behaviour and a delay per source, and whether the caller gives up.
#[derive(Clone, Copy, Debug)]
struct Script {
    behaviours: [Behaviour; SOURCES],
    delays_us: [u64; SOURCES],
    caller_drops_after: Option<Duration>,
}

const SOURCES: usize = 4;
/// Sources 0 and 1 are required, 2 and 3 optional.
const REQUIRED: usize = 2;
/// Growth of resident memory allowed between the end of warm-up and the end of the run.
const RSS_BOUND_KIB: u64 = 16 * 1024;
const CONCURRENCY: usize = 64;

/// xorshift64*: deterministic, dependency-free randomness for the scripts.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn script(&mut self) -> Script {
        let mut behaviours = [Behaviour::Ok; SOURCES];
        let mut delays_us = [0; SOURCES];
        for (behaviour, delay) in behaviours.iter_mut().zip(&mut delays_us) {
            *behaviour = match self.below(100) {
                0..=84 => Behaviour::Ok,
                85..=92 => Behaviour::Fail,
                93..=97 => Behaviour::Hang,
                _ => Behaviour::Panic,
            };
            *delay = self.below(2_000);
        }
        let caller_drops_after = (self.below(10) == 0).then(|| Duration::from_micros(self.below(1_500)));
        Script { behaviours, delays_us, caller_drops_after }
    }
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    panicked: AtomicU64,
    dropped: AtomicU64,
    wrong: AtomicU64,
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let count = match args.iter().position(|arg| arg == "--count") {
        Some(i) => args.get(i + 1).ok_or("--count needs a number")?.parse()?,
        None if args.iter().any(|arg| arg == "--quick") => 5_000,
        None => 200_000,
    };
    // Deliberate panics are part of the script; keep their messages out of the output.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if info.payload().downcast_ref::<&str>() != Some(&"scripted panic") {
            default_hook(info);
        }
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut problems = runtime.block_on(aggregations(count))?;
    problems.extend(runtime.block_on(http(count / 20))?);
    if problems.is_empty() {
        println!("soak: ok");
        Ok(())
    } else {
        Err(format!("soak failed: {}", problems.join("; ")).into())
    }
}

/// The aggregation phase: `count` aggregations of scripted sources; returns the failed checks.
async fn aggregations(count: u64) -> Result<Vec<String>, Box<dyn Error>> {
    let aggregator = aggregator()?;
    let tally = Arc::new(Tally::default());
    let metrics = tokio::runtime::Handle::current().metrics();
    let (tasks_before, fds_before) = (metrics.num_alive_tasks(), open_fds());
    let warm_up = count / 10;
    let started = Instant::now();
    run(&aggregator, &tally, 0..warm_up).await;
    let rss_after_warm_up = rss_kib();
    run(&aggregator, &tally, warm_up..count).await;
    let elapsed = started.elapsed();
    let (tasks_after, fds_after, rss_end) = (metrics.num_alive_tasks(), open_fds(), rss_kib());

    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    println!(
        "soak: {count} aggregations in {elapsed:.2?} ({:.0}/s): {} ok, {} failed, {} timed out, {} panicked, {} dropped by the caller",
        count as f64 / elapsed.as_secs_f64(),
        load(&tally.ok),
        load(&tally.failed),
        load(&tally.timed_out),
        load(&tally.panicked),
        load(&tally.dropped)
    );
    println!("soak: live tasks {tasks_before} -> {tasks_after}, open fds {fds_before:?} -> {fds_after:?}");
    println!(
        "soak: resident memory {rss_after_warm_up:?} KiB after warm-up -> {rss_end:?} KiB (bound +{RSS_BOUND_KIB} KiB)"
    );
    let mut problems = Vec::new();
    if load(&tally.wrong) > 0 {
        problems.push(format!("{} aggregations ended against their script", load(&tally.wrong)));
    }
    if tasks_after != tasks_before {
        problems.push(format!("live tasks {tasks_before} -> {tasks_after}"));
    }
    if fds_after != fds_before {
        problems.push(format!("open fds {fds_before:?} -> {fds_after:?}"));
    }
    problems.extend(rss_growth(rss_after_warm_up, rss_end));
    Ok(problems)
}

/// The failed check, if resident memory grew by more than [`RSS_BOUND_KIB`].
fn rss_growth(before: Option<u64>, after: Option<u64>) -> Option<String> {
    let (before, after) = (before?, after?);
    (after > before + RSS_BOUND_KIB).then(|| format!("resident memory grew by {} KiB", after - before))
}

/// The outputs: two required sources, one optional with a fallback of 0, one left out when it
/// fails.
type Outputs = (u32, u32, u32, Option<u32>);

/// Two required and two optional sources, each doing what the script of its request says.
fn aggregator() -> Result<Aggregator<Script, Outputs>, muster::BuildError> {
    let source = |index: usize| {
        fetcher_fn(move |script: &Script| {
            let (behaviour, delay) = (script.behaviours[index], Duration::from_micros(script.delays_us[index]));
            async move {
                tokio::time::sleep(delay).await;
                match behaviour {
                    Behaviour::Ok => Ok(index as u32),
                    Behaviour::Fail => Err(std::io::Error::other("scripted failure")),
                    Behaviour::Hang => std::future::pending().await,
                    Behaviour::Panic => panic!("scripted panic"),
                }
            }
        })
    };
    let timeout = Timeout(Duration::from_millis(5));
    Aggregator::builder()
        .source_with("required-0", source(0), timeout)
        .source_with("required-1", source(1), timeout)
        .source_with("optional-2", source(2), (Fallback(0), timeout))
        .source_with("optional-3", source(3), (Optional, timeout))
        .options(Deadline(Duration::from_millis(50)))
        .build()
}

async fn run(aggregator: &Aggregator<Script, Outputs>, tally: &Tally, range: std::ops::Range<u64>) {
    let stream = futures_util::stream::iter(range).for_each_concurrent(CONCURRENCY, |i| async move {
        let script = Rng(0x9e37_79b9_7f4a_7c15 ^ (i + 1)).script();
        let aggregation = aggregator.aggregate(&script);
        let result = match script.caller_drops_after {
            Some(after) => match tokio::time::timeout(after, aggregation).await {
                Ok(result) => result,
                Err(_) => {
                    tally.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            },
            None => aggregation.await,
        };
        let required = &script.behaviours[..REQUIRED];
        let expected_ok = required.iter().all(|behaviour| *behaviour == Behaviour::Ok);
        let counter = match &result {
            Ok(_) => &tally.ok,
            Err(error) if error.kind() == ErrorKind::Panicked => &tally.panicked,
            Err(error) if error.kind() == ErrorKind::Timeout => &tally.timed_out,
            Err(_) => &tally.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let ok = |index: usize| script.behaviours[index] == Behaviour::Ok;
        let right = match &result {
            // Each output is the source's own when it succeeded, else its fallback (0) or
            // nothing.
            Ok(aggregate) => {
                let (zero, one, two, three) = aggregate.outputs;
                let optional = (two == if ok(2) { 2 } else { 0 }) && three == ok(3).then_some(3);
                expected_ok && (zero, one) == (0, 1) && optional
            }
            Err(_) => !expected_ok,
        };
        if !right {
            tally.wrong.fetch_add(1, Ordering::Relaxed);
        }
    });
    stream.await;
}

/// Concurrent requests of the HTTP phase, all through one pooled client.
const HTTP_CONCURRENCY: usize = 16;
/// The dashboard's deadline in the HTTP phase.
const HTTP_DEADLINE: Duration = Duration::from_millis(200);
/// The delay of a slow backend: well past [`HTTP_DEADLINE`], so the dashboard answers 504.
const SLOW_MS: u64 = 400;
/// How long the backends' in-flight requests, and then the tasks and file descriptors after
/// the shutdown, may take to settle.
const SETTLE: Duration = Duration::from_secs(2);
/// How long one answer may take before it counts as a hang.
const ANSWER_LIMIT: Duration = Duration::from_secs(5);
/// How long a server may take to shut down gracefully.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);
/// The two demo backends, in the order of the `delays_ms` of a [`Visit`].
const SERVICES: [Service; 2] = [Service::Profile, Service::Transactions];
/// The listening sockets of the HTTP phase: the dashboard and the two demo backends.
const LISTENERS: usize = 3;
/// Open file descriptors allowed on top of the baseline while the servers are up and the pools
/// are open. Every loopback connection costs two descriptors here, since both ends are in this
/// process. The load client holds at most one connection per concurrent request, and the
/// dashboard's client one per concurrent aggregation to each backend: 3 pools of
/// [`HTTP_CONCURRENCY`] connections at 2 descriptors each, plus the listeners, plus a little
/// slack for a connection hyper-util finishes opening in the background after a pooled one
/// was free first (it is pooled too).
const FD_BOUND: usize = LISTENERS + 3 * HTTP_CONCURRENCY * 2 + 8;

/// What the dashboard should answer to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    /// 200 with both bodies.
    Ok,
    /// 502 naming the service, which was told `fail=1`.
    Failed(Service),
    /// 504 with the service pending: it was told to take [`SLOW_MS`].
    Slow(Service),
}

/// One dashboard request's script: its knobs, its expected answer, and whether the client
/// gives up on it.
#[derive(Clone, Copy, Debug)]
struct Visit {
    expected: Expected,
    delays_ms: [u64; 2],
    gives_up_after: Option<Duration>,
}

impl Visit {
    fn new(rng: &mut Rng) -> Self {
        let service = SERVICES[rng.below(2) as usize];
        let expected = match rng.below(100) {
            0..=4 => Expected::Slow(service),
            5..=19 => Expected::Failed(service),
            _ => Expected::Ok,
        };
        let gives_up_after = (rng.below(10) == 0).then(|| Duration::from_millis(1 + rng.below(5)));
        // A client that gives up does so while the backends are still at work, most of the time.
        let extra = if gives_up_after.is_some() { 5 + rng.below(20) } else { 0 };
        let mut delays_ms = [0; 2];
        for (delay, candidate) in delays_ms.iter_mut().zip(SERVICES) {
            *delay = if expected == Expected::Slow(candidate) { SLOW_MS } else { extra + rng.below(6) };
        }
        Self { expected, delays_ms, gives_up_after }
    }

    /// The dashboard request target for user `user`, with the knobs of both backends.
    fn target(&self, user: &str) -> String {
        let fail = |service| u8::from(self.expected == Expected::Failed(service));
        format!(
            "/dashboard/{user}?profile_delay_ms={}&profile_fail={}&transactions_delay_ms={}&transactions_fail={}",
            self.delays_ms[0],
            fail(Service::Profile),
            self.delays_ms[1],
            fail(Service::Transactions),
        )
    }

    /// Whether `status` and `body` are the answer this visit calls for.
    fn check(&self, user: &str, status: u16, body: &[u8]) -> bool {
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) else {
            return false;
        };
        match self.expected {
            Expected::Ok => status == 200 && json["profile"]["id"] == user && json["transactions"].is_object(),
            Expected::Failed(service) => status == 502 && json["source"] == service.name(),
            Expected::Slow(service) => {
                let pending = json["pending"].as_array();
                status == 504
                    && json["kind"] == "timeout"
                    && pending.is_some_and(|pending| pending.iter().any(|name| name == service.name()))
            }
        }
    }
}

#[derive(Default)]
struct HttpTally {
    ok: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    given_up: AtomicU64,
    wrong: AtomicU64,
    /// The first few wrong answers, for the report.
    samples: Mutex<Vec<String>>,
}

impl HttpTally {
    fn wrong(&self, what: String) {
        self.wrong.fetch_add(1, Ordering::Relaxed);
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        if samples.len() < 3 {
            samples.push(what.chars().take(200).collect());
        }
    }
}

type HttpLoadClient = Client<HttpConnector, Empty<Bytes>>;

/// A router served on `127.0.0.1:0` until [`Server::stop`].
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(router: axum::Router) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self { addr, stop, task })
    }

    /// Shuts the server down gracefully (it stops listening, closes idle connections and waits
    /// for the others) and waits for it, for at most [`SHUTDOWN_LIMIT`].
    async fn stop(self) -> Result<(), String> {
        let Self { stop, mut task, .. } = self;
        let _ = stop.send(());
        match tokio::time::timeout(SHUTDOWN_LIMIT, &mut task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(error))) => Err(format!("failed: {error}")),
            Ok(Err(error)) => Err(format!("task failed: {error}")),
            Err(_) => {
                task.abort();
                let _ = task.await;
                Err(format!("not shut down within {SHUTDOWN_LIMIT:?}"))
            }
        }
    }
}

/// The HTTP phase: `requests` dashboard requests against the dashboard and its demo backends
/// served in-process; returns the failed checks.
async fn http(requests: u64) -> Result<Vec<String>, Box<dyn Error>> {
    let metrics = tokio::runtime::Handle::current().metrics();
    let (tasks_before, fds_before) = (metrics.num_alive_tasks(), open_fds());
    let stats = [Stats::default(), Stats::default()];
    let profile = Server::start(dashboard::demo::router(Service::Profile, stats[0].clone())).await?;
    let transactions = Server::start(dashboard::demo::router(Service::Transactions, stats[1].clone())).await?;
    let state = AppState::new(&Config {
        profile_url: Service::Profile.url_template(profile.addr),
        transactions_url: Service::Transactions.url_template(transactions.addr),
        offers_url: None,
        timeout: HTTP_DEADLINE,
        forward_headers: vec![axum::http::header::AUTHORIZATION],
        cache: None,
        offers_forward_headers: Vec::new(),
    })?;
    let dashboard = Server::start(dashboard::app(state)).await?;
    let client: HttpLoadClient = Client::builder(TokioExecutor::new()).build_http();
    let tally = HttpTally::default();

    // The demo backends keep a record of their latest requests (`Stats::requests`, at most
    // `dashboard::demo::RECORDED`), a few hundred bytes each: bounded, not a growth.
    let warm_up = requests / 10;
    let started = Instant::now();
    visit(&client, dashboard.addr, &tally, 0..warm_up).await;
    let rss_after_warm_up = rss_kib();
    visit(&client, dashboard.addr, &tally, warm_up..requests).await;
    let elapsed = started.elapsed();

    // A backend request cut short by its aggregation is dropped once the backend sees the
    // connection close, which may take a moment after the answer.
    let in_flight = || stats.iter().map(Stats::in_flight).sum::<usize>();
    let settling = Instant::now();
    while in_flight() > 0 && settling.elapsed() < SETTLE {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (in_flight_end, settled_in) = (in_flight(), settling.elapsed());
    let (fds_loaded, rss_end) = (open_fds(), rss_kib());

    // Teardown: the load client's pool first, then the dashboard (which drops its own client
    // and so closes its connections to the backends), then the backends.
    drop(client);
    let mut problems = Vec::new();
    for (name, server) in [("dashboard", dashboard), ("profile", profile), ("transactions", transactions)] {
        if let Err(error) = server.stop().await {
            problems.push(format!("http: {name} server {error}"));
        }
    }
    // The connection tasks of the pools end as their sockets close.
    let settling = Instant::now();
    let settled = || metrics.num_alive_tasks() == tasks_before && open_fds() <= fds_before;
    while !settled() && settling.elapsed() < SETTLE {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (tasks_after, fds_after) = (metrics.num_alive_tasks(), open_fds());

    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let sum = |count: fn(&Stats) -> usize| stats.iter().map(count).sum::<usize>();
    println!(
        "soak http: {requests} dashboard requests in {elapsed:.2?} ({:.0}/s): {} ok (200), {} failed (502), {} timed out (504), {} given up by the client, {} wrong",
        requests as f64 / elapsed.as_secs_f64(),
        load(&tally.ok),
        load(&tally.failed),
        load(&tally.timed_out),
        load(&tally.given_up),
        load(&tally.wrong)
    );
    println!(
        "soak http: backend requests {} started, {} completed, {} cancelled, {in_flight_end} in flight after {settled_in:.2?}",
        sum(Stats::started),
        sum(Stats::completed),
        sum(Stats::cancelled)
    );
    println!(
        "soak http: open fds {fds_before:?} -> {fds_loaded:?} with the pools open (bound +{FD_BOUND}) -> {fds_after:?} after shutdown"
    );
    println!("soak http: live tasks {tasks_before} -> {tasks_after} after shutdown");
    println!(
        "soak http: resident memory {rss_after_warm_up:?} KiB after warm-up -> {rss_end:?} KiB (bound +{RSS_BOUND_KIB} KiB)"
    );

    if load(&tally.wrong) > 0 {
        let samples = tally.samples.lock().unwrap_or_else(PoisonError::into_inner).join(" | ");
        problems.push(format!("http: {} answers against their knobs (e.g. {samples})", load(&tally.wrong)));
    }
    if in_flight_end != 0 {
        problems.push(format!("http: {in_flight_end} backend requests still in flight after {SETTLE:?}"));
    }
    if let (Some(before), Some(loaded)) = (fds_before, fds_loaded) {
        if loaded > before + FD_BOUND {
            problems.push(format!("http: open fds {before} -> {loaded} with the pools open (bound +{FD_BOUND})"));
        }
    }
    if fds_after != fds_before {
        problems.push(format!("http: open fds {fds_before:?} -> {fds_after:?} after shutdown"));
    }
    if tasks_after != tasks_before {
        problems.push(format!("http: live tasks {tasks_before} -> {tasks_after} after shutdown"));
    }
    problems.extend(rss_growth(rss_after_warm_up, rss_end).map(|problem| format!("http: {problem}")));
    Ok(problems)
}

/// Sends the requests of `range`, [`HTTP_CONCURRENCY`] at a time, and checks their answers.
async fn visit(client: &HttpLoadClient, addr: SocketAddr, tally: &HttpTally, range: std::ops::Range<u64>) {
    let stream = futures_util::stream::iter(range).for_each_concurrent(HTTP_CONCURRENCY, |i| async move {
        let visit = Visit::new(&mut Rng(0x2545_f491_4f6c_dd1d ^ (i + 1)));
        let user = format!("user-{i}");
        let uri = match format!("http://{addr}{}", visit.target(&user)).parse() {
            Ok(uri) => uri,
            Err(error) => return tally.wrong(format!("{user}: bad URI: {error}")),
        };
        let exchange = async {
            let response = client.get(uri).await.map_err(|error| format!("{error:?}"))?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await.map_err(|error| format!("{error:?}"))?.to_bytes();
            Ok::<_, String>((status, body))
        };
        let limit = visit.gives_up_after.unwrap_or(ANSWER_LIMIT);
        let (status, body) = match tokio::time::timeout(limit, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(error)) => return tally.wrong(format!("{user} ({:?}): {error}", visit.expected)),
            Err(_) if visit.gives_up_after.is_some() => {
                tally.given_up.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(_) => return tally.wrong(format!("{user} ({:?}): no answer within {ANSWER_LIMIT:?}", visit.expected)),
        };
        if !visit.check(&user, status, &body) {
            let body = String::from_utf8_lossy(&body);
            return tally.wrong(format!("{user} ({:?}): {status} {body}", visit.expected));
        }
        let counter = match status {
            200 => &tally.ok,
            502 => &tally.failed,
            _ => &tally.timed_out,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    });
    stream.await;
}

/// Resident memory of this process, from `/proc/self/status` (Linux); `None` elsewhere.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Open file descriptors of this process (sockets included), from `/proc/self/fd` (Linux).
fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(Iterator::count)
}
