//! One source inside an aggregation: its policies (timeout, retry, hedge, fallback) around the
//! fetch, and what it tells the report and the logs.

use std::any::Any;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use muster_core::{BoxError, Fetcher, Group, Name, SpawnError, with_deadline};
use muster_options::{Fallback, Retry, SourceConfig};
use tokio::time::Instant;
use tower::retry::backoff::{Backoff as _, ExponentialBackoffMaker, MakeBackoff as _};
use tower::util::rng::HasherRng;

use crate::error::SourceTimeout;
use crate::report::{Outcome, Recorder, TimeoutKind};

/// Produces an optional source's fallback value, once per use.
pub(crate) type MakeFallback<O> = Arc<dyn Fn() -> O + Send + Sync>;

/// A named source and its policies, as the aggregator runs it.
pub(crate) struct Source<Req: ?Sized, O> {
    pub(crate) name: Name,
    pub(crate) config: SourceConfig<()>,
    /// `None`: required. `Some(None)`: optional, omitted on failure. `Some(Some(f))`: optional,
    /// replaced by `f()`.
    pub(crate) fallback: Option<Option<MakeFallback<O>>>,
    fetcher: Box<dyn Erased<Req, O>>,
}

impl<Req: ?Sized + Sync, O: Send> Source<Req, O> {
    /// A source fetching with `fetcher`, whose outputs `convert` turns into the aggregator's,
    /// with `config`'s policies; its fallback, already turned into a maker by [`fallback`], is
    /// passed separately because it is of the source's own type.
    pub(crate) fn new<F, C, T>(
        name: Name,
        fetcher: F,
        convert: C,
        config: SourceConfig<T>,
        fallback: Option<Option<MakeFallback<O>>>,
    ) -> Self
    where
        F: Fetcher<Req> + 'static,
        C: Fn(F::Output) -> O + Send + Sync + 'static,
    {
        let SourceConfig { timeout, retry, hedge, .. } = config;
        let mut erased = SourceConfig::<()>::default();
        (erased.timeout, erased.retry, erased.hedge) = (timeout, retry, hedge);
        Self { name, config: erased, fallback, fetcher: Box::new(Typed { fetcher, convert }) }
    }

    /// Adds this source's run for `request` to `group`.
    pub(crate) fn spawn<'a>(
        &'a self,
        index: usize,
        request: &'a Req,
        run: &'a Run<'a>,
        group: &mut Group<'a, Option<O>>,
    ) -> Result<(), SpawnError> {
        self.fetcher.spawn(self, index, request, run, group)
    }
}

/// A fetcher with its types erased, so that sources of different fetcher, output and error
/// types share one list. It knows its own types: a source's run is compiled for them, so the
/// fetcher's future is awaited and its output converted in place, with no second box around
/// it, and the run is boxed only once, by the group.
trait Erased<Req: ?Sized, O>: Send + Sync {
    fn spawn<'a>(
        &'a self,
        source: &'a Source<Req, O>,
        index: usize,
        request: &'a Req,
        run: &'a Run<'a>,
        group: &mut Group<'a, Option<O>>,
    ) -> Result<(), SpawnError>;
}

/// A fetcher and the conversion of its outputs to the aggregator's output type.
struct Typed<F, C> {
    fetcher: F,
    convert: C,
}

impl<Req, O, F, C> Erased<Req, O> for Typed<F, C>
where
    Req: ?Sized + Sync,
    O: Send,
    F: Fetcher<Req>,
    C: Fn(F::Output) -> O + Send + Sync,
{
    fn spawn<'a>(
        &'a self,
        source: &'a Source<Req, O>,
        index: usize,
        request: &'a Req,
        run: &'a Run<'a>,
        group: &mut Group<'a, Option<O>>,
    ) -> Result<(), SpawnError> {
        let call = Call { source, typed: self, index, request, run };
        group.spawn(source.name.clone(), call.run())
    }
}

/// Turns `config`'s fallback into a maker of the aggregator's output type.
pub(crate) fn fallback<T, O>(
    config: &SourceConfig<T>,
    make: impl Fn(&T) -> O + Send + Sync + 'static,
) -> Option<Option<MakeFallback<O>>>
where
    T: Clone + Send + Sync + 'static,
{
    let make = Arc::new(make);
    config.fallback.as_ref().map(|fallback| match fallback {
        Fallback::Value(value) => {
            let value = value.clone();
            Some(Arc::new(move || make(&value)) as MakeFallback<O>)
        }
        Fallback::Omit => None,
    })
}

impl<Req: ?Sized, O> fmt::Debug for Source<Req, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Source")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("optional", &self.fallback.is_some())
            .finish_non_exhaustive()
    }
}

/// Why an attempt, or the source, failed.
enum Failure {
    Error(BoxError),
    /// `after` is the source's own timeout; unused for the global deadline.
    TimedOut {
        timeout: TimeoutKind,
        after: Duration,
    },
    Panicked(Box<dyn Any + Send>),
}

impl Failure {
    /// What went wrong, for log fields: the error, the timeout, the panic message.
    fn detail(&self) -> String {
        match self {
            Self::Error(error) => error.to_string(),
            Self::TimedOut { timeout: TimeoutKind::Source, after } => SourceTimeout { after: *after }.to_string(),
            Self::TimedOut { .. } => "the global deadline was reached".to_owned(),
            Self::Panicked(payload) => panic_message(&**payload).to_string(),
        }
    }

    /// Whether `retry` retries after this failure: timeouts always, panics never, errors if
    /// its classifier says so.
    fn is_retryable(&self, retry: &Retry) -> bool {
        match self {
            Self::Error(error) => retry.is_retryable(&**error),
            Self::TimedOut { .. } => true,
            Self::Panicked(_) => false,
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            Self::Error(error) => Outcome::Failed { error: error.to_string() },
            Self::TimedOut { timeout, .. } => Outcome::TimedOut { timeout: *timeout },
            Self::Panicked(payload) => Outcome::Panicked { message: panic_message(&**payload).to_string() },
        }
    }
}

/// The shared facts of one aggregation that its sources need.
#[derive(Debug)]
pub(crate) struct Run<'a> {
    pub(crate) recorder: &'a Recorder,
    /// The global deadline, if any.
    pub(crate) deadline: Option<Instant>,
}

/// One source's part in one aggregation: what its run and each of its attempts need.
struct Call<'a, Req: ?Sized, O, F, C> {
    source: &'a Source<Req, O>,
    typed: &'a Typed<F, C>,
    index: usize,
    request: &'a Req,
    run: &'a Run<'a>,
}

impl<Req: ?Sized, O, F, C> Clone for Call<'_, Req, O, F, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req: ?Sized, O, F, C> Copy for Call<'_, Req, O, F, C> {}

impl<Req, O, F, C> Call<'_, Req, O, F, C>
where
    Req: ?Sized + Sync,
    O: Send,
    F: Fetcher<Req>,
    C: Fn(F::Output) -> O + Send + Sync,
{
    /// Runs the source with its policies. Returns its value, its fallback (`None`: omitted)
    /// or, for a required source, its error; a required source's panic is resumed so that the
    /// group reports it as a panic.
    async fn run(self) -> Result<Option<O>, BoxError> {
        let Self { source, index, run, .. } = self;
        run.recorder.start(index);
        let failure = match self.attempts().await {
            Ok(value) => {
                run.recorder.finish(index, Outcome::Ok);
                return Ok(Some(value));
            }
            Err(failure) => failure,
        };
        let outcome = failure.outcome();
        let elapsed_ms = run.recorder.offset().as_millis() as u64;
        if let Some(fallback) = &source.fallback {
            let reason = failure.detail();
            tracing::warn!(source = %source.name, kind = outcome.as_str(), elapsed_ms, reason, "source fell back");
            run.recorder.finish(index, Outcome::FellBack { after: Box::new(outcome) });
            return Ok(fallback.as_ref().map(|make| make()));
        }
        let error = failure.detail();
        tracing::warn!(source = %source.name, kind = outcome.as_str(), elapsed_ms, error, "source failed");
        run.recorder.finish(index, outcome);
        match failure {
            Failure::Error(error) => Err(error),
            Failure::TimedOut { after, .. } => Err(Box::new(SourceTimeout { after })),
            Failure::Panicked(payload) => std::panic::resume_unwind(payload),
        }
    }

    /// The attempts of the source: the first, then the retries its
    /// [`Retry`](muster_options::Retry) policy allows.
    ///
    /// Each policy's machinery (a hedge's second attempt, timers, the backoff) is boxed and
    /// only where the source has the policy: a source's future is moved into the group, and
    /// most sources have none.
    async fn attempts(&self) -> Result<O, Failure> {
        let failure = match self.attempt().await {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        match &self.source.config.retry {
            Some(retry) if failure.is_retryable(retry) => Box::pin(self.retries(retry, failure)).await,
            _ => Err(failure),
        }
    }

    /// Retries after `failure` with tower's jittered exponential backoff, never past the
    /// deadline.
    async fn retries(&self, retry: &Retry, mut failure: Failure) -> Result<O, Failure> {
        let Self { source, run, .. } = *self;
        let maker = ExponentialBackoffMaker::new(
            retry.min_backoff(),
            retry.max_backoff(),
            retry.jitter_ratio(),
            HasherRng::new(),
        );
        let Ok(mut maker) = maker else { return Err(failure) };
        let mut backoff = maker.make_backoff();
        for attempt in 1..retry.max_attempts() {
            let sleep = backoff.next_backoff();
            // A retry whose backoff would end at or after the deadline is not started: the last
            // real error is returned at once.
            if run.deadline.is_some_and(|deadline| sleep.deadline() >= deadline) {
                break;
            }
            let backoff_ms = (sleep.deadline() - Instant::now()).as_millis() as u64;
            tracing::info!(source = %source.name, attempt, backoff_ms, error = failure.detail(), "retrying");
            sleep.await;
            failure = match self.attempt().await {
                Ok(value) => return Ok(value),
                Err(failure) if failure.is_retryable(retry) => failure,
                Err(failure) => return Err(failure),
            };
        }
        Err(failure)
    }

    /// One attempt: hedged (the source's [`Hedge`](muster_options::Hedge)) or [`single`](Self::single).
    async fn attempt(&self) -> Result<O, Failure> {
        match self.source.config.hedge {
            Some(delay) => Box::pin(self.hedged(delay)).await,
            None => self.single().await,
        }
    }

    /// One fetch: timed if it has a [`limit`](Self::limit), plain otherwise.
    async fn single(&self) -> Result<O, Failure> {
        match self.limit() {
            Some(limit) => Box::pin(self.timed(limit)).await,
            None => self.fetch().await,
        }
    }

    /// One attempt hedged after `delay`: a second attempt starts after the delay (or at once
    /// if the first fails before it), the first success wins and the other attempt is
    /// dropped; it fails only when both have, with the last failure.
    async fn hedged(&self, delay: Duration) -> Result<O, Failure> {
        let mut first = std::pin::pin!(self.single());
        tokio::select! {
            biased;
            result = &mut first => match result {
                Ok(value) => return Ok(value),
                Err(_) => return self.single().await,
            },
            () = tokio::time::sleep(delay) => {}
        }
        tracing::debug!(source = %self.source.name, "hedging");
        let mut second = std::pin::pin!(self.single());
        tokio::select! {
            biased;
            result = &mut first => match result {
                Ok(value) => Ok(value),
                Err(_) => second.await,
            },
            result = &mut second => match result {
                Ok(value) => Ok(value),
                Err(_) => first.await,
            },
        }
    }

    /// The timeout of an attempt starting now, if it has one: the source's own timeout,
    /// capped by the global deadline. A required source leaves the global deadline to the
    /// group (which then reports it); an optional one falls back at it.
    fn limit(&self) -> Option<Limit> {
        let Self { source, run, .. } = *self;
        let own =
            source.config.timeout.map(|after| Limit { at: Instant::now() + after, kind: TimeoutKind::Source, after });
        let global = run.deadline.map(|at| Limit { at, kind: TimeoutKind::Global, after: Duration::ZERO });
        match (own, global) {
            // When both fire together, the global deadline is what is reported.
            (Some(own), Some(global)) if own.at >= global.at => source.fallback.as_ref().map(|_| global),
            (Some(own), _) => Some(own),
            (None, Some(global)) => source.fallback.as_ref().map(|_| global),
            (None, None) => None,
        }
    }

    /// One attempt under `limit`. The fetcher sees the tighter of its own timeout and the
    /// global deadline (which the group sets) as `muster_core::deadline()`, e.g. to tell its
    /// backend.
    async fn timed(&self, limit: Limit) -> Result<O, Failure> {
        let fetch = with_deadline(limit.at, self.fetch());
        match tokio::time::timeout_at(limit.at, fetch).await {
            Ok(result) => result,
            Err(_) => Err(Failure::TimedOut { timeout: limit.kind, after: limit.after }),
        }
    }

    /// One fetch, counted as an attempt, with its output converted and panics caught.
    async fn fetch(&self) -> Result<O, Failure> {
        let Self { typed, index, request, run, .. } = *self;
        run.recorder.attempt(index);
        match AssertUnwindSafe(typed.fetcher.fetch(request)).catch_unwind().await {
            Ok(Ok(value)) => Ok((typed.convert)(value)),
            Ok(Err(error)) => Err(Failure::Error(error.into())),
            Err(payload) => Err(Failure::Panicked(payload)),
        }
    }
}

/// When an attempt times out, and how the timeout is reported.
#[derive(Clone, Copy, Debug)]
struct Limit {
    at: Instant,
    kind: TimeoutKind,
    /// The source's own timeout; unused for the global deadline.
    after: Duration,
}

/// The message of a caught panic's payload (`panic!("...")` gives a `&str` or a `String`), or a
/// placeholder for other payloads.
fn panic_message(payload: &(dyn Any + Send)) -> Arc<str> {
    if let Some(message) = payload.downcast_ref::<&str>() {
        Arc::from(*message)
    } else if let Some(message) = payload.downcast_ref::<String>() {
        Arc::from(message.as_str())
    } else {
        Arc::from("non-string panic payload")
    }
}
