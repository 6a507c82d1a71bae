//! [`CircuitBreaker`]: stop calling a source that keeps failing, and let it recover.

use std::collections::VecDeque;
use std::error::Error;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use muster_core::muster_options::OptionError;
use muster_core::{Classify, ErrorKind, Fetcher, Name, async_trait};
use tokio::time::Instant;

use super::Policy;
use crate::call::{Event, report};

/// A circuit breaker: after a source failed too often recently, its calls fail at once with
/// the kind `circuit_open`, without calling it, until a probe call shows it has recovered.
///
/// The breaker's state is shared by every call of the aggregator it is built into (the policy
/// is wrapped once, when the aggregator is built), and local to the process, as every anchor
/// keeps it (resilience4j, Polly, Finagle): several replicas each judge the source alone.
///
/// # States
///
/// - **Closed**: calls go through; each finished call is recorded in a sliding window
///   ([`window`](Self::window): the last *n* calls, or the calls of the last *d*). Once the
///   window holds at least [`min_calls`](Self::min_calls) calls and the share of failures
///   reaches [`failure_rate`](Self::failure_rate) (or the share of slow calls reaches the
///   [`slow_calls`](Self::slow_calls) rate, or [`consecutive_failures`](Self::consecutive_failures)
///   failed in a row), the breaker **opens**.
/// - **Open**: every call fails at once with a [`BreakerError::Open`] (kind `circuit_open`,
///   not retryable): no connection is made, no retry or hedge starts and no
///   [`Budget`](super::Budget) token is spent, so a [`Fallback`](crate::Fallback) or
///   [`Optional`](crate::Optional) around the breaker answers at once. After the open duration
///   the breaker is **half-open**. The duration is [`open_for`](Self::open_for)'s base the first
///   time, and doubles each time a probe fails, up to its cap.
/// - **Half-open**: [`probes`](Self::probes) calls are let through (each reserves its slot
///   atomically); the others fail at once as when open. When every probe succeeded, the
///   breaker closes (with an empty window); a failed probe opens it again, for longer.
///
/// # What counts as a failure
///
/// Only the source's own failures: by default ([`ByKind`]) an error of kind `status` with a
/// 5xx [status](Classify::status) (or one that does not say its status), `connect`, `timeout`
/// (the source's own [`Timeout`](crate::Timeout), or the HTTP fetcher's) or `protocol`. Any
/// other error (a 404, invalid JSON) shows the source is up, and counts as a success.
/// [`failure_if`](Self::failure_if) replaces the rule with a closure over the error.
///
/// Nothing the aggregation does to the source counts: a source cancelled because a sibling
/// failed, because the global deadline passed, because the caller went away, or a
/// [`Coalesce`](crate::policy::Coalesce) waiter leaving, is **dropped**, and a dropped call is never a
/// verdict (a dropped half-open probe frees its slot). An error that arrives while the call's
/// token is already cancelled, a `cancelled` error, and a `timeout` at or after the call's
/// deadline are not counted either. This is what keeps muster's fail-fast rule, which cancels
/// healthy siblings on every failure, from opening their breakers (resilience4j#682).
///
/// # Defaults
///
/// Those of resilience4j's `CircuitBreakerConfig` and Polly v8's
/// `CircuitBreakerStrategyOptions`: a failure rate of 50 % over a time window of 10 s with at
/// least 20 calls; open for 5 s, doubling on every failed probe up to 60 s (Polly's break
/// duration generator, resilience4j's exponential wait in open state); 1 probe in half-open
/// (Polly's). No slow-call or consecutive-failure rule unless set.
///
/// # Where it sits
///
/// Outside [`Retry`](crate::Retry) and [`Hedge`](crate::policy::Hedge), inside a
/// [`Fallback`](crate::Fallback): `(Fallback(v), CircuitBreaker::new(), Budget::new(), Retry::attempts(3), Timeout(d))`.
/// It judges the source's whole call, after its retries, and refuses before any attempt.
///
/// # What it shows
///
/// Every transition is one `info` event (target `muster::breaker`, with the source's name,
/// inside the source's span, so an OpenTelemetry exporter shows it as a span event of the
/// `source` span), a note in the report of the call that caused it (`circuit opened, retry in
/// 5.0s`), and, with the feature `metrics`, `muster_breaker_state` and
/// `muster_breaker_transitions_total`. A refused call is noted `circuit open, retry in 4.2s`
/// and counted in `muster_breaker_rejections_total`. A [`BreakerHandle`]
/// ([`handle`](Self::handle)) reads the state and forces it.
///
/// ```
/// use std::time::Duration;
/// use muster::policy::{BreakerState, CircuitBreaker, SlidingWindow};
/// use muster::{Aggregator, Fallback, Timeout, fetcher_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let down = fetcher_fn(|_: &u64| async { Err::<Vec<u32>, _>(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) });
/// let breaker = CircuitBreaker::new().window(SlidingWindow::Count(10)).min_calls(5);
/// let handle = breaker.handle();
/// let aggregator = Aggregator::builder()
///     .source_with("offers", down, (Fallback(Vec::new()), breaker, Timeout(Duration::from_millis(200))))
///     .build()?;
/// for _ in 0..5 {
///     aggregator.aggregate(&7).await?;
/// }
/// assert!(matches!(handle.state(), BreakerState::Open { .. }));
/// // Open: the fallback answers without calling the source.
/// let aggregate = aggregator.aggregate(&7).await?;
/// assert!(aggregate.report.source("offers").unwrap().notes[0].starts_with("circuit open, retry in"));
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use = "a policy does nothing until it wraps a source"]
pub struct CircuitBreaker<C = ByKind> {
    settings: Settings,
    failure_if: C,
    shared: Arc<Shared>,
}

/// The window over which a [`CircuitBreaker`] counts calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlidingWindow {
    /// The last `n` calls.
    Count(u32),
    /// The calls that finished in the last `d` (in ten buckets of `d / 10`, as resilience4j's
    /// time-based window keeps one per second).
    Time(Duration),
}

#[derive(Clone, Copy, Debug)]
struct Settings {
    window: SlidingWindow,
    min_calls: u32,
    failure_rate: f64,
    slow: Option<(Duration, f64)>,
    consecutive: Option<u32>,
    open: Duration,
    max_open: Duration,
    probes: u32,
}

/// How a [`CircuitBreaker`] decides whether an error is the source's own failure: by its kind
/// ([`ByKind`], the default) or with a closure of the wrapped fetcher's error type
/// ([`CircuitBreaker::failure_if`]).
pub trait FailureIf<E> {
    /// Whether `error` counts as a failure of the source.
    fn is_failure(&self, error: &E) -> bool;
}

/// The default rule of a [`CircuitBreaker`]: an error is the source's failure when its
/// [kind](Classify::kind) is `connect`, `timeout` or `protocol`, or `status` with a 5xx
/// [status](Classify::status) or none given (a wrapper of your own that does not pass the
/// status on still lets an outage count).
#[derive(Clone, Copy, Debug, Default)]
pub struct ByKind;

impl<E: Classify> FailureIf<E> for ByKind {
    fn is_failure(&self, error: &E) -> bool {
        match error.kind() {
            ErrorKind::Connect | ErrorKind::Timeout | ErrorKind::Protocol => true,
            ErrorKind::Status => error.status().is_none_or(|status| (500..600).contains(&status)),
            _ => false,
        }
    }
}

impl<E, F: Fn(&E) -> bool> FailureIf<E> for F {
    fn is_failure(&self, error: &E) -> bool {
        self(error)
    }
}

impl CircuitBreaker {
    /// A breaker with the defaults: 50 % failures over 10 s with at least 20 calls, open for
    /// 5 s doubling to 60 s, 1 probe.
    pub fn new() -> Self {
        CircuitBreaker {
            settings: Settings {
                window: SlidingWindow::Time(Duration::from_secs(10)),
                min_calls: 20,
                failure_rate: 50.0,
                slow: None,
                consecutive: None,
                open: Duration::from_secs(5),
                max_open: Duration::from_secs(60),
                probes: 1,
            },
            failure_if: ByKind,
            shared: Arc::default(),
        }
    }
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self::new()
    }
}

impl<C> CircuitBreaker<C> {
    /// The window the failure and slow-call rates are computed over.
    pub fn window(mut self, window: SlidingWindow) -> Self {
        self.settings.window = window;
        self
    }

    /// The least number of calls in the window before a rate can open the breaker.
    pub fn min_calls(mut self, calls: u32) -> Self {
        self.settings.min_calls = calls;
        self
    }

    /// The failure rate, in percent (`50.0`), at or above which the breaker opens.
    pub fn failure_rate(mut self, percent: f64) -> Self {
        self.settings.failure_rate = percent;
        self
    }

    /// Also opens when the calls slower than `threshold` (whatever their outcome) reach
    /// `percent` of the window; a slow half-open probe counts as failed.
    pub fn slow_calls(mut self, threshold: Duration, percent: f64) -> Self {
        self.settings.slow = Some((threshold, percent));
        self
    }

    /// Also opens after `failures` failures in a row, whatever the window holds.
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.settings.consecutive = Some(failures);
        self
    }

    /// Open for `base` after the first trip, doubling on every failed probe, up to `max`.
    pub fn open_for(mut self, base: Duration, max: Duration) -> Self {
        self.settings.open = base;
        self.settings.max_open = max;
        self
    }

    /// How many probe calls the half-open breaker lets through; all must succeed to close it.
    pub fn probes(mut self, probes: u32) -> Self {
        self.settings.probes = probes;
        self
    }

    /// Replaces the rule of what counts as the source's failure with `failure_if`, a closure
    /// of the wrapped fetcher's error type (the source's, or a
    /// [`TimeoutError`](crate::policy::TimeoutError) of it behind a [`Timeout`](crate::Timeout)).
    /// Errors for which it returns `false` count as successes; cancellations and the deadline
    /// are still never counted.
    ///
    /// ```
    /// use muster::policy::CircuitBreaker;
    /// // Only connection failures count.
    /// let breaker = CircuitBreaker::new().failure_if(|error: &std::io::Error| error.kind() == std::io::ErrorKind::ConnectionRefused);
    /// # let _ = breaker;
    /// ```
    pub fn failure_if<E, F: Fn(&E) -> bool>(self, failure_if: F) -> CircuitBreaker<F> {
        CircuitBreaker { settings: self.settings, failure_if, shared: self.shared }
    }

    /// A handle on this breaker's state, for an operator: read it, force it open or closed.
    /// Every clone of the breaker and every handle share the one state.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle { shared: Arc::clone(&self.shared) }
    }

    fn validate(&self) -> Result<(), OptionError> {
        let invalid = |problem: String| Err(OptionError::Invalid { policy: "circuit breaker", problem });
        let percent = |rate: f64| rate.is_finite() && rate > 0.0 && rate <= 100.0;
        let settings = &self.settings;
        match settings.window {
            SlidingWindow::Count(0) => return invalid("the window must hold at least 1 call".into()),
            SlidingWindow::Time(d) if d < Duration::from_millis(10) => {
                return invalid(format!("the window must be at least 10ms, not {d:?}"));
            }
            _ => {}
        }
        if !percent(settings.failure_rate) {
            return invalid(format!("the failure rate must be in (0, 100] %, not {}", settings.failure_rate));
        }
        if settings.min_calls == 0 {
            return invalid("the minimum number of calls must be at least 1".into());
        }
        if let Some((threshold, rate)) = settings.slow {
            if threshold.is_zero() || !percent(rate) {
                return invalid(format!(
                    "the slow-call rule needs a threshold over 0 and a rate in (0, 100] %, not {threshold:?} and {rate}"
                ));
            }
        }
        if settings.consecutive == Some(0) {
            return invalid("the consecutive failures must be at least 1".into());
        }
        if settings.open.is_zero() || settings.max_open < settings.open {
            return invalid(format!(
                "the open duration must satisfy 0 < base <= max (base {:?}, max {:?})",
                settings.open, settings.max_open
            ));
        }
        if settings.probes == 0 {
            return invalid("the half-open state needs at least 1 probe".into());
        }
        Ok(())
    }
}

impl<F, C> Policy<F> for CircuitBreaker<C> {
    type Fetcher = BreakerFetcher<F, C>;

    fn wrap(self, inner: F) -> BreakerFetcher<F, C> {
        BreakerFetcher { inner, settings: self.settings, failure_if: self.failure_if, shared: self.shared }
    }

    /// Refuses a zero window, a rate outside (0, 100] %, zero calls, probes or open duration.
    fn check(&self) -> Result<Duration, OptionError> {
        self.validate().map(|()| Duration::ZERO)
    }
}

/// A breaker's state, as [`BreakerHandle::state`] reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls go through and are counted.
    Closed,
    /// Calls fail at once with `circuit_open`; `retry_in` is the time left before a probe is
    /// let through, `None` when forced open.
    Open {
        /// The time left before the breaker lets a probe through.
        retry_in: Option<Duration>,
    },
    /// Probes are let through; the other calls fail at once.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`, as in logs and metric labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// An operator's handle on a [`CircuitBreaker`] ([`CircuitBreaker::handle`]): cheap to clone,
/// shares the breaker's state.
///
/// ```
/// use muster::policy::{BreakerState, CircuitBreaker};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let breaker = CircuitBreaker::new();
/// let handle = breaker.handle();
/// handle.force_open();
/// assert_eq!(handle.state(), BreakerState::Open { retry_in: None });
/// handle.force_close();
/// assert_eq!(handle.state(), BreakerState::Closed);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct BreakerHandle {
    shared: Arc<Shared>,
}

impl BreakerHandle {
    /// The state now.
    pub fn state(&self) -> BreakerState {
        let now = Instant::now();
        match self.shared.lock().state {
            State::Closed => BreakerState::Closed,
            State::Open { until: None } => BreakerState::Open { retry_in: None },
            State::Open { until: Some(until) } if until > now => BreakerState::Open { retry_in: Some(until - now) },
            State::Open { .. } | State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Opens the breaker until [`force_close`](Self::force_close): every call fails at once.
    pub fn force_open(&self) {
        let from = {
            let mut inner = self.shared.lock();
            std::mem::replace(&mut inner.state, State::Open { until: None })
        };
        self.shared.transition(from.name(), "open", "forced", None);
    }

    /// Closes the breaker now, with an empty window and the open duration back to its base:
    /// calls go through and are counted again.
    pub fn force_close(&self) {
        let from = {
            let mut inner = self.shared.lock();
            inner.reset();
            std::mem::replace(&mut inner.state, State::Closed)
        };
        self.shared.transition(from.name(), "closed", "forced", None);
    }

    /// How many times the breaker opened by itself (its rules, not [`force_open`](Self::force_open))
    /// since it was made.
    pub fn trips(&self) -> u64 {
        self.shared.lock().trips_total
    }
}

/// The error of a [`CircuitBreaker`]'s fetcher: refused while open, or the wrapped fetcher's
/// own error, unchanged.
#[derive(Debug)]
#[non_exhaustive]
pub enum BreakerError<E> {
    /// The breaker is open (or half-open with its probes taken): the source was not called.
    Open {
        /// The time left before a probe is let through; `None` when forced open or while
        /// another call probes.
        retry_in: Option<Duration>,
    },
    /// The wrapped fetcher's error.
    Inner(E),
}

impl<E> BreakerError<E> {
    /// Whether the breaker refused the call.
    pub fn is_open(&self) -> bool {
        matches!(self, Self::Open { .. })
    }

    /// The wrapped fetcher's error, if the source was called.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Open { .. } => None,
            Self::Inner(error) => Some(error),
        }
    }
}

impl<E: fmt::Display> fmt::Display for BreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Open { retry_in: Some(retry_in) } => {
                write!(f, "circuit open, retry in {:.1}s", retry_in.as_secs_f64())
            }
            Self::Open { retry_in: None } => f.write_str("circuit open"),
            Self::Inner(error) => fmt::Display::fmt(error, f),
        }
    }
}

impl<E: Error + 'static> Error for BreakerError<E> {
    /// Transparent: the wrapped error's own source.
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            Self::Open { .. } => None,
            Self::Inner(error) => error.source(),
        }
    }
}

/// An open breaker's refusal is `circuit_open`, not retryable; the wrapped error says what it
/// is itself.
impl<E: Classify> Classify for BreakerError<E> {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Open { .. } => ErrorKind::CircuitOpen,
            Self::Inner(error) => error.kind(),
        }
    }

    fn is_retryable(&self) -> bool {
        match self {
            Self::Open { .. } => false,
            Self::Inner(error) => error.is_retryable(),
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            Self::Open { .. } => None,
            Self::Inner(error) => error.status(),
        }
    }
}

/// A fetcher behind a circuit breaker; see [`CircuitBreaker`].
#[derive(Clone, Debug)]
pub struct BreakerFetcher<F, C = ByKind> {
    inner: F,
    settings: Settings,
    failure_if: C,
    shared: Arc<Shared>,
}

impl<F, C> BreakerFetcher<F, C> {
    /// A handle on the breaker's state.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle { shared: Arc::clone(&self.shared) }
    }
}

#[async_trait]
impl<Req, F, C> Fetcher<Req> for BreakerFetcher<F, C>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
    F::Error: Classify + Error + Send + Sync + 'static,
    C: FailureIf<F::Error> + Send + Sync,
{
    type Output = F::Output;
    type Error = BreakerError<F::Error>;

    async fn fetch(&self, request: &Req) -> Result<F::Output, Self::Error> {
        let shared = &self.shared;
        if shared.name.get().is_none() {
            if let Some(name) = crate::call::source_name() {
                let _ = shared.name.set(name);
            }
        }
        let probe = match shared.admit(&self.settings) {
            Admit::Call => false,
            Admit::Probe => true,
            Admit::Refuse(retry_in) => {
                let note = match retry_in {
                    Some(retry_in) => format!("circuit open, retry in {:.1}s", retry_in.as_secs_f64()),
                    None => "circuit open".to_owned(),
                };
                report(Event::Note(&note));
                tracing::debug!(target: "muster::breaker", "{note}");
                #[cfg(feature = "metrics")]
                crate::metrics::breaker_rejection(shared.source());
                return Err(BreakerError::Open { retry_in });
            }
        };
        // A probe dropped before it finishes (cancelled by the aggregation) frees its slot
        // without a verdict.
        let mut guard = ProbeGuard { shared, armed: probe };
        let started = Instant::now();
        let result = self.inner.fetch(request).await;
        let slow = self.settings.slow.is_some_and(|(threshold, _)| started.elapsed() > threshold);
        let verdict = match &result {
            Ok(_) => Some(false),
            Err(error) if !own(error) => None,
            Err(error) => Some(self.failure_if.is_failure(error)),
        };
        guard.armed = false;
        match verdict {
            Some(failed) => shared.record(&self.settings, probe, failed, slow),
            None if probe => shared.free_probe(),
            None => {}
        }
        result.map_err(BreakerError::Inner)
    }
}

/// Whether an error that reached the breaker is the source's own: not a cancellation, not an
/// error that arrived after the call was cancelled, and not a timeout at the call's deadline.
fn own<E: Classify>(error: &E) -> bool {
    if crate::cancellation().is_some_and(|token| token.is_cancelled()) {
        return false;
    }
    match error.kind() {
        ErrorKind::Cancelled | ErrorKind::CircuitOpen => false,
        ErrorKind::Timeout => crate::remaining().is_none_or(|left| !left.is_zero()),
        _ => true,
    }
}

struct ProbeGuard<'a> {
    shared: &'a Shared,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.shared.free_probe();
        }
    }
}

/// The state every call of one breaker shares.
#[derive(Default)]
struct Shared {
    inner: Mutex<Inner>,
    /// The source's name, learnt from the first call, for logs and metric labels.
    name: OnceLock<Name>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared").field("source", &self.name.get()).finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    state: State,
    window: Window,
    consecutive: u32,
    /// Trips since the breaker last closed: the open duration doubles with each.
    trips: u32,
    trips_total: u64,
}

impl Inner {
    fn reset(&mut self) {
        self.window = Window::default();
        self.consecutive = 0;
        self.trips = 0;
    }
}

#[derive(Clone, Copy, Debug, Default)]
enum State {
    #[default]
    Closed,
    /// Until when; `None` when forced.
    Open {
        until: Option<Instant>,
    },
    HalfOpen {
        in_flight: u32,
        passed: u32,
    },
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen { .. } => "half_open",
        }
    }
}

enum Admit {
    Call,
    Probe,
    Refuse(Option<Duration>),
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The lock is never held across a call or user code, so a poisoned lock only means a
        // panic elsewhere; the counters are still consistent.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn source(&self) -> &str {
        self.name.get().map_or("", |name| name)
    }

    fn admit(&self, settings: &Settings) -> Admit {
        let now = Instant::now();
        let mut inner = self.lock();
        match &mut inner.state {
            State::Closed => Admit::Call,
            State::Open { until: None } => Admit::Refuse(None),
            State::Open { until: Some(until) } if *until > now => Admit::Refuse(Some(*until - now)),
            State::Open { .. } => {
                inner.state = State::HalfOpen { in_flight: 1, passed: 0 };
                drop(inner);
                self.transition("open", "half_open", "open duration over", None);
                Admit::Probe
            }
            State::HalfOpen { in_flight, passed } if *in_flight + *passed < settings.probes => {
                *in_flight += 1;
                Admit::Probe
            }
            State::HalfOpen { .. } => Admit::Refuse(None),
        }
    }

    fn free_probe(&self) {
        if let State::HalfOpen { in_flight, .. } = &mut self.lock().state {
            *in_flight = in_flight.saturating_sub(1);
        }
    }

    fn record(&self, settings: &Settings, probe: bool, failed: bool, slow: bool) {
        let now = Instant::now();
        let mut inner = self.lock();
        let inner = &mut *inner;
        match (&mut inner.state, probe) {
            (State::HalfOpen { in_flight, passed }, true) => {
                *in_flight = in_flight.saturating_sub(1);
                if failed || slow {
                    let open = trip(inner, settings, now);
                    let reason = if failed { "probe failed" } else { "probe slow" };
                    self.transition("half_open", "open", reason, Some(open));
                } else {
                    *passed += 1;
                    if *passed >= settings.probes {
                        inner.state = State::Closed;
                        inner.reset();
                        self.transition("half_open", "closed", "probes succeeded", None);
                    }
                }
            }
            (State::Closed, false) => {
                inner.consecutive = if failed { inner.consecutive + 1 } else { 0 };
                let counts = inner.window.record(settings.window, now, failed, slow);
                let rate = |n: u32| f64::from(n) * 100.0 / f64::from(counts.calls.max(1));
                let enough = counts.calls >= settings.min_calls;
                let reason = if settings.consecutive.is_some_and(|n| inner.consecutive >= n) {
                    Some("consecutive failures")
                } else if enough && failed && rate(counts.failures) >= settings.failure_rate {
                    Some("failure rate")
                } else if enough && slow && settings.slow.is_some_and(|(_, limit)| rate(counts.slow) >= limit) {
                    Some("slow-call rate")
                } else {
                    None
                };
                if let Some(reason) = reason {
                    let open = trip(inner, settings, now);
                    self.transition("closed", "open", reason, Some(open));
                }
            }
            // A call admitted in another state (or a probe that outlived a forced change)
            // finished: the state it was judged in is gone, so no verdict.
            _ => {}
        }
    }

    /// Tells the log, the report and the metrics about a transition.
    fn transition(&self, from: &'static str, to: &'static str, reason: &'static str, open: Option<Duration>) {
        let source = self.source();
        match open {
            Some(open) => {
                let retry_in_ms = open.as_millis() as u64;
                tracing::info!(target: "muster::breaker", source, from, to, reason, retry_in_ms, "circuit {to}");
                report(Event::Note(&format!("circuit opened ({reason}), retry in {:.1}s", open.as_secs_f64())));
            }
            None => {
                tracing::info!(target: "muster::breaker", source, from, to, reason, "circuit {to}");
                report(Event::Note(&format!("circuit {to} ({reason})")));
            }
        }
        #[cfg(feature = "metrics")]
        crate::metrics::breaker_transition(source, to);
    }
}

/// Opens the breaker, for the base duration doubled once per earlier trip since it last
/// closed, capped; returns the duration.
fn trip(inner: &mut Inner, settings: &Settings, now: Instant) -> Duration {
    let doublings = inner.trips.min(30);
    let open = settings.open.saturating_mul(1 << doublings).min(settings.max_open);
    inner.trips += 1;
    inner.trips_total += 1;
    inner.state = State::Open { until: Some(now + open) };
    inner.window = Window::default();
    inner.consecutive = 0;
    open
}

/// What a window holds.
#[derive(Clone, Copy, Debug, Default)]
struct Counts {
    calls: u32,
    failures: u32,
    slow: u32,
}

const BUCKETS: u32 = 10;

/// The sliding window: the last calls (a ring of outcomes) or ten time buckets.
#[derive(Debug, Default)]
struct Window {
    ring: VecDeque<(bool, bool)>,
    buckets: Vec<(u64, Counts)>,
    origin: Option<Instant>,
    counts: Counts,
}

impl Window {
    fn record(&mut self, kind: SlidingWindow, now: Instant, failed: bool, slow: bool) -> Counts {
        match kind {
            SlidingWindow::Count(size) => {
                if self.ring.len() >= size as usize {
                    if let Some((failed, slow)) = self.ring.pop_front() {
                        self.counts.calls -= 1;
                        self.counts.failures -= u32::from(failed);
                        self.counts.slow -= u32::from(slow);
                    }
                }
                self.ring.push_back((failed, slow));
                self.counts.calls += 1;
                self.counts.failures += u32::from(failed);
                self.counts.slow += u32::from(slow);
                self.counts
            }
            SlidingWindow::Time(span) => {
                let origin = *self.origin.get_or_insert(now);
                let bucket = (span / BUCKETS).max(Duration::from_millis(1));
                let epoch = (now.saturating_duration_since(origin).as_nanos() / bucket.as_nanos()) as u64;
                if self.buckets.is_empty() {
                    self.buckets = vec![(0, Counts::default()); BUCKETS as usize];
                }
                let slot = &mut self.buckets[(epoch % u64::from(BUCKETS)) as usize];
                if slot.0 != epoch {
                    *slot = (epoch, Counts::default());
                }
                slot.1.calls += 1;
                slot.1.failures += u32::from(failed);
                slot.1.slow += u32::from(slow);
                let oldest = epoch.saturating_sub(u64::from(BUCKETS) - 1);
                let mut counts = Counts::default();
                for (at, bucket) in &self.buckets {
                    if *at >= oldest && *at <= epoch && bucket.calls > 0 {
                        counts.calls += bucket.calls;
                        counts.failures += bucket.failures;
                        counts.slow += bucket.slow;
                    }
                }
                counts
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_window_forgets_the_oldest_call() {
        let mut window = Window::default();
        let now = Instant::now();
        for failed in [true, true, false] {
            window.record(SlidingWindow::Count(2), now, failed, false);
        }
        let counts = window.record(SlidingWindow::Count(2), now, false, false);
        assert_eq!((counts.calls, counts.failures), (2, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_time_window_forgets_calls_older_than_its_span() {
        let mut window = Window::default();
        let span = SlidingWindow::Time(Duration::from_secs(10));
        window.record(span, Instant::now(), true, false);
        tokio::time::advance(Duration::from_secs(5)).await;
        let counts = window.record(span, Instant::now(), true, false);
        assert_eq!((counts.calls, counts.failures), (2, 2));
        tokio::time::advance(Duration::from_secs(6)).await;
        let counts = window.record(span, Instant::now(), false, false);
        assert_eq!((counts.calls, counts.failures), (2, 1), "the first call left the window");
    }

    #[test]
    fn the_open_duration_is_capped() {
        let settings = CircuitBreaker::new().settings;
        let mut inner = Inner::default();
        let now = Instant::now();
        let durations: Vec<u64> = (0..6).map(|_| trip(&mut inner, &settings, now).as_secs()).collect();
        assert_eq!(durations, [5, 10, 20, 40, 60, 60]);
    }
}
