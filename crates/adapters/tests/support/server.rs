//! A scriptable raw HTTP/1.1 server on 127.0.0.1 for the HTTP fetcher's tests.
//!
//! Each test passes a handler that gets every accepted connection as a [`Conn`]: it reads
//! request heads (recorded byte for byte), writes whatever bytes it likes (well-formed or
//! not), sleeps, resets or closes, and can watch for the client closing the connection.

#![allow(dead_code, unreachable_pub)] // reason: each test binary uses a different subset

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// One request head as received: the request line and the header lines, in order.
#[derive(Debug, Clone)]
pub struct Head {
    pub line: String,
    pub headers: Vec<(String, String)>,
}

impl Head {
    /// The values of the header `name` (case-insensitive), in order.
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(key, _)| key.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str()).collect()
    }

    /// The only value of the header `name`, if it was sent exactly once.
    pub fn header(&self, name: &str) -> Option<&str> {
        match self.all(name).as_slice() {
            [value] => Some(value),
            _ => None,
        }
    }

    /// The request target of the request line (`GET <target> HTTP/1.1`).
    pub fn target(&self) -> &str {
        self.line.split(' ').nth(1).unwrap_or_default()
    }
}

/// The server: accepts connections on an ephemeral port until dropped.
pub struct Server {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    heads: Arc<Mutex<Vec<Head>>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Starts a server that runs `handler` on each accepted connection, in a task of its own.
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let heads = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let (accepted, heads) = (accepted.clone(), heads.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let conn = Conn { stream, buffer: Vec::new(), heads: heads.clone() };
                    tokio::spawn(handler(conn));
                }
            }
        });
        Self { addr, accepted, heads, task }
    }

    /// A server that answers every request on every connection with `200` and `body` as
    /// `application/json`, keeping connections alive.
    pub async fn json(body: &'static str) -> Self {
        Self::start(move |mut conn| async move {
            while conn.read_request().await.is_some() {
                if conn.respond("200 OK", &[("content-type", "application/json")], body.as_bytes()).await.is_err() {
                    break;
                }
            }
        })
        .await
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// How many connections were accepted so far.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Every request head received so far, in order.
    pub fn heads(&self) -> Vec<Head> {
        self.heads.lock().expect("heads lock").clone()
    }

    /// The only request head received so far.
    pub fn only_head(&self) -> Head {
        let heads = self.heads();
        assert_eq!(heads.len(), 1, "expected exactly one request, got {heads:#?}");
        heads[0].clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One accepted connection.
pub struct Conn {
    pub stream: TcpStream,
    buffer: Vec<u8>,
    heads: Arc<Mutex<Vec<Head>>>,
}

impl Conn {
    /// Reads and records the next request head; `None` when the client closed the
    /// connection (or broke it) first. A request body is left for [`read_body`](Self::read_body).
    pub async fn read_request(&mut self) -> Option<Head> {
        loop {
            if let Some(end) = self.buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                let raw: Vec<u8> = self.buffer.drain(..end + 4).collect();
                let text = String::from_utf8_lossy(&raw[..end]).into_owned();
                let mut lines = text.split("\r\n");
                let line = lines.next().unwrap_or_default().to_owned();
                let headers = lines
                    .filter_map(|line| line.split_once(':'))
                    .map(|(name, value)| (name.to_owned(), value.trim().to_owned()))
                    .collect();
                let head = Head { line, headers };
                self.heads.lock().expect("heads lock").push(head.clone());
                return Some(head);
            }
            let mut chunk = [0; 16 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Reads exactly `len` bytes of request body (after [`read_request`](Self::read_request));
    /// `None` if the connection ends first.
    pub async fn read_body(&mut self, len: usize) -> Option<Vec<u8>> {
        while self.buffer.len() < len {
            let mut chunk = [0; 16 * 1024];
            match self.stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
            }
        }
        Some(self.buffer.drain(..len).collect())
    }

    /// Writes raw bytes.
    pub async fn write(&mut self, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        self.stream.write_all(bytes.as_ref()).await?;
        self.stream.flush().await
    }

    /// Writes a complete response with a `content-length`.
    pub async fn respond(&mut self, status: &str, headers: &[(&str, &str)], body: &[u8]) -> io::Result<()> {
        let mut response = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len()).into_bytes();
        for (name, value) in headers {
            response.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        response.extend_from_slice(b"\r\n");
        response.extend_from_slice(body);
        self.write(response).await
    }

    /// Waits until the client closes the connection (a read returns 0 bytes or fails),
    /// discarding anything it sends; `false` if that does not happen within `limit`.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let closed = async {
            let mut chunk = [0; 4096];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        tokio::time::timeout(limit, closed).await.is_ok()
    }
}

/// A chunked response whose second chunk-size line is not hexadecimal.
pub const MALFORMED_CHUNKED: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n\
                                     2\r\n{}\r\nzz\r\nnot a chunk\r\n0\r\n\r\n";

/// `len` bytes of noise from a fixed xorshift sequence: the same noise on every run.
pub fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

/// A 200 JSON response whose head arrives at once and whose 1000-byte body then dribbles in one
/// byte every 20 ms (20 s in all), until the client hangs up.
pub async fn dribble_body(conn: &mut Conn) {
    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n[";
    if conn.write(head).await.is_err() {
        return;
    }
    for _ in 0..999 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if conn.write(" ").await.is_err() {
            return;
        }
    }
}
