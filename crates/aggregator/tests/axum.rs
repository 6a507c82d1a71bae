//! Feature `axum`: an aggregator mounted in a real axum server on a loopback port, with mock
//! sources; the status codes and JSON bodies of a success, a failed source and the deadline,
//! and that a client is told which source failed and how, never the internal detail.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequestParts, Path};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use muster::{Aggregator, Deadline, RequestContext, Timeout, cancel::CancelToken, fetcher_fn};
use muster_adapters::mock::MockFetcher;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A dashboard request as a user writes one: the user id from the path, the request id from
/// a header.
#[derive(Debug)]
struct Dashboard {
    user_id: String,
    request_id: Option<String>,
}

impl<S: Send + Sync> FromRequestParts<S> for Dashboard {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
        let Path(user_id) =
            Path::<String>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
        let request_id = parts.headers.get("x-request-id").and_then(|value| value.to_str().ok()).map(str::to_owned);
        Ok(Self { user_id, request_id })
    }
}

impl Dashboard {
    fn context(&self) -> RequestContext {
        let context = RequestContext::new().field("user_id", &self.user_id);
        match &self.request_id {
            Some(request_id) => context.field("request_id", request_id),
            None => context,
        }
    }
}

#[cfg(feature = "http")]
impl muster::http::UrlParams for Dashboard {
    fn param(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        (name == "id").then(|| self.user_id.as_str().into())
    }
}

/// Serves `app` on a loopback port; the server ends with the test's runtime.
async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// A response as the client saw it.
#[derive(Debug)]
struct Answer {
    status: u16,
    content_type: Option<String>,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|error| panic!("not JSON ({error}): {}", self.body))
    }
}

/// GETs `path` from `addr` over HTTP/1.1 with a `Connection: close`, as a minimal client.
async fn get_from(addr: SocketAddr, path: &str, request_id: Option<&str>) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
    if let Some(request_id) = request_id {
        request += &format!("x-request-id: {request_id}\r\n");
    }
    request += "\r\n";
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await.unwrap().unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let header = |name: &str| {
        lines.clone().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim().to_owned())
        })
    };
    assert_eq!(header("transfer-encoding"), None, "the test client reads only sized bodies");
    Answer { status, content_type: header("content-type"), body: body.to_owned() }
}

#[tokio::test]
async fn a_successful_aggregation_is_a_200_json_object_keyed_by_source_name() {
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok(json!({"name": "Ada", "kyc": "verified"})))
        .source("transactions", MockFetcher::ok_after(ms(5), json!([{"amount": "12.50"}])))
        .options(Deadline(ms(2_000)))
        .build()
        .unwrap();
    let app =
        Router::new().route("/dashboard/{id}", get(muster::axum::handler(aggregator).context(Dashboard::context)));
    let addr = serve(app).await;

    let answer = get_from(addr, "/dashboard/42", None).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    assert_eq!(answer.body, r#"{"profile":{"name":"Ada","kyc":"verified"},"transactions":[{"amount":"12.50"}]}"#);
}

#[tokio::test]
async fn the_request_reaches_the_sources_from_the_path() {
    let profile = fetcher_fn(|request: &Dashboard| {
        let user_id = request.user_id.clone();
        async move { Ok::<_, std::io::Error>(format!("profile of {user_id}")) }
    });
    let aggregator = Aggregator::builder().source("profile", profile).build().unwrap();
    let app = Router::new().route("/dashboard/{id}", get(muster::axum::handler(aggregator)));
    let addr = serve(app).await;

    let answer = get_from(addr, "/dashboard/ada%20lovelace", None).await;
    assert_eq!((answer.status, answer.json()), (200, json!({"profile": "profile of ada lovelace"})));
}

#[tokio::test]
async fn a_failed_source_is_a_502_naming_the_source_the_kind_and_the_request_id() {
    let slow = MockFetcher::ok_after(ms(10_000), json!({"name": "Ada"}));
    let aggregator = Aggregator::builder()
        .source("profile", slow.clone())
        .source("transactions", MockFetcher::<Value>::err_after(ms(5), "connection refused by 10.1.2.3:8443"))
        .options(Deadline(ms(5_000)))
        .build()
        .unwrap();
    let app =
        Router::new().route("/dashboard/{id}", get(muster::axum::handler(aggregator).context(Dashboard::context)));
    let addr = serve(app).await;

    let started = std::time::Instant::now();
    let answer = get_from(addr, "/dashboard/42", Some("r-1")).await;
    assert!(started.elapsed() < Duration::from_secs(5), "fail-fast waited for the slow source");
    assert_eq!(answer.status, 502, "{answer:?}");
    assert_eq!(answer.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        answer.json(),
        json!({"error": "source `transactions` failed", "source": "transactions", "kind": "failed", "request_id": "r-1"})
    );
    assert!(!answer.body.contains("10.1.2.3"), "internal detail reached the client: {}", answer.body);
    assert!(slow.was_cancelled(), "the slow source kept running");
}

#[tokio::test]
async fn the_deadline_is_a_504_naming_the_pending_sources() {
    let hanging = MockFetcher::<Value>::hang();
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok(json!({"name": "Ada"})))
        .source("transactions", hanging.clone())
        .options(Deadline(ms(100)))
        .build()
        .unwrap();
    let app =
        Router::new().route("/dashboard/{id}", get(muster::axum::handler(aggregator).context(Dashboard::context)));
    let addr = serve(app).await;

    let started = std::time::Instant::now();
    let answer = get_from(addr, "/dashboard/42", Some("r-2")).await;
    assert!(started.elapsed() < Duration::from_secs(5), "the deadline did not answer");
    assert_eq!(answer.status, 504, "{answer:?}");
    assert_eq!(
        answer.json(),
        json!({
            "error": "deadline of 100ms elapsed; pending: transactions",
            "source": null,
            "kind": "timeout",
            "pending": ["transactions"],
            "request_id": "r-2",
        })
    );
    assert!(hanging.was_cancelled(), "the pending source kept running");
}

#[tokio::test]
async fn without_a_request_id_the_error_says_null() {
    let aggregator =
        Aggregator::<Dashboard, ()>::builder().source("profile", MockFetcher::<Value>::err("boom")).build().unwrap();
    let app = Router::new().route("/dashboard/{id}", get(muster::axum::handler(aggregator)));
    let addr = serve(app).await;

    let answer = get_from(addr, "/dashboard/42", Some("r-3")).await;
    assert_eq!(answer.status, 502);
    assert_eq!(answer.json()["request_id"], Value::Null, "no context was given, so no request id");
}

#[tokio::test]
async fn an_operator_can_expose_the_cause_chain() {
    let aggregator = Aggregator::builder()
        .source("transactions", MockFetcher::<Value>::err("connection refused by 10.1.2.3:8443"))
        .build()
        .unwrap();
    let handler = muster::axum::handler(aggregator).context(Dashboard::context).expose_errors();
    let addr = serve(Router::new().route("/dashboard/{id}", get(handler))).await;

    let answer = get_from(addr, "/dashboard/42", Some("r-4")).await;
    assert_eq!(answer.status, 502);
    let body = answer.json();
    assert_eq!(
        (&body["source"], &body["kind"], &body["request_id"]),
        (&json!("transactions"), &json!("failed"), &json!("r-4"))
    );
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("connection refused by 10.1.2.3:8443"), "{error}");
}

#[tokio::test]
async fn a_rejected_request_is_the_extractors_response() {
    struct Numeric(u64);
    impl<S: Send + Sync> FromRequestParts<S> for Numeric {
        type Rejection = Response;
        async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Response> {
            let Path(id) = Path::<u64>::from_request_parts(parts, state).await.map_err(IntoResponse::into_response)?;
            Ok(Self(id))
        }
    }
    let double = fetcher_fn(|Numeric(id): &Numeric| {
        let id = *id;
        async move { Ok::<_, std::io::Error>(id * 2) }
    });
    let aggregator = Aggregator::builder().source("double", double).build().unwrap();
    let addr = serve(Router::new().route("/double/{id}", get(muster::axum::handler(aggregator)))).await;

    assert_eq!(get_from(addr, "/double/21", None).await.body, r#"{"double":42}"#);
    assert_eq!(get_from(addr, "/double/twenty", None).await.status, 400);
}

async fn body_of(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_aggregation_is_a_503() {
    let token = CancelToken::new();
    token.cancel();
    let aggregator = Aggregator::builder().source("profile", MockFetcher::<Value>::hang()).build().unwrap();
    let context = RequestContext::new().field("request_id", "r-5").cancel_on(&token);
    let error = aggregator.aggregate_with(&(), context).await.unwrap_err();

    let response = error.into_response();
    let answer = response.extensions().get::<muster::axum::Answer>().cloned().unwrap();
    assert_eq!((answer.source, answer.kind), (None, "cancelled"));
    let (status, body) = body_of(response).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body,
        json!({"error": "aggregation cancelled", "source": null, "kind": "cancelled", "request_id": "r-5"})
    );
}

#[tokio::test(start_paused = true)]
async fn a_source_timeout_is_a_502_of_kind_timeout() {
    let aggregator = Aggregator::builder()
        .source_with("profile", MockFetcher::ok_after(ms(500), json!({})), Timeout(ms(50)))
        .build()
        .unwrap();
    let error = aggregator.aggregate(&()).await.unwrap_err();
    let (status, body) = body_of(error.into_response()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        body,
        json!({"error": "source `profile` timed out", "source": "profile", "kind": "timeout", "request_id": null})
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_source_is_a_502_without_the_panic_message() {
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::<Value>::panic_after(ms(5), "index out of bounds in db-7"))
        .build()
        .unwrap();
    let error = aggregator.aggregate_with(&(), RequestContext::new().field("request_id", "r-7")).await.unwrap_err();
    let (status, body) = body_of(error.into_response()).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        body,
        json!({"error": "source `profile` panicked", "source": "profile", "kind": "panicked", "request_id": "r-7"})
    );
}

#[tokio::test(start_paused = true)]
async fn by_name_outputs_are_keyed_by_their_names() {
    let mut builder = Aggregator::by_name();
    for (name, value) in [("eu", 3), ("us", 5), ("apac", 8)] {
        builder = builder.source(name, MockFetcher::ok_after(ms(value), value));
    }
    let aggregate = builder.build().unwrap().aggregate(&()).await.unwrap();
    let response = aggregate.into_response();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.extensions().get::<muster::axum::Answer>().map(|answer| answer.kind), Some("ok"));
    let body = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
    assert_eq!(body, r#"{"eu":3,"us":5,"apac":8}"#);
}

#[tokio::test(start_paused = true)]
async fn an_omitted_optional_source_is_null() {
    let aggregator = Aggregator::builder()
        .source("profile", MockFetcher::ok("Ada"))
        .source_with("offers", MockFetcher::<Vec<String>>::err("down"), muster::Optional)
        .build()
        .unwrap();
    let json = muster::axum::Json::from(aggregator.aggregate(&()).await.unwrap());
    assert_eq!(json.names().collect::<Vec<_>>(), ["profile", "offers"]);
    assert_eq!(serde_json::to_value(&json).unwrap(), json!({"profile": "Ada", "offers": null}));
}

/// The HTTP fetcher's kinds, through the policy wrappers, and no internal detail.
#[cfg(feature = "http")]
mod http {
    use muster::http::{HttpError, HttpFetcher};
    use muster::policy::Coalesce;

    use super::*;

    #[tokio::test]
    async fn an_http_source_that_cannot_connect_is_a_502_of_kind_connect_without_the_address() {
        // A port that was just free: nothing listens there, the connection is refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let template = format!("http://127.0.0.1:{port}/v1/users/{{id}}");
        let fetcher = HttpFetcher::builder(&template).build().unwrap();
        let aggregator = Aggregator::builder()
            .source("profile", MockFetcher::ok(json!({"name": "Ada"})))
            .source_with("transactions", fetcher, Timeout(ms(2_000)))
            .build()
            .unwrap();
        let app =
            Router::new().route("/dashboard/{id}", get(muster::axum::handler(aggregator).context(Dashboard::context)));
        let addr = serve(app).await;

        let answer = get_from(addr, "/dashboard/42", Some("r-6")).await;
        assert_eq!(answer.status, 502, "{answer:?}");
        assert_eq!(
            answer.json(),
            json!({"error": "source `transactions` failed (connect)", "source": "transactions", "kind": "connect", "request_id": "r-6"})
        );
        assert!(!answer.body.contains(&port.to_string()), "the backend's address reached the client: {}", answer.body);
    }

    #[tokio::test(start_paused = true)]
    async fn the_http_kind_is_found_through_timeout_and_coalescing() {
        let too_large = fetcher_fn(|_: &u64| async { Err::<u64, _>(HttpError::BodyTooLarge { limit: 1 << 20 }) });
        let aggregator =
            Aggregator::builder().source_with("transactions", too_large, (Coalesce, Timeout(ms(100)))).build().unwrap();
        let error = aggregator.aggregate(&7).await.unwrap_err();
        let (status, body) = body_of(error.into_response()).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(body["kind"], "body_too_large");

        let status = fetcher_fn(|_: &u64| async {
            Err::<u64, _>(HttpError::Status { status: StatusCode::NOT_FOUND, body_excerpt: "no user 7 in db-3".into() })
        });
        let aggregator =
            Aggregator::builder().source_with("profile", status, (Timeout(ms(100)), Coalesce)).build().unwrap();
        let error = aggregator.aggregate(&7).await.unwrap_err();
        let (_, body) = body_of(error.into_response()).await;
        assert_eq!(body["kind"], "status");
        assert!(!body.to_string().contains("db-3"), "the backend's body reached the client: {body}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_nested_aggregation_reports_its_inner_http_kind() {
        let refused = fetcher_fn(|_: &u64| async {
            Err::<u64, _>(HttpError::Connect { source: "tcp connect error: 10.0.0.9:443: refused".into() })
        });
        let inner = Aggregator::builder().source("ledger", refused).build().unwrap();
        let outer =
            Aggregator::builder().source("profile", MockFetcher::ok_after(ms(50), 1u32)).source("accounts", inner);
        let error = outer.build().unwrap().aggregate(&7).await.unwrap_err();
        let (status, body) = body_of(error.into_response()).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY);
        assert_eq!(
            body,
            json!({"error": "source `accounts` failed (connect)", "source": "accounts", "kind": "connect", "request_id": null})
        );
    }
}
