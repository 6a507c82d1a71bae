//! The built-in demo backends: a profile service, a transactions service and an offers
//! service, each an axum server on an ephemeral loopback port, so the dashboard runs with no
//! other set-up.
//!
//! `GET /profile/{id}` answers the user's name, KYC status and tier, `GET /transactions/{id}`
//! their balance and recent transactions, both built from the id; `GET /offers/{tier}` the
//! offers of a tier, a JSON array (the dashboard asks it with the tier the profile answered).
//! Three query parameters make the failure modes easy to try: `delay_ms=N` sleeps N ms before
//! answering, `fail=1` (or `fail=500`, or any status from 400 to 599) answers that error status
//! with a JSON body, and `fail_rate=0.5` (a share from 0 to 1) answers 503 to that share of the
//! requests, a brownout: which ones is decided by the backend's request count, in a fixed
//! pattern with no rhythm, so a run is the same every time. Empty values mean no delay and no
//! failure, which is what the dashboard sends when its own request has no such knob.
//!
//! Every backend counts the requests it started, completed and saw cancelled (the request
//! future dropped before it answered: the client closed the connection) and records what it
//! received, so tests can check what went over the wire: the last [`RECORDED`] requests only,
//! so that a long-running demo holds bounded memory.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// The longest delay a demo backend honours; longer ones are cut to this.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// Which demo service a backend plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// `GET /profile/{id}`: name and KYC status.
    Profile,
    /// `GET /transactions/{id}`: balance and recent transactions.
    Transactions,
    /// `GET /offers/{tier}`: the offers of a customer tier.
    Offers,
}

impl Service {
    /// The source name the dashboard gives this service: `profile`, `transactions` or
    /// `offers`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Profile => "profile",
            Self::Transactions => "transactions",
            Self::Offers => "offers",
        }
    }

    /// The dashboard's URL template for this service served at `addr`: the user id (the tier,
    /// for offers) as the last path segment, and the dashboard request's knobs
    /// (`profile_delay_ms`, ...) passed on as `delay_ms`, `fail` and `fail_rate`.
    pub fn url_template(self, addr: SocketAddr) -> String {
        let (name, key) = (self.name(), if self == Self::Offers { "tier" } else { "id" });
        format!(
            "http://{addr}/{name}/{{{key}}}?delay_ms={{{name}_delay_ms}}&fail={{{name}_fail}}&fail_rate={{{name}_fail_rate}}"
        )
    }

    /// The JSON body this service answers for `id`: the same for the same id, every time.
    pub fn body(self, id: &str) -> Value {
        let seed = fnv1a(id.as_bytes());
        match self {
            Self::Profile => {
                const NAMES: [&str; 5] =
                    ["Ada Lovelace", "Grace Hopper", "Alan Turing", "Katherine Johnson", "Edsger Dijkstra"];
                const KYC: [&str; 3] = ["verified", "verified", "pending"];
                const TIERS: [&str; 3] = ["standard", "silver", "gold"];
                json!({
                    "id": id,
                    "name": NAMES[(seed % 5) as usize],
                    "kyc": KYC[(seed / 5 % 3) as usize],
                    "tier": TIERS[(seed / 15 % 3) as usize],
                })
            }
            Self::Offers => {
                let offers: &[&str] = match id {
                    "gold" => &["Platinum card, first year free", "0.5% lower mortgage rate"],
                    "silver" => &["Travel insurance, 3 months free"],
                    _ => &[],
                };
                json!(offers)
            }
            Self::Transactions => {
                const PAYEES: [&str; 6] = ["Bakery", "Payroll", "Rent", "Book shop", "Electricity", "Café"];
                let recent: Vec<Value> = (0..3u64)
                    .map(|i| {
                        let draw = seed.rotate_left(13 * i as u32 + 7);
                        let payee = PAYEES[(draw % 6) as usize];
                        let cents = (draw / 6 % 20_000) as i64 + 100;
                        let cents = if payee == "Payroll" { cents * 10 } else { -cents };
                        json!({"date": format!("2026-11-{:02}", 20 - i), "description": payee, "amount": money(cents)})
                    })
                    .collect();
                json!({
                    "id": id,
                    "currency": "EUR",
                    "balance": money((seed % 500_000) as i64),
                    "recent": recent,
                })
            }
        }
    }

    fn route(self) -> &'static str {
        match self {
            Self::Profile => "/profile/{id}",
            Self::Transactions => "/transactions/{id}",
            Self::Offers => "/offers/{id}",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `cents` as a decimal string, `-12.50`: money never goes through a float.
fn money(cents: i64) -> String {
    let sign = if cents < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", cents.unsigned_abs() / 100, cents.unsigned_abs() % 100)
}

/// FNV-1a: a stable hash, so the demo data of an id never changes between runs.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

/// What a demo backend counts and records; cheap to clone (shared).
#[derive(Clone, Debug, Default)]
pub struct Stats {
    inner: Arc<StatsInner>,
}

#[derive(Debug, Default)]
struct StatsInner {
    started: AtomicUsize,
    completed: AtomicUsize,
    cancelled: AtomicUsize,
    requests: Mutex<VecDeque<Recorded>>,
}

/// How many of the latest requests a demo backend keeps a record of.
pub const RECORDED: usize = 1024;

/// One request as a demo backend received it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Recorded {
    /// The request target as it arrived on the request line: path and query, still encoded.
    pub target: String,
    /// The `{id}` path parameter, percent-decoded by axum.
    pub id: String,
    /// The `x-request-id` header.
    pub request_id: Option<String>,
    /// The `traceparent` header.
    pub traceparent: Option<String>,
    /// The `x-muster-deadline-ms` header: the dashboard's remaining deadline.
    pub deadline_ms: Option<String>,
}

impl Stats {
    /// Requests whose handler started.
    pub fn started(&self) -> usize {
        self.inner.started.load(Ordering::SeqCst)
    }

    /// Requests answered (with the body or the requested failure).
    pub fn completed(&self) -> usize {
        self.inner.completed.load(Ordering::SeqCst)
    }

    /// Requests dropped before they were answered: the client went away.
    pub fn cancelled(&self) -> usize {
        self.inner.cancelled.load(Ordering::SeqCst)
    }

    /// Requests started and neither answered nor cancelled yet.
    pub fn in_flight(&self) -> usize {
        self.started() - self.completed() - self.cancelled()
    }

    /// The latest requests received (at most [`RECORDED`]), in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().unwrap_or_else(PoisonError::into_inner).iter().cloned().collect()
    }

    /// Records the request and counts it started; its number (from 0) among the requests
    /// this backend started.
    fn begin(&self, recorded: Recorded) -> (InFlight, usize) {
        let mut requests = self.inner.requests.lock().unwrap_or_else(PoisonError::into_inner);
        if requests.len() == RECORDED {
            requests.pop_front();
        }
        requests.push_back(recorded);
        drop(requests);
        let number = self.inner.started.fetch_add(1, Ordering::SeqCst);
        (InFlight { stats: self.clone(), completed: false }, number)
    }
}

/// Counts a request as cancelled when it is dropped before [`InFlight::complete`]: that is how
/// a backend observes the dashboard closing the connection.
struct InFlight {
    stats: Stats,
    completed: bool,
}

impl InFlight {
    fn complete(mut self) {
        self.completed = true;
        self.stats.inner.completed.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.completed {
            self.stats.inner.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[derive(Clone, Debug)]
struct Backend {
    service: Service,
    stats: Stats,
}

/// The knobs of a demo request; empty means "not set".
#[derive(Debug, Default, Deserialize)]
struct Knobs {
    #[serde(default)]
    delay_ms: String,
    #[serde(default)]
    fail: String,
    #[serde(default)]
    fail_rate: String,
}

/// The router of one demo backend, counting into `stats`; `GET /stats` answers the counts,
/// `{"started": N, "completed": N, "cancelled": N}` (what `cargo xtask bench` reads to count
/// the attempts a dashboard in another process made).
pub fn router(service: Service, stats: Stats) -> Router {
    Router::new()
        .route(service.route(), get(handle))
        .route("/stats", get(counts))
        .with_state(Backend { service, stats })
}

async fn counts(State(backend): State<Backend>) -> Json<Value> {
    let stats = &backend.stats;
    Json(json!({"started": stats.started(), "completed": stats.completed(), "cancelled": stats.cancelled()}))
}

async fn handle(
    State(backend): State<Backend>,
    Path(id): Path<String>,
    Query(knobs): Query<Knobs>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let target = uri.path_and_query().map_or_else(|| uri.path().to_owned(), ToString::to_string);
    let (in_flight, number) = backend.stats.begin(Recorded {
        target,
        id: id.clone(),
        request_id: header("x-request-id"),
        traceparent: header("traceparent"),
        deadline_ms: header("x-muster-deadline-ms"),
    });
    let service = backend.service;
    let delay = match knob(&knobs.delay_ms) {
        Ok(millis) => Duration::from_millis(millis).min(MAX_DELAY),
        Err(()) => {
            in_flight.complete();
            return bad_request(service, "delay_ms must be a number of milliseconds");
        }
    };
    let fail = match knob(&knobs.fail) {
        Ok(0) => None,
        Ok(1) => Some(StatusCode::INTERNAL_SERVER_ERROR),
        Ok(code @ 400..=599) => StatusCode::from_u16(code as u16).ok(),
        _ => {
            in_flight.complete();
            return bad_request(service, "fail must be 0, 1 or an error status (400 to 599)");
        }
    };
    let forced = fail.is_some();
    let fail = match (fail, share(&knobs.fail_rate)) {
        (Some(status), _) => Some(status),
        (None, Ok(rate)) => fails(number, rate).then_some(StatusCode::SERVICE_UNAVAILABLE),
        (None, Err(())) => {
            in_flight.complete();
            return bad_request(service, "fail_rate must be a share from 0 to 1, e.g. 0.5");
        }
    };
    tokio::time::sleep(delay).await;
    in_flight.complete();
    match fail {
        Some(status) => {
            let knob = if forced { format!("fail={}", knobs.fail) } else { format!("fail_rate={}", knobs.fail_rate) };
            let error = format!("{service} service failed on purpose (demo, {knob})");
            (status, Json(json!({"error": error}))).into_response()
        }
        None => Json(service.body(&id)).into_response(),
    }
}

/// A knob's value: empty is 0.
fn knob(value: &str) -> Result<u64, ()> {
    if value.is_empty() { Ok(0) } else { value.parse().map_err(drop) }
}

/// A share knob's value, from 0 to 1: empty is 0.
fn share(value: &str) -> Result<f64, ()> {
    match value.parse::<f64>() {
        _ if value.is_empty() => Ok(0.0),
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(()),
    }
}

/// Whether request number `number` fails when a share `rate` of them does: a multiplicative
/// hash of the number, so that the failures come in no rhythm, yet the same ones every run.
fn fails(number: usize, rate: f64) -> bool {
    let draw = (number as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    (draw as f64) < rate * (1_u64 << 53) as f64
}

fn bad_request(service: Service, error: &str) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": format!("{service}: {error}")}))).into_response()
}

/// A demo backend serving on an ephemeral loopback port. Dropping it stops the server.
#[derive(Debug)]
pub struct DemoBackend {
    service: Service,
    addr: SocketAddr,
    stats: Stats,
    server: JoinHandle<()>,
}

impl DemoBackend {
    /// Binds `127.0.0.1:0` and serves `service` there.
    ///
    /// # Errors
    ///
    /// The error of binding the port.
    pub async fn start(service: Service) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let stats = Stats::default();
        let app = router(service, stats.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%service, %error, "demo backend stopped");
            }
        });
        Ok(Self { service, addr, stats, server })
    }

    /// The service it plays.
    pub fn service(&self) -> Service {
        self.service
    }

    /// The address it serves on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The dashboard's URL template for it (see [`Service::url_template`]).
    pub fn url_template(&self) -> String {
        self.service.url_template(self.addr)
    }

    /// What it counted and recorded.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

impl Drop for DemoBackend {
    fn drop(&mut self) {
        self.server.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_built_from_the_id_and_stable() {
        let profile = Service::Profile.body("42");
        assert_eq!(profile["id"], "42");
        assert!(profile["name"].is_string() && profile["kyc"].is_string(), "{profile}");
        assert_eq!(profile, Service::Profile.body("42"));
        let transactions = Service::Transactions.body("42");
        assert_eq!(transactions["recent"].as_array().map(Vec::len), Some(3), "{transactions}");
        assert_eq!(transactions, Service::Transactions.body("42"));
    }

    #[test]
    fn money_is_formatted_without_floats() {
        assert_eq!(money(120_450), "1204.50");
        assert_eq!(money(-1_250), "-12.50");
        assert_eq!(money(5), "0.05");
    }

    #[test]
    fn templates_pass_the_knobs_of_their_own_source() {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 9));
        assert_eq!(
            Service::Transactions.url_template(addr),
            "http://127.0.0.1:9/transactions/{id}?delay_ms={transactions_delay_ms}&fail={transactions_fail}&fail_rate={transactions_fail_rate}"
        );
        assert_eq!(
            Service::Offers.url_template(addr),
            "http://127.0.0.1:9/offers/{tier}?delay_ms={offers_delay_ms}&fail={offers_fail}&fail_rate={offers_fail_rate}"
        );
    }

    #[test]
    fn a_profile_has_a_tier_and_the_tiers_have_offers() {
        let tier = Service::Profile.body("42")["tier"].as_str().map(str::to_owned).unwrap();
        assert!(["standard", "silver", "gold"].contains(&tier.as_str()));
        assert_eq!(Service::Offers.body("gold").as_array().map(Vec::len), Some(2));
        assert_eq!(Service::Offers.body("standard"), json!([]), "the same shape as the dashboard's fallback");
    }

    #[test]
    fn the_records_are_bounded_to_the_latest() {
        let stats = Stats::default();
        for i in 0..RECORDED + 10 {
            let recorded = Recorded {
                target: format!("/profile/{i}"),
                id: i.to_string(),
                request_id: None,
                traceparent: None,
                deadline_ms: None,
            };
            stats.begin(recorded).0.complete();
        }
        let requests = stats.requests();
        assert_eq!(requests.len(), RECORDED);
        assert_eq!(requests.first().map(|recorded| recorded.id.as_str()), Some("10"), "the oldest went first");
        assert_eq!(stats.started(), RECORDED + 10, "every request is still counted");
    }

    #[test]
    fn empty_knobs_mean_zero_and_garbage_is_refused() {
        assert_eq!(knob(""), Ok(0));
        assert_eq!(knob("250"), Ok(250));
        assert_eq!(knob("-1"), Err(()));
        assert_eq!(knob("1e3"), Err(()));
        assert_eq!(share(""), Ok(0.0));
        assert_eq!(share("0.5"), Ok(0.5));
        for bad in ["-0.1", "1.5", "NaN", "half"] {
            assert_eq!(share(bad), Err(()), "{bad}");
        }
    }

    #[test]
    fn a_fail_rate_fails_that_share_of_the_requests_in_no_rhythm() {
        for rate in [0.0, 0.1, 0.5, 1.0] {
            let failed = (0..10_000).filter(|&number| fails(number, rate)).count();
            assert!((failed as f64 - rate * 10_000.0).abs() <= 150.0, "{failed} of 10,000 failed at {rate}");
        }
        let pattern: Vec<bool> = (0..8).map(|number| fails(number, 0.5)).collect();
        assert_ne!(pattern, [false, true, false, true, false, true, false, true], "alternating");
        assert_ne!(pattern, [true, false, true, false, true, false, true, false], "alternating");
    }
}
