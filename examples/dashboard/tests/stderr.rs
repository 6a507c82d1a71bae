//! A stderr nobody reads (a full pipe, log lines being dropped) does not block the exit: the
//! last "N log lines were dropped" write is bounded, and a second signal always exits. In a
//! file of their own: the load that fills the pipe would slow the timing tests beside them.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::{LIMIT, MARGIN, get, within};

const BINARY: &str = env!("CARGO_BIN_EXE_dashboard");

/// The running binary; killed when dropped, so a failed assertion cannot leave it behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// Starts the dashboard with `args` (and `--listen 127.0.0.1:0` unless given), stderr going
    /// to `stderr`, and reads its address from the first line of stdout.
    async fn start(args: &[&str], stderr: Stdio, env: &[(&str, &str)]) -> (Self, SocketAddr) {
        Self::launch(dashboard(args, env), stderr).await
    }

    /// Spawns `command` with stderr going to `stderr`, and reads the address from the first
    /// line of stdout (then keeps draining stdout, so the banner never blocks the process).
    async fn launch(mut command: Command, stderr: Stdio) -> (Self, SocketAddr) {
        let child = command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(stderr).spawn().expect("start");
        let mut running = Running(child);
        let stdout = running.0.stdout.take().expect("piped stdout");
        let first = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok).unwrap_or_default();
            std::thread::spawn(move || lines.for_each(drop));
            first
        });
        let first = within(LIMIT, "the first line", first).await.expect("read stdout");
        let addr = first.strip_prefix("listening on http://").expect("`listening on` first").parse().expect("addr");
        (running, addr)
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.0.id().to_string()]).status();
        assert!(status.is_ok_and(|status| status.success()), "kill -{name} failed");
    }

    /// Waits (polling, at most `limit`) for the process to exit.
    async fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        None
    }
}

/// Removes the dashboard's settings (and `RUST_LOG`) from `command`'s environment.
fn without_settings(command: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("DASHBOARD_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
}

/// The binary with `args` (`--listen 127.0.0.1:0` first unless given) and none of its settings
/// from the environment but `env`.
fn dashboard(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BINARY);
    without_settings(&mut command);
    command.envs(env.iter().copied());
    if !args.contains(&"--listen") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    command.args(args);
    command
}

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
