use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::cancel::Name;

tokio::task_local! {
    static CONTEXT: Context;
}

/// The context of the request a call serves: its fields (user id, tenant, ...), its request
/// id, its W3C `traceparent` and the caller's headers that sources may forward. A source reads
/// it with [`context()`] inside `fetch`; an aggregator sets it once per call from the call's
/// `RequestContext`.
///
/// Cheap to clone (one reference count). Header names are lower-cased, values are plain
/// strings; the request id is the field named `request_id`.
///
/// ```
/// # use muster_core as muster;
/// use muster::{Context, context, with_context};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let request = Context::new()
///     .with_field("user_id", "42")
///     .with_request_id("r-1")
///     .with_header("Authorization", "Bearer t0k3n");
/// let seen = with_context(request, async {
///     let context = context().expect("inside the call");
///     (context.request_id().map(str::to_owned), context.header("authorization").map(str::to_owned))
/// })
/// .await;
/// assert_eq!(seen, (Some("r-1".to_owned()), Some("Bearer t0k3n".to_owned())));
/// assert!(context().is_none(), "outside the call");
/// # }
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Context {
    inner: Arc<Inner>,
}

#[derive(Clone, Default, PartialEq, Eq)]
struct Inner {
    fields: Vec<(Name, String)>,
    traceparent: Option<String>,
    /// Lower-case names, in the order given; a name set twice keeps the last value.
    headers: Vec<(String, String)>,
}

/// The field that holds the request id.
const REQUEST_ID: &str = "request_id";

impl Context {
    /// An empty context: no fields, no request id, no trace parent, no headers.
    pub fn new() -> Self {
        Self::default()
    }

    /// This context with the field `name` set to `value` (replacing an earlier value).
    #[must_use]
    pub fn with_field(mut self, name: impl Into<Name>, value: impl Into<String>) -> Self {
        let (name, value) = (name.into(), value.into());
        let fields = &mut Arc::make_mut(&mut self.inner).fields;
        match fields.iter_mut().find(|(field, _)| *field == name) {
            Some((_, old)) => *old = value,
            None => fields.push((name, value)),
        }
        self
    }

    /// This context with the request id `id`: the field `request_id`.
    #[must_use]
    pub fn with_request_id(self, id: impl Into<String>) -> Self {
        self.with_field(REQUEST_ID, id)
    }

    /// This context with the caller's W3C `traceparent`.
    #[must_use]
    pub fn with_traceparent(mut self, traceparent: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.inner).traceparent = Some(traceparent.into());
        self
    }

    /// This context with the caller's header `name` (lower-cased) set to `value`, replacing an
    /// earlier value of that name. Headers are for sources to forward through an allow-list
    /// (e.g. the HTTP fetcher's `forward_header`); nothing is sent unless a source asks.
    #[must_use]
    pub fn with_header(mut self, name: impl AsRef<str>, value: impl Into<String>) -> Self {
        let (name, value) = (name.as_ref().to_ascii_lowercase(), value.into());
        let headers = &mut Arc::make_mut(&mut self.inner).headers;
        match headers.iter_mut().find(|(header, _)| *header == name) {
            Some((_, old)) => *old = value,
            None => headers.push((name, value)),
        }
        self
    }

    /// The fields, in the order they were first set.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner.fields.iter().map(|(name, value)| (&**name, value.as_str()))
    }

    /// The value of the field `name`, if set.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.inner.fields.iter().find(|(field, _)| field == name).map(|(_, value)| value.as_str())
    }

    /// The request id: the field `request_id`, if set.
    pub fn request_id(&self) -> Option<&str> {
        self.field(REQUEST_ID)
    }

    /// The caller's W3C `traceparent`, if given.
    pub fn traceparent(&self) -> Option<&str> {
        self.inner.traceparent.as_deref()
    }

    /// The caller's header `name` (matched without regard to case), if given.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.trim();
        self.inner.headers.iter().find(|(header, _)| header.eq_ignore_ascii_case(name)).map(|(_, value)| value.as_str())
    }

    /// The caller's headers, lower-case names, in the order they were first set.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.inner.headers.iter().map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// Whether the context holds nothing at all.
    pub fn is_empty(&self) -> bool {
        let Inner { fields, traceparent, headers } = &*self.inner;
        fields.is_empty() && traceparent.is_none() && headers.is_empty()
    }
}

impl fmt::Debug for Context {
    /// Header values may be credentials: only their names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<&str> = self.inner.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("Context")
            .field("fields", &self.inner.fields)
            .field("traceparent", &self.inner.traceparent)
            .field("headers", &headers)
            .finish()
    }
}

/// The context of the request the current call serves: set by the aggregator around each
/// aggregation (from its `RequestContext`), so every source and policy of that aggregation
/// reads it while it is polled; `None` outside one (and in tasks spawned onto the runtime
/// from inside one, like [`deadline()`](crate::deadline())). Inside a coalesced call it is the
/// context of the call's first waiter, whose request the call makes.
///
/// ```
/// # use muster_core as muster;
/// assert!(muster::context().is_none());
/// ```
pub fn context() -> Option<Context> {
    CONTEXT.try_with(Context::clone).ok()
}

/// Runs `future` with `context` as the current [`context()`].
pub fn with_context<F: Future>(context: Context, future: F) -> impl Future<Output = F::Output> {
    CONTEXT.scope(context, future)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_are_lower_cased_and_a_name_set_twice_keeps_the_last_value() {
        let context = Context::new()
            .with_header("Authorization", "a")
            .with_header("COOKIE", "c")
            .with_header("authorization", "b");
        assert_eq!(context.headers().collect::<Vec<_>>(), [("authorization", "b"), ("cookie", "c")]);
        assert_eq!(context.header("AUTHORIZATION"), Some("b"));
        assert_eq!(context.header("x-missing"), None);
    }

    #[test]
    fn the_request_id_is_the_field_request_id() {
        let context = Context::new().with_field("request_id", "r-1").with_field("user_id", "7");
        assert_eq!(context.request_id(), Some("r-1"));
        let context = context.with_request_id("r-2");
        assert_eq!(context.fields().collect::<Vec<_>>(), [("request_id", "r-2"), ("user_id", "7")]);
        assert!(Context::new().is_empty() && !context.is_empty());
    }

    #[test]
    fn a_clone_is_not_changed_by_the_original() {
        let first = Context::new().with_field("a", "1");
        let second = first.clone().with_field("a", "2");
        assert_eq!((first.field("a"), second.field("a")), (Some("1"), Some("2")));
    }
}
