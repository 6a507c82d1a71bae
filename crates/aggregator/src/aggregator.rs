use std::any::Any;
use std::convert::identity;
use std::fmt;
use std::future::{Future, poll_fn};
use std::marker::PhantomData;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};

use muster_core::{Fetcher, Group, Name, Outputs};
use muster_options::{GroupConfig, GroupOption, SourceConfig, SourceOption};
use tracing::Instrument as _;

use crate::error::{AggregateError, BuildError, MergeError};
use crate::report::{Recorder, Report};
use crate::source::{self, Run, Source};

/// Runs named sources concurrently in one fail-fast [`Group`] and merges what they return.
///
/// Built by [`Aggregator::builder`]; cheap to clone (the sources are shared), and a
/// [`tower::Service`] so it mounts directly in axum or hyper.
///
/// Every source has a policy: required (its failure fails the aggregation and cancels the
/// others) or optional (its failure is replaced by a fallback and recorded), a per-source
/// timeout, retries and hedging. The result is an [`Aggregate`]: the outputs keyed by source
/// name, in declaration order, and a [`Report`].
pub struct Aggregator<Req: ?Sized, O> {
    inner: Arc<Inner<Req, O>>,
}

struct Inner<Req: ?Sized, O> {
    sources: Vec<Source<Req, O>>,
    /// The group options; its context fields are kept apart, in `fields`.
    group: GroupConfig,
    /// The request-context fields, shared by every report instead of copied into each.
    fields: Arc<[(Name, String)]>,
}

impl<Req: ?Sized, O> Clone for Aggregator<Req, O> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<Req: ?Sized, O> fmt::Debug for Aggregator<Req, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aggregator").field("sources", &self.inner.sources).field("group", &self.inner.group).finish()
    }
}

impl<Req: ?Sized + Sync, O: Send + 'static> Aggregator<Req, O> {
    /// A builder with no sources and no options.
    pub fn builder() -> Builder<Req, O> {
        Builder { sources: Vec::new(), group: GroupConfig::default(), errors: Vec::new() }
    }

    /// The source names, in declaration order.
    pub fn source_names(&self) -> impl Iterator<Item = &str> {
        self.inner.sources.iter().map(|source| &*source.name)
    }

    /// Runs every source for `request` and merges the outputs, or fails fast.
    ///
    /// # Errors
    ///
    /// An [`AggregateError`] naming the first required source to fail (or the deadline), with
    /// the report; every other source has been cancelled (dropped) when it returns.
    ///
    /// # Cancellation safety
    ///
    /// Dropping the future drops every source's fetch: nothing keeps running.
    pub async fn aggregate(&self, request: &Req) -> Result<Aggregate<O>, AggregateError> {
        let Inner { sources, group: config, fields } = &*self.inner;
        let context = Fields(fields);
        let span = match &config.span {
            Some(parent) => tracing::info_span!(parent: parent, "aggregate", context = %context),
            None => tracing::info_span!("aggregate", context = %context),
        };
        let mut group_config = config.clone();
        group_config.span = Some(span.clone());
        // Declared before the group, which borrows them, so that they outlive it; set once the
        // group has read the clock, the aggregation's start.
        let (recorder, run);
        let mut group = Group::from_config(group_config);
        let started = group.started();
        recorder = Recorder::new(started, sources.len(), config.limit);
        run = Run { recorder: &recorder, deadline: config.deadline.map(|after| started + after) };
        for (index, source) in sources.iter().enumerate() {
            if let Err(error) = source.spawn(index, request, &run, &mut group) {
                drop(group);
                let report = recorder.report(self.names(), None, Arc::clone(fields));
                return Err(AggregateError::spawn(error, report));
            }
        }
        let result = {
            let mut wait = pin!(group.wait());
            let wait = poll_fn(|cx| {
                let poll = wait.as_mut().poll(cx);
                recorder.stamp();
                poll
            });
            wait.instrument(span.clone()).await
        };
        let report = recorder.report(self.names(), result.as_ref().err(), Arc::clone(fields));
        let _entered = span.enter();
        let elapsed_ms = report.elapsed.as_millis() as u64;
        match result {
            Ok(outputs) => {
                tracing::info!(elapsed_ms, outcome = "ok", report = %report.compact(), "aggregation finished");
                Ok(Aggregate { outputs: outputs.flatten(), report })
            }
            Err(error) => {
                for cancelled in error.cancelled() {
                    tracing::info!(source = %cancelled, cause = %error.cause(), "source cancelled");
                }
                let error = AggregateError::group(error, report);
                let report = error.report();
                let trigger = report.trigger.as_ref().map(ToString::to_string);
                tracing::warn!(
                    elapsed_ms,
                    outcome = error.kind().as_str(),
                    trigger,
                    report = %report.compact(),
                    "aggregation finished"
                );
                Err(error)
            }
        }
    }

    fn names(&self) -> impl Iterator<Item = &Name> {
        self.inner.sources.iter().map(|source| &source.name)
    }
}

/// The request-context fields, rendered `user_id=42 request_id=r-1` for the aggregation span.
struct Fields<'a>(&'a [(Name, String)]);

impl fmt::Display for Fields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (name, value)) in self.0.iter().enumerate() {
            let separator = if i == 0 { "" } else { " " };
            write!(f, "{separator}{name}={value}")?;
        }
        Ok(())
    }
}

/// Builds an [`Aggregator`]: sources in declaration order, then options. Nothing is checked
/// until [`build`](Builder::build), which reports the first problem.
#[must_use = "a builder does nothing until `build` is called"]
pub struct Builder<Req: ?Sized, O> {
    sources: Vec<Source<Req, O>>,
    group: GroupConfig,
    errors: Vec<BuildError>,
}

impl<Req: ?Sized, O> fmt::Debug for Builder<Req, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder").field("sources", &self.sources).field("group", &self.group).finish_non_exhaustive()
    }
}

impl<Req: ?Sized + Sync, O: Send + 'static> Builder<Req, O> {
    /// Adds a required source with no policies.
    pub fn source<F>(self, name: impl Into<Name>, fetcher: F) -> Self
    where
        F: Fetcher<Req, Output = O> + 'static,
    {
        self.push(Source::new(name.into(), fetcher, identity, SourceConfig::<()>::default(), None))
    }

    /// Adds a source with policies: [`Optional`](muster_options::Optional),
    /// [`Timeout`](muster_options::Timeout), [`Retry`](muster_options::Retry),
    /// [`Hedge`](muster_options::Hedge), combined in a tuple.
    pub fn source_with<F>(self, name: impl Into<Name>, fetcher: F, options: impl SourceOption<O>) -> Self
    where
        F: Fetcher<Req, Output = O> + 'static,
        O: Clone + Sync,
    {
        let mut config = SourceConfig::default();
        options.apply(&mut config);
        let fallback = source::fallback(&config, |value: &O| value.clone());
        self.push(Source::new(name.into(), fetcher, identity, config, fallback))
    }

    /// Applies aggregator-level options: [`Deadline`](muster_options::Deadline),
    /// [`Limit`](muster_options::Limit), [`ParentSpan`](muster_options::ParentSpan),
    /// [`Field`](muster_options::Field).
    pub fn options(mut self, options: impl GroupOption) -> Self {
        options.apply(&mut self.group);
        self
    }

    fn push(mut self, source: Source<Req, O>) -> Self {
        if let Err(error) = source.config.validate() {
            self.errors.push(BuildError::Source { name: source.name.clone(), error });
        }
        self.sources.push(source);
        self
    }

    /// Checks everything and builds the aggregator.
    ///
    /// # Errors
    ///
    /// The first problem found: an invalid source option, a duplicate or empty name, an
    /// invalid aggregator option, or a retry policy whose backoffs alone exceed the deadline.
    pub fn build(self) -> Result<Aggregator<Req, O>, BuildError> {
        let Self { sources, mut group, errors } = self;
        if let Some(error) = errors.into_iter().next() {
            return Err(error);
        }
        group.validate()?;
        for (i, source) in sources.iter().enumerate() {
            if source.name.is_empty() {
                return Err(BuildError::EmptyName);
            }
            if sources[..i].iter().any(|earlier| earlier.name == source.name) {
                return Err(BuildError::DuplicateSource(source.name.clone()));
            }
            if let (Some(retry), Some(deadline)) = (&source.config.retry, group.deadline) {
                let needs = retry.min_total_backoff();
                if needs >= deadline {
                    let (name, attempts) = (source.name.clone(), retry.max_attempts());
                    return Err(BuildError::RetryBudget { name, attempts, needs, deadline });
                }
            }
        }
        let fields = std::mem::take(&mut group.fields).into();
        Ok(Aggregator { inner: Arc::new(Inner { sources, group, fields }) })
    }
}

/// The result of a successful aggregation: the outputs by source name, in declaration order
/// (an optional source that failed is there with its fallback, or absent if omitted), and the
/// report.
#[derive(Debug)]
#[non_exhaustive]
pub struct Aggregate<O> {
    /// The outputs, by source name.
    pub outputs: Outputs<O>,
    /// What happened to every source.
    pub report: Report,
}

/// The output type of an aggregator whose sources have different types: each value is taken
/// back out with its typed [`Key`].
pub type AnyOutput = Box<dyn Any + Send + Sync>;

/// Names a source of type `T` in an [`Aggregator<Req, AnyOutput>`], to take its output back
/// with its own type: no string look-ups or casts in user code.
pub struct Key<T> {
    name: Name,
    _type: PhantomData<fn() -> T>,
}

impl<T> Key<T> {
    /// A key for the source named `name`.
    pub fn new(name: impl Into<Name>) -> Self {
        Self { name: name.into(), _type: PhantomData }
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl<T> Clone for Key<T> {
    fn clone(&self) -> Self {
        Self::new(self.name.clone())
    }
}

impl<T> fmt::Debug for Key<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Key").field(&self.name).field(&std::any::type_name::<T>()).finish()
    }
}

impl<Req: ?Sized + Sync> Builder<Req, AnyOutput> {
    /// Adds a required source of its own output type, named by `key`.
    pub fn typed<F>(self, key: &Key<F::Output>, fetcher: F) -> Self
    where
        F: Fetcher<Req> + 'static,
        F::Output: Sync + 'static,
    {
        self.push(Source::new(key.name.clone(), fetcher, any, SourceConfig::<()>::default(), None))
    }

    /// Adds a source of its own output type with policies; see [`Builder::source_with`].
    pub fn typed_with<F>(self, key: &Key<F::Output>, fetcher: F, options: impl SourceOption<F::Output>) -> Self
    where
        F: Fetcher<Req> + 'static,
        F::Output: Clone + Sync + 'static,
    {
        let mut config = SourceConfig::default();
        options.apply(&mut config);
        let fallback = source::fallback(&config, |value: &F::Output| Box::new(value.clone()) as AnyOutput);
        self.push(Source::new(key.name.clone(), fetcher, any, config, fallback))
    }
}

/// Boxes a typed source's output for an [`AnyOutput`] aggregator.
fn any<T: Send + Sync + 'static>(value: T) -> AnyOutput {
    Box::new(value)
}

impl Aggregate<AnyOutput> {
    /// Moves the output named by `key` out, with its type.
    ///
    /// # Errors
    ///
    /// [`MergeError::Missing`] if there is no such output (unknown source, omitted by its
    /// fallback, or taken already), [`MergeError::WrongType`] if the key's type is not the
    /// source's.
    pub fn take<T: 'static>(&mut self, key: &Key<T>) -> Result<T, MergeError> {
        let value = self.outputs.take(&key.name).ok_or_else(|| MergeError::Missing(key.name.clone()))?;
        value.downcast::<T>().map(|value| *value).map_err(|_| MergeError::WrongType(key.name.clone()))
    }
}

impl<Req, O> tower::Service<Req> for Aggregator<Req, O>
where
    Req: Send + Sync + 'static,
    O: Send + 'static,
{
    type Response = Aggregate<O>;
    type Error = AggregateError;
    type Future = Pin<Box<dyn Future<Output = Result<Aggregate<O>, AggregateError>> + Send>>;

    /// Always ready: an aggregator has no capacity of its own (add tower's concurrency limit
    /// in front of it if needed).
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), AggregateError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let aggregator = self.clone();
        Box::pin(async move { aggregator.aggregate(&request).await })
    }
}
