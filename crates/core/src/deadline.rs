use std::future::Future;

use tokio::time::Instant;

tokio::task_local! {
    static DEADLINE: Instant;
}

/// The deadline the current task runs under: its [`Group`](crate::Group)'s deadline, or a
/// tighter one set with [`with_deadline`] (a source's own timeout). `None` outside such a task.
///
/// Fetchers read it to tell their backends how long they have left (an HTTP fetcher sends it
/// as a header) and to avoid starting work that cannot finish in time.
///
/// ```
/// use std::time::Duration;
/// use muster_core::{Group, deadline};
/// use muster_options::Deadline;
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
    DEADLINE.try_with(|deadline| *deadline).ok()
}

/// Runs `future` with `deadline` as the current [`deadline()`], or the enclosing one if that is
/// earlier: a nested deadline can only tighten the budget.
pub fn with_deadline<F: Future>(deadline: Instant, future: F) -> impl Future<Output = F::Output> {
    DEADLINE.scope(tighter(deadline), future)
}

/// `deadline`, or the current one if that is earlier.
pub(crate) fn tighter(deadline: Instant) -> Instant {
    self::deadline().map_or(deadline, |outer| outer.min(deadline))
}

/// Runs `f` with `deadline`, if any, as the current [`deadline()`].
pub(crate) fn scoped<R>(deadline: Option<Instant>, f: impl FnOnce() -> R) -> R {
    match deadline {
        Some(deadline) => DEADLINE.sync_scope(deadline, f),
        None => f(),
    }
}
