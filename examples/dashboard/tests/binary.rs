//! The `dashboard` binary itself: it prints the address it really bound first, serves there,
//! and refuses bad flags with exit code 2 and a message.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use support::get;

const BINARY: &str = env!("CARGO_BIN_EXE_dashboard");

/// The binary, with none of its settings from the environment.
fn dashboard() -> Command {
    let mut command = Command::new(BINARY);
    for (var, _) in std::env::vars().filter(|(var, _)| var.starts_with("DASHBOARD_")) {
        command.env_remove(var);
    }
    command
}

/// The running binary; killed when dropped, so a failed assertion cannot leave it behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_first_line_is_the_bound_address_and_it_serves_there() {
    let child = dashboard()
        .args(["--listen", "127.0.0.1:0", "--timeout-ms", "2000"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the dashboard");
    let mut running = Running(child);
    let stdout = running.0.stdout.take().expect("piped stdout");
    // The banner ends with the curl hints, the last one for the deadline.
    let read = tokio::task::spawn_blocking(move || {
        let mut banner = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let last = line.contains("# 504");
            banner.push(line);
            if last {
                break;
            }
        }
        banner
    });
    let banner = support::within(support::LIMIT, "the banner", read).await.expect("read the banner");

    let addr = banner
        .first()
        .map_or("", String::as_str)
        .strip_prefix("listening on http://")
        .expect("`listening on` first")
        .parse()
        .expect("an addr");
    assert!(banner.iter().any(|line| line.starts_with("profile      backend: http://127.0.0.1:")), "{banner:#?}");
    assert!(banner.iter().any(|line| line.contains("deadline: 2000 ms")), "{banner:#?}");
    assert!(banner.iter().any(|line| line.contains("curl -i")), "{banner:#?}");
    let reply = get(addr, "/dashboard/42", &[]).await;
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(get(addr, "/healthz", &[]).await.body, "ok");
}

#[test]
fn bad_flags_exit_with_2_and_say_why_first_and_short() {
    for (args, message) in [
        (&["--timeout-ms", "0"][..], "error: invalid value '0' for '--timeout-ms <MS>'"),
        (&["--verbose"], "error: unexpected argument '--verbose'"),
        (&["--listen"], "error: a value is required for '--listen <ADDR>'"),
        (&["--profile-url", "ftp://profile/{id}", "--listen", "127.0.0.1:0"], "profile backend: invalid URL template"),
        (&["--profile-url", "http://p/{tenant}/{id}", "--listen", "127.0.0.1:0"], "placeholder `{tenant}`"),
        (&["--max-in-flight", "0"], "error: invalid value '0' for '--max-in-flight <N>'"),
    ] {
        let output = dashboard().args(args).stdin(Stdio::null()).output().expect("run the dashboard");

        assert_eq!(output.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        // `2>&1 | tail` and `| head` both show the error: it comes first, and little follows.
        let first = stderr.lines().find(|line| line.contains("error") || line.contains("dashboard:"));
        assert!(first.is_some_and(|line| line.contains(message)), "{args:?}: {stderr}");
        assert!(stderr.lines().count() <= 8, "{args:?}: a long message: {stderr}");
        assert!(output.stdout.is_empty(), "{args:?} printed {:?}", String::from_utf8_lossy(&output.stdout));
    }
}

#[test]
fn variables_fill_in_flags_win_and_empty_variables_are_unset() {
    let output = dashboard()
        .args(["--max-in-flight", "5"])
        .env("DASHBOARD_MAX_IN_FLIGHT", "0")
        .env("DASHBOARD_TIMEOUT_MS", "0")
        .stdin(Stdio::null())
        .output()
        .expect("run the dashboard");
    assert_eq!(output.status.code(), Some(2), "the variable's bad timeout is refused");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("'--timeout-ms <MS>'") && !stderr.contains("max-in-flight"), "{stderr}");
}

#[tokio::test]
async fn a_variable_sets_the_deadline_and_an_empty_one_is_a_demo_backend() {
    let child = dashboard()
        .args(["--listen", "127.0.0.1:0"])
        .env("DASHBOARD_TIMEOUT_MS", "700")
        .env("DASHBOARD_PROFILE_URL", "")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the dashboard");
    let mut running = Running(child);
    let stdout = running.0.stdout.take().expect("piped stdout");
    let read = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .take_while(|line| !line.contains("curl"))
            .collect::<Vec<_>>()
    });
    let banner = support::within(support::LIMIT, "the banner", read).await.expect("read the banner");
    assert!(banner.iter().any(|line| line.contains("deadline: 700 ms")), "{banner:#?}");
    assert!(banner.iter().any(|line| line.starts_with("profile") && line.contains("(built-in demo)")), "{banner:#?}");
}

#[test]
fn help_is_printed_to_stdout() {
    let output = dashboard().arg("--help").output().expect("run the dashboard");

    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("Usage: dashboard [OPTIONS]"), "{help}");
    for flag in [
        "--listen",
        "--profile-url",
        "--transactions-url",
        "--offers-url",
        "--otlp-endpoint",
        "--timeout-ms",
        "DASHBOARD_TIMEOUT_MS",
        "--forward-headers",
        "--offers-forward-headers",
        "--header-read-timeout-ms",
        "--idle-timeout-ms",
        "--write-timeout-ms",
        "--max-connections",
        "--max-in-flight",
        "--max-id-len",
        "--shutdown-grace-ms",
    ] {
        assert!(help.contains(flag), "no {flag} in {help}");
    }
}

#[tokio::test]
async fn an_address_in_use_is_an_error_naming_the_address_and_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let addr = taken.local_addr().expect("its address").to_string();
    let output = tokio::task::spawn_blocking(move || {
        dashboard().args(["--listen", &addr]).stdin(Stdio::null()).output().map(|output| (addr, output))
    });
    let (addr, output) =
        support::within(support::LIMIT, "the dashboard to exit", output).await.expect("join").expect("run");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("could not listen on {addr}")), "{stderr}");
    assert!(stderr.contains("--listen"), "{stderr}");
    drop(taken);
}
