//! Merging the JSON outputs of named sources into one [`Value`].
//!
//! [`merge_json`] takes each source's output with its name, in declaration order, and builds one
//! JSON value according to a [`JsonMerge`] policy:
//!
//! - [`JsonMerge::Namespaced`] (the default) nests each output under its source name:
//!   `{"profile": {...}, "transactions": [...]}`. It never looks inside the outputs.
//! - [`JsonMerge::Merged`] requires every output to be a JSON object and merges them into one
//!   object. What happens when two sources provide the same key is the [`Collision`] policy:
//!   an error ([`Collision::Error`], [`Collision::DeepMerge`]), concatenated arrays
//!   ([`Collision::AppendArrays`]) or a preferred source ([`Collision::Prefer`]).
//!
//! Key order is kept: source names in declaration order, merged keys in order of first
//! appearance (source by source, each object in its own order). Errors name the place of a
//! collision as a [JSON Pointer](https://www.rfc-editor.org/rfc/rfc6901) (`/account/id`) and the
//! two sources involved. Nothing here panics.
//!
//! ```
//! use muster::json::{Collision, JsonMerge, merge_json};
//! use serde_json::json;
//!
//! let profile = json!({"account": {"id": 7, "name": "Ada"}});
//! let balance = json!({"account": {"balance": "12.50"}});
//!
//! let merged = merge_json([("profile", profile), ("balance", balance)], &JsonMerge::Merged(Collision::DeepMerge))?;
//! assert_eq!(merged, json!({"account": {"id": 7, "name": "Ada", "balance": "12.50"}}));
//! # Ok::<(), muster::json::JsonMergeError>(())
//! ```

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use serde_json::Map;
#[doc(no_inline)]
pub use serde_json::Value;

/// How the JSON outputs of several named sources become one [`Value`].
///
/// The default, [`Namespaced`](JsonMerge::Namespaced), keeps the outputs apart under their
/// source names, so it cannot fail on the outputs' contents. Check a policy against the sources
/// it will see with [`JsonMerge::validate`] when the aggregator is built, rather than finding out
/// on the first request.
///
/// ```
/// use muster::json::{Collision, JsonMerge, merge_json};
/// use serde_json::json;
///
/// let outputs = || [("profile", json!({"name": "Ada"})), ("transactions", json!([1, 2]))];
///
/// let namespaced = merge_json(outputs(), &JsonMerge::default())?;
/// assert_eq!(namespaced.to_string(), r#"{"profile":{"name":"Ada"},"transactions":[1,2]}"#);
///
/// // Merging needs every output to be an object.
/// let err = merge_json(outputs(), &JsonMerge::Merged(Collision::Error)).unwrap_err();
/// assert_eq!(err.to_string(), "output of source `transactions` is a JSON array, not an object");
/// # Ok::<(), muster::json::JsonMergeError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JsonMerge {
    /// One object whose keys are the source names, in declaration order, and whose values are
    /// the outputs as they are. A source name given twice is a [`JsonMergeError::Collision`].
    #[default]
    Namespaced,
    /// Every output must be a JSON object ([`JsonMergeError::NotAnObject`] otherwise); they are
    /// merged into one object, with keys present in more than one source resolved by the
    /// [`Collision`] policy.
    Merged(Collision),
}

/// What [`JsonMerge::Merged`] does when more than one source provides the same key.
///
/// Only [`DeepMerge`](Collision::DeepMerge), [`AppendArrays`](Collision::AppendArrays) and
/// [`Prefer`](Collision::Prefer) look inside nested objects; every policy is explicit about
/// values that cannot be combined: none of them silently lets the last source win.
///
/// ```
/// use muster::json::{Collision, JsonMerge, merge_json};
/// use serde_json::json;
///
/// let outputs = || {
///     [
///         ("profile", json!({"user": {"name": "Ada", "tags": ["kyc"]}})),
///         ("crm", json!({"user": {"name": "Ada L.", "tags": ["vip"]}})),
///     ]
/// };
///
/// let err = merge_json(outputs(), &JsonMerge::Merged(Collision::Error)).unwrap_err();
/// assert_eq!(err.to_string(), "sources `profile` and `crm` both provide `/user`");
///
/// let err = merge_json(outputs(), &JsonMerge::Merged(Collision::DeepMerge)).unwrap_err();
/// assert_eq!(err.to_string(), "sources `profile` and `crm` both provide `/user/name`");
///
/// let merged = merge_json(outputs(), &JsonMerge::Merged(Collision::Prefer("crm".into())))?;
/// assert_eq!(merged, json!({"user": {"name": "Ada L.", "tags": ["vip"]}}));
/// # Ok::<(), muster::json::JsonMergeError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Collision {
    /// A top-level key present in two sources is an error; nested objects are not merged
    /// (use [`DeepMerge`](Collision::DeepMerge) for that). The error's path is the key, e.g.
    /// `/account`.
    Error,
    /// Objects present in several sources are merged recursively. Any other pair of values at
    /// the same path (two numbers, an object and an array, even two equal strings) is an error
    /// naming the path and both sources: a silent "last source wins" would hide disagreeing
    /// backends. Use [`Prefer`](Collision::Prefer) to pick a winner instead.
    DeepMerge,
    /// Like [`DeepMerge`](Collision::DeepMerge), but arrays present in several sources at the
    /// same path are concatenated, in declaration order of the sources.
    AppendArrays,
    /// Like [`DeepMerge`](Collision::DeepMerge), but where the values at a path cannot all be
    /// merged (they are not all objects), the value of the named source is taken whole. If the
    /// named source has no value at that path, the collision is an error as with `DeepMerge`.
    /// The name must be one of the sources ([`JsonMergeError::UnknownPreferred`] otherwise).
    Prefer(Cow<'static, str>),
}

/// Why [`merge_json`] or a `validate` method refused.
///
/// Paths are JSON Pointers (RFC 6901): `/account/id`, with `~` written `~0` and `/` written
/// `~1` inside a key.
///
/// ```
/// use muster::json::{Collision, JsonMerge, JsonMergeError, merge_json};
/// use serde_json::json;
///
/// let outputs = [("a", json!({"account": {"id": 1}})), ("b", json!({"account": {"id": 2}}))];
/// match merge_json(outputs, &JsonMerge::Merged(Collision::DeepMerge)) {
///     Err(JsonMergeError::Collision { path, first, second }) => {
///         assert_eq!((path.as_str(), first.as_str(), second.as_str()), ("/account/id", "a", "b"));
///     }
///     other => panic!("expected a collision, got {other:?}"),
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JsonMergeError {
    /// Two sources provide values at the same path that the policy cannot combine.
    #[error("sources `{first}` and `{second}` both provide `{path}`")]
    Collision {
        /// Where the values collide, as a JSON Pointer (`/account/id`).
        path: String,
        /// The source declared first.
        first: String,
        /// The source declared later.
        second: String,
    },
    /// [`JsonMerge::Merged`] got an output that is not a JSON object.
    #[error("output of source `{source_name}` is a JSON {found}, not an object")]
    NotAnObject {
        /// The source whose output is not an object.
        source_name: String,
        /// What the output is instead: `"null"`, `"boolean"`, `"number"`, `"string"` or `"array"`.
        found: &'static str,
    },
    /// [`Collision::Prefer`] names a source that is not among the sources.
    #[error("preferred source `{name}` is not one of the sources")]
    UnknownPreferred {
        /// The name given to [`Collision::Prefer`].
        name: String,
    },
}

impl JsonMerge {
    /// Checks this policy against the names of the sources it will merge, so that a bad policy
    /// is refused when the aggregator is built rather than on the first request.
    ///
    /// # Errors
    ///
    /// [`JsonMergeError::UnknownPreferred`] when [`Collision::Prefer`] names none of
    /// `source_names`; for [`JsonMerge::Namespaced`], [`JsonMergeError::Collision`] when a name
    /// appears twice (the output could not hold both).
    ///
    /// ```
    /// use muster::json::{Collision, JsonMerge, JsonMergeError};
    ///
    /// let sources = ["profile", "transactions"];
    /// assert_eq!(JsonMerge::Namespaced.validate(&sources), Ok(()));
    /// assert_eq!(JsonMerge::Merged(Collision::Prefer("profile".into())).validate(&sources), Ok(()));
    /// assert_eq!(
    ///     JsonMerge::Merged(Collision::Prefer("profiles".into())).validate(&sources),
    ///     Err(JsonMergeError::UnknownPreferred { name: "profiles".into() }),
    /// );
    /// ```
    pub fn validate(&self, source_names: &[&str]) -> Result<(), JsonMergeError> {
        match self {
            Self::Namespaced => {
                let mut seen = HashSet::with_capacity(source_names.len());
                match source_names.iter().find(|name| !seen.insert(**name)) {
                    Some(name) => Err(collision(&pointer(name), name, name)),
                    None => Ok(()),
                }
            }
            Self::Merged(collision) => collision.validate(source_names),
        }
    }
}

impl Collision {
    /// Checks that a [`Collision::Prefer`] names one of `source_names`; every other policy is
    /// valid for any sources.
    ///
    /// # Errors
    ///
    /// [`JsonMergeError::UnknownPreferred`] when the preferred source is not in `source_names`.
    ///
    /// ```
    /// use muster::json::Collision;
    ///
    /// assert_eq!(Collision::DeepMerge.validate(&[]), Ok(()));
    /// assert_eq!(Collision::Prefer("crm".into()).validate(&["profile", "crm"]), Ok(()));
    /// let err = Collision::Prefer("crm".into()).validate(&["profile"]).unwrap_err();
    /// assert_eq!(err.to_string(), "preferred source `crm` is not one of the sources");
    /// ```
    pub fn validate(&self, source_names: &[&str]) -> Result<(), JsonMergeError> {
        match self {
            Self::Prefer(name) if !source_names.contains(&name.as_ref()) => {
                Err(JsonMergeError::UnknownPreferred { name: name.to_string() })
            }
            _ => Ok(()),
        }
    }
}

/// Merges the JSON outputs of named sources, given in declaration order, into one value: the
/// [`Outputs`](crate::group::Outputs) of a [`by_name`](crate::Aggregator::by_name) aggregator as they
/// are, or any `(name, value)` pairs.
///
/// See [`JsonMerge`] and [`Collision`] for the policies. Source names are expected to be unique,
/// as an aggregator's are; a repeated name is a collision for [`JsonMerge::Namespaced`] and is
/// merged like any other source for [`JsonMerge::Merged`]. No outputs give an empty object.
///
/// # Errors
///
/// - [`JsonMergeError::UnknownPreferred`] when [`Collision::Prefer`] names none of the sources
///   (checked before anything else);
/// - [`JsonMergeError::NotAnObject`] when [`JsonMerge::Merged`] gets an output that is not an
///   object (the first such source is named);
/// - [`JsonMergeError::Collision`] when two sources provide values the policy cannot combine
///   (the first such path, in output key order, is named).
///
/// ```
/// use muster::json::{Collision, JsonMerge, merge_json};
/// use serde_json::json;
///
/// let outputs = || [("recent", json!({"items": [1, 2], "count": 2})), ("older", json!({"items": [3]}))];
///
/// let merged = merge_json(outputs(), &JsonMerge::Merged(Collision::AppendArrays))?;
/// assert_eq!(merged, json!({"items": [1, 2, 3], "count": 2}));
///
/// let namespaced = merge_json(outputs(), &JsonMerge::Namespaced)?;
/// assert_eq!(namespaced["older"], json!({"items": [3]}));
/// # Ok::<(), muster::json::JsonMergeError>(())
/// ```
pub fn merge_json<N: AsRef<str>>(
    outputs: impl IntoIterator<Item = (N, Value)>,
    policy: &JsonMerge,
) -> Result<Value, JsonMergeError> {
    let (names, values): (Vec<N>, Vec<Value>) = outputs.into_iter().unzip();
    let outputs = names.iter().map(AsRef::as_ref).zip(values);
    match policy {
        JsonMerge::Namespaced => namespaced(outputs),
        JsonMerge::Merged(collision) => merged(outputs.collect(), collision),
    }
}

fn namespaced<'a>(outputs: impl IntoIterator<Item = (&'a str, Value)>) -> Result<Value, JsonMergeError> {
    let outputs = outputs.into_iter();
    let mut object = Map::with_capacity(outputs.size_hint().0);
    for (name, value) in outputs {
        match object.entry(name) {
            serde_json::map::Entry::Vacant(slot) => {
                slot.insert(value);
            }
            serde_json::map::Entry::Occupied(_) => return Err(collision(&pointer(name), name, name)),
        }
    }
    Ok(Value::Object(object))
}

fn merged(outputs: Vec<(&str, Value)>, policy: &Collision) -> Result<Value, JsonMergeError> {
    if let Collision::Prefer(preferred) = policy {
        if !outputs.iter().any(|(name, _)| *name == preferred.as_ref()) {
            return Err(JsonMergeError::UnknownPreferred { name: preferred.to_string() });
        }
    }
    let mut objects = Vec::with_capacity(outputs.len());
    for (name, value) in outputs {
        match value {
            Value::Object(object) => objects.push((name, object)),
            other => return Err(JsonMergeError::NotAnObject { source_name: name.to_owned(), found: kind(&other) }),
        }
    }
    merge_objects(&mut String::new(), objects, policy).map(Value::Object)
}

/// Merges objects found at `path` in several sources, key by key in order of first appearance.
fn merge_objects<'a>(
    path: &mut String,
    objects: Vec<(&'a str, Map<String, Value>)>,
    policy: &Collision,
) -> Result<Map<String, Value>, JsonMergeError> {
    if objects.len() == 1 {
        if let Some((_, object)) = objects.into_iter().next() {
            return Ok(object);
        }
        return Ok(Map::new());
    }
    // Every key with the values the sources give it, in declaration order of the sources.
    let mut slots: Vec<(String, Vec<(&'a str, Value)>)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for (name, object) in objects {
        for (key, value) in object {
            match index.get(&key) {
                Some(&i) => slots[i].1.push((name, value)),
                None => {
                    index.insert(key.clone(), slots.len());
                    slots.push((key, vec![(name, value)]));
                }
            }
        }
    }
    let mut merged = Map::with_capacity(slots.len());
    for (key, values) in slots {
        let parent = path.len();
        push_segment(path, &key);
        let value = merge_values(path, values, policy)?;
        path.truncate(parent);
        merged.insert(key, value);
    }
    Ok(merged)
}

/// Combines the values that several sources give the same `path`.
fn merge_values(
    path: &mut String,
    mut values: Vec<(&str, Value)>,
    policy: &Collision,
) -> Result<Value, JsonMergeError> {
    if values.len() == 1 {
        if let Some((_, value)) = values.pop() {
            return Ok(value);
        }
    }
    if matches!(policy, Collision::Error) {
        return Err(first_conflict(path, &values, policy));
    }
    if values.iter().all(|(_, value)| value.is_object()) {
        let objects = values
            .into_iter()
            .map(|(name, value)| match value {
                Value::Object(object) => (name, object),
                _ => (name, Map::new()),
            })
            .collect();
        return merge_objects(path, objects, policy).map(Value::Object);
    }
    if matches!(policy, Collision::AppendArrays) && values.iter().all(|(_, value)| value.is_array()) {
        let mut appended =
            Vec::with_capacity(values.iter().map(|(_, value)| value.as_array().map_or(0, Vec::len)).sum());
        for (_, value) in values {
            if let Value::Array(items) = value {
                appended.extend(items);
            }
        }
        return Ok(Value::Array(appended));
    }
    if let Collision::Prefer(preferred) = policy {
        if let Some(i) = values.iter().position(|(name, _)| *name == preferred.as_ref()) {
            return Ok(values.swap_remove(i).1);
        }
    }
    Err(first_conflict(path, &values, policy))
}

/// The collision error for the first source whose value cannot be combined with the first
/// source's value at `path` (`values` holds at least two values that cannot all be combined).
fn first_conflict(path: &str, values: &[(&str, Value)], policy: &Collision) -> JsonMergeError {
    let (first, head) = match values.first() {
        Some((name, value)) => (*name, value),
        None => return collision(path, "", ""),
    };
    let combines = |value: &Value| match policy {
        Collision::Error => false,
        Collision::AppendArrays => (head.is_object() && value.is_object()) || (head.is_array() && value.is_array()),
        _ => head.is_object() && value.is_object(),
    };
    let rest = values.get(1..).unwrap_or_default();
    let second = rest.iter().find(|(_, value)| !combines(value)).or(rest.first()).map_or(first, |(name, _)| *name);
    collision(path, first, second)
}

fn collision(path: &str, first: &str, second: &str) -> JsonMergeError {
    JsonMergeError::Collision { path: path.to_owned(), first: first.to_owned(), second: second.to_owned() }
}

/// Appends `/key` to a JSON Pointer, escaping `~` and `/` as RFC 6901 says.
fn push_segment(path: &mut String, key: &str) {
    path.push('/');
    for c in key.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

fn pointer(key: &str) -> String {
    let mut path = String::with_capacity(key.len() + 1);
    push_segment(&mut path, key);
    path
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    fn deep() -> JsonMerge {
        JsonMerge::Merged(Collision::DeepMerge)
    }

    fn prefer(name: &'static str) -> JsonMerge {
        JsonMerge::Merged(Collision::Prefer(name.into()))
    }

    fn keys(value: &Value) -> Vec<&str> {
        value.as_object().map(|object| object.keys().map(String::as_str).collect()).unwrap_or_default()
    }

    fn collision_at(path: &str, first: &str, second: &str) -> JsonMergeError {
        collision(path, first, second)
    }

    /// A `by_name` aggregator's outputs merge as they are (names are `Cow`s), and so do pairs
    /// with owned names: no copying them into `(&str, Value)` first.
    #[tokio::test]
    async fn the_outputs_of_a_by_name_aggregator_merge_as_they_are() {
        let mut builder = crate::Aggregator::by_name();
        for (name, body) in [("profile", json!({"name": "Ada"})), ("balance", json!({"eur": 12}))] {
            let source = crate::fetcher_fn(move |_: &u32| {
                let body = body.clone();
                async move { Ok::<_, std::io::Error>(body) }
            });
            builder = builder.source(name, source);
        }
        let outputs = builder.build().unwrap().aggregate(&7).await.unwrap().outputs;
        let merged = merge_json(outputs, &JsonMerge::Namespaced).unwrap();
        assert_eq!(merged, json!({"profile": {"name": "Ada"}, "balance": {"eur": 12}}));
        assert_eq!(keys(&merged), ["profile", "balance"]);

        let owned = vec![(String::from("a"), json!({"x": 1})), (String::from("b"), json!({"y": 2}))];
        assert_eq!(merge_json(owned, &deep()).unwrap(), json!({"x": 1, "y": 2}));
    }

    #[test]
    fn namespaced_nests_outputs_under_source_names_in_declaration_order() {
        let outputs =
            [("zeta", json!([1])), ("alpha", json!("text")), ("mid", json!({"b": 1, "a": 2})), ("nil", Value::Null)];
        let merged = merge_json(outputs, &JsonMerge::Namespaced).unwrap();
        assert_eq!(keys(&merged), ["zeta", "alpha", "mid", "nil"]);
        assert_eq!(merged, json!({"zeta": [1], "alpha": "text", "mid": {"b": 1, "a": 2}, "nil": null}));
        assert_eq!(keys(&merged["mid"]), ["b", "a"], "an output's own key order is kept");
    }

    #[test]
    fn namespaced_is_the_default() {
        assert_eq!(JsonMerge::default(), JsonMerge::Namespaced);
    }

    #[test]
    fn namespaced_refuses_a_repeated_source_name() {
        let err = merge_json([("a", json!(1)), ("b", json!(2)), ("a", json!(3))], &JsonMerge::Namespaced).unwrap_err();
        assert_eq!(err, collision_at("/a", "a", "a"));
    }

    #[test]
    fn no_outputs_give_an_empty_object() {
        for policy in [JsonMerge::Namespaced, JsonMerge::Merged(Collision::Error), deep()] {
            assert_eq!(merge_json::<&str>([], &policy).unwrap(), json!({}), "{policy:?}");
        }
    }

    #[test]
    fn error_policy_unions_disjoint_keys_in_order_of_first_appearance() {
        let outputs = [("a", json!({"z": 1, "y": {"k": 1}})), ("b", json!({})), ("c", json!({"x": [2], "w": null}))];
        let merged = merge_json(outputs, &JsonMerge::Merged(Collision::Error)).unwrap();
        assert_eq!(keys(&merged), ["z", "y", "x", "w"]);
        assert_eq!(merged, json!({"z": 1, "y": {"k": 1}, "x": [2], "w": null}));
    }

    #[test]
    fn error_policy_refuses_a_shared_top_level_key_even_when_the_objects_could_merge() {
        let outputs = [
            ("a", json!({"x": 1, "account": {"id": 1}})),
            ("b", json!({"y": 2})),
            ("c", json!({"account": {"name": "n"}})),
        ];
        let err = merge_json(outputs, &JsonMerge::Merged(Collision::Error)).unwrap_err();
        assert_eq!(err, collision_at("/account", "a", "c"));
        assert_eq!(err.to_string(), "sources `a` and `c` both provide `/account`");
    }

    #[test]
    fn deep_merge_merges_nested_objects_keeping_first_appearance_order() {
        let outputs = [
            ("profile", json!({"account": {"id": 7, "name": "Ada"}, "kyc": "ok"})),
            ("balance", json!({"balance": "12.50", "account": {"iban": "X", "limits": {"daily": 5}}})),
            ("limits", json!({"account": {"limits": {"monthly": 50}}})),
        ];
        let merged = merge_json(outputs, &deep()).unwrap();
        assert_eq!(
            merged,
            json!({
                "account": {"id": 7, "name": "Ada", "iban": "X", "limits": {"daily": 5, "monthly": 50}},
                "kyc": "ok",
                "balance": "12.50",
            })
        );
        assert_eq!(keys(&merged), ["account", "kyc", "balance"]);
        assert_eq!(keys(&merged["account"]), ["id", "name", "iban", "limits"]);
        assert_eq!(keys(&merged["account"]["limits"]), ["daily", "monthly"]);
    }

    #[test]
    fn deep_merge_refuses_colliding_leaves_naming_the_path_and_both_sources() {
        let outputs = [("a", json!({"account": {"id": 1, "x": 0}})), ("b", json!({"account": {"y": 0, "id": 2}}))];
        let err = merge_json(outputs, &deep()).unwrap_err();
        assert_eq!(err, collision_at("/account/id", "a", "b"));
        assert_eq!(err.to_string(), "sources `a` and `b` both provide `/account/id`");
    }

    #[test]
    fn deep_merge_refuses_even_equal_leaves() {
        let err = merge_json([("a", json!({"v": 1})), ("b", json!({"v": 1}))], &deep()).unwrap_err();
        assert_eq!(err, collision_at("/v", "a", "b"));
        let err = merge_json([("a", json!({"v": null})), ("b", json!({"v": null}))], &deep()).unwrap_err();
        assert_eq!(err, collision_at("/v", "a", "b"));
    }

    #[test]
    fn deep_merge_names_the_source_that_breaks_an_object_merge() {
        // `a` and `b` agree that `/account` is an object; `c` is the one that disagrees.
        let outputs =
            [("a", json!({"account": {"id": 1}})), ("b", json!({"account": {"n": 2}})), ("c", json!({"account": 3}))];
        let err = merge_json(outputs, &deep()).unwrap_err();
        assert_eq!(err, collision_at("/account", "a", "c"));
        // When the first value is not an object, the next source collides with it.
        let outputs =
            [("a", json!({"account": [1]})), ("b", json!({"account": {"n": 2}})), ("c", json!({"account": 3}))];
        assert_eq!(merge_json(outputs, &deep()).unwrap_err(), collision_at("/account", "a", "b"));
    }

    #[test]
    fn deep_merge_does_not_append_arrays() {
        let err = merge_json([("a", json!({"l": [1]})), ("b", json!({"l": [2]}))], &deep()).unwrap_err();
        assert_eq!(err, collision_at("/l", "a", "b"));
    }

    #[test]
    fn collision_paths_escape_keys_as_json_pointer_says() {
        let outputs = [("a", json!({"a/b": {"c~d": 1}})), ("b", json!({"a/b": {"c~d": 2}}))];
        assert_eq!(merge_json(outputs, &deep()).unwrap_err(), collision_at("/a~1b/c~0d", "a", "b"));
        let outputs = [("a", json!({"": 1})), ("b", json!({"": 2}))];
        assert_eq!(merge_json(outputs, &deep()).unwrap_err(), collision_at("/", "a", "b"));
    }

    #[test]
    fn append_arrays_concatenates_in_declaration_order_and_deep_merges_objects() {
        let outputs = [
            ("recent", json!({"tx": [1, 2], "meta": {"pages": [1]}})),
            ("none", json!({"tx": []})),
            ("older", json!({"tx": [3], "meta": {"pages": [2], "total": 3}})),
        ];
        let merged = merge_json(outputs, &JsonMerge::Merged(Collision::AppendArrays)).unwrap();
        assert_eq!(merged, json!({"tx": [1, 2, 3], "meta": {"pages": [1, 2], "total": 3}}));
        assert_eq!(keys(&merged), ["tx", "meta"]);
    }

    #[test]
    fn append_arrays_refuses_an_array_colliding_with_anything_else() {
        let policy = JsonMerge::Merged(Collision::AppendArrays);
        let outputs = [("a", json!({"l": [1]})), ("b", json!({"l": [2]})), ("c", json!({"l": {"x": 1}}))];
        assert_eq!(merge_json(outputs, &policy).unwrap_err(), collision_at("/l", "a", "c"));
        let outputs = [("a", json!({"l": "s"})), ("b", json!({"l": "s"}))];
        assert_eq!(merge_json(outputs, &policy).unwrap_err(), collision_at("/l", "a", "b"));
    }

    #[test]
    fn prefer_takes_the_preferred_value_wherever_it_was_declared() {
        let outputs = || [("a", json!({"v": 1, "l": [1], "o": {"x": 1}})), ("b", json!({"v": 2, "l": [2], "o": 5}))];
        assert_eq!(merge_json(outputs(), &prefer("a")).unwrap(), json!({"v": 1, "l": [1], "o": {"x": 1}}));
        assert_eq!(merge_json(outputs(), &prefer("b")).unwrap(), json!({"v": 2, "l": [2], "o": 5}));
    }

    #[test]
    fn prefer_still_deep_merges_objects() {
        let outputs = [
            ("profile", json!({"user": {"name": "Ada", "kyc": "ok"}})),
            ("crm", json!({"user": {"name": "Ada L.", "segment": "vip"}, "since": 2020})),
        ];
        let merged = merge_json(outputs, &prefer("crm")).unwrap();
        assert_eq!(merged, json!({"user": {"name": "Ada L.", "kyc": "ok", "segment": "vip"}, "since": 2020}));
        assert_eq!(keys(&merged["user"]), ["name", "kyc", "segment"]);
    }

    #[test]
    fn prefer_refuses_a_collision_the_preferred_source_is_not_part_of() {
        let outputs = [("a", json!({"v": 1})), ("b", json!({"v": 2})), ("c", json!({"w": 3}))];
        assert_eq!(merge_json(outputs, &prefer("c")).unwrap_err(), collision_at("/v", "a", "b"));
    }

    #[test]
    fn prefer_refuses_an_unknown_source_before_looking_at_the_outputs() {
        let err = merge_json([("a", json!([])), ("b", json!({}))], &prefer("nope")).unwrap_err();
        assert_eq!(err, JsonMergeError::UnknownPreferred { name: "nope".into() });
        assert_eq!(err.to_string(), "preferred source `nope` is not one of the sources");
        assert!(matches!(merge_json::<&str>([], &prefer("a")), Err(JsonMergeError::UnknownPreferred { .. })));
    }

    #[test]
    fn merged_refuses_outputs_that_are_not_objects_naming_the_source_and_kind() {
        let cases = [
            (Value::Null, "null"),
            (json!(true), "boolean"),
            (json!(1.5), "number"),
            (json!("s"), "string"),
            (json!([]), "array"),
        ];
        for collision in
            [Collision::Error, Collision::DeepMerge, Collision::AppendArrays, Collision::Prefer("ok".into())]
        {
            for (value, found) in cases.clone() {
                let outputs = [("ok", json!({"k": 1})), ("bad", value), ("worse", json!(0))];
                let err = merge_json(outputs, &JsonMerge::Merged(collision.clone())).unwrap_err();
                assert_eq!(err, JsonMergeError::NotAnObject { source_name: "bad".into(), found }, "{collision:?}");
                assert_eq!(err.to_string(), format!("output of source `bad` is a JSON {found}, not an object"));
            }
        }
    }

    #[test]
    fn validate_refuses_an_unknown_preferred_source_and_repeated_namespaced_names() {
        let sources = ["profile", "transactions"];
        for policy in [JsonMerge::Namespaced, JsonMerge::Merged(Collision::Error), deep(), prefer("transactions")] {
            assert_eq!(policy.validate(&sources), Ok(()), "{policy:?}");
        }
        let unknown = JsonMergeError::UnknownPreferred { name: "balance".into() };
        assert_eq!(prefer("balance").validate(&sources), Err(unknown.clone()));
        assert_eq!(Collision::Prefer("balance".into()).validate(&sources), Err(unknown));
        assert_eq!(JsonMerge::Namespaced.validate(&["a", "b", "a"]), Err(collision_at("/a", "a", "a")));
        assert_eq!(deep().validate(&["a", "a"]), Ok(()));
    }

    #[test]
    fn error_messages_are_lower_case_without_a_full_stop() {
        let errors = [
            collision_at("/a", "x", "y"),
            JsonMergeError::NotAnObject { source_name: "x".into(), found: "array" },
            JsonMergeError::UnknownPreferred { name: "x".into() },
        ];
        for err in errors {
            let message = err.to_string();
            assert!(message.starts_with(|c: char| c.is_lowercase()), "{message}");
            assert!(!message.ends_with('.'), "{message}");
        }
    }

    fn key() -> impl Strategy<Value = String> {
        // A small alphabet, so that generated objects share keys often.
        "[a-c]{1,2}"
    }

    fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[a-z]{0,3}".prop_map(Value::from),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec((key(), inner), 0..4)
                    .prop_map(|entries| Value::Object(entries.into_iter().collect())),
            ]
        })
    }

    fn json_object() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::vec((key(), json_value()), 0..5).prop_map(|entries| entries.into_iter().collect())
    }

    /// Distinct source names in a random order.
    fn source_names() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec("[a-z]{1,5}", 0..8).prop_map(|mut names| {
            let mut seen = HashSet::new();
            names.retain(|name| seen.insert(name.clone()));
            names
        })
    }

    /// Objects with pairwise disjoint top-level keys: each distinct key goes to one source.
    fn disjoint_objects() -> impl Strategy<Value = Vec<Map<String, Value>>> {
        (1usize..5, prop::collection::vec(("[a-z]{1,4}", any::<prop::sample::Index>(), json_value()), 0..12)).prop_map(
            |(sources, entries)| {
                let mut objects = vec![Map::new(); sources];
                let mut seen = HashSet::new();
                for (key, owner, value) in entries {
                    if seen.insert(key.clone()) {
                        objects[owner.index(sources)].insert(key, value);
                    }
                }
                objects
            },
        )
    }

    /// Splits `value`'s leaves (non-objects and empty objects) among `parts`, keeping each
    /// leaf's path, so that deep-merging the parts must give `value` back.
    fn split(
        value: &Map<String, Value>,
        owners: &[prop::sample::Index],
        next: &mut usize,
        parts: &mut [Map<String, Value>],
    ) {
        for (key, child) in value {
            match child {
                Value::Object(object) if !object.is_empty() => {
                    let mut children = vec![Map::new(); parts.len()];
                    split(object, owners, next, &mut children);
                    for (part, child) in parts.iter_mut().zip(children) {
                        if !child.is_empty() {
                            part.insert(key.clone(), Value::Object(child));
                        }
                    }
                }
                leaf => {
                    let owner = owners.get(*next % owners.len().max(1)).map_or(0, |owner| owner.index(parts.len()));
                    *next += 1;
                    parts[owner].insert(key.clone(), leaf.clone());
                }
            }
        }
    }

    proptest! {
        #[test]
        fn namespaced_output_has_exactly_the_source_names_in_order(
            names in source_names(),
            values in prop::collection::vec(json_value(), 8),
        ) {
            let outputs: Vec<(&str, Value)> = names.iter().map(String::as_str).zip(values.iter().cloned()).collect();
            let merged = merge_json(outputs.clone(), &JsonMerge::Namespaced);
            prop_assert!(merged.is_ok(), "distinct names must not fail: {merged:?}");
            let merged = merged.unwrap();
            let expected_keys: Vec<&str> = outputs.iter().map(|(name, _)| *name).collect();
            prop_assert_eq!(keys(&merged), expected_keys, "keys must be the source names in declaration order");
            for (name, value) in &outputs {
                prop_assert_eq!(&merged[*name], value, "the output of {} must be kept as it is", name);
            }
            prop_assert_eq!(JsonMerge::Namespaced.validate(&names.iter().map(String::as_str).collect::<Vec<_>>()), Ok(()));
        }

        #[test]
        fn merging_disjoint_objects_is_the_plain_union_in_order(objects in disjoint_objects()) {
            let names: Vec<String> = (0..objects.len()).map(|i| format!("s{i}")).collect();
            let mut union = Map::new();
            for object in &objects {
                union.extend(object.clone());
            }
            let union = Value::Object(union);
            for collision in [Collision::Error, Collision::DeepMerge, Collision::AppendArrays, Collision::Prefer("s0".into())] {
                let outputs = names.iter().map(String::as_str).zip(objects.iter().cloned().map(Value::Object));
                let merged = merge_json(outputs, &JsonMerge::Merged(collision.clone()));
                prop_assert!(merged.is_ok(), "{:?} failed on disjoint keys: {:?}", collision, merged);
                let merged = merged.unwrap();
                prop_assert_eq!(&merged, &union, "{:?} must give the plain union", collision);
                prop_assert_eq!(keys(&merged), keys(&union), "{:?} must keep declaration order", collision);
            }
        }

        #[test]
        fn deep_merge_reassembles_an_object_split_among_sources(
            original in json_object(),
            sources in 1usize..5,
            owners in prop::collection::vec(any::<prop::sample::Index>(), 1..16),
        ) {
            let mut parts = vec![Map::new(); sources];
            split(&original, &owners, &mut 0, &mut parts);
            let names: Vec<String> = (0..sources).map(|i| format!("s{i}")).collect();
            let outputs = names.iter().map(String::as_str).zip(parts.iter().cloned().map(Value::Object));
            let merged = merge_json(outputs, &deep());
            prop_assert!(merged.is_ok(), "disjoint leaves must not collide: {merged:?} from {parts:?}");
            // `Value` equality ignores key order; the order may legitimately differ here.
            prop_assert_eq!(merged.unwrap(), Value::Object(original), "parts: {:?}", parts);
        }

        #[test]
        fn prefer_between_two_sources_never_fails_and_keeps_every_key(a in json_object(), b in json_object()) {
            for preferred in ["a", "b"] {
                let merged = merge_json([("a", Value::Object(a.clone())), ("b", Value::Object(b.clone()))], &prefer(preferred));
                prop_assert!(merged.is_ok(), "every collision involves `{preferred}`: {merged:?}");
                let merged = merged.unwrap();
                let mut expected_keys: Vec<&str> = a.keys().map(String::as_str).collect();
                expected_keys.extend(b.keys().map(String::as_str).filter(|key| !a.contains_key(*key)));
                prop_assert_eq!(keys(&merged), expected_keys);
                let (winner, loser) = if preferred == "a" { (&a, &b) } else { (&b, &a) };
                for (key, value) in winner {
                    if !(value.is_object() && loser.get(key).is_some_and(Value::is_object)) {
                        prop_assert_eq!(&merged[key.as_str()], value, "`{}` must come from `{}`", key, preferred);
                    }
                }
            }
        }
    }
}
