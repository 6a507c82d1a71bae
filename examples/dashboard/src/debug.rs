//! The live view of what is in flight (issue 21): which aggregations run now, which source each
//! waits on, for how long, on which attempt, and why anything was cancelled; and the last failed
//! ones. Read from a [`muster::in_flight::InFlight`] registry that every dashboard aggregation
//! registers with.
//!
//! - `GET /debug/aggregations`: the snapshot as JSON ([`snapshot_json`]).
//! - `GET /debug`: one small HTML page drawing the same snapshot as a live waterfall, polled
//!   once a second.
//! - `SIGUSR1`: the same snapshot logged, for a pod with no open port ([`log_on_sigusr1`]).
//!
//! Access follows Linkerd's tap:
//! - **Off by default.** On with `--debug-token TOKEN`; the JSON then answers only a request
//!   with `Authorization: Bearer TOKEN`. Without the view, or without the token, both paths
//!   answer exactly the dashboard's 404 for an unknown path, never a 401: a prober learns
//!   nothing.
//!   Both paths, the page too: a browser opens it through whatever adds the header to each of
//!   its requests (an authenticating proxy in front of the port-forward, a header extension),
//!   and the page's own requests for the JSON go the same way. A token in the address would
//!   end up in access logs and browser history.
//! - **Redacted.** Context fields (`user_id`, `request_id`), source names, timings, attempts,
//!   one-word outcomes and kinds: no header value (the forwarded `authorization` included), no
//!   backend URL, no error text (see [`muster::in_flight`]).
//! - **Rate-capped.** At most [`RATE_CAP`] snapshots a second, whoever asks (only requests
//!   with the token count, so nobody without it can use the cap up); past it, 429 with
//!   `Retry-After: 1`. The page (constant HTML, no data) is not counted.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use muster::in_flight::{CallSnapshot, InFlight, Snapshot, SourceState};
use serde_json::{Value, json};

use crate::app::{AppState, json_error};

/// The calls a snapshot shows at most (more are counted as untracked), and the failed ones
/// it keeps.
pub const CALLS: usize = 64;

/// Authorized requests served a second, at most.
pub const RATE_CAP: u32 = 10;

/// Who may read the view: the token, and the rate cap they share.
#[derive(Clone, Debug)]
pub struct Access {
    token: Arc<str>,
    window: Arc<Mutex<(Instant, u32)>>,
}

impl Access {
    /// Access for requests bearing `token`.
    pub fn new(token: &str) -> Self {
        Self { token: token.into(), window: Arc::new(Mutex::new((Instant::now(), 0))) }
    }

    /// Whether `headers` carry `Authorization: Bearer <token>`, compared in constant time.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION).map(HeaderValue::as_bytes) else { return false };
        let Some((scheme, given)) = value.split_at_checked(7) else { return false };
        if !scheme.eq_ignore_ascii_case(b"bearer ") || given.len() != self.token.len() {
            return false;
        }
        given.iter().zip(self.token.as_bytes()).fold(0, |diff, (a, b)| diff | (a ^ b)) == 0
    }

    /// Counts a request against the cap: `false` past [`RATE_CAP`] in the current second.
    fn admit(&self) -> bool {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(window.0) >= Duration::from_secs(1) {
            *window = (now, 0);
        }
        window.1 += 1;
        window.1 <= RATE_CAP
    }
}

/// The routes of the view: `GET /debug` and `GET /debug/aggregations`.
pub(crate) fn routes() -> Router<AppState> {
    Router::new().route("/debug", get(page)).route("/debug/aggregations", get(aggregations))
}

/// The dashboard's own 404, the same as for a path it does not serve.
fn not_found() -> Response {
    json_error(StatusCode::NOT_FOUND, "not_found", "no such path", None)
}

fn rate_capped() -> Response {
    let mut response = json_error(StatusCode::TOO_MANY_REQUESTS, "rate_capped", "the debug view is rate-capped", None);
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    response
}

/// The view's access, when it is on and `headers` carry its token.
fn access<'a>(state: &'a AppState, headers: &HeaderMap) -> Option<&'a Access> {
    state.debug_access().filter(|access| access.authorized(headers))
}

async fn aggregations(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(access) = access(&state, &headers) else { return not_found() };
    if !access.admit() {
        return rate_capped();
    }
    let body = snapshot_json(&state.in_flight().snapshot()).to_string();
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "no-store")], body).into_response()
}

async fn page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if access(&state, &headers).is_none() {
        return not_found();
    }
    let headers = [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        ),
    ];
    (headers, PAGE).into_response()
}

fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 10_000.0).round() / 10.0
}

/// A snapshot as the JSON of `GET /debug/aggregations`:
///
/// ```json
/// {"calls": [{"fields": {"user_id": "20", "request_id": "…"}, "started_unix_ms": 1765088400000,
///             "elapsed_ms": 503.1, "remaining_ms": 19496.9, "stopped_by": null,
///             "sources": [{"name": "transactions", "state": "running", "attempt": 1,
///                          "start_ms": 0.0, "elapsed_ms": 503.1, "shared": null,
///                          "text": "running (attempt 1)"}, …]}],
///  "truncated": false, "untracked": 0, "failed": [<calls, the most recent first>]}
/// ```
///
/// A source's `state` is `queued`, `waiting` (with its `input`), `running` (with its
/// `attempt`), `done` (with its `outcome` and `kind`) or `cancelled` (with its `cause`); `text`
/// says the same as the text waterfall does.
pub fn snapshot_json(snapshot: &Snapshot) -> Value {
    json!({
        "calls": snapshot.calls.iter().map(call_json).collect::<Vec<_>>(),
        "truncated": snapshot.is_truncated(),
        "untracked": snapshot.untracked,
        "failed": snapshot.failed.iter().map(call_json).collect::<Vec<_>>(),
    })
}

fn call_json(call: &CallSnapshot) -> Value {
    let fields: serde_json::Map<String, Value> =
        call.fields.iter().map(|(name, value)| (name.to_string(), Value::from(value.as_str()))).collect();
    let started = call.started.duration_since(UNIX_EPOCH).map_or(0, |since| since.as_millis() as u64);
    let sources: Vec<Value> = call
        .sources
        .iter()
        .map(|source| {
            let mut value = json!({
                "name": &*source.name,
                "start_ms": source.start.map(millis),
                "elapsed_ms": millis(source.elapsed),
                "shared": source.shared,
                "text": source.state.to_string(),
            });
            let state = match &source.state {
                SourceState::Queued => json!({"state": "queued"}),
                SourceState::Waiting { input } => json!({"state": "waiting", "input": &**input}),
                SourceState::Running { attempt } => json!({"state": "running", "attempt": attempt}),
                SourceState::Done { outcome, kind } => {
                    json!({"state": "done", "outcome": outcome, "kind": kind.map(|kind| kind.as_str())})
                }
                SourceState::Cancelled { cause } => json!({"state": "cancelled", "cause": cause}),
                _ => json!({"state": "unknown"}),
            };
            if let (Some(value), Value::Object(state)) = (value.as_object_mut(), state) {
                value.extend(state);
            }
            value
        })
        .collect();
    json!({
        "fields": fields,
        "started_unix_ms": started,
        "elapsed_ms": millis(call.elapsed),
        "remaining_ms": call.remaining.map(millis),
        "stopped_by": call.stopped_by.as_ref().map(ToString::to_string),
        "sources": sources,
    })
}

/// Logs the snapshot of `in_flight` (one `info` line, the JSON of [`snapshot_json`] in its
/// `snapshot` field) each time the process gets `SIGUSR1`. The listener is registered before
/// this returns, so a signal sent once the server says it is up is never met by the default
/// action (which ends the process). Needs a Tokio runtime.
#[cfg(unix)]
pub fn log_on_sigusr1(in_flight: InFlight) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::user_defined1()) {
        Ok(mut signals) => {
            tokio::spawn(async move {
                while signals.recv().await.is_some() {
                    let snapshot = in_flight.snapshot();
                    let json = snapshot_json(&snapshot);
                    tracing::info!(in_flight = snapshot.calls.len(), snapshot = %json, "in-flight aggregations (SIGUSR1)");
                }
            });
        }
        Err(error) => tracing::warn!(%error, "cannot listen for SIGUSR1: no in-flight dump"),
    }
}

/// Not on this platform: there is no `SIGUSR1`.
#[cfg(not(unix))]
pub fn log_on_sigusr1(_: InFlight) {}

/// The page: a live waterfall of the calls in flight and the last failed ones, drawn from
/// `/debug/aggregations` once a second. Every value goes in with `textContent`, never as HTML
/// (a user id is whatever a client sent).
const PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>muster: in flight</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.3em; } h2 { font-size: 1.1em; margin-top: 1.5em; }
.call { border: 1px solid #ccc; border-radius: 4px; padding: .5em .8em; margin: .6em 0; }
.call.failed { border-color: #d88; }
.head { font-weight: 600; margin-bottom: .3em; }
.row { display: grid; grid-template-columns: 10em 1fr 6em 18em; gap: .6em; align-items: center; }
.name, .ms { font-family: ui-monospace, monospace; } .ms { text-align: right; }
.track { position: relative; height: 1em; background: #f2f2f2; }
.bar { position: absolute; top: 0; bottom: 0; background: #4a7; }
.running .bar { background: #e9a23b; } .cancelled .bar { background: #999; }
.done.failed .bar, .done.timeout .bar, .done.panicked .bar { background: #d44; }
#status { color: #666; }
</style></head>
<body>
<h1>Aggregations in flight</h1>
<div id="status">loading…</div>
<div id="calls"></div>
<h2>Last failed</h2>
<div id="failed"></div>
<script>
"use strict";
const status = document.getElementById("status");
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function ms(n) { return n < 10 ? n.toFixed(1) + "ms" : Math.round(n) + "ms"; }
function call(c, failed) {
  const box = el("section", failed ? "call failed" : "call");
  let head = (failed ? "failed after " : "running for ") + ms(c.elapsed_ms);
  if (c.remaining_ms !== null) head += ", " + ms(c.remaining_ms) + " left";
  if (c.stopped_by) head += ", stopped by " + c.stopped_by;
  for (const [k, v] of Object.entries(c.fields)) head += "  " + k + "=" + v;
  box.append(el("div", "head", head));
  const total = Math.max(c.elapsed_ms, 0.001);
  for (const s of c.sources) {
    const row = el("div", "row " + s.state + (s.outcome ? " " + s.outcome : ""));
    row.append(el("span", "name", s.name));
    const track = el("span", "track"), bar = el("span", "bar");
    if (s.start_ms !== null) {
      bar.style.left = (100 * s.start_ms / total) + "%";
      bar.style.width = Math.max(0.5, 100 * s.elapsed_ms / total) + "%";
    }
    track.append(bar);
    row.append(track, el("span", "ms", ms(s.elapsed_ms)), el("span", "state", s.text));
    box.append(row);
  }
  return box;
}
async function tick() {
  try {
    const r = await fetch("/debug/aggregations", { cache: "no-store" });
    if (!r.ok) { status.textContent = r.status === 429 ? "rate-capped, retrying" : "HTTP " + r.status + ": the bearer token did not come through"; return; }
    const s = await r.json();
    status.textContent = s.calls.length + " in flight" + (s.truncated ? " (truncated: " + s.untracked + " more untracked)" : "") + " at " + new Date().toLocaleTimeString();
    document.getElementById("calls").replaceChildren(...s.calls.map(c => call(c, false)));
    const failed = s.failed.length ? s.failed.map(c => call(c, true)) : [el("div", "", "none")];
    document.getElementById("failed").replaceChildren(...failed);
  } catch (e) { status.textContent = "unreachable: " + e; }
}
tick();
setInterval(tick, 1000);
</script>
</body></html>
"#;
