//! The dashboard as a team would write it without muster, the baseline of the HTTP benchmark:
//! `GET /dashboard/{user_id}` calls the profile and transactions services with one shared
//! pooled client, `tokio::try_join!` under `tokio::time::timeout`, parses both bodies and
//! answers `{"profile": ..., "transactions": ...}`; 502 when a backend fails, 504 on timeout.
//!
//! The client is hyper-util's pooled client (`--client hyper`, the default: the leanest a team
//! could write) or reqwest (`--client reqwest`, without default features: what most teams
//! write, and the baseline DESIGN names).
//!
//! Run with: cargo run --release -p http-baseline -- --profile-url ... --transactions-url ...
//!
//! A URL template's `{id}` is the user id and any other `{name}` the dashboard request's query
//! parameter `name` (empty when absent), each percent-encoded, as the dashboard does, so the
//! same templates (and demo knobs such as `?profile_delay_ms=5`) work with both.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

const USAGE: &str = "usage: http-baseline --profile-url TEMPLATE --transactions-url TEMPLATE \
                     [--listen ADDR (127.0.0.1:8081)] [--timeout-ms N (1000)] [--client hyper|reqwest (hyper)]";

/// The pooled HTTP client, shared by every request.
#[derive(Clone)]
enum HttpClient {
    Hyper(Client<HttpConnector, Empty<Bytes>>),
    Reqwest(reqwest::Client),
}

#[derive(Clone)]
struct AppState {
    client: HttpClient,
    profile_url: Arc<str>,
    transactions_url: Arc<str>,
    timeout: Duration,
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut flags: HashMap<String, String> = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("`{flag}` needs a value\n{USAGE}"))?;
        flags.insert(flag, value);
    }
    let mut flag = |name: &str| flags.remove(name);
    let listen: SocketAddr =
        flag("--listen").as_deref().unwrap_or("127.0.0.1:8081").parse().map_err(|e| format!("--listen: {e}"))?;
    let timeout_ms: u64 =
        flag("--timeout-ms").as_deref().unwrap_or("1000").parse().map_err(|e| format!("--timeout-ms: {e}"))?;
    let (Some(profile_url), Some(transactions_url)) = (flag("--profile-url"), flag("--transactions-url")) else {
        return Err(USAGE.to_owned());
    };
    let client = match flag("--client").as_deref() {
        None | Some("hyper") => {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            HttpClient::Hyper(Client::builder(TokioExecutor::new()).build(connector))
        }
        Some("reqwest") => {
            let client = reqwest::Client::builder().tcp_nodelay(true).build();
            HttpClient::Reqwest(client.map_err(|e| format!("could not build the reqwest client: {e}"))?)
        }
        Some(other) => return Err(format!("--client: `{other}` is neither `hyper` nor `reqwest`\n{USAGE}")),
    };
    if let Some(unknown) = flags.keys().next() {
        return Err(format!("unknown flag `{unknown}`\n{USAGE}"));
    }
    let state = AppState {
        client,
        profile_url: profile_url.into(),
        transactions_url: transactions_url.into(),
        timeout: Duration::from_millis(timeout_ms),
    };
    let app = axum::Router::new().route("/dashboard/{user_id}", axum::routing::get(dashboard)).with_state(state);
    let listener = tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("could not listen: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on http://{addr}");
    axum::serve(listener, app).await.map_err(|e| format!("server failed: {e}"))
}

async fn dashboard(
    State(state): State<AppState>,
    Path(user_id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let fetch = |template: &str| get_json(&state.client, render(template, &user_id, &query));
    let both = async { tokio::try_join!(fetch(&state.profile_url), fetch(&state.transactions_url)) };
    match tokio::time::timeout(state.timeout, both).await {
        Ok(Ok((profile, transactions))) => {
            Json(json!({"profile": profile, "transactions": transactions})).into_response()
        }
        Ok(Err(error)) => (StatusCode::BAD_GATEWAY, Json(json!({ "error": error }))).into_response(),
        Err(_) => (StatusCode::GATEWAY_TIMEOUT, Json(json!({"error": "the backends took too long"}))).into_response(),
    }
}

async fn get_json(client: &HttpClient, url: String) -> Result<Value, String> {
    let body = match client {
        HttpClient::Hyper(client) => {
            let uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
            let response = client.get(uri).await.map_err(|e| format!("{url}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("{url}: status {}", response.status()));
            }
            response.into_body().collect().await.map_err(|e| format!("{url}: {e}"))?.to_bytes()
        }
        HttpClient::Reqwest(client) => {
            let response = client.get(&url).send().await.map_err(|e| format!("{url}: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("{url}: status {}", response.status()));
            }
            response.bytes().await.map_err(|e| format!("{url}: {e}"))?
        }
    };
    serde_json::from_slice(&body).map_err(|e| format!("{url}: invalid JSON: {e}"))
}

/// The template with `{id}` and every other `{name}` replaced by their encoded values.
fn render(template: &str, id: &str, query: &HashMap<String, String>) -> String {
    let mut url = String::with_capacity(template.len() + id.len());
    let mut rest = template;
    while let Some((before, after)) = rest.split_once('{') {
        let Some((name, after)) = after.split_once('}') else { break };
        url.push_str(before);
        let value = if name == "id" { id } else { query.get(name).map_or("", String::as_str) };
        for byte in value.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~') {
                url.push(char::from(byte));
            } else {
                url.push_str(&format!("%{byte:02X}"));
            }
        }
        rest = after;
    }
    url.push_str(rest);
    url
}
