//! `GET /metrics` (feature `metrics`): muster's metrics of every aggregation (see
//! `muster::metrics`) in the Prometheus text format, through `metrics-exporter-prometheus`,
//! then the server's own (see [`crate::stats`]).

use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The histograms' buckets, in seconds: from 1 ms to a few times the default 1 s deadline.
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The process's Prometheus recorder, installed the first time it is asked for; `None` when
/// the process has another recorder already.
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            // Buckets make the durations Prometheus histograms (`_bucket` series, summable
            // across instances, for `histogram_quantile`), as `muster::metrics` names them;
            // without, the exporter renders them as summaries.
            let builder = PrometheusBuilder::new().set_buckets(&BUCKETS).unwrap_or_else(|_| PrometheusBuilder::new());
            let handle = builder.install_recorder().ok();
            muster::metrics::describe();
            handle
        })
        .as_ref()
}

/// The metrics, as Prometheus scrapes them.
pub async fn render() -> Response {
    match handle() {
        Some(handle) => {
            handle.run_upkeep();
            let content_type = HeaderValue::from_static("text/plain; version=0.0.4");
            let mut text = handle.render();
            crate::stats::stats().render(&mut text);
            ([(header::CONTENT_TYPE, content_type)], text).into_response()
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "another metrics recorder is installed").into_response(),
    }
}
