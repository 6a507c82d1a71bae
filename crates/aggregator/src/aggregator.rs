use std::fmt;
use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::FutureExt as _;
use muster_core::muster_options::{GroupConfig, GroupOption};
use muster_core::{BoxError, Fetcher, Group, Name, Outputs, async_trait};
use tracing::Instrument as _;

use crate::call::{Call, Shared};
use crate::context::{RequestContext, aggregate_span, set};
use crate::error::{AggregateError, BuildError, chain};
use crate::policy::Policy;
use crate::report::{Failure, Recorder, Report};

/// Runs named sources concurrently in one fail-fast [`Group`] and returns their outputs with
/// their own types.
///
/// `O` is the tuple of the sources' output types, in declaration order: an aggregator of a
/// `String` profile, a `Vec<Tx>` and an optional `Vec<Offer>` is an
/// `Aggregator<Req, (String, Vec<Tx>, Option<Vec<Offer>>)>`, and
/// [`aggregate`](Aggregator::aggregate) returns exactly that tuple: a missing output, a wrong
/// type or a wrong count does not compile. Built by [`Aggregator::builder`]; cheap to clone
/// (the sources are shared) and meant to be shared by every request, with what varies per
/// request in a [`RequestContext`]. It is a [`tower::Service`] as well.
///
/// ```
/// use muster::{Aggregator, Fallback, fetcher_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let name = fetcher_fn(|id: &u64| {
///     let id = *id;
///     async move { Ok::<_, std::io::Error>(format!("user {id}")) }
/// });
/// let balance = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(1250_u64) });
/// let offers = fetcher_fn(|_: &u64| async { Err::<Vec<String>, _>(std::io::Error::other("down")) });
///
/// let aggregator: Aggregator<u64, (String, u64, Vec<String>)> = Aggregator::builder()
///     .source("name", name)
///     .source("balance", balance)
///     .source_with("offers", offers, Fallback(Vec::new()))
///     .build()?;
/// let (name, balance, offers) = aggregator.aggregate(&7).await?.outputs;
/// assert_eq!((name.as_str(), balance, offers.len()), ("user 7", 1250, 0));
/// # Ok(()) }
/// ```
///
/// For sources of one type whose names are known only at run time (a list of backends, a JSON
/// merge keyed by source name), start from [`Aggregator::by_name`]: the outputs are then
/// [`Outputs`] by name, the same engine otherwise. An aggregator is itself a [`Fetcher`], so it
/// can be a source of another (under the outer source's cancellation).
pub struct Aggregator<Req: ?Sized, O: SourceOutputs<Req>> {
    inner: Arc<Inner<Req, O>>,
}

struct Inner<Req: ?Sized, O: SourceOutputs<Req>> {
    sources: O::Sources,
    names: Box<[Name]>,
    /// The group options; its context fields are kept apart, in `fields`.
    group: GroupConfig,
    /// The aggregator's default context fields ([`Field`](crate::Field) options).
    fields: Vec<(Name, String)>,
}

impl<Req: ?Sized, O: SourceOutputs<Req>> Clone for Aggregator<Req, O> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

impl<Req: ?Sized, O: SourceOutputs<Req>> fmt::Debug for Aggregator<Req, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aggregator").field("sources", &self.inner.names).field("group", &self.inner.group).finish()
    }
}

impl<Req: ?Sized + Sync> Aggregator<Req, ()> {
    /// A builder with no sources and no options, whose outputs are a tuple with one element
    /// per source, in declaration order.
    pub fn builder() -> AggregatorBuilder<Req, ()> {
        AggregatorBuilder::new(())
    }
}

impl<Req: ?Sized + Sync + 'static, T: Send + 'static> Aggregator<Req, Outputs<T>> {
    /// A builder for sources of one output type `T` whose outputs come back by name, as
    /// [`Outputs<T>`], in declaration order: for names known at run time.
    ///
    /// ```
    /// use muster::{Aggregator, Outputs, fetcher_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let region = |name: &'static str| fetcher_fn(move |_: &u64| async move { Ok::<_, std::io::Error>(name.len()) });
    /// let mut builder = Aggregator::by_name();
    /// for name in ["eu", "us", "apac"] {
    ///     builder = builder.source(name, region(name));
    /// }
    /// let outputs: Outputs<usize> = builder.build()?.aggregate(&1).await?.outputs;
    /// assert_eq!(outputs["apac"], 4);
    /// assert_eq!(outputs.names().collect::<Vec<_>>(), ["eu", "us", "apac"]);
    /// # Ok(()) }
    /// ```
    pub fn by_name() -> AggregatorBuilder<Req, Outputs<T>> {
        AggregatorBuilder::new(Vec::new())
    }
}

impl<Req: ?Sized + Sync, O: SourceOutputs<Req>> Aggregator<Req, O> {
    /// The source names, in declaration order.
    pub fn source_names(&self) -> impl Iterator<Item = &str> {
        self.inner.names.iter().map(|name| &**name)
    }

    /// Runs every source for `request` and returns their outputs, or fails fast. The same as
    /// [`aggregate_with`](Self::aggregate_with) with an empty [`RequestContext`].
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
        self.aggregate_with(request, RequestContext::new()).await
    }

    /// Runs every source for `request` under `context`: its fields go to the spans, the
    /// events, the report and the error; its deadline tightens the aggregator's.
    ///
    /// # Errors
    ///
    /// As [`aggregate`](Self::aggregate).
    ///
    /// # Cancellation safety
    ///
    /// Dropping the future drops every source's fetch, and logs one `info` event saying the
    /// caller went away and what was in flight.
    pub async fn aggregate_with(&self, request: &Req, context: RequestContext) -> Result<Aggregate<O>, AggregateError> {
        let Inner { sources, names, group: config, fields: defaults } = &*self.inner;
        let RequestContext { fields: own, deadline, parent, span: parent_span } = context;
        let mut fields = defaults.clone();
        own.into_iter().for_each(|(name, value)| set(&mut fields, name, value));
        let span = aggregate_span(&fields, parent_span.as_ref().or(config.span.as_ref()));
        let mut group_config = config.clone();
        group_config.deadline = match (config.deadline, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        group_config.span = Some(span.clone());
        // Declared before the group, which borrows them, so that they outlive it.
        let slots = O::slots(sources);
        let shared;
        let mut group = Group::from_config(group_config);
        if let Some(parent) = &parent {
            group = group.with_parent(parent);
        }
        shared = Arc::new(Shared {
            recorder: Recorder::new(group.started(), names.len(), config.limit),
            token: group.token(),
        });
        // A source is refused only when the group is closed already (a cancelled parent):
        // `wait` then reports the cancellation, so there is nothing to handle here.
        O::spawn(sources, names, request, &slots, &shared, &mut group);
        let mut gone = CallerGone { shared: &shared, names, span: &span, armed: true };
        let result = {
            let mut wait = pin!(group.wait());
            let wait = poll_fn(|cx| {
                let poll = wait.as_mut().poll(cx);
                shared.recorder.stamp();
                poll
            });
            wait.instrument(span.clone()).await
        };
        gone.armed = false;
        let report = shared.recorder.report(names, result.as_ref().err(), fields);
        #[cfg(feature = "metrics")]
        crate::metrics::record(&report, result.as_ref().err());
        let _entered = span.enter();
        let elapsed_ms = report.elapsed.as_millis() as u64;
        let error = match result {
            Ok(_) => match O::take(slots, names) {
                Some(outputs) => {
                    tracing::debug!(elapsed_ms, report = %report.compact(), "aggregation finished");
                    return Ok(Aggregate { outputs, report });
                }
                None => AggregateError::missing(report),
            },
            Err(error) => AggregateError::group(error, report),
        };
        let report = error.report();
        fn listed(names: &[Name]) -> Option<tracing::field::DebugValue<Vec<&str>>> {
            let names: Vec<&str> = names.iter().map(|name| &**name).collect();
            (!names.is_empty()).then(|| tracing::field::debug(names))
        }
        tracing::warn!(
            source = error.source_name(),
            kind = error.kind().as_str(),
            elapsed_ms,
            error = %chain(&error),
            cancelled = listed(error.cancelled()),
            pending = listed(error.pending()),
            report = %report.compact(),
            "aggregation failed"
        );
        Err(error)
    }
}

/// Logs, once, that the caller stopped waiting (dropped the aggregation), with what was in
/// flight.
struct CallerGone<'a> {
    shared: &'a Shared,
    names: &'a [Name],
    span: &'a tracing::Span,
    armed: bool,
}

impl Drop for CallerGone<'_> {
    fn drop(&mut self) {
        if self.armed {
            let in_flight = self.shared.recorder.in_flight(self.names);
            let elapsed_ms = self.shared.recorder.offset().as_millis() as u64;
            let _entered = self.span.enter();
            tracing::info!(elapsed_ms, in_flight = ?in_flight, "aggregation cancelled by the caller");
        }
    }
}

/// The result of a successful aggregation: the outputs, in declaration order and with their own
/// types, and the report.
#[derive(Debug)]
#[non_exhaustive]
pub struct Aggregate<O> {
    /// The sources' outputs, as a tuple in declaration order. An [`Optional`](crate::Optional)
    /// source's output is `Option<T>`; one with a [`Fallback`](crate::Fallback) is `T`.
    pub outputs: O,
    /// What happened to every source.
    pub report: Report,
}

/// Builds an [`Aggregator`]: sources in declaration order, then options. Nothing is checked
/// until [`build`](AggregatorBuilder::build), which reports the first problem.
#[must_use = "a builder does nothing until `build` is called"]
pub struct AggregatorBuilder<Req: ?Sized, O: SourceOutputs<Req>> {
    sources: O::Sources,
    names: Vec<Name>,
    /// What each source's policies need of the deadline.
    needs: Vec<Duration>,
    group: GroupConfig,
    error: Option<BuildError>,
}

impl<Req: ?Sized, O: SourceOutputs<Req>> fmt::Debug for AggregatorBuilder<Req, O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregatorBuilder")
            .field("sources", &self.names)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl<Req: ?Sized, O: SourceOutputs<Req>> AggregatorBuilder<Req, O> {
    fn new(sources: O::Sources) -> Self {
        Self { sources, names: Vec::new(), needs: Vec::new(), group: GroupConfig::default(), error: None }
    }
}

impl<Req: ?Sized + Sync, O: SourceOutputs<Req>> AggregatorBuilder<Req, O> {
    /// Adds a required source: its failure fails the aggregation and cancels the others. Its
    /// output, `F::Output`, is the next element of the aggregate's tuple.
    pub fn source<F>(self, name: impl Into<Name>, fetcher: F) -> AggregatorBuilder<Req, O::With>
    where
        F: Fetcher<Req> + 'static,
        O: Push<Req, F::Output>,
    {
        self.source_with(name, fetcher, ())
    }

    /// Adds a source wrapped in `policy`: one [`Policy`] value, or a tuple of them listed from
    /// the inside out, e.g. `(Timeout(d), Retry::attempts(3), Fallback(v))` (see
    /// [`policy`](crate::policy) for the order). The wrapped fetcher's output is the next
    /// element of the aggregate's tuple: `Option<T>` for [`Optional`](crate::Optional), `T`
    /// for [`Fallback`](crate::Fallback).
    pub fn source_with<F, P>(mut self, name: impl Into<Name>, fetcher: F, policy: P) -> AggregatorBuilder<Req, O::With>
    where
        P: Policy<F>,
        P::Fetcher: Fetcher<Req> + 'static,
        O: Push<Req, <P::Fetcher as Fetcher<Req>>::Output>,
    {
        let name = name.into();
        match policy.check() {
            Ok(needs) => self.needs.push(needs),
            Err(error) => {
                self.needs.push(Duration::ZERO);
                self.error.get_or_insert(BuildError::Source { name: name.clone(), error });
            }
        }
        let entry: Entry<Req, <P::Fetcher as Fetcher<Req>>::Output> = Box::new(Typed(policy.wrap(fetcher)));
        self.names.push(name);
        AggregatorBuilder {
            sources: O::push(self.sources, entry),
            names: self.names,
            needs: self.needs,
            group: self.group,
            error: self.error,
        }
    }

    /// Applies aggregator-level options: [`Deadline`](crate::Deadline),
    /// [`Limit`](crate::Limit), and default [`Field`](crate::Field)s and
    /// [`ParentSpan`](crate::ParentSpan) under the call's [`RequestContext`].
    pub fn options(mut self, options: impl GroupOption) -> Self {
        options.apply(&mut self.group);
        self
    }

    /// Checks everything and builds the aggregator.
    ///
    /// # Errors
    ///
    /// The first problem found: an invalid source policy, a duplicate or empty name, an
    /// invalid aggregator option, or a source whose policies (a retry's backoffs) need the
    /// whole deadline.
    pub fn build(self) -> Result<Aggregator<Req, O>, BuildError> {
        let Self { sources, names, needs, mut group, error } = self;
        if let Some(error) = error {
            return Err(error);
        }
        group.validate()?;
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() {
                return Err(BuildError::EmptyName);
            }
            if names[..i].contains(name) {
                return Err(BuildError::DuplicateSource(name.clone()));
            }
        }
        if let Some(deadline) = group.deadline {
            if let Some((name, &needs)) =
                names.iter().zip(&needs).find(|(_, needs)| **needs >= deadline && !needs.is_zero())
            {
                return Err(BuildError::Budget { name: name.clone(), needs, deadline });
            }
        }
        let fields = std::mem::take(&mut group.fields);
        Ok(Aggregator { inner: Arc::new(Inner { sources, names: names.into(), group, fields }) })
    }
}

/// A source's output, written by its task once it has it.
pub struct Slot<T>(Mutex<Option<T>>);

impl<T> fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Slot")
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

impl<T> Slot<T> {
    fn put(&self, value: T) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(value);
    }

    fn take(self) -> Option<T> {
        self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A source as an aggregator stores it: its fetcher's type erased, its output type kept.
pub type Entry<Req, T> = Box<dyn Erased<Req, T>>;

/// A fetcher with its type erased but its output type kept, so that sources of different
/// fetcher types but one output type look alike. A source's run is compiled for its own
/// fetcher: the fetch is awaited and its output stored in place, and the run is boxed once, by
/// the group.
#[doc(hidden)]
pub trait Erased<Req: ?Sized, T>: Send + Sync {
    /// Adds this source's run for `request`, as source `index`, to `group`.
    fn spawn<'a>(&'a self, name: &Name, call: Call, request: &'a Req, slot: &'a Slot<T>, group: &mut Group<'a, ()>);
}

struct Typed<F>(F);

impl<Req, F> Erased<Req, F::Output> for Typed<F>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
{
    fn spawn<'a>(
        &'a self,
        name: &Name,
        call: Call,
        request: &'a Req,
        slot: &'a Slot<F::Output>,
        group: &mut Group<'a, ()>,
    ) {
        let run = async move {
            let (shared, index) = (Arc::clone(&call.shared), call.index);
            shared.recorder.start(index);
            match AssertUnwindSafe(call.scope(self.0.fetch(request))).catch_unwind().await {
                Ok(Ok(value)) => {
                    slot.put(value);
                    shared.recorder.finish(index, None);
                    Ok(())
                }
                Ok(Err(error)) => {
                    let error: BoxError = error.into();
                    tracing::debug!(error = %error, "source failed");
                    shared.recorder.finish(index, Some(Failure::Error(&error)));
                    Err(error)
                }
                Err(panic) => {
                    let message = crate::panic_message(&*panic);
                    tracing::debug!(panic = %message, "source panicked");
                    shared.recorder.finish(index, Some(Failure::Panicked(&message)));
                    // The group turns it into the source's error and cancels the others.
                    std::panic::resume_unwind(panic)
                }
            }
        };
        let _ = group.spawn(name.clone(), run);
    }
}

/// The outputs of an aggregator's sources: implemented for tuples of up to 12 output types
/// (and `()`), which is what [`AggregatorBuilder::source`] builds. Not meant to be implemented
/// elsewhere; its items are the aggregator's plumbing.
pub trait SourceOutputs<Req: ?Sized>: Sized + Send + 'static {
    /// The sources, one [`Entry`] per output.
    #[doc(hidden)]
    type Sources: Send + Sync;
    /// Where the outputs are written while the aggregation runs.
    #[doc(hidden)]
    type Slots: Send + Sync;

    /// Empty slots for `sources`.
    #[doc(hidden)]
    fn slots(sources: &Self::Sources) -> Self::Slots;

    /// Spawns every source into `group`.
    #[doc(hidden)]
    fn spawn<'a>(
        sources: &'a Self::Sources,
        names: &[Name],
        request: &'a Req,
        slots: &'a Self::Slots,
        shared: &Arc<Shared>,
        group: &mut Group<'a, ()>,
    );

    /// The outputs, once every source has written its own.
    #[doc(hidden)]
    fn take(slots: Self::Slots, names: &[Name]) -> Option<Self>;
}

/// Adds one source of output `T` to a [`SourceOutputs`] tuple: `(A, B)` becomes `(A, B, T)`.
pub trait Push<Req: ?Sized, T>: SourceOutputs<Req> {
    /// The tuple with `T` appended.
    type With: SourceOutputs<Req>;

    /// Appends `entry` to `sources`.
    #[doc(hidden)]
    fn push(sources: Self::Sources, entry: Entry<Req, T>) -> <Self::With as SourceOutputs<Req>>::Sources;
}

impl<Req: ?Sized> SourceOutputs<Req> for () {
    type Sources = ();
    type Slots = ();

    fn slots((): &()) {}

    fn spawn<'a>(_: &'a (), _: &[Name], _: &'a Req, _: &'a (), _: &Arc<Shared>, _: &mut Group<'a, ()>) {}

    fn take((): (), _: &[Name]) -> Option<()> {
        Some(())
    }
}

impl<Req: ?Sized + Sync + 'static, T: Send + 'static> SourceOutputs<Req> for Outputs<T> {
    type Sources = Vec<Entry<Req, T>>;
    type Slots = Box<[Slot<T>]>;

    fn slots(sources: &Self::Sources) -> Self::Slots {
        sources.iter().map(|_| Slot::default()).collect()
    }

    fn spawn<'a>(
        sources: &'a Self::Sources,
        names: &[Name],
        request: &'a Req,
        slots: &'a Self::Slots,
        shared: &Arc<Shared>,
        group: &mut Group<'a, ()>,
    ) {
        for (index, ((source, name), slot)) in sources.iter().zip(names).zip(slots.iter()).enumerate() {
            source.spawn(name, Call { shared: Arc::clone(shared), index }, request, slot, group);
        }
    }

    fn take(slots: Self::Slots, names: &[Name]) -> Option<Self> {
        names.iter().zip(slots.into_vec()).map(|(name, slot)| Some((name.clone(), slot.take()?))).collect()
    }
}

impl<Req: ?Sized + Sync + 'static, T: Send + 'static> Push<Req, T> for Outputs<T> {
    type With = Self;

    fn push(mut sources: Self::Sources, entry: Entry<Req, T>) -> Self::Sources {
        sources.push(entry);
        sources
    }
}

macro_rules! outputs {
    ($($T:ident $i:tt),+) => {
        impl<Req: ?Sized + Sync + 'static, $($T: Send + 'static),+> SourceOutputs<Req> for ($($T,)+) {
            type Sources = ($(Entry<Req, $T>,)+);
            type Slots = ($(Slot<$T>,)+);

            fn slots(_: &Self::Sources) -> Self::Slots {
                ($(Slot::<$T>::default(),)+)
            }

            fn spawn<'a>(
                sources: &'a Self::Sources,
                names: &[Name],
                request: &'a Req,
                slots: &'a Self::Slots,
                shared: &Arc<Shared>,
                group: &mut Group<'a, ()>,
            ) {
                $(
                    if let Some(name) = names.get($i) {
                        let call = Call { shared: Arc::clone(shared), index: $i };
                        sources.$i.spawn(name, call, request, &slots.$i, group);
                    }
                )+
            }

            fn take(slots: Self::Slots, _: &[Name]) -> Option<Self> {
                Some(($(slots.$i.take()?,)+))
            }
        }
    };
}

macro_rules! push {
    ($($T:ident),*) => {
        #[allow(non_snake_case)]
        impl<Req: ?Sized + Sync + 'static, $($T: Send + 'static,)* New: Send + 'static> Push<Req, New> for ($($T,)*) {
            type With = ($($T,)* New,);

            fn push(sources: Self::Sources, entry: Entry<Req, New>) -> <Self::With as SourceOutputs<Req>>::Sources {
                let ($($T,)*) = sources;
                ($($T,)* entry,)
            }
        }
    };
}

outputs!(A 0);
outputs!(A 0, B 1);
outputs!(A 0, B 1, C 2);
outputs!(A 0, B 1, C 2, D 3);
outputs!(A 0, B 1, C 2, D 3, E 4);
outputs!(A 0, B 1, C 2, D 3, E 4, F 5);
outputs!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
outputs!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
outputs!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
outputs!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
outputs!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
outputs!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

push!();
push!(A);
push!(A, B);
push!(A, B, C);
push!(A, B, C, D);
push!(A, B, C, D, E);
push!(A, B, C, D, E, F);
push!(A, B, C, D, E, F, G);
push!(A, B, C, D, E, F, G, H);
push!(A, B, C, D, E, F, G, H, I);
push!(A, B, C, D, E, F, G, H, I, J);
push!(A, B, C, D, E, F, G, H, I, J, K);

/// An aggregator is a source of another: its fetch aggregates under the outer source's
/// cancellation (so an outer failure cancels the inner sources, and their cause says so) and
/// deadline. Its error is the inner [`AggregateError`].
#[async_trait]
impl<Req, O> Fetcher<Req> for Aggregator<Req, O>
where
    Req: ?Sized + Sync,
    O: SourceOutputs<Req>,
{
    type Output = O;
    type Error = AggregateError;

    async fn fetch(&self, request: &Req) -> Result<O, AggregateError> {
        let mut context = RequestContext::new();
        if let Some(token) = crate::cancellation() {
            context = context.cancel_on(&token);
        }
        if let Some(remaining) = crate::remaining() {
            context = context.deadline(remaining);
        }
        self.aggregate_with(request, context).await.map(|aggregate| aggregate.outputs)
    }
}

impl<Req, O> tower::Service<Req> for Aggregator<Req, O>
where
    Req: Send + Sync + 'static,
    O: SourceOutputs<Req>,
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
