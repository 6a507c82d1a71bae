use std::convert::Infallible;
use std::error::Error;
use std::fmt;
use std::io;
use std::sync::Arc;

use crate::error::{BoxError, ErrorKind, GroupError};

/// What an error is: its [kind](ErrorKind), and whether trying again may succeed.
///
/// Errors classify themselves, and every wrapper passes the answer on: muster's policies
/// (timeout, retry, hedge, coalescing, completion, fallback, a nested aggregator) forward their
/// inner error's, so the kind a source's error states reaches the aggregator's error, its
/// report, its `warn` event, its metrics and its HTTP error body unchanged. The aggregator
/// asks a source's error before it boxes it, which is why a source's error type must implement
/// `Classify`; the retry policy asks [`is_retryable`](Classify::is_retryable) (a per-source
/// classifier can override it), and never retries a panic.
///
/// Both methods have defaults, so an error with nothing to say needs one line,
/// `impl muster::Classify for MyError {}`: it is `failed`, not retryable. Usually the kind
/// and the verdict are a `match` on the variants, with a kind of its own where no built-in
/// one fits:
///
/// ```
/// # use muster_core as muster;
/// use muster::{Classify, ErrorKind};
///
/// #[derive(Debug)]
/// enum LedgerError {
///     Deadlock,
///     Busy,
///     UnknownAccount,
/// }
///
/// impl Classify for LedgerError {
///     fn kind(&self) -> ErrorKind {
///         match self {
///             Self::Deadlock => ErrorKind::new("db_deadlock"),
///             Self::Busy => ErrorKind::Connect,
///             Self::UnknownAccount => ErrorKind::Failed,
///         }
///     }
///
///     fn is_retryable(&self) -> bool {
///         matches!(self, Self::Deadlock | Self::Busy)
///     }
/// }
///
/// assert_eq!(LedgerError::Deadlock.kind().as_str(), "db_deadlock");
/// assert!(LedgerError::Busy.is_retryable());
/// assert!(!LedgerError::UnknownAccount.is_retryable());
/// ```
///
/// A wrapper forwards both methods to what it wraps, one line each
/// (`Self::Inner(error) => error.kind()`). A [`BoxError`] has lost its type, so its kind is
/// found in the error itself: box a classified error with [`boxed`] to keep its kind (see
/// [`BoxError`]).
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not say what kind of error it is",
    label = "a source's error must implement `muster::Classify`",
    note = "add `impl muster::Classify for {Self} {{}}` (the kind `failed`, not retryable), or override `kind` and `is_retryable`"
)]
pub trait Classify {
    /// The kind; by default [`ErrorKind::Failed`].
    fn kind(&self) -> ErrorKind {
        ErrorKind::Failed
    }

    /// Whether trying again may succeed; by default, whether the [kind](Classify::kind) is
    /// `timeout`, `connect` or `protocol`.
    fn is_retryable(&self) -> bool {
        matches!(self.kind(), ErrorKind::Timeout | ErrorKind::Connect | ErrorKind::Protocol)
    }

    /// The status code a `status` error carries (an HTTP status, e.g. `503`), if it has one;
    /// by default `None`. It tells a backend's own failure (5xx) from a refusal of the request
    /// (4xx), as a circuit breaker needs: the HTTP fetcher's errors give it, and every wrapper
    /// passes it on as it passes the kind.
    fn status(&self) -> Option<u16> {
        None
    }
}

/// The kind of an I/O error: `TimedOut` is `timeout`; `ConnectionRefused`, `NotConnected` and
/// `AddrNotAvailable` are `connect`; `ConnectionReset`, `ConnectionAborted`, `BrokenPipe` and
/// `UnexpectedEof` are `protocol`; the others are `failed`.
///
/// Transient failures are retryable (timeouts, refused, reset or aborted connections,
/// interruptions, a peer that closed early); the others (not found, permission denied, invalid
/// input or data, unsupported) are not. [`io::Error::other`] errors are retryable.
impl Classify for io::Error {
    fn kind(&self) -> ErrorKind {
        use io::ErrorKind::*;
        match io::Error::kind(self) {
            TimedOut => ErrorKind::Timeout,
            ConnectionRefused | NotConnected | AddrNotAvailable => ErrorKind::Connect,
            ConnectionReset | ConnectionAborted | BrokenPipe | UnexpectedEof => ErrorKind::Protocol,
            _ => ErrorKind::Failed,
        }
    }

    fn is_retryable(&self) -> bool {
        use io::ErrorKind::*;
        !matches!(
            io::Error::kind(self),
            NotFound | PermissionDenied | InvalidInput | InvalidData | Unsupported | AlreadyExists | OutOfMemory
        )
    }
}

/// A message as an error (`Err("profile service: 503")`): `failed`, not retryable.
impl Classify for str {}

/// A message as an error: `failed`, not retryable.
impl Classify for String {}

/// Never fails.
impl Classify for Infallible {
    fn kind(&self) -> ErrorKind {
        match *self {}
    }

    fn is_retryable(&self) -> bool {
        match *self {}
    }
}

/// The first error in the `source()` chain that says what it is (see [`BoxError`]), or
/// `failed` and retryable.
impl Classify for dyn Error + Send + Sync + 'static {
    fn kind(&self) -> ErrorKind {
        found(self).map_or(ErrorKind::Failed, |(kind, _, _)| kind)
    }

    fn is_retryable(&self) -> bool {
        found(self).is_none_or(|(_, retryable, _)| retryable)
    }

    fn status(&self) -> Option<u16> {
        found(self).and_then(|(_, _, status)| status)
    }
}

/// As for `dyn Error + Send + Sync`.
impl Classify for dyn Error + 'static {
    fn kind(&self) -> ErrorKind {
        found(self).map_or(ErrorKind::Failed, |(kind, _, _)| kind)
    }

    fn is_retryable(&self) -> bool {
        found(self).is_none_or(|(_, retryable, _)| retryable)
    }

    fn status(&self) -> Option<u16> {
        found(self).and_then(|(_, _, status)| status)
    }
}

/// The kind, verdict and status of the first error in `error`'s chain that carries them: one boxed
/// with [`boxed`], an I/O error or a group's error.
fn found(error: &(dyn Error + 'static)) -> Option<(ErrorKind, bool, Option<u16>)> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(error) = error.downcast_ref::<Classified>() {
            return Some((error.kind, error.retryable, error.status));
        }
        if let Some(error) = error.downcast_ref::<io::Error>() {
            return Some((Classify::kind(error), error.is_retryable(), None));
        }
        if let Some(error) = error.downcast_ref::<GroupError>() {
            return Some((Classify::kind(error), error.is_retryable(), Classify::status(error)));
        }
        next = error.source();
    }
    None
}

/// A failed task's error as the group's kind: what the task's error says (the kind of the
/// error in [`source()`](Error::source), see [`BoxError`]) where
/// [`GroupError::kind`](GroupError::kind) says `failed`; otherwise the group's own kind
/// (`panicked`, `timeout`, `cancelled`).
///
/// Retryable as the task's error is; a panic, the group's deadline and a cancellation are not.
impl Classify for GroupError {
    fn kind(&self) -> ErrorKind {
        match GroupError::kind(self) {
            ErrorKind::Failed => self.source().map_or(ErrorKind::Failed, Classify::kind),
            kind => kind,
        }
    }

    fn is_retryable(&self) -> bool {
        match GroupError::kind(self) {
            ErrorKind::Failed => self.source().is_some_and(Classify::is_retryable),
            _ => false,
        }
    }
    fn status(&self) -> Option<u16> {
        match GroupError::kind(self) {
            ErrorKind::Failed => self.source().and_then(Classify::status),
            _ => None,
        }
    }
}

/// A reference or a smart pointer classifies as the error it points to.
macro_rules! classify_as_pointee {
    ($($pointer:ty),+) => {$(
        impl<E: Classify + ?Sized> Classify for $pointer {
            fn kind(&self) -> ErrorKind {
                (**self).kind()
            }

            fn is_retryable(&self) -> bool {
                (**self).is_retryable()
            }

            fn status(&self) -> Option<u16> {
                (**self).status()
            }
        }
    )+};
}

classify_as_pointee!(&E, Box<E>, Arc<E>);

/// Boxes `error` as a [`BoxError`] that keeps its kind and retry verdict: a [`BoxError`]'s
/// [`Classify`] finds them in it, however deep in the `source()` chain it ends up.
///
/// The box holds a [`Classified`], which displays and chains as `error` does; reach `error`
/// through [`Classified::downcast_ref`].
///
/// ```
/// # use muster_core as muster;
/// use muster::{BoxError, Classify, Classified, ErrorKind};
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("deadlock detected")]
/// struct Deadlock;
///
/// impl Classify for Deadlock {
///     fn kind(&self) -> ErrorKind {
///         ErrorKind::new("db_deadlock")
///     }
/// }
///
/// let error: BoxError = muster::boxed(Deadlock);
/// assert_eq!((error.kind().as_str(), error.to_string()), ("db_deadlock", "deadlock detected".to_owned()));
/// let classified = error.downcast_ref::<Classified>().unwrap();
/// assert!(classified.downcast_ref::<Deadlock>().is_some());
/// ```
pub fn boxed<E: Classify + Error + Send + Sync + 'static>(error: E) -> BoxError {
    let (kind, retryable, status) = (error.kind(), error.is_retryable(), error.status());
    Box::new(Classified { error: Box::new(error), kind, retryable, status })
}

/// An error boxed by [`boxed`], with the kind and retry verdict it had: `Display`, `Debug`
/// and [`Error::source`] are the error's own.
pub struct Classified {
    error: BoxError,
    kind: ErrorKind,
    retryable: bool,
    status: Option<u16>,
}

impl Classified {
    /// The error.
    pub fn get_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.error
    }

    /// The error, if it is an `E`.
    pub fn downcast_ref<E: Error + 'static>(&self) -> Option<&E> {
        self.error.downcast_ref()
    }

    /// The error, boxed without its kind.
    pub fn into_inner(self) -> BoxError {
        self.error
    }
}

/// The error's kind, verdict and status, as they were when it was boxed.
impl Classify for Classified {
    fn kind(&self) -> ErrorKind {
        self.kind
    }

    fn is_retryable(&self) -> bool {
        self.retryable
    }
    fn status(&self) -> Option<u16> {
        self.status
    }
}

impl fmt::Debug for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.error, f)
    }
}

impl fmt::Display for Classified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl Error for Classified {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.error.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_io_errors_are_retryable() {
        assert!(io::Error::from(io::ErrorKind::ConnectionRefused).is_retryable());
        assert!(io::Error::from(io::ErrorKind::TimedOut).is_retryable());
        assert!(io::Error::other("backend busy").is_retryable());
        assert!(!io::Error::from(io::ErrorKind::NotFound).is_retryable());
        assert!(!io::Error::from(io::ErrorKind::InvalidData).is_retryable());
    }

    #[test]
    fn io_errors_have_kinds() {
        let kind = |kind: io::ErrorKind| Classify::kind(&io::Error::from(kind));
        assert_eq!(kind(io::ErrorKind::TimedOut), ErrorKind::Timeout);
        assert_eq!(kind(io::ErrorKind::ConnectionRefused), ErrorKind::Connect);
        assert_eq!(kind(io::ErrorKind::BrokenPipe), ErrorKind::Protocol);
        assert_eq!(kind(io::ErrorKind::NotFound), ErrorKind::Failed);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] BoxError);

    impl Classify for Outer {}

    #[derive(Debug, thiserror::Error)]
    #[error("deadlock")]
    struct Deadlock;

    impl Classify for Deadlock {
        fn kind(&self) -> ErrorKind {
            ErrorKind::new("db_deadlock")
        }
    }

    #[test]
    fn a_box_error_finds_the_kind_down_its_chain() {
        let error: BoxError = Box::new(Outer(boxed(Deadlock)));
        assert_eq!((error.kind(), error.is_retryable()), (ErrorKind::new("db_deadlock"), false));
        let error: BoxError = Box::new(Outer(Box::new(io::Error::from(io::ErrorKind::TimedOut))));
        assert_eq!((error.kind(), error.is_retryable()), (ErrorKind::Timeout, true));
        let error: BoxError = "no kind".into();
        assert_eq!((error.kind(), error.is_retryable()), (ErrorKind::Failed, true));
    }

    #[test]
    fn a_boxed_error_is_transparent() {
        let error = boxed(Outer(boxed(Deadlock)));
        assert_eq!(error.to_string(), "outer");
        assert_eq!(error.source().map(ToString::to_string), Some("deadlock".to_owned()));
        assert_eq!(format!("{error:?}"), format!("{:?}", Outer(boxed(Deadlock))));
    }

    #[test]
    fn kinds_match_as_patterns() {
        let kind = ErrorKind::new("status");
        assert!(matches!(kind, ErrorKind::Status));
        assert_eq!(format!("{kind} {kind:?}"), "status ErrorKind(status)");
    }
}
