//! Per-request context: what varies per call of a shared aggregator.

use std::fmt;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use muster_core::{CancelToken, Name};

use crate::call::{OnReady, Ready};
use tracing::callsite::{Callsite, Identifier};
use tracing::field::{Field, FieldSet, Value};
use tracing::metadata::Kind;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Span};

/// What varies per request, for one call of a shared [`Aggregator`](crate::Aggregator):
/// context fields (user id, request id, anything), the caller's `traceparent` and headers to
/// forward, a tighter deadline, a parent cancellation and a parent span. Pass it to
/// [`aggregate_with`](crate::Aggregator::aggregate_with).
///
/// The fields reach every span and log line of the aggregation as separate structured fields
/// (the `aggregate` span has one field per context field: `user_id=42 request_id=r-1`), and
/// the [`Report`](crate::report::Report) and the [`AggregateError`](crate::AggregateError) carry them,
/// so a failure says for which request it happened.
///
/// Every source (and policy) reads the request's fields, request id, `traceparent` and
/// headers inside `fetch` with [`muster::context()`](crate::context): the aggregator makes
/// that [`Context`](crate::Context) once per call. So a source's own request type needs only
/// what the source's URL or query needs; the HTTP fetcher sends `x-request-id`, `traceparent`
/// and its allow-listed forwarded headers from there.
///
/// ```
/// use std::time::Duration;
/// use muster::{Aggregator, Deadline, RequestContext, fetcher_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let profile = fetcher_fn(|user_id: &u64| {
///     let user_id = *user_id;
///     async move { Ok::<_, std::io::Error>(format!("profile of {user_id}")) }
/// });
/// // Built once, shared by every request.
/// let aggregator = Aggregator::builder().source("profile", profile).options(Deadline(Duration::from_secs(1))).build()?;
///
/// let context = RequestContext::new()
///     .field("user_id", 42)
///     .request_id("r-1")
///     .header("Authorization", "Bearer t0k3n") // for sources that forward it
///     .deadline(Duration::from_millis(300)); // the caller has less time left than 1 s
/// let aggregate = aggregator.aggregate_with(&42, context).await?;
/// assert_eq!(aggregate.report.field("user_id"), Some("42"));
/// assert_eq!(aggregate.report.field("request_id"), Some("r-1"));
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
#[must_use = "a context does nothing until it is passed to `aggregate_with`"]
pub struct RequestContext {
    pub(crate) fields: Vec<(Name, String)>,
    pub(crate) deadline: Option<Duration>,
    pub(crate) parent: Option<CancelToken>,
    pub(crate) span: Option<Span>,
    pub(crate) on_ready: Option<OnReady>,
    pub(crate) traceparent: Option<String>,
    /// Lower-case names; values as given.
    pub(crate) headers: Vec<(String, String)>,
}

impl fmt::Debug for RequestContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestContext")
            .field("fields", &self.fields)
            .field("deadline", &self.deadline)
            .field("parent", &self.parent)
            .field("span", &self.span)
            .field("on_ready", &self.on_ready.as_ref().map(|_| "<callback>"))
            .field("traceparent", &self.traceparent)
            .field("headers", &self.headers.iter().map(|(name, _)| name).collect::<Vec<_>>())
            .finish()
    }
}

impl RequestContext {
    /// A context with no fields, no deadline of its own, no parent.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the field `name` = `value` (rendered with `Display`); a field set twice keeps the
    /// last value, and a field of the aggregator's ([`Field`](crate::options::Field)) is overridden. A
    /// field with an empty name is ignored.
    pub fn field(mut self, name: impl Into<Name>, value: impl fmt::Display) -> Self {
        let name = name.into();
        if !name.is_empty() {
            set(&mut self.fields, name, value.to_string());
        }
        self
    }

    /// The request's id: the field `request_id` (so it is in the span, every log line, the
    /// report and the error, like any field), which sources read as
    /// [`Context::request_id`](crate::Context::request_id) and the HTTP fetcher sends as
    /// `x-request-id`. The same as `.field("request_id", id)`.
    pub fn request_id(self, id: impl fmt::Display) -> Self {
        self.field("request_id", id)
    }

    /// A header of the caller's request (e.g. the end user's `authorization`), for sources
    /// that forward it: the HTTP fetcher (feature `http`) sends it only if its
    /// `forward_header` allow-list names it.
    /// Names are matched without regard to case; a header set twice keeps the last value.
    /// Values are never logged or reported.
    pub fn header(mut self, name: impl AsRef<str>, value: impl Into<String>) -> Self {
        let (name, value) = (name.as_ref().to_ascii_lowercase(), value.into());
        match self.headers.iter_mut().find(|(header, _)| *header == name) {
            Some((_, old)) => *old = value,
            None => self.headers.push((name, value)),
        }
        self
    }

    /// A deadline for this call, counted from its start: the aggregation gets the smaller of
    /// this and the aggregator's [`Deadline`](crate::Deadline), so a caller with little time
    /// left gets its answer (or its timeout) in time.
    pub fn deadline(mut self, within: Duration) -> Self {
        self.deadline = Some(within);
        self
    }

    /// Cancels the aggregation when `token` is cancelled: the aggregation fails as cancelled,
    /// with `token`'s cause, and its sources read that cause through
    /// [`cancellation`](crate::cancellation). Use it to nest an aggregation in a larger
    /// operation.
    pub fn cancel_on(mut self, token: &CancelToken) -> Self {
        self.parent = Some(token.clone());
        self
    }

    /// The span the aggregation's `aggregate` span is a child of, instead of the current one.
    pub fn parent_span(mut self, span: Span) -> Self {
        self.span = Some(span);
        self
    }

    /// Calls `on_ready` for every source the moment it completes, with its output (or error),
    /// while the others may still run: to stream a response section by section. It runs on
    /// the aggregation's task, inside its poll: keep it short (e.g. send into a channel).
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    /// use muster::{Aggregator, RequestContext, fetcher_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let after = |ms: u64, body: &'static str| fetcher_fn(move |_: &u64| async move {
    ///     tokio::time::sleep(Duration::from_millis(ms)).await;
    ///     Ok::<_, std::io::Error>(body)
    /// });
    /// let aggregator = Aggregator::builder().source("slow", after(30, "{}")).source("fast", after(10, "[]")).build()?;
    /// let sections = Arc::new(Mutex::new(Vec::new()));
    /// let seen = Arc::clone(&sections);
    /// let context = RequestContext::new().on_ready(move |ready| {
    ///     seen.lock().unwrap().push((ready.name().to_owned(), ready.value::<&str>().copied()));
    /// });
    /// aggregator.aggregate_with(&7, context).await?;
    /// assert_eq!(*sections.lock().unwrap(), [("fast".to_owned(), Some("[]")), ("slow".to_owned(), Some("{}"))]);
    /// # Ok(()) }
    /// ```
    ///
    /// To stream a response, send each section into a channel and poll the aggregation in the
    /// same task as the receiver (as below, or as one stream), rather than spawning it: the
    /// response then owns the aggregation, and a client that goes away drops it, which cancels
    /// every source still running. A spawned aggregation would run on without anyone to read
    /// it. (The dashboard example streams NDJSON this way.)
    ///
    /// ```
    /// use std::time::Duration;
    /// use futures::StreamExt as _;
    /// use muster::{Aggregator, RequestContext, fetcher_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let after = |ms: u64, body: &'static str| fetcher_fn(move |_: &u64| async move {
    /// #     tokio::time::sleep(Duration::from_millis(ms)).await;
    /// #     Ok::<_, std::io::Error>(body)
    /// # });
    /// let aggregator = Aggregator::builder().source("slow", after(30, "{}")).source("fast", after(10, "[]")).build()?;
    /// let (sections, mut received) = futures::channel::mpsc::unbounded();
    /// let context = RequestContext::new().on_ready(move |ready| {
    ///     let _ = sections.unbounded_send(format!("{}: {:?}", ready.name(), ready.value::<&str>()));
    /// });
    /// let aggregation = aggregator.aggregate_with(&7, context);
    /// tokio::pin!(aggregation);
    /// let mut written = Vec::new();
    /// let outcome = loop {
    ///     tokio::select! {
    ///         Some(section) = received.next() => written.push(section), // write it to the client
    ///         outcome = &mut aggregation => break outcome,
    ///     }
    /// };
    /// written.extend(received.collect::<Vec<_>>().await); // sections of the last poll
    /// assert_eq!(written, [r#"fast: Some("[]")"#, r#"slow: Some("{}")"#]);
    /// assert!(outcome.is_ok());
    /// # Ok(()) }
    /// ```
    pub fn on_ready(mut self, on_ready: impl Fn(Ready<'_>) + Send + Sync + 'static) -> Self {
        self.on_ready = Some(std::sync::Arc::new(on_ready));
        self
    }

    /// The caller's W3C `traceparent` (`00-<trace id>-<parent id>-<flags>`): with the `otel`
    /// feature, the aggregation's `aggregate` span continues that trace, as a child of the
    /// caller's span, so the whole aggregation (and each HTTP source's `attempt`, whose id the
    /// backends get as their parent) nests under the caller's trace. A value that is not a valid
    /// version-00 trace parent is ignored. Without the feature it is only kept.
    pub fn traceparent(mut self, traceparent: impl Into<String>) -> Self {
        self.traceparent = Some(traceparent.into());
        self
    }

    /// The value of the field `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields.iter().find(|(field, _)| field == name).map(|(_, value)| value.as_str())
    }
}

/// Sets `name` to `value` in `fields`, in place if it is there.
pub(crate) fn set(fields: &mut Vec<(Name, String)>, name: Name, value: String) {
    match fields.iter_mut().find(|(field, _)| *field == name) {
        Some((_, old)) => *old = value,
        None => fields.push((name, value)),
    }
}

/// The `aggregate` span of one call: one field per context field, as a separate structured
/// field, under `parent` (or the current span).
///
/// tracing's macros need field names known at compile time; the context's names are known at
/// run time, so the span's metadata is made (once per distinct list of names, and kept: a
/// process sees a handful, at most [`MAX_SITES`]) and registered like a macro's callsite.
/// Finding it again on the next call takes no lock ([`Sites`]).
pub(crate) fn aggregate_span(fields: &[(Name, String)], parent: Option<&Span>, traceparent: Option<&str>) -> Span {
    let span = new_span(fields, parent);
    #[cfg(feature = "otel")]
    if let Some(remote) = traceparent.and_then(otel::remote) {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let _ = span.set_parent(remote);
    }
    #[cfg(not(feature = "otel"))]
    let _ = traceparent;
    span
}

fn new_span(fields: &[(Name, String)], parent: Option<&Span>) -> Span {
    if tracing::level_filters::LevelFilter::current() < Level::INFO {
        return Span::none();
    }
    let meta = metadata(fields.iter().map(|(name, _)| &**name).chain(TRACE_FIELDS.iter().copied()));
    if !tracing::dispatcher::get_default(|dispatch| dispatch.enabled(meta)) {
        return Span::none();
    }
    // The first fields' values are given when the span is made, so that a subscriber that
    // formats a span's fields (tracing-subscriber's `fmt` layer) does it once, not once more for
    // each `record`; a field past them, or not in the metadata, is recorded after.
    let set = meta.fields();
    let found: [Option<Field>; GIVEN] = std::array::from_fn(|i| fields.get(i).and_then(|(name, _)| set.field(&**name)));
    let Some(filler) = set.iter().next() else { return Span::none() };
    let values: [(&Field, Option<&dyn Value>); GIVEN] = std::array::from_fn(|i| match (&found[i], fields.get(i)) {
        (Some(field), Some((_, value))) => (field, Some(value as &dyn Value)),
        // A field of the set with no value: skipped, as `Empty` is.
        _ => (&filler, None),
    });
    let values = set.value_set(&values);
    let span = match parent {
        Some(parent) => Span::child_of(parent, meta, &values),
        None => Span::new(meta, &values),
    };
    for (name, value) in fields.get(GIVEN..).unwrap_or_default() {
        span.record(&**name, value.as_str());
    }
    span
}

/// The context fields given an `aggregate` span's value when it is made; more are recorded.
const GIVEN: usize = 8;

/// At most this many distinct lists of field names get their own span metadata; calls with
/// more lists get a span without fields (the report, the error and the failure event still
/// carry them).
const MAX_SITES: usize = 256;

/// The callsite of an `aggregate` span with a given list of field names.
struct Site {
    meta: OnceLock<&'static Metadata<'static>>,
}

impl Callsite for Site {
    fn set_interest(&self, _: Interest) {}

    fn metadata(&self) -> &Metadata<'_> {
        self.meta.get().copied().unwrap_or(&NO_FIELDS)
    }
}

static NO_FIELDS_SITE: Site = Site { meta: OnceLock::new() };

static NO_FIELDS: Metadata<'static> = span_metadata(FieldSet::new(TRACE_FIELDS, Identifier(&NO_FIELDS_SITE)));

/// The fields every `aggregate` span has after the context's, recorded when it fails or is
/// cancelled: the error's kind, the cancellation's cause, and the error status that
/// `tracing-opentelemetry` reads (`otel.status_code`, `otel.status_description`).
const TRACE_FIELDS: &[&str] = &["error.type", "cancelled", "otel.status_code", "otel.status_description"];

/// Marks `span` failed: `error.type` is `kind`, and the error status says `description`. Only
/// on a span that has the fields (an `aggregate` or `source` span); a disabled span costs
/// nothing.
pub(crate) fn failed(span: &Span, kind: &str, description: impl fmt::Display) {
    if span.is_disabled() {
        return;
    }
    span.record("error.type", kind);
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", description.to_string().as_str());
}

/// Marks `span` cancelled with `cause`, and the error status.
pub(crate) fn cancelled(span: &Span, cause: &str) {
    if span.is_disabled() {
        return;
    }
    span.record("cancelled", cause);
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_description", format!("cancelled: {cause}").as_str());
}

/// The current span if it is a source's (the group enters it around the source's polls).
pub(crate) fn source_span() -> Option<Span> {
    let span = Span::current();
    span.metadata().is_some_and(|meta| meta.name() == "source").then_some(span)
}

/// The metadata of an `aggregate` span with `fields`.
const fn span_metadata(fields: FieldSet) -> Metadata<'static> {
    Metadata::new(
        "aggregate",
        "muster",
        Level::INFO,
        Some(file!()),
        Some(line!()),
        Some(module_path!()),
        fields,
        Kind::SPAN,
    )
}

/// The span metadata for `names`, made and registered on first use; see [`Sites::get`].
fn metadata<'n>(names: impl Iterator<Item = &'n str> + Clone) -> &'static Metadata<'static> {
    static SITES: Sites<MAX_SITES> = Sites::new();
    SITES.get(names)
}

/// The span metadata made so far, at most `N`, each for its own list of field names.
///
/// Looking one up takes no lock: it runs for every aggregation while `aggregate` spans are
/// enabled, from every worker thread at once. The slots are filled in order and a filled slot
/// never changes, so a reader scans the filled prefix with one atomic load per slot; only
/// making new metadata (once per distinct list of names) takes the lock, which keeps two
/// threads from making metadata for the same names.
struct Sites<const N: usize> {
    made: [OnceLock<&'static Metadata<'static>>; N],
    making: Mutex<()>,
}

impl<const N: usize> Sites<N> {
    const fn new() -> Self {
        Self { made: [const { OnceLock::new() }; N], making: Mutex::new(()) }
    }

    /// The metadata whose field set holds `names`, in order: found without a lock or an
    /// allocation when it exists, else made, leaked and registered like a macro's callsite.
    /// Once `N` lists have metadata, other lists get [`NO_FIELDS`]: the leak is bounded.
    fn get<'n>(&self, names: impl Iterator<Item = &'n str> + Clone) -> &'static Metadata<'static> {
        let same_names =
            |meta: &&'static Metadata<'static>| meta.fields().iter().map(|field| field.name()).eq(names.clone());
        if let Some(meta) = self.made.iter().map_while(OnceLock::get).copied().find(same_names) {
            return meta;
        }
        let _making = self.making.lock().unwrap_or_else(PoisonError::into_inner);
        // Scanned again under the lock: another thread may have made it since.
        for slot in &self.made {
            match slot.get() {
                Some(meta) if same_names(meta) => return meta,
                Some(_) => {}
                None => return slot.get_or_init(|| make(names)),
            }
        }
        &NO_FIELDS
    }
}

/// New span metadata for `names`, leaked and registered.
fn make<'n>(names: impl Iterator<Item = &'n str>) -> &'static Metadata<'static> {
    let leaked: &'static [&'static str] =
        Box::leak(names.map(|name| &*Box::leak(Box::<str>::from(name))).collect::<Box<[_]>>());
    let site: &'static Site = Box::leak(Box::new(Site { meta: OnceLock::new() }));
    let meta: &'static Metadata<'static> = Box::leak(Box::new(span_metadata(FieldSet::new(leaked, Identifier(site)))));
    let _ = site.meta.set(meta);
    tracing::callsite::register(site);
    meta
}

/// OpenTelemetry (feature `otel`): a caller's `traceparent` as a remote parent context.
#[cfg(feature = "otel")]
mod otel {
    use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState};

    /// The remote span context of a W3C version-00 `traceparent`, if it is one (lower-case hex,
    /// ids not all zero).
    pub(super) fn remote(traceparent: &str) -> Option<opentelemetry::Context> {
        let mut parts = traceparent.split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex = |part: &str, len: usize| {
            part.len() == len && part.bytes().all(|byte| matches!(byte, b'0'..=b'9' | b'a'..=b'f'))
        };
        if parts.next().is_some() || version != "00" || !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
            return None;
        }
        let trace = TraceId::from_hex(trace).ok()?;
        let parent = SpanId::from_hex(parent).ok()?;
        let flags = TraceFlags::new(u8::from_str_radix(flags, 16).ok()?);
        let context = SpanContext::new(trace, parent, flags, true, TraceState::default());
        context.is_valid().then(|| opentelemetry::Context::new().with_remote_span_context(context))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_list_of_field_names_gets_one_span_metadata_made_once() {
        let first = metadata(["tenant", "user"].into_iter());
        assert!(std::ptr::eq(first, metadata(["tenant", "user"].into_iter())), "looked up, not made again");
        let names: Vec<&str> = first.fields().iter().map(|field| field.name()).collect();
        assert_eq!(names, ["tenant", "user"]);
        for other in [&["user", "tenant"][..], &["tenant"], &["tenant", "user", "region"]] {
            let meta = metadata(other.iter().copied());
            assert!(!std::ptr::eq(first, meta), "{other:?} has metadata of its own");
            assert!(meta.fields().iter().map(|field| field.name()).eq(other.iter().copied()));
        }
    }

    #[test]
    fn past_the_bound_a_list_of_names_gets_the_metadata_without_fields() {
        let sites = Sites::<2>::new();
        let first = sites.get(["a"].into_iter());
        let second = sites.get(["a", "b"].into_iter());
        let third = sites.get(["c"].into_iter());
        assert!(std::ptr::eq(third, &NO_FIELDS), "a third list is past the bound of 2");
        assert!(std::ptr::eq(first, sites.get(["a"].into_iter())), "known lists are still found");
        assert!(std::ptr::eq(second, sites.get(["a", "b"].into_iter())));
        assert!(!std::ptr::eq(first, &NO_FIELDS) && !std::ptr::eq(first, second));
    }

    #[test]
    fn threads_asking_for_the_same_new_names_at_once_get_one_metadata() {
        let sites = Sites::<4>::new();
        let barrier = std::sync::Barrier::new(8);
        let made: Vec<usize> = std::thread::scope(|scope| {
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        std::ptr::from_ref(sites.get(["tenant", "user"].into_iter())) as usize
                    })
                })
                .collect();
            threads.into_iter().map(|thread| thread.join().unwrap_or_default()).collect()
        });
        assert!(made.iter().all(|&meta| meta == made[0] && meta != 0), "{made:?}");
        assert_eq!(sites.made.iter().filter(|slot| slot.get().is_some()).count(), 1, "made once");
    }
}
