use std::error::Error;
use std::fmt;
use std::time::Duration;

use crate::cancel::{Cause, Name, write_names};

/// A boxed error, the currency of errors returned by tasks and fetchers (as in tower).
///
/// A box hides its error's type, so its [kind](crate::Classify::kind) is found in the error itself:
/// [`Classify`](crate::Classify) for a `BoxError` walks its [`source()`](Error::source) chain, from the outside
/// in, for the first error that says what it is: one boxed with [`boxed`](crate::boxed), which
/// remembers its kind and retry verdict, or an [`io::Error`](std::io::Error). Anything else
/// is `failed` and retryable (the retry cannot tell, and what reaches it boxed, like tower's
/// errors, is mostly transient).
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// What kind of failure it was: the one vocabulary of muster's errors, reports, log events,
/// metrics and HTTP error bodies.
///
/// The vocabulary is open, like `http::StatusCode`: a kind is a stable snake_case word, and an
/// adapter or a user adds one without touching muster (`ErrorKind::new("grpc_unavailable")`).
/// The built-in words are associated constants, stable within a major version, and usable as
/// `match` patterns. A group's own failures are `Failed`, `Panicked`, `Timeout` and
/// `Cancelled`; a source's error says what it is through [`Classify`](crate::Classify) (the
/// HTTP fetcher's errors are `Status`, `Connect`, `Timeout`, `BodyTooLarge`, ...), and every
/// policy wrapper passes that on.
///
/// ```
/// # use muster_core as muster;
/// use muster::ErrorKind;
///
/// const DB_DEADLOCK: ErrorKind = ErrorKind::new("db_deadlock");
///
/// fn status_code(kind: ErrorKind) -> u16 {
///     match kind {
///         ErrorKind::Timeout => 504,
///         DB_DEADLOCK => 503,
///         _ => 502,
///     }
/// }
/// assert_eq!(status_code(ErrorKind::Timeout), 504);
/// assert_eq!(status_code(ErrorKind::new("db_deadlock")), 503);
/// assert_eq!(DB_DEADLOCK.to_string(), "db_deadlock");
/// assert_eq!(ErrorKind::BodyTooLarge.as_str(), "body_too_large");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ErrorKind(&'static str);

// The built-in kinds are named like the variants of the enum they were in muster 0.2, so that
// code written against it (paths and `match` patterns) keeps compiling.
#[allow(non_upper_case_globals)]
impl ErrorKind {
    /// `failed`: a task returned an error (of no more specific kind).
    pub const Failed: ErrorKind = ErrorKind("failed");
    /// `panicked`: a task panicked.
    pub const Panicked: ErrorKind = ErrorKind("panicked");
    /// `timeout`: a deadline passed: the group's, or a source's own timeout.
    pub const Timeout: ErrorKind = ErrorKind("timeout");
    /// `cancelled`: the group was cancelled from outside, through a parent
    /// [`CancelToken`](crate::CancelToken).
    pub const Cancelled: ErrorKind = ErrorKind("cancelled");
    /// `status`: a backend answered an unexpected status (HTTP non-2xx).
    pub const Status: ErrorKind = ErrorKind("status");
    /// `connect`: no connection could be made (refused, DNS, TLS).
    pub const Connect: ErrorKind = ErrorKind("connect");
    /// `body_too_large`: the response body was larger than allowed.
    pub const BodyTooLarge: ErrorKind = ErrorKind("body_too_large");
    /// `invalid_json`: the response body was not valid JSON (or not of the expected shape).
    pub const InvalidJson: ErrorKind = ErrorKind("invalid_json");
    /// `content_type`: the response had an unexpected content type (or a content encoding it
    /// was not asked for).
    pub const ContentType: ErrorKind = ErrorKind("content_type");
    /// `redirect`: the backend redirected and redirects are not followed.
    pub const Redirect: ErrorKind = ErrorKind("redirect");
    /// `protocol`: the exchange broke off: a malformed or interrupted response.
    pub const Protocol: ErrorKind = ErrorKind("protocol");
    /// `invalid_request`: the request could not be made from its inputs (a missing or
    /// unencodable value, an invalid URL).
    pub const InvalidRequest: ErrorKind = ErrorKind("invalid_request");
    /// `circuit_open`: a circuit breaker refused the call without trying the source, which
    /// failed too often recently.
    pub const CircuitOpen: ErrorKind = ErrorKind("circuit_open");
}

impl ErrorKind {
    /// A kind of its own: `name` is a stable snake_case word (`"grpc_unavailable"`,
    /// `"db_deadlock"`), used as is in logs, metric labels and JSON. Two kinds are equal when
    /// their words are, so `ErrorKind::new("timeout") == ErrorKind::Timeout`.
    ///
    /// ```
    /// # use muster_core as muster;
    /// use muster::ErrorKind;
    ///
    /// let unavailable = ErrorKind::new("grpc_unavailable");
    /// assert_eq!(unavailable.as_str(), "grpc_unavailable");
    /// assert_eq!(ErrorKind::new("timeout"), ErrorKind::Timeout);
    /// ```
    pub const fn new(name: &'static str) -> ErrorKind {
        ErrorKind(name)
    }

    /// The word, stable for logs, metrics and JSON. The built-in ones are `failed`,
    /// `panicked`, `timeout`, `cancelled`, `status`, `connect`, `body_too_large`,
    /// `invalid_json`, `content_type`, `redirect`, `protocol`, `invalid_request` and
    /// `circuit_open`.
    pub const fn as_str(self) -> &'static str {
        self.0
    }
}

/// The word, as in logs and JSON.
impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// The word, as `ErrorKind(status)`.
impl fmt::Debug for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorKind({})", self.0)
    }
}

/// `duration` in whole milliseconds, rounded to the nearest: a deadline counted from a
/// request's arrival reads as the budget it was, not a microsecond less.
#[doc(hidden)]
pub fn rounded_ms(duration: Duration) -> u128 {
    (duration.as_micros() + 500) / 1000
}

/// Why [`Group::wait`](crate::Group::wait) failed: the root cause, and what it cancelled.
///
/// The root cause is the first task to fail (by completion time; ties at the same instant go
/// to the earlier-spawned task), the deadline, or the parent's cancellation. Siblings stopped
/// because of it are listed by [`GroupError::cancelled`]: they were cancelled by the failed
/// source, they did not fail themselves.
///
/// ```
/// # use muster_core as muster;
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use muster::{ErrorKind, Group};
///
/// let mut group = Group::new();
/// group.spawn("profile", async { Err::<u32, _>("connection refused") }).unwrap();
/// let error = group.wait().await.unwrap_err();
/// assert_eq!(error.kind(), ErrorKind::Failed);
/// assert_eq!(error.source_name(), Some("profile"));
/// assert!(error.to_string().starts_with("source `profile` failed"));
/// # }
/// ```
pub struct GroupError {
    inner: Box<Inner>,
}

struct Inner {
    kind: ErrorKind,
    cause: Cause,
    elapsed: Duration,
    cancelled: Vec<Name>,
    also_failed: Vec<Name>,
    fields: Vec<(Name, String)>,
    secondary: Vec<Cause>,
}

impl GroupError {
    pub(crate) fn new(
        kind: ErrorKind,
        cause: Cause,
        elapsed: Duration,
        cancelled: Vec<Name>,
        also_failed: Vec<Name>,
        fields: Vec<(Name, String)>,
    ) -> Self {
        let secondary = Vec::new();
        Self { inner: Box::new(Inner { kind, cause, elapsed, cancelled, also_failed, fields, secondary }) }
    }

    /// Records the secondary failures (drop panics) found while cancelling.
    pub(crate) fn set_secondary(&mut self, secondary: Vec<Cause>) {
        self.inner.secondary = secondary;
    }

    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// The root cause, as the group's [`CancelToken`](crate::CancelToken) reports it.
    pub fn cause(&self) -> &Cause {
        &self.inner.cause
    }

    /// The task that failed or panicked; `None` for a deadline or an outside cancellation
    /// (even when the parent was cancelled because one of *its* tasks failed: that task is
    /// in [`cause`](GroupError::cause), not in this group).
    pub fn source_name(&self) -> Option<&str> {
        match self.inner.kind {
            ErrorKind::Failed | ErrorKind::Panicked => self.inner.cause.source_name(),
            _ => None,
        }
    }

    /// The tasks still pending at the deadline, in spawn order; empty for other kinds.
    pub fn pending(&self) -> &[Name] {
        match (self.inner.kind, &self.inner.cause) {
            (ErrorKind::Timeout, Cause::Deadline { pending, .. }) => pending,
            _ => &[],
        }
    }

    /// Time from the group's creation to the failure.
    pub fn elapsed(&self) -> Duration {
        self.inner.elapsed
    }

    /// The tasks that were cancelled (dropped while running, or never started), in spawn
    /// order.
    pub fn cancelled(&self) -> &[Name] {
        &self.inner.cancelled
    }

    /// Other tasks that failed at the same instant as the root cause; they lost the tie to
    /// an earlier-spawned task and are recorded here rather than merged into the error.
    pub fn also_failed(&self) -> &[Name] {
        &self.inner.also_failed
    }

    /// Secondary failures: cancelled tasks that panicked while being dropped, each as a
    /// [`Cause::Panicked`] naming the task, in spawn order. They do not change the root cause;
    /// the panic was contained.
    pub fn secondary(&self) -> &[Cause] {
        &self.inner.secondary
    }

    /// The request-context fields given to the group (see
    /// [`Field`](muster_options::Field)), in order.
    pub fn fields(&self) -> &[(Name, String)] {
        &self.inner.fields
    }

    /// Whether a task returned an error.
    pub fn is_failed(&self) -> bool {
        self.kind() == ErrorKind::Failed
    }

    /// Whether a task panicked.
    pub fn is_panic(&self) -> bool {
        self.kind() == ErrorKind::Panicked
    }

    /// Whether the deadline passed.
    pub fn is_timeout(&self) -> bool {
        self.kind() == ErrorKind::Timeout
    }

    /// Whether the group was cancelled from outside.
    pub fn is_cancelled(&self) -> bool {
        self.kind() == ErrorKind::Cancelled
    }
}

impl fmt::Display for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Inner { kind, cause, elapsed, fields, .. } = &*self.inner;
        match (*kind, cause) {
            // The task's error is this error's `source()`, so it is not repeated here.
            (ErrorKind::Failed, Cause::Failed { name, .. }) => {
                write!(f, "source `{name}` failed after {}ms", elapsed.as_millis())?
            }
            (ErrorKind::Panicked, Cause::Panicked { name, message }) => {
                write!(f, "source `{name}` panicked after {}ms: {message}", elapsed.as_millis())?;
            }
            (ErrorKind::Timeout, Cause::Deadline { after, pending }) => {
                write!(f, "deadline of {}ms elapsed; pending: ", rounded_ms(*after))?;
                write_names(f, pending)?;
            }
            // Cancelled from outside. A parent's failed task or a reason is this error's
            // `source()`, so only named here.
            (_, Cause::Failed { name, .. }) => {
                write!(f, "group stopped after {}ms: cancelled by `{name}`", elapsed.as_millis())?
            }
            (_, Cause::Reason { .. }) => {
                write!(f, "group stopped after {}ms: cancelled by the caller", elapsed.as_millis())?
            }
            (_, other) => write!(f, "group stopped after {}ms: {other}", elapsed.as_millis())?,
        }
        for (i, (name, value)) in fields.iter().enumerate() {
            let separator = if i == 0 { " (" } else { ", " };
            write!(f, "{separator}{name}={value}")?;
        }
        if !fields.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl fmt::Debug for GroupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Inner { kind, cause, elapsed, cancelled, also_failed, fields, secondary } = &*self.inner;
        f.debug_struct("GroupError")
            .field("kind", kind)
            .field("cause", cause)
            .field("elapsed", elapsed)
            .field("cancelled", cancelled)
            .field("also_failed", also_failed)
            .field("fields", fields)
            .field("secondary", secondary)
            .finish()
    }
}

impl Error for GroupError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.inner.cause {
            Cause::Failed { error, .. } | Cause::Reason { reason: error } => Some(&**error),
            _ => None,
        }
    }
}

/// Why [`Group::spawn`](crate::Group::spawn) (or a [`GroupHandle`](crate::GroupHandle)'s)
/// refused a task. The task was dropped without being polled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// A task with this name was already spawned; it keeps running.
    #[error("a task named `{0}` already exists in this group")]
    DuplicateName(Name),
    /// The group has been cancelled and admits no new task.
    #[error("task `{name}` refused: the group is closed ({cause})")]
    Closed {
        /// The refused task.
        name: Name,
        /// Why the group was cancelled.
        cause: Cause,
    },
    /// [`try_spawn`](crate::Group::try_spawn) found every slot under the concurrency limit
    /// taken (or tasks already queued for them).
    #[error("task `{name}` refused: all {limit} slots are taken")]
    Full {
        /// The refused task.
        name: Name,
        /// The group's concurrency limit.
        limit: usize,
    },
}

/// Why [`try_spawn`](crate::Group::try_spawn) refused a task, with the task, unpolled, so the
/// caller can run it elsewhere, retry later or drop it.
///
/// ```
/// # use muster_core as muster;
/// use muster::{Group, SpawnError};
/// use muster::Limit;
///
/// let mut group = Group::with_options(Limit(1))?;
/// group.try_spawn("first", async { Ok::<u32, std::io::Error>(1) }).unwrap();
/// let refused = group.try_spawn("second", async { Ok::<u32, std::io::Error>(2) }).unwrap_err();
/// assert!(matches!(refused.error(), SpawnError::Full { limit: 1, .. }));
/// let task = refused.into_task(); // not polled: run it some other way
/// # drop(task); drop(group);
/// # Ok::<(), muster::OptionError>(())
/// ```
pub struct TrySpawnError<F> {
    error: SpawnError,
    task: F,
}

impl<F> TrySpawnError<F> {
    pub(crate) fn new(error: SpawnError, task: F) -> Self {
        Self { error, task }
    }

    /// Why the task was refused: [`SpawnError::Full`], or what
    /// [`spawn`](crate::Group::spawn) would have refused it for.
    pub fn error(&self) -> &SpawnError {
        &self.error
    }

    /// The refused task, never polled.
    pub fn into_task(self) -> F {
        self.task
    }

    /// The error and the task.
    pub fn into_parts(self) -> (SpawnError, F) {
        (self.error, self.task)
    }
}

impl<F> fmt::Debug for TrySpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrySpawnError").field("error", &self.error).finish_non_exhaustive()
    }
}

impl<F> fmt::Display for TrySpawnError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<F> Error for TrySpawnError<F> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.error.source()
    }
}
