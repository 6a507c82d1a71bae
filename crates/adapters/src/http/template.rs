//! URL templates: parsing and validation at build time, rendering with percent-encoded values
//! at fetch time, and resolving redirect targets.

use std::fmt::Write as _;

use ::http::Uri;
use ::http::uri::Scheme;

use super::error::{HttpConfigError, HttpError};
use super::params::UrlParams;

/// A validated URL template: literal text and placeholders, in order.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    source: String,
    parts: Vec<Part>,
    /// The length of the literal text, to size the rendered URL.
    literal_len: usize,
}

#[derive(Debug, Clone)]
enum Part {
    Literal(String),
    /// A placeholder in the path: its value must not be empty.
    Path(String),
    /// A placeholder in a query value: its value may be empty.
    Query(String),
}

impl Template {
    /// Parses and validates `template`: an absolute `http`/`https` URL without user info or
    /// fragment, whose `{name}` placeholders sit in path segments or query values only.
    pub(crate) fn parse(template: &str) -> Result<Self, HttpConfigError> {
        let invalid =
            |reason: &str| HttpConfigError::Template { template: template.to_owned(), reason: reason.to_owned() };

        let (scheme, rest) =
            template.split_once("://").ok_or_else(|| invalid("expected an absolute http:// or https:// URL"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(invalid("expected an absolute http:// or https:// URL"));
        }
        if cfg!(not(feature = "tls")) && scheme == "https" {
            return Err(invalid("https needs the `tls` feature, which this build of muster does not enable"));
        }
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, rest) = rest.split_at(authority_end);
        if authority.contains(['{', '}']) {
            return Err(invalid("placeholders are allowed in path segments and query values, not in the host or port"));
        }
        if authority.is_empty() {
            return Err(invalid("the URL has no host"));
        }
        if authority.contains('@') {
            return Err(invalid("credentials in the URL are not supported; send them with `.header()`"));
        }
        if rest.contains('#') {
            return Err(invalid("a fragment is never sent to the server; remove it"));
        }

        let mut parts = vec![Part::Literal(format!("{scheme}://{authority}"))];
        let (path, query) = match rest.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (rest, None),
        };
        split_placeholders(path, Part::Path, &mut parts).map_err(|reason| invalid(&reason))?;
        if let Some(query) = query {
            push_literal(&mut parts, "?");
            for (index, pair) in query.split('&').enumerate() {
                if index > 0 {
                    push_literal(&mut parts, "&");
                }
                let (key, value) = match pair.split_once('=') {
                    Some((key, value)) => (key, Some(value)),
                    None => (pair, None),
                };
                if key.contains(['{', '}']) {
                    return Err(invalid("placeholders are allowed in query values, not in query keys"));
                }
                push_literal(&mut parts, key);
                if let Some(value) = value {
                    push_literal(&mut parts, "=");
                    split_placeholders(value, Part::Query, &mut parts).map_err(|reason| invalid(&reason))?;
                }
            }
        }

        let literal_len = parts.iter().map(|part| if let Part::Literal(text) = part { text.len() } else { 0 }).sum();
        let parsed = Self { source: template.to_owned(), parts, literal_len };
        // Every rendered value is unreserved characters and `%XX` escapes, so if the template
        // renders to a valid URI with a sample value, it does with any value.
        let sample = parsed.render(&"x").map_err(|_| invalid("not a valid URI"))?;
        if sample.scheme().is_none() || sample.host().is_none_or(str::is_empty) {
            return Err(invalid("expected an absolute http:// or https:// URL"));
        }
        Ok(parsed)
    }

    /// The template as given.
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// The placeholders' names, in order (a repeated one each time it appears).
    pub(crate) fn placeholders(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Path(name) | Part::Query(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Substitutes each placeholder with its percent-encoded value from `params`.
    pub(crate) fn render<P: UrlParams + ?Sized>(&self, params: &P) -> Result<Uri, HttpError> {
        let mut url = String::with_capacity(self.literal_len + 16);
        for part in &self.parts {
            match part {
                Part::Literal(text) => url.push_str(text),
                Part::Path(name) | Part::Query(name) => {
                    let value = params
                        .param(name)
                        .filter(|value| !value.is_empty() || matches!(part, Part::Query(_)))
                        .ok_or_else(|| HttpError::MissingParam { name: name.clone() })?;
                    encode_into(&mut url, value.as_bytes());
                }
            }
        }
        Uri::try_from(url).map_err(|source| HttpError::InvalidUrl { source })
    }
}

fn push_literal(parts: &mut Vec<Part>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(Part::Literal(last)) = parts.last_mut() {
        last.push_str(text);
    } else {
        parts.push(Part::Literal(text.to_owned()));
    }
}

/// Splits `text` into literals and `{name}` placeholders (made with `placeholder`).
fn split_placeholders(mut text: &str, placeholder: fn(String) -> Part, parts: &mut Vec<Part>) -> Result<(), String> {
    while let Some(open) = text.find(['{', '}']) {
        let (literal, rest) = text.split_at(open);
        push_literal(parts, literal);
        if rest.starts_with('}') {
            return Err("unmatched `}`".to_owned());
        }
        let close = rest.find('}').ok_or("unclosed `{`")?;
        let name = &rest[1..close];
        if name.is_empty() || !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-') {
            return Err(format!("placeholder `{{{name}}}` must be a name made of letters, digits, `_` and `-`"));
        }
        parts.push(placeholder(name.to_owned()));
        text = &rest[close + 1..];
    }
    push_literal(parts, text);
    Ok(())
}

/// Appends `value` percent-encoded so that it stays one path segment or query value: every
/// byte but the RFC 3986 unreserved characters is encoded, and so is `.`, so that `.` and
/// `..` become `%2E` and `%2E%2E` and never act as dot segments.
pub(crate) fn encode_into(out: &mut String, value: &[u8]) {
    for &byte in value {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            // Writing to a `String` cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
}

/// Resolves a redirect's `Location` against the URI that was requested (RFC 3986, section
/// 5.2). `None` if the result is not an absolute URI with the same scheme as `base`.
pub(crate) fn resolve_redirect(base: &Uri, location: &str) -> Option<Uri> {
    let location = location.split('#').next().unwrap_or_default();
    let scheme = base.scheme()?;
    let authority = base.authority()?;
    let target = if has_scheme(location) {
        location.to_owned()
    } else if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else {
        let (path, query) = match location.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (location, None),
        };
        let path = if path.starts_with('/') {
            remove_dot_segments(path)
        } else if path.is_empty() {
            base.path().to_owned()
        } else {
            let base_path = base.path();
            let directory = base_path.rfind('/').map_or("/", |slash| &base_path[..=slash]);
            remove_dot_segments(&format!("{directory}{path}"))
        };
        let query = match (query, location.is_empty()) {
            (Some(query), _) => Some(query),
            (None, true) => base.query(),
            (None, false) => None,
        };
        match query {
            Some(query) => format!("{scheme}://{authority}{path}?{query}"),
            None => format!("{scheme}://{authority}{path}"),
        }
    };
    let target = Uri::try_from(target).ok()?;
    let same_scheme = target.scheme() == Some(scheme);
    let web = target.scheme() == Some(&Scheme::HTTP) || target.scheme() == Some(&Scheme::HTTPS);
    (same_scheme && web && target.host().is_some_and(|host| !host.is_empty())).then_some(target)
}

/// Whether `reference` starts with a URI scheme (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"`).
fn has_scheme(reference: &str) -> bool {
    let Some(colon) = reference.find(':') else { return false };
    let scheme = &reference.as_bytes()[..colon];
    scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme.iter().all(|&byte| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'-' | b'.'))
}

/// RFC 3986 `remove_dot_segments` for an absolute path. Only literal `.` and `..` segments are
/// dot segments; encoded ones (`%2E%2E`) are left alone.
fn remove_dot_segments(path: &str) -> String {
    let mut output: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (index, segment) in segments.iter().enumerate() {
        let last = index + 1 == segments.len();
        match *segment {
            "." | ".." => {
                if *segment == ".." {
                    output.pop();
                }
                if last {
                    output.push("");
                }
            }
            segment => output.push(segment),
        }
    }
    let mut result = String::with_capacity(path.len());
    for segment in output {
        result.push('/');
        result.push_str(segment);
    }
    if result.is_empty() {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(template: &str, value: &str) -> String {
        Template::parse(template).map(|t| t.render(value).map(|uri| uri.to_string())).unwrap().unwrap()
    }

    fn reason(template: &str) -> String {
        match Template::parse(template) {
            Err(HttpConfigError::Template { reason, .. }) => reason,
            other => panic!("{template}: expected a template error, got {other:?}"),
        }
    }

    #[test]
    fn values_are_encoded_as_one_segment() {
        let base = "http://host/v1/users/{id}";
        assert_eq!(render(base, "7"), "http://host/v1/users/7");
        assert_eq!(render(base, ".."), "http://host/v1/users/%2E%2E");
        assert_eq!(render(base, "."), "http://host/v1/users/%2E");
        assert_eq!(render(base, "../admin"), "http://host/v1/users/%2E%2E%2Fadmin");
        assert_eq!(render(base, "%2e%2e"), "http://host/v1/users/%252e%252e");
        assert_eq!(render(base, "a?b#c d"), "http://host/v1/users/a%3Fb%23c%20d");
        assert_eq!(render(base, "a\r\nHost: x"), "http://host/v1/users/a%0D%0AHost%3A%20x");
        assert_eq!(render(base, "ü"), "http://host/v1/users/%C3%BC");
        assert_eq!(render(base, "A-z_0~9"), "http://host/v1/users/A-z_0~9");
    }

    #[test]
    fn query_values_are_encoded_and_may_be_empty() {
        let template = "http://host/search?q={q}&fixed=1";
        assert_eq!(render(template, "a&b=c"), "http://host/search?q=a%26b%3Dc&fixed=1");
        assert_eq!(render(template, ""), "http://host/search?q=&fixed=1");
    }

    #[test]
    fn an_empty_or_missing_path_value_is_refused() {
        let template = Template::parse("http://host/users/{id}/profile").unwrap();
        assert!(matches!(template.render(""), Err(HttpError::MissingParam { name }) if name == "id"));
        assert!(matches!(template.render(&[("other", "1")]), Err(HttpError::MissingParam { name }) if name == "id"));
    }

    #[test]
    fn placeholders_may_share_a_segment_with_literals() {
        let template = Template::parse("http://host:8080/files/{name}.json?v={v}").unwrap();
        let uri = template.render(&[("name", "a.b"), ("v", "2")]).unwrap();
        assert_eq!(uri.to_string(), "http://host:8080/files/a%2Eb.json?v=2");
        assert_eq!(template.as_str(), "http://host:8080/files/{name}.json?v={v}");
    }

    #[test]
    fn an_https_template_needs_the_tls_feature() {
        let parsed = Template::parse("HTTPS://host/v1/users/{id}");
        if cfg!(feature = "tls") {
            assert!(parsed.is_ok(), "{parsed:?}");
        } else {
            assert!(reason("HTTPS://host/v1/users/{id}").contains("the `tls` feature"));
        }
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        assert!(reason("http://{host}/x").contains("not in the host"));
        assert!(reason("http://host:{port}/x").contains("not in the host or port"));
        assert!(reason("{scheme}://host/x").contains("absolute"));
        assert!(reason("ftp://host/{id}").contains("absolute"));
        assert!(reason("/relative/{id}").contains("absolute"));
        assert!(reason("http:///{id}").contains("no host"));
        assert!(reason("http://user:pw@host/{id}").contains("credentials"));
        assert!(reason("http://host/{id}#top").contains("fragment"));
        assert!(reason("http://host/?{key}=1").contains("query keys"));
        assert!(reason("http://host/{id").contains("unclosed"));
        assert!(reason("http://host/id}").contains("unmatched"));
        assert!(reason("http://host/{}").contains("must be a name"));
        assert!(reason("http://host/{a b}").contains("must be a name"));
        assert!(reason("http://host/a b/{id}").contains("not a valid URI"));
    }

    #[test]
    fn redirects_resolve_like_rfc_3986() {
        let base: Uri = "http://a/b/c/d;p?q".parse().unwrap();
        let resolve = |location: &str| resolve_redirect(&base, location).map(|uri| uri.to_string());
        assert_eq!(resolve("g").as_deref(), Some("http://a/b/c/g"));
        assert_eq!(resolve("./g").as_deref(), Some("http://a/b/c/g"));
        assert_eq!(resolve("../g").as_deref(), Some("http://a/b/g"));
        assert_eq!(resolve("../../../g").as_deref(), Some("http://a/g"));
        assert_eq!(resolve("/g?y#s").as_deref(), Some("http://a/g?y"));
        assert_eq!(resolve("?y").as_deref(), Some("http://a/b/c/d;p?y"));
        assert_eq!(resolve("").as_deref(), Some("http://a/b/c/d;p?q"));
        assert_eq!(resolve("//g/x").as_deref(), Some("http://g/x"));
        assert_eq!(resolve("http://other:81/x").as_deref(), Some("http://other:81/x"));
        assert_eq!(resolve("/%2E%2E/x").as_deref(), Some("http://a/%2E%2E/x"));
        assert_eq!(resolve("https://a/x"), None, "another scheme");
        assert_eq!(resolve("file:///etc/passwd"), None);
        assert_eq!(resolve("http://"), None);
    }
}
