//! Project tasks written in Rust, in the style of `matklad/cargo-xtask`: `cargo xtask <task>`.
//!
//! Each task is a short list of cargo commands run from the workspace root with the cargo in
//! `CARGO`. Every command is printed (`$ cargo ...`) before it runs, and the first failure
//! stops the task with a non-zero exit code.
//!
//! ```text
//! cargo xtask ci      fmt, lint, features, test, doc, e2e and a quick soak, in that order
//! cargo xtask fmt     cargo fmt --all --check
//! cargo xtask lint    cargo clippy --workspace --all-targets --all-features -- -D warnings
//! cargo xtask test    cargo test --workspace --all-features (doc tests included)
//! cargo xtask doc     RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features
//! cargo xtask features  cargo check of each library with no features, then each feature alone;
//!                       the HTTP fetcher's tests without TLS
//! cargo xtask e2e     the dashboard binary on 127.0.0.1:0, the README curl lines checked over HTTP
//! cargo xtask bench   every benchmark, interleaved with its baselines; writes target/bench-report.md
//! cargo xtask soak    the soak: 200,000 aggregations (`--quick`: 5,000), checks nothing leaks
//! cargo xtask redteam issue 22's red-team findings against the release dashboard; writes target/redteam-report.md
//! ```

mod bench;
mod brownout;
mod e2e;
mod load;
mod redteam;
mod server;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

const USAGE: &str = "\
usage: cargo xtask <task> [ARGS...]

tasks:
  ci      fmt, lint, features, test, doc, e2e and a quick soak, stopping at the first failure
  fmt     check formatting (cargo fmt --all --check)
  lint    clippy on every target and feature, warnings denied
  test    every test of the workspace, doc tests included
  features  check each library crate with no features and with each feature alone; test http without tls
  doc     build the docs, rustdoc warnings denied
  e2e     run the dashboard binary and check its answers over HTTP
  bench   every benchmark with its baselines, report in target/bench-report.md (`--quick`: short HTTP and
          brownout runs; `--targets`: only the group and aggregator benches behind issue 19's targets table;
          `--brownout`: only the dashboard's breaker, budget and retries under a brownout; `--http`: only
          the dashboard against the hand-written services)
  soak    200,000 random aggregations, then leak checks (`--quick`: 5,000; `--count N`)
  redteam issue 22's red-team findings re-run against the release dashboard, table in target/redteam-report.md (`N...`: only rows N)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (task, rest) = match args.split_first() {
        Some((task, rest)) => (task.as_str(), rest),
        None => return usage_error("no task given"),
    };
    let result = match task {
        "ci" | "fmt" | "lint" | "features" | "test" | "doc" | "e2e" if !rest.is_empty() => {
            return usage_error(&format!("`{task}` takes no arguments"));
        }
        "ci" => ci(),
        "fmt" => fmt(),
        "lint" => lint(),
        "features" => features(),
        "test" => test().map(|summary| eprintln!("\n{summary}")),
        "doc" => doc(),
        "e2e" => e2e::run(),
        "bench" => bench::bench(rest),
        "soak" => soak(rest),
        "redteam" => redteam::run(rest),
        "help" | "-h" | "--help" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        unknown => return usage_error(&format!("unknown task `{unknown}`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {task} failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `message` and the usage, and returns the exit code for bad usage (2).
fn usage_error(message: &str) -> ExitCode {
    eprintln!("xtask: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

/// Everything CI checks, cheapest first, then a closing summary of the tests that ran.
fn ci() -> Result<(), String> {
    fmt()?;
    lint()?;
    features()?;
    let tests = test()?;
    doc()?;
    e2e::run()?;
    soak(&["--quick".to_owned()])?;
    eprintln!("\nci passed: fmt, clippy, each feature alone, docs, e2e, quick soak; {tests}");
    Ok(())
}

fn fmt() -> Result<(), String> {
    require("rustfmt", &["fmt", "--version"])?;
    cargo(&["fmt", "--all", "--check"])
}

fn lint() -> Result<(), String> {
    require("clippy", &["clippy", "--version"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"])
}

const TEST: [&str; 3] = ["test", "--workspace", "--all-features"];

/// Runs every test, echoing the output, and returns a summary of the `test result:` lines of
/// every test binary and doc-test run.
fn test() -> Result<String, String> {
    let shown = show(&[], &TEST);
    eprintln!("$ {shown}");
    let mut child = Command::new(cargo_bin())
        .args(TEST)
        .current_dir(root())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|error| format!("could not run `{shown}`: {error}"))?;
    let mut totals = Totals::default();
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("{line}");
            totals.add(&line);
        }
    }
    let status = child.wait().map_err(|error| format!("`{shown}` did not finish: {error}"))?;
    if !status.success() {
        return Err(format!("`{shown}` failed ({status})"));
    }
    Ok(format!(
        "tests: {} passed, {} failed, {} ignored in {} test runs",
        totals.passed, totals.failed, totals.ignored, totals.runs
    ))
}

/// Sums of the `test result: ok. 17 passed; 0 failed; 0 ignored; ...` lines.
#[derive(Debug, Default)]
struct Totals {
    runs: u64,
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    fn add(&mut self, line: &str) {
        let Some(result) = line.strip_prefix("test result: ") else { return };
        self.runs += 1;
        for part in result.split(['.', ';']) {
            let mut words = part.split_whitespace();
            let (Some(count), Some(what)) = (words.next(), words.next()) else { continue };
            let Ok(count) = count.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                "ignored" => self.ignored += count,
                _ => {}
            }
        }
    }
}

fn doc() -> Result<(), String> {
    cargo_with_env(&[("RUSTDOCFLAGS", "-D warnings")], &["doc", "--workspace", "--no-deps", "--all-features"])?;
    facade_docs(&e2e::target_dir().join("doc").join("muster"))
}

/// The paths a `muster` user cannot write: the inner crates, which the facade re-exports.
const INNER_CRATES: [&str; 3] = ["muster_core", "muster_adapters", "muster_options"];

/// Checks the facade's rendered docs for what a `muster` user cannot follow: an example that
/// imports an inner crate (`use muster_core::…`), or a link into an inner crate's pages
/// (items the facade re-exports must link to the facade's own pages). Links to the source
/// view (`src/…`) are fine.
fn facade_docs(dir: &std::path::Path) -> Result<(), String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|error| format!("cannot read {}: {error}", dir.display()))?;
        for entry in entries.map_while(Result::ok) {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            if path.extension().is_none_or(|extension| extension != "html") {
                continue;
            }
            let html =
                std::fs::read_to_string(&path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
            for inner in INNER_CRATES {
                // Code is highlighted as `<span class="kw">use </span>muster_core::…`.
                let imports =
                    html.contains(&format!("use </span>{inner}::")) || html.contains(&format!("use {inner}::"));
                let pages = format!("{inner}/");
                let links = html.match_indices("href=\"").any(|(at, _)| {
                    let href = html[at + 6..].split('"').next().unwrap_or_default();
                    href.contains(&pages) && !href.contains("src/")
                });
                if imports || links {
                    found.push(format!(
                        "{} ({inner}: {})",
                        path.display(),
                        if imports { "an import" } else { "a link" }
                    ));
                }
            }
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    found.sort();
    Err(format!("the facade's docs name crates a `muster` user cannot write:\n  {}", found.join("\n  ")))
}

/// The crates whose cargo features are checked one by one.
const FEATURED: [(&str, &str); 3] =
    [("muster-adapters", "crates/adapters"), ("muster", "crates/aggregator"), ("dashboard", "examples/dashboard")];

/// `cargo check` of each library with no features, then with each of its features alone (the
/// other steps build everything with `--all-features`, which hides a feature that only compiles
/// with another one), warnings denied. Then the HTTP fetcher without TLS (`http` alone): its
/// tests are checked, and those of the library and of the TLS choice run, so that an
/// `https://` template is seen refused, not only compiled.
fn features() -> Result<(), String> {
    for (package, dir) in FEATURED {
        let manifest = root().join(dir).join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest).map_err(|error| format!("{}: {error}", manifest.display()))?;
        let check = |features: &[&str]| {
            let mut args = vec!["check", "--quiet", "-p", package, "--no-default-features"];
            if !features.is_empty() {
                args.extend(["--features", features[0]]);
            }
            cargo_with_env(&[("RUSTFLAGS", "-D warnings")], &args)
        };
        check(&[])?;
        for feature in cargo_features(&text) {
            check(&[feature])?;
        }
    }
    let plain_http = ["-p", "muster-adapters", "--no-default-features", "--features", "http", "--lib"];
    cargo_with_env(&[("RUSTFLAGS", "-D warnings")], &[&["check", "--quiet"], &plain_http[..], &["--tests"]].concat())?;
    cargo(&[&["test", "--quiet"], &plain_http[..], &["--test", "http_tls"]].concat())
}

/// The feature names of a `Cargo.toml`'s `[features]` table, `default` excluded.
fn cargo_features(manifest: &str) -> Vec<&str> {
    let mut in_features = false;
    let mut names = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_features = line == "[features]";
            continue;
        }
        if !in_features || line.starts_with('#') {
            continue;
        }
        if let Some((name, _)) = line.split_once('=') {
            let name = name.trim();
            if !name.is_empty() && name != "default" {
                names.push(name);
            }
        }
    }
    names
}

/// The soak. `--quick` reuses the debug build of the test step (with its features, so nothing
/// is built twice in CI); a full soak is built for release.
fn soak(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|arg| arg == "--quick");
    let (profile, build): (&str, &[&str]) = if quick {
        ("debug", &["build", "--workspace", "--all-features", "--bin", "soak"])
    } else {
        ("release", &["build", "--release", "-p", "soak"])
    };
    cargo(build)?;
    let binary = e2e::target_dir().join(profile).join(format!("soak{}", std::env::consts::EXE_SUFFIX));
    eprintln!("$ {} {}", binary.display(), args.join(" "));
    let status = Command::new(&binary)
        .args(args)
        .current_dir(root())
        .status()
        .map_err(|error| format!("could not run {}: {error}", binary.display()))?;
    if status.success() { Ok(()) } else { Err(format!("the soak failed ({status})")) }
}

/// Runs `cargo <args>` from the workspace root, printing the command first.
fn cargo(args: &[&str]) -> Result<(), String> {
    cargo_with_env(&[], args)
}

/// Runs `cargo <args>` with extra environment variables, printing the command first.
fn cargo_with_env(env: &[(&str, &str)], args: &[&str]) -> Result<(), String> {
    let shown = show(env, args);
    eprintln!("$ {shown}");
    let status = Command::new(cargo_bin())
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .status()
        .map_err(|error| format!("could not run `{shown}`: {error}"))?;
    if status.success() { Ok(()) } else { Err(format!("`{shown}` failed ({status})")) }
}

/// Checks that the cargo subcommand of a rustup component works, so that a missing component
/// is reported with the fix rather than as a confusing cargo error.
fn require(component: &str, version_args: &[&str]) -> Result<(), String> {
    let works = Command::new(cargo_bin())
        .args(version_args)
        .current_dir(root())
        .output()
        .is_ok_and(|output| output.status.success());
    if works {
        Ok(())
    } else {
        Err(format!("the {component} component is missing; install it with `rustup component add {component}`"))
    }
}

/// The command line as a user would type it, for the log and error messages.
fn show(env: &[(&str, &str)], args: &[&str]) -> String {
    let env = env.iter().map(|(key, value)| format!("{key}={}", quote(value)));
    let args = args.iter().map(|arg| quote(arg));
    env.chain(std::iter::once("cargo".to_owned())).chain(args).collect::<Vec<_>>().join(" ")
}

fn quote(word: &str) -> String {
    if word.contains(char::is_whitespace) { format!("\"{word}\"") } else { word.to_owned() }
}

/// The cargo that runs this xtask (`CARGO`), or the one on `PATH`.
fn cargo_bin() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// The workspace root: the parent of this crate's directory.
fn root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feature_check_covers_the_cache_and_its_redis_tier() {
        let manifest = std::fs::read_to_string(root().join("crates/aggregator/Cargo.toml")).expect("muster's manifest");
        let features = cargo_features(&manifest);
        for feature in ["cache", "redis"] {
            assert!(features.contains(&feature), "`cargo xtask features` must check `{feature}` alone: {features:?}");
        }
    }
}
