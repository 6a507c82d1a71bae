//! Test doubles for [`Fetcher`]: the scripted [`MockFetcher`] and the mockall-generated
//! [`MockSource`].
//!
//! [`MockFetcher`] plays a script of [`Step`]s, one per call (a value, an error, a hang or a
//! panic, each after an optional delay), and records every call with its timing and
//! [`CallOutcome`], including whether the caller cancelled it by dropping the future. Delays
//! use [`tokio::time::sleep`], so tests on tokio's paused clock
//! (`#[tokio::test(start_paused = true)]`) are deterministic and take no real time.
//!
//! [`MockSource`] is for expectation-style tests: how often `fetch` is called, with which
//! request, returning what.

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use muster_core::{BoxError, ErrorKind, Fetcher};
use tokio::time::Instant;

pub use crate::error::MockError;

/// A scripted [`Fetcher`] that records its calls: the test double for timing and cancellation
/// tests.
///
/// Call `n` (counting from 0) plays step `n` of the script; once the script runs out, the last
/// step repeats. Clones share the script and the call log, so keep a clone to inspect after
/// handing the fetcher to a group or an aggregator. It answers every request type with the
/// same script, so an aggregator made only of mocks takes its request type from its
/// `aggregate` calls; name it (`Aggregator::<u64, _>::builder()`) where nothing else does.
///
/// A call is recorded when its future is first polled, and its [`CallOutcome`] is settled when
/// it completes, panics or is dropped before completing ([`CallOutcome::Cancelled`]).
///
/// ```
/// # #[allow(unused_imports)] mod muster { pub use muster_adapters::mock; pub use muster_core::*; }
/// use std::time::Duration;
/// use muster::mock::{CallOutcome, MockFetcher, Step};
/// use muster::Fetcher;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let flaky = MockFetcher::script([
///     Step::err("503 service unavailable").after(Duration::from_millis(20)),
///     Step::ok("profile").after(Duration::from_millis(5)),
/// ]);
/// let started = tokio::time::Instant::now();
/// assert_eq!(flaky.fetch(&()).await.unwrap_err().to_string(), "503 service unavailable");
/// assert_eq!(flaky.fetch(&()).await.unwrap(), "profile");
/// assert_eq!(flaky.fetch(&()).await.unwrap(), "profile"); // the last step repeats
/// assert_eq!(started.elapsed(), Duration::from_millis(30)); // virtual time
///
/// let outcomes: Vec<_> = flaky.records().iter().map(|call| call.outcome()).collect();
/// assert_eq!(outcomes, [CallOutcome::Err, CallOutcome::Ok, CallOutcome::Ok]);
/// # }
/// ```
pub struct MockFetcher<O> {
    shared: Arc<Shared<O>>,
}

struct Shared<O> {
    /// Every step but the last; `last` repeats, so a script is never empty.
    head: Vec<Step<O>>,
    last: Step<O>,
    log: Mutex<Vec<CallRecord>>,
}

impl<O> MockFetcher<O> {
    /// Answers every call with `value`, at once.
    pub fn ok(value: O) -> Self {
        Self::script([Step::ok(value)])
    }

    /// Answers every call with `value` after `delay`.
    pub fn ok_after(delay: Duration, value: O) -> Self {
        Self::script([Step::ok(value).after(delay)])
    }

    /// Fails every call at once with a retryable [`MockError`] carrying `message`.
    pub fn err(message: impl Into<String>) -> Self {
        Self::script([Step::err(message)])
    }

    /// Fails every call after `delay` with a retryable [`MockError`] carrying `message`.
    pub fn err_after(delay: Duration, message: impl Into<String>) -> Self {
        Self::script([Step::err(message).after(delay)])
    }

    /// Never answers: every call stays pending until its future is dropped.
    ///
    /// ```
    /// # #[allow(unused_imports)] mod muster { pub use muster_adapters::mock; pub use muster_core::*; }
    /// use std::time::Duration;
    /// use muster::mock::MockFetcher;
    /// use muster::Fetcher;
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
    /// let stuck = MockFetcher::<u32>::hang();
    /// let outcome = tokio::time::timeout(Duration::from_secs(1), stuck.fetch(&())).await;
    /// assert!(outcome.is_err(), "a hanging call never completes");
    /// assert!(stuck.was_cancelled(), "the timeout dropped the call");
    /// # }
    /// ```
    pub fn hang() -> Self {
        Self::script([Step::hang()])
    }

    /// Panics in every call after `delay`, with `message` as the panic message.
    pub fn panic_after(delay: Duration, message: impl Into<String>) -> Self {
        Self::script([Step::panic(message).after(delay)])
    }

    /// Plays `steps`, one per call; the last step repeats for every further call.
    ///
    /// # Panics
    ///
    /// If `steps` is empty: a script needs at least one step.
    pub fn script(steps: impl IntoIterator<Item = Step<O>>) -> Self {
        let mut head: Vec<_> = steps.into_iter().collect();
        let Some(last) = head.pop() else {
            panic!("MockFetcher::script needs at least one step");
        };
        Self { shared: Arc::new(Shared { head, last, log: Mutex::new(Vec::new()) }) }
    }

    /// How many calls have started, whatever their outcome.
    pub fn calls(&self) -> usize {
        self.log().len()
    }

    /// A snapshot of every call so far, in the order they started.
    pub fn records(&self) -> Vec<CallRecord> {
        self.log().clone()
    }

    /// Whether any call was cancelled: its future was dropped before it completed.
    pub fn was_cancelled(&self) -> bool {
        self.log().iter().any(CallRecord::is_cancelled)
    }

    /// How many calls were cancelled.
    pub fn cancelled_calls(&self) -> usize {
        self.log().iter().filter(|call| call.is_cancelled()).count()
    }

    fn log(&self) -> MutexGuard<'_, Vec<CallRecord>> {
        self.shared.log()
    }
}

impl<O> Shared<O> {
    fn log(&self) -> MutexGuard<'_, Vec<CallRecord>> {
        // A test that panicked while holding the lock left the log consistent: every update
        // is a single assignment.
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn step(&self, index: usize) -> &Step<O> {
        self.head.get(index).unwrap_or(&self.last)
    }
}

impl<O> Clone for MockFetcher<O> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<O> fmt::Debug for MockFetcher<O> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockFetcher")
            .field("steps", &(self.shared.head.len() + 1))
            .field("calls", &*self.log())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<Req, O> Fetcher<Req> for MockFetcher<O>
where
    Req: ?Sized + Sync,
    O: Clone + Send + Sync,
{
    type Output = O;
    type Error = MockError;

    /// Plays the next step of the script.
    ///
    /// # Panics
    ///
    /// When the step is a [`Step::panic`], after its delay.
    ///
    /// # Cancellation safety
    ///
    /// Dropping the future before it completes records the call as
    /// [`CallOutcome::Cancelled`].
    async fn fetch(&self, _request: &Req) -> Result<O, MockError> {
        let mut call = Call::start(&self.shared);
        let Step { action, delay } = self.shared.step(call.index);
        if !matches!(action, Action::Hang) && !delay.is_zero() {
            tokio::time::sleep(*delay).await;
        }
        match action {
            Action::Ok(value) => {
                call.finish(CallOutcome::Ok);
                Ok(value.clone())
            }
            Action::Err(error) => {
                call.finish(CallOutcome::Err);
                Err(error.clone())
            }
            Action::Hang => std::future::pending().await,
            Action::Panic(message) => {
                call.finish(CallOutcome::Panicked);
                std::panic::panic_any(message.clone())
            }
        }
    }
}

/// A call in flight: settles its record as cancelled if it is dropped before
/// [`Call::finish`].
struct Call<'a> {
    log: &'a Mutex<Vec<CallRecord>>,
    index: usize,
    finished: bool,
}

impl<'a> Call<'a> {
    fn start<O>(shared: &'a Shared<O>) -> Self {
        let mut log = shared.log();
        let index = log.len();
        log.push(CallRecord { index, started: Instant::now(), ended: None, outcome: CallOutcome::Pending });
        Self { log: &shared.log, index, finished: false }
    }

    fn finish(&mut self, outcome: CallOutcome) {
        self.finished = true;
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(record) = log.get_mut(self.index) {
            record.ended = Some(Instant::now());
            record.outcome = outcome;
        }
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(CallOutcome::Cancelled);
        }
    }
}

/// One scripted call of a [`MockFetcher`]: what it does, and after how long.
///
/// A step answers at once unless [`after`](Step::after) gives it a delay.
///
/// ```
/// # #[allow(unused_imports)] mod muster { pub use muster_adapters::mock; pub use muster_core::*; }
/// use std::time::Duration;
/// use muster::mock::{MockFetcher, Step};
///
/// let fetcher = MockFetcher::script([
///     Step::err("connection reset").after(Duration::from_millis(10)),
///     Step::err("404 not found").permanent(),
///     Step::ok(42),
///     Step::panic("corrupt state").after(Duration::from_millis(1)),
///     Step::hang(),
/// ]);
/// # drop(fetcher);
/// ```
#[derive(Clone, Debug)]
pub struct Step<O> {
    action: Action<O>,
    delay: Duration,
}

#[derive(Clone, Debug)]
enum Action<O> {
    Ok(O),
    Err(MockError),
    Hang,
    Panic(String),
}

impl<O> Step<O> {
    /// Returns `value`.
    pub fn ok(value: O) -> Self {
        Self { action: Action::Ok(value), delay: Duration::ZERO }
    }

    /// Fails with a retryable [`MockError`] carrying `message`; see
    /// [`permanent`](Step::permanent).
    pub fn err(message: impl Into<String>) -> Self {
        Self { action: Action::Err(MockError::new(message)), delay: Duration::ZERO }
    }

    /// Never completes: the call stays pending until its future is dropped. A delay makes no
    /// difference.
    pub fn hang() -> Self {
        Self { action: Action::Hang, delay: Duration::ZERO }
    }

    /// Panics with `message`, which a [`Group`](muster_core::Group) reports as the source's
    /// panic message.
    pub fn panic(message: impl Into<String>) -> Self {
        Self { action: Action::Panic(message.into()), delay: Duration::ZERO }
    }

    /// The same step, played after `delay` (measured with [`tokio::time::sleep`]).
    #[must_use = "`after` returns a new step and leaves `self` unchanged"]
    pub fn after(self, delay: Duration) -> Self {
        Self { delay, ..self }
    }

    /// The same step with its error marked as not retryable
    /// ([`MockError::is_retryable`] returns `false`); no effect on other kinds of step.
    #[must_use = "`permanent` returns a new step and leaves `self` unchanged"]
    pub fn permanent(self) -> Self {
        match self.action {
            Action::Err(error) => Self { action: Action::Err(error.permanent()), ..self },
            action => Self { action, ..self },
        }
    }

    /// The same step with its error of `kind` (a scripted error is `failed` otherwise), to
    /// test what a source's kind does to the report, logs and error bodies; no effect on other
    /// kinds of step. The error stays retryable unless made [`permanent`](Step::permanent).
    ///
    /// ```
    /// # #[allow(unused_imports)] mod muster { pub use muster_adapters::mock; pub use muster_core::*; }
    /// use muster::ErrorKind;
    /// use muster::mock::{MockFetcher, Step};
    ///
    /// let deadlock = ErrorKind::new("db_deadlock");
    /// let ledger = MockFetcher::<u32>::script([Step::err("deadlock detected").error_kind(deadlock)]);
    /// # drop(ledger);
    /// ```
    #[must_use = "`error_kind` returns a new step and leaves `self` unchanged"]
    pub fn error_kind(self, kind: ErrorKind) -> Self {
        match self.action {
            Action::Err(error) => Self { action: Action::Err(error.with_kind(kind)), ..self },
            action => Self { action, ..self },
        }
    }

    /// The delay before the step plays.
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

/// What became of one call to a [`MockFetcher`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CallOutcome {
    /// The call is still running (waiting for its delay, or hanging).
    Pending,
    /// The call returned a value.
    Ok,
    /// The call returned a [`MockError`].
    Err,
    /// The call panicked.
    Panicked,
    /// The call's future was dropped before it completed.
    Cancelled,
}

/// The record of one call to a [`MockFetcher`]: when it started and ended, and how.
///
/// Times are [`tokio::time::Instant`]s, so on the paused clock they are exact.
///
/// ```
/// # #[allow(unused_imports)] mod muster { pub use muster_adapters::mock; pub use muster_core::*; }
/// use std::time::Duration;
/// use muster::mock::{CallOutcome, MockFetcher};
/// use muster::Fetcher;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// let slow = MockFetcher::ok_after(Duration::from_secs(5), "balance");
/// let outcome = tokio::time::timeout(Duration::from_secs(1), slow.fetch(&())).await;
/// assert!(outcome.is_err());
///
/// let call = &slow.records()[0];
/// assert_eq!(call.index(), 0);
/// assert_eq!(call.outcome(), CallOutcome::Cancelled);
/// assert_eq!(call.duration(), Some(Duration::from_secs(1)));
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    index: usize,
    started: Instant,
    ended: Option<Instant>,
    outcome: CallOutcome,
}

impl CallRecord {
    /// The call's position among the fetcher's calls, counting from 0; it picked this step
    /// of the script (or the last one).
    pub fn index(&self) -> usize {
        self.index
    }

    /// When the call's future was first polled.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// When the call completed, panicked or was cancelled; `None` while it is pending.
    pub fn ended(&self) -> Option<Instant> {
        self.ended
    }

    /// How long the call ran; `None` while it is pending.
    pub fn duration(&self) -> Option<Duration> {
        self.ended.map(|ended| ended.duration_since(self.started))
    }

    /// What became of the call.
    pub fn outcome(&self) -> CallOutcome {
        self.outcome
    }

    /// Whether the call's future was dropped before it completed.
    pub fn is_cancelled(&self) -> bool {
        self.outcome == CallOutcome::Cancelled
    }
}

mockall::mock! {
    /// A [`mockall`] mock of [`Fetcher`], for tests that set expectations on calls.
    ///
    /// `Req` and `O` are the request and output types (both `Send + Sync + 'static`, and
    /// `Req` sized: mockall cannot mock an unsized type parameter); errors are
    /// [`BoxError`]s. `expect_fetch()` returns a mockall expectation: constrain it with
    /// `times`, `with` or `withf`, and answer with `returning`, whose closure gets the
    /// borrowed request. Expectations are checked when the mock is dropped.
    ///
    /// ```
    /// # #[allow(unused_imports)] mod muster { pub use muster_adapters::mock; pub use muster_core::*; }
    /// use muster::mock::MockSource;
    /// use muster::Fetcher;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut profiles = MockSource::<u64, String>::new();
    /// profiles
    ///     .expect_fetch()
    ///     .withf(|user_id| *user_id == 7)
    ///     .times(1)
    ///     .returning(|user_id| Ok(format!("profile of {user_id}")));
    ///
    /// assert_eq!(profiles.fetch(&7).await.unwrap(), "profile of 7");
    /// # }
    /// ```
    pub Source<Req: Send + Sync + 'static, O: Send + Sync + 'static> {}

    #[async_trait]
    impl<Req: Send + Sync + 'static, O: Send + Sync + 'static> Fetcher<Req> for Source<Req, O> {
        type Output = O;
        type Error = BoxError;

        async fn fetch(&self, request: &Req) -> Result<O, BoxError>;
    }
}
