use std::borrow::Cow;
use std::time::Duration;

/// Why a set of options was refused.
///
/// Returned by [`GroupConfig::build`](crate::GroupConfig::build) (and by the constructors of
/// the crates that take options); the configuration is not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionError {
    /// A deadline of zero would fail every group before it starts.
    #[error("the deadline must be greater than zero")]
    ZeroDeadline,
    /// A concurrency limit of zero would never start a task.
    #[error("the concurrency limit must be at least 1")]
    ZeroLimit,
    /// A request-context field needs a name.
    #[error("a context field name must not be empty")]
    EmptyFieldName,
    /// Two request-context fields share a name.
    #[error("context field `{0}` is set twice")]
    DuplicateField(Cow<'static, str>),
    /// A per-source timeout of zero would fail every attempt.
    #[error("the source timeout must be greater than zero")]
    ZeroTimeout,
    /// A hedge delay of zero would always run two attempts at once.
    #[error("the hedge delay must be greater than zero")]
    ZeroHedge,
    /// A retry policy needs at least one attempt.
    #[error("a retry policy needs at least 1 attempt")]
    ZeroAttempts,
    /// The backoff bounds are inverted or zero.
    #[error("the retry backoff must satisfy 0 < max and min <= max (min {min:?}, max {max:?})")]
    Backoff {
        /// The first backoff.
        min: Duration,
        /// The largest backoff.
        max: Duration,
    },
    /// The jitter ratio must be finite and in `0.0..100.0`.
    #[error("the retry jitter must be a finite ratio in 0..100, not {0}")]
    Jitter(String),
    /// A cache with a zero ttl and a zero stale-if-error window would keep nothing.
    #[error("a cache needs a ttl or a stale_if_error window greater than zero")]
    ZeroCache,
    /// A cache holding zero entries would store nothing.
    #[error("a cache's capacity must be at least 1 entry")]
    ZeroCapacity,
    /// A value of a policy is out of its range: a zero window, a rate over 100 %, ...
    #[error("{policy}: {problem}")]
    Invalid {
        /// The policy, e.g. `circuit breaker`.
        policy: &'static str,
        /// What is wrong, e.g. `the failure rate must be in (0, 100] %, not 150`.
        problem: String,
    },
}
