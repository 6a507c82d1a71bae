//! The baseline of the HTTP benchmark answers like the dashboard, with either client: both
//! bodies on success, 502 when a backend fails, 504 past the timeout. A broken baseline would
//! make every ratio of the benchmark meaningless, so it is checked here, against real backends
//! on 127.0.0.1, through the binary itself.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// A backend answering `{"id": <id>}` on `/<anything>/<id>`, or 500 with `?fail=1`, after
/// `?delay_ms=` milliseconds.
async fn backend() -> String {
    async fn answer(Path((_, id)): Path<(String, String)>, Query(query): Query<HashMap<String, String>>) -> Response {
        let delay = query.get("delay_ms").and_then(|ms| ms.parse().ok()).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        if query.get("fail").is_some_and(|fail| fail == "1") {
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        axum::Json(json!({ "id": id })).into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/{kind}/{id}", axum::routing::get(answer));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// The baseline binary with `client`, killed when dropped.
struct Baseline {
    child: Child,
    url: String,
}

impl Baseline {
    fn start(backends: &str, client: &str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_http-baseline"))
            .args(["--listen", "127.0.0.1:0", "--timeout-ms", "300", "--client", client])
            .args([
                "--profile-url",
                &format!("{backends}/profile/{{id}}?delay_ms={{profile_delay_ms}}&fail={{profile_fail}}"),
            ])
            .args(["--transactions-url", &format!("{backends}/transactions/{{id}}?fail={{transactions_fail}}")])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut banner = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut banner).unwrap();
        let url = banner.trim().strip_prefix("listening on ").unwrap().to_owned();
        Self { child, url }
    }
}

impl Drop for Baseline {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn get(url: &str) -> (StatusCode, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let response = client.get(url.parse().unwrap()).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_clients_answer_like_the_dashboard() {
    let backends = backend().await;
    for client in ["hyper", "reqwest"] {
        let baseline = Baseline::start(&backends, client);
        let (status, body) = get(&format!("{}/dashboard/7", baseline.url)).await;
        assert_eq!(status, StatusCode::OK, "{client}: {body}");
        assert_eq!(body, json!({"profile": {"id": "7"}, "transactions": {"id": "7"}}), "{client}");

        let (status, _) = get(&format!("{}/dashboard/7?transactions_fail=1", baseline.url)).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{client}");

        let (status, _) = get(&format!("{}/dashboard/7?profile_delay_ms=2000", baseline.url)).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{client}");
    }
}

#[test]
fn an_unknown_client_is_refused() {
    let output = Command::new(env!("CARGO_BIN_EXE_http-baseline"))
        .args([
            "--profile-url",
            "http://127.0.0.1:9/{id}",
            "--transactions-url",
            "http://127.0.0.1:9/{id}",
            "--client",
            "curl",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("neither `hyper` nor `reqwest`"));
}
