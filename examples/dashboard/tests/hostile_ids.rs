//! Hostile user ids through the whole dashboard: whatever the id holds (`/`, `..`, `?`, `#`,
//! `%`, CR/LF, ten thousand characters), the backend request goes to `/profile/<one segment>`
//! whose decoded value is exactly the id the dashboard decoded, with the query untouched.

mod support;

use std::time::Duration;

use dashboard::Stats;
use dashboard::demo::Recorded;
use dashboard::limits::Limits;
use support::{Dashboard, get, percent_decode};

/// Ids as sent on the dashboard's request line (still encoded), and as axum decodes them.
fn hostile_ids() -> Vec<(String, String)> {
    let pairs = [
        ("..%2Fadmin", "../admin"),
        ("a%2Fb", "a/b"),
        ("%2e%2e", ".."),
        ("%2E", "."),
        ("x%3Fy%3D1", "x?y=1"),
        ("a%23b", "a#b"),
        ("%2e%2e%2f%2e%2e%2fadmin%3Fx%3D1%23top", "../../admin?x=1#top"),
        ("100%25", "100%"),
        ("%252F", "%2F"),
        ("a%0D%0AHost:%20evil", "a\r\nHost: evil"),
        ("a%20b+c", "a b+c"),
        ("%C3%A9t%C3%A9", "été"),
        ("@evil.example:80", "@evil.example:80"),
    ];
    let mut ids: Vec<(String, String)> = pairs.iter().map(|(raw, id)| ((*raw).to_owned(), (*id).to_owned())).collect();
    // Ten thousand characters of `../`.
    ids.push(("..%2F".repeat(3333) + "x", "../".repeat(3333) + "x"));
    ids
}

/// The one request `backend` received with this request id.
fn received(stats: &Stats, request_id: &str) -> Recorded {
    let requests = stats.requests();
    let mut matching = requests.iter().filter(|request| request.request_id.as_deref() == Some(request_id));
    match (matching.next(), matching.next()) {
        (Some(request), None) => request.clone(),
        _ => panic!("expected one request with id {request_id}, got {requests:?}"),
    }
}

/// Checks that `target` is `/{service}/<segment>?<query>`, with a segment that decodes to `id`
/// and the query the template made.
fn assert_one_segment(target: &str, service: &str, id: &str) {
    let query = "delay_ms=&fail=&fail_rate=";
    let (path, rest) = target.split_once('?').unwrap_or_else(|| panic!("no query in {target:?}"));
    assert_eq!(rest, query, "the id changed the query of {target:?}");
    let segment = path.strip_prefix(&format!("/{service}/")).unwrap_or_else(|| panic!("wrong path {path:?}"));
    assert!(!segment.contains(['/', '?', '#']), "the id is more than one segment: {segment:?}");
    assert!(segment != "." && segment != "..", "the id became a dot segment: {segment:?}");
    assert!(segment.bytes().all(|byte| byte.is_ascii_graphic()), "raw bytes on the request line: {segment:?}");
    assert_eq!(percent_decode(segment), id.as_bytes(), "{segment:?} does not decode to the id");
}

#[tokio::test]
async fn hostile_ids_stay_one_path_segment_of_the_backend_request() {
    // The ten-thousand-character id is longer than the default limit: raise it.
    let limits = Limits { max_id_len: 32 * 1024, ..Limits::default() };
    let dashboard = Dashboard::start_with(Duration::from_secs(5), limits).await;

    for (i, (raw, id)) in hostile_ids().into_iter().enumerate() {
        let request_id = format!("hostile-{i}");
        let shown = if id.len() > 40 { format!("{}... ({} chars)", &id[..40], id.len()) } else { id.clone() };

        let reply = get(dashboard.addr, &format!("/dashboard/{raw}"), &[("x-request-id", &request_id)]).await;

        assert_eq!(reply.status, 200, "id {shown:?}: {}", reply.body);
        let body = reply.json();
        assert_eq!(body["profile"]["id"], id.as_str(), "id {shown:?}");
        assert_eq!(body["transactions"]["id"], id.as_str(), "id {shown:?}");
        for (service, stats) in
            [("profile", dashboard.profile.stats()), ("transactions", dashboard.transactions.stats())]
        {
            let request = received(stats, &request_id);
            assert_eq!(request.id, id, "{service} decoded another id than the dashboard");
            assert_one_segment(&request.target, service, &id);
        }
    }
}

#[tokio::test]
async fn an_id_that_is_not_utf8_is_refused_before_any_backend_call() {
    let dashboard = Dashboard::start(Duration::from_secs(5)).await;

    for raw in ["%FF", "a%C3", "%ED%A0%80"] {
        let reply = dashboard.get(&format!("/dashboard/{raw}")).await;

        assert_eq!(reply.status, 400, "{raw}: {reply:?}");
        assert_eq!(reply.json()["kind"], "bad_request", "{raw}");
        // Our words, not axum's rejection text ("Invalid URL: Invalid UTF-8 in `user_id`").
        assert_eq!(reply.json()["error"], "the user id must be valid UTF-8", "{raw}");
    }
    assert_eq!(dashboard.profile.stats().started() + dashboard.transactions.stats().started(), 0);
}

#[tokio::test]
async fn knobs_cannot_inject_into_the_backend_query() {
    let dashboard = Dashboard::start(Duration::from_secs(5)).await;

    let reply = get(dashboard.addr, "/dashboard/42?profile_fail=0%26fail%3D1", &[("x-request-id", "knob")]).await;

    // `0&fail=1` is one value: the backend refuses it as a bad knob instead of failing on purpose.
    assert_eq!(reply.status, 502, "{reply:?}");
    let request = received(dashboard.profile.stats(), "knob");
    let (_, query) = request.target.split_once('?').expect("a query");
    let pairs: Vec<(&str, Vec<u8>)> = query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .map(|(name, value)| (name, percent_decode(value)))
        .collect();
    let expected = [("delay_ms", b"".to_vec()), ("fail", b"0&fail=1".to_vec()), ("fail_rate", b"".to_vec())];
    assert_eq!(pairs, expected, "{}", request.target);
}

#[tokio::test]
async fn an_id_over_the_limit_is_414_for_the_client_before_any_backend_call() {
    let dashboard = Dashboard::start(Duration::from_secs(5)).await;
    let default = Limits::default().max_id_len;

    for id in ["x".repeat(30_000), "%2F".repeat(default / 3 + 1), "a".repeat(default + 1)] {
        let reply = dashboard.get(&format!("/dashboard/{id}")).await;

        assert_eq!(reply.status, 414, "{} bytes: {reply:?}", id.len());
        let body = reply.json();
        assert_eq!(body["kind"], "bad_request", "{body}");
        assert_eq!(body["source"], serde_json::Value::Null, "no backend is blamed: {body}");
        let request_id = reply.header("x-request-id").expect("answered with a request id");
        assert_eq!(body["request_id"], request_id, "{body}");
    }
    let at_the_limit = dashboard.get(&format!("/dashboard/{}", "a".repeat(default))).await;
    assert_eq!(at_the_limit.status, 200, "{at_the_limit:?}");
    assert_eq!(dashboard.profile.stats().started() + dashboard.transactions.stats().started(), 2, "only the last one");
}
