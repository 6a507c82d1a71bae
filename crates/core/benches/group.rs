//! `muster_core::Group` against hand-written fail-fast baselines, side by side.
//!
//! Run with:
//!
//! ```text
//! cargo bench -p muster-core --bench group
//! cargo bench -p muster-core --bench group -- fail_fast      # one scenario (a regex)
//! cargo bench -p muster-core --bench group -- --noplot       # no HTML report
//! ```
//!
//! Every benchmark group is a scenario; its function ids are the implementations and its
//! parameter is the number of sources N:
//!
//! - `muster`: `Group::new()`, N `spawn`s with precomputed `&'static str` names, `wait()`.
//! - `try_join_all`: `futures::future::try_join_all` over the N source futures (polled in
//!   place, like the group, but without names, panics, deadline or cause).
//! - `try_join_all_named` (report mode): `try_join_all` over the unboxed futures, each carrying
//!   its name and instrumented with a `source` span: what names and spans alone cost, without
//!   any of the group's checks.
//! - `try_join_all_boxed`: the same over boxed futures, as a hand-written aggregator over
//!   sources of different types (or `async_trait` fetchers) must do: the like-for-like
//!   baseline, since a group stores each task boxed.
//! - `join_set`: `tokio::task::JoinSet`, one runtime task per source tagged with its index so
//!   the outputs come back in spawn order, `join_next` in a loop; on the first error
//!   `abort_all` and drain `join_next` until empty, so every aborted task has been dropped.
//! - `spawn_token`: `tokio::spawn` per source, each selecting on a clone of a
//!   `tokio_util` `CancellationToken`; the handles are awaited in spawn order, and on the first
//!   error the token is cancelled and the remaining handles are awaited.
//!
//! Scenarios (every source returns `Result<usize, Boom>`, `Boom` a zero-size error):
//!
//! - `ready`: each source is immediately `Ok(i)`.
//! - `yield_once`: each source does `tokio::task::yield_now().await`, then `Ok(i)`.
//! - `fail_fast`: source 0 yields once and fails, every other source is pending forever; the
//!   time runs until the implementation returns the error with every sibling dropped.
//! - `cancel_latency` (N = 8): source 0 fails after a real 1 ms `tokio::time::sleep`, the
//!   others sleep 10 s; the time is the sleep (about 2 ms: tokio's timer rounds a deadline up
//!   to its next 1 ms tick) plus detection and cancellation.
//! - `fail_after_timer` (report mode only): the same sources, but the time is only the failure
//!   path: from the moment source 0 returns its error (after its real timer fired) to the
//!   implementation returning with every sibling (and its 10 s timer) dropped, read before its
//!   result (for muster, the `GroupError`) is dropped.
//!
//! In report mode every scenario runs on the 2-worker runtime and again on a current-thread
//! runtime (scenario names ending in `/ct`), and `tokio::try_join!` is measured for N = 2 and
//! 8. `MUSTER_BENCH_ONLY=ready,fail_after_timer` restricts the report to some scenarios and
//! `MUSTER_BENCH_ROUNDS=50` shortens it (and `MUSTER_BENCH_IMPLS=muster` keeps only some
//! implementations), for a quick look while profiling. The same cases in
//! Go (`errgroup.WithContext`, `benches/support/errgroup/`) run when `go` is installed; when
//! it is not, the bench says so and skips them.
//!
//! Everything runs on one tokio multi-thread runtime with 2 worker threads. Each timing loop
//! runs inside a task spawned on that runtime (`to_async(&rt).iter_custom`), because a server
//! handler runs on a worker thread: spawning from a worker uses its local queue, while
//! spawning from `block_on`'s thread goes through the global injection queue and every run
//! pays for waking parked workers and the `block_on` thread (about 57 µs per run for the
//! spawn-based baselines, whatever N, which would hide everything else).
//!
//! With `-- --report PATH` (what `cargo xtask bench` runs) the same implementations are
//! measured interleaved instead (see `support/harness.rs`), and the medians and 99th percentiles are
//! written to PATH for the markdown report.
//!
//! Before measuring, `check` runs every implementation once per scenario and N, and asserts
//! that it returns the right outputs or error (for muster, that the error names the failing
//! source) and that every source future has been dropped when it returns.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode};
use tokio::runtime::Runtime;

#[path = "support/cases.rs"]
mod cases;

use cases::*;

// ---------------------------------------------------------------------------------------------
// Checks, run once before measuring.

/// Source futures alive right now: every implementation must have dropped them all on return.
static LIVE: AtomicUsize = AtomicUsize::new(0);

struct Live;

impl Live {
    fn new() -> Self {
        LIVE.fetch_add(1, Ordering::SeqCst);
        Self
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        LIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `source`, counted in [`LIVE`] for as long as its future exists.
fn counted<S, F>(source: S) -> impl Fn(usize) -> Pin<Box<dyn Future<Output = F::Output> + Send>>
where
    S: Fn(usize) -> F,
    F: Future<Output = Result<usize, Boom>> + Send + 'static,
{
    move |i| {
        let live = Live::new();
        let task = source(i);
        Box::pin(async move {
            let _live = live;
            task.await
        })
    }
}

fn assert_all_dropped(what: &str) {
    assert_eq!(LIVE.load(Ordering::SeqCst), 0, "{what}: source futures still alive after it returned");
}

async fn check_scenario<S, F>(scenario: &str, n: usize, source: S, fails: bool)
where
    S: Fn(usize) -> F + Copy,
    F: Future<Output = Result<usize, Boom>> + Send + 'static,
{
    let expected: Vec<usize> = (0..n).collect();
    let what = |implementation: &str| format!("{scenario}/{implementation}/{n}");

    let muster = run_muster(n, counted(source)).await;
    assert_all_dropped(&what("muster"));
    match muster {
        Ok(outputs) => {
            assert!(!fails, "{}: succeeded, expected a failure", what("muster"));
            assert!(outputs.names().eq(NAMES[..n].iter().copied()), "{}: wrong names", what("muster"));
            let values: Vec<usize> = outputs.iter().map(|(_, &value)| value).collect();
            assert_eq!(values, expected, "{}: wrong outputs", what("muster"));
        }
        Err(error) => {
            assert!(fails, "{}: unexpected failure: {error}", what("muster"));
            assert!(error.is_failed(), "{}: not a task failure: {error}", what("muster"));
            assert_eq!(error.source_name(), Some(NAMES[0]), "{}: wrong failing source", what("muster"));
            assert_eq!(error.cancelled().len(), n - 1, "{}: wrong cancelled siblings", what("muster"));
        }
    }

    let expected = if fails { Err(Boom) } else { Ok(expected) };
    let result = run_try_join_all(n, counted(source)).await;
    assert_all_dropped(&what("try_join_all"));
    assert_eq!(result, expected, "{}", what("try_join_all"));
    let named = run_try_join_all_named(n, counted(source)).await;
    assert_all_dropped(&what("try_join_all_named"));
    match (named, &expected) {
        (Ok(named), Ok(expected)) => {
            assert!(
                named.iter().map(|(name, _)| &**name).eq(NAMES[..n].iter().copied()),
                "{}",
                what("try_join_all_named")
            );
            assert!(named.iter().map(|(_, value)| value).eq(expected), "{}", what("try_join_all_named"));
        }
        (Err((name, Boom)), Err(Boom)) => assert_eq!(name, NAMES[0], "{}", what("try_join_all_named")),
        (named, _) => panic!("{}: {named:?}", what("try_join_all_named")),
    }
    let result = run_try_join_all_boxed(n, counted(source)).await;
    assert_all_dropped(&what("try_join_all_boxed"));
    assert_eq!(result, expected, "{}", what("try_join_all_boxed"));
    let result = run_join_set(n, counted(source)).await;
    assert_all_dropped(&what("join_set"));
    assert_eq!(result, expected, "{}", what("join_set"));
    let result = run_spawn_token(n, counted(source)).await;
    assert_all_dropped(&what("spawn_token"));
    assert_eq!(result, expected, "{}", what("spawn_token"));
    if n == 2 || n == 8 {
        let result = run_try_join(n, counted(source)).await;
        assert_all_dropped(&what("try_join"));
        assert_eq!(result, expected, "{}", what("try_join"));
    }
}

fn check(rt: &Runtime) {
    let checks = async {
        for n in SIZES {
            check_scenario("ready", n, ready, false).await;
            check_scenario("yield_once", n, yield_once, false).await;
            check_scenario("fail_fast", n, fail_fast, true).await;
        }
        let started = Instant::now();
        check_scenario("cancel_latency", LATENCY_N, cancel_latency, true).await;
        for n in SIZES {
            check_scenario("fail_after_timer", n, fail_after_timer, true).await;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "cancel_latency: a sleeping source was waited for");
    };
    // On a worker thread, like the measurements.
    rt.block_on(rt.spawn(checks)).expect("the checks passed");
}

// ---------------------------------------------------------------------------------------------
// Measurements.

/// Times `iters` runs of `run` inside a task on `rt`'s workers.
fn measure<R, F, O>(b: &mut criterion::Bencher<'_>, rt: &Runtime, run: R)
where
    R: Fn() -> F + Copy + Send + 'static,
    F: Future<Output = O> + Send,
{
    b.to_async(rt).iter_custom(|iters| async move {
        tokio::spawn(async move {
            let started = Instant::now();
            for _ in 0..iters {
                black_box(run().await);
            }
            started.elapsed()
        })
        .await
        .expect("the benchmark task does not panic")
    });
}

fn bench_scenario<S, F>(c: &mut Criterion, rt: &Runtime, scenario: &str, sizes: &[usize], source: S)
where
    S: Fn(usize) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Result<usize, Boom>> + Send + 'static,
{
    let mut group = c.benchmark_group(scenario);
    if scenario == "cancel_latency" {
        // ~1 ms per iteration: fewer, equal-sized samples keep the run short.
        group.sample_size(10).sampling_mode(SamplingMode::Flat);
    }
    for &n in sizes {
        group.bench_with_input(BenchmarkId::new("muster", n), &n, |b, &n| {
            measure(b, rt, move || run_muster(n, source));
        });
        group.bench_with_input(BenchmarkId::new("try_join_all", n), &n, |b, &n| {
            measure(b, rt, move || run_try_join_all(n, source));
        });
        group.bench_with_input(BenchmarkId::new("try_join_all_boxed", n), &n, |b, &n| {
            measure(b, rt, move || run_try_join_all_boxed(n, source));
        });
        group.bench_with_input(BenchmarkId::new("join_set", n), &n, |b, &n| {
            measure(b, rt, move || run_join_set(n, source));
        });
        group.bench_with_input(BenchmarkId::new("spawn_token", n), &n, |b, &n| {
            measure(b, rt, move || run_spawn_token(n, source));
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build().expect("a tokio runtime");
    check(&rt);
    bench_scenario(c, &rt, "ready", &SIZES, ready);
    bench_scenario(c, &rt, "yield_once", &SIZES, yield_once);
    bench_scenario(c, &rt, "fail_fast", &SIZES, fail_fast);
    bench_scenario(c, &rt, "cancel_latency", &[LATENCY_N], cancel_latency);
}

// ---------------------------------------------------------------------------------------------
// The interleaved report of `cargo xtask bench` (`-- --report PATH`).

#[path = "support/harness.rs"]
mod harness;

fn report_scenario<S, F>(rt: &Runtime, scenario: &str, n: usize, source: S, report: &mut String)
where
    S: Fn(usize) -> F + Copy + Send + Sync + 'static,
    F: Future<Output = Result<usize, Boom>> + Send + 'static,
{
    let batch = move |implementation: &'static str, iterations: u32| async move {
        let started = Instant::now();
        for _ in 0..iterations {
            run_once(implementation, n, source, false).await;
        }
        started.elapsed()
    };
    harness::interleaved(rt, scenario, n, &implementations(n), batch, report);
}

/// `fail_after_timer`: the sum over the batch of the time from source 0's error to the
/// implementation's return.
fn report_fail_after_timer(rt: &Runtime, scenario: &str, n: usize, report: &mut String) {
    let batch = move |implementation: &'static str, iterations: u32| async move {
        let mut total = Duration::ZERO;
        for _ in 0..iterations {
            let returned = run_once(implementation, n, fail_after_timer, true).await;
            total += Duration::from_nanos(returned.saturating_sub(ERRORED_AT.load(Ordering::Relaxed)));
        }
        total
    };
    // One failure per batch: the median and the percentiles are of single failures (each waits
    // for a real timer, about 2 ms).
    harness::interleaved_fixed(rt, scenario, n, &implementations(n), batch, 1, report);
}

/// Whether `scenario` is in `MUSTER_BENCH_ONLY` (or that is unset).
fn wanted(scenario: &str) -> bool {
    std::env::var("MUSTER_BENCH_ONLY").map_or(true, |only| only.split(',').any(|wanted| wanted == scenario))
}

fn report(rt: &Runtime, suffix: &str, report: &mut String) {
    for n in SIZES {
        if wanted("ready") {
            report_scenario(rt, &format!("ready{suffix}"), n, ready, report);
        }
        if wanted("yield_once") {
            report_scenario(rt, &format!("yield_once{suffix}"), n, yield_once, report);
        }
        if wanted("fail_fast") {
            report_scenario(rt, &format!("fail_fast{suffix}"), n, fail_fast, report);
        }
        if wanted("fail_after_timer") {
            report_fail_after_timer(rt, &format!("fail_after_timer{suffix}"), n, report);
        }
    }
    if wanted("cancel_latency") {
        report_scenario(rt, &format!("cancel_latency{suffix}"), LATENCY_N, cancel_latency, report);
    }
}

/// Runs the Go errgroup version of the scenarios when `go` is installed; says so when not.
fn go_errgroup(report: &mut String) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/support/errgroup");
    match std::process::Command::new("go").arg("version").output() {
        Ok(output) if output.status.success() => {}
        _ => {
            eprintln!("note: `go` is not installed: the Go errgroup comparison is skipped");
            return;
        }
    }
    let output = std::process::Command::new("go").args(["run", "."]).current_dir(dir).output();
    match output {
        Ok(output) if output.status.success() => report.push_str(&String::from_utf8_lossy(&output.stdout)),
        Ok(output) => eprintln!("note: the Go errgroup comparison failed: {}", String::from_utf8_lossy(&output.stderr)),
        Err(error) => eprintln!("note: the Go errgroup comparison could not run: {error}"),
    }
}

/// `MUSTER_BENCH_PROFILE=scenario:implementation:n:iterations`: runs just that, on a
/// current-thread runtime, for a profiler (`valgrind --tool=callgrind`, `perf record`).
fn profile(spec: &str) {
    let parts: Vec<&str> = spec.split(':').collect();
    let [scenario, implementation, n, iterations] = parts[..] else {
        panic!("MUSTER_BENCH_PROFILE=scenario:implementation:n:iterations, not {spec}")
    };
    let (n, iterations): (usize, u32) = (n.parse().expect("a number"), iterations.parse().expect("a number"));
    let implementation: &'static str = Box::leak(implementation.to_owned().into_boxed_str());
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a tokio runtime");
    rt.block_on(async move {
        for _ in 0..iterations {
            let _ = match scenario {
                "ready" => run_once(implementation, n, ready, false).await,
                "yield_once" => run_once(implementation, n, yield_once, false).await,
                "fail_fast" => run_once(implementation, n, fail_fast, false).await,
                _ => run_once(implementation, n, fail_after_timer, false).await,
            };
        }
    });
}

fn main() {
    if let Ok(spec) = std::env::var("MUSTER_BENCH_PROFILE") {
        return profile(&spec);
    }
    if let Some(path) = harness::report_path() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .expect("a tokio runtime");
        let current = tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a tokio runtime");
        check(&rt);
        check(&current);
        let mut lines = String::new();
        report(&rt, "", &mut lines);
        report(&current, "/ct", &mut lines);
        go_errgroup(&mut lines);
        std::fs::write(&path, lines).expect("the report is written");
        return;
    }
    let mut criterion = Criterion::default()
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_millis(500))
        .sample_size(50)
        .configure_from_args();
    benches(&mut criterion);
    criterion.final_summary();
}
