//! The most specific [`ErrorKind`] of a source's error: the HTTP fetcher's own kind
//! (`connect`, `status`, `body_too_large`, ...) when the error is, or wraps, an HTTP error; a
//! per-source timeout (muster's or tower's); a nested aggregation's kind; a completion policy's
//! last member's.

use std::error::Error;

use muster_core::ErrorKind;

use crate::completion::Failed;
use crate::error::AggregateError;
use crate::policy::{CoalesceError, TimeoutError};

/// The kind of a source's error, walking its `source()` chain and looking through the
/// timeout and coalescing wrappers at each step; `None` if nothing in it has a kind of its own.
pub(crate) fn source_kind(error: &(dyn Error + 'static)) -> Option<ErrorKind> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(kind) = known(error) {
            return Some(kind);
        }
        next = error.source();
    }
    None
}

/// What `error` is, among the errors that know their kind.
fn known(error: &(dyn Error + 'static)) -> Option<ErrorKind> {
    if let Some(found) = peel::<AggregateError>(error) {
        return Some(found.map_or(ErrorKind::Timeout, AggregateError::kind));
    }
    #[cfg(feature = "http")]
    if let Some(found) = peel::<crate::http::HttpError>(error) {
        return Some(found.map_or(ErrorKind::Timeout, ErrorKind::from));
    }
    // tower's timeout layer, as a `Tower` policy.
    #[cfg(feature = "tower")]
    if error.is::<tower::timeout::error::Elapsed>() {
        return Some(ErrorKind::Timeout);
    }
    None
}

/// `error` as an `E`, directly or inside the policy wrappers a source's error comes in (a
/// per-source timeout, coalescing, or both in either order): `Some(None)` when a wrapping
/// timeout elapsed rather than an `E` failing.
fn peel<'a, E: Error + 'static>(error: &'a (dyn Error + 'static)) -> Option<Option<&'a E>> {
    fn timeout<E>(error: &TimeoutError<E>) -> Option<&E> {
        match error {
            TimeoutError::Inner(error) => Some(error),
            _ => None,
        }
    }
    if let Some(error) = error.downcast_ref::<E>() {
        return Some(Some(error));
    }
    if let Some(error) = error.downcast_ref::<TimeoutError<E>>() {
        return Some(timeout(error));
    }
    if let Some(error) = error.downcast_ref::<CoalesceError<E>>() {
        return Some(Some(error.get_ref()));
    }
    if let Some(error) = error.downcast_ref::<CoalesceError<TimeoutError<E>>>() {
        return Some(timeout(error.get_ref()));
    }
    if let Some(error) = error.downcast_ref::<TimeoutError<CoalesceError<E>>>() {
        return Some(timeout(error).map(CoalesceError::get_ref));
    }
    // A completion policy's failure is of its last member's kind (it has no `source()`).
    if let Some(failed) = error.downcast_ref::<Failed<E>>() {
        return failed.errors().last().map(|(_, error)| Some(error));
    }
    if let Some(failed) = error.downcast_ref::<Failed<TimeoutError<E>>>() {
        return failed.errors().last().map(|(_, error)| timeout(error));
    }
    None
}
