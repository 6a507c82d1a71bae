//! [`UrlParams`]: what an HTTP fetcher needs from a request.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;

use serde_json::value::RawValue;

/// A request an [`HttpFetcher`](super::HttpFetcher) can fetch: the values of the URL
/// template's placeholders and, optionally, a JSON body. Only URL values: the request id,
/// `traceparent` and forwarded headers come from the call's
/// [`context()`](muster_core::context) (see [request headers](super::HttpFetcher#request-headers)).
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
/// The trait is object safe. Implement it on your own request type to fill several
/// placeholders and to send a JSON body ([`body`](Self::body)); `body` has a default:
///
/// ```
/// # #[allow(unused_imports)] mod muster { pub use muster_adapters::http; pub use muster_core::*; }
/// use std::borrow::Cow;
/// use muster::http::UrlParams;
///
/// struct Statement {
///     user_id: u64,
///     month: String,
/// }
///
/// impl UrlParams for Statement {
///     fn param(&self, name: &str) -> Option<Cow<'_, str>> {
///         match name {
///             "id" => Some(self.user_id.to_string().into()),
///             "month" => Some(self.month.as_str().into()),
///             _ => None,
///         }
///     }
/// }
///
/// let request = Statement { user_id: 7, month: "2026-11".into() };
/// let params: &dyn UrlParams = &request;
/// assert_eq!(params.param("id").as_deref(), Some("7"));
/// assert_eq!(params.param("month").as_deref(), Some("2026-11"));
/// assert_eq!(params.param("page"), None);
/// ```
pub trait UrlParams {
    /// The raw (not yet encoded) value of the placeholder `{name}`, or `None` if the request
    /// has none.
    fn param(&self, name: &str) -> Option<Cow<'_, str>>;

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
        assert!(boxed.body().is_none());
        assert_eq!(Arc::new(7_u8).param("id").as_deref(), Some("7"));
    }
}
