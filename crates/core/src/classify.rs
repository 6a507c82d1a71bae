use std::convert::Infallible;
use std::io;

use crate::error::BoxError;

/// Whether a failed attempt may be tried again: the one question a retry policy asks an error.
///
/// Errors classify themselves: an HTTP 404 or a body that is not valid JSON will fail the same
/// way again, a 503, a refused connection or a timeout may not. The `muster` crate's retry
/// policy asks the source's error through this trait (a per-source classifier can override
/// it), and never retries a panic.
///
/// Implement it for your own error type; the verdict is usually a `match` on its variants:
///
/// ```
/// # use muster_core as muster;
/// use muster::Retryable;
///
/// #[derive(Debug)]
/// enum LedgerError {
///     Busy,
///     UnknownAccount,
/// }
///
/// impl Retryable for LedgerError {
///     fn is_retryable(&self) -> bool {
///         matches!(self, Self::Busy)
///     }
/// }
///
/// assert!(LedgerError::Busy.is_retryable());
/// assert!(!LedgerError::UnknownAccount.is_retryable());
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not say whether it is retryable",
    label = "retrying needs the error to classify itself",
    note = "implement `muster::Retryable` for `{Self}`, or give the retry a classifier: `Retry::attempts(n).retry_if(|error: &{Self}| ...)`"
)]
pub trait Retryable {
    /// `true` if trying again may succeed.
    fn is_retryable(&self) -> bool;
}

/// Transient I/O failures are retryable (timeouts, refused, reset or aborted connections,
/// interruptions, a peer that closed early); the others (not found, permission denied, invalid
/// input or data, unsupported) are not. [`io::Error::other`] errors are retryable.
impl Retryable for io::Error {
    fn is_retryable(&self) -> bool {
        use io::ErrorKind::*;
        !matches!(
            self.kind(),
            NotFound | PermissionDenied | InvalidInput | InvalidData | Unsupported | AlreadyExists | OutOfMemory
        )
    }
}

/// A boxed error of unknown type (e.g. from a tower middleware stack) is retryable: the retry
/// cannot tell, and tower's own errors (timeouts, overload) are transient. Give the retry a
/// classifier to be more precise.
impl Retryable for BoxError {
    fn is_retryable(&self) -> bool {
        true
    }
}

/// Never fails, so never retried.
impl Retryable for Infallible {
    fn is_retryable(&self) -> bool {
        match *self {}
    }
}

impl<E: Retryable + ?Sized> Retryable for &E {
    fn is_retryable(&self) -> bool {
        (**self).is_retryable()
    }
}

impl<E: Retryable + ?Sized> Retryable for std::sync::Arc<E> {
    fn is_retryable(&self) -> bool {
        (**self).is_retryable()
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
}
