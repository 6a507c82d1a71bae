use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A task's name, unique within its [`Group`](crate::Group). Static names cost nothing.
pub type Name = Cow<'static, str>;

/// A source's error, shared between the group's error and its [`CancelToken`].
pub type SharedError = Arc<dyn Error + Send + Sync + 'static>;

/// Why a group's tasks were told to stop.
///
/// The same value is carried by the [`GroupError`](crate::GroupError) and by the group's
/// [`CancelToken`], so a task cleaning up after cancellation can see who stopped it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Cause {
    /// A sibling returned an error; it is the group's root cause.
    Failed {
        /// The failed task.
        name: Name,
        /// What it returned.
        error: SharedError,
    },
    /// A sibling panicked; the panic became its error.
    Panicked {
        /// The task that panicked.
        name: Name,
        /// The panic message, or a placeholder when the payload was not a string.
        message: Arc<str>,
    },
    /// The group's deadline passed with tasks still pending.
    Deadline {
        /// The deadline, counted from the group's creation.
        after: Duration,
        /// The tasks still pending, in spawn order.
        pending: Arc<[Name]>,
    },
    /// [`CancelToken::cancel`] was called, on this token or a parent.
    Cancelled,
    /// The group was dropped before it finished, e.g. because the caller stopped waiting.
    Dropped,
    /// The group finished successfully: work that outlived it is no longer needed. Not an
    /// error.
    Completed,
}

impl Cause {
    /// The task whose failure caused the cancellation, if a task did.
    pub fn source_name(&self) -> Option<&str> {
        match self {
            Self::Failed { name, .. } | Self::Panicked { name, .. } => Some(name),
            _ => None,
        }
    }

    /// Whether this cause is a failure (of a task, the deadline or a caller's cancellation),
    /// as opposed to [`Cause::Completed`].
    pub fn is_failure(&self) -> bool {
        !matches!(self, Self::Completed)
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed { name, error } => write!(f, "cancelled by `{name}`: {error}"),
            Self::Panicked { name, message } => write!(f, "cancelled by `{name}`: panicked: {message}"),
            Self::Deadline { after, pending } => {
                write!(f, "deadline of {after:?} elapsed; pending: ")?;
                write_names(f, pending)
            }
            Self::Cancelled => f.write_str("cancelled by the caller"),
            Self::Dropped => f.write_str("the group was dropped"),
            Self::Completed => f.write_str("the group completed"),
        }
    }
}

/// Writes `names` as a comma-separated list of back-quoted names.
pub(crate) fn write_names(f: &mut fmt::Formatter<'_>, names: &[Name]) -> fmt::Result {
    for (i, name) in names.iter().enumerate() {
        let separator = if i == 0 { "" } else { ", " };
        write!(f, "{separator}`{name}`")?;
    }
    Ok(())
}

/// A cooperative cancellation signal that says *why* it was cancelled.
///
/// Every [`Group`](crate::Group) owns one (see [`Group::token`](crate::Group::token)); its tasks
/// are cancelled for real by being dropped, and the token is for code that wants to react first
/// or afterwards, for example a drop guard that logs the cause. Cancelling a token cancels its
/// children; the first cause set wins.
///
/// ```
/// use muster_core::{Cause, CancelToken};
///
/// let request = CancelToken::new();
/// let child = request.child();
/// request.cancel();
/// assert!(child.is_cancelled());
/// assert!(matches!(child.cause(), Some(Cause::Cancelled)));
/// ```
#[derive(Clone, Default)]
pub struct CancelToken {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    signal: tokio_util::sync::CancellationToken,
    cause: OnceLock<Cause>,
    parent: Option<CancelToken>,
}

impl CancelToken {
    /// A new token that nobody has cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// A token that is cancelled when this one is (with this one's cause), and that can be
    /// cancelled on its own without affecting this one.
    #[must_use = "a child token does nothing unless it is observed"]
    pub fn child(&self) -> Self {
        Self {
            inner: Arc::new(Inner {
                signal: self.inner.signal.child_token(),
                cause: OnceLock::new(),
                parent: Some(self.clone()),
            }),
        }
    }

    /// Cancels this token and its children with [`Cause::Cancelled`], unless it already was.
    pub fn cancel(&self) {
        self.cancel_with(Cause::Cancelled);
    }

    /// Cancels this token and its children with `cause`. Does nothing if the token was already
    /// cancelled: the first cause wins.
    pub fn cancel_with(&self, cause: Cause) {
        if self.inner.cause.set(cause).is_ok() {
            self.inner.signal.cancel();
        }
    }

    /// Whether this token, or one of its parents, has been cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.signal.is_cancelled()
    }

    /// Why this token was cancelled; `None` while it is not.
    pub fn cause(&self) -> Option<&Cause> {
        if let Some(cause) = self.inner.cause.get() {
            return Some(cause);
        }
        if !self.is_cancelled() {
            return None;
        }
        self.inner.parent.as_ref().and_then(CancelToken::cause)
    }

    /// Completes when the token is cancelled.
    ///
    /// # Cancellation safety
    ///
    /// Cancellation safe: dropping the future loses nothing.
    pub async fn cancelled(&self) {
        self.inner.signal.cancelled().await;
    }

    /// Like [`CancelToken::cancelled`], but owns a clone of the token, so the future can be
    /// stored without a borrow.
    pub(crate) fn cancelled_owned(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.inner.signal.clone().cancelled_owned()
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken").field("cause", &self.cause()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_cause_wins() {
        let token = CancelToken::new();
        token.cancel_with(Cause::Dropped);
        token.cancel_with(Cause::Completed);
        assert!(matches!(token.cause(), Some(Cause::Dropped)));
    }

    #[test]
    fn a_child_does_not_cancel_its_parent() {
        let parent = CancelToken::new();
        let child = parent.child();
        child.cancel();
        assert!(child.is_cancelled());
        assert!(!parent.is_cancelled());
        assert!(parent.cause().is_none());
    }

    #[tokio::test]
    async fn cancelled_completes_for_children_of_a_cancelled_parent() {
        let parent = CancelToken::new();
        let grandchild = parent.child().child();
        let waiter = tokio::spawn(async move {
            grandchild.cancelled().await;
            grandchild.cause().map(ToString::to_string)
        });
        parent.cancel_with(Cause::Dropped);
        assert_eq!(waiter.await.unwrap().as_deref(), Some("the group was dropped"));
    }
}
