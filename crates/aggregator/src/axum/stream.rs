//! Streamed responses: each source's section the moment it completes, then the outcome.

use std::any::Any;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use ::axum::body::{Body, Bytes};
use ::axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use ::axum::response::{IntoResponse, Response};
use futures_util::Stream;
use muster_core::{Name, Outputs};
use serde::Serialize;

use super::{Answer, ErrorBody};

use crate::aggregator::Aggregator;
use crate::call::Ready;
use crate::context::RequestContext;
use crate::error::AggregateError;
use crate::sources::SourceOutputs;

/// How a streamed response frames its lines.
///
/// ```
/// use axum::http::{HeaderMap, HeaderValue, header};
/// use muster::axum::Format;
///
/// let mut headers = HeaderMap::new();
/// headers.insert(header::ACCEPT, HeaderValue::from_static("text/html, text/event-stream;q=0.9"));
/// assert_eq!(Format::requested(&headers), Some(Format::EventStream));
/// assert_eq!(Format::requested(&HeaderMap::new()), None);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Format {
    /// `application/x-ndjson`: one JSON object per line.
    Ndjson,
    /// `text/event-stream`: server-sent events, the same JSON as `data:`, with `event: section`
    /// or `event: end`.
    EventStream,
}

impl Format {
    /// The streaming format the client asked for in `Accept`, if any (NDJSON first when it
    /// names both).
    pub fn requested(headers: &HeaderMap) -> Option<Self> {
        let accept = headers.get_all(header::ACCEPT).iter().filter_map(|value| value.to_str().ok());
        let types: Vec<&str> =
            accept.flat_map(|value| value.split(',')).map(|part| part.split(';').next().unwrap_or("").trim()).collect();
        if types.iter().any(|kind| kind.eq_ignore_ascii_case("application/x-ndjson")) {
            Some(Self::Ndjson)
        } else if types.iter().any(|kind| kind.eq_ignore_ascii_case("text/event-stream")) {
            Some(Self::EventStream)
        } else {
            None
        }
    }

    /// The response's `content-type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Ndjson => "application/x-ndjson",
            Self::EventStream => "text/event-stream",
        }
    }

    /// Appends `json` (one compact JSON object) to `out` as one framed line.
    fn frame(self, event: &str, json: &[u8], out: &mut Vec<u8>) {
        if self == Self::EventStream {
            out.extend_from_slice(b"event: ");
            out.extend_from_slice(event.as_bytes());
            out.extend_from_slice(b"\ndata: ");
        }
        out.extend_from_slice(json);
        out.extend_from_slice(if self == Self::EventStream { b"\n\n" } else { b"\n" });
    }
}

/// One section's line: `{"section": name, "status": "ok" | "fallback", "body": output}`.
#[derive(Serialize)]
struct Section<'a, T: ?Sized> {
    section: &'a str,
    status: &'static str,
    body: &'a T,
}

/// A section that has no body: its source failed (`kind` says how), or its output did not
/// serialize (`unserializable`).
#[derive(Serialize)]
struct Missing<'a> {
    section: &'a str,
    status: &'static str,
    kind: &'a str,
}

/// Outputs whose sections a streamed response can write: every source's output serializes, and
/// the aggregator's output types say, for each position, which type it is. That is what lets a
/// section carry its source's own serializer: the type is the one the aggregator was built with,
/// named once, at [`source`](crate::builder::AggregatorBuilder::source), never again. Implemented for
/// tuples (up to 12) of `Serialize` outputs, `()`, and [`Outputs<T>`](crate::group::Outputs) of a
/// `Serialize` `T`; not meant to be implemented elsewhere.
#[diagnostic::on_unimplemented(
    message = "the outputs `{Self}` cannot be streamed as JSON sections",
    label = "every source's output must implement `serde::Serialize`",
    note = "an aggregator's outputs are a tuple of its sources' outputs, or `muster::group::Outputs<T>`"
)]
pub trait SerializeSections: Send + 'static {
    /// The JSON of the section of the source at `index`, whose output is `output`: `None`
    /// if `output` is not that source's output type.
    #[doc(hidden)]
    fn section(index: usize, name: &str, status: &'static str, output: &dyn Any)
    -> Option<serde_json::Result<Vec<u8>>>;
}

fn section<T: Serialize + 'static>(
    name: &str,
    status: &'static str,
    output: &dyn Any,
) -> Option<serde_json::Result<Vec<u8>>> {
    let body = output.downcast_ref::<T>()?;
    Some(serde_json::to_vec(&Section { section: name, status, body }))
}

impl SerializeSections for () {
    fn section(_: usize, _: &str, _: &'static str, _: &dyn Any) -> Option<serde_json::Result<Vec<u8>>> {
        None
    }
}

impl<T: Serialize + Send + 'static> SerializeSections for Outputs<T> {
    fn section(_: usize, name: &str, status: &'static str, output: &dyn Any) -> Option<serde_json::Result<Vec<u8>>> {
        section::<T>(name, status, output)
    }
}

macro_rules! serialize_sections {
    ($($T:ident $i:tt),+) => {
        impl<$($T: Serialize + Send + 'static),+> SerializeSections for ($($T,)+) {
            fn section(index: usize, name: &str, status: &'static str, output: &dyn Any) -> Option<serde_json::Result<Vec<u8>>> {
                match index {
                    $($i => section::<$T>(name, status, output),)+
                    _ => None,
                }
            }
        }
    };
}

serialize_sections!(A 0);
serialize_sections!(A 0, B 1);
serialize_sections!(A 0, B 1, C 2);
serialize_sections!(A 0, B 1, C 2, D 3);
serialize_sections!(A 0, B 1, C 2, D 3, E 4);
serialize_sections!(A 0, B 1, C 2, D 3, E 4, F 5);
serialize_sections!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
serialize_sections!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
serialize_sections!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
serialize_sections!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
serialize_sections!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
serialize_sections!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

/// The line `ready` is sent as, framed in `format`.
fn section_line<O: SerializeSections>(format: Format, ready: &Ready<'_>, out: &mut Vec<u8>) {
    let name = ready.name();
    let json = match ready.value {
        Ok(output) => {
            let status = if ready.is_fallback() { "fallback" } else { "ok" };
            match O::section(ready.index(), name, status, output) {
                Some(Ok(json)) => Ok(json),
                Some(Err(error)) => {
                    tracing::error!(source = name, error = %error, "a streamed section does not serialize");
                    serde_json::to_vec(&Missing { section: name, status: "error", kind: "unserializable" })
                }
                // The outputs' type gives every source's own: this cannot be, but says so if it is.
                None => {
                    tracing::error!(source = name, "a streamed section's output is not its source's type");
                    serde_json::to_vec(&Missing { section: name, status: "error", kind: "unserializable" })
                }
            }
        }
        Err(error) => {
            let kind = muster_core::Classify::kind(&**error);
            serde_json::to_vec(&Missing { section: name, status: "failed", kind: kind.as_str() })
        }
    };
    if let Ok(json) = json {
        format.frame("section", &json, out);
    }
}

/// The last line: `{"outcome": "ok"}` (with `"partial": true` when a fallback stands in and
/// `"stale": [..]` when a stale value does), or `{"outcome": "failed", "status": 502, ..}` with
/// the fields of the error response ([`error_body`](super::error_body)).
#[derive(Serialize)]
struct EndLine<'a> {
    outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    partial: bool,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stale: &'a [Name],
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    error: Option<ErrorBody<'a>>,
}

/// Writes the last line for `result` to `out`, and says how the stream ended.
fn end_line<O>(format: Format, result: &Result<crate::Aggregate<O>, AggregateError>, out: &mut Vec<u8>) -> StreamEnd {
    let (json, end) = match result {
        Ok(aggregate) => {
            let stale: Vec<Name> = (aggregate.report.sources.iter())
                .filter(|source| source.stale.is_some())
                .map(|source| source.name.clone())
                .collect();
            let line =
                EndLine { outcome: "ok", status: None, partial: aggregate.is_partial(), stale: &stale, error: None };
            let json = serde_json::to_vec(&line);
            let answer = Answer { source: None, kind: "ok" };
            (json, StreamEnd { status: Some(StatusCode::OK), answer, stale })
        }
        Err(error) => {
            let (status, body) = super::error_parts(error);
            let answer = body.answer();
            let line = EndLine {
                outcome: "failed",
                status: Some(status.as_u16()),
                partial: false,
                stale: &[],
                error: Some(body),
            };
            (serde_json::to_vec(&line), StreamEnd { status: Some(status), answer, stale: Vec::new() })
        }
    };
    let json = json.unwrap_or_else(|_| br#"{"outcome":"failed"}"#.to_vec());
    format.frame("end", &json, out);
    end
}

/// How a streamed response ended: what its last line said, or that the client went away
/// first. [`StreamOutcome::on_end`] hands it over.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StreamEnd {
    /// The status the last line carries: `200`, or the [error response](super#responses)'s
    /// (`502` for a failed source, `504` for the deadline, ...). `None` when the client went
    /// away before the end: no last line was sent, and the aggregation was dropped, which
    /// cancelled every source still running.
    pub status: Option<StatusCode>,
    /// What the last line says, as a response's [`Answer`] would: the source that failed and
    /// the kind, `ok` for a success; `cancelled` (no source) when the client went away.
    pub answer: Answer,
    /// The sources a stale value answered for (a [`Cache`](crate::policy::Cache)'s
    /// `stale_if_error`), as the last line lists them.
    pub stale: Vec<Name>,
}

impl StreamEnd {
    /// The end of a stream whose client went away before its last line.
    fn client_gone() -> Self {
        Self { status: None, answer: Answer { source: None, kind: "cancelled" }, stale: Vec::new() }
    }
}

/// The outcome of a streamed response, in its extensions: [`on_end`](Self::on_end) hears how
/// the stream ended, for an access log or a metrics middleware around the handler (the status
/// line, `200`, goes out before the outcome is known). Clones share the one outcome.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use axum::http::StatusCode;
/// use muster::axum::{Format, StreamOutcome};
/// use muster::{Aggregator, RequestContext, fetcher_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let failing = fetcher_fn(|_: &u64| async { Err::<u64, _>(std::io::Error::other("down")) });
/// let aggregator = Aggregator::builder().source("balance", failing).build()?;
/// let response = muster::axum::stream(&aggregator, 7, RequestContext::new(), Format::Ndjson);
///
/// // What a middleware around the handler does with the response.
/// let heard = Arc::new(Mutex::new(None));
/// if let Some(outcome) = response.extensions().get::<StreamOutcome>() {
///     let heard = Arc::clone(&heard);
///     outcome.on_end(move |end| *heard.lock().unwrap() = Some((end.status, end.answer.source.clone(), end.answer.kind)));
/// }
/// assert!(heard.lock().unwrap().is_none(), "nothing is sent yet");
/// axum::body::to_bytes(response.into_body(), 1 << 16).await?;
/// let heard = heard.lock().unwrap().take();
/// assert_eq!(heard, Some((Some(StatusCode::BAD_GATEWAY), Some("balance".into()), "failed")));
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct StreamOutcome(Arc<Mutex<Ending>>);

/// A listener of [`StreamOutcome::on_end`].
type Listener = Box<dyn FnOnce(&StreamEnd) + Send>;

/// The end once it is known, and who is waiting for it.
#[derive(Default)]
struct Ending {
    end: Option<StreamEnd>,
    listeners: Vec<Listener>,
}

impl StreamOutcome {
    /// Calls `listener` once with how the stream ended: when its last line is written or its
    /// body is dropped before that (the client went away), or at once if that has happened.
    /// It runs on the task that drives (or drops) the response body: keep it short.
    pub fn on_end(&self, listener: impl FnOnce(&StreamEnd) + Send + 'static) {
        let mut ending = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match ending.end.clone() {
            Some(end) => {
                drop(ending);
                listener(&end);
            }
            None => ending.listeners.push(Box::new(listener)),
        }
    }

    /// Records `end` and tells the listeners; the first end is the one.
    fn end(&self, end: StreamEnd) {
        let mut ending = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if ending.end.is_some() {
            return;
        }
        let listeners = std::mem::take(&mut ending.listeners);
        ending.end = Some(end.clone());
        drop(ending);
        for listener in listeners {
            listener(&end);
        }
    }
}

impl fmt::Debug for StreamOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ending = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("StreamOutcome").field("end", &ending.end).field("listeners", &ending.listeners.len()).finish()
    }
}

/// Streams `aggregator`'s aggregation of `request` as a response: `200` with the `format`'s
/// content type, one line per source the moment it completes, in completion order, then one
/// line with the outcome.
///
/// NDJSON, one JSON object per line (server-sent events carry the same JSON as `data:`, with
/// `event: section` or `event: end`):
///
/// ```text
/// {"section":"profile","status":"ok","body":{"name":"Ada"}}
/// {"section":"offers","status":"fallback","body":[]}
/// {"section":"balance","status":"failed","kind":"status"}
/// {"outcome":"failed","status":502,"error":"source `balance` failed (status)","source":"balance","kind":"status","request_id":null}
/// ```
///
/// - A section's `status` is `ok`, `fallback` (an optional source's fallback stands in; its
///   `body` is the fallback, `null` for an omitted [`Optional`](crate::Optional)), or `failed`
///   with the error's `kind` and no body (no error text: as the error responses, it says which
///   source and how, nothing internal).
/// - Each section's body is its source's output, serialized with the output's own type, which
///   the aggregator's type carries: nothing to name, nothing to downcast.
/// - The last line is `{"outcome":"ok"}` (with `"partial":true` when a fallback stands in, and
///   `"stale":[<names>]` when a stale cached value answered for a source), or
///   `"outcome":"failed"` with the HTTP status and the fields of the
///   [error response](super#responses) (which source failed and how, or the deadline with the
///   pending sources; the same body as the unstreamed 502 or 504, request id included). The
///   status line is `200` either way: it is sent before the outcome is known.
/// - The headers say not to cache or buffer the lines (`cache-control: no-cache`,
///   `x-accel-buffering: no`).
///
/// The response body owns the aggregation and drives it: nothing is spawned. A client that goes
/// away drops the body, which drops the aggregation and cancels every source still running.
/// The deadline (the aggregator's, or `context`'s if tighter) ends the stream with its outcome
/// line. A [`RequestContext::on_ready`] callback already in `context` is still called, first.
/// The response's extensions hold a [`StreamOutcome`], which tells a middleware (an access
/// log) how the stream ended, or that the client went away first.
///
/// ```
/// use std::time::Duration;
/// use axum::Router;
/// use axum::extract::{Path, State};
/// use axum::http::HeaderMap;
/// use axum::response::Response;
/// use axum::routing::get;
/// use muster::axum::Format;
/// use muster::{Aggregator, Deadline, RequestContext, fetcher_fn};
///
/// type Dashboard = Aggregator<u64, (String, u64, Vec<String>)>;
///
/// async fn dashboard(State(aggregator): State<Dashboard>, Path(id): Path<u64>, headers: HeaderMap) -> Response {
///     let format = Format::requested(&headers).unwrap_or(Format::Ndjson);
///     muster::axum::stream(&aggregator, id, RequestContext::new().field("user_id", id), format)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let aggregator: Dashboard = Aggregator::builder()
///     .source("profile", fetcher_fn(|id: &u64| { let id = *id; async move { Ok::<_, std::io::Error>(format!("user {id}")) } }))
///     .source("balance", fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(1250_u64) }))
///     .source("offers", fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(vec!["gold".to_owned()]) }))
///     .options(Deadline(Duration::from_secs(1)))
///     .build()?;
/// let app: Router = Router::new().route("/dashboard/{id}", get(dashboard)).with_state(aggregator);
/// # use tower::ServiceExt as _;
/// # let request = axum::http::Request::get("/dashboard/7").body(axum::body::Body::empty())?;
/// # let body = axum::body::to_bytes(app.oneshot(request).await?.into_body(), 1 << 16).await?;
/// # let body = String::from_utf8(body.to_vec())?;
/// # assert!(body.contains(r#"{"section":"profile","status":"ok","body":"user 7"}"#), "{body}");
/// # assert!(body.ends_with("{\"outcome\":\"ok\"}\n"), "{body}");
/// # Ok(()) }
/// ```
pub fn stream<Req, O>(
    aggregator: &Aggregator<Req, O>,
    request: Req,
    context: RequestContext,
    format: Format,
) -> Response
where
    Req: Send + Sync + 'static,
    O: SourceOutputs<Req> + SerializeSections,
{
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&lines);
    let mut context = context;
    let theirs = context.on_ready.take();
    let context = context.on_ready(move |ready| {
        if let Some(theirs) = &theirs {
            theirs(ready);
        }
        section_line::<O>(format, &ready, &mut sink.lock().unwrap_or_else(PoisonError::into_inner));
    });
    let aggregator = aggregator.clone();
    let aggregation = async move {
        let result = aggregator.aggregate_with(&request, context).await;
        let mut last = Vec::new();
        let end = end_line(format, &result, &mut last);
        (last, end)
    };
    let outcome = StreamOutcome::default();
    let body = Body::from_stream(Lines { lines, aggregation: Some(Box::pin(aggregation)), outcome: outcome.clone() });
    let mut response = (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(format.content_type())),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            // A proxy such as nginx would otherwise hold the lines back until it has a buffer's worth.
            (HeaderName::from_static("x-accel-buffering"), HeaderValue::from_static("no")),
        ],
        body,
    )
        .into_response();
    response.extensions_mut().insert(outcome);
    response
}

/// The aggregation's future: its last line and how it ended.
type Aggregation = Pin<Box<dyn Future<Output = (Vec<u8>, StreamEnd)> + Send>>;

/// The body: drives the aggregation and sends the lines its sources wrote while it was polled.
struct Lines {
    /// The sections written by the `on_ready` callback. It runs inside the aggregation's poll
    /// (the sources are polled by the aggregation's own future), so after each poll every
    /// section of that poll is here, and no other waker is needed.
    lines: Arc<Mutex<Vec<u8>>>,
    /// The aggregation, until it has ended.
    aggregation: Option<Aggregation>,
    /// Told how the stream ended.
    outcome: StreamOutcome,
}

impl Stream for Lines {
    type Item = Result<Bytes, Infallible>;

    /// Every line ready now goes out in one chunk: sections that complete together (and the
    /// last line, when the aggregation has ended) cost one write.
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let Some(aggregation) = self.aggregation.as_mut() else { return Poll::Ready(None) };
        let last = match aggregation.as_mut().poll(cx) {
            Poll::Ready(last) => Some(last),
            Poll::Pending => None,
        };
        let mut chunk = std::mem::take(&mut *self.lines.lock().unwrap_or_else(PoisonError::into_inner));
        if let Some((last, end)) = last {
            // Its sections are written already: they go first.
            self.aggregation = None;
            chunk.extend_from_slice(&last);
            self.outcome.end(end);
        }
        if chunk.is_empty() { Poll::Pending } else { Poll::Ready(Some(Ok(Bytes::from(chunk)))) }
    }
}

impl Drop for Lines {
    /// Dropped before its end (the client went away): the aggregation is dropped first, which
    /// cancels every source still running, then the outcome says so.
    fn drop(&mut self) {
        if self.aggregation.take().is_some() {
            self.outcome.end(StreamEnd::client_gone());
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
        assert_eq!(accept("text/event-stream, application/x-ndjson"), Some(Format::Ndjson));
        assert_eq!(accept("application/json"), None);
        assert_eq!(Format::requested(&HeaderMap::new()), None);
    }

    #[test]
    fn lines_are_framed() {
        let mut out = Vec::new();
        Format::Ndjson.frame("end", br#"{"outcome":"ok"}"#, &mut out);
        Format::EventStream.frame("end", br#"{"outcome":"ok"}"#, &mut out);
        assert_eq!(out, b"{\"outcome\":\"ok\"}\nevent: end\ndata: {\"outcome\":\"ok\"}\n\n");
    }

    #[test]
    fn a_section_is_serialized_with_its_sources_type() {
        type O = (String, u64);
        let json = |index, output: &dyn Any| {
            <O as SerializeSections>::section(index, "s", "ok", output).map(|json| json.ok().map(String::from_utf8))
        };
        assert_eq!(json(1, &7_u64), Some(Some(Ok(r#"{"section":"s","status":"ok","body":7}"#.to_owned()))));
        assert_eq!(json(0, &7_u64), None);
        assert_eq!(json(2, &7_u64), None);
    }

    #[test]
    fn the_outcome_tells_every_listener_once_the_first_end_before_or_after_it_listens() {
        let outcome = StreamOutcome::default();
        let heard = Arc::new(Mutex::new(Vec::new()));
        let listen = |who: &'static str| {
            let heard = Arc::clone(&heard);
            move |end: &StreamEnd| heard.lock().unwrap().push((who, end.status, end.answer.kind))
        };
        outcome.on_end(listen("before"));
        assert!(heard.lock().unwrap().is_empty());
        outcome.end(StreamEnd::client_gone());
        outcome.end(StreamEnd {
            status: Some(StatusCode::OK),
            answer: Answer { source: None, kind: "ok" },
            stale: Vec::new(),
        });
        outcome.clone().on_end(listen("after"));
        assert_eq!(*heard.lock().unwrap(), [("before", None, "cancelled"), ("after", None, "cancelled")]);
    }
}
