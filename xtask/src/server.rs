//! A server process started by an xtask (`e2e`, the HTTP benchmark): started on
//! `127.0.0.1:0`, its address read from its first line, and killed by its pid when stopped or
//! dropped, so no error path leaves one running.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::root;

/// How long a server may take to print its first lines.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A server process, killed (by its pid) when dropped, so no error path leaves one running.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) name: &'static str,
    child: Child,
    pub(crate) addr: SocketAddr,
    /// The first lines it printed: `listening on http://ADDR` and what was asked for.
    pub(crate) lines: Vec<String>,
}

impl Server {
    /// Starts `binary` with `args` and `env`, its stderr going to `log_path`, and waits (30 s
    /// at most) for its first `lines` lines of stdout, the first being
    /// `listening on http://ADDR`. Stdout is drained until it exits.
    pub(crate) fn start(
        name: &'static str,
        binary: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        log_path: &Path,
        lines: usize,
    ) -> Result<Self, String> {
        let log = File::create(log_path).map_err(|error| format!("cannot create {}: {error}", log_path.display()))?;
        let shown_env: String = env.iter().map(|(key, value)| format!("{key}={value} ")).collect();
        eprintln!("$ {shown_env}{} {}", binary.display(), args.join(" "));
        let mut child = Command::new(binary)
            .args(args)
            .envs(env.iter().copied())
            .current_dir(root())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|error| format!("could not start {}: {error}", binary.display()))?;
        let Some(stdout) = child.stdout.take() else { unreachable!("stdout is piped") };
        let mut server = Self { name, child, addr: SocketAddr::from(([127, 0, 0, 1], 0)), lines: Vec::new() };
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = sender.send(line);
            }
        });
        let deadline = Instant::now() + START_TIMEOUT;
        while server.lines.len() < lines {
            match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => server.lines.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    return Err(format!("{name} printed {:?} in {START_TIMEOUT:?}", server.lines));
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status =
                        server.child.wait().map_or_else(|error| error.to_string(), |status| status.to_string());
                    return Err(format!("{name} exited ({status}); its log is {}", log_path.display()));
                }
            }
        }
        let first = &server.lines[0];
        let addr = first.strip_prefix("listening on http://").and_then(|addr| addr.parse().ok());
        server.addr = addr.ok_or_else(|| format!("{name}: expected `listening on http://ADDR`, got {first:?}"))?;
        eprintln!("xtask: {name} (pid {}) {first}", server.pid());
        Ok(server)
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the server (by its pid) and waits for it.
    pub(crate) fn stop(mut self) {
        self.kill();
        eprintln!("xtask: stopped {} (pid {})", self.name, self.pid());
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}
