//! What the adapters' errors say they are, through [`Classify`].

#[cfg(any(feature = "http", feature = "mock"))]
use muster_core::{Classify, ErrorKind};

/// As [`HttpError::kind`](crate::http::HttpError::kind) and
/// [`HttpError::is_retryable`](crate::http::HttpError::is_retryable): connect errors,
/// timeouts, interrupted responses, 5xx and 429 are retryable; 404, invalid JSON, a body too
/// large and the like are not.
#[cfg(feature = "http")]
impl Classify for crate::http::HttpError {
    fn kind(&self) -> ErrorKind {
        crate::http::HttpError::kind(self)
    }

    fn is_retryable(&self) -> bool {
        crate::http::HttpError::is_retryable(self)
    }

    /// The response's status, for a `status` (or `redirect`) error.
    fn status(&self) -> Option<u16> {
        crate::http::HttpError::status(self).map(|status| status.as_u16())
    }
}

/// As [`MockError::kind`](crate::MockError::kind) and
/// [`MockError::is_retryable`](crate::MockError::is_retryable): scripted errors are `failed`
/// (or the kind they were given) and retryable unless made
/// [`permanent`](crate::Step::permanent).
#[cfg(feature = "mock")]
impl Classify for crate::MockError {
    fn kind(&self) -> ErrorKind {
        crate::MockError::kind(self)
    }

    fn is_retryable(&self) -> bool {
        crate::MockError::is_retryable(self)
    }
}
