//! TLS as a choice: with the `tls` feature an `https://` template connects through rustls;
//! without it (`--no-default-features --features http`, which `cargo xtask features` runs)
//! an `https://` template is refused when the fetcher is built, and plain http still works.

#[path = "support/server.rs"]
mod server;

use std::time::Duration;

use muster_adapters::http::{HttpConfigError, HttpFetcher};
use muster_core::Fetcher;
use server::Server;

const TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn an_https_template_is_refused_at_build_exactly_when_tls_is_off() {
    let built = HttpFetcher::builder("https://profile.internal/v1/users/{id}").build();
    if cfg!(feature = "tls") {
        assert!(built.is_ok(), "{built:?}");
        return;
    }
    let error = built.unwrap_err();
    assert!(matches!(&error, HttpConfigError::Template { template, .. } if template.starts_with("https://")));
    assert_eq!(
        error.to_string(),
        "invalid URL template `https://profile.internal/v1/users/{id}`: \
         https needs the `tls` feature, which this build of muster does not enable",
    );
}

#[tokio::test]
async fn plain_http_works_with_or_without_tls() {
    let server = Server::json(r#"{"name": "Ada"}"#).await;
    let fetcher = HttpFetcher::builder(&server.url("/v1/users/{id}")).timeout(TIMEOUT).build().unwrap();
    let body = fetcher.fetch("7").await.unwrap();
    assert_eq!(body.get(), r#"{"name": "Ada"}"#);
    assert_eq!(server.only_head().line, "GET /v1/users/7 HTTP/1.1");
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn a_custom_tls_config_is_used_for_https() {
    use muster_adapters::http::{HttpClient, HttpError};
    use tokio::sync::mpsc;

    let (hello_tx, mut hello_rx) = mpsc::unbounded_channel();
    let server = Server::start(move |mut conn| {
        let hello_tx = hello_tx.clone();
        async move {
            use tokio::io::AsyncReadExt;
            let mut first = [0; 1];
            let _ = conn.stream.read_exact(&mut first).await;
            let _ = hello_tx.send(first[0]);
        }
    })
    .await;
    // Trusts no root at all: the handshake must start, and cannot succeed.
    let config =
        rustls::ClientConfig::builder().with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth();
    let client = HttpClient::builder().tls_config(config).build().unwrap();
    assert!(format!("{client:?}").starts_with("HttpClient"));
    let fetcher = HttpFetcher::builder(&format!("https://{}/v1/users/{{id}}", server.addr))
        .client(client)
        .timeout(TIMEOUT)
        .build()
        .unwrap();
    let error = fetcher.fetch("7").await.unwrap_err();
    assert!(matches!(error, HttpError::Connect { .. }), "{error:?}");
    assert_eq!(hello_rx.recv().await, Some(0x16), "the first byte is a TLS handshake record");
}
