//! The errors of this crate's adapters.

use muster_core::ErrorKind;

/// The error a [`MockFetcher`](crate::MockFetcher) returns for a [`Step::err`](crate::Step::err)
/// step: the scripted message and whether a retry policy may try again.
///
/// `Display` is the message alone, so assertions on a group's or an aggregator's error read
/// like the script. It says what it is through `Classify`: its [`kind`](MockError::kind) is
/// `failed` unless [given another](MockError::with_kind), and a
/// [`permanent`](MockError::permanent) error is not retried.
///
/// ```
/// # #[allow(unused_imports)] mod muster { pub use muster_adapters::mock; pub use muster_core::*; }
/// use muster::mock::MockError;
///
/// let error = MockError::new("profile service: 503");
/// assert_eq!(error.to_string(), "profile service: 503");
/// assert!(error.is_retryable());
/// assert!(!error.permanent().is_retryable());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct MockError {
    message: String,
    kind: ErrorKind,
    retryable: bool,
}

impl MockError {
    /// A retryable error with `message`, like a scripted [`Step::err`](crate::Step::err).
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), kind: ErrorKind::Failed, retryable: true }
    }

    /// The same error, of `kind`.
    ///
    /// ```
    /// # #[allow(unused_imports)] mod muster { pub use muster_adapters::mock; pub use muster_core::*; }
    /// use muster::ErrorKind;
    /// use muster::mock::MockError;
    ///
    /// let error = MockError::new("deadlock detected").with_kind(ErrorKind::new("db_deadlock"));
    /// assert_eq!(error.kind().as_str(), "db_deadlock");
    /// assert!(error.is_retryable());
    /// ```
    #[must_use = "`with_kind` returns a new error and leaves `self` unchanged"]
    pub fn with_kind(self, kind: ErrorKind) -> Self {
        Self { kind, ..self }
    }

    /// The kind: `failed`, unless [given another](MockError::with_kind).
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The same error, marked as not retryable.
    #[must_use = "`permanent` returns a new error and leaves `self` unchanged"]
    pub fn permanent(self) -> Self {
        Self { retryable: false, ..self }
    }

    /// The scripted message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether a retry policy may try the call again: `true` unless the step was made
    /// [`permanent`](crate::Step::permanent).
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }
}
