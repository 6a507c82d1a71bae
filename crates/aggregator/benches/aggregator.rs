//! The price of the aggregator's extras: the full typed `Aggregator` (names, outputs as a
//! tuple, the report, an `aggregate` span with no subscriber installed) against a bare
//! `muster::Group` running the same fetchers, both with the same options (a deadline and a
//! context field), interleaved (see
//! `crates/core/benches/support/harness.rs`). A counting allocator gives the heap allocations
//! per aggregation beside the times.
//!
//! `in_flight` compares the same aggregation with and without an `InFlight` registry (the
//! live view's cost when nobody looks).
//!
//! Run with `cargo bench -p muster --bench aggregator` (prints the table) or through
//! `cargo xtask bench`, which passes `-- --report PATH`.
//!
//! With `MUSTER_BENCH_TRACING=1` a subscriber that enables every span and writes nothing
//! (tracing-subscriber's `Registry`) is installed first, so that the spans are made for real:
//! the `aggregate` span with its fields, whose metadata is looked up on every aggregation.

use std::alloc::System;
use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

use muster::{
    Aggregator, Deadline, Fetcher, Group, builder::Input, builder::SourceOutputs, fetcher_fn, options::Field,
    options::GroupConfig,
};

/// Counts every allocation of the process.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[path = "../../core/benches/support/harness.rs"]
mod harness;

const NAMES: [&str; 8] = ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"];

fn ready() -> impl Fetcher<u64, Output = u64, Error = Infallible> + Clone + 'static {
    fetcher_fn(|id: &u64| {
        let id = *id;
        async move { Ok(id) }
    })
}

fn yield_once() -> impl Fetcher<u64, Output = u64, Error = Infallible> + Clone + 'static {
    fetcher_fn(|id: &u64| {
        let id = *id;
        async move {
            tokio::task::yield_now().await;
            Ok(id)
        }
    })
}

/// The options of every aggregator and group here: a deadline and a context field.
fn options() -> GroupConfig {
    match GroupConfig::build((Deadline(Duration::from_secs(1)), Field::new("service", "bench"))) {
        Ok(config) => config,
        Err(error) => panic!("the benchmark's options are valid: {error}"),
    }
}

/// The typed aggregator of `n` sources (2 or 8), all `fetcher`.
macro_rules! typed {
    ($fetcher:expr, $($name:literal)+) => {{
        let builder = Aggregator::builder().options((Deadline(Duration::from_secs(1)), Field::new("service", "bench")));
        $(let builder = builder.source($name, $fetcher.clone());)+
        match builder.build() {
            Ok(aggregator) => aggregator,
            Err(error) => panic!("the benchmark's aggregator is valid: {error}"),
        }
    }};
}

/// Allocations of one run of `future`, on a current-thread runtime (nothing else allocates).
fn allocations<F: std::future::Future>(future: F) -> u64 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(runtime) => runtime,
        Err(error) => panic!("a current-thread runtime: {error}"),
    };
    let region = Region::new(GLOBAL);
    runtime.block_on(future);
    region.change().allocations as u64
}

fn scenario<F, O>(
    rt: &tokio::runtime::Runtime,
    name: &str,
    n: usize,
    fetcher: F,
    aggregator: Aggregator<u64, O>,
    report: &mut String,
) where
    F: Fetcher<u64, Output = u64, Error = Infallible> + Clone + Send + Sync + 'static,
    O: SourceOutputs<u64>,
{
    let group = move |fetcher: F| async move {
        // The same options as the aggregator's: the comparison is of what the aggregator adds.
        let mut group = Group::from_config(options());
        for name in &NAMES[..n] {
            drop(group.spawn(*name, fetcher.fetch(&7)));
        }
        drop(black_box(group.wait().await));
    };
    // Warm up once (the first aggregation registers the span's metadata), then count.
    allocations(async { drop(aggregator.aggregate(&7).await) });
    let typed = allocations(async { drop(black_box(aggregator.aggregate(&7).await)) });
    let bare = allocations(group(fetcher.clone()));
    let per_source = typed.saturating_sub(bare) as f64 / n as f64;
    use std::fmt::Write as _;
    let _ = writeln!(
        report,
        "# {name} n={n}: {typed} allocations per aggregation, {bare} for the bare group: {per_source:.2} more per source"
    );
    // The same, for `cargo xtask bench`'s targets table.
    let _ = writeln!(report, "#alloc\t{name}\taggregator\t{n}\t{typed}\n#alloc\t{name}\tgroup\t{n}\t{bare}");
    let batch = move |implementation: &'static str, iterations: u32| {
        let (aggregator, fetcher) = (aggregator.clone(), fetcher.clone());
        async move {
            let started = Instant::now();
            for _ in 0..iterations {
                if implementation == "aggregator" {
                    drop(black_box(aggregator.aggregate(&7).await));
                } else {
                    group(fetcher.clone()).await;
                }
            }
            started.elapsed()
        }
    };
    harness::interleaved(rt, name, n, &["aggregator", "group"], batch, report);
}

/// A two-stage aggregation: `b` needs `a`'s output. Against the same as two bare groups one
/// after the other, and hand-written: `a` then `b`, awaited in turn.
fn two_stage(rt: &tokio::runtime::Runtime, report: &mut String) {
    let stage = || {
        fetcher_fn(|id: &u64| {
            let id = *id;
            async move {
                tokio::task::yield_now().await;
                Ok::<_, Infallible>(id + 1)
            }
        })
    };
    let aggregator = match Aggregator::builder()
        .options((Deadline(Duration::from_secs(1)), Field::new("service", "bench")))
        .source("a", stage())
        .then("b", Input::<0>, |_: &u64, a: &u64| *a, stage())
        .build()
    {
        Ok(aggregator) => aggregator,
        Err(error) => panic!("the benchmark's aggregator is valid: {error}"),
    };
    let fetcher = stage();
    let batch = move |implementation: &'static str, iterations: u32| {
        let (aggregator, fetcher) = (aggregator.clone(), fetcher);
        async move {
            let started = Instant::now();
            for _ in 0..iterations {
                match implementation {
                    "aggregator" => drop(black_box(aggregator.aggregate(&7).await)),
                    "group" => {
                        let mut first = Group::from_config(options());
                        drop(first.spawn("a", fetcher.fetch(&7)));
                        let a = first.wait().await.ok().and_then(|mut outputs| outputs.take("a")).unwrap_or(0);
                        let mut second = Group::from_config(options());
                        drop(second.spawn("b", fetcher.fetch(&a)));
                        drop(black_box(second.wait().await));
                    }
                    _ => {
                        let a = fetcher.fetch(&7).await.unwrap_or(0);
                        let _ = black_box(fetcher.fetch(&a).await);
                    }
                }
            }
            started.elapsed()
        }
    };
    harness::interleaved(rt, "two_stage", 2, &["aggregator", "group", "hand-written"], batch, report);
}

/// The in-flight view when nobody looks: the same aggregation of 2 sources, shown in an
/// `InFlight` registry or not, interleaved; the report line `# in_flight` gives the ratio of
/// the medians and the allocations of each.
fn in_flight(rt: &tokio::runtime::Runtime, report: &mut String) {
    let registry = muster::in_flight::InFlight::new(64);
    let build = |shown: bool| {
        let builder = Aggregator::builder()
            .options((Deadline(Duration::from_secs(1)), Field::new("service", "bench")))
            .source("s0", yield_once())
            .source("s1", yield_once());
        let builder = if shown { builder.in_flight(&registry) } else { builder };
        match builder.build() {
            Ok(aggregator) => aggregator,
            Err(error) => panic!("the benchmark's aggregator is valid: {error}"),
        }
    };
    let (off, on) = (build(false), build(true));
    allocations(async { drop(on.aggregate(&7).await) });
    let (allocations_off, allocations_on) = (
        allocations(async { drop(black_box(off.aggregate(&7).await)) }),
        allocations(async { drop(black_box(on.aggregate(&7).await)) }),
    );
    let batch = move |implementation: &'static str, iterations: u32| {
        let aggregator = if implementation == "registry_on" { on.clone() } else { off.clone() };
        async move {
            let started = Instant::now();
            for _ in 0..iterations {
                drop(black_box(aggregator.aggregate(&7).await));
            }
            started.elapsed()
        }
    };
    let mut lines = String::new();
    harness::interleaved(rt, "in_flight", 2, &["registry_off", "registry_on"], batch, &mut lines);
    let median = |implementation: &str| {
        let line = lines.lines().find(|line| line.split('\t').nth(1) == Some(implementation));
        line.and_then(|line| line.split('\t').nth(3)).and_then(|median| median.parse::<f64>().ok()).unwrap_or(f64::NAN)
    };
    use std::fmt::Write as _;
    let _ = writeln!(
        report,
        "# in_flight n=2: registry on / off = {:.3} (medians), {allocations_on} allocations per aggregation on, {allocations_off} off",
        median("registry_on") / median("registry_off")
    );
    report.push_str(&lines);
}

/// `MUSTER_BENCH_PROFILE=scenario:implementation:n:iterations` (`ready` or `yield_once`,
/// `aggregator` or `group`, 2 or 8): runs just that, on a current-thread runtime, for a
/// profiler (`valgrind --tool=callgrind`, `--tool=dhat` for the allocation sites).
fn profile(spec: &str) -> std::io::Result<()> {
    let parts: Vec<&str> = spec.split(':').collect();
    let invalid =
        || std::io::Error::other(format!("MUSTER_BENCH_PROFILE=scenario:implementation:n:iterations, not {spec}"));
    let [scenario, implementation, n, iterations] = parts[..] else { return Err(invalid()) };
    let (n, iterations): (usize, u32) = match (n.parse(), iterations.parse()) {
        (Ok(n), Ok(iterations)) if n == 2 || n == 8 => (n, iterations),
        _ => return Err(invalid()),
    };
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build()?;
    macro_rules! run {
        ($fetcher:expr) => {{
            let fetcher = $fetcher;
            let (two, eight) = (typed!(fetcher, "s0" "s1"), typed!(fetcher, "s0" "s1" "s2" "s3" "s4" "s5" "s6" "s7"));
            rt.block_on(async move {
                for _ in 0..iterations {
                    match (implementation, n) {
                        ("aggregator", 2) => drop(black_box(two.aggregate(&7).await)),
                        ("aggregator", _) => drop(black_box(eight.aggregate(&7).await)),
                        _ => {
                            let mut group = Group::from_config(options());
                            for name in &NAMES[..n] {
                                drop(group.spawn(*name, fetcher.fetch(&7)));
                            }
                            drop(black_box(group.wait().await));
                        }
                    }
                }
            })
        }};
    }
    match scenario {
        "ready" => run!(ready()),
        _ => run!(yield_once()),
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    if let Ok(spec) = std::env::var("MUSTER_BENCH_PROFILE") {
        return profile(&spec);
    }
    if std::env::var_os("MUSTER_BENCH_TRACING").is_some() {
        if let Err(error) = tracing::subscriber::set_global_default(tracing_subscriber::registry()) {
            panic!("no other subscriber is installed: {error}");
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build()?;
    let mut report = String::new();
    scenario(&rt, "aggregator_ready", 2, ready(), typed!(ready(), "s0" "s1"), &mut report);
    scenario(&rt, "aggregator_yield_once", 2, yield_once(), typed!(yield_once(), "s0" "s1"), &mut report);
    scenario(
        &rt,
        "aggregator_ready",
        8,
        ready(),
        typed!(ready(), "s0" "s1" "s2" "s3" "s4" "s5" "s6" "s7"),
        &mut report,
    );
    scenario(
        &rt,
        "aggregator_yield_once",
        8,
        yield_once(),
        typed!(yield_once(), "s0" "s1" "s2" "s3" "s4" "s5" "s6" "s7"),
        &mut report,
    );
    two_stage(&rt, &mut report);
    in_flight(&rt, &mut report);
    match harness::report_path() {
        Some(path) => std::fs::write(path, report),
        None => {
            print!("{report}");
            Ok(())
        }
    }
}
