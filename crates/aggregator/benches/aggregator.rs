//! The price of the aggregator's extras: the full `Aggregator` (names, source policies, the
//! report, an `aggregate` span with no subscriber installed, a deadline and a context field)
//! against a bare `muster_core::Group` running the same fetchers, interleaved (see
//! `crates/core/benches/support/harness.rs`).
//!
//! Run with `cargo bench -p muster --bench aggregator` (prints the table) or through
//! `cargo xtask bench`, which passes `-- --report PATH`.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use muster::{Aggregator, Deadline, Fetcher, Field, Group, fetcher_fn};

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

fn scenario<F>(rt: &tokio::runtime::Runtime, name: &str, n: usize, fetcher: F, report: &mut String)
where
    F: Fetcher<u64, Output = u64, Error = Infallible> + Clone + Send + Sync + 'static,
{
    let mut builder = Aggregator::builder().options((Deadline(Duration::from_secs(1)), Field::new("user_id", 42)));
    for name in &NAMES[..n] {
        builder = builder.source(*name, fetcher.clone());
    }
    let aggregator = match builder.build() {
        Ok(aggregator) => aggregator,
        Err(error) => panic!("the benchmark's aggregator is valid: {error}"),
    };
    let batch = move |implementation: &'static str, iterations: u32| {
        let (aggregator, fetcher) = (aggregator.clone(), fetcher.clone());
        async move {
            let started = Instant::now();
            for _ in 0..iterations {
                if implementation == "aggregator" {
                    drop(black_box(aggregator.aggregate(&7).await));
                } else {
                    let mut group = Group::new();
                    for name in &NAMES[..n] {
                        drop(group.spawn(*name, fetcher.fetch(&7)));
                    }
                    drop(black_box(group.wait().await));
                }
            }
            started.elapsed()
        }
    };
    harness::interleaved(rt, name, n, &["aggregator", "group"], batch, report);
}

fn main() -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_time().build()?;
    let mut report = String::new();
    for n in [2, 8] {
        scenario(&rt, "aggregator_ready", n, ready(), &mut report);
        scenario(&rt, "aggregator_yield_once", n, yield_once(), &mut report);
    }
    match harness::report_path() {
        Some(path) => std::fs::write(path, report),
        None => {
            print!("{report}");
            Ok(())
        }
    }
}
