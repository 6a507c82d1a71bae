//! [`UrlParams`]: what an HTTP fetcher needs from a request.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;

use ::http::HeaderName;
use serde_json::value::RawValue;

/// A request an [`HttpFetcher`](super::HttpFetcher) can fetch: the values of the URL
/// template's placeholders, and the context it propagates as request headers.
///
/// `param` answers the value of the `{name}` placeholder; the fetcher percent-encodes it
/// (see [URL templates](super::HttpFetcher#url-templates)), so return the raw value. A `None` fails the
/// fetch with [`HttpError::MissingParam`](super::HttpError::MissingParam) before anything is
/// sent.
///
/// Implemented for:
/// - `str` and `String`: every placeholder gets that one value (handy for `{id}`);
/// - the integer types: every placeholder gets the number in decimal;
/// - `HashMap<String, String>` and `BTreeMap<String, String>`: the value under the name;
/// - slices, arrays and `Vec`s of `(name, value)` pairs of string types, such as
///   `[(&str, &str)]` and `Vec<(String, String)>`: the first pair with the name;
/// - `&T`, `Box<T>` and `Arc<T>` of any of these.
///
/// The trait is object safe. Implement it on your own request type to propagate a request id
/// and a W3C `traceparent`, to forward headers ([`header`](Self::header)) and to send a JSON
/// body ([`body`](Self::body)); every method but `param` has a default:
///
/// ```
/// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
/// use std::borrow::Cow;
/// use muster::http::UrlParams;
///
/// struct DashboardRequest {
///     user_id: u64,
///     request_id: String,
///     traceparent: Option<String>,
/// }
///
/// impl UrlParams for DashboardRequest {
///     fn param(&self, name: &str) -> Option<Cow<'_, str>> {
///         (name == "id").then(|| self.user_id.to_string().into())
///     }
///     fn request_id(&self) -> Option<&str> {
///         Some(&self.request_id)
///     }
///     fn traceparent(&self) -> Option<&str> {
///         self.traceparent.as_deref()
///     }
/// }
///
/// let request = DashboardRequest { user_id: 7, request_id: "req-1".into(), traceparent: None };
/// let params: &dyn UrlParams = &request;
/// assert_eq!(params.param("id").as_deref(), Some("7"));
/// assert_eq!(params.param("page"), None);
/// assert_eq!(params.request_id(), Some("req-1"));
/// ```
pub trait UrlParams {
    /// The raw (not yet encoded) value of the placeholder `{name}`, or `None` if the request
    /// has none.
    fn param(&self, name: &str) -> Option<Cow<'_, str>>;

    /// The request id sent as `x-request-id`, if any. A value that is not a valid header
    /// value (e.g. one with a line break) is not sent.
    fn request_id(&self) -> Option<&str> {
        None
    }

    /// The W3C trace context sent as `traceparent`, if any. Only a syntactically valid
    /// version-00 value (`00-<32 hex>-<16 hex>-<2 hex>`, lower case, ids not all zero) is
    /// sent; anything else is dropped.
    fn traceparent(&self) -> Option<&str> {
        None
    }

    /// The value of the header `name` to forward to the backend, for the names the fetcher
    /// was told to forward ([`forward_header`](super::HttpFetcherBuilder::forward_header));
    /// it is never asked about others. A value that is not at most 8 KiB of visible ASCII,
    /// spaces and tabs is not sent. `None` (the default) sends nothing.
    ///
    /// ```
    /// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
    /// use std::borrow::Cow;
    /// use muster::http::{HeaderMap, HeaderName, UrlParams, header};
    ///
    /// struct Call {
    ///     id: String,
    ///     headers: HeaderMap,
    /// }
    ///
    /// impl UrlParams for Call {
    ///     fn param(&self, _name: &str) -> Option<Cow<'_, str>> {
    ///         Some(self.id.as_str().into())
    ///     }
    ///     fn header(&self, name: &HeaderName) -> Option<&str> {
    ///         self.headers.get(name)?.to_str().ok()
    ///     }
    /// }
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert(header::AUTHORIZATION, "Bearer t0ken".parse().unwrap());
    /// let call = Call { id: "7".into(), headers };
    /// assert_eq!(call.header(&header::AUTHORIZATION), Some("Bearer t0ken"));
    /// ```
    fn header(&self, name: &HeaderName) -> Option<&str> {
        let _ = name;
        None
    }

    /// The JSON body to send, if any (with `content-type: application/json`, whatever the
    /// method). `None` (the default) sends no body.
    fn body(&self) -> Option<&RawValue> {
        None
    }
}

impl UrlParams for str {
    fn param(&self, _name: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(self))
    }
}

impl UrlParams for String {
    fn param(&self, _name: &str) -> Option<Cow<'_, str>> {
        Some(Cow::Borrowed(self))
    }
}

macro_rules! integer_params {
    ($($int:ty),+) => {$(
        impl UrlParams for $int {
            fn param(&self, _name: &str) -> Option<Cow<'_, str>> {
                Some(Cow::Owned(self.to_string()))
            }
        }
    )+};
}

integer_params!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize);

impl<S: BuildHasher> UrlParams for HashMap<String, String, S> {
    fn param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name).map(|value| Cow::Borrowed(value.as_str()))
    }
}

impl UrlParams for BTreeMap<String, String> {
    fn param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.get(name).map(|value| Cow::Borrowed(value.as_str()))
    }
}

impl<K: AsRef<str>, V: AsRef<str>> UrlParams for [(K, V)] {
    fn param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.iter().find(|(key, _)| key.as_ref() == name).map(|(_, value)| Cow::Borrowed(value.as_ref()))
    }
}

impl<K: AsRef<str>, V: AsRef<str>, const N: usize> UrlParams for [(K, V); N] {
    fn param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.as_slice().param(name)
    }
}

impl<K: AsRef<str>, V: AsRef<str>> UrlParams for Vec<(K, V)> {
    fn param(&self, name: &str) -> Option<Cow<'_, str>> {
        self.as_slice().param(name)
    }
}

macro_rules! forward_params {
    ($($pointer:ty),+) => {$(
        impl<T: UrlParams + ?Sized> UrlParams for $pointer {
            fn param(&self, name: &str) -> Option<Cow<'_, str>> {
                (**self).param(name)
            }
            fn request_id(&self) -> Option<&str> {
                (**self).request_id()
            }
            fn traceparent(&self) -> Option<&str> {
                (**self).traceparent()
            }
            fn header(&self, name: &HeaderName) -> Option<&str> {
                (**self).header(name)
            }
            fn body(&self) -> Option<&RawValue> {
                (**self).body()
            }
        }
    )+};
}

forward_params!(&T, Box<T>, Arc<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_implementation_answers_its_values() {
        assert_eq!("7".param("id").as_deref(), Some("7"));
        assert_eq!(String::from("7").param("anything").as_deref(), Some("7"));
        assert_eq!(42_u64.param("id").as_deref(), Some("42"));
        assert_eq!((-1_i32).param("id").as_deref(), Some("-1"));

        let map: HashMap<String, String> = [("id".to_owned(), "7".to_owned())].into();
        assert_eq!(map.param("id").as_deref(), Some("7"));
        assert_eq!(map.param("page"), None);
        let tree: BTreeMap<String, String> = [("id".to_owned(), "7".to_owned())].into();
        assert_eq!(tree.param("id").as_deref(), Some("7"));

        let pairs = [("id", "7"), ("id", "8"), ("page", "2")];
        assert_eq!(pairs.param("id").as_deref(), Some("7"), "the first pair wins");
        assert_eq!(pairs[..].param("page").as_deref(), Some("2"));
        assert_eq!(pairs.param("size"), None);
        let owned = vec![("id".to_owned(), "7".to_owned())];
        assert_eq!(owned.param("id").as_deref(), Some("7"));

        let boxed: Box<dyn UrlParams + Sync> = Box::new("7");
        assert_eq!(boxed.param("id").as_deref(), Some("7"));
        assert_eq!(boxed.request_id(), None);
        assert_eq!(Arc::new(7_u8).traceparent(), None);
    }
}
