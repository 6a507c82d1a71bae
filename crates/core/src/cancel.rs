use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
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
    /// [`CancelToken::cancel_because`] was called, on this token or a parent: the caller (or
    /// a parent) said why.
    Reason {
        /// The reason given, text or an error.
        reason: SharedError,
    },
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

    /// The cause one level down, when this cause is a task that failed because a group it ran
    /// (a nested group, or anything whose error chain contains a
    /// [`GroupError`](crate::GroupError)) failed: that group's cause.
    ///
    /// ```
    /// # use muster_core as muster;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use muster::Group;
    ///
    /// let mut outer = Group::new();
    /// outer.spawn("accounts", async {
    ///     let mut inner = Group::new();
    ///     inner.spawn("balance", async { Err::<u32, _>("ledger down") }).unwrap();
    ///     inner.wait().await.map(|outputs| outputs["balance"])
    /// }).unwrap();
    /// let error = outer.wait().await.unwrap_err();
    /// assert_eq!(error.source_name(), Some("accounts"));
    /// let names: Vec<_> = error.cause().chain().filter_map(|cause| cause.source_name()).collect();
    /// assert_eq!(names, ["accounts", "balance"]);
    /// # }
    /// ```
    pub fn nested(&self) -> Option<&Cause> {
        let Self::Failed { error, .. } = self else { return None };
        let mut next: Option<&(dyn Error + 'static)> = Some(&**error);
        while let Some(error) = next {
            if let Some(group) = error.downcast_ref::<crate::GroupError>() {
                return Some(group.cause());
            }
            next = error.source();
        }
        None
    }

    /// This cause, then every [`nested`](Cause::nested) cause below it, outermost first.
    pub fn chain(&self) -> impl Iterator<Item = &Cause> {
        std::iter::successors(Some(self), |cause| cause.nested())
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed { name, error } => write!(f, "cancelled by `{name}`: {error}"),
            Self::Panicked { name, message } => write!(f, "cancelled by `{name}`: panicked: {message}"),
            Self::Deadline { after, pending } => {
                write!(f, "deadline of {}ms elapsed; pending: ", crate::error::rounded_ms(*after))?;
                write_names(f, pending)
            }
            Self::Cancelled => f.write_str("cancelled by the caller"),
            Self::Reason { reason } => write!(f, "cancelled by the caller: {reason}"),
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
/// or afterwards, for example a drop guard that logs the cause. A task reads its group's token
/// with [`cancellation()`](crate::cancellation).
///
/// Cancelling a token cancels its children. A cause, once set, is never overwritten: the first
/// cause wins, and a child cancelled through its parent keeps the parent's cause even when it
/// is cancelled again on its own later (as a nested group is, with [`Cause::Dropped`], when
/// the task running it is dropped).
///
/// ```
/// # use muster_core as muster;
/// use muster::{Cause, CancelToken};
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
    /// cancelled, on its own or through a parent: the first cause wins.
    pub fn cancel_with(&self, cause: Cause) {
        // A token cancelled through its parent reports the parent's cause; setting its own
        // now would overwrite that.
        if !self.is_cancelled() && self.inner.cause.set(cause).is_ok() {
            self.inner.signal.cancel();
        }
    }

    /// Cancels this token and its children with [`Cause::Reason`]: `reason` (text or an error)
    /// is what tasks read as the cause and what the group's error carries. Does nothing if the
    /// token was already cancelled.
    ///
    /// ```
    /// # use muster_core as muster;
    /// use muster::{Cause, CancelToken};
    ///
    /// let request = CancelToken::new();
    /// request.cancel_because("the client disconnected");
    /// assert_eq!(request.cause().map(Cause::to_string).as_deref(), Some("cancelled by the caller: the client disconnected"));
    /// ```
    pub fn cancel_because(&self, reason: impl Into<crate::BoxError>) {
        if !self.is_cancelled() {
            self.cancel_with(Cause::Reason { reason: Arc::from(reason.into()) });
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

    /// A future that completes when the token is cancelled, on its own or through a parent;
    /// at once if it already is. Read [`cause`](CancelToken::cause) afterwards to learn why.
    ///
    /// ```
    /// # use muster_core as muster;
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use muster::CancelToken;
    ///
    /// let request = CancelToken::new();
    /// let child = request.child();
    /// let waiter = tokio::spawn(async move {
    ///     child.cancelled().await;
    ///     child.cause().map(ToString::to_string)
    /// });
    /// request.cancel_because("the client disconnected");
    /// let seen = waiter.await.unwrap();
    /// assert_eq!(seen.as_deref(), Some("cancelled by the caller: the client disconnected"));
    /// # }
    /// ```
    ///
    /// # Cancellation safety
    ///
    /// Cancel safe: dropping the [`Cancelled`] future loses nothing. A token, once cancelled,
    /// stays cancelled, so a later call to `cancelled` (in the next `tokio::select!` round, say)
    /// completes at once for a cancellation that happened while no future was waiting.
    pub fn cancelled(&self) -> Cancelled<'_> {
        Cancelled { token: self, inner: self.inner.signal.cancelled() }
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

pin_project_lite::pin_project! {
    /// The future of [`CancelToken::cancelled`]: completes when the token is cancelled.
    ///
    /// # Cancellation safety
    ///
    /// Cancel safe: dropping it loses nothing; a later call to [`CancelToken::cancelled`]
    /// completes at once if the token was cancelled meanwhile.
    #[must_use = "futures do nothing unless polled"]
    pub struct Cancelled<'a> {
        token: &'a CancelToken,
        #[pin]
        inner: tokio_util::sync::WaitForCancellationFuture<'a>,
    }
}

impl Future for Cancelled<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.project().inner.poll(cx)
    }
}

impl fmt::Debug for Cancelled<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cancelled").field("token", self.token).finish_non_exhaustive()
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

    #[test]
    fn a_child_cancelled_through_its_parent_keeps_the_parents_cause() {
        let parent = CancelToken::new();
        let child = parent.child();
        parent.cancel_because("outer failure");
        child.cancel_with(Cause::Dropped);
        assert_eq!(child.cause().map(Cause::to_string).as_deref(), Some("cancelled by the caller: outer failure"));
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

    #[tokio::test]
    async fn cancelled_is_ready_at_once_on_a_token_cancelled_before_the_call() {
        let token = CancelToken::new();
        token.cancel();
        assert_eq!(futures::poll!(std::pin::pin!(token.cancelled())), Poll::Ready(()));
    }

    #[tokio::test]
    async fn a_dropped_cancelled_future_loses_nothing() {
        let token = CancelToken::new();
        let mut first = Box::pin(token.cancelled());
        assert_eq!(futures::poll!(first.as_mut()), Poll::Pending);
        drop(first);
        token.cancel_with(Cause::Dropped);
        // A later call sees the cancellation that happened while nobody waited.
        assert_eq!(futures::poll!(std::pin::pin!(token.cancelled())), Poll::Ready(()));
        assert!(matches!(token.cause(), Some(Cause::Dropped)));
    }

    #[tokio::test]
    async fn a_pending_cancelled_future_completes_once_a_parent_is_cancelled() {
        let parent = CancelToken::new();
        let child = parent.child();
        let mut waiting = Box::pin(child.cancelled());
        assert_eq!(futures::poll!(waiting.as_mut()), Poll::Pending);
        parent.cancel();
        assert_eq!(futures::poll!(waiting.as_mut()), Poll::Ready(()));
    }

    #[test]
    fn cancelled_is_send_and_sync_and_says_what_it_waits_for() {
        fn send_sync<T: Send + Sync>(_: &T) {}
        let token = CancelToken::new();
        let cancelled = token.cancelled();
        send_sync(&cancelled);
        assert_eq!(format!("{cancelled:?}"), "Cancelled { token: CancelToken { cause: None }, .. }");
    }
}
