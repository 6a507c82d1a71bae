//! What the adapters' errors say to a retry policy, through [`Retryable`].

#[cfg(any(feature = "http", feature = "mock"))]
use muster_core::Retryable;

/// As [`HttpError::is_retryable`](crate::http::HttpError::is_retryable): connect errors,
/// timeouts, interrupted responses, 5xx and 429 are retryable; 404, invalid JSON, a body too
/// large and the like are not.
#[cfg(feature = "http")]
impl Retryable for crate::http::HttpError {
    fn is_retryable(&self) -> bool {
        crate::http::HttpError::is_retryable(self)
    }
}

/// As [`MockError::is_retryable`](crate::MockError::is_retryable): scripted errors are
/// retryable unless made [`permanent`](crate::Step::permanent).
#[cfg(feature = "mock")]
impl Retryable for crate::MockError {
    fn is_retryable(&self) -> bool {
        crate::MockError::is_retryable(self)
    }
}
