//! `GET /metrics` (feature `metrics`): muster's metrics of every aggregation (see
//! `muster::metrics`) in the Prometheus text format, through `metrics-exporter-prometheus`.

use std::sync::OnceLock;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process's Prometheus recorder, installed the first time it is asked for; `None` when
/// the process has another recorder already.
pub fn handle() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let handle = PrometheusBuilder::new().install_recorder().ok();
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
            ([(header::CONTENT_TYPE, content_type)], handle.render()).into_response()
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "another metrics recorder is installed").into_response(),
    }
}
