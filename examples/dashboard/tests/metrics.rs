//! `GET /metrics` (feature `metrics`): after a dashboard request, the scrape has the
//! aggregation's and the sources' metrics in the Prometheus text format.

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
    ] {
        assert!(scrape.body.lines().any(|got| got == line), "no `{line}` in:\n{}", scrape.body);
    }
}
