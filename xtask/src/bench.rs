//! `cargo xtask bench`: runs every benchmark in its interleaved report mode, side by side with
//! its baselines, and writes one markdown report, `target/bench-report.md`, also printed. The
//! report opens with the targets of issue 19, one row each: the figure, the target, met or not.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::cargo;
use crate::e2e::target_dir;

/// One measured line: `scenario implementation n median_ns p99_ns [p95_ns]`.
#[derive(Debug)]
struct Row {
    scenario: String,
    implementation: String,
    n: usize,
    median: f64,
    p99: f64,
    /// Given by the shared harness and the Go errgroup, not by every bench.
    p95: Option<f64>,
}

/// The heap allocations of one run: a line `#alloc scenario implementation n allocations`.
#[derive(Debug)]
struct Allocations {
    scenario: String,
    implementation: String,
    n: usize,
    count: u64,
}

/// Runs the benches and writes the report. `--quick` shortens the HTTP and brownout
/// benchmarks' runs; `--targets` runs only the group and aggregator benches (the targets table
/// and their sections, about a minute); `--brownout` only the dashboard's brownout benchmark
/// (about half a minute); `--http` only the HTTP benchmark (the dashboard against the
/// hand-written services; about 2 minutes with `--quick`); other arguments go to `cargo bench`.
pub(crate) fn bench(args: &[String]) -> Result<(), String> {
    let only = |flag: &str| args.iter().any(|arg| arg == flag);
    let (quick, targets_only) = (only("--quick"), only("--targets"));
    let extra: Vec<String> = args
        .iter()
        .filter(|arg| !["--quick", "--targets", "--brownout", "--http"].contains(&arg.as_str()))
        .cloned()
        .collect();
    let extra = extra.as_slice();
    let target = target_dir();
    if only("--brownout") || only("--http") {
        let section = if only("--http") { crate::load::http_bench(quick)? } else { crate::brownout::bench(quick)? };
        return write_report(&(String::from("# muster benchmark report\n\n") + &section));
    }
    let group = target.join("bench-group.tsv");
    let allocations = target.join("bench-group-allocations.tsv");
    let aggregator = target.join("bench-aggregator.tsv");
    // Go is optional: without it, the group benchmark says so and skips the comparison.
    if !install("go", "golang-go") {
        eprintln!("bench: could not install golang-go: the Go errgroup comparison is skipped");
    }
    run_report(&["bench", "-p", "muster-core", "--bench", "group"], &group, extra)?;
    run_report(&["bench", "-p", "muster-core", "--bench", "allocations"], &allocations, extra)?;
    run_report(&["bench", "-p", "muster", "--bench", "aggregator"], &aggregator, extra)?;
    let (group, group_allocations) = (read(&group)?, read_allocations(&allocations)?);
    let (aggregator_rows, aggregator_allocations) = (read(&aggregator)?, read_allocations(&aggregator)?);
    let mut report = String::from("# muster benchmark report\n\n");
    report += "Interleaved rounds on one 2-worker tokio runtime; per-iteration time of each batch, median and \
               99th percentile over 200 rounds. Ratios are muster / baseline (below 1: muster is faster).\n\n";
    targets_table(&group, &group_allocations, &aggregator_rows, &aggregator_allocations, &mut report);
    group_table(&group, &group_allocations, &mut report);
    for note in notes(&allocations)? {
        report += &format!("- {note}\n");
    }
    report.push('\n');
    cancel_latency_table(&group, &mut report);
    aggregator_table(&aggregator_rows, &mut report);
    for note in notes(&aggregator)? {
        report += &format!("- {note}\n");
    }
    report.push('\n');
    if !targets_only {
        the_rest(quick, extra, &mut report)?;
    }
    write_report(&report)
}

/// Writes `report` to `target/bench-report.md` and prints it.
fn write_report(report: &str) -> Result<(), String> {
    let path = target_dir().join("bench-report.md");
    std::fs::write(&path, report).map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    println!("{report}");
    eprintln!("bench: report written to {}", path.display());
    Ok(())
}

/// The benchmarks outside issue 19's targets: the cache, the access log, the resilience
/// policies (in the library, then in the dashboard under a brownout) and the HTTP services.
fn the_rest(quick: bool, extra: &[String], report: &mut String) -> Result<(), String> {
    let target = target_dir();
    let cache = target.join("bench-cache.tsv");
    run_report(&["bench", "-p", "muster", "--features", "redis", "--bench", "cache"], &cache, extra)?;
    let access_log = target.join("bench-access-log.tsv");
    run_report(&["bench", "-p", "dashboard", "--bench", "access_log"], &access_log, extra)?;
    cache_table(&read(&cache)?, report);
    for note in notes(&cache)? {
        *report += &format!("- {note}\n");
    }
    report.push('\n');
    access_log_table(&read(&access_log)?, report);
    let resilience = target.join("bench-resilience.md");
    run_report(&["bench", "-p", "muster", "--bench", "resilience"], &resilience, extra)?;
    *report += &std::fs::read_to_string(&resilience)
        .map_err(|error| format!("cannot read {}: {error}", resilience.display()))?;
    *report += &crate::brownout::bench(quick)?;
    *report += &crate::load::http_bench(quick)?;
    Ok(())
}

fn run_report(args: &[&str], output: &Path, extra: &[String]) -> Result<(), String> {
    let output = output.to_string_lossy();
    let mut args: Vec<&str> = args.to_vec();
    args.extend(extra.iter().map(String::as_str));
    args.extend(["--", "--report", &output]);
    cargo(&args)
}

/// Installs Debian's `package` when `program` is not on the path and `apt-get` is there, as
/// `.ci/run` installs `redis-server`: non-interactive, with `sudo` only when not root. Answers
/// whether `program` can be run afterwards.
pub(crate) fn install(program: &str, package: &str) -> bool {
    let works = |program: &str, args: &[&str]| {
        let output = Command::new(program).args(args).stdin(Stdio::null()).output();
        output.is_ok_and(|output| output.status.success())
    };
    // Found and started: whatever it answers to `--version` (`wrk` prints its usage).
    let runs = || Command::new(program).arg("--version").stdin(Stdio::null()).output().is_ok();
    if runs() {
        return true;
    }
    if !works("apt-get", &["--version"]) {
        return false;
    }
    let root = Command::new("id").arg("-u").output().is_ok_and(|output| output.stdout.trim_ascii() == b"0");
    let apt_get = |args: &[&str]| {
        let (program, args) = if root { ("apt-get", args.to_vec()) } else { ("sudo", [&["apt-get"], args].concat()) };
        eprintln!("$ {program} {}", args.join(" "));
        let status = Command::new(program)
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .status();
        status.is_ok_and(|status| status.success())
    };
    apt_get(&["update", "-qq"]) && apt_get(&["install", "-y", "-qq", package]) && runs()
}

fn read(path: &Path) -> Result<Vec<Row>, String> {
    parse_lines(
        path,
        |line| (!line.starts_with('#')).then_some(line),
        |fields| {
            Some(Row {
                scenario: fields.next()?.to_owned(),
                implementation: fields.next()?.to_owned(),
                n: fields.next()?.parse().ok()?,
                median: fields.next()?.parse().ok()?,
                p99: fields.next()?.parse().ok()?,
                p95: fields.next().map(str::parse).transpose().ok()?,
            })
        },
    )
}

/// The `#alloc ...` lines of a report.
fn read_allocations(path: &Path) -> Result<Vec<Allocations>, String> {
    parse_lines(
        path,
        |line| line.strip_prefix("#alloc\t"),
        |fields| {
            Some(Allocations {
                scenario: fields.next()?.to_owned(),
                implementation: fields.next()?.to_owned(),
                n: fields.next()?.parse().ok()?,
                count: fields.next()?.parse().ok()?,
            })
        },
    )
}

/// The lines of the report at `path` that `select` picks (and trims), their tab-separated
/// fields parsed by `parse`.
fn parse_lines<R>(
    path: &Path,
    select: fn(&str) -> Option<&str>,
    parse: impl Fn(&mut std::str::Split<'_, char>) -> Option<R>,
) -> Result<Vec<R>, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    (text.lines().filter_map(select))
        .map(|line| parse(&mut line.split('\t')).ok_or_else(|| format!("bad line in {}: {line}", path.display())))
        .collect()
}

/// The `# ...` lines of a report: notes beside the figures (e.g. allocation counts).
fn notes(path: &Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    Ok(text.lines().filter_map(|line| line.strip_prefix("# ")).map(str::to_owned).collect())
}

/// One scenario at one N: its rows by implementation.
type Case<'a> = ((String, usize), BTreeMap<String, &'a Row>);

/// Rows grouped by (scenario, n), in the order they were measured.
fn by_case(rows: &[Row]) -> Vec<Case<'_>> {
    let mut cases: Vec<Case<'_>> = Vec::new();
    for row in rows {
        let key = (row.scenario.clone(), row.n);
        match cases.iter_mut().find(|(case, _)| *case == key) {
            Some((_, implementations)) => {
                implementations.insert(row.implementation.clone(), row);
            }
            None => cases.push((key, BTreeMap::from([(row.implementation.clone(), row)]))),
        }
    }
    cases
}

fn time(ns: f64) -> String {
    match ns {
        ns if ns >= 1_000_000.0 => format!("{:.3} ms", ns / 1_000_000.0),
        ns if ns >= 1_000.0 => format!("{:.2} µs", ns / 1_000.0),
        ns => format!("{ns:.0} ns"),
    }
}

fn ratio(muster: f64, baseline: Option<f64>) -> String {
    baseline
        .filter(|baseline| *baseline > 0.0)
        .map_or_else(|| "-".to_owned(), |baseline| format!("{:.2}", muster / baseline))
}

/// The allocations of one run of `implementation` in `scenario` at `n`, if counted.
fn allocations_of(allocations: &[Allocations], scenario: &str, implementation: &str, n: usize) -> Option<u64> {
    (allocations.iter())
        .find(|row| row.scenario == scenario && row.implementation == implementation && row.n == n)
        .map(|row| row.count)
}

/// The largest ratio `muster` ÷ `baseline` over the cases `wanted` picks (by scenario, without
/// the runtime's `/ct` suffix, and N), and that case.
fn worst(rows: &[Row], muster: &str, baseline: &str, wanted: impl Fn(&str, usize) -> bool) -> Option<(f64, String)> {
    (by_case(rows).into_iter())
        .filter(|((scenario, n), _)| wanted(scenario.trim_end_matches("/ct"), *n))
        .filter_map(|((scenario, n), implementations)| {
            let (muster, baseline) = (implementations.get(muster)?, implementations.get(baseline)?);
            (baseline.median > 0.0).then(|| (muster.median / baseline.median, format!("{scenario}, N = {n}")))
        })
        .max_by(|(a, _), (b, _)| a.total_cmp(b))
}

/// One row of the targets table: the worst figure against its limit.
fn target_row(report: &mut String, target: &str, limit: f64, figure: Option<(f64, String)>) {
    let (figure, met) = match figure {
        Some((value, case)) => (format!("{value:.2} ({case})"), if value <= limit { "met" } else { "**not met**" }),
        None => ("-".to_owned(), "not measured"),
    };
    let _ = writeln!(report, "| {target} | {figure} | ≤ {limit} | {met} |");
}

/// Issue 19's targets, one row each, from the group and aggregator reports. A ratio's figure is
/// the worst case of those the target covers.
fn targets_table(
    group: &[Row],
    group_allocations: &[Allocations],
    aggregator: &[Row],
    aggregator_allocations: &[Allocations],
    report: &mut String,
) {
    report.push_str("## targets (issue 19)\n\n");
    report.push_str("Each figure is the worst case the target covers (ratios of medians, both runtimes).\n\n");
    report.push_str("| target | figure | target | met |\n|---|---|---|---|\n");
    let any = |_: &str, _: usize| true;
    let scenarios = |names: &'static [&'static str], sizes: &'static [usize]| {
        move |scenario: &str, n: usize| names.contains(&scenario) && sizes.contains(&n)
    };
    let ready_yield_fail = scenarios(&["ready", "yield_once", "fail_fast"], &[2, 8, 64]);
    target_row(
        report,
        "1. `Group` ÷ named `try_join_all` (name + `source` span), ready / yield_once / fail_fast, N = 2, 8, 64",
        1.5,
        worst(group, "muster", "try_join_all_named", ready_yield_fail),
    );
    target_row(
        report,
        "2a. `Group` ÷ Go errgroup, every case both run",
        0.5,
        worst(group, "muster", "go_errgroup", any),
    );
    let not_from_start = |scenario: &str, _: usize| scenario != "cancel_latency";
    target_row(
        report,
        "2b. `Group` ÷ `JoinSet` + `abort_all` + drain, every case",
        0.5,
        worst(group, "muster", "join_set", not_from_start),
    );
    target_row(
        report,
        "3a. `Group` ÷ bare `try_join_all`, ready and the timer failure path, N = 2, 8",
        2.0,
        worst(group, "muster", "try_join_all", scenarios(&["ready", "fail_after_timer"], &[2, 8])),
    );
    target_row(
        report,
        "3b. `Group` ÷ bare `try_join_all`, ready and the timer failure path, N = 64",
        1.5,
        worst(group, "muster", "try_join_all", scenarios(&["ready", "fail_after_timer"], &[64])),
    );
    target_row(
        report,
        "4. `Aggregator` ÷ bare `Group` (same options), empty sources, N = 2, 8",
        1.3,
        worst(aggregator, "aggregator", "group", scenarios(&["aggregator_ready", "aggregator_yield_once"], &[2, 8])),
    );
    // The bench's sources allocate nothing: a group's allocations are all its own. Per task on
    // the success paths; the failure path's are per group (the error), in the group table.
    let success = |row: &&Allocations| ["ready", "yield_once"].contains(&row.scenario.as_str());
    let per_task = (group_allocations.iter().filter(|row| row.implementation == "muster").filter(success))
        .map(|row| (row.count as f64 / row.n as f64, format!("{} per run, {}, N = {}", row.count, row.scenario, row.n)))
        .max_by(|(a, _), (b, _)| a.total_cmp(b));
    target_row(
        report,
        "5a. allocations per task in a `Group` (ready, yield_once), beyond the task's own",
        1.0,
        per_task,
    );
    // Each source's own: `async_trait`'s box of its future, one per source.
    let per_source = (aggregator_allocations.iter().filter(|row| row.implementation == "aggregator"))
        .map(|row| {
            let beyond = row.count.saturating_sub(row.n as u64) as f64 / row.n as f64;
            (beyond, format!("{} per aggregation, {}, N = {}", row.count, row.scenario, row.n))
        })
        .max_by(|(a, _), (b, _)| a.total_cmp(b));
    target_row(report, "5b. allocations per source in an aggregation, beyond the source's own", 2.0, per_source);
    let latency = (group.iter())
        .filter(|row| row.implementation == "muster" && row.scenario.trim_end_matches("/ct") == "fail_after_timer")
        .filter_map(|row| Some((row.p95?, row.median, &row.scenario, row.n)))
        .max_by(|(a, ..), (b, ..)| a.total_cmp(b));
    let latency = latency.map_or_else(
        || "-".to_owned(),
        |(p95, median, scenario, n)| format!("p95 {} (median {}), {scenario}, N = {n}", time(p95), time(median)),
    );
    let _ = writeln!(
        report,
        "| also: `cancel_latency`, first failure to `wait` returning, worst p95 | {latency} | reported | - |"
    );
    report.push_str(
        "| 6. nothing paid for what is not asked: no clock read per task without a report, no span work \
         without an interested subscriber, no `Mutex` on the success path | see BENCHMARKS.md | - | not measured here |\n\n",
    );
}

fn group_table(rows: &[Row], allocations: &[Allocations], report: &mut String) {
    report.push_str("## group: `Group` vs hand-written baselines\n\n");
    report.push_str(
        "| scenario | N | muster median (p99) | allocations per run (per task) | try_join_all | try_join_all, named | try_join_all, boxed | try_join! | JoinSet + abort_all + drain | spawn + token | Go errgroup | ÷ try_join_all | ÷ named | ÷ boxed | ÷ best spawn | ÷ Go |\n",
    );
    report.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for ((scenario, n), implementations) in by_case(rows) {
        let Some(muster) = implementations.get("muster") else { continue };
        let median = |name: &str| implementations.get(name).map(|row| row.median);
        let cell = |name: &str| {
            implementations
                .get(name)
                .map_or_else(|| "-".to_owned(), |row| format!("{} ({})", time(row.median), time(row.p99)))
        };
        let spawn = [median("join_set"), median("spawn_token")].into_iter().flatten().reduce(f64::min);
        let allocated = allocations_of(allocations, scenario.trim_end_matches("/ct"), "muster", n)
            .map_or_else(|| "-".to_owned(), |count| format!("{count} ({:.2})", count as f64 / n as f64));
        let _ = writeln!(
            report,
            "| {scenario} | {n} | {} | {allocated} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            cell("muster"),
            cell("try_join_all"),
            cell("try_join_all_named"),
            cell("try_join_all_boxed"),
            cell("try_join"),
            cell("join_set"),
            cell("spawn_token"),
            cell("go_errgroup"),
            ratio(muster.median, median("try_join_all")),
            ratio(muster.median, median("try_join_all_named")),
            ratio(muster.median, median("try_join_all_boxed")),
            ratio(muster.median, spawn),
            ratio(muster.median, median("go_errgroup")),
        );
    }
    report.push('\n');
}

/// The failure path after a real timer, from the first failure to `wait` returning: the median
/// and the 95th percentile of single failures, in µs.
fn cancel_latency_table(rows: &[Row], report: &mut String) {
    const IMPLEMENTATIONS: [&str; 6] =
        ["muster", "try_join_all", "try_join_all_named", "join_set", "spawn_token", "go_errgroup"];
    report.push_str("## cancel_latency: first failure to `wait` returning (after a real 1 ms timer), median / p95\n\n");
    report.push_str("| runtime | N |");
    for implementation in IMPLEMENTATIONS {
        let _ = write!(report, " {implementation} |");
    }
    report.push_str("\n|---|---|---|---|---|---|---|---|\n");
    for ((scenario, n), implementations) in by_case(rows) {
        if scenario.trim_end_matches("/ct") != "fail_after_timer" {
            continue;
        }
        let runtime = if scenario.ends_with("/ct") { "current thread" } else { "2 workers" };
        let _ = write!(report, "| {runtime} | {n} |");
        for implementation in IMPLEMENTATIONS {
            let cell = implementations.get(implementation).map_or_else(
                || "-".to_owned(),
                |row| format!("{:.2} / {:.2} µs", row.median / 1000.0, row.p95.unwrap_or(f64::NAN) / 1000.0),
            );
            let _ = write!(report, " {cell} |");
        }
        report.push('\n');
    }
    report.push('\n');
}

/// The dashboard's access log line, by hand against tracing's JSON layer; the budget is 10 µs.
fn access_log_table(rows: &[Row], report: &mut String) {
    report.push_str("## access log: one JSON line formatted and enqueued (the dashboard's non-blocking writer)\n\n");
    report.push_str("| implementation | median | p99 | ÷ tracing JSON | within 10 µs |\n|---|---|---|---|---|\n");
    let tracing = rows.iter().find(|row| row.implementation == "tracing_json").map(|row| row.median);
    for row in rows {
        let within = if row.p99 <= 10_000.0 { "yes" } else { "no" };
        let _ = writeln!(
            report,
            "| {} | {} | {} | {} | {within} |",
            row.implementation,
            time(row.median),
            time(row.p99),
            ratio(row.median, tracing),
        );
    }
    report.push('\n');
}

fn aggregator_table(rows: &[Row], report: &mut String) {
    report.push_str("## aggregator: the full `Aggregator` vs a bare `Group` on the same fetchers\n\n");
    report.push_str(
        "| scenario | N | aggregator median (p99) | group median (p99) | ratio | hand-written median | ratio |\n|---|---|---|---|---|---|---|\n",
    );
    for ((scenario, n), implementations) in by_case(rows) {
        let (Some(aggregator), Some(group)) = (implementations.get("aggregator"), implementations.get("group")) else {
            continue;
        };
        let hand = implementations.get("hand-written");
        let _ = writeln!(
            report,
            "| {scenario} | {n} | {} ({}) | {} ({}) | {} | {} | {} |",
            time(aggregator.median),
            time(aggregator.p99),
            time(group.median),
            time(group.p99),
            ratio(aggregator.median, Some(group.median)),
            hand.map_or_else(|| "-".to_owned(), |hand| time(hand.median)),
            hand.map_or_else(|| "-".to_owned(), |hand| ratio(aggregator.median, Some(hand.median))),
        );
    }
    report.push('\n');
}

/// The cost of a `Cache` hit (issue 20: at most 2 µs per source on the local tier) and of a
/// read from its Redis tier.
fn cache_table(rows: &[Row], report: &mut String) {
    report.push_str("## cache: the cost of a hit\n\n");
    report.push_str("| scenario | N | implementation | median (p99) | per source over the baseline |\n");
    report.push_str("|---|---|---|---|---|\n");
    for ((scenario, n), implementations) in by_case(rows) {
        let baseline = ["fetcher", "ready"].iter().find_map(|name| implementations.get(*name)).map(|row| row.median);
        for (implementation, row) in &implementations {
            let extra = match baseline {
                Some(baseline) if !["fetcher", "ready"].contains(&implementation.as_str()) => {
                    time((row.median - baseline) / n as f64)
                }
                _ => "-".to_owned(),
            };
            let cell = format!("{} ({})", time(row.median), time(row.p99));
            let _ = writeln!(report, "| {scenario} | {n} | {implementation} | {cell} | {extra} |");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(scenario: &str, implementation: &str, n: usize, median: f64) -> Row {
        let (scenario, implementation) = (scenario.to_owned(), implementation.to_owned());
        Row { scenario, implementation, n, median, p99: median, p95: Some(median) }
    }

    fn allocations(scenario: &str, implementation: &str, n: usize, count: u64) -> Allocations {
        Allocations { scenario: scenario.to_owned(), implementation: implementation.to_owned(), n, count }
    }

    fn line<'a>(report: &'a str, prefix: &str) -> &'a str {
        report.lines().find(|line| line.starts_with(prefix)).unwrap_or_default()
    }

    #[test]
    fn a_ratio_target_is_judged_on_its_worst_case_over_both_runtimes() {
        let group = [
            row("ready", "muster", 2, 140.0),
            row("ready", "try_join_all_named", 2, 100.0),
            row("ready/ct", "muster", 8, 200.0),
            row("ready/ct", "try_join_all_named", 8, 100.0),
            // Not a case of target 1.
            row("fail_after_timer", "muster", 2, 900.0),
            row("fail_after_timer", "try_join_all_named", 2, 100.0),
        ];
        let aggregator = [
            row("aggregator_yield_once", "aggregator", 8, 125.0),
            row("aggregator_yield_once", "group", 8, 100.0),
            row("two_stage", "aggregator", 2, 300.0),
            row("two_stage", "group", 2, 100.0),
        ];
        let mut report = String::new();
        targets_table(&group, &[], &aggregator, &[], &mut report);
        assert!(line(&report, "| 4.").contains("| 1.25 (aggregator_yield_once, N = 8) | ≤ 1.3 | met |"), "{report}");
        let first = line(&report, "| 1.");
        assert!(first.contains("| 2.00 (ready/ct, N = 8) | ≤ 1.5 | **not met** |"), "{first}");
        assert!(line(&report, "| 2a.").contains("not measured"), "{report}");
        let group = &group[..2];
        let mut report = String::new();
        targets_table(group, &[], &[], &[], &mut report);
        assert!(line(&report, "| 1.").contains("| 1.40 (ready, N = 2) | ≤ 1.5 | met |"), "{report}");
    }

    #[test]
    fn allocations_count_per_task_in_a_group_and_beyond_the_sources_own_in_an_aggregation() {
        let group = [
            allocations("ready", "muster", 2, 3),
            allocations("ready", "muster", 64, 65),
            allocations("fail_fast", "muster", 2, 7),
        ];
        let aggregator =
            [allocations("aggregator_ready", "aggregator", 2, 8), allocations("aggregator_ready", "group", 2, 5)];
        let mut report = String::new();
        targets_table(&[], &group, &[], &aggregator, &mut report);
        assert!(line(&report, "| 5a.").contains("| 1.50 (3 per run, ready, N = 2) | ≤ 1 | **not met** |"), "{report}");
        assert!(
            line(&report, "| 5b.")
                .contains("| 3.00 (8 per aggregation, aggregator_ready, N = 2) | ≤ 2 | **not met** |"),
            "{report}"
        );
    }

    #[test]
    fn a_report_line_may_give_the_95th_percentile() {
        let path = std::env::temp_dir().join(format!("muster-xtask-bench-{}.tsv", std::process::id()));
        let text =
            "# a note\n#alloc\tready\tmuster\t2\t3\nready\tmuster\t2\t100.0\t300.0\t200.0\nready\tgo\t2\t1.0\t3.0\n";
        std::fs::write(&path, text).unwrap();
        let (rows, counted, notes) = (read(&path).unwrap(), read_allocations(&path).unwrap(), notes(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert_eq!((rows.len(), rows[0].p95, rows[1].p95), (2, Some(200.0), None));
        assert_eq!((counted.len(), counted[0].count), (1, 3));
        assert_eq!(notes, ["a note"]);
    }
}
