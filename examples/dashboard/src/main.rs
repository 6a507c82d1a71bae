//! The banking dashboard: `GET /dashboard/{user_id}` aggregates a profile service and a
//! transactions service, fail-fast, under one deadline (1 s by default).
//!
//! Run with: cargo run --release -p dashboard
//!
//! With no flags it listens on 127.0.0.1:8080 and starts both demo backends in-process; the
//! flags (or their environment variables) point it at real services instead. Logs are JSON
//! lines on stderr (`RUST_LOG` filters them, default `info`).

use std::error::Error;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use dashboard::{AppState, Config, DemoBackend, Service};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

const USAGE: &str = "\
usage: dashboard [OPTIONS]

Serves GET /dashboard/{user_id} and GET /healthz. Every option can also be set with the
environment variable after it; a flag wins over its variable.

options:
  --listen ADDR                 address to listen on [DASHBOARD_LISTEN] (default 127.0.0.1:8080;
                                port 0 picks a free one)
  --profile-url TEMPLATE        profile service, e.g. http://profile.internal/v1/users/{id}
                                [DASHBOARD_PROFILE_URL] (default: a built-in demo backend)
  --transactions-url TEMPLATE   transactions service, e.g. http://tx.internal/v1/{id}/recent
                                [DASHBOARD_TRANSACTIONS_URL] (default: a built-in demo backend)
  --timeout-ms N                deadline of one dashboard request, in ms [DASHBOARD_TIMEOUT_MS]
                                (default 1000)
  -h, --help                    print this help

The demo backends read knobs from the dashboard request's query string: profile_delay_ms,
profile_fail, transactions_delay_ms, transactions_fail (e.g. ?transactions_fail=1).";

/// The longest deadline accepted: ten minutes.
const MAX_TIMEOUT_MS: u64 = 600_000;

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args_os().skip(1), |name| std::env::var_os(name)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("dashboard: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(StartError::Config(error)) => {
            eprintln!("dashboard: {}", chain(&error));
            ExitCode::from(2)
        }
        Err(StartError::Io(what, error)) => {
            eprintln!("dashboard: {what}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Why the server did not start, or stopped with an error.
#[derive(Debug)]
enum StartError {
    /// A URL template or the timeout is unusable: bad usage, exit 2.
    Config(dashboard::ConfigError),
    /// Binding or serving failed.
    Io(&'static str, std::io::Error),
}

async fn run(args: Args) -> Result<(), StartError> {
    let listener = TcpListener::bind(args.listen).await.map_err(|error| StartError::Io("could not listen", error))?;
    let addr = listener.local_addr().map_err(|error| StartError::Io("could not listen", error))?;
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
    let config = Config { profile_url, transactions_url, timeout: args.timeout };
    let state = AppState::new(&config).map_err(StartError::Config)?;

    println!("listening on http://{addr}");
    println!("{}", banner(addr, &config, &demos));
    let server = axum::serve(listener, dashboard::app(state)).with_graceful_shutdown(shutdown());
    server.await.map_err(|error| StartError::Io("server failed", error))?;
    tracing::info!("shut down");
    Ok(())
}

/// The backends and the curl lines to try, after the `listening on` line.
fn banner(addr: SocketAddr, config: &Config, demos: &[DemoBackend]) -> String {
    let mut text = String::new();
    let is_demo = |service: Service| demos.iter().any(|demo| demo.service() == service);
    for (service, url) in [(Service::Profile, &config.profile_url), (Service::Transactions, &config.transactions_url)] {
        let origin = if is_demo(service) { " (built-in demo)" } else { "" };
        let _ = writeln!(text, "{:<12} backend: {url}{origin}", service.name());
    }
    let _ = write!(text, "deadline: {} ms\n\ntry:", config.timeout.as_millis());
    let base = format!("http://{addr}/dashboard/42");
    let mut hints = vec![(base.clone(), "200, both sources")];
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

/// Resolves on Ctrl-C (or SIGTERM on Unix): the server stops accepting and finishes what is in
/// flight, which the deadline bounds.
async fn shutdown() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => drop(signal.recv().await),
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
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
    timeout: Duration,
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

/// The flags, with their environment variables.
const FLAGS: [(&str, &str); 4] = [
    ("--listen", "DASHBOARD_LISTEN"),
    ("--profile-url", "DASHBOARD_PROFILE_URL"),
    ("--transactions-url", "DASHBOARD_TRANSACTIONS_URL"),
    ("--timeout-ms", "DASHBOARD_TIMEOUT_MS"),
];

/// Parses the arguments (`--flag VALUE` or `--flag=VALUE`); a flag not given falls back to its
/// environment variable (ignored when empty), then to the default.
fn parse(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<OsString>,
) -> Result<Command, ArgsError> {
    let mut given: [Option<String>; 4] = Default::default();
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
    let timeout = match next() {
        Some((origin, value)) => match value.parse::<u64>() {
            Ok(millis @ 1..=MAX_TIMEOUT_MS) => Duration::from_millis(millis),
            _ => return Err(ArgsError::Invalid { origin, value, reason: "expected milliseconds from 1 to 600000" }),
        },
        None => Duration::from_secs(1),
    };
    Ok(Command::Run(Args { listen, profile_url, transactions_url, timeout }))
}

/// A URL template must say where the user id goes; the fetcher checks the rest.
fn template((origin, value): (String, String)) -> Result<String, ArgsError> {
    if value.contains("{id}") {
        Ok(value)
    } else {
        Err(ArgsError::Invalid { origin, value, reason: "the URL template has no `{id}`" })
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
