//! Heap allocations of one run of each implementation of the group benchmark (`group.rs`), per
//! scenario and N, counted by a counting global allocator (`stats_alloc`). A binary of its own,
//! so that the counting (atomic adds on every allocation and free) does not slow the times.
//!
//! Run with `cargo bench -p muster-core --bench allocations` (prints the lines) or through
//! `cargo xtask bench`, which passes `-- --report PATH`. Each line is
//! `#alloc scenario implementation n allocations` (tab-separated): the allocations of one run,
//! counted on a current-thread runtime after a first run that warms it up. The bench's sources
//! allocate nothing, so a group's count is all its own. A `# ...` line gives the size of the
//! group's `Wait` future.

use std::alloc::System;
use std::fmt::Write as _;
use std::future::Future;

use muster_core::Wait;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[path = "support/cases.rs"]
#[allow(dead_code)] // the timing-only parts (the timer scenarios' clock) are unused here
mod cases;
#[path = "support/harness.rs"]
#[allow(dead_code)] // only `report_path` is used here
mod harness;

use cases::{Boom, SIZES, fail_fast, implementations, ready, run_once, yield_once};

/// Counts every allocation of the process.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Appends the allocations of one run of every implementation of `scenario` at `n`.
fn count<S, F>(runtime: &tokio::runtime::Runtime, scenario: &str, n: usize, source: S, report: &mut String)
where
    S: Fn(usize) -> F + Copy,
    F: Future<Output = Result<usize, Boom>> + Send + 'static,
{
    for implementation in implementations(n) {
        runtime.block_on(run_once(implementation, n, source, false));
        let region = Region::new(GLOBAL);
        runtime.block_on(run_once(implementation, n, source, false));
        let allocations = region.change().allocations;
        let _ = writeln!(report, "#alloc\t{scenario}\t{implementation}\t{n}\t{allocations}");
    }
}

fn main() {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(runtime) => runtime,
        Err(error) => panic!("a current-thread runtime: {error}"),
    };
    // Moved from `Group::wait` into the caller's future: its size is copied on each move.
    let mut report =
        format!("# `Wait<'_, usize>`, moved into the caller's future, is {} bytes\n", size_of::<Wait<'_, usize>>());
    for n in SIZES {
        count(&runtime, "ready", n, ready, &mut report);
        count(&runtime, "yield_once", n, yield_once, &mut report);
        count(&runtime, "fail_fast", n, fail_fast, &mut report);
    }
    match harness::report_path() {
        Some(path) => {
            if let Err(error) = std::fs::write(&path, report) {
                panic!("cannot write {path}: {error}");
            }
        }
        None => print!("{report}"),
    }
}
