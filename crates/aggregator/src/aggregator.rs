use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use muster_core::muster_options::{GroupConfig, GroupOption};
use muster_core::{Classify, Fetcher, Group, Name, Outputs, async_trait};
use tracing::Instrument as _;

use crate::call::Shared;
use crate::context::{RequestContext, aggregate_span, set};
use crate::error::{AggregateError, BuildError, chain, check_names};
use crate::in_flight::{InFlight, Tracked};
use crate::policy::Policy;
use crate::report::{Recorder, Report};
use crate::sources::{Dependent, Entry, Get, Push, SourceOutputs, Typed};

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
    names: Arc<[Name]>,
    /// For each source, the source whose output it waits for, if it is a dependent.
    inputs: Arc<[Option<usize>]>,
    /// The group options; its context fields are kept apart, in `fields`.
    group: GroupConfig,
    /// The aggregator's default context fields ([`Field`](crate::options::Field) options), shared by
    /// the reports of calls that add none.
    fields: Arc<[(Name, String)]>,
    /// The same as the [`context()`](crate::context) of calls that add nothing, made once.
    context: muster_core::Context,
    /// Where its calls show while they run, if anywhere.
    in_flight: Option<InFlight>,
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
    /// use muster::{Aggregator, group::Outputs, fetcher_fn};
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

    /// The registry its calls show in while they run, if it was built with one
    /// ([`AggregatorBuilder::in_flight`]): `aggregator.in_flight().map(InFlight::snapshot)`.
    pub fn in_flight(&self) -> Option<&InFlight> {
        self.inner.in_flight.as_ref()
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
        let Inner { sources, names, inputs, group: config, fields: defaults, context: default_context, in_flight } =
            &*self.inner;
        let RequestContext { fields: own, deadline, parent, span: parent_span, on_ready, traceparent, headers } =
            context;
        // What the sources read as `context()`: made once per call, and only when the call
        // brings something of its own; a call that brings nothing inside another aggregation
        // (a nested aggregator) keeps the enclosing request's context.
        let plain = own.is_empty() && traceparent.is_none() && headers.is_empty();
        let fields: Arc<[(Name, String)]> = if own.is_empty() {
            Arc::clone(defaults)
        } else {
            let mut fields = defaults.to_vec();
            own.into_iter().for_each(|(name, value)| set(&mut fields, name, value));
            fields.into()
        };
        let request_context = match plain.then(muster_core::context).flatten() {
            Some(enclosing) => enclosing,
            None if plain => default_context.clone(),
            None => {
                let context = fields.iter().fold(muster_core::Context::new(), |context, (name, value)| {
                    context.with_field(name.clone(), value.clone())
                });
                let context =
                    headers.into_iter().fold(context, |context, (name, value)| context.with_header(name, value));
                match &traceparent {
                    Some(traceparent) => context.with_traceparent(traceparent.clone()),
                    None => context,
                }
            }
        };
        let span = aggregate_span(&fields, parent_span.as_ref().or(config.span.as_ref()), traceparent.as_deref());
        let mut group_config = config.clone();
        group_config.deadline = match (config.deadline, deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        group_config.span = Some(span.clone());
        // Declared before the group, which borrows them, so that they outlive it.
        let mut slots = O::slots(sources);
        let (places, refs) = O::split(&mut slots, inputs);
        let shared: Arc<Shared>;
        let after = group_config.deadline;
        let mut group = Group::from_config(group_config);
        if let Some(parent) = &parent {
            group = group.with_parent(parent);
        }
        let recorder = Recorder::new(group.timeline(names.len()), config.limit, O::entries(names.len()));
        shared = Arc::<Shared<O::Entries>>::new(Shared {
            names: Arc::clone(names),
            on_ready,
            deadline: after.map(|after| group.started() + after).into_iter().chain(muster_core::deadline()).min(),
            recorder,
        });
        // A source is refused only when the group is closed already (a cancelled parent):
        // `wait` then reports the cancellation, so there is nothing to handle here.
        O::spawn(sources, names, request, places, refs.as_ref(), &shared, &mut group);
        let registration = in_flight.as_ref().map(|in_flight| {
            let (shared, fields, inputs) = (Arc::clone(&shared), Arc::clone(&fields), Arc::clone(inputs));
            in_flight.register(Tracked { shared, fields, inputs })
        });
        let mut gone = CallerGone { shared: &shared, names, span: &span, armed: true };
        let wait = group.wait_with_failure_report().instrument(span.clone());
        let (result, group_report) = muster_core::with_context(request_context, wait).await;
        gone.armed = false;
        drop(registration);
        let report = shared.recorder.report(group_report, names, inputs, result.as_ref().err(), fields);
        // The dependents' view of the slots ends with the group.
        drop(refs);
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
        if let Some(in_flight) = in_flight {
            in_flight.failed(error.report());
        }
        crate::context::failed(&span, error.kind().as_str(), &error);
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
            crate::context::cancelled(self.span, "the caller went away");
            #[cfg(feature = "metrics")]
            crate::metrics::caller_gone(self.shared.recorder.offset());
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

impl<O> Aggregate<O> {
    /// Whether an optional source's fallback (or its absence) stands in for its output: the
    /// aggregate is partial, e.g. because that source was still pending at the deadline.
    pub fn is_partial(&self) -> bool {
        self.report.sources.iter().any(|source| matches!(source.outcome, crate::report::Outcome::FellBack { .. }))
    }
}

/// Builds an [`Aggregator`]: sources in declaration order, then options. Nothing is checked
/// until [`build`](AggregatorBuilder::build), which reports the first problem.
#[must_use = "a builder does nothing until `build` is called"]
pub struct AggregatorBuilder<Req: ?Sized, O: SourceOutputs<Req>> {
    sources: O::Sources,
    names: Vec<Name>,
    inputs: Vec<Option<usize>>,
    /// What each source's policies need of the deadline.
    needs: Vec<Duration>,
    group: GroupConfig,
    in_flight: Option<InFlight>,
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
        Self {
            sources,
            names: Vec::new(),
            inputs: Vec::new(),
            needs: Vec::new(),
            group: GroupConfig::default(),
            in_flight: None,
            error: None,
        }
    }
}

impl<Req: ?Sized + Sync, O: SourceOutputs<Req>> AggregatorBuilder<Req, O> {
    /// Adds a required source: its failure fails the aggregation and cancels the others. Its
    /// output, `F::Output`, is the next element of the aggregate's tuple.
    ///
    /// Its error says what kind it is ([`Classify`]): the aggregator asks it before boxing it,
    /// and the error, report, log event, metrics and HTTP body say that kind.
    pub fn source<F>(self, name: impl Into<Name>, fetcher: F) -> AggregatorBuilder<Req, O::With>
    where
        F: Fetcher<Req> + 'static,
        F::Error: Classify,
        F::Output: 'static,
        O: Push<Req, F::Output>,
    {
        self.source_with(name, fetcher, ())
    }

    /// Adds a source wrapped in `policy`: one [`Policy`] value, or a tuple of them listed
    /// outermost first, as tower's `ServiceBuilder` does, e.g.
    /// `(Fallback(v), Retry::attempts(3), Timeout(d))`: a timeout per attempt, retried, then the
    /// fallback (see [`policy`](crate::policy) for the order). The wrapped fetcher's output is the next
    /// element of the aggregate's tuple: `Option<T>` for [`Optional`](crate::Optional), `T`
    /// for [`Fallback`](crate::Fallback).
    ///
    /// The wrapped fetcher's error must implement [`Classify`], as for
    /// [`source`](Self::source); the policies pass the source's own kind on, and need
    /// `F::Error: Classify + Error + Send + Sync + 'static`.
    pub fn source_with<F, P>(self, name: impl Into<Name>, fetcher: F, policy: P) -> AggregatorBuilder<Req, O::With>
    where
        P: Policy<F>,
        P::Fetcher: Fetcher<Req> + 'static,
        <P::Fetcher as Fetcher<Req>>::Error: Classify,
        <P::Fetcher as Fetcher<Req>>::Output: 'static,
        O: Push<Req, <P::Fetcher as Fetcher<Req>>::Output>,
    {
        let needs = policy.check();
        self.push(name.into(), needs, Box::new(Typed(policy.wrap(fetcher))))
    }

    /// Adds a dependent source: it waits for the output of `input` (an earlier source:
    /// [`Input::<I>`](Input) by position for a tuple, its name for sources
    /// [`by_name`](Aggregator::by_name)), makes its own request from the aggregation's and that
    /// output with `make`, and fetches it with `fetcher`. It starts the instant its input is
    /// ready (in the same poll), under the same deadline and fail-fast rule: a failed input
    /// cancels it. An input that does not exist does not compile (or, by name, is refused by
    /// [`build`](Self::build)); since inputs are declared before, there are no cycles.
    ///
    /// ```
    /// use muster::{Aggregator, builder::Input, fetcher_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// #[derive(Clone, Debug)]
    /// struct Profile { tier: String }
    ///
    /// let profile = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>(Profile { tier: "gold".into() }) });
    /// let offers = fetcher_fn(|tier: &String| {
    ///     let offers = vec![format!("{tier} card")];
    ///     async move { Ok::<_, std::io::Error>(offers) }
    /// });
    /// let aggregator = Aggregator::builder()
    ///     .source("profile", profile)
    ///     .then("offers", Input::<0>, |_: &u64, profile: &Profile| profile.tier.clone(), offers)
    ///     .build()?;
    /// let (profile, offers) = aggregator.aggregate(&7).await?.outputs;
    /// assert_eq!((profile.tier.as_str(), offers), ("gold", vec!["gold card".to_owned()]));
    /// # Ok(()) }
    /// ```
    pub fn then<I, M, R, F>(
        self,
        name: impl Into<Name>,
        input: I,
        make: M,
        fetcher: F,
    ) -> AggregatorBuilder<Req, O::With>
    where
        I: InputOf<O>,
        M: Fn(&Req, &I::Item) -> R + Send + Sync + 'static,
        R: Send + Sync + 'static,
        F: Fetcher<R> + 'static,
        F::Error: Classify,
        F::Output: 'static,
        O: Push<Req, F::Output>,
    {
        self.then_with(name, input, make, fetcher, ())
    }

    /// [`then`](Self::then) with policies around the dependent's fetcher, as in
    /// [`source_with`](Self::source_with).
    pub fn then_with<I, M, R, F, P>(
        self,
        name: impl Into<Name>,
        input: I,
        make: M,
        fetcher: F,
        policy: P,
    ) -> AggregatorBuilder<Req, O::With>
    where
        I: InputOf<O>,
        M: Fn(&Req, &I::Item) -> R + Send + Sync + 'static,
        R: Send + Sync + 'static,
        F: 'static,
        P: Policy<F>,
        P::Fetcher: Fetcher<R> + 'static,
        <P::Fetcher as Fetcher<R>>::Error: Classify,
        <P::Fetcher as Fetcher<R>>::Output: 'static,
        O: Push<Req, <P::Fetcher as Fetcher<R>>::Output>,
    {
        let needs = policy.check();
        let index = input.index(&self.names);
        let mut this = self;
        let input = match index {
            Some(index) => index,
            None => {
                this.error.get_or_insert(BuildError::MissingInput(input.name()));
                usize::MAX
            }
        };
        let dependent = Dependent { input, make, fetcher: policy.wrap(fetcher), _input: PhantomData::<fn(&I::Item)> };
        let mut next = this.push(name.into(), needs, Box::new(dependent));
        if let Some(last) = next.inputs.last_mut() {
            *last = Some(input).filter(|&input| input != usize::MAX);
        }
        next
    }

    fn push<T>(
        mut self,
        name: Name,
        needs: Result<Duration, muster_core::muster_options::OptionError>,
        entry: Entry<Req, T>,
    ) -> AggregatorBuilder<Req, O::With>
    where
        O: Push<Req, T>,
    {
        match needs {
            Ok(needs) => self.needs.push(needs),
            Err(error) => {
                self.needs.push(Duration::ZERO);
                self.error.get_or_insert(BuildError::Source { name: name.clone(), error });
            }
        }
        self.names.push(name);
        self.inputs.push(None);
        AggregatorBuilder {
            sources: O::push(self.sources, entry),
            names: self.names,
            inputs: self.inputs,
            needs: self.needs,
            group: self.group,
            in_flight: self.in_flight,
            error: self.error,
        }
    }

    /// Applies aggregator-level options: [`Deadline`](crate::Deadline),
    /// [`Limit`](crate::options::Limit), and default [`Field`](crate::options::Field)s and
    /// [`ParentSpan`](crate::options::ParentSpan) under the call's [`RequestContext`].
    pub fn options(mut self, options: impl GroupOption) -> Self {
        options.apply(&mut self.group);
        self
    }

    /// Shows this aggregator's calls in `in_flight` while they run ([`InFlight::snapshot`]),
    /// and keeps its last failed ones there: see [`in_flight`](crate::in_flight) for what a
    /// call costs and what a snapshot shows.
    pub fn in_flight(mut self, in_flight: &InFlight) -> Self {
        self.in_flight = Some(in_flight.clone());
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
        let Self { sources, names, inputs, needs, mut group, in_flight, error } = self;
        if let Some(error) = error {
            return Err(error);
        }
        group.validate()?;
        check_names(names.iter())?;
        if let Some(deadline) = group.deadline {
            if let Some((name, &needs)) =
                names.iter().zip(&needs).find(|(_, needs)| **needs >= deadline && !needs.is_zero())
            {
                return Err(BuildError::Budget { name: name.clone(), needs, deadline });
            }
        }
        let fields: Arc<[(Name, String)]> = std::mem::take(&mut group.fields).into();
        let context = fields.iter().fold(muster_core::Context::new(), |context, (name, value)| {
            context.with_field(name.clone(), value.clone())
        });
        let (names, inputs) = (names.into(), inputs.into());
        Ok(Aggregator { inner: Arc::new(Inner { sources, names, inputs, group, fields, context, in_flight }) })
    }
}

/// The input of a dependent source ([`AggregatorBuilder::then`]): source `I` by its position
/// among the sources declared before it, from 0. `Input::<0>` is the first source.
#[derive(Clone, Copy, Debug, Default)]
pub struct Input<const I: usize>;

/// What names a dependent source's input: [`Input<I>`] for a tuple of outputs (checked at
/// compile time), a source name for sources [`by_name`](Aggregator::by_name) (checked by
/// `build`).
pub trait InputOf<O> {
    /// The input's output type.
    type Item: Send + 'static;

    /// The input's index among `names` (the sources declared so far), if it is one of them.
    #[doc(hidden)]
    fn index(&self, names: &[Name]) -> Option<usize>;

    /// How the input is named, for the build error.
    #[doc(hidden)]
    fn name(&self) -> Name;
}

impl<const I: usize, O: Get<I>> InputOf<O> for Input<I>
where
    O::Item: Send + 'static,
{
    type Item = O::Item;

    fn index(&self, _: &[Name]) -> Option<usize> {
        Some(I)
    }

    fn name(&self) -> Name {
        format!("#{I}").into()
    }
}

impl<T: Send + 'static> InputOf<Outputs<T>> for &str {
    type Item = T;

    fn index(&self, names: &[Name]) -> Option<usize> {
        names.iter().position(|name| name == self)
    }

    fn name(&self) -> Name {
        self.to_string().into()
    }
}

/// An aggregator is a source of another: its fetch aggregates under the outer source's
/// cancellation (so an outer failure cancels the inner sources, and their cause says so) and
/// deadline, both taken when the fetch starts ([`cancellation()`](crate::cancellation),
/// [`deadline()`](crate::deadline)): inside a [`Coalesce`](crate::policy::Coalesce)d call, that is the
/// shared call's own token, so one waiter's failure does not reach the inner sources. Its error
/// is the inner [`AggregateError`], which [classifies](Classify) as its failed source's error
/// did (so the outer aggregation reports the inner source's kind), and its report is nested in
/// the outer
/// one ([`SourceReport::nested`](crate::report::SourceReport::nested)), under the source's line of the
/// waterfall.
///
/// The inner sources see the outer deadline ([`deadline()`](crate::deadline)), but it stays
/// the outer aggregation's to report: an inner aggregation still running when it passes is a
/// pending source of the timed-out outer one, not a failed source. A tighter
/// [`Deadline`](crate::Deadline) of the inner aggregator's own fails it as a source, as a
/// source's [`Timeout`](crate::Timeout) would.
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
        // No deadline of the outer one's for the inner aggregation: its sources see it (the
        // task-local deadline only tightens), and when it passes the outer group reports it.
        // Given as the inner's own, it would fire at the same instant, inside the outer
        // group's poll, and the outer one would report this source failed instead.
        match self.aggregate_with(request, context).await {
            Ok(aggregate) => {
                crate::call::nested(aggregate.report);
                Ok(aggregate.outputs)
            }
            Err(error) => {
                crate::call::nested(error.report().clone());
                Err(error)
            }
        }
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
