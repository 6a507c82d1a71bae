//! Interleaved measurement for `cargo xtask bench`: every implementation of a scenario runs
//! one batch in turn, round after round, so that a slow phase of the machine hits all of them
//! alike; the report gives the median, the 99th and the 95th percentile of the per-iteration
//! time of the batches, as tab-separated lines `scenario implementation n median_ns p99_ns
//! p95_ns`. With one iteration per batch ([`interleaved_fixed`] with 1), they are percentiles
//! of single runs.
//!
//! Shared by the benches of `muster-core` and `muster` (included with `#[path]`).

use std::fmt::Write as _;
use std::future::Future;
use std::time::{Duration, Instant};

/// Rounds per scenario; each round runs one batch of every implementation. `MUSTER_BENCH_ROUNDS`
/// overrides it (for a quick look while profiling).
pub(crate) const ROUNDS: usize = 200;

fn rounds() -> usize {
    std::env::var("MUSTER_BENCH_ROUNDS").ok().and_then(|rounds| rounds.parse().ok()).unwrap_or(ROUNDS).max(1)
}

/// Runs `batch(implementation, iterations)` for every implementation, interleaved, and appends
/// one line per implementation to `report`. `batch` returns the time `iterations` runs took.
pub(crate) fn interleaved<B, Fut>(
    runtime: &tokio::runtime::Runtime,
    scenario: &str,
    n: usize,
    implementations: &[&'static str],
    batch: B,
    report: &mut String,
) where
    B: Fn(&'static str, u32) -> Fut,
    Fut: Future<Output = Duration> + Send + 'static,
{
    // Calibrate on the first implementation: about 200 µs per batch, at least 1 iteration.
    let probe = runtime.block_on(async { runtime.spawn(batch(implementations[0], 16)).await }).unwrap_or_default();
    let per_iteration = probe.as_nanos().max(1) / 16;
    let iterations = (200_000 / per_iteration).clamp(1, 10_000) as u32;
    interleaved_fixed(runtime, scenario, n, implementations, batch, iterations, report);
}

/// Like [`interleaved`], with `iterations` per batch instead of a calibrated count: for
/// scenarios whose batch returns something other than its wall time (a latency inside each
/// iteration), where calibrating on the returned time would be wrong.
#[allow(dead_code)] // only the core's bench has such a scenario; the aggregator's includes this file too
pub(crate) fn interleaved_fixed<B, Fut>(
    runtime: &tokio::runtime::Runtime,
    scenario: &str,
    n: usize,
    implementations: &[&'static str],
    batch: B,
    iterations: u32,
    report: &mut String,
) where
    B: Fn(&'static str, u32) -> Fut,
    Fut: Future<Output = Duration> + Send + 'static,
{
    let rounds = rounds();
    let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); implementations.len()];
    for round in 0..rounds {
        // Rotate the order, so no implementation always runs right after the same other one.
        for k in 0..implementations.len() {
            let index = (round + k) % implementations.len();
            let started = Instant::now();
            let took = runtime.block_on(async { runtime.spawn(batch(implementations[index], iterations)).await });
            let took = took.unwrap_or_else(|_| started.elapsed());
            samples[index].push(took.as_nanos() as f64 / f64::from(iterations));
        }
    }
    for (implementation, samples) in implementations.iter().zip(&mut samples) {
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        let _ = writeln!(report, "{scenario}\t{implementation}\t{n}\t{:.1}\t{:.1}\t{:.1}", at(0.5), at(0.99), at(0.95));
    }
}

/// Where `--report PATH` asks the report to go, if it does.
pub(crate) fn report_path() -> Option<String> {
    let mut args = std::env::args().skip_while(|arg| arg != "--report");
    args.next()?;
    args.next()
}
