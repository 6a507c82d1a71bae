//! `cargo xtask bench`: runs every benchmark in its interleaved report mode, side by side with
//! its baselines, and writes one markdown report, `target/bench-report.md`, also printed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::cargo;
use crate::e2e::target_dir;

/// One measured line: `scenario implementation n median_ns p99_ns`.
#[derive(Debug)]
struct Row {
    scenario: String,
    implementation: String,
    n: usize,
    median: f64,
    p99: f64,
}

/// Runs the benches and writes the report. `--quick` shortens the HTTP benchmark's runs; other
/// arguments go to `cargo bench`.
pub(crate) fn bench(args: &[String]) -> Result<(), String> {
    let quick = args.iter().any(|arg| arg == "--quick");
    let extra: Vec<String> = args.iter().filter(|arg| *arg != "--quick").cloned().collect();
    let extra = extra.as_slice();
    let target = target_dir();
    let group = target.join("bench-group.tsv");
    let aggregator = target.join("bench-aggregator.tsv");
    run_report(&["bench", "-p", "muster-core", "--bench", "group"], &group, extra)?;
    run_report(&["bench", "-p", "muster", "--bench", "aggregator"], &aggregator, extra)?;
    let cache = target.join("bench-cache.tsv");
    run_report(&["bench", "-p", "muster", "--features", "redis", "--bench", "cache"], &cache, extra)?;
    let access_log = target.join("bench-access-log.tsv");
    run_report(&["bench", "-p", "dashboard", "--bench", "access_log"], &access_log, extra)?;
    let mut report = String::from("# muster benchmark report\n\n");
    report += "Interleaved rounds on one 2-worker tokio runtime; per-iteration time of each batch, median and \
               99th percentile over 200 rounds. Ratios are muster / baseline (below 1: muster is faster).\n\n";
    group_table(&read(&group)?, &mut report);
    aggregator_table(&read(&aggregator)?, &mut report);
    for note in notes(&aggregator)? {
        report += &format!("- {note}\n");
    }
    report.push('\n');
    cache_table(&read(&cache)?, &mut report);
    for note in notes(&cache)? {
        report += &format!("- {note}\n");
    }
    report.push('\n');
    access_log_table(&read(&access_log)?, &mut report);
    let resilience = target.join("bench-resilience.md");
    run_report(&["bench", "-p", "muster", "--bench", "resilience"], &resilience, extra)?;
    report += &std::fs::read_to_string(&resilience)
        .map_err(|error| format!("cannot read {}: {error}", resilience.display()))?;
    report += &crate::load::http_bench(quick)?;
    let path = target.join("bench-report.md");
    std::fs::write(&path, &report).map_err(|error| format!("cannot write {}: {error}", path.display()))?;
    println!("{report}");
    eprintln!("bench: report written to {}", path.display());
    Ok(())
}

fn run_report(args: &[&str], output: &Path, extra: &[String]) -> Result<(), String> {
    let output = output.to_string_lossy();
    let mut args: Vec<&str> = args.to_vec();
    args.extend(extra.iter().map(String::as_str));
    args.extend(["--", "--report", &output]);
    cargo(&args)
}

fn read(path: &Path) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    let parse = |line: &str| -> Option<Row> {
        let mut fields = line.split('\t');
        Some(Row {
            scenario: fields.next()?.to_owned(),
            implementation: fields.next()?.to_owned(),
            n: fields.next()?.parse().ok()?,
            median: fields.next()?.parse().ok()?,
            p99: fields.next()?.parse().ok()?,
        })
    };
    (text.lines().filter(|line| !line.starts_with('#')))
        .map(|line| parse(line).ok_or_else(|| format!("bad line in {}: {line}", path.display())))
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

fn group_table(rows: &[Row], report: &mut String) {
    report.push_str("## group: `Group` vs hand-written baselines\n\n");
    report.push_str(
        "| scenario | N | muster median (p99) | try_join_all | try_join_all, named | try_join_all, boxed | try_join! | JoinSet + abort_all + drain | spawn + token | Go errgroup | ÷ try_join_all | ÷ named | ÷ boxed | ÷ best spawn | ÷ Go |\n",
    );
    report.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for ((scenario, n), implementations) in by_case(rows) {
        let Some(muster) = implementations.get("muster") else { continue };
        let median = |name: &str| implementations.get(name).map(|row| row.median);
        let cell = |name: &str| {
            implementations
                .get(name)
                .map_or_else(|| "-".to_owned(), |row| format!("{} ({})", time(row.median), time(row.p99)))
        };
        let spawn = [median("join_set"), median("spawn_token")].into_iter().flatten().reduce(f64::min);
        let _ = writeln!(
            report,
            "| {scenario} | {n} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
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
