use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::time::Instant;

use crate::cancel::{CancelToken, Cause};

tokio::task_local! {
    /// The call's deadline: the one place it is stored, as an instant. `None` inside a scope
    /// that has none (a call shared by callers none of whom has a deadline).
    static DEADLINE: Option<Instant>;
}

/// The deadline the current task runs under: its [`Group`](crate::Group)'s deadline, or a
/// tighter one set with [`with_deadline`] (a source's own timeout). `None` outside such a task.
///
/// This task-local is the one place a call's deadline is stored, as an instant: every layer
/// (the group, a source's timeout, retries, hedges, fallbacks, the HTTP fetcher) reads it from
/// here rather than keeping a copy. Fetchers read it to tell their backends how long they have
/// left (an HTTP fetcher sends it as a header) and to avoid starting work that cannot finish
/// in time.
///
/// Inside a call shared by several callers (a coalesced call), it is the latest deadline of the
/// callers still waiting, read at that moment (`None` if one of them has none).
///
/// ```
/// # use muster_core as muster;
/// use std::time::Duration;
/// use muster::{Group, deadline};
/// use muster::Deadline;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let start = tokio::time::Instant::now();
/// let mut group = Group::with_options(Deadline(Duration::from_secs(1)))?;
/// group.spawn("budget", async { Ok::<_, std::io::Error>(deadline()) })?;
/// assert_eq!(group.wait().await?["budget"], Some(start + Duration::from_secs(1)));
/// assert_eq!(deadline(), None);
/// # Ok(()) }
/// ```
pub fn deadline() -> Option<Instant> {
    DEADLINE.try_with(|deadline| *deadline).ok().flatten()
}

/// Runs `future` with `deadline` as the current [`deadline()`], or the enclosing one if that is
/// earlier: a nested deadline can only tighten the budget.
pub fn with_deadline<F: Future>(deadline: Instant, future: F) -> impl Future<Output = F::Output> {
    DEADLINE.scope(Some(tighter(deadline)), future)
}

/// Runs `future` with [`deadline()`] given by `deadline`, called each time the future is polled
/// or dropped: for a call that serves several callers, whose budget is theirs and changes as
/// they come and go (a coalesced call runs under the latest deadline of its waiters). Unlike
/// [`with_deadline`] it replaces the enclosing deadline instead of tightening it, as the caller
/// polling the call is only one of those it serves; `None` means no deadline.
///
/// ```
/// # use muster_core as muster;
/// use std::time::Duration;
/// use muster::{deadline, with_deadline, with_deadline_from};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let start = tokio::time::Instant::now();
/// let later = start + Duration::from_secs(5);
/// let seen = with_deadline(start + Duration::from_secs(1), with_deadline_from(move || Some(later), async { deadline() }));
/// assert_eq!(seen.await, Some(later));
/// # }
/// ```
pub fn with_deadline_from<F, D>(deadline: D, future: F) -> WithDeadlineFrom<F, D>
where
    F: Future,
    D: Fn() -> Option<Instant>,
{
    WithDeadlineFrom { deadline, future: Some(Box::pin(future)) }
}

/// The future of [`with_deadline_from`].
#[must_use = "futures do nothing unless polled"]
pub struct WithDeadlineFrom<F, D: Fn() -> Option<Instant>> {
    deadline: D,
    /// `None` once dropped, under the deadline, so that drop guards read it.
    future: Option<Pin<Box<F>>>,
}

// The future is boxed and `deadline` is only ever called by reference: nothing is pinned.
impl<F, D: Fn() -> Option<Instant>> Unpin for WithDeadlineFrom<F, D> {}

impl<F: Future, D: Fn() -> Option<Instant>> Future for WithDeadlineFrom<F, D> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let Some(future) = this.future.as_mut() else { return Poll::Pending };
        let poll = DEADLINE.sync_scope((this.deadline)(), || future.as_mut().poll(cx));
        if poll.is_ready() {
            this.future = None;
        }
        poll
    }
}

impl<F, D: Fn() -> Option<Instant>> Drop for WithDeadlineFrom<F, D> {
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            DEADLINE.sync_scope((self.deadline)(), || drop(future));
        }
    }
}

impl<F, D: Fn() -> Option<Instant>> std::fmt::Debug for WithDeadlineFrom<F, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithDeadlineFrom").field("deadline", &(self.deadline)()).finish_non_exhaustive()
    }
}

/// Runs `future` with `token` as the current [`cancellation()`], while it is polled and while
/// it is dropped, whatever group's task polls it: for work that several callers share (a
/// coalesced call), which must not read, or be stopped by, the token of whichever caller
/// happens to poll it. Groups started inside it take `token` as their parent when they ask
/// [`cancellation()`] for it.
///
/// ```
/// # use muster_core as muster;
/// use muster::{CancelToken, Group, cancellation, with_cancellation};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let own = CancelToken::new();
/// let mut group = Group::new();
/// let call = own.clone();
/// group.spawn("shared", with_cancellation(own.clone(), async move {
///     Ok::<_, std::io::Error>(cancellation().is_some_and(|token| token.is_cancelled() == call.is_cancelled()))
/// })).unwrap();
/// own.cancel();
/// assert!(group.wait().await.unwrap()["shared"], "the task reads its own token, not the group's");
/// # }
/// ```
pub fn with_cancellation<F: Future>(token: CancelToken, future: F) -> WithCancellation<F> {
    WithCancellation { scope: TokenScope::new(Some(token), None), future: Some(Box::pin(future)) }
}

/// The future of [`with_cancellation`].
#[must_use = "futures do nothing unless polled"]
pub struct WithCancellation<F> {
    scope: TokenScope,
    /// `None` once dropped, inside the scope, so that drop guards read the token.
    future: Option<Pin<Box<F>>>,
}

impl<F: Future> Future for WithCancellation<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        let Some(future) = this.future.as_mut() else { return Poll::Pending };
        let poll = unwind_safe_scoped(&mut this.scope, || future.as_mut().poll(cx));
        if poll.is_ready() {
            this.future = None;
        }
        poll
    }
}

impl<F> Drop for WithCancellation<F> {
    fn drop(&mut self) {
        if let Some(future) = self.future.take() {
            unwind_safe_scoped(&mut self.scope, || drop(future));
        }
    }
}

impl<F> std::fmt::Debug for WithCancellation<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WithCancellation").field("token", &self.scope.token).finish_non_exhaustive()
    }
}

/// `deadline`, or the current one if that is earlier.
pub(crate) fn tighter(deadline: Instant) -> Instant {
    self::deadline().map_or(deadline, |outer| outer.min(deadline))
}

/// Runs `f` with `deadline`, if any, as the current [`deadline()`].
pub(crate) fn scoped<R>(deadline: Option<Instant>, f: impl FnOnce() -> R) -> R {
    match deadline {
        Some(deadline) => DEADLINE.sync_scope(Some(deadline), f),
        None => f(),
    }
}

thread_local! {
    /// The group whose task is being polled or dropped on this thread, if any. Set by the
    /// group around each round of polls and around the drops of its tasks, so a task reads it
    /// like a task-local; saved and restored around nested groups. A `Cell` of a small value:
    /// entering and leaving costs a few moves, as every group pays it on every poll.
    static CURRENT: Cell<Option<TokenScope>> = const { Cell::new(None) };
    /// Why the innermost group that is dropping its tasks is closing (see `TokenScope::closing`).
    static CLOSING: RefCell<Option<Cause>> = const { RefCell::new(None) };
}

/// What [`cancellation()`] needs to find or make the current group's token. The group's token
/// is made lazily: a group whose tasks never ask for it never allocates one.
#[derive(Default)]
pub(crate) struct TokenScope {
    /// The group's token, if made.
    pub(crate) token: Option<CancelToken>,
    /// The group's parent, to make the token as its child.
    pub(crate) parent: Option<CancelToken>,
    /// The group is dropping its tasks: a token made now starts cancelled with the cause in
    /// `CLOSING`.
    closing: bool,
}

impl TokenScope {
    pub(crate) fn new(token: Option<CancelToken>, parent: Option<CancelToken>) -> Self {
        Self { token, parent, closing: false }
    }
}

/// The cancellation token of the [`Group`](crate::Group) whose task is running: set while the
/// task is polled *and* while it is dropped, so that a drop guard can tell why it was
/// cancelled. `None` outside a group's task (and in tasks spawned onto the runtime from
/// inside one, like [`deadline()`]).
///
/// It is the group's own [`Group::token`](crate::Group::token): cancelling it cancels the
/// group, and its [`cause`](CancelToken::cause) is the failed sibling (name and error), the
/// deadline, the caller's reason, [`Cause::Dropped`] or, after success,
/// [`Cause::Completed`]. A task that runs a group of its own passes this token as that
/// group's [parent](crate::Group::with_parent), so the inner tasks see the outer cause.
///
/// The token is made the first time it is asked for; a group whose tasks never call this
/// function pays nothing for it.
///
/// ```
/// # use muster_core as muster;
/// use muster::{Cause, Group, cancellation};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut group = Group::new();
/// group.spawn("bad", async { Err::<u32, _>("503") }).unwrap();
/// group.spawn("slow", async {
///     struct Guard;
///     impl Drop for Guard {
///         fn drop(&mut self) {
///             let cause = cancellation().and_then(|token| token.cause().cloned());
///             assert!(matches!(cause, Some(Cause::Failed { ref name, .. }) if name == "bad"));
///         }
///     }
///     let _guard = Guard;
///     std::future::pending::<Result<u32, &str>>().await
/// }).unwrap();
/// assert_eq!(group.wait().await.unwrap_err().source_name(), Some("bad"));
/// assert!(cancellation().is_none());
/// # }
/// ```
pub fn cancellation() -> Option<CancelToken> {
    let current = |current: &Cell<Option<TokenScope>>| {
        let mut scope = current.take()?;
        let TokenScope { token, parent, closing } = &mut scope;
        let token = token.get_or_insert_with(|| {
            let token = parent.as_ref().map_or_else(CancelToken::new, CancelToken::child);
            if *closing {
                let cause = CLOSING.try_with(|cause| cause.try_borrow().ok().and_then(|cause| cause.clone()));
                if let Ok(Some(cause)) = cause {
                    token.cancel_with(cause);
                }
            }
            token
        });
        let token = token.clone();
        current.set(Some(scope));
        Some(token)
    };
    CURRENT.try_with(current).ok().flatten()
}

/// Runs `f` with `scope` as the current group, then hands `scope` back (with the token, if `f`
/// made one), restoring the enclosing group's scope.
///
/// Straight-line, without a guard for unwinding: every group polls and drops its tasks inside
/// `catch_unwind`, so `f` does not unwind. (If it did, the scope would stay current on this
/// thread: stale tokens, never unsound.) This runs on every poll of every group.
pub(crate) fn token_scoped<R>(scope: &mut TokenScope, f: impl FnOnce() -> R) -> R {
    let Ok(outer) = CURRENT.try_with(|current| current.replace(Some(std::mem::take(scope)))) else {
        return f();
    };
    let result = f();
    if let Ok(Some(inner)) = CURRENT.try_with(|current| current.replace(outer)) {
        *scope = inner;
    }
    result
}

/// Like [`token_scoped`], restoring the enclosing scope even if `f` unwinds: for
/// [`with_cancellation`], whose future may panic into whatever catches it.
fn unwind_safe_scoped<R>(scope: &mut TokenScope, f: impl FnOnce() -> R) -> R {
    /// Puts the enclosing scope back, and hands this one back to `scope`.
    struct Restore<'s> {
        outer: Option<Option<TokenScope>>,
        scope: &'s mut TokenScope,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            if let Some(outer) = self.outer.take() {
                if let Ok(Some(inner)) = CURRENT.try_with(|current| current.replace(outer)) {
                    *self.scope = inner;
                }
            }
        }
    }
    let Ok(outer) = CURRENT.try_with(|current| current.replace(Some(std::mem::take(scope)))) else {
        return f();
    };
    let _restore = Restore { outer: Some(outer), scope };
    f()
}

/// Why the group dropping its tasks on this thread is closing, as text; `None` outside such a
/// drop.
pub(crate) fn closing_cause() -> Option<String> {
    let closing =
        CLOSING.try_with(|cause| cause.try_borrow().ok().and_then(|cause| cause.as_ref().map(ToString::to_string)));
    // A group whose token exists already keeps the cause in it.
    closing.ok().flatten().or_else(|| cancellation().and_then(|token| token.cause().map(ToString::to_string)))
}

/// Like [`token_scoped`], for a group dropping its tasks because of `cause`: a token made by
/// [`cancellation()`] meanwhile starts cancelled with `cause`. The cause is moved in and handed
/// back, not cloned.
pub(crate) fn closing_scoped<R>(scope: &mut TokenScope, cause: Cause, f: impl FnOnce() -> R) -> (R, Cause) {
    /// Puts the enclosing closing cause back, and hands this one back to `cause`.
    struct Restore<'c> {
        outer: Option<Cause>,
        cause: &'c mut Option<Cause>,
    }
    impl Drop for Restore<'_> {
        fn drop(&mut self) {
            let outer = self.outer.take();
            if let Ok(Ok(inner)) =
                CLOSING.try_with(|cause| cause.try_borrow_mut().map(|mut cause| std::mem::replace(&mut *cause, outer)))
            {
                *self.cause = inner;
            }
        }
    }
    let mut mine = Some(cause);
    let outer = CLOSING.try_with(|closing| {
        let mut closing = closing.try_borrow_mut().ok()?;
        Some(std::mem::replace(&mut *closing, mine.take()))
    });
    let Ok(Some(outer)) = outer else {
        // No thread-local to put the cause in (the thread is exiting): still scoped, without it.
        let result = token_scoped(scope, f);
        return (result, mine.unwrap_or(Cause::Dropped));
    };
    let result = {
        let _restore = Restore { outer, cause: &mut mine };
        scope.closing = true;
        let result = token_scoped(scope, f);
        scope.closing = false;
        result
    };
    (result, mine.unwrap_or(Cause::Dropped))
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::task::Waker;

    use super::*;

    #[test]
    fn a_panic_inside_with_cancellation_leaves_the_enclosing_token_current() {
        let (own, outer) = (CancelToken::new(), CancelToken::new());
        let mut scope = TokenScope::new(Some(outer.clone()), None);
        token_scoped(&mut scope, || {
            let mut shared = Box::pin(with_cancellation(own.clone(), async {
                let inside = cancellation().expect("the shared token");
                inside.cancel_because("read inside");
                panic!("a deliberate panic inside the shared work");
            }));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(catch_unwind(AssertUnwindSafe(|| shared.as_mut().poll(&mut cx))).is_err());
            cancellation().expect("the enclosing token again").cancel();
        });
        assert!(own.is_cancelled(), "the work read its own token");
        assert!(outer.is_cancelled(), "after the panic, the enclosing token is current again");
        assert!(matches!(own.cause(), Some(Cause::Reason { .. })));
    }

    #[tokio::test(start_paused = true)]
    async fn with_deadline_from_replaces_the_enclosing_deadline_at_every_poll() {
        let start = Instant::now();
        let latest = std::sync::Arc::new(std::sync::Mutex::new(Some(start + std::time::Duration::from_secs(5))));
        let read = std::sync::Arc::clone(&latest);
        let work = with_deadline_from(move || *read.lock().unwrap_or_else(std::sync::PoisonError::into_inner), async {
            let first = deadline();
            tokio::task::yield_now().await;
            (first, deadline())
        });
        let mut work = std::pin::pin!(with_deadline(start + std::time::Duration::from_secs(1), work));
        assert!(futures_util::poll!(work.as_mut()).is_pending());
        *latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = None;
        let (first, second) = work.await;
        assert_eq!(first, Some(start + std::time::Duration::from_secs(5)), "not tightened by the enclosing one");
        assert_eq!(second, None, "read again at the next poll");
    }
}
