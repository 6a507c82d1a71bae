//! How an aggregator holds its sources and where their outputs go: the type-level list of
//! outputs (tuples, or [`Outputs`] by name), the slots the sources write into, and dependent
//! sources, which wait for another source's output.

use std::any::Any;
use std::fmt;
use std::future::poll_fn;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use futures_util::FutureExt as _;
use muster_core::{BoxError, Classify, Fetcher, Group, Name, Outputs};

use crate::call::{Call, Ready, Shared};
use crate::report::{Entries, Failure, Record};

/// A source's output, written by its task once it has it; dependents wait on it.
pub(crate) struct Slot<T> {
    state: Mutex<State<T>>,
}

struct State<T> {
    value: Option<T>,
    /// Dependents waiting for the value.
    waiting: Vec<Waker>,
}

impl<T> fmt::Debug for Slot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Slot")
    }
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self { state: Mutex::new(State { value: None, waiting: Vec::new() }) }
    }
}

impl<T> Slot<T> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn put(&self, value: T) {
        let waiting = {
            let mut state = self.lock();
            state.value = Some(value);
            std::mem::take(&mut state.waiting)
        };
        waiting.into_iter().for_each(Waker::wake);
    }

    /// `f` of the value once there is one.
    fn poll_with<R>(&self, cx: &mut Context<'_>, f: impl FnOnce(&T) -> R) -> Poll<R> {
        let mut state = self.lock();
        if let Some(value) = &state.value {
            return Poll::Ready(f(value));
        }
        if !state.waiting.iter().any(|waker| waker.will_wake(cx.waker())) {
            state.waiting.push(cx.waker().clone());
        }
        Poll::Pending
    }

    pub(crate) fn take(self) -> Option<T> {
        self.state.into_inner().unwrap_or_else(PoisonError::into_inner).value
    }
}

/// Where one source's output goes: a place of its own, written through a `&mut` (no lock),
/// and a shared [`Slot`] for a source that is the input of a dependent, which reads it while
/// the group runs.
#[doc(hidden)]
pub struct Out<T> {
    own: Option<T>,
    shared: Slot<T>,
}

impl<T> fmt::Debug for Out<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Out")
    }
}

impl<T> fmt::Debug for Place<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Place")
    }
}

impl<T> Default for Out<T> {
    fn default() -> Self {
        Self { own: None, shared: Slot::default() }
    }
}

impl<T> Out<T> {
    /// Its place for the source's task: the shared slot only if a dependent reads it.
    fn place(&mut self, input: bool) -> (Place<'_, T>, &Slot<T>) {
        let Self { own, shared } = self;
        let shared = &*shared;
        (Place { own, shared: input.then_some(shared) }, shared)
    }

    fn take(self) -> Option<T> {
        self.own.or_else(|| self.shared.take())
    }
}

/// Where a source's task writes its output: see [`Out`].
#[doc(hidden)]
pub struct Place<'a, T> {
    own: &'a mut Option<T>,
    shared: Option<&'a Slot<T>>,
}

impl<T> Place<'_, T> {
    fn put(self, value: T) {
        match self.shared {
            Some(slot) => slot.put(value),
            None => *self.own = Some(value),
        }
    }
}

/// Whether source `index` is the input of a dependent (`inputs` is empty when there are
/// none: see [`dependents`]).
fn is_input(inputs: &[Option<usize>], index: usize) -> bool {
    !inputs.is_empty() && inputs.contains(&Some(index))
}

/// `inputs`, or nothing if no source is a dependent: most aggregations have none, and then
/// no source looks for itself among them.
fn dependents(inputs: &[Option<usize>]) -> &[Option<usize>] {
    if inputs.iter().any(Option::is_some) { inputs } else { &[] }
}

/// Every slot of an aggregation, type-erased, for dependents to find their input in.
pub(crate) type Slots<'a> = [&'a (dyn Any + Send + Sync)];

/// A source as an aggregator stores it: its fetcher's type erased, its output type kept.
pub(crate) type Entry<Req, T> = Box<dyn Erased<Req, T>>;

/// A fetcher with its type erased but its output type kept, so that sources of different
/// fetcher types but one output type look alike. A source's run is compiled for its own
/// fetcher: the fetch is awaited and its output stored in place, and the run is boxed once, by
/// the group.
#[doc(hidden)]
pub trait Erased<Req: ?Sized, T>: Send + Sync {
    /// Adds this source's run for `request` to `group`, writing into `place`; `call` is its
    /// task-local state, over `shared`.
    #[allow(clippy::too_many_arguments)]
    fn spawn<'a>(
        &'a self,
        name: &Name,
        call: Call,
        shared: &'a Shared,
        request: &'a Req,
        place: Place<'a, T>,
        slots: &'a Slots<'a>,
        group: &mut Group<'a, ()>,
    );

    /// The source whose output this one needs, if it is a dependent.
    fn input(&self) -> Option<usize> {
        None
    }
}

/// A source that fetches for the aggregation's request.
pub(crate) struct Typed<F>(pub(crate) F);

impl<Req, F> Erased<Req, F::Output> for Typed<F>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
    F::Error: Classify,
    F::Output: 'static,
{
    fn spawn<'a>(
        &'a self,
        name: &Name,
        call: Call,
        shared: &'a Shared,
        request: &'a Req,
        place: Place<'a, F::Output>,
        _: &'a Slots<'a>,
        group: &mut Group<'a, ()>,
    ) {
        let run = async move {
            shared.recorder.start(call.index, false);
            let fetch = self.0.fetch(request);
            run(call, shared, place, fetch).await
        };
        let _ = group.spawn(name.clone(), run);
    }
}

/// A dependent source: waits for the output of source `input`, makes its own request from the
/// aggregation's and that output with `make`, and fetches it.
pub(crate) struct Dependent<M, F, T> {
    pub(crate) input: usize,
    pub(crate) make: M,
    pub(crate) fetcher: F,
    pub(crate) _input: PhantomData<fn(&T)>,
}

impl<Req, M, F, T, R> Erased<Req, F::Output> for Dependent<M, F, T>
where
    Req: ?Sized + Sync,
    M: Fn(&Req, &T) -> R + Send + Sync,
    F: Fetcher<R>,
    F::Error: Classify,
    F::Output: 'static,
    R: Send + Sync,
    T: Send + 'static,
{
    fn spawn<'a>(
        &'a self,
        name: &Name,
        call: Call,
        shared: &'a Shared,
        request: &'a Req,
        place: Place<'a, F::Output>,
        slots: &'a Slots<'a>,
        group: &mut Group<'a, ()>,
    ) {
        let input = slots.get(self.input).and_then(|slot| slot.downcast_ref::<Slot<T>>());
        let run = async move {
            // The builder checked the index and its type.
            let Some(input) = input else { return Err(BoxError::from("the input of this source is missing")) };
            // Ready the moment the input is: in the same poll of the group when it is declared
            // after its input, which it is.
            let own = poll_fn(|cx| input.poll_with(cx, |value| (self.make)(request, value))).await;
            shared.recorder.start(call.index, true);
            let fetch = self.fetcher.fetch(&own);
            run(call, shared, place, fetch).await
        };
        let _ = group.spawn(name.clone(), run);
    }

    fn input(&self) -> Option<usize> {
        Some(self.input)
    }
}

/// Runs a source's fetch as its call, writes its output, and tells the report how it ended (a
/// failure with the kind its error gives, asked before the error is boxed); a panic is
/// recorded, then resumed for the group to report.
async fn run<T, E, Fut>(call: Call, shared: &Shared, place: Place<'_, T>, fetch: Fut) -> Result<(), BoxError>
where
    Fut: Future<Output = Result<T, E>>,
    E: Into<BoxError> + Classify,
    T: 'static,
{
    let index = call.index;
    let ready = |value: Result<&dyn Any, &BoxError>| {
        if let Some(on_ready) = &shared.on_ready {
            let name = shared.names.get(index).map_or("", |name| &**name);
            let fell_back = shared.recorder.fell_back_now(index);
            on_ready(Ready { name, index, value, fell_back });
        }
    };
    match AssertUnwindSafe(call.scope(fetch)).catch_unwind().await {
        Ok(Ok(value)) => {
            ready(Ok(&value));
            place.put(value);
            Ok(())
        }
        Ok(Err(error)) => {
            let (kind, retryable) = (error.kind(), error.is_retryable());
            let error: BoxError = error.into();
            tracing::debug!(error = %error, "source failed");
            if let Some(span) = crate::context::source_span() {
                crate::context::failed(&span, kind.as_str(), &error);
            }
            ready(Err(&error));
            shared.recorder.failure(index, Failure::Error(&*error, kind, retryable));
            Err(error)
        }
        Err(panic) => {
            let message = muster_core::panic_message(&*panic);
            tracing::debug!(panic = %message, "source panicked");
            if let Some(span) = crate::context::source_span() {
                crate::context::failed(&span, "panicked", format_args!("panicked: {message}"));
            }
            shared.recorder.failure(index, Failure::Panicked(&message));
            // The group turns it into the source's error and cancels the others.
            std::panic::resume_unwind(panic)
        }
    }
}

/// The outputs of an aggregator's sources: implemented for tuples of up to 12 output types
/// (and `()`), which is what [`AggregatorBuilder::source`](crate::builder::AggregatorBuilder::source)
/// builds, and for [`Outputs<T>`] (sources by name). Sealed: it cannot be implemented outside
/// muster, and its items are the aggregator's plumbing; name it only in bounds.
pub trait SourceOutputs<Req: ?Sized>: sealed::Sealed + Sized + Send + 'static {
    /// The sources, one [`Entry`] per output.
    #[doc(hidden)]
    type Sources: Send + Sync;
    /// Where the outputs are written while the aggregation runs.
    #[doc(hidden)]
    type Slots: Send;
    /// Each source's [`Place`], for its task.
    #[doc(hidden)]
    type Places<'a>: Send;
    /// The shared slots, type-erased, for dependents.
    #[doc(hidden)]
    type Refs<'a>: AsRef<Slots<'a>> + Send;

    /// The report's entries, one per source, held inline in the call's shared state.
    #[doc(hidden)]
    type Entries: Entries + 'static;

    /// Empty entries for `sources` sources.
    #[doc(hidden)]
    fn entries(sources: usize) -> Self::Entries;

    /// Empty slots for `sources`.
    #[doc(hidden)]
    fn slots(sources: &Self::Sources) -> Self::Slots;

    /// The slots split into each source's place and the dependents' view; `inputs` says which
    /// sources are the input of a dependent (for each source, its input if it is a dependent).
    #[doc(hidden)]
    fn split<'a>(slots: &'a mut Self::Slots, inputs: &[Option<usize>]) -> (Self::Places<'a>, Self::Refs<'a>);

    /// Spawns every source into `group`, whose tasks live for `'g`.
    #[doc(hidden)]
    fn spawn<'g, 'a: 'g>(
        sources: &'g Self::Sources,
        names: &[Name],
        request: &'g Req,
        places: Self::Places<'a>,
        refs: &'g Slots<'g>,
        shared: &'g Arc<Shared>,
        group: &mut Group<'g, ()>,
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

/// The output type of source `I` of a tuple: what a dependent of it receives. Implemented for
/// every index of tuples of up to 12 elements, so a dependent on a source that does not exist
/// does not compile.
#[diagnostic::on_unimplemented(
    message = "there is no source number {I} before this one",
    label = "`Input::<{I}>` names the source by its position among the sources declared before, from 0",
    note = "the sources so far give `{Self}`"
)]
pub trait Get<const I: usize> {
    /// The output type of source `I`.
    type Item;
}

/// Seals [`SourceOutputs`]: only the output lists muster builds implement it.
mod sealed {
    pub trait Sealed {}
}

impl sealed::Sealed for () {}

impl<Req: ?Sized> SourceOutputs<Req> for () {
    type Sources = ();
    type Slots = ();
    type Places<'a> = ();
    type Entries = [Record; 0];

    fn entries(_: usize) -> [Record; 0] {
        []
    }
    type Refs<'a> = [&'a (dyn Any + Send + Sync); 0];

    fn slots((): &()) {}

    fn split<'a>((): &'a mut (), _: &[Option<usize>]) -> ((), [&'a (dyn Any + Send + Sync); 0]) {
        ((), [])
    }

    fn spawn<'g, 'a: 'g>(
        _: &'g (),
        _: &[Name],
        _: &'g Req,
        _: (),
        _: &'g Slots<'g>,
        _: &'g Arc<Shared>,
        _: &mut Group<'g, ()>,
    ) {
    }

    fn take((): (), _: &[Name]) -> Option<()> {
        Some(())
    }
}

impl<T> sealed::Sealed for Outputs<T> {}

impl<Req: ?Sized + Sync + 'static, T: Send + 'static> SourceOutputs<Req> for Outputs<T> {
    type Sources = Vec<Entry<Req, T>>;
    type Slots = Box<[Out<T>]>;
    type Places<'a> = Vec<Place<'a, T>>;
    type Entries = Box<[Record]>;

    fn entries(sources: usize) -> Box<[Record]> {
        (0..sources).map(|_| Record::default()).collect()
    }
    type Refs<'a> = Vec<&'a (dyn Any + Send + Sync)>;

    fn slots(sources: &Self::Sources) -> Self::Slots {
        sources.iter().map(|_| Out::default()).collect()
    }

    fn split<'a>(slots: &'a mut Self::Slots, inputs: &[Option<usize>]) -> (Self::Places<'a>, Self::Refs<'a>) {
        let inputs = dependents(inputs);
        let (mut places, mut refs) = (Vec::with_capacity(slots.len()), Vec::with_capacity(slots.len()));
        for (index, out) in slots.iter_mut().enumerate() {
            let (place, shared) = out.place(is_input(inputs, index));
            places.push(place);
            refs.push(shared as &(dyn Any + Send + Sync));
        }
        (places, refs)
    }

    fn spawn<'g, 'a: 'g>(
        sources: &'g Self::Sources,
        names: &[Name],
        request: &'g Req,
        places: Self::Places<'a>,
        refs: &'g Slots<'g>,
        shared: &'g Arc<Shared>,
        group: &mut Group<'g, ()>,
    ) {
        for (index, ((source, name), place)) in sources.iter().zip(names).zip(places).enumerate() {
            source.spawn(name, Call { shared: Arc::clone(shared), index }, shared, request, place, refs, group);
        }
    }

    fn take(slots: Self::Slots, names: &[Name]) -> Option<Self> {
        names.iter().zip(slots.into_vec()).map(|(name, out)| Some((name.clone(), out.take()?))).collect()
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
    ($n:literal; $($T:ident $i:tt),+) => {
        impl<$($T),+> sealed::Sealed for ($($T,)+) {}

        impl<Req: ?Sized + Sync + 'static, $($T: Send + 'static),+> SourceOutputs<Req> for ($($T,)+) {
            type Sources = ($(Entry<Req, $T>,)+);
            type Slots = ($(Out<$T>,)+);
            type Places<'a> = ($(Place<'a, $T>,)+);
            type Entries = [Record; $n];

            fn entries(_: usize) -> [Record; $n] {
                std::array::from_fn(|_| Record::default())
            }
            type Refs<'a> = [&'a (dyn Any + Send + Sync); $n];

            fn slots(_: &Self::Sources) -> Self::Slots {
                ($(Out::<$T>::default(),)+)
            }

            #[allow(non_snake_case)]
            fn split<'a>(slots: &'a mut Self::Slots, inputs: &[Option<usize>]) -> (Self::Places<'a>, Self::Refs<'a>) {
                let inputs = dependents(inputs);
                let ($($T,)+) = slots;
                $(let $T = $T.place(is_input(inputs, $i));)+
                (($($T.0,)+), [$($T.1 as &(dyn Any + Send + Sync),)+])
            }

            #[allow(non_snake_case)]
            fn spawn<'g, 'a: 'g>(
                sources: &'g Self::Sources,
                names: &[Name],
                request: &'g Req,
                places: Self::Places<'a>,
                refs: &'g Slots<'g>,
                shared: &'g Arc<Shared>,
                group: &mut Group<'g, ()>,
            ) {
                let ($($T,)+) = places;
                $(
                    if let Some(name) = names.get($i) {
                        let call = Call { shared: Arc::clone(shared), index: $i };
                        sources.$i.spawn(name, call, shared, request, $T, refs, group);
                    }
                )+
            }

            fn take(slots: Self::Slots, _: &[Name]) -> Option<Self> {
                Some(($(slots.$i.take()?,)+))
            }
        }

        get!([$($T),+]; $($T $i),+);
    };
}

/// `Get<I>` for every index `I` of the tuple of all the types listed.
macro_rules! get {
    ($all:tt; $($T:ident $i:tt),+) => {
        $(get!(@one $all; $T $i);)+
    };
    (@one [$($all:ident),+]; $T:ident $i:tt) => {
        impl<$($all),+> Get<$i> for ($($all,)+) {
            type Item = $T;
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

outputs!(1; A 0);
outputs!(2; A 0, B 1);
outputs!(3; A 0, B 1, C 2);
outputs!(4; A 0, B 1, C 2, D 3);
outputs!(5; A 0, B 1, C 2, D 3, E 4);
outputs!(6; A 0, B 1, C 2, D 3, E 4, F 5);
outputs!(7; A 0, B 1, C 2, D 3, E 4, F 5, G 6);
outputs!(8; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
outputs!(9; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
outputs!(10; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
outputs!(11; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
outputs!(12; A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

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
