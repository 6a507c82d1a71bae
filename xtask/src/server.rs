//! A server process started by an xtask (`e2e`, the HTTP benchmark, the red-team check):
//! started on `127.0.0.1:0`, its address read from its first line, and killed by its pid when
//! stopped or dropped, so no error path leaves one running; and the one-request HTTP client
//! ([`get`]) the xtasks check it with.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
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

/// An answer read to the end of the stream (the request said `connection: close`).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) target: String,
    pub(crate) status: u16,
    /// The status line and the headers.
    pub(crate) head: String,
    pub(crate) body: String,
    /// From the connect to the end of the answer.
    pub(crate) elapsed: Duration,
}

impl Reply {
    /// The value of header `name`, if the answer has it.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(':'))
            .find_map(|(key, value)| key.trim().eq_ignore_ascii_case(name).then_some(value.trim()))
    }
}

/// `GET target` with `connection: close` and `headers`, the whole exchange within `limit`, so
/// that a hung server fails the check instead of the xtask. A write error is not the end: a
/// server that refuses a request may close before reading it all, and its answer is still read.
pub(crate) fn get(addr: SocketAddr, target: &str, headers: &[(&str, &str)], limit: Duration) -> Result<Reply, String> {
    let began = Instant::now();
    let until = began + limit;
    let io = |what: &str, error: io::Error| format!("GET {target}: {what}: {error}");
    let mut stream = TcpStream::connect_timeout(&addr, limit).map_err(|error| io("connect", error))?;
    stream.set_write_timeout(Some(limit)).map_err(|error| io("connect", error))?;
    let extra: String = headers.iter().map(|(name, value)| format!("{name}: {value}\r\n")).collect();
    let head = format!("GET {target} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n{extra}\r\n");
    let _ = stream.write_all(head.as_bytes());
    let mut raw = Vec::new();
    let mut chunk = [0; 16 * 1024];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let read = match left.is_zero() {
            true => Err(io::ErrorKind::TimedOut.into()),
            false => stream.set_read_timeout(Some(left)).and_then(|()| stream.read(&mut chunk)),
        };
        match read {
            Ok(0) if raw.is_empty() => return Err(format!("GET {target}: closed unanswered")),
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&chunk[..n]),
            Err(error) if matches!(error.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                let connected = if raw.is_empty() { "no answer" } else { "no complete answer" };
                return Err(format!("GET {target}: {connected} in {limit:?}"));
            }
            Err(error) if raw.is_empty() => return Err(io("read", error)),
            Err(_) => break,
        }
    }
    let status = parse_status(&raw).ok_or_else(|| format!("GET {target}: no HTTP answer"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let (head, body) = (head.to_owned(), body.to_owned());
    Ok(Reply { target: target.to_owned(), status, head, body, elapsed: began.elapsed() })
}

/// The resident memory of process `pid` in KiB (`VmRSS` in `/proc/<pid>/status`), for the
/// xtasks that measure a server.
pub(crate) fn rss_kib(pid: u32) -> Option<u64> {
    parse_rss_kib(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

pub(crate) fn parse_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
    line.split_whitespace().next()?.parse().ok()
}

/// The status of an HTTP/1.x answer from its first bytes (`HTTP/1.1 200 OK`).
pub(crate) fn parse_status(raw: &[u8]) -> Option<u16> {
    let rest = raw.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    (rest.get(1) == Some(&b' ') && code.iter().all(u8::is_ascii_digit))
        .then(|| std::str::from_utf8(code).ok()?.parse().ok())
        .flatten()
}
