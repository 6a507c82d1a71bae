//! The banking dashboard: `GET /dashboard/{user_id}` aggregates a profile service and a
//! transactions service, fail-fast, under one deadline (1 s by default).
//!
//! Run with: cargo run --release -p dashboard
//!
//! With no flags it listens on 127.0.0.1:8080 and starts both demo backends in-process; the
//! flags (or their environment variables) point it at real services instead, and set the
//! production limits (on by default; see `--help` and the README). Logs are JSON lines on
//! stderr (`RUST_LOG` filters them, default `info`), written by a non-blocking writer that
//! drops lines rather than stall serving.

use std::error::Error;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::http::HeaderName;
use dashboard::limits::Limits;
use dashboard::logging::Logging;
use dashboard::server::Server;
use dashboard::{AppState, CacheConfig, Config, DemoBackend, Resilience, Service};

/// What `--help` says after the options.
const AFTER_HELP: &str = "\
Every option can also be set with the environment variable shown; a flag wins over its variable,
and an empty variable counts as unset.

With `Accept: application/x-ndjson` (or text/event-stream), each section is sent the moment
its source completes, then a last line with the outcome.

The demo backends read knobs from the dashboard request's query string: profile_delay_ms,
profile_fail, profile_fail_rate, transactions_delay_ms, transactions_fail,
transactions_fail_rate, offers_delay_ms, offers_fail, offers_fail_rate (e.g.
?transactions_fail=1, or ?transactions_fail_rate=0.5 for a brownout: half the calls 503).";

/// The longest deadline or timeout accepted: ten minutes.
const MAX_TIMEOUT_MS: u64 = 600_000;

/// The largest connection, in-flight or id-length limit accepted.
const MAX_COUNT: usize = 1 << 24;

/// How long the runtime waits for blocking work (a stuck DNS lookup) when the process exits.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    // Clap prints `--help` and `--version` on stdout (exit 0) and an error first and short on
    // stderr (exit 2), with one usage line and a pointer to `--help`.
    let args = match Cli::parse_command_line() {
        Ok(cli) => cli.into_args(),
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { 2 } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "dashboard: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let service_name = args.service_name.as_deref().unwrap_or(dashboard::logging::SERVICE_NAME);
    let logging = match Logging::init_with(args.otlp_endpoint.as_deref(), service_name) {
        Ok(logging) => logging,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "dashboard: {error}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(async {
        let reporter = tokio::spawn(logging.report_periodically());
        let result = run(args).await;
        reporter.abort();
        result
    });
    // Whatever is still running (connections past the grace period, a stuck DNS lookup on
    // the blocking pool) must not keep the process alive.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    let code = match result {
        Ok(Served::Drained) => ExitCode::SUCCESS,
        // Requests were still unanswered when the grace period ended: not a clean exit.
        Ok(Served::Forced) => ExitCode::FAILURE,
        Err(StartError::Config(error)) => {
            let _ = writeln!(std::io::stderr(), "dashboard: {}", chain(&error));
            ExitCode::from(2)
        }
        Err(StartError::Descriptors { available, needed }) => {
            let _ = writeln!(
                std::io::stderr(),
                "dashboard: the file descriptor limit ({available}) cannot hold one connection and one aggregation \
                 ({needed} needed); raise it (ulimit -n)"
            );
            ExitCode::FAILURE
        }
        Err(StartError::Io(what, error)) => {
            let _ = writeln!(std::io::stderr(), "dashboard: {what}: {error}");
            ExitCode::FAILURE
        }
        Err(StartError::Listen(addr, error)) => {
            let hint = "choose another with --listen ADDR or DASHBOARD_LISTEN (port 0 picks a free one)";
            let _ = writeln!(std::io::stderr(), "dashboard: could not listen on {addr}: {error}; {hint}");
            ExitCode::FAILURE
        }
    };
    logging.finish();
    code
}

/// Why the server did not start, or stopped with an error.
#[derive(Debug)]
enum StartError {
    /// A URL template or the timeout is unusable: bad usage, exit 2.
    Config(dashboard::ConfigError),
    /// The listening address cannot be bound (in use, not ours).
    Listen(SocketAddr, std::io::Error),
    /// Binding failed.
    Io(&'static str, std::io::Error),
    /// The descriptor limit cannot hold one connection and one aggregation.
    Descriptors { available: usize, needed: usize },
}

/// How serving ended.
#[derive(Debug)]
enum Served {
    /// Every request was answered.
    Drained,
    /// The grace period ended with requests unanswered.
    Forced,
}

async fn run(args: Args) -> Result<Served, StartError> {
    // Before anything opens descriptors: the soft limit up to the hard one.
    let descriptors = raise_descriptor_limit();
    let listen = args.listen;
    let cannot_listen = |error| StartError::Listen(listen, error);
    let listener = dashboard::server::listen(listen).map_err(cannot_listen)?;
    let addr = listener.local_addr().map_err(cannot_listen)?;
    let mut demos = Vec::new();
    let mut backend = async |url: Option<String>, service: Service| match url {
        Some(url) => Ok(url),
        None => {
            let demo = DemoBackend::start(service).await.map_err(|error| StartError::Io("demo backend", error))?;
            let url = demo.url_template();
            demos.push(demo);
            Ok(url)
        }
    };
    let profile_url = backend(args.profile_url, Service::Profile).await?;
    let transactions_url = backend(args.transactions_url, Service::Transactions).await?;
    let offers_url = match args.offers_url {
        Some(url) if url == "none" => None,
        url => Some(backend(url, Service::Offers).await?),
    };
    let (timeout, forward_headers, offers_forward_headers, cache) =
        (args.timeout, args.forward_headers, args.offers_forward_headers, args.cache);
    let config =
        Config { profile_url, transactions_url, offers_url, timeout, forward_headers, offers_forward_headers, cache };
    let mut state = AppState::with_resilience(&config, args.resilience).map_err(StartError::Config)?;
    if let Some(token) = &args.debug_token {
        if token.len() < GUESSABLE {
            tracing::warn!(
                length = token.len(),
                "--debug-token is short enough to guess: use {GUESSABLE} characters or more"
            );
        }
        state = state.with_debug_token(token);
    }
    // Before the banner, as the shutdown signals.
    dashboard::debug::log_on_sigusr1(state.in_flight().clone());

    // Before the banner: a signal sent once the server says it is up is always handled.
    let stop = signals();
    // A closed stdout (`dashboard | head`) must not stop the server: write errors are ignored.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on http://{addr}");
    let _ = writeln!(stdout, "{}", banner(addr, &config, &demos));
    let _ = stdout.flush();

    let limits = fit_descriptors(args.limits, descriptors, &config, &demos)?;
    let server = Server::new(dashboard::app(state), limits, config.timeout);
    let outcome = server.serve(listener, stop).await;
    if outcome.forced > 0 {
        tracing::warn!(open_connections = outcome.forced, "grace period over: exiting with requests unanswered");
        Ok(Served::Forced)
    } else {
        tracing::info!("shut down");
        Ok(Served::Drained)
    }
}

/// Raises the soft limit of open files to the hard limit; the soft limit then, `None` if
/// unlimited or unknown.
#[cfg(unix)]
fn raise_descriptor_limit() -> Option<usize> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(%error, "cannot raise the soft limit of open files");
        }
    }
    getrlimit(Resource::Nofile).current.and_then(|current| usize::try_from(current).ok())
}

#[cfg(not(unix))]
fn raise_descriptor_limit() -> Option<usize> {
    None
}

/// The limits, with the caps lowered (and a warning) if they cannot fit `available`
/// descriptors; an error if not even one connection and one aggregation fit.
fn fit_descriptors(
    limits: Limits,
    available: Option<usize>,
    config: &Config,
    demos: &[DemoBackend],
) -> Result<Limits, StartError> {
    let Some(available) = available else { return Ok(limits) };
    // One descriptor per backend connection, two for an in-process demo (both ends).
    let per_backend = |service: Service| if demos.iter().any(|demo| demo.service() == service) { 2 } else { 1 };
    let offers = if config.offers_url.is_some() { per_backend(Service::Offers) } else { 0 };
    let per_aggregation = per_backend(Service::Profile) + per_backend(Service::Transactions) + offers;
    let needed = limits.descriptors_needed(per_aggregation);
    match limits.fit_descriptors(available, per_aggregation) {
        Some(fitted) => {
            if fitted != limits {
                tracing::warn!(
                    descriptor_limit = available,
                    descriptors_needed = needed,
                    max_connections = fitted.max_connections,
                    max_in_flight = fitted.max_in_flight,
                    "the file descriptor limit cannot hold the caps: lowering the caps to fit",
                );
            }
            Ok(fitted)
        }
        None => Err(StartError::Descriptors { available, needed }),
    }
}

/// The backends and the curl lines to try, after the `listening on` line.
fn banner(addr: SocketAddr, config: &Config, demos: &[DemoBackend]) -> String {
    let mut text = String::new();
    let is_demo = |service: Service| demos.iter().any(|demo| demo.service() == service);
    let offers = config.offers_url.as_deref().unwrap_or("none");
    let backends = [
        (Service::Profile, &*config.profile_url),
        (Service::Transactions, &config.transactions_url),
        (Service::Offers, offers),
    ];
    for (service, url) in backends {
        let origin = if is_demo(service) { " (built-in demo)" } else { "" };
        let _ = writeln!(text, "{:<12} backend: {url}{origin}", service.name());
    }
    let _ = write!(text, "deadline: {} ms\n\ntry:", config.timeout.as_millis());
    let base = format!("http://{addr}/dashboard/20");
    let mut hints = vec![(base.clone(), "200: profile, transactions, offers for the profile's tier")];
    hints.push((format!("-H 'accept: application/x-ndjson' {base}"), "each section as it completes"));
    if is_demo(Service::Offers) {
        hints.push((format!("'{base}?offers_fail=1'"), "200, offers fell back to []"));
    }
    if is_demo(Service::Transactions) {
        hints.push((format!("'{base}?transactions_fail=1'"), "502 from transactions"));
        hints.push((format!("'{base}?transactions_fail_rate=0.5'"), "a brownout: retried within the budget"));
        if is_demo(Service::Profile) {
            hints
                .push((format!("'{base}?transactions_fail=1&profile_delay_ms=800'"), "502 at once, profile cancelled"));
        }
    }
    if is_demo(Service::Profile) {
        let slow = 2 * config.timeout.as_millis();
        hints.push((format!("'{base}?profile_delay_ms={slow}'"), "504 at the deadline, profile cancelled"));
    }
    let width = hints.iter().map(|(url, _)| url.len()).max().unwrap_or(0);
    for (url, what) in hints {
        let _ = write!(text, "\n  curl -i {url:<width$}  # {what}");
    }
    text
}

/// Listens for Ctrl-C and SIGTERM from the moment it is called, and resolves on the first: the
/// server then stops accepting and drains, for the grace period at most. A second signal exits
/// the process at once (exit code 130).
///
/// The listeners are registered here, before the banner says the server is up: a signal sent
/// right after the banner is never met by the default action, which kills the process without
/// draining.
///
/// The listening runs on a thread of its own, with its own small runtime, until the process
/// exits: a second signal still exits while the main runtime is shutting down or the logger
/// is flushing to a stderr nobody reads.
fn signals() -> impl std::future::Future<Output = ()> {
    let (first, second) = tokio::sync::oneshot::channel::<()>();
    let (registered, ready) = std::sync::mpsc::channel::<()>();
    let spawned = std::thread::Builder::new().name("dashboard-signals".to_owned()).spawn(move || {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
            let _ = registered.send(());
            return;
        };
        runtime.block_on(async move {
            let mut signals = Signals::register();
            let _ = registered.send(());
            let mut first = Some(first);
            loop {
                signals.next().await;
                match first.take() {
                    Some(first) => drop(first.send(())),
                    None => {
                        dashboard::logging::write_stderr_within(
                            "dashboard: second signal, exiting now".to_owned(),
                            Duration::from_millis(100),
                        );
                        std::process::exit(130);
                    }
                }
            }
        });
    });
    if spawned.is_ok() {
        // The listeners are in place before the banner.
        let _ = ready.recv();
    }
    async move {
        let _ = second.await;
    }
}

/// The process's shutdown signals: SIGINT (Ctrl-C) and SIGTERM. A signal whose listener cannot
/// be registered is never received.
#[cfg(unix)]
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    fn register() -> Self {
        use tokio::signal::unix::{SignalKind, signal};
        Self { interrupt: signal(SignalKind::interrupt()).ok(), terminate: signal(SignalKind::terminate()).ok() }
    }

    /// The next signal.
    async fn next(&mut self) {
        async fn received(signal: &mut Option<tokio::signal::unix::Signal>) {
            let received = match signal {
                Some(signal) => signal.recv().await.is_some(),
                None => false,
            };
            if !received {
                std::future::pending::<()>().await;
            }
        }
        tokio::select! {
            () = received(&mut self.interrupt) => {}
            () = received(&mut self.terminate) => {}
        }
    }
}

/// Ctrl-C only, listened to from the first poll.
#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn register() -> Self {
        Self
    }

    async fn next(&mut self) {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn chain(error: &dyn Error) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        let _ = write!(message, ": {error}");
        cause = error.source();
    }
    message
}

/// The command line: every flag with its environment variable, parsed by name (clap).
#[derive(Debug, clap::Parser)]
#[command(
    name = "dashboard",
    version,
    about = "Serves GET /dashboard/{user_id} and GET /healthz (and GET /metrics when built with the `metrics` feature).",
    after_help = AFTER_HELP,
    max_term_width = 100
)]
struct Cli {
    /// Address to listen on (port 0 picks a free one)
    #[arg(long, env = "DASHBOARD_LISTEN", value_name = "ADDR", default_value = "127.0.0.1:8080", value_parser = listen_addr)]
    listen: SocketAddr,
    /// Profile service, e.g. http://profile.internal/v1/users/{id} [default: a built-in demo backend]
    #[arg(long, env = "DASHBOARD_PROFILE_URL", value_name = "TEMPLATE", value_parser = id_template)]
    profile_url: Option<String>,
    /// Transactions service, e.g. http://tx.internal/v1/{id}/recent [default: a built-in demo backend]
    #[arg(long, env = "DASHBOARD_TRANSACTIONS_URL", value_name = "TEMPLATE", value_parser = id_template)]
    transactions_url: Option<String>,
    /// Offers service, asked with the tier the profile answered, e.g.
    /// http://offers.internal/v1/tiers/{tier}; `none`: no offers service. Optional: an empty list
    /// when it fails, is late or is none [default: a built-in demo backend]
    #[arg(long, env = "DASHBOARD_OFFERS_URL", value_name = "TEMPLATE", value_parser = offers_template)]
    offers_url: Option<String>,
    /// Export the spans (aggregation, sources, HTTP attempts) over OTLP/HTTP, e.g.
    /// http://127.0.0.1:4318/v1/traces (needs the dashboard built with --features otel)
    #[arg(long, env = "DASHBOARD_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// The exported spans' `service.name` (the OpenTelemetry SDKs' own variable; default
    /// `dashboard`)
    #[arg(long, env = "OTEL_SERVICE_NAME", value_name = "NAME")]
    service_name: Option<String>,
    /// Open a backend's circuit breaker when this share of its calls fails, in percent, over at
    /// least 20 calls in 10 s; open 5 s doubling to 60 s, then 1 probe; `off`: no breaker
    #[arg(long, env = "DASHBOARD_BREAKER_FAILURE_RATE", value_name = "PCT", default_value = "50", value_parser = percent_or_off)]
    breaker_failure_rate: Switch<u8>,
    /// The share of a backend's calls, in percent, that may be retried or hedged (at least 5 a
    /// second); `off`: no budget, every retryable failure is retried (for comparison only)
    #[arg(long, env = "DASHBOARD_RETRY_BUDGET_PERCENT", value_name = "PCT", default_value = "10", value_parser = percent_or_off)]
    retry_budget_percent: Switch<u8>,
    /// Attempts per call to the profile and transactions backends, the first included (1: no
    /// retries); only a 5xx or 429, a refused connection or a protocol error is retried, after a
    /// 10 ms backoff (less under a short deadline), within the retry budget and the deadline
    #[arg(long, env = "DASHBOARD_RETRY_ATTEMPTS", value_name = "N", default_value = "2", value_parser = attempts)]
    retry_attempts: u32,
    /// Each attempt at the profile and transactions backends fails after MS (kind `timeout`,
    /// retried, counted by the breaker, so a backend that hangs is cut off); unset: a slow
    /// backend is answered by the deadline (504), which the breaker does not count
    #[arg(long = "attempt-timeout-ms", env = "DASHBOARD_ATTEMPT_TIMEOUT_MS", value_name = "MS", value_parser = millis)]
    attempt_timeout: Option<Duration>,
    /// Cache each user's transactions (keyed by user id and authorization) for MS; 0: always
    /// ask the backend (off by default: no cache unless one of the three cache flags is given)
    #[arg(long = "cache-ttl-ms", env = "DASHBOARD_CACHE_TTL_MS", value_name = "MS", value_parser = millis_or_zero)]
    cache_ttl: Option<Duration>,
    /// Answer a cached transactions section up to MS past its ttl when the backend fails or is
    /// late; the body then lists it under `stale`
    #[arg(long = "stale-if-error-ms", env = "DASHBOARD_STALE_IF_ERROR_MS", value_name = "MS", value_parser = millis_or_zero)]
    stale_if_error: Option<Duration>,
    /// Share the cache between replicas through Redis or Valkey, e.g. redis://127.0.0.1:6379;
    /// unreachable: a warning, and the cache stays local until it answers
    #[arg(long, env = "DASHBOARD_REDIS_URL", value_name = "URL")]
    redis_url: Option<String>,
    /// Deadline of one dashboard request, in ms, counted from its arrival; a caller's
    /// x-muster-deadline-ms or grpc-timeout header can only shorten it
    #[arg(long = "timeout-ms", env = "DASHBOARD_TIMEOUT_MS", value_name = "MS", default_value = "1000", value_parser = millis)]
    timeout: Duration,
    /// Client request headers sent on to the profile and transactions backends,
    /// comma-separated, or `none`
    #[arg(long, env = "DASHBOARD_FORWARD_HEADERS", value_name = "LIST", default_value = "authorization", value_parser = header_list)]
    forward_headers: HeaderList,
    /// Client request headers sent on to the offers backend (which needs no credentials),
    /// comma-separated, or `none`
    #[arg(long, env = "DASHBOARD_OFFERS_FORWARD_HEADERS", value_name = "LIST", default_value = "none", value_parser = header_list)]
    offers_forward_headers: HeaderList,
    /// Serve the live view of the aggregations in flight, GET /debug/aggregations (JSON) and
    /// GET /debug (a page drawing it), to requests with `Authorization: Bearer TOKEN`; without
    /// it they are 404 (off by default). SIGUSR1 logs the same snapshot
    #[arg(long, env = "DASHBOARD_DEBUG_TOKEN", value_name = "TOKEN", value_parser = debug_token)]
    debug_token: Option<String>,

    /// A request head must arrive within MS of the connection waiting for it
    #[arg(long = "header-read-timeout-ms", env = "DASHBOARD_HEADER_READ_TIMEOUT_MS", value_name = "MS", default_value = "10000", value_parser = millis, help_heading = "Limits (all on by default)")]
    header_read_timeout: Duration,
    /// Close a connection idle (no request served, nothing received) for MS
    #[arg(long = "idle-timeout-ms", env = "DASHBOARD_IDLE_TIMEOUT_MS", value_name = "MS", default_value = "5000", value_parser = millis, help_heading = "Limits (all on by default)")]
    idle_timeout: Duration,
    /// Close a connection whose response write makes no progress for MS (a client that does
    /// not read)
    #[arg(long = "write-timeout-ms", env = "DASHBOARD_WRITE_TIMEOUT_MS", value_name = "MS", default_value = "5000", value_parser = millis, help_heading = "Limits (all on by default)")]
    write_timeout: Duration,
    /// A response must be written within MS of its first byte (a client reading just enough
    /// to keep the write timeout away)
    #[arg(long = "response-timeout-ms", env = "DASHBOARD_RESPONSE_TIMEOUT_MS", value_name = "MS", default_value = "30000", value_parser = millis, help_heading = "Limits (all on by default)")]
    response_timeout: Duration,
    /// Response bytes held at once by the whole process, in MiB; past it, 503 with Retry-After
    #[arg(long, env = "DASHBOARD_MAX_RESPONSE_BUFFER_MIB", value_name = "MIB", default_value = "64", value_parser = mebibytes, help_heading = "Limits (all on by default)")]
    max_response_buffer_mib: usize,
    /// Connections served at once; at the cap, connections that have not sent a complete
    /// request head are closed first, then new connections get one answer, 503 (or /healthz)
    #[arg(long, env = "DASHBOARD_MAX_CONNECTIONS", value_name = "N", default_value = "1024", value_parser = count, help_heading = "Limits (all on by default)")]
    max_connections: usize,
    /// Dashboard aggregations at once; past it, 503 with Retry-After at once
    #[arg(long, env = "DASHBOARD_MAX_IN_FLIGHT", value_name = "N", default_value = "512", value_parser = count, help_heading = "Limits (all on by default)")]
    max_in_flight: usize,
    /// Longest user id, in bytes as sent; longer is 414 before any backend is called
    #[arg(long, env = "DASHBOARD_MAX_ID_LEN", value_name = "N", default_value = "1024", value_parser = count, help_heading = "Limits (all on by default)")]
    max_id_len: usize,
    /// On SIGTERM or Ctrl-C, stop accepting and exit at the latest MS later (exit code 1 if
    /// requests were still unanswered); a second signal exits at once
    #[arg(long = "shutdown-grace-ms", env = "DASHBOARD_SHUTDOWN_GRACE_MS", value_name = "MS", default_value = "5000", value_parser = millis, help_heading = "Limits (all on by default)")]
    shutdown_grace: Duration,
}

impl Cli {
    /// The process's command line and environment; an empty variable counts as unset.
    fn parse_command_line() -> Result<Self, clap::Error> {
        use clap::{CommandFactory as _, FromArgMatches as _};
        let command = Self::command().mut_args(|arg| {
            let empty = arg.get_env().is_some_and(|var| std::env::var_os(var).is_some_and(|value| value.is_empty()));
            if empty { arg.env(None::<&'static str>) } else { arg }
        });
        Self::from_arg_matches(&command.try_get_matches()?)
    }

    fn into_args(self) -> Args {
        Args {
            listen: self.listen,
            profile_url: self.profile_url,
            transactions_url: self.transactions_url,
            offers_url: self.offers_url,
            otlp_endpoint: self.otlp_endpoint,
            service_name: self.service_name,
            debug_token: self.debug_token,
            resilience: Resilience {
                breaker_failure_rate: self.breaker_failure_rate.0,
                retry_budget_percent: self.retry_budget_percent.0,
                retry_attempts: self.retry_attempts,
                attempt_timeout: self.attempt_timeout,
            },
            // Off unless asked for; a cache with nothing to keep is refused when the aggregator
            // is built.
            cache: (self.cache_ttl.is_some() || self.stale_if_error.is_some() || self.redis_url.is_some()).then(|| {
                CacheConfig {
                    ttl: self.cache_ttl.unwrap_or_default(),
                    stale_if_error: self.stale_if_error.unwrap_or_default(),
                    redis_url: self.redis_url,
                }
            }),
            timeout: self.timeout,
            forward_headers: self.forward_headers.0,
            offers_forward_headers: self.offers_forward_headers.0,
            limits: Limits {
                header_read_timeout: self.header_read_timeout,
                idle_timeout: self.idle_timeout,
                write_timeout: self.write_timeout,
                response_timeout: self.response_timeout,
                max_response_buffer: self.max_response_buffer_mib << 20,
                max_connections: self.max_connections,
                max_in_flight: self.max_in_flight,
                max_id_len: self.max_id_len,
                shutdown_grace: self.shutdown_grace,
            },
        }
    }
}

/// The settings, from the flags, their environment variables and the defaults.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    listen: SocketAddr,
    profile_url: Option<String>,
    transactions_url: Option<String>,
    offers_url: Option<String>,
    otlp_endpoint: Option<String>,
    /// The spans' `service.name`.
    service_name: Option<String>,
    /// The live view's bearer token; `None`: the view is off.
    debug_token: Option<String>,
    timeout: Duration,
    forward_headers: Vec<HeaderName>,
    offers_forward_headers: Vec<HeaderName>,
    limits: Limits,
    resilience: Resilience,
    /// The transactions section's cache, if any cache flag is given.
    cache: Option<CacheConfig>,
}

/// A bearer token: 16 to 256 visible ASCII characters (a header value, hard to guess).
/// A debug token shorter than this is warned about at start.
const GUESSABLE: usize = 16;

fn debug_token(value: &str) -> Result<String, String> {
    match value.len() {
        1..=256 if value.bytes().all(|byte| byte.is_ascii_graphic()) => Ok(value.to_owned()),
        _ => Err("expected 1 to 256 visible ASCII characters".to_owned()),
    }
}

/// `IP:PORT`.
fn listen_addr(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| "expected IP:PORT, e.g. 127.0.0.1:8080".to_owned())
}

/// A duration in milliseconds, from 1 to ten minutes.
fn millis(value: &str) -> Result<Duration, String> {
    match value.parse::<u64>() {
        Ok(millis @ 1..=MAX_TIMEOUT_MS) => Ok(Duration::from_millis(millis)),
        _ => Err(format!("expected milliseconds from 1 to {MAX_TIMEOUT_MS}")),
    }
}

/// Mebibytes, from 1 to 65536 (64 GiB).
fn mebibytes(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(mib @ 1..=65_536) => Ok(mib),
        _ => Err("expected MiB from 1 to 65536".to_owned()),
    }
}

/// A whole percentage, from 0 to 100 (the aggregator refuses what its policy cannot take, e.g.
/// a breaker's failure rate of 0).
fn percent(value: &str) -> Result<u8, String> {
    match value.parse::<u8>() {
        Ok(percent @ 0..=100) => Ok(percent),
        _ => Err("expected a percentage from 0 to 100".to_owned()),
    }
}

/// A setting that can be turned `off` (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Switch<T>(Option<T>);

/// A [`percent`], or `off`.
fn percent_or_off(value: &str) -> Result<Switch<u8>, String> {
    if value.trim().eq_ignore_ascii_case("off") {
        return Ok(Switch(None));
    }
    percent(value)
        .map(|percent| Switch(Some(percent)))
        .map_err(|_| "expected a percentage from 0 to 100, or `off`".to_owned())
}

/// The most attempts per backend call accepted.
const MAX_ATTEMPTS: u32 = 10;

/// Attempts per call, from 1 (no retry) to [`MAX_ATTEMPTS`].
fn attempts(value: &str) -> Result<u32, String> {
    match value.parse::<u32>() {
        Ok(attempts @ 1..=MAX_ATTEMPTS) => Ok(attempts),
        _ => Err(format!("expected a number of attempts from 1 (no retry) to {MAX_ATTEMPTS}")),
    }
}

/// A duration in milliseconds, from 0 to ten minutes.
fn millis_or_zero(value: &str) -> Result<Duration, String> {
    match value.parse::<u64>() {
        Ok(millis @ 0..=MAX_TIMEOUT_MS) => Ok(Duration::from_millis(millis)),
        _ => Err(format!("expected milliseconds from 0 to {MAX_TIMEOUT_MS}")),
    }
}

/// A count, from 1 to 2^24.
fn count(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(count @ 1..=MAX_COUNT) => Ok(count),
        _ => Err(format!("expected a number from 1 to {MAX_COUNT}")),
    }
}

/// Header names, from a comma-separated list or `none` (one value for clap, not many).
#[derive(Clone, Debug, PartialEq, Eq)]
struct HeaderList(Vec<HeaderName>);

/// Comma-separated header names, or `none`.
fn header_list(value: &str) -> Result<HeaderList, String> {
    if value.trim().eq_ignore_ascii_case("none") {
        return Ok(HeaderList(Vec::new()));
    }
    let mut names = Vec::new();
    for name in value.split(',').map(str::trim).filter(|name| !name.is_empty()) {
        match HeaderName::try_from(name) {
            Ok(name) if !names.contains(&name) => names.push(name),
            Ok(_) => {}
            Err(_) => return Err("expected header names separated by commas, or `none`".to_owned()),
        }
    }
    Ok(HeaderList(names))
}

/// A URL template must say where the user id goes; the fetcher checks the rest.
fn id_template(value: &str) -> Result<String, String> {
    placeholder(value, "{id}")
}

/// The offers template says where the tier goes, or is `none`.
fn offers_template(value: &str) -> Result<String, String> {
    if value == "none" { Ok(value.to_owned()) } else { placeholder(value, "{tier}") }
}

/// A URL template that has `placeholder`.
fn placeholder(value: &str, placeholder: &'static str) -> Result<String, String> {
    if value.contains(placeholder) {
        Ok(value.to_owned())
    } else {
        Err(format!("the URL template has no `{placeholder}`"))
    }
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;
    use clap::{CommandFactory as _, Parser as _};

    use super::*;

    /// Parses `args` as the command line, with whatever `DASHBOARD_*` variables the test
    /// process has (the tests' runner sets none; the variables are pinned by
    /// `every_flag_has_its_variable` and tests/binary.rs).
    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Cli::try_parse_from(std::iter::once("dashboard").chain(args.iter().copied())).map(Cli::into_args)
    }

    fn run_args(args: &[&str]) -> Args {
        match parse(args) {
            Ok(args) => args,
            Err(error) => panic!("expected settings, got {error}"),
        }
    }

    #[test]
    fn the_debug_token_is_off_by_default_and_visible_ascii() {
        assert_eq!(run_args(&[]).debug_token, None);
        for token in ["a-token-of-20-chars!", "s3cret"] {
            assert_eq!(run_args(&["--debug-token", token]).debug_token.as_deref(), Some(token));
        }
        for bad in ["", "with a space in it, long", &"x".repeat(257)] {
            assert_eq!(error_kind(&["--debug-token", bad]), Some(ErrorKind::ValueValidation), "{bad}");
        }
    }

    #[test]
    fn the_service_name_comes_from_the_flag() {
        assert_eq!(run_args(&["--service-name", "dash-eu"]).service_name.as_deref(), Some("dash-eu"));
    }

    fn error_kind(args: &[&str]) -> Option<ErrorKind> {
        parse(args).err().map(|error| error.kind())
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_its_variable() {
        let command = Cli::command();
        let mut flags: Vec<(String, String)> = command
            .get_arguments()
            .filter_map(|arg| {
                let long = arg.get_long()?;
                (long != "help" && long != "version").then(|| {
                    let var = arg.get_env().map(|var| var.to_string_lossy().into_owned()).unwrap_or_default();
                    (format!("--{long}"), var)
                })
            })
            .collect();
        flags.sort();
        let mut expected: Vec<(String, String)> = [
            ("--listen", "DASHBOARD_LISTEN"),
            ("--profile-url", "DASHBOARD_PROFILE_URL"),
            ("--transactions-url", "DASHBOARD_TRANSACTIONS_URL"),
            ("--offers-url", "DASHBOARD_OFFERS_URL"),
            ("--otlp-endpoint", "DASHBOARD_OTLP_ENDPOINT"),
            ("--service-name", "OTEL_SERVICE_NAME"),
            ("--breaker-failure-rate", "DASHBOARD_BREAKER_FAILURE_RATE"),
            ("--retry-budget-percent", "DASHBOARD_RETRY_BUDGET_PERCENT"),
            ("--retry-attempts", "DASHBOARD_RETRY_ATTEMPTS"),
            ("--attempt-timeout-ms", "DASHBOARD_ATTEMPT_TIMEOUT_MS"),
            ("--cache-ttl-ms", "DASHBOARD_CACHE_TTL_MS"),
            ("--stale-if-error-ms", "DASHBOARD_STALE_IF_ERROR_MS"),
            ("--redis-url", "DASHBOARD_REDIS_URL"),
            ("--timeout-ms", "DASHBOARD_TIMEOUT_MS"),
            ("--forward-headers", "DASHBOARD_FORWARD_HEADERS"),
            ("--offers-forward-headers", "DASHBOARD_OFFERS_FORWARD_HEADERS"),
            ("--debug-token", "DASHBOARD_DEBUG_TOKEN"),
            ("--header-read-timeout-ms", "DASHBOARD_HEADER_READ_TIMEOUT_MS"),
            ("--idle-timeout-ms", "DASHBOARD_IDLE_TIMEOUT_MS"),
            ("--write-timeout-ms", "DASHBOARD_WRITE_TIMEOUT_MS"),
            ("--response-timeout-ms", "DASHBOARD_RESPONSE_TIMEOUT_MS"),
            ("--max-response-buffer-mib", "DASHBOARD_MAX_RESPONSE_BUFFER_MIB"),
            ("--max-connections", "DASHBOARD_MAX_CONNECTIONS"),
            ("--max-in-flight", "DASHBOARD_MAX_IN_FLIGHT"),
            ("--max-id-len", "DASHBOARD_MAX_ID_LEN"),
            ("--shutdown-grace-ms", "DASHBOARD_SHUTDOWN_GRACE_MS"),
        ]
        .iter()
        .map(|(flag, var)| ((*flag).to_owned(), (*var).to_owned()))
        .collect();
        expected.sort();
        assert_eq!(flags, expected);
    }

    #[test]
    fn no_arguments_give_the_defaults() {
        let args = run_args(&[]);
        assert_eq!(args.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!((args.profile_url, args.transactions_url, args.offers_url), (None, None, None));
        assert_eq!(args.timeout, Duration::from_secs(1));
        assert_eq!(args.limits, Limits::default());
        assert_eq!(args.forward_headers, [axum::http::header::AUTHORIZATION]);
        assert_eq!(args.offers_forward_headers, Vec::<HeaderName>::new(), "offers get no credentials");
    }

    #[test]
    fn flags_take_separate_or_inline_values_in_any_order() {
        let args = run_args(&[
            "--listen",
            "127.0.0.1:0",
            "--timeout-ms=250",
            "--profile-url",
            "http://p/{id}",
            "--transactions-url=http://t/{id}?a=b",
        ]);
        assert_eq!(args.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(args.timeout, Duration::from_millis(250));
        assert_eq!(args.profile_url.as_deref(), Some("http://p/{id}"));
        assert_eq!(args.transactions_url.as_deref(), Some("http://t/{id}?a=b"));

        // Each value goes to the flag it follows, whatever the order: the two timeouts cannot swap.
        let one = run_args(&["--header-read-timeout-ms", "111", "--idle-timeout-ms", "222"]).limits;
        let other = run_args(&["--idle-timeout-ms", "222", "--header-read-timeout-ms", "111"]).limits;
        assert_eq!(one, other);
        assert_eq!(
            (one.header_read_timeout, one.idle_timeout),
            (Duration::from_millis(111), Duration::from_millis(222))
        );
    }

    #[test]
    fn the_limits_and_headers_have_flags() {
        let args = run_args(&[
            "--header-read-timeout-ms",
            "250",
            "--max-connections=10",
            "--max-in-flight",
            "3",
            "--shutdown-grace-ms",
            "100",
            "--max-id-len",
            "64",
            "--write-timeout-ms",
            "70",
            "--forward-headers",
            "Authorization, x-tenant",
            "--offers-forward-headers",
            "x-tenant",
        ]);
        let limits = args.limits;
        assert_eq!(limits.header_read_timeout, Duration::from_millis(250));
        assert_eq!((limits.max_connections, limits.max_in_flight, limits.max_id_len), (10, 3, 64));
        assert_eq!(limits.shutdown_grace, Duration::from_millis(100));
        assert_eq!(limits.write_timeout, Duration::from_millis(70));
        assert_eq!(limits.idle_timeout, Limits::default().idle_timeout);
        assert_eq!(args.forward_headers, ["authorization", "x-tenant"]);
        assert_eq!(args.offers_forward_headers, ["x-tenant"]);

        assert_eq!(run_args(&["--forward-headers", "none"]).forward_headers, Vec::<HeaderName>::new());
        for (flag, value) in [("--max-connections", "0"), ("--write-timeout-ms", "0"), ("--forward-headers", "a b")] {
            assert_eq!(error_kind(&[flag, value]), Some(ErrorKind::ValueValidation), "{flag} {value}");
        }
    }

    #[test]
    fn the_breaker_and_the_budget_are_on_by_default_and_set_by_flag() {
        assert_eq!(run_args(&[]).resilience, Resilience::default());
        assert_eq!(run_args(&["--breaker-failure-rate", "30"]).resilience.breaker_failure_rate, Some(30));
        assert_eq!(run_args(&["--retry-budget-percent", "5"]).resilience.retry_budget_percent, Some(5));
        let off = run_args(&["--breaker-failure-rate", "off", "--retry-budget-percent=OFF", "--retry-attempts", "1"]);
        assert_eq!(off.resilience, Resilience::OFF);
        for value in ["101", "-1", "half", "12.5", ""] {
            assert!(error_kind(&["--retry-budget-percent", value]).is_some(), "{value} was accepted");
        }
    }

    #[test]
    fn one_retry_by_default_and_the_attempts_are_bounded() {
        assert_eq!(run_args(&[]).resilience.retry_attempts, 2);
        assert_eq!(run_args(&["--retry-attempts", "1"]).resilience.retry_attempts, 1);
        assert_eq!(run_args(&["--retry-attempts=10"]).resilience.retry_attempts, 10);
        for value in ["0", "11", "-1", "two"] {
            assert!(error_kind(&["--retry-attempts", value]).is_some(), "{value} was accepted");
        }
    }

    #[test]
    fn no_attempt_timeout_by_default() {
        assert_eq!(run_args(&[]).resilience.attempt_timeout, None);
        let args = run_args(&["--attempt-timeout-ms", "300"]);
        assert_eq!(args.resilience.attempt_timeout, Some(Duration::from_millis(300)));
        for value in ["0", "-1", "soon"] {
            assert!(error_kind(&["--attempt-timeout-ms", value]).is_some(), "{value} was accepted");
        }
    }

    #[test]
    fn help_wins_over_everything() {
        assert_eq!(error_kind(&["--timeout-ms", "5", "--help"]), Some(ErrorKind::DisplayHelp));
        assert_eq!(error_kind(&["-h", "--timeout-ms", "0"]), Some(ErrorKind::DisplayHelp));
    }

    #[test]
    fn bad_flags_are_typed_errors_said_first_and_short() {
        assert_eq!(error_kind(&["--port", "1"]), Some(ErrorKind::UnknownArgument));
        assert_eq!(error_kind(&["--timeout-ms"]), Some(ErrorKind::InvalidValue));
        assert_eq!(error_kind(&["--timeout-ms=1", "--timeout-ms=2"]), Some(ErrorKind::ArgumentConflict));
        for timeout in ["0", "-1", "1s", "600001"] {
            assert!(error_kind(&["--timeout-ms", timeout]).is_some(), "timeout {timeout} was accepted");
        }
        let error = parse(&["--listen", "localhost"]).expect_err("accepted").to_string();
        let first = error.lines().next().unwrap_or_default();
        assert_eq!(
            first,
            "error: invalid value 'localhost' for '--listen <ADDR>': expected IP:PORT, e.g. 127.0.0.1:8080"
        );
        assert!(error.lines().count() <= 5, "a short error, not the whole usage: {error}");
        let error = parse(&["--profile-url", "http://p/users"]).expect_err("accepted").to_string();
        assert!(error.contains("the URL template has no `{id}`"), "{error}");
        let error = parse(&["--offers-url", "http://o/"]).expect_err("accepted").to_string();
        assert!(error.contains("the URL template has no `{tier}`"), "{error}");
        assert_eq!(run_args(&["--offers-url", "none"]).offers_url.as_deref(), Some("none"));
    }

    #[test]
    fn the_cache_is_off_unless_a_cache_flag_is_given() {
        let args = run_args(&["--cache-ttl-ms", "0", "--stale-if-error-ms=60000", "--redis-url", "redis://r:6379"]);
        let expected = CacheConfig {
            ttl: Duration::ZERO,
            stale_if_error: Duration::from_secs(60),
            redis_url: Some("redis://r:6379".to_owned()),
        };
        assert_eq!(args.cache, Some(expected));
        assert!(error_kind(&["--stale-if-error-ms", "-5"]).is_some(), "a negative window was accepted");
    }
}
