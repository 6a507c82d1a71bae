//! What an HTTP fetcher sends from the request and its call's context: forwarded headers
//! through the allow-list (taken from `muster::context()`, validated, never to another host),
//! the request id and `traceparent` from the context, other methods, and a JSON body;
//! substituted values stay one encoded path segment whatever the method.

#[path = "support/server.rs"]
mod server;

use std::borrow::Cow;

use muster_adapters::http::{HttpFetcher, Method, UrlParams};
use muster_core::{Context, Fetcher, with_context};
use serde_json::value::RawValue;
use server::Server;

/// A request with an id and an optional JSON body, and the context of its call: the caller's
/// headers, as an aggregator's `RequestContext` gives them.
struct Call {
    id: &'static str,
    context: Context,
    body: Option<Box<RawValue>>,
}

impl Call {
    fn new(id: &'static str, headers: &[(&'static str, &str)]) -> Self {
        let context = headers.iter().fold(Context::new(), |context, (name, value)| context.with_header(name, *value));
        Self { id, context, body: None }
    }

    /// Fetches this request with `fetcher`, under the call's context.
    async fn fetch<F: Fetcher<Self>>(&self, fetcher: &F) -> Result<F::Output, F::Error> {
        with_context(self.context.clone(), fetcher.fetch(self)).await
    }
}

impl UrlParams for Call {
    fn param(&self, _name: &str) -> Option<Cow<'_, str>> {
        Some(self.id.into())
    }
    fn body(&self) -> Option<&RawValue> {
        self.body.as_deref()
    }
}

#[tokio::test]
async fn only_allow_listed_headers_are_forwarded() {
    let server = Server::json("{}").await;
    let fetcher = HttpFetcher::builder(&server.url("/v1/users/{id}"))
        .forward_header("authorization")
        .forward_header("Cookie")
        .build()
        .unwrap();
    let call = Call::new("7", &[("authorization", "Bearer t0k"), ("cookie", "a=b"), ("x-secret", "no")]);

    call.fetch(&fetcher).await.unwrap();
    fetcher.fetch(&call).await.unwrap();

    let heads = server.heads();
    let head = &heads[0];
    assert_eq!(head.all("authorization"), ["Bearer t0k"]);
    assert_eq!(head.all("cookie"), ["a=b"]);
    assert!(head.all("x-secret").is_empty(), "{head:?}");
    assert!(!format!("{fetcher:?}").contains("t0k"));
    assert!(!format!("{:?}", call.context).contains("t0k"), "a context's Debug shows header names only");
    assert!(heads[1].all("authorization").is_empty(), "outside the call's context nothing is forwarded");
}

/// The request id, the `traceparent` and the allow-listed headers all come from the call's
/// context, as an aggregator sets it: the request type gives only the URL values.
#[tokio::test]
async fn the_request_id_traceparent_and_forwarded_headers_come_from_the_context() {
    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let server = Server::json("{}").await;
    let fetcher = HttpFetcher::builder(&server.url("/v1/users/{id}")).forward_header("authorization").build().unwrap();
    let context = Context::new()
        .with_request_id("r-42")
        .with_traceparent(TRACEPARENT)
        .with_header("Authorization", "Bearer user")
        .with_header("cookie", "session=secret");

    with_context(context, fetcher.fetch("7")).await.unwrap();

    let head = server.only_head();
    assert_eq!(head.line, "GET /v1/users/7 HTTP/1.1");
    assert_eq!(head.header("x-request-id"), Some("r-42"));
    if cfg!(not(feature = "otel")) {
        assert_eq!(head.header("traceparent"), Some(TRACEPARENT));
    }
    assert_eq!(head.all("authorization"), ["Bearer user"]);
    assert!(head.all("cookie").is_empty(), "not on the allow-list: {head:?}");
}

#[tokio::test]
async fn a_forwarded_value_replaces_a_static_one_and_invalid_values_are_not_sent() {
    let server = Server::json("{}").await;
    let fetcher = HttpFetcher::builder(&server.url("/{id}"))
        .header("authorization", "Bearer service")
        .forward_header("authorization")
        .forward_header("x-tenant")
        .build()
        .unwrap();

    Call::new("1", &[("authorization", "Bearer user")]).fetch(&fetcher).await.unwrap();
    Call::new("2", &[]).fetch(&fetcher).await.unwrap();
    let long = "x".repeat(8 * 1024 + 1);
    Call::new("3", &[("x-tenant", &long), ("authorization", "Bearer \u{e9}")]).fetch(&fetcher).await.unwrap();

    let heads = server.heads();
    assert_eq!(heads[0].all("authorization"), ["Bearer user"], "the caller's replaces the static one");
    assert_eq!(heads[1].all("authorization"), ["Bearer service"], "none from the caller: the static one");
    assert_eq!(heads[2].all("authorization"), ["Bearer service"], "a non-ASCII value is not forwarded");
    assert!(heads[2].all("x-tenant").is_empty(), "a value over 8 KiB is not forwarded");
}

#[test]
fn reserved_headers_cannot_be_forwarded() {
    for name in ["host", "content-length", "transfer-encoding", "x-muster-deadline-ms", "content-type", "bad name"] {
        let error = HttpFetcher::builder("http://host/{id}").forward_header(name).build().unwrap_err();
        assert!(matches!(error, muster_adapters::http::HttpConfigError::Header { .. }), "{name}: {error:?}");
    }
}

#[tokio::test]
async fn forwarded_headers_are_not_sent_to_another_host_after_a_redirect() {
    let target = Server::json("{}").await;
    let location = target.url("/landed");
    let origin = Server::start(move |mut conn| {
        let location = location.clone();
        async move {
            while conn.read_request().await.is_some() {
                let _ = conn.respond("302 Found", &[("location", &location)], b"").await;
            }
        }
    })
    .await;
    let fetcher =
        HttpFetcher::builder(&origin.url("/{id}")).forward_header("authorization").follow_redirects(1).build().unwrap();

    Call::new("1", &[("authorization", "Bearer user")]).fetch(&fetcher).await.unwrap();

    assert_eq!(origin.only_head().all("authorization"), ["Bearer user"]);
    assert!(target.only_head().all("authorization").is_empty(), "the credential followed the redirect");
}

#[tokio::test]
async fn a_post_sends_the_json_body_and_keeps_the_id_one_segment() {
    let server = Server::start(|mut conn| async move {
        while let Some(head) = conn.read_request().await {
            let len = head.header("content-length").and_then(|len| len.parse().ok()).unwrap_or(0);
            let body = conn.read_body(len).await.unwrap_or_default();
            let _ = conn.respond("200 OK", &[("content-type", "application/json")], &body).await;
        }
    })
    .await;
    let fetcher = HttpFetcher::builder(&server.url("/v1/users/{id}/search")).method(Method::POST).build().unwrap();
    let mut call = Call::new("../admin", &[]);
    call.body = Some(RawValue::from_string(r#"{"q": "rent", "limit": 5}"#.to_owned()).unwrap());

    let echoed = fetcher.fetch(&call).await.unwrap();

    assert_eq!(echoed.get(), r#"{"q": "rent", "limit": 5}"#, "the server received the body as sent");
    let head = server.only_head();
    assert_eq!(head.line, "POST /v1/users/%2E%2E%2Fadmin/search HTTP/1.1");
    assert_eq!(head.header("content-type"), Some("application/json"));
    assert_eq!(head.header("content-length"), Some("25"));
}

#[tokio::test]
async fn a_303_after_a_post_becomes_a_get_without_the_body() {
    let server = Server::start(|mut conn| async move {
        while let Some(head) = conn.read_request().await {
            let len = head.header("content-length").and_then(|len| len.parse().ok()).unwrap_or(0);
            let _ = conn.read_body(len).await;
            let result = if head.line.starts_with("POST") {
                conn.respond("303 See Other", &[("location", "/result")], b"").await
            } else {
                conn.respond("200 OK", &[("content-type", "application/json")], b"[]").await
            };
            if result.is_err() {
                return;
            }
        }
    })
    .await;
    let fetcher = HttpFetcher::builder(&server.url("/{id}")).method(Method::POST).follow_redirects(1).build().unwrap();
    let mut call = Call::new("1", &[]);
    call.body = Some(RawValue::from_string("{}".to_owned()).unwrap());

    assert_eq!(fetcher.fetch(&call).await.unwrap().get(), "[]");

    let heads = server.heads();
    assert_eq!(heads[1].line, "GET /result HTTP/1.1");
    assert!(heads[1].all("content-type").is_empty() && heads[1].all("content-length").is_empty(), "{:?}", heads[1]);
}

#[tokio::test]
async fn methods_without_a_body_send_none() {
    let server = Server::json("{}").await;
    let fetcher = HttpFetcher::builder(&server.url("/{id}")).method(Method::DELETE).build().unwrap();

    fetcher.fetch("7").await.unwrap();

    let head = server.only_head();
    assert_eq!(head.line, "DELETE /7 HTTP/1.1");
    assert!(head.all("content-type").is_empty(), "{head:?}");
}
