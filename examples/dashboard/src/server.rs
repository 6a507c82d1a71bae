//! Serving the router with the production [`Limits`]: hyper's HTTP/1.1 server with a real
//! timer (so its header-read timeout fires), an idle and a write timeout per connection, a
//! connection cap and an in-flight cap that answer 503 at once, the id-length check, the
//! caller's deadline, accept errors with backoff, and a bounded graceful shutdown.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use std::time::Duration;
//! use dashboard::server::Server;
//! use dashboard::limits::Limits;
//!
//! let listener = dashboard::server::listen("127.0.0.1:0".parse().expect("an address"))?;
//! let router = axum::Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
//! let stop = async { let _ = tokio::signal::ctrl_c().await; };
//! let outcome = Server::new(router, Limits::default(), Duration::from_secs(1)).serve(listener, stop).await;
//! assert_eq!(outcome.forced, 0, "every connection closed within the grace period");
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::app::{BudgetShare, ResponseBudget, json_error};
use crate::limits::{Limits, effective_deadline};
use crate::stats::stats;

/// The path prefix of the aggregating route: the in-flight cap, the id length and the
/// deadline apply to it.
const DASHBOARD_PREFIX: &str = "/dashboard/";

/// The largest request head hyper buffers, in bytes; longer heads are refused by hyper.
const MAX_HEAD: usize = 64 * 1024;

/// The first and the longest pause after an accept error that says the process is out of
/// file descriptors or memory.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// The router served with [`Limits`]; see the module docs.
#[derive(Clone, Debug)]
pub struct Server {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    router: Router,
    limits: Limits,
    /// The aggregation's configured deadline.
    deadline: Duration,
    in_flight: Arc<Semaphore>,
    /// The process-wide budget of response bytes, in KiB.
    response_kib: Arc<Semaphore>,
    http: http1::Builder,
    overflow_http: http1::Builder,
    /// The connections served normally, oldest first: at the cap, the oldest one without a
    /// request being served is closed to make room.
    open: Mutex<VecDeque<Arc<Conn>>>,
}

/// One connection served normally, as the accept loop sees it.
#[derive(Debug)]
struct Conn {
    /// Requests being served on it (0: it is waiting for a complete head).
    busy: Arc<AtomicUsize>,
    /// Asks the connection to close: it is shed to make room for a new one.
    shed: CancellationToken,
    /// When it was accepted.
    since: Instant,
}

/// What [`Shared::shed_one`] did.
#[derive(Debug, PartialEq, Eq)]
enum Shed {
    /// A connection without a complete head was closed: there is room.
    Done,
    /// The oldest connection without a complete head is too young to be closed yet; it will
    /// be at this instant.
    Wait(Instant),
    /// Every connection is serving a request: nothing to shed.
    AllBusy,
}

/// Each connection's kernel send buffer, as asked of the kernel (Linux doubles it, for its own
/// bookkeeping): what a client that does not read can pin outside the process.
pub const SEND_BUFFER: usize = 128 * 1024;

/// The listen backlog of [`listen`]: connections the kernel completes and queues while the
/// accept loop waits (at the connection cap, for a connection to shed). With the usual 128, a
/// flood of reconnecting clients fills it and the kernel drops a liveness probe's connection
/// attempt, which its client only retries a second later. Linux caps it at
/// `net.core.somaxconn` (4096 by default).
pub const BACKLOG: u32 = 4096;

/// A listener on `addr` for [`Server::serve`], with a [`BACKLOG`] deep enough for the
/// connection cap to wait rather than drop.
///
/// # Errors
///
/// The socket's error: the address is in use, or not this machine's.
pub fn listen(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    // As `TcpListener::bind` does: a restart binds at once, whatever the old connections do.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// How long a new connection has to send its request head before it may be shed at the
/// connection cap: a liveness probe sends its head with the connection, a slowloris client
/// never completes it. Until then, the accept loop waits (new connections queue in the
/// kernel's backlog, in order) rather than refuse them.
const SHED_AFTER: Duration = Duration::from_millis(50);

impl Shared {
    /// Closes the oldest connection that has not sent a complete request head (a slowloris
    /// client, or a keep-alive connection between requests) if it is at least [`SHED_AFTER`]
    /// old, forgetting the ones that have closed on the way.
    fn shed_one(&self, now: Instant) -> Shed {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        // A closed connection's task has dropped its `Arc`: only ours is left.
        open.retain(|conn| Arc::strong_count(conn) > 1);
        let Some(index) = open.iter().position(|conn| conn.busy.load(Ordering::Relaxed) == 0) else {
            return Shed::AllBusy;
        };
        let eligible = open[index].since + SHED_AFTER;
        if eligible > now {
            return Shed::Wait(eligible);
        }
        if let Some(conn) = open.remove(index) {
            conn.shed.cancel();
        }
        Shed::Done
    }

    /// Registers a new connection served normally.
    fn register(&self) -> Arc<Conn> {
        let conn = Arc::new(Conn { busy: Arc::default(), shed: CancellationToken::new(), since: Instant::now() });
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.len() >= 2 * self.limits.max_connections {
            open.retain(|conn| Arc::strong_count(conn) > 1);
        }
        open.push_back(conn.clone());
        conn
    }
}

/// How [`Server::serve`] ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Outcome {
    /// Connections still serving a request when the grace period ended (their requests
    /// unanswered); the binary then exits with code 1.
    pub forced: usize,
}

impl Server {
    /// A server of `router`, whose `/dashboard/` aggregations have `deadline` (or the
    /// caller's tighter one).
    pub fn new(router: Router, limits: Limits, deadline: Duration) -> Self {
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true)
            .max_buf_size(MAX_HEAD);
        let mut overflow_http = http.clone();
        overflow_http.keep_alive(false).header_read_timeout(limits.header_read_timeout.min(Duration::from_secs(1)));
        let in_flight = Arc::new(Semaphore::new(limits.max_in_flight.min(Semaphore::MAX_PERMITS)));
        let open = Mutex::new(VecDeque::new());
        let response_kib =
            Arc::new(Semaphore::new((limits.max_response_buffer / 1024).clamp(1, Semaphore::MAX_PERMITS)));
        let shared = Shared { router, limits, deadline, in_flight, response_kib, http, overflow_http, open };
        Self { shared: Arc::new(shared) }
    }

    /// Accepts and serves connections until `shutdown` resolves; then stops accepting, lets
    /// every connection finish the request it is serving (idle ones close at once), and
    /// returns when all are closed or when the grace period of the limits is over, whichever
    /// comes first.
    pub async fn serve(self, listener: TcpListener, shutdown: impl Future<Output = ()>) -> Outcome {
        let limits = self.shared.limits;
        let stop = CancellationToken::new();
        let (normal, overflow) = (TaskTracker::new(), TaskTracker::new());
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backoff = ACCEPT_BACKOFF.0;
        let (mut refused, mut shed) = (Throttled::default(), Throttled::default());
        loop {
            let accepted = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _peer)) => {
                    backoff = ACCEPT_BACKOFF.0;
                    stream
                }
                Err(error) if is_out_of_resources(&error) => {
                    tracing::error!(
                        %error,
                        kind = "accept",
                        retry_in_ms = backoff.as_millis() as u64,
                        open_connections = normal.len() + overflow.len(),
                        "cannot accept connections: out of file descriptors or memory",
                    );
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                    continue;
                }
                Err(error) => {
                    // A connection that failed between the SYN and `accept` (reset, aborted):
                    // its own problem, not the listener's.
                    tracing::debug!(%error, "accept failed");
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            // On its own the kernel grows a socket's send buffer up to 4 MiB: a client that
            // reads slowly would pin a whole answer there, out of sight of the response budget
            // and the response timeout. Capped, the rest of the answer stays in the process.
            let _ = socket2::SockRef::from(&stream).set_send_buffer_size(SEND_BUFFER);
            // At the cap, the oldest connection without a complete head is closed to make
            // room, once it had its chance to send one: new clients (a liveness probe) are
            // served whatever a flood of slow heads holds. Waiting for that stops accepting,
            // so new connections queue in the backlog in order instead of being refused.
            let mut room = normal.len() < limits.max_connections;
            let mut stopping = false;
            while !room {
                match self.shared.shed_one(Instant::now()) {
                    Shed::Done => {
                        shed.count(
                            "connection cap reached: closed the oldest connection without a complete request head",
                        );
                        room = true;
                    }
                    Shed::AllBusy => break,
                    Shed::Wait(eligible) => {
                        tokio::select! {
                            biased;
                            () = &mut shutdown => {
                                stopping = true;
                                break;
                            }
                            () = tokio::time::sleep_until(eligible) => {}
                        }
                        room = normal.len() < limits.max_connections;
                    }
                }
            }
            if stopping {
                break;
            }
            if room {
                let conn = self.shared.register();
                normal.spawn(self.clone().connection(stream, Some(conn), stop.clone()));
            } else if overflow.len() < limits.overflow_connections() {
                stats().refused();
                refused.count(
                    "connection cap reached, every connection busy: answering 503 (and /healthz) on new connections",
                );
                overflow.spawn(self.clone().connection(stream, None, stop.clone()));
            } else {
                stats().refused();
                refused.count("connection cap and overflow reached: closing new connections unanswered");
                drop(stream);
            }
        }
        drop(listener);
        let open = normal.len() + overflow.len();
        tracing::info!(open_connections = open, grace_ms = limits.shutdown_grace.as_millis() as u64, "shutting down");
        stop.cancel();
        normal.close();
        overflow.close();
        let drained = async {
            normal.wait().await;
            overflow.wait().await;
        };
        match tokio::time::timeout(limits.shutdown_grace, drained).await {
            Ok(()) => Outcome { forced: 0 },
            Err(_) => Outcome { forced: (normal.len() + overflow.len()).max(1) },
        }
    }

    /// Serves one connection until it closes, until it is shed (`conn`), or until `stop` asks
    /// it to finish its request; one without a request being served closes at once then.
    async fn connection(self, stream: TcpStream, conn: Option<Arc<Conn>>, stop: CancellationToken) {
        let _open = OpenConnection::new();
        let limits = self.shared.limits;
        let overflow = conn.is_none();
        let (busy, shed) = match &conn {
            Some(conn) => (conn.busy.clone(), conn.shed.clone()),
            None => (Arc::new(AtomicUsize::new(0)), CancellationToken::new()),
        };
        let owed = Arc::new(Owed::default());
        let io = TokioIo::new(Guarded::new(stream, busy.clone(), owed.clone(), &limits));
        let builder = if overflow { &self.shared.overflow_http } else { &self.shared.http };
        let service = ConnService { shared: self.shared.clone(), busy: busy.clone(), owed, overflow };
        let connection = builder.serve_connection(io, service);
        let mut connection = std::pin::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = shed.cancelled() => {
                stats().shed();
                if busy.load(Ordering::Relaxed) == 0 {
                    return;
                }
                // Its head arrived after all: it finishes that request, then closes.
                connection.as_mut().graceful_shutdown();
                connection.await
            }
            () = stop.cancelled() => {
                // Waiting for a head (or between requests): nothing to answer, close now
                // rather than wait out the header-read, idle or write timeout.
                if busy.load(Ordering::Relaxed) == 0 {
                    return;
                }
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        drop(conn);
        if let Err(error) = result {
            // Timeouts, resets and clients that went away: routine for a server.
            tracing::debug!(%error, "connection closed with an error");
        }
    }
}

/// Counts an open connection in the server's metrics while it lives.
#[derive(Debug)]
struct OpenConnection;

impl OpenConnection {
    fn new() -> Self {
        stats().opened();
        Self
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        stats().closed();
    }
}

/// Whether an accept error means the process (or the system) is out of file descriptors,
/// buffers or memory: waiting helps, retrying at once would spin.
fn is_out_of_resources(error: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS and ENOMEM (Linux numbering; elsewhere EMFILE and ENFILE
    // agree and the rest is caught by the kind).
    matches!(error.raw_os_error(), Some(24 | 23 | 105 | 12)) || error.kind() == io::ErrorKind::OutOfMemory
}

/// Counts events and logs them at most once a second, with the count since the last line.
#[derive(Debug, Default)]
struct Throttled {
    count: u64,
    logged: Option<Instant>,
}

impl Throttled {
    fn count(&mut self, message: &'static str) {
        self.count += 1;
        let now = Instant::now();
        if self.logged.is_none_or(|logged| now.duration_since(logged) >= Duration::from_secs(1)) {
            tracing::warn!(connections = self.count, kind = "overloaded", "{message}");
            self.count = 0;
            self.logged = Some(now);
        }
    }
}

/// The per-connection service: the arrival clock, the id check, the in-flight cap and the
/// deadline around the router.
#[derive(Clone, Debug)]
struct ConnService {
    shared: Arc<Shared>,
    busy: Arc<AtomicUsize>,
    owed: Arc<Owed>,
    overflow: bool,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl hyper::service::Service<Request<Incoming>> for ConnService {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Tracked>, Infallible>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let arrived = Instant::now();
        let busy = Busy::new(self.busy.clone());
        let (counter, owed) = (self.busy.clone(), self.owed.clone());
        let shared = self.shared.clone();
        let overflow = self.overflow;
        Box::pin(async move {
            let (mut response, permit) = shared.answer(request, arrived, overflow).await;
            if response.extensions().get::<BudgetShare>().is_none() {
                // A router without the dashboard's access log, which takes it before logging.
                let request_id = response.headers().get(crate::app::REQUEST_ID).and_then(|id| id.to_str().ok());
                let request_id = request_id.unwrap_or_default().to_owned();
                response = ResponseBudget(Arc::clone(&shared.response_kib)).take(response, &request_id);
            }
            if let Some(BudgetShare(Some(share))) = response.extensions_mut().remove::<BudgetShare>() {
                owed.hold(share);
            }
            Ok(response.map(|body| Tracked { body, _busy: busy, _permit: permit, owed, counter }))
        })
    }
}

impl Shared {
    async fn answer(
        &self,
        request: Request<Incoming>,
        arrived: Instant,
        overflow: bool,
    ) -> (Response<Body>, Option<OwnedSemaphorePermit>) {
        let path = request.uri().path();
        if overflow {
            if path == "/healthz" {
                return early(&request, arrived, |_| Response::new(Body::from("ok")));
            }
            return early(&request, arrived, |id| overloaded("too many connections", id));
        }
        let Some(id) = path.strip_prefix(DASHBOARD_PREFIX) else {
            return (self.route(request).await, None);
        };
        if id.len() > self.limits.max_id_len {
            let message = format!("the user id is longer than {} bytes", self.limits.max_id_len);
            return early(&request, arrived, |id| {
                json_error(StatusCode::URI_TOO_LONG, "bad_request", &message, Some(id))
            });
        }
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            return early(&request, arrived, |id| overloaded("too many requests in flight", id));
        };
        let budget = effective_deadline(self.deadline, request.headers());
        if budget.is_zero() {
            let spent = "the caller's deadline has already passed";
            return early(&request, arrived, |id| json_error(StatusCode::GATEWAY_TIMEOUT, "timeout", spent, Some(id)));
        }
        // The aggregation's deadline is the request's: counted from its arrival, so queueing
        // counts, and tightened by the caller's budget; the sources send what is left of it
        // downstream.
        let mut request = request;
        request.extensions_mut().insert(crate::app::Budget(arrived + budget));
        (self.route(request).await, Some(permit))
    }

    /// The router's answer, which takes its share of the response budget (see
    /// [`ResponseBudget`]).
    async fn route(&self, mut request: Request<Incoming>) -> Response<Body> {
        request.extensions_mut().insert(ResponseBudget(Arc::clone(&self.response_kib)));
        let mut router = self.router.clone();
        match tower_service::Service::call(&mut router, request).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }
}

/// An answer of the server's own, before the router, made by `answer` from the request id:
/// with that id and the access log line that the router's answers get.
fn early(
    request: &Request<Incoming>,
    arrived: Instant,
    answer: impl FnOnce(&str) -> Response<Body>,
) -> (Response<Body>, Option<OwnedSemaphorePermit>) {
    let request_id = crate::app::request_id(request.headers());
    let mut response = answer(&request_id);
    crate::app::answered(request.method(), request.uri().path(), &request_id, arrived.into_std(), &mut response);
    (response, None)
}

/// 503 with `Retry-After: 1` and the JSON error body.
pub(crate) fn overloaded(message: &str, request_id: &str) -> Response<Body> {
    let mut response = json_error(StatusCode::SERVICE_UNAVAILABLE, "overloaded", message, Some(request_id));
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The response bytes a connection has been handed by its bodies and not yet written to the
/// socket (hyper drops a body once it has its last frame, well before a slow reader has it),
/// and the shares of the response byte budget they hold. While some are owed, the connection
/// counts one more busy mark: it is serving.
#[derive(Debug, Default)]
struct Owed {
    bytes: AtomicUsize,
    permits: Mutex<Vec<Arc<OwnedSemaphorePermit>>>,
}

impl Owed {
    /// A body handed over `n` bytes.
    fn handed(&self, n: usize, busy: &AtomicUsize) {
        if n > 0 && self.bytes.fetch_add(n, Ordering::Relaxed) == 0 {
            busy.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `n` bytes were written to the socket (a response head's bytes too: the budget is
    /// released a head's length early at most).
    fn written(&self, n: usize, busy: &AtomicUsize) {
        let owed = self.bytes.load(Ordering::Relaxed);
        if owed == 0 || n == 0 {
            return;
        }
        let paid = n.min(owed);
        if self.bytes.fetch_sub(paid, Ordering::Relaxed) == paid {
            busy.fetch_sub(1, Ordering::Relaxed);
            self.permits.lock().unwrap_or_else(PoisonError::into_inner).clear();
        }
    }

    /// Holds `permit` until every byte owed is written.
    fn hold(&self, permit: Arc<OwnedSemaphorePermit>) {
        self.permits.lock().unwrap_or_else(PoisonError::into_inner).push(permit);
    }
}

/// Marks its connection busy (a request is being served) while it lives.
#[derive(Debug)]
struct Busy(Arc<AtomicUsize>);

impl Busy {
    fn new(counter: Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A response body that holds its connection's busy mark and its in-flight permit until
/// hyper has sent it (or dropped it).
#[derive(Debug)]
pub struct Tracked {
    body: Body,
    _busy: Busy,
    _permit: Option<OwnedSemaphorePermit>,
    /// Where the bytes handed to hyper are counted until written.
    owed: Arc<Owed>,
    /// The connection's busy counter.
    counter: Arc<AtomicUsize>,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let poll = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &poll {
            if let Some(data) = frame.data_ref() {
                self.owed.handed(data.len(), &self.counter);
            }
        }
        poll
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A TCP stream with the idle timeout (no request being served, nothing received) and the
/// write timeout (a write that makes no progress); either closes the connection with a
/// `TimedOut` error.
struct Guarded {
    stream: TcpStream,
    busy: Arc<AtomicUsize>,
    idle: IdleTimer,
    write: Timer,
    /// Bytes read since the connection last started waiting for a request head.
    head: usize,
    /// When the response being written wrote its first byte.
    writing: Option<Instant>,
    /// How long writing one response may take.
    response_timeout: Duration,
    /// The response bytes handed over and not yet written.
    owed: Arc<Owed>,
}

/// The idle timer, re-armed lazily: going idle costs a clock read, not a timer
/// registration; the timer fires at most once per idle timeout and, when it fires early (the
/// connection was busy in between), is pushed to the real due time.
struct IdleTimer {
    after: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    since: Option<Instant>,
}

impl IdleTimer {
    /// `true` once the connection has been idle for the whole timeout.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let due = *self.since.get_or_insert_with(Instant::now) + self.after;
        let sleep = self.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if sleep.deadline() >= due {
                return true;
            }
            sleep.as_mut().reset(due);
        }
    }

    /// Something happened: the connection is not idle (any more).
    fn disarm(&mut self) {
        self.since = None;
    }
}

/// One resettable timer, allocated when first armed; for the write timeout, which is armed
/// only when a write cannot complete at once.
struct Timer {
    after: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl Timer {
    fn new(after: Duration) -> Self {
        Self { after, sleep: None, armed: false }
    }

    /// Arms the timer if it is not running, and polls it: `true` once it has expired.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.armed {
            let deadline = Instant::now() + self.after;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        self.sleep.as_mut().is_some_and(|sleep| sleep.as_mut().poll(cx).is_ready())
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Guarded {
    fn new(stream: TcpStream, busy: Arc<AtomicUsize>, owed: Arc<Owed>, limits: &Limits) -> Self {
        let idle = IdleTimer { after: limits.idle_timeout, sleep: None, since: None };
        let write = Timer::new(limits.write_timeout);
        let response_timeout = limits.response_timeout;
        Self { stream, busy, idle, write, head: 0, writing: None, response_timeout, owed }
    }

    /// Counts what a write wrote.
    fn wrote(&mut self, poll: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if let Poll::Ready(Ok(n)) = poll {
            self.owed.written(n, &self.busy);
        }
        poll
    }

    /// An error once the response being written has taken longer than the response timeout.
    fn response_overdue(&mut self) -> Option<io::Error> {
        if self.busy.load(Ordering::Relaxed) == 0 {
            return None;
        }
        let since = *self.writing.get_or_insert_with(Instant::now);
        if since.elapsed() <= self.response_timeout {
            return None;
        }
        // Reset, not closed: what the kernel still buffers for this client goes too.
        let _ = self.stream.set_zero_linger();
        Some(io::Error::new(io::ErrorKind::TimedOut, "the response took too long to be read"))
    }

    /// The write side's verdict on a poll that did not complete.
    fn write_pending<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Pending if self.write.poll_expired(cx) => {
                // Reset, not closed: what the kernel still buffers for this client goes too.
                let _ = self.stream.set_zero_linger();
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client stopped reading")))
            }
            Poll::Pending => Poll::Pending,
            ready => {
                self.write.disarm();
                ready
            }
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let waiting_for_head = this.busy.load(Ordering::Relaxed) == 0;
        if waiting_for_head {
            this.writing = None;
        } else {
            this.head = 0;
        }
        // While a head is awaited, no read goes past `MAX_HEAD` bytes of it: hyper's buffer
        // then reaches its limit exactly and the head is refused (431), instead of a last big
        // read carrying it well past the limit.
        let allowed = MAX_HEAD.saturating_sub(this.head).max(1);
        let before = buf.filled().len();
        let poll = if waiting_for_head && buf.remaining() > allowed {
            let mut bounded = vec![0; allowed];
            let mut small = ReadBuf::new(&mut bounded);
            let poll = Pin::new(&mut this.stream).poll_read(cx, &mut small);
            if let Poll::Ready(Ok(())) = poll {
                buf.put_slice(small.filled());
            }
            poll
        } else {
            Pin::new(&mut this.stream).poll_read(cx, buf)
        };
        if waiting_for_head {
            this.head += buf.filled().len().saturating_sub(before);
        }
        this.after_read(cx, poll)
    }
}

impl Guarded {
    /// The idle timeout's verdict on a read.
    fn after_read(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<()>>) -> Poll<io::Result<()>> {
        match poll {
            Poll::Ready(result) => {
                self.idle.disarm();
                Poll::Ready(result)
            }
            Poll::Pending if self.busy.load(Ordering::Relaxed) > 0 => {
                self.idle.disarm();
                Poll::Pending
            }
            Poll::Pending if self.idle.poll_expired(cx) => {
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "idle connection")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(error) = self.response_overdue() {
            return Poll::Ready(Err(error));
        }
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        let poll = self.wrote(poll);
        self.write_pending(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(error) = self.response_overdue() {
            return Poll::Ready(Err(error));
        }
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        let poll = self.wrote(poll);
        self.write_pending(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_flush(cx);
        self.write_pending(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.write_pending(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_descriptors_is_told_apart_from_a_reset() {
        assert!(is_out_of_resources(&io::Error::from_raw_os_error(24)), "EMFILE");
        assert!(is_out_of_resources(&io::Error::from_raw_os_error(23)), "ENFILE");
        assert!(!is_out_of_resources(&io::Error::from(io::ErrorKind::ConnectionAborted)));
    }
}
