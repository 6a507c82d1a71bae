//! `GET /metrics` (feature `metrics`): after a dashboard request, the scrape has the
//! aggregation's and the sources' metrics in the Prometheus text format, and the server's own:
//! connections open, refused and shed, requests by status, log lines dropped, OTLP export
//! failures.

mod support;

use std::time::Duration;

use support::Dashboard;

#[tokio::test]
async fn metrics_are_scraped_in_prometheus_text() {
    let dashboard = Dashboard::start(Duration::from_secs(5)).await;
    assert_eq!(dashboard.get("/dashboard/42").await.status, 200);
    assert_eq!(dashboard.get("/dashboard/42?transactions_fail=1").await.status, 502);

    let scrape = dashboard.get("/metrics").await;
    assert_eq!(scrape.status, 200, "{scrape:?}");
    assert!(scrape.header("content-type").is_some_and(|kind| kind.starts_with("text/plain")));
    for line in [
        r#"muster_aggregations_total{outcome="ok"} 1"#,
        r#"muster_aggregations_total{outcome="failed"} 1"#,
        r#"muster_source_calls_total{source="profile"} 2"#,
        r#"muster_source_outcomes_total{source="transactions",outcome="failed",kind="status"} 1"#,
        "# TYPE muster_aggregation_duration_seconds histogram",
        r#"muster_aggregation_duration_seconds_bucket{outcome="ok",le="+Inf"} 1"#,
        "# TYPE muster_source_duration_seconds histogram",
        // The server's own.
        "# TYPE dashboard_connections_open gauge",
        "dashboard_connections_refused_total 0",
        "dashboard_connections_shed_total 0",
        r#"dashboard_requests_total{status="200"} 1"#,
        r#"dashboard_requests_total{status="502"} 1"#,
        "dashboard_log_lines_dropped_total 0",
        "dashboard_otlp_export_failures_total 0",
    ] {
        assert!(scrape.body.lines().any(|got| got == line), "no `{line}` in:\n{}", scrape.body);
    }

    // One test per process: the server's counters are process-wide.
    let _held = tokio::net::TcpStream::connect(dashboard.addr).await.expect("connect");
    support::eventually("the held connection to be counted", || dashboard::stats::stats().open() >= 1).await;
    let scrape = dashboard.get("/metrics").await;
    let open = scrape
        .body
        .lines()
        .find_map(|line| line.strip_prefix("dashboard_connections_open "))
        .and_then(|value| value.parse::<u64>().ok());
    assert!(open.is_some_and(|open| open >= 2), "the held one and the scrape's: {}", scrape.body);
}
