//! What goes from the client to the backends, and back: the client's `Authorization` reaches
//! both backends (and nothing else of its headers does), and nothing a backend sent or the
//! libraries said (a redirect's `Location`, a `Content-Type`, an address) reaches the client.
//! A template placeholder no request fills is a start-up error.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::header;
use dashboard::limits::Limits;
use dashboard::{AppState, ConfigError};
use support::{config, get, serve_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Every request head a backend received, as `(name, value)` pairs in lower case names.
type Heads = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// A backend that records every request head and answers `response` to each.
async fn recording_backend(response: &'static str) -> (SocketAddr, Heads) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let heads: Heads = Arc::default();
    let recorded = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let recorded = recorded.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0; 4096];
                loop {
                    while let Some(end) = buffer.windows(4).position(|window| window == b"\r\n\r\n") {
                        let head: Vec<u8> = buffer.drain(..end + 4).collect();
                        let text = String::from_utf8_lossy(&head).into_owned();
                        let headers = text
                            .split("\r\n")
                            .skip(1)
                            .filter_map(|line| line.split_once(':'))
                            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
                            .collect();
                        recorded.lock().expect("heads").push(headers);
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    (addr, heads)
}

const OK_JSON: &str = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";

fn values<'a>(head: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    head.iter().filter(|(key, _)| key == name).map(|(_, value)| value.as_str()).collect()
}

#[tokio::test]
async fn the_clients_authorization_reaches_both_backends_and_nothing_else_of_its_headers_does() {
    let (profile, profile_heads) = recording_backend(OK_JSON).await;
    let (transactions, transactions_heads) = recording_backend(OK_JSON).await;
    let config =
        config(format!("http://{profile}/p/{{id}}"), format!("http://{transactions}/t/{{id}}"), Duration::from_secs(5));
    let (addr, _server) = serve_config(config, Limits::default()).await;
    let client_headers = [
        ("authorization", "Bearer user-token-1"),
        ("cookie", "session=s3cr3t"),
        ("x-internal-secret", "leak-me"),
        ("proxy-authorization", "Basic abc"),
    ];

    let reply = get(addr, "/dashboard/42", &client_headers).await;

    assert_eq!(reply.status, 200, "{reply:?}");
    for (name, heads) in [("profile", profile_heads), ("transactions", transactions_heads)] {
        let heads = heads.lock().expect("heads").clone();
        assert_eq!(heads.len(), 1, "{name}: {heads:?}");
        let head = &heads[0];
        assert_eq!(values(head, "authorization"), ["Bearer user-token-1"], "{name}: {head:?}");
        for leaked in ["cookie", "x-internal-secret", "proxy-authorization"] {
            assert!(values(head, leaked).is_empty(), "{name} received the client's {leaked}: {head:?}");
        }
        let names: Vec<&str> = head.iter().map(|(name, _)| name.as_str()).collect();
        let expected = ["host", "accept", "user-agent", "x-request-id", "x-muster-deadline-ms", "authorization"];
        assert!(names.iter().all(|name| expected.contains(name)), "{name}: unexpected headers in {names:?}");
    }
}

#[tokio::test]
async fn credentials_go_only_to_the_sources_that_need_them() {
    let offers_json = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n[]";
    let tier_json =
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{\"tier\":\"gold\"}";
    let (profile, profile_heads) = recording_backend(tier_json).await;
    let (transactions, transactions_heads) = recording_backend(OK_JSON).await;
    let (offers, offers_heads) = recording_backend(offers_json).await;
    let mut config =
        config(format!("http://{profile}/p/{{id}}"), format!("http://{transactions}/t/{{id}}"), Duration::from_secs(5));
    config.offers_url = Some(format!("http://{offers}/o/{{tier}}"));
    let (addr, _server) = serve_config(config.clone(), Limits::default()).await;
    let headers = [("authorization", "Bearer user-token-1"), ("x-tenant", "acme")];

    assert_eq!(get(addr, "/dashboard/42", &headers).await.status, 200);
    for (name, heads) in [("profile", &profile_heads), ("transactions", &transactions_heads)] {
        let heads = heads.lock().expect("heads").clone();
        assert_eq!(values(&heads[0], "authorization"), ["Bearer user-token-1"], "{name}: {heads:?}");
    }
    let heads = offers_heads.lock().expect("heads").clone();
    assert_eq!(heads.len(), 1, "offers asked once: {heads:?}");
    assert!(values(&heads[0], "authorization").is_empty(), "offers got the user's token: {heads:?}");

    // The offers' own allow-list.
    config.offers_forward_headers = vec![header::HeaderName::from_static("x-tenant")];
    let (addr, _other) = serve_config(config, Limits::default()).await;
    assert_eq!(get(addr, "/dashboard/43", &headers).await.status, 200);
    let heads = offers_heads.lock().expect("heads").clone();
    assert_eq!(values(&heads[1], "x-tenant"), ["acme"], "{heads:?}");
    assert!(values(&heads[1], "authorization").is_empty(), "{heads:?}");
}

#[tokio::test]
async fn forwarding_can_be_turned_off_or_given_other_names() {
    let (profile, profile_heads) = recording_backend(OK_JSON).await;
    let template = format!("http://{profile}/p/{{id}}");
    let mut off = config(template.clone(), template.clone(), Duration::from_secs(5));
    off.forward_headers = Vec::new();
    let (addr, _server) = serve_config(off, Limits::default()).await;
    let headers = [("authorization", "Bearer t"), ("x-tenant", "acme")];

    assert_eq!(get(addr, "/dashboard/1", &headers).await.status, 200);
    let mut tenant = config(template.clone(), template, Duration::from_secs(5));
    tenant.forward_headers = vec![header::HeaderName::from_static("x-tenant")];
    let (addr, _other) = serve_config(tenant, Limits::default()).await;
    assert_eq!(get(addr, "/dashboard/2", &headers).await.status, 200);

    let heads = profile_heads.lock().expect("heads").clone();
    assert_eq!(heads.len(), 4, "two sources, two requests: {heads:?}");
    for head in &heads[..2] {
        assert!(values(head, "authorization").is_empty() && values(head, "x-tenant").is_empty(), "{head:?}");
    }
    for head in &heads[2..] {
        assert_eq!(values(head, "x-tenant"), ["acme"], "{head:?}");
        assert!(values(head, "authorization").is_empty(), "{head:?}");
    }
}

#[tokio::test]
async fn nothing_a_backend_sent_and_no_address_reaches_the_client() {
    let redirect =
        "HTTP/1.1 302 Found\r\nlocation: https://sso.internal/login?token=tok-9f8e\r\ncontent-length: 0\r\n\r\n";
    let html = "HTTP/1.1 200 OK\r\ncontent-type: text/html; charset=x-internal\r\ncontent-length: 2\r\n\r\nhi";
    let (redirecting, _) = recording_backend(redirect).await;
    let (html_backend, _) = recording_backend(html).await;
    let (ok, _) = recording_backend(OK_JSON).await;
    // A port nothing listens on.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind").local_addr().expect("addr");

    for (backend, kind) in [
        (format!("http://{redirecting}/p/{{id}}"), "redirect"),
        (format!("http://{html_backend}/p/{{id}}"), "content_type"),
        (format!("http://{closed}/p/{{id}}"), "connect"),
    ] {
        let config = config(backend, format!("http://{ok}/t/{{id}}"), Duration::from_secs(5));
        let (addr, _server) = serve_config(config, Limits::default()).await;

        let reply = get(addr, "/dashboard/42", &[]).await;

        assert_eq!(reply.status, 502, "{reply:?}");
        assert_eq!(reply.json()["kind"], kind, "{reply:?}");
        let port = closed.port().to_string();
        for secret in ["tok-9f8e", "sso.internal", "x-internal", "text/html", "127.0.0.1", &port, "os error", "tcp"] {
            assert!(!reply.body.contains(secret), "the client saw {secret:?}: {}", reply.body);
        }
        for (name, value) in &reply.headers {
            assert!(!value.contains("tok-9f8e") && !value.contains("text/html"), "{name}: {value}");
        }
    }
}

#[test]
fn a_placeholder_no_request_fills_is_a_start_up_error() {
    let mut bad = config("http://p/{tenant}/users/{id}".into(), "http://t/{id}".into(), Duration::from_secs(1));
    let error = AppState::new(&bad).expect_err("accepted a template with {tenant}");
    assert!(matches!(&error, ConfigError::Placeholder { name, source_name: "profile", .. } if name == "tenant"));
    assert!(error.to_string().contains("`{tenant}`"), "{error}");

    bad.profile_url = "http://p/users/{id}?delay_ms={profile_delay_ms}".into();
    assert!(AppState::new(&bad).is_ok(), "the demo knobs are filled by every request");
}
