//! A stderr nobody reads (a full pipe, log lines being dropped) does not block the exit: the
//! last "N log lines were dropped" write is bounded, and a second signal always exits. In a
//! file of their own: the load that fills the pipe would slow the timing tests beside them.

#[path = "support/running.rs"]
mod running;
mod support;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use running::Running;
use support::{LIMIT, MARGIN, get, within};

/// The dashboard at `RUST_LOG=trace` with a stderr pipe nobody reads, loaded until its
/// `/metrics` say log lines were dropped (the pipe and the logger's buffer are full).
async fn with_a_stalled_stderr(args: &[&str]) -> (Running, SocketAddr) {
    let (mut running, addr) = Running::start(args, Stdio::piped(), &[("RUST_LOG", "trace")]).await;
    // Kept open, never read.
    let stderr = running.0.stderr.take();
    std::mem::forget(stderr);
    let dropped = async {
        loop {
            let load: Vec<_> = (0..16)
                .map(|i| tokio::spawn(async move { get(addr, &format!("/dashboard/{i}"), &[]).await }))
                .collect();
            for request in load {
                let _ = request.await;
            }
            let metrics = get(addr, "/metrics", &[]).await.body;
            let dropped = metrics
                .lines()
                .find_map(|line| line.strip_prefix("dashboard_log_lines_dropped_total "))
                .and_then(|value| value.parse::<u64>().ok());
            if dropped.is_some_and(|dropped| dropped > 0) {
                return;
            }
        }
    };
    within(Duration::from_secs(60), "log lines to be dropped", dropped).await;
    (running, addr)
}

#[tokio::test]
async fn a_stalled_stderr_blocks_neither_the_exit_nor_a_second_signal() {
    // One after the other: the load that fills one's stderr would slow the other's exit.
    a_stalled_stderr_does_not_block_the_exit().await;
    a_second_signal_exits_even_with_a_stalled_stderr().await;
}

async fn a_stalled_stderr_does_not_block_the_exit() {
    let (mut running, _addr) = with_a_stalled_stderr(&[]).await;

    let signalled = Instant::now();
    running.signal("TERM");
    let status = running.exited_within(LIMIT).await;

    assert!(status.is_some(), "still running {:?} after SIGTERM with stderr full", signalled.elapsed());
    assert!(signalled.elapsed() <= Duration::from_secs(4), "took {:?} to exit", signalled.elapsed());
}

async fn a_second_signal_exits_even_with_a_stalled_stderr() {
    let args = ["--timeout-ms", "30000", "--shutdown-grace-ms", "30000"];
    let (mut running, addr) = with_a_stalled_stderr(&args).await;
    let _slow = tokio::spawn(async move { get(addr, "/dashboard/2?profile_delay_ms=25000", &[]).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    running.signal("TERM");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let signalled = Instant::now();
    running.signal("TERM");
    let status = running.exited_within(LIMIT).await;

    assert!(status.is_some(), "a second SIGTERM was ignored with stderr full");
    assert!(signalled.elapsed() <= MARGIN, "took {:?} after the second signal", signalled.elapsed());
}
