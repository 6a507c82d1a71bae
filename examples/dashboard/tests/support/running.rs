//! The `dashboard` binary as a child process, for the tests that send it signals: started on
//! `127.0.0.1:0` with none of its settings from the environment, and killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::support::{LIMIT, within};

pub(crate) const BINARY: &str = env!("CARGO_BIN_EXE_dashboard");

/// The running binary; killed when dropped, so a failed assertion cannot leave it behind.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Running {
    /// Starts the dashboard with `args` (and `--listen 127.0.0.1:0` unless given), stderr going
    /// to `stderr`, and reads its address from the first line of stdout.
    pub(crate) async fn start(args: &[&str], stderr: Stdio, env: &[(&str, &str)]) -> (Self, SocketAddr) {
        Self::launch(dashboard(args, env), stderr).await
    }

    /// Spawns `command` with stderr going to `stderr`, and reads the address from the first
    /// line of stdout (then keeps draining stdout, so the banner never blocks the process).
    pub(crate) async fn launch(mut command: Command, stderr: Stdio) -> (Self, SocketAddr) {
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

    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill").args([&format!("-{name}"), &self.0.id().to_string()]).status();
        assert!(status.is_ok_and(|status| status.success()), "kill -{name} failed");
    }

    /// Waits (polling, at most `limit`) for the process to exit.
    pub(crate) async fn exited_within(&mut self, limit: Duration) -> Option<ExitStatus> {
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
pub(crate) fn without_settings(command: &mut Command) {
    for (key, _) in std::env::vars() {
        if key.starts_with("DASHBOARD_") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
}

/// The binary with `args` (`--listen 127.0.0.1:0` first unless given) and none of its settings
/// from the environment but `env`.
pub(crate) fn dashboard(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(BINARY);
    without_settings(&mut command);
    command.envs(env.iter().copied());
    if !args.contains(&"--listen") {
        command.args(["--listen", "127.0.0.1:0"]);
    }
    command.args(args);
    command
}
