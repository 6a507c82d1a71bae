//! One source inside an aggregation: its policies (timeout, retry, hedge, fallback) around the
//! fetch, and what it tells the report and the logs.

use std::any::Any;
use std::fmt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::Either;
use muster_core::{BoxError, Fetcher, Name, panic_message, with_deadline};
use muster_options::{Fallback, SourceConfig};
use tokio::time::Instant;
use tower::retry::backoff::{Backoff as _, ExponentialBackoffMaker, MakeBackoff as _};
use tower::util::rng::HasherRng;

use crate::error::SourceTimeout;
use crate::report::{Outcome, Recorder, TimeoutKind};

/// A fetcher with its error boxed, so sources of different error types share a list.
pub(crate) type DynFetcher<Req, O> = Box<dyn Fetcher<Req, Output = O, Error = BoxError>>;

/// Produces an optional source's fallback value, once per use.
pub(crate) type MakeFallback<O> = Arc<dyn Fn() -> O + Send + Sync>;

/// A named source and its policies, as the aggregator runs it.
pub(crate) struct Source<Req: ?Sized, O> {
    pub(crate) name: Name,
    pub(crate) fetcher: DynFetcher<Req, O>,
    pub(crate) config: SourceConfig<()>,
    /// `None`: required. `Some(None)`: optional, omitted on failure. `Some(Some(f))`: optional,
    /// replaced by `f()`.
    pub(crate) fallback: Option<Option<MakeFallback<O>>>,
}

impl<Req: ?Sized, O> Source<Req, O> {
    /// A source with `config`'s policies; its fallback, already turned into a maker by
    /// [`fallback`], is passed separately because it is of the source's own type.
    pub(crate) fn new<T>(
        name: Name,
        fetcher: DynFetcher<Req, O>,
        config: SourceConfig<T>,
        fallback: Option<Option<MakeFallback<O>>>,
    ) -> Self {
        let SourceConfig { timeout, retry, hedge, .. } = config;
        let mut erased = SourceConfig::<()>::default();
        (erased.timeout, erased.retry, erased.hedge) = (timeout, retry, hedge);
        Self { name, fetcher, config: erased, fallback }
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

/// Runs `source` for `request` with its policies. Returns its value, its fallback (`None`:
/// omitted) or, for a required source, its error; a required source's panic is resumed so
/// that the group reports it as a panic.
pub(crate) async fn run<Req: ?Sized + Sync, O: Send>(
    source: &Source<Req, O>,
    index: usize,
    request: &Req,
    run: &Run<'_>,
) -> Result<Option<O>, BoxError> {
    run.recorder.start(index);
    let failure = match attempts(source, index, request, run).await {
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

/// The attempts of one source: retried under its [`Retry`](muster_options::Retry) policy with
/// tower's jittered exponential backoff, never past the deadline.
async fn attempts<Req: ?Sized + Sync, O: Send>(
    source: &Source<Req, O>,
    index: usize,
    request: &Req,
    run: &Run<'_>,
) -> Result<O, Failure> {
    let retry = source.config.retry.as_ref();
    let mut backoff = retry.and_then(|retry| {
        let maker = ExponentialBackoffMaker::new(
            retry.min_backoff(),
            retry.max_backoff(),
            retry.jitter_ratio(),
            HasherRng::new(),
        );
        maker.ok().map(|mut maker| maker.make_backoff())
    });
    let mut attempt = 1;
    loop {
        // A hedge holds two attempts at once; boxing it keeps every source's future small (it
        // is moved into the group), hedged or not.
        let result = match source.config.hedge {
            None => timed(source, index, request, run).await,
            Some(delay) => Box::pin(hedged(source, delay, index, request, run)).await,
        };
        let failure = match result {
            Ok(value) => return Ok(value),
            Err(failure) => failure,
        };
        let retryable = match &failure {
            Failure::Error(error) => retry.is_some_and(|retry| retry.is_retryable(&**error)),
            Failure::TimedOut { .. } => true,
            Failure::Panicked(_) => false,
        };
        let (Some(retry), Some(backoff)) = (retry, backoff.as_mut()) else { return Err(failure) };
        if !retryable || attempt >= retry.max_attempts() {
            return Err(failure);
        }
        let sleep = backoff.next_backoff();
        // A retry whose backoff would end at or after the deadline is not started: the last
        // real error is returned at once.
        if run.deadline.is_some_and(|deadline| sleep.deadline() >= deadline) {
            return Err(failure);
        }
        let backoff_ms = (sleep.deadline() - Instant::now()).as_millis() as u64;
        tracing::info!(source = %source.name, attempt, backoff_ms, error = failure.detail(), "retrying");
        // Boxed like a hedge: a timer is large, and most sources never back off.
        Box::pin(sleep).await;
        attempt += 1;
    }
}

/// One attempt hedged after `delay` (the source's [`Hedge`](muster_options::Hedge)): a second
/// attempt starts after the delay (or at once if the first fails before it), the first success
/// wins and the other attempt is dropped; it fails only when both have, with the last failure.
async fn hedged<Req: ?Sized + Sync, O: Send>(
    source: &Source<Req, O>,
    delay: Duration,
    index: usize,
    request: &Req,
    run: &Run<'_>,
) -> Result<O, Failure> {
    let mut first = std::pin::pin!(timed(source, index, request, run));
    tokio::select! {
        biased;
        result = &mut first => match result {
            Ok(value) => return Ok(value),
            Err(_) => return timed(source, index, request, run).await,
        },
        () = tokio::time::sleep(delay) => {}
    }
    tracing::debug!(source = %source.name, "hedging");
    let mut second = std::pin::pin!(timed(source, index, request, run));
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

/// One fetch, counted as an attempt, with panics caught and the effective timeout applied: the
/// source's own timeout, capped by the global deadline. A required source leaves the global
/// deadline to the group (which then reports it); an optional one falls back at it.
async fn timed<Req: ?Sized + Sync, O: Send>(
    source: &Source<Req, O>,
    index: usize,
    request: &Req,
    run: &Run<'_>,
) -> Result<O, Failure> {
    run.recorder.attempt(index);
    let own = source.config.timeout.map(|after| (Instant::now() + after, TimeoutKind::Source, after));
    // The fetcher sees the tighter of its own timeout and the global deadline as
    // `muster_core::deadline()`, e.g. to tell its backend.
    let budget = own.map_or_else(|| run.deadline, |(at, ..)| Some(run.deadline.map_or(at, |global| global.min(at))));
    let fetch = source.fetcher.fetch(request);
    let fetch = match budget {
        Some(at) => Either::Left(with_deadline(at, fetch)),
        None => Either::Right(fetch),
    };
    let fetch = AssertUnwindSafe(fetch).catch_unwind();
    let global = run.deadline.map(|at| (at, TimeoutKind::Global, Duration::ZERO));
    let limit = match (own, global) {
        // When both fire together, the global deadline is what is reported.
        (Some(own), Some(global)) if own.0 >= global.0 => source.fallback.as_ref().map(|_| global),
        (Some(own), _) => Some(own),
        (None, Some(global)) => source.fallback.as_ref().map(|_| global),
        (None, None) => None,
    };
    let result = match limit {
        None => fetch.await,
        // Boxed: a timer is large, and only sources with a timeout (or optional ones under a
        // deadline) need one.
        Some((at, timeout, after)) => match Box::pin(tokio::time::timeout_at(at, fetch)).await {
            Ok(result) => result,
            Err(_) => return Err(Failure::TimedOut { timeout, after }),
        },
    };
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(error)) => Err(Failure::Error(error)),
        Err(payload) => Err(Failure::Panicked(payload)),
    }
}
