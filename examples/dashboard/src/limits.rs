//! The server's limits ([`Limits`], on by default) and the caller's deadline
//! ([`effective_deadline`]): how long one connection, one request and the whole server may
//! hold on to anything.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName};

/// The header a caller sends its remaining budget in, in whole milliseconds: the one the
/// dashboard's own HTTP sources send their backends.
pub const DEADLINE_HEADER: HeaderName = HeaderName::from_static("x-muster-deadline-ms");

/// The gRPC deadline header (`grpc-timeout: 250m`), honoured as well.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// What is kept back from a caller's budget to send the answer back to it in time.
pub const CALLER_MARGIN: Duration = Duration::from_millis(10);

/// The limits of the server, all on by default. Every one is a flag of the binary (see
/// `dashboard --help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// From when a connection starts waiting for a request head (it was accepted, or its
    /// previous response was sent) to when the whole head has arrived; then the connection
    /// is closed. Stops slowloris clients. Default 10 s.
    pub header_read_timeout: Duration,
    /// How long a connection may go with no request being served and no byte received
    /// before it is closed (keep-alive idle, or a client that connects and sends nothing).
    /// Default 5 s. A keep-alive connection is also bound by `header_read_timeout`.
    pub idle_timeout: Duration,
    /// How long a write of the response may make no progress (a client that does not read)
    /// before the connection is closed. Default 5 s.
    pub write_timeout: Duration,
    /// How long a response may take to be written, from its first byte to its last: a client
    /// that reads just enough to keep the write timeout away (a few KiB every few seconds) is
    /// cut off then. Default 30 s; keep it above the aggregation's deadline for streamed
    /// answers.
    pub response_timeout: Duration,
    /// Bytes of response bodies (of known size) held by the process at once, for every
    /// connection together; past it, an answer is replaced by 503 with `Retry-After`. Slow
    /// readers then pin this much memory at most, and the kernel at most
    /// [`SEND_BUFFER`](crate::server::SEND_BUFFER) (doubled) per connection. Default 64 MiB.
    pub max_response_buffer: usize,
    /// Open connections served normally. Past it, a connection gets one answer with
    /// `connection: close`: `/healthz` is answered, anything else is 503 with `Retry-After`;
    /// past `max_connections + max_connections / 8 + 8`, it is closed at once. Default 1024.
    pub max_connections: usize,
    /// Dashboard aggregations running at once; past it, 503 with `Retry-After` at once
    /// (`/healthz` is not counted). Default 512.
    pub max_in_flight: usize,
    /// The longest user id accepted, in bytes of the request path's id segment as sent
    /// (still percent-encoded); a longer one is 414 before any backend is called.
    /// Default 1024.
    pub max_id_len: usize,
    /// After SIGTERM or Ctrl-C: how long requests in flight may take to be answered before
    /// the process exits anyway. Default 5 s.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(30),
            max_response_buffer: 64 << 20,
            max_connections: 1024,
            max_in_flight: 512,
            max_id_len: 1024,
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl Limits {
    /// The connections beyond [`max_connections`](Self::max_connections) that still get
    /// their one answer (a 503, or `/healthz`) before the rest are closed unanswered.
    pub fn overflow_connections(&self) -> usize {
        self.max_connections / 8 + 8
    }
}

/// Descriptors kept for everything but the connections: stdio, the listener, the runtime's
/// event queue and wakers, the log writer, DNS lookups.
pub const RESERVED_DESCRIPTORS: usize = 32;

impl Limits {
    /// The file descriptors the caps can use at once: every connection served and overflowing,
    /// and for each aggregation in flight `per_aggregation` (one per backend connection, two
    /// when the backend is an in-process demo: both ends are ours), plus
    /// [`RESERVED_DESCRIPTORS`]. The backend pools hold at most as many idle connections as
    /// were once in use, so they are counted in the aggregations.
    ///
    /// ```
    /// use dashboard::limits::Limits;
    ///
    /// // 1024 + 136 overflowing + 512 × 3 backends + 32.
    /// assert_eq!(Limits::default().descriptors_needed(3), 2728);
    /// ```
    pub fn descriptors_needed(&self, per_aggregation: usize) -> usize {
        let aggregations = self.max_in_flight.saturating_mul(per_aggregation);
        (self.max_connections + self.overflow_connections()).saturating_add(aggregations) + RESERVED_DESCRIPTORS
    }

    /// These limits with the connection and in-flight caps lowered until they fit seven
    /// eighths of `available` descriptors (see [`descriptors_needed`](Self::descriptors_needed);
    /// the last eighth is headroom for sockets being closed and connections being shed): the aggregations
    /// get at most half of what is left after the reserve, the connections the rest;
    /// unchanged if they fit; `None` if not even one connection and one aggregation fit.
    ///
    /// ```
    /// use dashboard::limits::Limits;
    ///
    /// let fitted = Limits::default().fit_descriptors(1024, 3).expect("fits");
    /// assert!(fitted.descriptors_needed(3) <= 896);
    /// assert!(fitted.max_connections < 1024 && fitted.max_in_flight < 512);
    /// assert_eq!(Limits::default().fit_descriptors(100_000, 3), Some(Limits::default()));
    /// assert_eq!(Limits::default().fit_descriptors(40, 3), None);
    /// ```
    #[must_use]
    pub fn fit_descriptors(&self, available: usize, per_aggregation: usize) -> Option<Limits> {
        let available = available - available / 8;
        if self.descriptors_needed(per_aggregation) <= available {
            return Some(*self);
        }
        let per_aggregation = per_aggregation.max(1);
        // What the connections and aggregations share, the overflow's constant part aside.
        let budget = available.saturating_sub(RESERVED_DESCRIPTORS + 8);
        let mut fitted = *self;
        fitted.max_in_flight = self.max_in_flight.min((budget / 2 / per_aggregation).max(1));
        let left = budget.saturating_sub(fitted.max_in_flight * per_aggregation);
        fitted.max_connections = self.max_connections.min((left * 8 / 9).max(1));
        while fitted.descriptors_needed(per_aggregation) > available && fitted.max_connections > 1 {
            fitted.max_connections -= 1;
        }
        (fitted.descriptors_needed(per_aggregation) <= available).then_some(fitted)
    }
}

/// The caller's remaining budget, from `x-muster-deadline-ms` (whole milliseconds) or
/// `grpc-timeout` (an integer of at most 8 digits and a unit: `H`, `M`, `S`, `m`, `u`, `n`);
/// the smallest of every valid value sent, in either header or repeated. A value that does not
/// parse is ignored. `None` if there is no valid one.
///
/// ```
/// use std::time::Duration;
/// use axum::http::HeaderMap;
/// use dashboard::limits::caller_budget;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-muster-deadline-ms", "250".parse().unwrap());
/// assert_eq!(caller_budget(&headers), Some(Duration::from_millis(250)));
/// headers.insert("grpc-timeout", "100m".parse().unwrap());
/// assert_eq!(caller_budget(&headers), Some(Duration::from_millis(100)));
/// ```
pub fn caller_budget(headers: &HeaderMap) -> Option<Duration> {
    let values = |name, parse: fn(&str) -> Option<Duration>| {
        headers.get_all(name).into_iter().filter_map(move |value| value.to_str().ok().and_then(parse))
    };
    values(DEADLINE_HEADER, parse_millis).chain(values(GRPC_TIMEOUT, parse_grpc_timeout)).min()
}

/// The deadline an aggregation gets: the `configured` one, or the caller's budget (see
/// [`caller_budget`]) less [`CALLER_MARGIN`] if that is smaller. Zero means the caller's
/// budget is already spent: answer at once, call nothing.
///
/// ```
/// use std::time::Duration;
/// use axum::http::HeaderMap;
/// use dashboard::limits::effective_deadline;
///
/// let second = Duration::from_secs(1);
/// let mut headers = HeaderMap::new();
/// assert_eq!(effective_deadline(second, &headers), second);
/// headers.insert("x-muster-deadline-ms", "300".parse().unwrap());
/// assert_eq!(effective_deadline(second, &headers), Duration::from_millis(290));
/// headers.insert("x-muster-deadline-ms", "5000".parse().unwrap());
/// assert_eq!(effective_deadline(second, &headers), second);
/// ```
pub fn effective_deadline(configured: Duration, headers: &HeaderMap) -> Duration {
    match caller_budget(headers) {
        Some(budget) => configured.min(budget.saturating_sub(CALLER_MARGIN)),
        None => configured,
    }
}

/// Whole milliseconds: ASCII digits only, at most 10 of them (so it cannot overflow).
fn parse_millis(value: &str) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() || value.len() > 10 || !value.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    value.parse().ok().map(Duration::from_millis)
}

/// gRPC's `TimeoutValue TimeoutUnit`: 1 to 8 digits, then `H`, `M`, `S`, `m`, `u` or `n`.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let value = value.trim();
    if !value.is_ascii() {
        return None;
    }
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("a header value"));
        }
        map
    }

    #[test]
    fn the_muster_header_is_whole_milliseconds() {
        assert_eq!(parse_millis("250"), Some(Duration::from_millis(250)));
        assert_eq!(parse_millis("0"), Some(Duration::ZERO));
        for bad in ["", "-1", "1.5", "1e3", "12ms", "99999999999", " "] {
            assert_eq!(parse_millis(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn grpc_timeouts_have_a_unit() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("1500u"), Some(Duration::from_micros(1500)));
        assert_eq!(parse_grpc_timeout("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "m", "10", "10s", "123456789m", "-1m", "1.5S", "ü"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_effective_deadline_is_the_smaller_less_the_margin() {
        let configured = Duration::from_secs(1);
        assert_eq!(effective_deadline(configured, &headers(&[])), configured);
        let caller = headers(&[("x-muster-deadline-ms", "200")]);
        assert_eq!(effective_deadline(configured, &caller), Duration::from_millis(190));
        let generous = headers(&[("x-muster-deadline-ms", "60000")]);
        assert_eq!(effective_deadline(configured, &generous), configured);
        let spent = headers(&[("x-muster-deadline-ms", "5")]);
        assert_eq!(effective_deadline(configured, &spent), Duration::ZERO, "a spent budget is zero, not negative");
        let both = headers(&[("x-muster-deadline-ms", "400"), ("grpc-timeout", "100m")]);
        assert_eq!(effective_deadline(configured, &both), Duration::from_millis(90), "the smaller of the two");
        let repeated = headers(&[("x-muster-deadline-ms", "600"), ("x-muster-deadline-ms", "300")]);
        assert_eq!(caller_budget(&repeated), Some(Duration::from_millis(300)), "the tighter of repeated values");
        let garbage = headers(&[("x-muster-deadline-ms", "soon"), ("grpc-timeout", "1x")]);
        assert_eq!(effective_deadline(configured, &garbage), configured, "garbage is ignored");
    }

    #[test]
    fn the_caps_are_lowered_to_fit_the_descriptors() {
        let limits = Limits::default();
        for available in [64, 256, 1024, 2000] {
            let fitted = limits.fit_descriptors(available, 6).expect("fits");
            assert!(fitted.descriptors_needed(6) <= available * 7 / 8 + 1, "{available}: {fitted:?}");
            assert!(fitted.max_connections >= 1 && fitted.max_in_flight >= 1);
            // Connections are cheaper than aggregations: there are more of them.
            assert!(fitted.max_connections >= fitted.max_in_flight, "{available}: {fitted:?}");
            assert!(fitted.max_connections < 1024 && fitted.max_in_flight < 512, "{available}: {fitted:?}");
        }
        assert_eq!(limits.fit_descriptors(52, 6), None, "not one connection and one aggregation in 46");
        assert!(limits.fit_descriptors(53, 6).is_some(), "one connection and one aggregation in 47");
    }

    #[test]
    fn the_overflow_scales_with_the_cap() {
        let limits = Limits { max_connections: 80, ..Limits::default() };
        assert_eq!(limits.overflow_connections(), 18);
    }
}
