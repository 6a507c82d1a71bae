//! The cost of one access log line: formatting it and handing it to the non-blocking writer,
//! by hand (`dashboard::logging::AccessLog`, what the dashboard does) against a
//! `tracing::info!` event through tracing-subscriber's JSON layer (what it did before), both
//! writing to a sink through tracing-appender's lossy non-blocking writer.
//!
//! Interleaved rounds of 1,000 lines each; per line, the median and 99th percentile over the
//! rounds. `cargo xtask bench` runs it with `-- --report PATH` and puts the rows in its report;
//! alone (`cargo bench -p dashboard --bench access_log`) it prints them.

use std::hint::black_box;
use std::time::{Duration, Instant};

use dashboard::logging::{AccessLine, AccessLog};
use tracing_appender::non_blocking::NonBlockingBuilder;

const ROUNDS: usize = 200;
const LINES: usize = 1_000;

fn line(i: usize) -> AccessLine<'static> {
    AccessLine {
        method: "GET",
        path: "/dashboard/42",
        status: if i % 10 == 0 { 502 } else { 200 },
        elapsed_ms: (i % 7) as u64,
        request_id: "7f3a9c2e5b1d4f60",
        user_id: Some("42"),
        source: (i % 10 == 0).then_some("transactions"),
        kind: (i % 10 == 0).then_some("status"),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn main() {
    let builder = || NonBlockingBuilder::default().lossy(true).buffered_lines_limit(16 * 1024);
    let (hand_writer, _hand_guard) = builder().finish(std::io::sink());
    let hand = AccessLog::new(hand_writer);
    let (tracing_writer, _tracing_guard) = builder().finish(std::io::sink());
    let subscriber = {
        use tracing_subscriber::layer::SubscriberExt as _;
        tracing_subscriber::registry().with(tracing_subscriber::fmt::layer().json().with_writer(tracing_writer))
    };
    let dispatch = tracing::Dispatch::new(subscriber);

    let by_hand = || {
        let started = Instant::now();
        for i in 0..LINES {
            hand.log(black_box(&line(i)));
        }
        started.elapsed()
    };
    let through_tracing = || {
        tracing::dispatcher::with_default(&dispatch, || {
            let started = Instant::now();
            for i in 0..LINES {
                let AccessLine { method, path, status, elapsed_ms, request_id, user_id, source, kind } =
                    black_box(line(i));
                tracing::info!(
                    target: "dashboard::app",
                    method,
                    path,
                    status,
                    elapsed_ms,
                    request_id,
                    user_id,
                    source,
                    kind,
                    "request"
                );
            }
            started.elapsed()
        })
    };
    // Warm-up.
    let _ = (by_hand(), through_tracing());
    let (mut hand_ns, mut tracing_ns) = (Vec::with_capacity(ROUNDS), Vec::with_capacity(ROUNDS));
    let per_line = |elapsed: Duration| elapsed.as_nanos() as f64 / LINES as f64;
    for _ in 0..ROUNDS {
        hand_ns.push(per_line(by_hand()));
        tracing_ns.push(per_line(through_tracing()));
        // Let the writer threads drain, so each round starts with room in the queue.
        std::thread::sleep(Duration::from_millis(2));
    }
    let mut report = String::from("# access log: one line formatted and enqueued, per line\n");
    for (name, mut samples) in [("dashboard", hand_ns), ("tracing_json", tracing_ns)] {
        samples.sort_by(f64::total_cmp);
        let (median, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
        report += &format!("access_log_line\t{name}\t1\t{median:.1}\t{p99:.1}\n");
    }
    let mut args = std::env::args().skip_while(|arg| arg != "--report").skip(1);
    match args.next() {
        Some(path) => {
            if let Err(error) = std::fs::write(&path, &report) {
                eprintln!("access_log: cannot write {path}: {error}");
                std::process::exit(1);
            }
        }
        None => print!("{report}"),
    }
}
