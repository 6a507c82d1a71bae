//! Streaming sections: `GET /dashboard/{id}` with `Accept: application/x-ndjson` (or
//! `text/event-stream`) sends each section the moment its source completes, then a final line
//! with the outcome.
//!
//! NDJSON, one JSON object per line:
//!
//! ```text
//! {"section":"profile","status":"ok","body":{...}}
//! {"section":"offers","status":"fallback","body":[]}
//! {"section":"transactions","status":"ok","body":{...}}
//! {"outcome":"ok"}
//! ```
//!
//! A failure or the deadline ends the stream with the error line instead of `{"outcome":"ok"}`:
//! `{"outcome":"failed","error":...,"source":"transactions","kind":"status",...}`, the same
//! fields as the 502/504 body. The status is 200 either way (it is sent before the outcome is
//! known); the last line says how it ended. Server-sent events carry the same JSON as `data:`,
//! with `event: section` or `event: end`.
//!
//! The aggregation is driven by the response body itself: a client that goes away drops the
//! body, which drops the aggregation and cancels what is in flight.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use muster::report::Ready;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// How sections are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `application/x-ndjson`: one JSON object per line.
    Ndjson,
    /// `text/event-stream`: server-sent events.
    EventStream,
}

impl Format {
    /// The streaming format the client asked for in `Accept`, if any.
    pub fn requested(headers: &HeaderMap) -> Option<Self> {
        let accept = headers.get(header::ACCEPT)?.to_str().ok()?;
        let types = || accept.split(',').map(|part| part.split(';').next().unwrap_or("").trim());
        if types().any(|kind| kind.eq_ignore_ascii_case("application/x-ndjson")) {
            Some(Self::Ndjson)
        } else if types().any(|kind| kind.eq_ignore_ascii_case("text/event-stream")) {
            Some(Self::EventStream)
        } else {
            None
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::EventStream => "text/event-stream",
        }
    }

    /// `value` as one framed line: `{..}\n`, or `event: NAME\ndata: {..}\n\n`.
    pub fn line<T: Serialize>(self, event: &str, value: &T) -> Bytes {
        let json = serde_json::to_vec(value).unwrap_or_else(|_| b"{\"outcome\":\"failed\"}".to_vec());
        let mut line = Vec::with_capacity(json.len() + 24);
        if self == Self::EventStream {
            line.extend_from_slice(format!("event: {event}\ndata: ").as_bytes());
        }
        line.extend_from_slice(&json);
        line.extend_from_slice(if self == Self::EventStream { b"\n\n" } else { b"\n" });
        Bytes::from(line)
    }
}

/// One section: a source's body as it came, the moment the source completed.
#[derive(Serialize)]
struct Section<'a> {
    section: &'a str,
    /// `ok`, or `fallback` when an optional source's fallback stands in.
    status: &'static str,
    body: &'a RawValue,
}

/// The `on_ready` callback that sends every successful section into `lines`.
pub fn sections(format: Format, lines: UnboundedSender<Bytes>) -> impl Fn(Ready<'_>) + Send + Sync + 'static {
    move |ready: Ready<'_>| {
        if let Some(body) = ready.value::<Box<RawValue>>() {
            let status = if ready.is_fallback() { "fallback" } else { "ok" };
            // A closed channel means the client went away: the aggregation is being dropped.
            let _ = lines.send(format.line("section", &Section { section: ready.name(), status, body }));
        }
    }
}

/// The streaming response: the sections from `lines` as they come, then the line the
/// `aggregation` future ends with.
pub fn response<F>(format: Format, lines: UnboundedReceiver<Bytes>, aggregation: F) -> Response
where
    F: Future<Output = End> + Send + 'static,
{
    let log = DeferredLog::default();
    let sections = Sections { lines, aggregation: Some(Box::pin(aggregation)), last: None, log: log.clone() };
    let body = Body::from_stream(sections);
    let content_type = HeaderValue::from_static(format.content_type());
    let mut response = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, HeaderValue::from_static("no-cache"))],
        body,
    )
        .into_response();
    response.extensions_mut().insert(log);
    response
}

/// How a streamed aggregation ended: its last line, and what the access log says of it.
#[derive(Debug)]
pub struct End {
    /// The last line, with the outcome.
    pub line: Bytes,
    /// The status the aggregation would have answered unstreamed (200, or the failure's).
    pub status: StatusCode,
    /// The source that failed it, if one did.
    pub source: Option<String>,
    /// The failure's kind, if any.
    pub kind: Option<String>,
}

/// The access log line of a streamed answer: the server fills in the request's side when the
/// head goes out (see `app::answered`), the stream logs it when the aggregation ends, with
/// its real status and the whole time taken (or, dropped before, as `499` `cancelled`: the
/// client went away).
#[derive(Clone, Debug, Default)]
pub(crate) struct DeferredLog(Arc<Mutex<Deferred>>);

#[derive(Debug, Default)]
struct Deferred {
    request: Option<Pending>,
    end: Option<(u16, Option<String>, Option<String>)>,
}

#[derive(Debug)]
struct Pending {
    method: Method,
    path: String,
    request_id: String,
    user_id: Option<String>,
    started: Instant,
}

impl DeferredLog {
    /// The request's side of the line; logs it now if the stream has ended already.
    pub(crate) fn defer(&self, method: &Method, path: &str, request_id: &str, user_id: Option<&str>, started: Instant) {
        let pending = Pending {
            method: method.clone(),
            path: path.to_owned(),
            request_id: request_id.to_owned(),
            user_id: user_id.map(str::to_owned),
            started,
        };
        let mut deferred = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        deferred.request = Some(pending);
        Self::log_if_complete(&mut deferred);
    }

    /// The stream's side of the line.
    fn end(&self, status: u16, source: Option<String>, kind: Option<String>) {
        let mut deferred = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if deferred.end.is_none() {
            deferred.end = Some((status, source, kind));
        }
        Self::log_if_complete(&mut deferred);
    }

    fn log_if_complete(deferred: &mut Deferred) {
        if deferred.request.is_none() || deferred.end.is_none() {
            return;
        }
        let (Some(request), Some((status, source, kind))) = (deferred.request.take(), deferred.end.take()) else {
            return;
        };
        crate::stats::stats().answered(status);
        crate::logging::access(&crate::logging::AccessLine {
            method: request.method.as_str(),
            path: &request.path,
            status,
            elapsed_ms: request.started.elapsed().as_millis() as u64,
            request_id: &request.request_id,
            user_id: request.user_id.as_deref(),
            source: source.as_deref(),
            kind: kind.as_deref(),
        });
    }
}

struct Sections<F> {
    lines: UnboundedReceiver<Bytes>,
    aggregation: Option<Pin<Box<F>>>,
    /// The final line, once the aggregation has ended, sent after every section.
    last: Option<Bytes>,
    /// The access log line, written when the aggregation ends.
    log: DeferredLog,
}

impl<F> Drop for Sections<F> {
    fn drop(&mut self) {
        // Dropped before the end: the client went away (logged once; a no-op after the end).
        self.log.end(499, None, Some("cancelled".to_owned()));
    }
}

impl<F: Future<Output = End>> Stream for Sections<F> {
    type Item = Result<Bytes, std::convert::Infallible>;

    /// Every line ready now goes out in one chunk: sections that complete together (and the
    /// last line, when the aggregation has ended) cost one write.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if let Some(aggregation) = self.aggregation.as_mut() {
            if let Poll::Ready(end) = aggregation.as_mut().poll(cx) {
                // Its sections are in the channel already: they go first.
                self.aggregation = None;
                self.log.end(end.status.as_u16(), end.source, end.kind);
                self.last = Some(end.line);
            }
        }
        let mut chunk = Vec::new();
        while let Poll::Ready(Some(line)) = self.lines.poll_recv(cx) {
            chunk.extend_from_slice(&line);
        }
        if self.aggregation.is_none() {
            if let Some(last) = self.last.take() {
                chunk.extend_from_slice(&last);
            }
        }
        match (chunk.is_empty(), self.aggregation.is_none()) {
            (false, _) => Poll::Ready(Some(Ok(Bytes::from(chunk)))),
            (true, true) => Poll::Ready(None),
            (true, false) => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_comes_from_accept() {
        let accept = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_static(value));
            Format::requested(&headers)
        };
        assert_eq!(accept("application/x-ndjson"), Some(Format::Ndjson));
        assert_eq!(accept("text/html, text/event-stream;q=0.9"), Some(Format::EventStream));
        assert_eq!(accept("application/json"), None);
        assert_eq!(Format::requested(&HeaderMap::new()), None);
    }

    #[test]
    fn lines_are_framed() {
        let value = serde_json::json!({"outcome": "ok"});
        assert_eq!(Format::Ndjson.line("end", &value), Bytes::from_static(b"{\"outcome\":\"ok\"}\n"));
        assert_eq!(
            Format::EventStream.line("end", &value),
            Bytes::from_static(b"event: end\ndata: {\"outcome\":\"ok\"}\n\n")
        );
    }
}
