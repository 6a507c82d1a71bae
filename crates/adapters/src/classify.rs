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

/// The HTTP fetcher's kinds in muster's one vocabulary: the names of
/// [`HttpError::kind`](crate::http::HttpError::kind) are the
/// [`ErrorKind`](muster_core::ErrorKind)'s, an unrequested content encoding is a
/// `ContentType` (the response was not plain JSON), and a missing parameter and an invalid
/// URL are `InvalidRequest` (the request could not be made).
#[cfg(feature = "http")]
impl From<&crate::http::HttpError> for muster_core::ErrorKind {
    fn from(error: &crate::http::HttpError) -> Self {
        use crate::http::HttpError;
        match error {
            HttpError::Status { .. } => Self::Status,
            HttpError::Connect { .. } => Self::Connect,
            HttpError::Timeout { .. } => Self::Timeout,
            HttpError::BodyTooLarge { .. } => Self::BodyTooLarge,
            HttpError::InvalidJson { .. } => Self::InvalidJson,
            HttpError::ContentType { .. } | HttpError::Encoding { .. } => Self::ContentType,
            HttpError::Redirect { .. } => Self::Redirect,
            HttpError::Protocol { .. } => Self::Protocol,
            HttpError::MissingParam { .. } | HttpError::InvalidUrl { .. } => Self::InvalidRequest,
        }
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
