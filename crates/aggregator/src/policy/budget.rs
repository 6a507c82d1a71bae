//! [`Budget`]: one governor per source for every extra attempt, retries and hedges together.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use muster_core::muster_options::OptionError;
use muster_core::{Fetcher, async_trait};
use tokio::time::Instant;

use super::Policy;
use crate::call::{Event, report};

tokio::task_local! {
    static GOVERNOR: Arc<Governor>;
}

/// A retry budget: caps the extra attempts ([`Retry`](crate::Retry)'s retries and
/// [`Hedge`](crate::policy::Hedge)'s hedges, together) of one source at a share of its calls, so that
/// a source in a brownout is not sent more load by the requests that find it failing.
///
/// Each call through the budget deposits `percent` % of a token; each extra attempt withdraws
/// one whole token, and is not started when there is none. Deposits and withdrawals expire
/// after the `window`. `min_per_second` is a floor: over the window, the extra attempts allowed
/// are `percent` % of the calls or `min_per_second` × the window, whichever is more, so a quiet
/// source can still be retried and a busy one never gets more than its share. With the
/// defaults, 10 % with a floor of 5/s over 10 s, a source called 100 times in 10 s may make
/// 50 extra attempts in that time, and one called 10,000 times 1,000: at most 1.1 attempts
/// per call under load. This is Finagle's `RetryBudget` (its defaults: 20 %, 10/s, 10 s),
/// except that Finagle adds the floor to the share (10 % + 5/s lets a busy source make 1.105
/// attempts per call at 1,000 calls a second); and it keeps tower's `TpsBudget` accounting
/// exact: the shares are kept in millionths of a token, so 60 % of 10
/// calls is 6 extra attempts, never 10 (tower#857).
///
/// - The first attempt of a call is never charged, and never refused.
/// - When the budget is spent, no new extra attempt starts; attempts already running (the
///   first attempt a hedge would have raced) are never cancelled because of it.
///   (failsafe-go#141).
/// - Placed inside a [`CircuitBreaker`](super::CircuitBreaker), a call the breaker refuses
///   never reaches the budget: it deposits and withdraws nothing.
/// - A suppressed attempt is noted in the report (`retry skipped: budget spent`,
///   `hedge skipped: budget spent`) and, with the feature `metrics`, counted in
///   `muster_source_suppressed_total` (`reason="budget"`).
/// - With [`latency_aware`](Self::latency_aware), an extra attempt is also skipped when the
///   source's median call duration over the window (of successful calls, at least 5 of them)
///   is longer than the time left until the call's deadline when the attempt would start:
///   it could not answer in time, and would only add load (`reason="latency"`, noted
///   `retry skipped: p50 420ms > 300ms left`).
///
/// # How retries and hedges ask it
///
/// The budget wraps the retry and hedge and makes itself the governor of everything they
/// run: while its call runs, [`Retry`](crate::Retry) asks it before each retry (after deciding
/// the error is retryable and its backoff fits the deadline) and [`Hedge`](crate::policy::Hedge) before
/// its second attempt. A retry or hedge outside any budget is not limited. One budget governs
/// every retry and hedge inside it, at any depth, and is shared by every call of the
/// aggregator it is built into.
///
/// # Where it sits
///
/// Outside [`Retry`](crate::Retry) and [`Hedge`](crate::policy::Hedge), inside a
/// [`CircuitBreaker`](super::CircuitBreaker):
/// `(Fallback(v), CircuitBreaker::new(), Budget::new(), Retry::attempts(3), Hedge(h), Timeout(d))`.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use muster::policy::Budget;
/// use muster::{Fetcher, policy::Policy, Retry, fetcher_fn};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let calls = AtomicU32::new(0);
/// let failing = fetcher_fn(|_: &u64| {
///     calls.fetch_add(1, Ordering::SeqCst);
///     async { Err::<(), _>(std::io::Error::other("503")) }
/// });
/// // No floor, 50 %: two calls earn one retry.
/// let source = (Budget::new().percent(50.0).min_per_second(0), Retry::attempts(3)).wrap(&failing);
/// for _ in 0..2 {
///     assert!(source.fetch(&1).await.is_err());
/// }
/// assert_eq!(calls.load(Ordering::SeqCst), 3, "two first attempts and one retry");
/// # }
/// ```
#[derive(Clone, Copy, Debug)]
#[must_use = "a policy does nothing until it wraps a source"]
pub struct Budget {
    percent: f64,
    min_per_second: u32,
    window: Duration,
    latency_aware: bool,
}

impl Budget {
    /// A budget of 10 % of the calls, at least 5 a second, over 10 s.
    pub fn new() -> Self {
        Budget { percent: 10.0, min_per_second: 5, window: Duration::from_secs(10), latency_aware: false }
    }

    /// The share of the calls, in percent (`10.0`), that may be retried or hedged; from 0
    /// (only the floor) to 100 (each call earns one extra attempt).
    pub fn percent(mut self, percent: f64) -> Self {
        self.percent = percent;
        self
    }

    /// The floor: extra attempts per second allowed however few the calls (the share, when
    /// it is more, replaces it); 0 for none.
    pub fn min_per_second(mut self, min_per_second: u32) -> Self {
        self.min_per_second = min_per_second;
        self
    }

    /// How long a deposit or a withdrawal counts (at least 100ms).
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// Also skips an extra attempt when the source's median duration does not fit in the
    /// time left (see [`Budget`]).
    pub fn latency_aware(mut self) -> Self {
        self.latency_aware = true;
        self
    }

    fn validate(&self) -> Result<(), OptionError> {
        let invalid = |problem: String| Err(OptionError::Invalid { policy: "budget", problem });
        if !(self.percent.is_finite() && (0.0..=100.0).contains(&self.percent)) {
            return invalid(format!("the percent must be in [0, 100], not {}", self.percent));
        }
        if self.window < Duration::from_millis(100) {
            return invalid(format!("the window must be at least 100ms, not {:?}", self.window));
        }
        Ok(())
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::new()
    }
}

impl<F> Policy<F> for Budget {
    type Fetcher = BudgetFetcher<F>;

    fn wrap(self, inner: F) -> BudgetFetcher<F> {
        let bucket = (self.window / BUCKETS as u32).max(Duration::from_millis(1));
        let governor = Governor {
            deposit: (self.percent.clamp(0.0, 100.0) * (UNIT as f64 / 100.0)).round() as u64,
            reserve: u64::from(self.min_per_second).saturating_mul(self.window.as_millis() as u64) * (UNIT / 1000),
            bucket,
            window: self.window,
            latency_aware: self.latency_aware,
            ledger: Mutex::default(),
        };
        BudgetFetcher { inner, governor: Arc::new(governor) }
    }

    /// Refuses a percent outside [0, 100] and a window under 100ms.
    fn check(&self) -> Result<Duration, OptionError> {
        self.validate().map(|()| Duration::ZERO)
    }
}

/// A fetcher whose retries and hedges a [`Budget`] governs; see there.
#[derive(Clone, Debug)]
pub struct BudgetFetcher<F> {
    inner: F,
    governor: Arc<Governor>,
}

#[async_trait]
impl<Req, F> Fetcher<Req> for BudgetFetcher<F>
where
    Req: ?Sized + Sync,
    F: Fetcher<Req>,
{
    type Output = F::Output;
    type Error = F::Error;

    async fn fetch(&self, request: &Req) -> Result<F::Output, F::Error> {
        let started = Instant::now();
        self.governor.deposit(started);
        let result = GOVERNOR.scope(Arc::clone(&self.governor), self.inner.fetch(request)).await;
        if result.is_ok() && self.governor.latency_aware {
            self.governor.lock().latency(Instant::now(), started.elapsed());
        }
        result
    }
}

/// An extra attempt a budget may refuse.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Extra {
    Retry,
    Hedge,
}

impl Extra {
    fn as_str(self) -> &'static str {
        match self {
            Self::Retry => "retry",
            Self::Hedge => "hedge",
        }
    }
}

/// Whether the governing budget, if any, lets an extra attempt start at `starts`; a refusal
/// is noted in the report and counted.
pub(crate) fn allow(extra: Extra, starts: Instant) -> bool {
    let Ok(governor) = GOVERNOR.try_with(Arc::clone) else { return true };
    let now = Instant::now();
    let mut ledger = governor.lock();
    let refused = if let Some((p50, left)) = governor.too_slow(&mut ledger, now, starts) {
        Some((
            "latency",
            format!("{} skipped: p50 {}ms > {}ms left", extra.as_str(), p50.as_millis(), left.as_millis()),
        ))
    } else if !governor.withdraw(&mut ledger, now) {
        Some(("budget", format!("{} skipped: budget spent", extra.as_str())))
    } else {
        None
    };
    drop(ledger);
    let Some((reason, note)) = refused else { return true };
    tracing::debug!("{note}");
    report(Event::Note(&note));
    #[cfg(feature = "metrics")]
    if let Some(source) = crate::call::source_name() {
        crate::metrics::suppressed(&source, extra.as_str(), reason);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = reason;
    false
}

/// A whole token, in millionths: shares are exact to a millionth of a token.
const UNIT: u64 = 1_000_000;
const BUCKETS: u64 = 10;
/// The most successful durations kept for the latency rule.
const SAMPLES: usize = 64;

struct Governor {
    /// Millionths of a token per call.
    deposit: u64,
    /// Millionths of a token the window's deposits count as at least: the floor.
    reserve: u64,
    bucket: Duration,
    window: Duration,
    latency_aware: bool,
    ledger: Mutex<Ledger>,
}

impl fmt::Debug for Governor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Governor")
            .field("deposit", &self.deposit)
            .field("reserve", &self.reserve)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct Ledger {
    origin: Option<Instant>,
    /// (epoch, deposited millionths, withdrawn tokens) per bucket.
    buckets: Vec<(u64, u64, u64)>,
    durations: VecDeque<(Instant, Duration)>,
}

impl Governor {
    fn lock(&self) -> MutexGuard<'_, Ledger> {
        // Never held across an await or user code: a poisoned lock only means a panic elsewhere.
        self.ledger.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn deposit(&self, now: Instant) {
        let mut ledger = self.lock();
        let (_, deposited, _) = ledger.bucket(now, self.bucket);
        *deposited += self.deposit;
    }

    fn withdraw(&self, ledger: &mut Ledger, now: Instant) -> bool {
        let (deposited, withdrawn) = ledger.totals(now, self.bucket);
        let balance = self.reserve.max(deposited).saturating_sub(withdrawn.saturating_mul(UNIT));
        if balance < UNIT {
            return false;
        }
        let (_, _, withdrawn) = ledger.bucket(now, self.bucket);
        *withdrawn += 1;
        true
    }

    /// The median duration and the time left, when the median does not fit.
    fn too_slow(&self, ledger: &mut Ledger, now: Instant, starts: Instant) -> Option<(Duration, Duration)> {
        if !self.latency_aware {
            return None;
        }
        let left = crate::deadline()?.saturating_duration_since(starts);
        while ledger.durations.front().is_some_and(|(at, _)| now.saturating_duration_since(*at) > self.window) {
            ledger.durations.pop_front();
        }
        if ledger.durations.len() < 5 {
            return None;
        }
        let mut durations: Vec<Duration> = ledger.durations.iter().map(|(_, duration)| *duration).collect();
        let middle = durations.len() / 2;
        let (_, p50, _) = durations.select_nth_unstable(middle);
        (*p50 > left).then_some((*p50, left))
    }
}

impl Ledger {
    fn epoch(&mut self, now: Instant, bucket: Duration) -> u64 {
        let origin = *self.origin.get_or_insert(now);
        (now.saturating_duration_since(origin).as_nanos() / bucket.as_nanos()) as u64
    }

    fn bucket(&mut self, now: Instant, bucket: Duration) -> (&mut u64, &mut u64, &mut u64) {
        let epoch = self.epoch(now, bucket);
        if self.buckets.is_empty() {
            self.buckets = vec![(0, 0, 0); BUCKETS as usize];
        }
        let slot = &mut self.buckets[(epoch % BUCKETS) as usize];
        if slot.0 != epoch {
            *slot = (epoch, 0, 0);
        }
        let (at, deposited, withdrawn) = slot;
        (at, deposited, withdrawn)
    }

    fn totals(&mut self, now: Instant, bucket: Duration) -> (u64, u64) {
        let epoch = self.epoch(now, bucket);
        let oldest = epoch.saturating_sub(BUCKETS - 1);
        (self.buckets.iter())
            .filter(|(at, ..)| (oldest..=epoch).contains(at))
            .fold((0, 0), |(d, w), (_, deposited, withdrawn)| (d + deposited, w + withdrawn))
    }

    fn latency(&mut self, now: Instant, duration: Duration) {
        if self.durations.len() >= SAMPLES {
            self.durations.pop_front();
        }
        self.durations.push_back((now, duration));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn governor(budget: Budget) -> Arc<Governor> {
        let fetcher = Policy::<()>::wrap(budget, ());
        fetcher.governor
    }

    #[test]
    fn fractional_percents_are_exact() {
        // tower#857: `TpsBudget::new(ttl, 0, 0.6)` allowed 10 retries for 10 deposits.
        for (percent, deposits, allowed) in [(60.0, 10, 6), (0.5, 200, 1), (33.0, 100, 33), (10.0, 9, 0)] {
            let governor = governor(Budget::new().percent(percent).min_per_second(0));
            let now = Instant::now();
            for _ in 0..deposits {
                governor.deposit(now);
            }
            let mut ledger = governor.lock();
            let granted = (0..deposits).filter(|_| governor.withdraw(&mut ledger, now)).count();
            assert_eq!(granted, allowed, "{percent} % of {deposits} calls");
        }
    }

    #[test]
    fn the_floor_is_a_floor_not_an_addition() {
        // 10 % of 1,000 calls is 100, more than the floor of 5/s over 10 s (50): 100, not 150.
        let governor = governor(Budget::new());
        let now = Instant::now();
        for _ in 0..1_000 {
            governor.deposit(now);
        }
        let mut ledger = governor.lock();
        assert_eq!((0..1_000).filter(|_| governor.withdraw(&mut ledger, now)).count(), 100);
        drop(ledger);
        // 10 % of 100 calls is 10, less than the floor: 50.
        let governor = self::governor(Budget::new());
        for _ in 0..100 {
            governor.deposit(now);
        }
        let mut ledger = governor.lock();
        assert_eq!((0..1_000).filter(|_| governor.withdraw(&mut ledger, now)).count(), 50);
    }

    #[test]
    fn the_floor_is_per_second_over_the_window() {
        let governor = governor(Budget::new().percent(0.0).min_per_second(5).window(Duration::from_secs(10)));
        let now = Instant::now();
        let mut ledger = governor.lock();
        let granted = (0..100).filter(|_| governor.withdraw(&mut ledger, now)).count();
        assert_eq!(granted, 50);
    }
}
