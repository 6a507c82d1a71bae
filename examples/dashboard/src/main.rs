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
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use axum::http::HeaderName;
use dashboard::limits::Limits;
use dashboard::logging::Logging;
use dashboard::server::Server;
use dashboard::{AppState, Config, DemoBackend, Resilience, Service};
use tokio::net::TcpListener;

const USAGE: &str = "\
usage: dashboard [OPTIONS]

Serves GET /dashboard/{user_id} and GET /healthz (and GET /metrics when built with the
`metrics` feature). Every option can also be set with the
environment variable after it; a flag wins over its variable.

options:
  --listen ADDR                 address to listen on [DASHBOARD_LISTEN] (default 127.0.0.1:8080;
                                port 0 picks a free one)
  --profile-url TEMPLATE        profile service, e.g. http://profile.internal/v1/users/{id}
                                [DASHBOARD_PROFILE_URL] (default: a built-in demo backend)
  --transactions-url TEMPLATE   transactions service, e.g. http://tx.internal/v1/{id}/recent
                                [DASHBOARD_TRANSACTIONS_URL] (default: a built-in demo backend)
  --offers-url TEMPLATE         offers service, asked with the tier the profile answered, e.g.
                                http://offers.internal/v1/tiers/{tier} [DASHBOARD_OFFERS_URL]
                                (default: a built-in demo backend; `none`: no offers service);
                                optional: an empty list when it fails, is late or is none
  --otlp-endpoint URL           export the spans (aggregation, sources, HTTP attempts) over
                                OTLP/HTTP, e.g. http://127.0.0.1:4318/v1/traces
                                [DASHBOARD_OTLP_ENDPOINT] (off by default; needs the dashboard
                                built with --features otel)
  --timeout-ms N                deadline of one dashboard request, in ms, counted from its
                                arrival [DASHBOARD_TIMEOUT_MS] (default 1000); a caller's
                                x-muster-deadline-ms or grpc-timeout header can only shorten it
  --forward-headers LIST        client request headers sent on to every backend, comma-separated,
                                or `none` [DASHBOARD_FORWARD_HEADERS] (default authorization)
  --breaker-failure-rate PCT    open a backend's circuit breaker when this share of its calls
                                fails, over at least 20 calls in 10 s; open 5 s doubling to 60 s,
                                then 1 probe [DASHBOARD_BREAKER_FAILURE_RATE] (default 50)
  --retry-budget-percent PCT    share of a backend's calls that may be retried or hedged, plus
                                5 a second [DASHBOARD_RETRY_BUDGET_PERCENT] (default 10)
  -h, --help                    print this help

limits (all on by default):
  --header-read-timeout-ms N    a request head must arrive within N ms of the connection
                                waiting for it [DASHBOARD_HEADER_READ_TIMEOUT_MS] (default 10000)
  --idle-timeout-ms N           close a connection idle (no request served, nothing received)
                                for N ms [DASHBOARD_IDLE_TIMEOUT_MS] (default 5000)
  --write-timeout-ms N          close a connection whose response write makes no progress for
                                N ms (a client that does not read) [DASHBOARD_WRITE_TIMEOUT_MS]
                                (default 5000)
  --max-connections N           connections served at once; past it, new connections get one
                                answer, 503 (or /healthz), then are closed [DASHBOARD_MAX_CONNECTIONS]
                                (default 1024)
  --max-in-flight N             dashboard aggregations at once; past it, 503 with Retry-After at
                                once [DASHBOARD_MAX_IN_FLIGHT] (default 512)
  --max-id-len N                longest user id, in bytes as sent; longer is 414 before any
                                backend is called [DASHBOARD_MAX_ID_LEN] (default 1024)
  --shutdown-grace-ms N         on SIGTERM or Ctrl-C, stop accepting and exit at the latest N ms
                                later; a second signal exits at once [DASHBOARD_SHUTDOWN_GRACE_MS]
                                (default 5000)

With `Accept: application/x-ndjson` (or text/event-stream), each section is sent the moment
its source completes, then a last line with the outcome.

The demo backends read knobs from the dashboard request's query string: profile_delay_ms,
profile_fail, transactions_delay_ms, transactions_fail, offers_delay_ms, offers_fail
(e.g. ?transactions_fail=1).";

/// The longest deadline or timeout accepted: ten minutes.
const MAX_TIMEOUT_MS: u64 = 600_000;

/// The largest connection, in-flight or id-length limit accepted.
const MAX_COUNT: usize = 1 << 24;

/// How long the runtime waits for blocking work (a stuck DNS lookup) when the process exits.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    let args = match parse(std::env::args_os().skip(1), |name| std::env::var_os(name)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            // `dashboard --help | head` closes stdout early: not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "dashboard: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = writeln!(std::io::stderr(), "dashboard: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let logging = match Logging::init(args.otlp_endpoint.as_deref()) {
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
        Ok(()) => ExitCode::SUCCESS,
        Err(StartError::Config(error)) => {
            let _ = writeln!(std::io::stderr(), "dashboard: {}", chain(&error));
            ExitCode::from(2)
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
}

async fn run(args: Args) -> Result<(), StartError> {
    let listen = args.listen;
    let cannot_listen = |error| StartError::Listen(listen, error);
    let listener = TcpListener::bind(listen).await.map_err(cannot_listen)?;
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
    let (timeout, forward_headers) = (args.timeout, args.forward_headers);
    let config = Config { profile_url, transactions_url, offers_url, timeout, forward_headers };
    let state = AppState::with_resilience(&config, args.resilience).map_err(StartError::Config)?;

    // Before the banner: a signal sent once the server says it is up is always handled.
    let stop = signals();
    // A closed stdout (`dashboard | head`) must not stop the server: write errors are ignored.
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on http://{addr}");
    let _ = writeln!(stdout, "{}", banner(addr, &config, &demos));
    let _ = stdout.flush();

    let server = Server::new(dashboard::app(state), args.limits, config.timeout);
    let outcome = server.serve(listener, stop).await;
    if outcome.forced > 0 {
        tracing::warn!(open_connections = outcome.forced, "grace period over: exiting with requests unanswered");
    } else {
        tracing::info!("shut down");
    }
    Ok(())
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
fn signals() -> impl std::future::Future<Output = ()> {
    let (first, second) = tokio::sync::oneshot::channel::<()>();
    let mut signals = Signals::register();
    tokio::spawn(async move {
        let mut first = Some(first);
        loop {
            signals.next().await;
            match first.take() {
                Some(first) => drop(first.send(())),
                None => {
                    let _ = writeln!(std::io::stderr(), "dashboard: second signal, exiting now");
                    std::process::exit(130);
                }
            }
        }
    });
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

/// What to do, from the command line.
#[derive(Debug, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // reason: made once per process, never moved around
enum Command {
    Run(Args),
    Help,
}

/// The settings, from the flags, their environment variables and the defaults.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    listen: SocketAddr,
    profile_url: Option<String>,
    transactions_url: Option<String>,
    offers_url: Option<String>,
    otlp_endpoint: Option<String>,
    timeout: Duration,
    forward_headers: Vec<HeaderName>,
    limits: Limits,
    resilience: Resilience,
}

/// A bad flag or environment variable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum ArgsError {
    #[error("unknown argument `{0}`")]
    Unknown(String),
    #[error("`{0}` needs a value")]
    MissingValue(&'static str),
    #[error("`{0}` is given twice")]
    Repeated(&'static str),
    #[error("{origin} is not valid UTF-8")]
    NotUnicode { origin: String },
    #[error("invalid value `{value}` for {origin}: {reason}")]
    Invalid { origin: String, value: String, reason: &'static str },
}

/// The flags, with their environment variables, in the order [`parse`] reads them.
const FLAGS: [(&str, &str); 16] = [
    ("--listen", "DASHBOARD_LISTEN"),
    ("--profile-url", "DASHBOARD_PROFILE_URL"),
    ("--transactions-url", "DASHBOARD_TRANSACTIONS_URL"),
    ("--offers-url", "DASHBOARD_OFFERS_URL"),
    ("--otlp-endpoint", "DASHBOARD_OTLP_ENDPOINT"),
    ("--timeout-ms", "DASHBOARD_TIMEOUT_MS"),
    ("--forward-headers", "DASHBOARD_FORWARD_HEADERS"),
    ("--header-read-timeout-ms", "DASHBOARD_HEADER_READ_TIMEOUT_MS"),
    ("--idle-timeout-ms", "DASHBOARD_IDLE_TIMEOUT_MS"),
    ("--write-timeout-ms", "DASHBOARD_WRITE_TIMEOUT_MS"),
    ("--max-connections", "DASHBOARD_MAX_CONNECTIONS"),
    ("--max-in-flight", "DASHBOARD_MAX_IN_FLIGHT"),
    ("--max-id-len", "DASHBOARD_MAX_ID_LEN"),
    ("--shutdown-grace-ms", "DASHBOARD_SHUTDOWN_GRACE_MS"),
    ("--breaker-failure-rate", "DASHBOARD_BREAKER_FAILURE_RATE"),
    ("--retry-budget-percent", "DASHBOARD_RETRY_BUDGET_PERCENT"),
];

/// Parses the arguments (`--flag VALUE` or `--flag=VALUE`); a flag not given falls back to its
/// environment variable (ignored when empty), then to the default.
fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Command, ArgsError> {
    let mut given: [Option<String>; FLAGS.len()] = Default::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let arg = arg.into_string().map_err(|arg| ArgsError::Unknown(arg.to_string_lossy().into_owned()))?;
        if arg == "-h" || arg == "--help" {
            return Ok(Command::Help);
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value.to_owned())),
            _ => (arg.as_str(), None),
        };
        let Some(index) = FLAGS.iter().position(|(flag, _)| *flag == name) else {
            return Err(ArgsError::Unknown(arg));
        };
        let flag = FLAGS[index].0;
        let value = match inline {
            Some(value) => value,
            None => match args.next() {
                Some(value) => {
                    value.into_string().map_err(|_| ArgsError::NotUnicode { origin: format!("`{flag}`") })?
                }
                None => return Err(ArgsError::MissingValue(flag)),
            },
        };
        if given[index].replace(value).is_some() {
            return Err(ArgsError::Repeated(flag));
        }
    }
    let mut settings = Vec::with_capacity(FLAGS.len());
    for ((flag, var), value) in FLAGS.iter().zip(given) {
        let setting = match value {
            Some(value) => Some((format!("`{flag}`"), value)),
            None => match env(var) {
                Some(value) if value.is_empty() => None,
                Some(value) => match value.into_string() {
                    Ok(value) => Some(((*var).to_owned(), value)),
                    Err(_) => return Err(ArgsError::NotUnicode { origin: (*var).to_owned() }),
                },
                None => None,
            },
        };
        settings.push(setting);
    }
    let mut settings = settings.into_iter();
    let mut next = || settings.next().flatten();
    let listen = match next() {
        Some((origin, value)) => value.parse().map_err(|_| ArgsError::Invalid {
            origin,
            value,
            reason: "expected IP:PORT, e.g. 127.0.0.1:8080",
        })?,
        None => SocketAddr::from(([127, 0, 0, 1], 8080)),
    };
    let profile_url = next().map(template).transpose()?;
    let transactions_url = next().map(template).transpose()?;
    let offers_url = match next() {
        Some((_, value)) if value == "none" => Some(value),
        setting => setting.map(|setting| placeholder(setting, "{tier}")).transpose()?,
    };
    let otlp_endpoint = next().map(|(_, value)| value);
    let timeout = millis(next(), Duration::from_secs(1))?;
    let forward_headers = match next() {
        Some(setting) => header_list(setting)?,
        None => vec![axum::http::header::AUTHORIZATION],
    };
    let defaults = Limits::default();
    let limits = Limits {
        header_read_timeout: millis(next(), defaults.header_read_timeout)?,
        idle_timeout: millis(next(), defaults.idle_timeout)?,
        write_timeout: millis(next(), defaults.write_timeout)?,
        max_connections: count(next(), defaults.max_connections)?,
        max_in_flight: count(next(), defaults.max_in_flight)?,
        max_id_len: count(next(), defaults.max_id_len)?,
        shutdown_grace: millis(next(), defaults.shutdown_grace)?,
    };
    let defaults = Resilience::default();
    let resilience = Resilience {
        breaker_failure_rate: percent(next(), defaults.breaker_failure_rate)?,
        retry_budget_percent: percent(next(), defaults.retry_budget_percent)?,
    };
    Ok(Command::Run(Args {
        listen,
        profile_url,
        transactions_url,
        offers_url,
        otlp_endpoint,
        timeout,
        forward_headers,
        limits,
        resilience,
    }))
}

/// A whole percentage, from 0 to 100 (the aggregator refuses what its policy cannot take, e.g. a
/// breaker's failure rate of 0).
fn percent(setting: Option<(String, String)>, default: u8) -> Result<u8, ArgsError> {
    match setting {
        None => Ok(default),
        Some((origin, value)) => match value.parse::<u8>() {
            Ok(percent @ 0..=100) => Ok(percent),
            _ => Err(ArgsError::Invalid { origin, value, reason: "expected a percentage from 0 to 100" }),
        },
    }
}

/// A duration in milliseconds, from 1 to ten minutes.
fn millis(setting: Option<(String, String)>, default: Duration) -> Result<Duration, ArgsError> {
    match setting {
        None => Ok(default),
        Some((origin, value)) => match value.parse::<u64>() {
            Ok(millis @ 1..=MAX_TIMEOUT_MS) => Ok(Duration::from_millis(millis)),
            _ => Err(ArgsError::Invalid { origin, value, reason: "expected milliseconds from 1 to 600000" }),
        },
    }
}

/// A count, from 1 to 2^24.
fn count(setting: Option<(String, String)>, default: usize) -> Result<usize, ArgsError> {
    match setting {
        None => Ok(default),
        Some((origin, value)) => match value.parse::<usize>() {
            Ok(count @ 1..=MAX_COUNT) => Ok(count),
            _ => Err(ArgsError::Invalid { origin, value, reason: "expected a number from 1 to 16777216" }),
        },
    }
}

/// Comma-separated header names, or `none`.
fn header_list((origin, value): (String, String)) -> Result<Vec<HeaderName>, ArgsError> {
    if value.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut names = Vec::new();
    for name in value.split(',').map(str::trim).filter(|name| !name.is_empty()) {
        match HeaderName::try_from(name) {
            Ok(name) if !names.contains(&name) => names.push(name),
            Ok(_) => {}
            Err(_) => {
                let reason = "expected header names separated by commas, or `none`";
                return Err(ArgsError::Invalid { origin, value: value.clone(), reason });
            }
        }
    }
    Ok(names)
}

/// A URL template must say where the user id goes; the fetcher checks the rest.
fn template(setting: (String, String)) -> Result<String, ArgsError> {
    placeholder(setting, "{id}")
}

/// A URL template that has `placeholder`.
fn placeholder((origin, value): (String, String), placeholder: &'static str) -> Result<String, ArgsError> {
    if value.contains(placeholder) {
        Ok(value)
    } else {
        let reason =
            if placeholder == "{id}" { "the URL template has no `{id}`" } else { "the URL template has no `{tier}`" };
        Err(ArgsError::Invalid { origin, value, reason })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_with(args: &[&str], env: &[(&str, &str)]) -> Result<Command, ArgsError> {
        let env: Vec<(String, OsString)> = env.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())).collect();
        parse(args.iter().map(OsString::from), |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn run_args(args: &[&str], env: &[(&str, &str)]) -> Args {
        match parse_with(args, env) {
            Ok(Command::Run(args)) => args,
            other => panic!("expected settings, got {other:?}"),
        }
    }

    #[test]
    fn no_arguments_give_the_defaults() {
        let args = run_args(&[], &[]);
        assert_eq!(args.listen, SocketAddr::from(([127, 0, 0, 1], 8080)));
        assert_eq!((args.profile_url, args.transactions_url), (None, None));
        assert_eq!(args.timeout, Duration::from_secs(1));
    }

    #[test]
    fn flags_take_separate_or_inline_values() {
        let args = run_args(
            &[
                "--listen",
                "127.0.0.1:0",
                "--timeout-ms=250",
                "--profile-url",
                "http://p/{id}",
                "--transactions-url=http://t/{id}?a=b",
            ],
            &[],
        );
        assert_eq!(args.listen, SocketAddr::from(([127, 0, 0, 1], 0)));
        assert_eq!(args.timeout, Duration::from_millis(250));
        assert_eq!(args.profile_url.as_deref(), Some("http://p/{id}"));
        assert_eq!(args.transactions_url.as_deref(), Some("http://t/{id}?a=b"));
    }

    #[test]
    fn environment_variables_fill_in_and_flags_win() {
        let env =
            [("DASHBOARD_TIMEOUT_MS", "700"), ("DASHBOARD_LISTEN", "0.0.0.0:9000"), ("DASHBOARD_PROFILE_URL", "")];
        let args = run_args(&["--listen", "127.0.0.1:1"], &env);
        assert_eq!(args.listen, SocketAddr::from(([127, 0, 0, 1], 1)));
        assert_eq!(args.timeout, Duration::from_millis(700));
        assert_eq!(args.profile_url, None, "an empty variable counts as unset");
    }

    #[test]
    fn the_limits_have_defaults_flags_and_variables() {
        let args = run_args(&[], &[]);
        assert_eq!(args.limits, Limits::default());
        assert_eq!(args.forward_headers, [axum::http::header::AUTHORIZATION]);

        let args = run_args(
            &[
                "--header-read-timeout-ms",
                "250",
                "--max-connections=10",
                "--forward-headers",
                "Authorization, x-tenant",
            ],
            &[("DASHBOARD_MAX_IN_FLIGHT", "3"), ("DASHBOARD_SHUTDOWN_GRACE_MS", "100"), ("DASHBOARD_MAX_ID_LEN", "64")],
        );
        let limits = args.limits;
        assert_eq!(limits.header_read_timeout, Duration::from_millis(250));
        assert_eq!((limits.max_connections, limits.max_in_flight, limits.max_id_len), (10, 3, 64));
        assert_eq!(limits.shutdown_grace, Duration::from_millis(100));
        assert_eq!(limits.idle_timeout, Limits::default().idle_timeout);
        assert_eq!(args.forward_headers, ["authorization", "x-tenant"]);

        assert_eq!(run_args(&["--forward-headers", "none"], &[]).forward_headers, Vec::<HeaderName>::new());
        for (flag, value) in [("--max-connections", "0"), ("--write-timeout-ms", "0"), ("--forward-headers", "a b")] {
            assert!(matches!(parse_with(&[flag, value], &[]), Err(ArgsError::Invalid { .. })), "{flag} {value}");
        }
    }

    #[test]
    fn the_breaker_and_the_budget_are_on_by_default_and_set_by_flag_or_env() {
        assert_eq!(run_args(&[], &[]).resilience, Resilience::default());
        let args = run_args(&["--breaker-failure-rate", "30"], &[("DASHBOARD_RETRY_BUDGET_PERCENT", "5")]);
        assert_eq!(args.resilience, Resilience { breaker_failure_rate: 30, retry_budget_percent: 5 });
        for value in ["101", "-1", "half", "12.5"] {
            let parsed = parse_with(&["--retry-budget-percent", value], &[]);
            assert!(matches!(parsed, Err(ArgsError::Invalid { .. })), "{value}: {parsed:?}");
        }
    }

    #[test]
    fn help_wins_over_everything() {
        assert_eq!(parse_with(&["--timeout-ms", "5", "--help"], &[]), Ok(Command::Help));
        assert_eq!(parse_with(&["-h"], &[("DASHBOARD_TIMEOUT_MS", "x")]), Ok(Command::Help));
    }

    #[test]
    fn bad_flags_are_typed_errors() {
        assert_eq!(parse_with(&["--port", "1"], &[]), Err(ArgsError::Unknown("--port".to_owned())));
        assert_eq!(parse_with(&["--timeout-ms"], &[]), Err(ArgsError::MissingValue("--timeout-ms")));
        assert_eq!(parse_with(&["--timeout-ms=1", "--timeout-ms=2"], &[]), Err(ArgsError::Repeated("--timeout-ms")));
        for timeout in ["0", "-1", "1s", "600001"] {
            assert!(
                matches!(parse_with(&["--timeout-ms", timeout], &[]), Err(ArgsError::Invalid { .. })),
                "timeout {timeout} was accepted"
            );
        }
        let error = parse_with(&["--listen", "localhost"], &[]).expect_err("accepted");
        assert_eq!(
            error.to_string(),
            "invalid value `localhost` for `--listen`: expected IP:PORT, e.g. 127.0.0.1:8080"
        );
        let error = parse_with(&[], &[("DASHBOARD_PROFILE_URL", "http://p/users")]).expect_err("accepted");
        assert_eq!(
            error.to_string(),
            "invalid value `http://p/users` for DASHBOARD_PROFILE_URL: the URL template has no `{id}`"
        );
    }
}
