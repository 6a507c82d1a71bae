//! The resilience policies under load (issue 20): a brownout, a source that is down, breaker
//! trips from cancellations, and the cost of a breaker on the hot path.
//!
//! - **Brownout**: `transactions` fails half of its calls (after 20 ms) next to a healthy
//!   `profile`, 1,000 requests a second for 20 s on tokio's paused clock; upstream attempts per
//!   request with `Retry::attempts(3)` and `Hedge(10ms)`, unbudgeted and with a [`Budget`].
//! - **Down**: `transactions` never answers (its `Timeout` fires at 100 ms); request p99 with a
//!   breaker that has opened, against the same aggregator without the down source, and without
//!   a breaker. Real clock; the healthy sources answer after a yield, so that the timer wheel's
//!   millisecond does not hide what the aggregations cost.
//! - **Trips from cancellations**: 10,000 fail-fast aggregations in which a healthy source is
//!   cancelled by a failing sibling; its breaker's trips.
//! - **Breaker cost**: one `fetch` through an open breaker (the refusal) and through a closed
//!   one, against the bare fetcher.
//!
//! Run with `cargo bench -p muster --bench resilience` (prints the markdown) or through
//! `cargo xtask bench`, which passes `-- --report PATH`.

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use muster::policy::{Budget, CircuitBreaker, SlidingWindow};
use muster::{Aggregator, Fetcher, Optional, Retry, Timeout, fetcher_fn, policy::Hedge, policy::Policy};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn paused() -> tokio::runtime::Runtime {
    match tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build() {
        Ok(rt) => rt,
        Err(error) => panic!("a runtime: {error}"),
    }
}

/// A source whose calls fail one in two (a fixed pseudo-random pattern) after `delay`.
fn brownout(
    calls: &Arc<AtomicU64>,
    delay: Duration,
) -> impl Fetcher<u64, Output = u64, Error = std::io::Error> + use<> {
    let calls = Arc::clone(calls);
    fetcher_fn(move |_: &u64| {
        let n = calls.fetch_add(1, Ordering::Relaxed);
        // A multiplicative hash of the call number: half of the calls fail, in no fixed rhythm.
        let fails = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 63 == 1;
        async move {
            tokio::time::sleep(delay).await;
            if fails { Err(std::io::Error::other("503")) } else { Ok(n) }
        }
    })
}

fn healthy() -> impl Fetcher<u64, Output = u64, Error = Infallible> + Clone + 'static {
    fetcher_fn(|id: &u64| {
        let id = *id;
        async move {
            tokio::time::sleep(ms(1)).await;
            Ok(id)
        }
    })
}

const REQUESTS: u64 = 20_000;

/// Upstream attempts per request in the brownout, with the policies `$policies` on
/// `transactions` (a macro: each tuple of policies makes another aggregator type).
macro_rules! attempts_per_request {
    ($policies:expr) => {{
        let calls = Arc::new(AtomicU64::new(0));
        let aggregator = match Aggregator::builder()
            .source("profile", healthy())
            .source_with("transactions", brownout(&calls, ms(20)), (Optional, $policies))
            .build()
        {
            Ok(aggregator) => Arc::new(aggregator),
            Err(error) => panic!("valid policies: {error}"),
        };
        paused().block_on(async {
            let start = tokio::time::Instant::now();
            let mut tasks = Vec::new();
            for i in 0..REQUESTS {
                // 1,000 requests a second.
                tokio::time::sleep_until(start + Duration::from_micros(i * 1_000)).await;
                let aggregator = Arc::clone(&aggregator);
                tasks.push(tokio::spawn(async move { aggregator.aggregate(&i).await.is_ok() }));
            }
            for task in tasks {
                let _ = task.await;
            }
        });
        calls.load(Ordering::Relaxed) as f64 / REQUESTS as f64
    }};
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    samples.sort_unstable();
    let index = ((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1;
    samples[index]
}

/// Request latencies of `aggregate`, `n` times, on a real clock.
fn latencies<F: Future<Output = ()>>(
    rt: &tokio::runtime::Runtime,
    n: usize,
    aggregate: impl Fn() -> F,
) -> Vec<Duration> {
    rt.block_on(async {
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let started = Instant::now();
            aggregate().await;
            samples.push(started.elapsed());
        }
        samples
    })
}

/// A healthy source that answers after one yield: no timer, so that the p99s compare what
/// the aggregations do, not the timer wheel's millisecond.
fn quick() -> impl Fetcher<u64, Output = u64, Error = Infallible> + Clone + 'static {
    fetcher_fn(|id: &u64| {
        let id = *id;
        async move {
            tokio::task::yield_now().await;
            Ok(id)
        }
    })
}

fn down(report: &mut String) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(rt) => rt,
        Err(error) => panic!("a runtime: {error}"),
    };
    let hang = || fetcher_fn(|_: &u64| std::future::pending::<Result<u64, std::io::Error>>());
    let breaker = CircuitBreaker::new().window(SlidingWindow::Count(20)).min_calls(5);
    let handle = breaker.handle();
    let built = (
        Aggregator::builder()
            .source("profile", quick())
            .source("offers", quick())
            .source_with("transactions", hang(), (Optional, breaker, Timeout(ms(100))))
            .build(),
        Aggregator::builder().source("profile", quick()).source("offers", quick()).build(),
        Aggregator::builder()
            .source("profile", quick())
            .source("offers", quick())
            .source_with("transactions", hang(), (Optional, Timeout(ms(100))))
            .build(),
    );
    let (with_breaker, others, without) = match built {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => panic!("valid aggregators"),
    };
    // Open the breaker: five timeouts.
    let _ = latencies(&rt, 5, || async {
        let _ = with_breaker.aggregate(&1).await;
    });
    assert!(matches!(handle.state(), muster::policy::BreakerState::Open { .. }), "the breaker opened");
    let mut open = Vec::new();
    let mut healthy_only = Vec::new();
    // Interleaved batches, so that both see the same machine.
    for _ in 0..20 {
        open.extend(latencies(&rt, 500, || async {
            let _ = with_breaker.aggregate(&1).await;
        }));
        healthy_only.extend(latencies(&rt, 500, || async {
            let _ = others.aggregate(&1).await;
        }));
    }
    let mut no_breaker = latencies(&rt, 10, || async {
        let _ = without.aggregate(&1).await;
    });
    let (p99_open, p99_others) = (percentile(&mut open, 0.99), percentile(&mut healthy_only, 0.99));
    let p99_none = percentile(&mut no_breaker, 0.99);
    let delta = p99_open.as_secs_f64() * 1e3 - p99_others.as_secs_f64() * 1e3;
    *report += "| a source down (never answers, `Timeout(100ms)`), 2 healthy sources answering after a yield; 10,000 requests each, interleaved | request p99 |\n|---|---|\n";
    *report += &format!("| breaker open | {:.3} ms |\n", p99_open.as_secs_f64() * 1e3);
    *report += &format!("| the healthy sources alone | {:.3} ms |\n", p99_others.as_secs_f64() * 1e3);
    *report += &format!("| no breaker | {:.3} ms |\n", p99_none.as_secs_f64() * 1e3);
    *report += &format!("\nBreaker open minus the others: {delta:+.3} ms (target: at most +1 ms).\n\n");
}

fn trips(report: &mut String) {
    let breaker = CircuitBreaker::new().window(SlidingWindow::Count(5)).min_calls(1).consecutive_failures(1);
    let handle = breaker.handle();
    let slow = fetcher_fn(|_: &u64| async {
        tokio::time::sleep(ms(20)).await;
        Ok::<_, std::io::Error>(1)
    });
    let failing = fetcher_fn(|_: &u64| async {
        tokio::time::sleep(ms(1)).await;
        Err::<u64, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
    });
    let aggregator = match Aggregator::builder()
        .source_with("healthy", slow, (breaker, Timeout(ms(500))))
        .source("failing", failing)
        .build()
    {
        Ok(aggregator) => aggregator,
        Err(error) => panic!("valid policies: {error}"),
    };
    let failed = paused().block_on(async {
        let mut failed = 0;
        for _ in 0..10_000 {
            failed += usize::from(aggregator.aggregate(&1).await.is_err());
        }
        failed
    });
    *report += &format!(
        "Trips from cancellations: {failed} fail-fast aggregations cancelled a healthy source behind the most eager \
         breaker (one failure opens it); its breaker opened {} times (target: 0).\n\n",
        handle.trips()
    );
}

/// Nanoseconds per `fetch` of `fetcher`, best of 5 runs of 200,000.
fn per_fetch<F: Fetcher<u64>>(rt: &tokio::runtime::Runtime, fetcher: &F) -> f64 {
    const N: u32 = 200_000;
    (0..5)
        .map(|_| {
            rt.block_on(async {
                let started = Instant::now();
                for i in 0..N {
                    let _ = black_box(fetcher.fetch(black_box(&u64::from(i))).await);
                }
                started.elapsed().as_secs_f64() * 1e9 / f64::from(N)
            })
        })
        .fold(f64::INFINITY, f64::min)
}

fn cost(report: &mut String) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(rt) => rt,
        Err(error) => panic!("a runtime: {error}"),
    };
    let ready = || fetcher_fn(|id: &u64| std::future::ready(Ok::<_, std::io::Error>(*id)));
    let bare = per_fetch(&rt, &ready());
    let closed = per_fetch(&rt, &CircuitBreaker::new().wrap(ready()));
    let open_breaker = CircuitBreaker::new();
    open_breaker.handle().force_open();
    let open = per_fetch(&rt, &open_breaker.wrap(ready()));
    *report += "| one `fetch` | ns |\n|---|---|\n";
    *report += &format!("| the bare fetcher | {bare:.0} |\n| through a closed breaker | {closed:.0} |\n");
    *report += &format!("| refused by an open breaker (a breaker hit) | {open:.0} |\n\n");
    *report += &format!("Breaker hit: {:.2} µs (target: at most 2 µs).\n\n", open / 1e3);
}

fn brownout_table(report: &mut String) {
    let policies = || (Retry::attempts(3).backoff(ms(5), ms(20)), Hedge(ms(10)), Timeout(ms(300)));
    let unbudgeted = attempts_per_request!(policies());
    let budgeted = attempts_per_request!((Budget::new(), policies()));
    let tight = attempts_per_request!((Budget::new().percent(5.0), policies()));
    *report += "| brownout: `transactions` fails 50 % after 20 ms; 1,000 requests/s for 20 s; `Retry::attempts(3)`, `Hedge(10ms)`, `Timeout(300ms)` | upstream attempts per request |\n|---|---|\n";
    *report += &format!("| unbudgeted | {unbudgeted:.3} |\n");
    *report += &format!("| `Budget::new()` (10 %, at least 5/s, over 10 s) | {budgeted:.3} |\n");
    *report += &format!("| `Budget::new().percent(5.0)` (5 %, at least 5/s) | {tight:.3} |\n\n");
}

fn main() -> std::io::Result<()> {
    let mut report = String::from("## Resilience (`cargo bench -p muster --bench resilience`)\n\n");
    brownout_table(&mut report);
    down(&mut report);
    trips(&mut report);
    cost(&mut report);
    let mut args = std::env::args().skip_while(|arg| arg != "--report").skip(1);
    match args.next() {
        Some(path) => std::fs::write(path, report),
        None => {
            print!("{report}");
            Ok(())
        }
    }
}
