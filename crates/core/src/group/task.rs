//! A task as the group stores it: boxed in its span, under its deadline, with panics caught;
//! its slot and its state.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::time::Instant;

use crate::cancel::Name;
use crate::deadline::scoped;
use crate::error::BoxError;

/// What a task's future resolves to: its result, or the payload of its panic.
pub(super) type TaskOutput<T> = std::thread::Result<Result<T, BoxError>>;

/// A task as the group stores it: panics caught, the error boxed, inside its span.
pub(super) type Task<'a, T> = Pin<Box<dyn Future<Output = TaskOutput<T>> + Send + 'a>>;

/// Where a task is in its life.
pub(super) enum State<'a, T> {
    /// Waiting for a slot under the concurrency limit; never polled.
    Queued(Task<'a, T>),
    /// Running, polled in place by `wait`.
    Running(Task<'a, T>),
    /// Running inside the group's `FuturesUnordered` (large groups).
    Pooled,
    /// Finished with this output.
    Done(T),
    /// Failed or panicked.
    Failed,
    /// Dropped before it finished.
    Cancelled,
}

impl<T> State<'_, T> {
    pub(super) fn is_unfinished(&self) -> bool {
        matches!(self, Self::Queued(_) | Self::Running(_) | Self::Pooled)
    }
}

pub(super) struct Slot<'a, T> {
    pub(super) name: Name,
    /// A fingerprint of `name`: the duplicate check compares names only when these match.
    pub(super) hash: u64,
    pub(super) state: State<'a, T>,
}

pin_project_lite::pin_project! {
    /// A task as the group runs it: inside its span, under the group's deadline (as
    /// [`deadline()`](crate::deadline())), with panics caught and the error boxed. One wrapper
    /// rather than a stack of combinators, so that the task's future is moved once, into its box.
    struct Wrapped<F> {
        span: tracing::Span,
        deadline: Option<Instant>,
        // `None` once dropped, inside the span and the deadline, so that drop guards see both.
        #[pin]
        future: Option<F>,
    }

    impl<F> PinnedDrop for Wrapped<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let mut future = this.future;
            if future.is_some() {
                let _entered = this.span.enter();
                scoped(*this.deadline, || future.set(None));
                if !this.span.is_disabled() {
                    // Cancelled: the span says why (for OpenTelemetry, an error status too).
                    let cause = crate::deadline::closing_cause();
                    let cause = cause.as_deref().unwrap_or("the group was dropped");
                    this.span.record("cancelled", cause);
                    this.span.record("otel.status_code", "ERROR");
                    this.span.record("otel.status_description", format!("cancelled: {cause}").as_str());
                }
            }
        }
    }
}

impl<T, E, F> Future for Wrapped<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = TaskOutput<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let mut slot = this.future;
        let poll = || {
            std::panic::catch_unwind(AssertUnwindSafe(|| {
                let Some(future) = slot.as_mut().as_pin_mut() else { return Poll::Pending };
                let poll = future.poll(cx);
                if poll.is_ready() {
                    // Dropped here, inside the span and the deadline, rather than in a
                    // second scope when the group drops the task.
                    slot.set(None);
                }
                poll
            }))
        };
        match scoped(*this.deadline, poll) {
            Ok(Poll::Ready(result)) => Poll::Ready(Ok(result.map_err(Into::into))),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Boxes `task` as the group stores it, in a `source` span whose parent is `parent` or else
/// the current span.
#[inline(always)] // so that the task is built in place in its box, not copied into it
pub(super) fn wrap<'a, T, E, F>(
    parent: Option<&tracing::Span>,
    name: &Name,
    deadline: Option<Instant>,
    task: F,
) -> Task<'a, T>
where
    F: Future<Output = Result<T, E>> + Send + 'a,
    E: Into<BoxError>,
{
    // `cancelled` (the cause) and the error status are recorded here when the task is dropped
    // before it ends; `error.type` and the error status by the aggregator when it fails.
    let span = match parent {
        Some(parent) => tracing::info_span!(
            parent: parent,
            "source",
            source = %name,
            cancelled = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty,
        ),
        None => tracing::info_span!(
            "source",
            source = %name,
            cancelled = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
            "otel.status_code" = tracing::field::Empty,
            "otel.status_description" = tracing::field::Empty,
        ),
    };
    Box::pin(Wrapped { span, deadline, future: Some(task) })
}

/// A task's slot, its name and the message of the panic of its drop.
pub(super) type DropPanic = (usize, Name, Arc<str>);

/// Drops `task`, containing a panic of its drop glue (a drop guard that panics): returns the
/// panic's message instead of unwinding.
pub(super) fn drop_contained<'a, T>(task: Task<'a, T>) -> Option<Arc<str>> {
    std::panic::catch_unwind(AssertUnwindSafe(move || drop(task))).err().map(|payload| panic_message(&*payload))
}

/// A task of a large group, tagged with its slot.
pub(super) struct Pooled<'a, T> {
    pub(super) index: usize,
    pub(super) task: Task<'a, T>,
}

impl<T> Future for Pooled<'_, T> {
    type Output = (usize, TaskOutput<T>);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let index = self.index;
        self.task.as_mut().poll(cx).map(|output| (index, output))
    }
}

/// The message of a caught panic's payload (`panic!("...")` gives a `&str` or a `String`), or a
/// placeholder for other payloads.
pub(super) fn panic_message(payload: &(dyn std::any::Any + Send)) -> Arc<str> {
    if let Some(message) = payload.downcast_ref::<&str>() {
        Arc::from(*message)
    } else if let Some(message) = payload.downcast_ref::<String>() {
        Arc::from(message.as_str())
    } else {
        Arc::from("non-string panic payload")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_message_is_the_payloads_text() {
        let payload = std::panic::catch_unwind(|| panic!("boom {}", 42)).unwrap_err();
        assert_eq!(&*panic_message(&*payload), "boom 42");
        let payload = std::panic::catch_unwind(|| std::panic::panic_any(7)).unwrap_err();
        assert_eq!(&*panic_message(&*payload), "non-string panic payload");
    }
}
