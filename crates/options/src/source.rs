use std::fmt;
use std::time::Duration;

use crate::OptionError;

/// A timeout for each attempt of a source, inside the global deadline: the effective timeout is
/// whichever comes first, and when both fire together the global deadline is what is reported.
/// A timeout is a retryable failure, of kind `timeout`; the source's own errors keep theirs.
/// The source's error needs `muster::Classify + Error + Send + Sync + 'static`.
///
/// A plain value: the `muster` crate turns it into a policy that wraps a fetcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout(pub Duration);

impl Timeout {
    /// Checks the value: a zero timeout could never succeed.
    ///
    /// # Errors
    ///
    /// [`OptionError::ZeroTimeout`].
    pub fn validate(&self) -> Result<(), OptionError> {
        if self.0.is_zero() { Err(OptionError::ZeroTimeout) } else { Ok(()) }
    }
}

/// Hedging: if the first attempt has not succeeded after this delay, a second one starts; the
/// first success wins and the other attempt is cancelled. If the first attempt fails before the
/// delay, the second starts at once. The source fails only when both attempts have failed,
/// with the last failure (its kind and error as they were). A hedge that could not end before
/// the deadline is not started. The source's error needs `muster::Classify` (and `Send`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hedge(pub Duration);

impl Hedge {
    /// Checks the value: a zero delay would always run two attempts.
    ///
    /// # Errors
    ///
    /// [`OptionError::ZeroHedge`].
    pub fn validate(&self) -> Result<(), OptionError> {
        if self.0.is_zero() { Err(OptionError::ZeroHedge) } else { Ok(()) }
    }
}

/// Makes a source optional, left out when it fails: its output becomes `Option<T>`, `None` when
/// it failed, timed out, panicked or was still pending at the global deadline. It never cancels
/// the others, and the report records why it is missing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Optional;

/// Makes a source optional with a fallback: when it fails, times out, panics or is still
/// pending at the global deadline, this value takes its place (so its output stays `T`). It
/// never cancels the others, and the report records what the fallback replaced.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fallback<T>(pub T);

/// The default classifier of a [`Retry`]: the error says whether it is retryable (through the
/// `Classify` trait of `muster`, its `is_retryable`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ByError;

/// Retries with exponential backoff and jitter, only for errors classified retryable, and never
/// past the remaining deadline: a retry whose backoff would end at or after the deadline is not
/// started, and the last real error is returned at once. Panics are never retried; timeouts
/// are.
///
/// By default the error classifies itself (`C` is [`ByError`]: an HTTP 404 or invalid JSON is
/// not retried, a 503, a connect error or a timeout is); [`Retry::retry_if`] sets a classifier
/// of the wrapped fetcher's error type instead.
///
/// ```
/// # use muster_options as muster;
/// use std::time::Duration;
/// use muster::Retry;
///
/// let retry = Retry::attempts(3).backoff(Duration::from_millis(10), Duration::from_millis(200)).jitter(0.5);
/// assert_eq!(retry.max_attempts(), 3);
/// assert!(retry.validate().is_ok());
/// assert!(Retry::attempts(0).validate().is_err());
/// ```
#[derive(Clone)]
#[must_use = "an option does nothing until it wraps a source"]
pub struct Retry<C = ByError> {
    attempts: u32,
    min_backoff: Duration,
    max_backoff: Duration,
    jitter: f64,
    classify: C,
}

impl Retry {
    /// At most `attempts` attempts in all (the first one included), with a backoff from 10 ms
    /// doubling up to 1 s, jitter 0.5, errors classified by themselves.
    pub fn attempts(attempts: u32) -> Self {
        Self {
            attempts,
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            jitter: 0.5,
            classify: ByError,
        }
    }
}

impl<C> Retry<C> {
    /// The backoff starts at `min` and doubles up to `max`.
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min_backoff = min;
        self.max_backoff = max;
        self
    }

    /// Adds up to `ratio` times the backoff at random (0.0 = none).
    pub fn jitter(mut self, ratio: f64) -> Self {
        self.jitter = ratio;
        self
    }

    /// Retries only the errors for which `classify` returns `true`, overriding what the error
    /// says of itself. Panics are never retried.
    ///
    /// `classify` takes the error of what the retry wraps: the source's own error type, or,
    /// with a per-attempt timeout inside the retry (`(Retry::attempts(3).retry_if(..), Timeout(..))`),
    /// muster's `TimeoutError<E>` of it, so the closure decides for the timeouts too:
    /// `|error: &TimeoutError<E>| matches!(error, TimeoutError::Elapsed { .. }) || ...` retries
    /// them.
    pub fn retry_if<E, F>(self, classify: F) -> Retry<F>
    where
        F: Fn(&E) -> bool,
    {
        let Self { attempts, min_backoff, max_backoff, jitter, .. } = self;
        Retry { attempts, min_backoff, max_backoff, jitter, classify }
    }

    /// The maximum number of attempts, the first one included.
    pub fn max_attempts(&self) -> u32 {
        self.attempts
    }

    /// The first backoff.
    pub fn min_backoff(&self) -> Duration {
        self.min_backoff
    }

    /// The largest backoff.
    pub fn max_backoff(&self) -> Duration {
        self.max_backoff
    }

    /// The jitter ratio.
    pub fn jitter_ratio(&self) -> f64 {
        self.jitter
    }

    /// The classifier.
    pub fn classifier(&self) -> &C {
        &self.classify
    }

    /// The least time the retries spend backing off (no jitter): what a deadline must at least
    /// leave for them.
    pub fn min_total_backoff(&self) -> Duration {
        let mut total = Duration::ZERO;
        let mut backoff = self.min_backoff;
        for _ in 1..self.attempts {
            total = total.saturating_add(backoff);
            backoff = backoff.saturating_mul(2).min(self.max_backoff);
        }
        total
    }

    /// Checks the policy: at least one attempt, a minimum backoff no larger than the maximum, a
    /// finite jitter in `0.0..100.0`.
    ///
    /// # Errors
    ///
    /// The [`OptionError`] naming what is wrong.
    pub fn validate(&self) -> Result<(), OptionError> {
        if self.attempts == 0 {
            return Err(OptionError::ZeroAttempts);
        }
        if self.min_backoff > self.max_backoff || self.max_backoff.is_zero() {
            return Err(OptionError::Backoff { min: self.min_backoff, max: self.max_backoff });
        }
        if !(self.jitter.is_finite() && (0.0..100.0).contains(&self.jitter)) {
            return Err(OptionError::Jitter(self.jitter.to_string()));
        }
        Ok(())
    }
}

impl<C> fmt::Debug for Retry<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("attempts", &self.attempts)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("jitter", &self.jitter)
            .field("classify", &std::any::type_name::<C>())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn impossible_retry_policies_are_refused() {
        assert_eq!(Retry::attempts(0).validate().unwrap_err(), OptionError::ZeroAttempts);
        let (min, max) = (Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(Retry::attempts(2).backoff(min, max).validate().unwrap_err(), OptionError::Backoff { min, max });
        assert_eq!(Retry::attempts(2).jitter(f64::NAN).validate().unwrap_err(), OptionError::Jitter("NaN".into()));
    }

    #[test]
    fn zero_timeouts_and_hedges_are_refused() {
        assert_eq!(Timeout(Duration::ZERO).validate().unwrap_err(), OptionError::ZeroTimeout);
        assert_eq!(Hedge(Duration::ZERO).validate().unwrap_err(), OptionError::ZeroHedge);
        assert!(Timeout(Duration::from_millis(1)).validate().is_ok());
    }

    #[test]
    fn the_minimum_backoff_doubles_up_to_the_maximum() {
        let retry = Retry::attempts(4).backoff(Duration::from_millis(10), Duration::from_millis(25));
        assert_eq!(retry.min_total_backoff(), Duration::from_millis(10 + 20 + 25));
    }

    #[test]
    fn a_classifier_keeps_the_backoff() {
        let retry = Retry::attempts(2).backoff(Duration::from_millis(5), Duration::from_millis(5));
        let retry = retry.retry_if(|error: &std::io::Error| error.kind() == std::io::ErrorKind::TimedOut);
        assert_eq!(retry.min_backoff(), Duration::from_millis(5));
        assert!((retry.classifier())(&std::io::Error::from(std::io::ErrorKind::TimedOut)));
    }
}
