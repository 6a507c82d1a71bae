//! The cost of a `Cache` hit (issue 20: at most 2 µs per source on the local tier), and of a
//! read from the Redis tier when `redis-server` is on the PATH (started on a free port,
//! killed after).
//!
//! - `cache_hit` n=1: one fetch of a ready fetcher, against a hit of the same fetcher behind a
//!   `Cache` (outside an aggregation, so the report note costs nothing).
//! - `aggregator_cached` n=8: an 8-source aggregation whose sources are all ready fetchers,
//!   against the same with every source a cache hit; the difference over 8 is the cost of a hit
//!   per source, report note included.
//! - `redis_tier_read` n=1: an aggregation of one source whose local tier misses and whose
//!   Redis tier has the fresh value (a `GET` on 127.0.0.1 and the JSON decoding).
//!
//! Run with `cargo bench -p muster --features redis,mock --bench cache` (prints the
//! tab-separated report: `scenario implementation n median_ns p99_ns`), or through
//! `cargo xtask bench`.

use std::convert::Infallible;
use std::hint::black_box;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use muster::policy::{Cache, RedisTier};
use muster::{Aggregator, Fetcher, fetcher_fn, policy::Policy};

#[path = "../../core/benches/support/harness.rs"]
mod harness;

fn ready() -> impl Fetcher<u64, Output = u64, Error = Infallible> + Clone + 'static {
    fetcher_fn(|id: &u64| {
        let id = *id;
        async move { Ok(id) }
    })
}

fn cache() -> Cache<fn(&u64) -> u64> {
    Cache::new((|id: &u64| *id) as fn(&u64) -> u64).ttl(Duration::from_secs(3_600))
}

macro_rules! eight {
    ($policy:expr) => {{
        let builder = Aggregator::builder();
        let builder = builder
            .source_with("s0", ready(), $policy)
            .source_with("s1", ready(), $policy)
            .source_with("s2", ready(), $policy)
            .source_with("s3", ready(), $policy)
            .source_with("s4", ready(), $policy)
            .source_with("s5", ready(), $policy)
            .source_with("s6", ready(), $policy)
            .source_with("s7", ready(), $policy);
        match builder.build() {
            Ok(aggregator) => aggregator,
            Err(error) => panic!("the benchmark's aggregator is valid: {error}"),
        }
    }};
}

fn local(rt: &tokio::runtime::Runtime, report: &mut String) {
    let plain = ready();
    let cached = Arc::new(cache().wrap(ready()));
    rt.block_on(async { black_box(cached.fetch(&7).await) }).ok();
    let batch = move |implementation: &'static str, iterations: u32| {
        let (plain, cached) = (plain.clone(), Arc::clone(&cached));
        async move {
            let started = Instant::now();
            for _ in 0..iterations {
                match implementation {
                    "cache hit" => drop(black_box(cached.fetch(black_box(&7)).await)),
                    _ => drop(black_box(plain.fetch(black_box(&7)).await)),
                }
            }
            started.elapsed()
        }
    };
    harness::interleaved(rt, "cache_hit", 1, &["fetcher", "cache hit"], batch, report);

    let plain = eight!(());
    let cached = eight!(cache());
    rt.block_on(async { black_box(cached.aggregate(&7).await) }).ok();
    let batch = move |implementation: &'static str, iterations: u32| {
        let (plain, cached) = (plain.clone(), cached.clone());
        async move {
            let started = Instant::now();
            for _ in 0..iterations {
                match implementation {
                    "cached" => drop(black_box(cached.aggregate(&7).await)),
                    _ => drop(black_box(plain.aggregate(&7).await)),
                }
            }
            started.elapsed()
        }
    };
    harness::interleaved(rt, "aggregator_cached", 8, &["ready", "cached"], batch, report);
}

/// Kills the bench's `redis-server` when dropped.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis(rt: &tokio::runtime::Runtime, report: &mut String) -> Result<(), String> {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(|e| e.to_string())?.port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|error| format!("no redis-server ({error}): the Redis tier read is not measured"))?;
    let _server = Server(child);
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(10) {
            return Err("redis-server did not start".to_owned());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let url = format!("redis://127.0.0.1:{port}");
    let tier = || RedisTier::new(&url).map(|tier| tier.namespace("bench").read_timeout(Duration::from_millis(100)));
    let tier = tier().map_err(|error| error.to_string())?;
    // Every key is read once, from a replica whose local tier never had it: fill Redis first.
    let rounds =
        std::env::var("MUSTER_BENCH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(harness::ROUNDS).max(1);
    let iterations = 50_u32;
    let keys = rounds as u64 * u64::from(iterations) + 100;
    let writer = Aggregator::builder()
        .source_with("balance", ready(), cache().redis(tier.clone()))
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        for key in 0..keys {
            drop(writer.aggregate(&key).await);
            if key % 64 == 0 {
                tokio::task::yield_now().await;
            }
        }
        // Wait for the background writes to land.
        tokio::time::sleep(Duration::from_millis(500)).await;
    });
    let reader = Aggregator::builder()
        .source_with("balance", ready(), cache().redis(tier.clone()))
        .build()
        .map_err(|e| e.to_string())?;
    let next = Arc::new(AtomicU64::new(0));
    let batch = move |_: &'static str, iterations: u32| {
        let (reader, next) = (reader.clone(), Arc::clone(&next));
        async move {
            let started = Instant::now();
            for _ in 0..iterations {
                let key = next.fetch_add(1, Ordering::Relaxed);
                drop(black_box(reader.aggregate(&key).await));
            }
            started.elapsed()
        }
    };
    harness::interleaved_fixed(rt, "redis_tier_read", 1, &["shared-tier hit"], batch, iterations, report);
    use std::fmt::Write as _;
    let _ = writeln!(report, "# redis_tier_read: {} failures on the tier (a failure reads as a miss)", tier.failures());
    Ok(())
}

fn main() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let mut report = String::new();
    local(&rt, &mut report);
    if let Err(why) = redis(&rt, &mut report) {
        report.push_str(&format!("# {why}\n"));
    }
    match harness::report_path() {
        Some(path) => std::fs::write(path, report),
        None => {
            print!("{report}");
            Ok(())
        }
    }
}
