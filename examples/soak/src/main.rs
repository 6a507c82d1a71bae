//! Soak: many aggregations with random outcomes on a real multi-thread runtime, then checks that
//! nothing leaked: live runtime tasks back to baseline, resident memory growth under a bound,
//! open file descriptors back to baseline, and every aggregation ending as its script says.
//!
//! Run with: `cargo run --release -p soak` (200,000 aggregations) or `-- --quick` (5,000; what
//! `cargo xtask ci` runs); `-- --count N` for any other number. Exits non-zero on a failed check.

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use muster::{Aggregator, Deadline, ErrorKind, Optional, Timeout, fetcher_fn};

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
    runtime.block_on(soak(count))
}

async fn soak(count: u64) -> Result<(), Box<dyn Error>> {
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
    if let (Some(before), Some(after)) = (rss_after_warm_up, rss_end) {
        if after > before + RSS_BOUND_KIB {
            problems.push(format!("resident memory grew by {} KiB", after - before));
        }
    }
    if problems.is_empty() {
        println!("soak: ok");
        Ok(())
    } else {
        Err(format!("soak failed: {}", problems.join("; ")).into())
    }
}

/// Two required and two optional sources, each doing what the script of its request says.
fn aggregator() -> Result<Aggregator<Script, u32>, muster::BuildError> {
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
        .source_with("optional-2", source(2), (Optional::value(0), timeout))
        .source_with("optional-3", source(3), (Optional::omit(), timeout))
        .options(Deadline(Duration::from_millis(50)))
        .build()
}

async fn run(aggregator: &Aggregator<Script, u32>, tally: &Tally, range: std::ops::Range<u64>) {
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
        if result.is_ok() != expected_ok {
            tally.wrong.fetch_add(1, Ordering::Relaxed);
        }
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
