use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::OptionError;

/// The source-level configuration that [`SourceOption`]s build: what the aggregator does
/// around one source's fetch. `T` is the source's output type (for the fallback value).
///
/// Public and `#[non_exhaustive]` like [`GroupConfig`](crate::GroupConfig): options written
/// outside this crate can set the fields, and new fields do not break them.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SourceConfig<T> {
    /// `None`: the source is required, its failure fails the aggregation. `Some`: it is
    /// optional and its failure is replaced by this fallback.
    pub fallback: Option<Fallback<T>>,
    /// A timeout for each attempt, capped by what is left of the global deadline.
    pub timeout: Option<Duration>,
    /// Retry failed attempts.
    pub retry: Option<Retry>,
    /// Start a second attempt after this delay if the first has not succeeded.
    pub hedge: Option<Duration>,
}

impl<T> Default for SourceConfig<T> {
    fn default() -> Self {
        Self { fallback: None, timeout: None, retry: None, hedge: None }
    }
}

impl<T> SourceConfig<T> {
    /// Applies `options` to the default (required, no timeout, no retry, no hedge) and
    /// validates the result.
    ///
    /// # Errors
    ///
    /// An [`OptionError`] for a zero timeout or hedge delay, or a retry policy that cannot
    /// work (no attempts, a minimum backoff above the maximum, a bad jitter).
    pub fn build(options: impl SourceOption<T>) -> Result<Self, OptionError> {
        let mut config = Self::default();
        options.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// Checks the configuration as [`SourceConfig::build`] does.
    ///
    /// # Errors
    ///
    /// See [`SourceConfig::build`].
    pub fn validate(&self) -> Result<(), OptionError> {
        if self.timeout == Some(Duration::ZERO) {
            return Err(OptionError::ZeroTimeout);
        }
        if self.hedge == Some(Duration::ZERO) {
            return Err(OptionError::ZeroHedge);
        }
        if let Some(retry) = &self.retry {
            retry.validate()?;
        }
        Ok(())
    }

    /// Whether the source is optional.
    pub fn is_optional(&self) -> bool {
        self.fallback.is_some()
    }
}

/// What an optional source contributes when it fails, times out or panics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fallback<T> {
    /// This value takes the source's place.
    Value(T),
    /// The source is left out of the merged output.
    Omit,
}

/// Something that adjusts a [`SourceConfig`]. Combine options with tuples; `()` is "no
/// options".
pub trait SourceOption<T> {
    /// Writes this option into `config`; validation happens in [`SourceConfig::build`].
    fn apply(&self, config: &mut SourceConfig<T>);
}

impl<T> SourceOption<T> for () {
    fn apply(&self, _: &mut SourceConfig<T>) {}
}

impl<T, O: SourceOption<T>> SourceOption<T> for Option<O> {
    fn apply(&self, config: &mut SourceConfig<T>) {
        if let Some(option) = self {
            option.apply(config);
        }
    }
}

macro_rules! tuple_source_option {
    ($($name:ident),+) => {
        impl<T, $($name: SourceOption<T>),+> SourceOption<T> for ($($name,)+) {
            #[allow(non_snake_case)]
            fn apply(&self, config: &mut SourceConfig<T>) {
                let ($($name,)+) = self;
                $($name.apply(config);)+
            }
        }
    };
}

tuple_source_option!(A);
tuple_source_option!(A, B);
tuple_source_option!(A, B, C);
tuple_source_option!(A, B, C, D);
tuple_source_option!(A, B, C, D, E);

/// Makes a source optional: its failure (error, timeout, panic, or still pending at the global
/// deadline) never cancels the others; the fallback takes its place and the report records it.
///
/// ```
/// use muster_options::{Fallback, Optional, SourceConfig};
///
/// let config = SourceConfig::build(Optional::value(Vec::<u32>::new()))?;
/// assert_eq!(config.fallback, Some(Fallback::Value(vec![])));
/// let config: SourceConfig<u32> = SourceConfig::build(Optional::omit())?;
/// assert_eq!(config.fallback, Some(Fallback::Omit));
/// # Ok::<(), muster_options::OptionError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Optional<T>(Fallback<T>);

impl<T> Optional<T> {
    /// Falls back to `value`.
    pub fn value(value: T) -> Self {
        Self(Fallback::Value(value))
    }

    /// Leaves the source out of the merged output when it fails.
    pub fn omit() -> Self {
        Self(Fallback::Omit)
    }
}

impl<T: Default> Optional<T> {
    /// Falls back to `T::default()`.
    pub fn or_default() -> Self {
        Self::value(T::default())
    }
}

impl<T: Clone> SourceOption<T> for Optional<T> {
    fn apply(&self, config: &mut SourceConfig<T>) {
        config.fallback = Some(self.0.clone());
    }
}

/// A timeout for each attempt of a source, inside the global deadline: the effective timeout is
/// whichever comes first. The report says which of the two fired. A timeout is a retryable
/// failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeout(pub Duration);

impl<T> SourceOption<T> for Timeout {
    fn apply(&self, config: &mut SourceConfig<T>) {
        config.timeout = Some(self.0);
    }
}

/// Hedging: if the first attempt has not succeeded after this delay, a second one starts; the
/// first success wins and the other attempt is cancelled. If the first attempt fails before the
/// delay, the second starts at once. The source fails only when both attempts have failed,
/// with the last failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hedge(pub Duration);

impl<T> SourceOption<T> for Hedge {
    fn apply(&self, config: &mut SourceConfig<T>) {
        config.hedge = Some(self.0);
    }
}

/// Decides whether an error may be retried.
pub type RetryIf = Arc<dyn Fn(&(dyn Error + 'static)) -> bool + Send + Sync>;

/// Retries with exponential backoff and jitter, only for errors classified retryable, and never
/// past the remaining deadline: a retry whose backoff would end at or after the deadline is not
/// started, and the last real error is returned at once. Panics are never retried; timeouts
/// always may be.
///
/// ```
/// use std::time::Duration;
/// use muster_options::{Retry, SourceConfig};
///
/// let retry = Retry::attempts(3).backoff(Duration::from_millis(10), Duration::from_millis(200)).jitter(0.5);
/// let config: SourceConfig<()> = SourceConfig::build(retry)?;
/// assert_eq!(config.retry.map(|retry| retry.max_attempts()), Some(3));
/// # Ok::<(), muster_options::OptionError>(())
/// ```
#[derive(Clone)]
#[must_use = "an option does nothing until it is given to a source"]
pub struct Retry {
    attempts: u32,
    min_backoff: Duration,
    max_backoff: Duration,
    jitter: f64,
    retry_if: Option<RetryIf>,
}

impl Retry {
    /// At most `attempts` attempts in all (the first one included), with a backoff from 10 ms
    /// doubling up to 1 s, jitter 0.5, every error retryable.
    pub fn attempts(attempts: u32) -> Self {
        Self {
            attempts,
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(1),
            jitter: 0.5,
            retry_if: None,
        }
    }

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

    /// Retries only the errors for which `classify` returns `true`. Timeouts are always
    /// retryable, panics never.
    pub fn retry_if(mut self, classify: impl Fn(&(dyn Error + 'static)) -> bool + Send + Sync + 'static) -> Self {
        self.retry_if = Some(Arc::new(classify));
        self
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

    /// Whether `error` may be retried under this policy.
    pub fn is_retryable(&self, error: &(dyn Error + 'static)) -> bool {
        self.retry_if.as_ref().is_none_or(|classify| classify(error))
    }

    /// The least time `n` retries spend backing off (no jitter): what a deadline must at least
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

    fn validate(&self) -> Result<(), OptionError> {
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

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("attempts", &self.attempts)
            .field("min_backoff", &self.min_backoff)
            .field("max_backoff", &self.max_backoff)
            .field("jitter", &self.jitter)
            .field("retry_if", &self.retry_if.as_ref().map(|_| "<classifier>"))
            .finish()
    }
}

impl<T> SourceOption<T> for Retry {
    fn apply(&self, config: &mut SourceConfig<T>) {
        config.retry = Some(self.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_required_by_default() {
        let config: SourceConfig<u8> = SourceConfig::build(()).unwrap();
        assert!(!config.is_optional());
    }

    #[test]
    fn impossible_retry_policies_are_refused() {
        let build = |retry: Retry| SourceConfig::<u8>::build(retry).unwrap_err();
        assert_eq!(build(Retry::attempts(0)), OptionError::ZeroAttempts);
        let (min, max) = (Duration::from_secs(2), Duration::from_secs(1));
        assert_eq!(build(Retry::attempts(2).backoff(min, max)), OptionError::Backoff { min, max });
        assert_eq!(build(Retry::attempts(2).jitter(f64::NAN)), OptionError::Jitter("NaN".into()));
    }

    #[test]
    fn zero_timeouts_and_hedges_are_refused() {
        assert_eq!(SourceConfig::<u8>::build(Timeout(Duration::ZERO)).unwrap_err(), OptionError::ZeroTimeout);
        assert_eq!(SourceConfig::<u8>::build(Hedge(Duration::ZERO)).unwrap_err(), OptionError::ZeroHedge);
    }

    #[test]
    fn the_minimum_backoff_doubles_up_to_the_maximum() {
        let retry = Retry::attempts(4).backoff(Duration::from_millis(10), Duration::from_millis(25));
        assert_eq!(retry.min_total_backoff(), Duration::from_millis(10 + 20 + 25));
    }

    #[test]
    fn a_classifier_limits_what_is_retried() {
        let retry = Retry::attempts(2).retry_if(|error| error.to_string() != "permanent");
        assert!(retry.is_retryable(&std::fmt::Error));
        let permanent = std::io::Error::other("permanent");
        assert!(!retry.is_retryable(&permanent));
    }
}
