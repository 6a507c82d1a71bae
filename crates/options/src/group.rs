use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use crate::OptionError;

/// The group-level configuration that [`GroupOption`]s build.
///
/// The fields are public so that options written outside this crate can set them; the struct is
/// `#[non_exhaustive]`, so new fields can be added without breaking those options. Build one with
/// [`GroupConfig::build`], which validates it.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct GroupConfig {
    /// The time the whole group may take, counted from its creation. `None`: no deadline.
    pub deadline: Option<Duration>,
    /// At most this many tasks run at once; the others wait in spawn order. `None`: no limit.
    pub limit: Option<usize>,
    /// The span every task runs in (as a child span with a `source` field). `None`: the span
    /// that is current when a task is spawned.
    pub span: Option<tracing::Span>,
    /// Request-context fields (`user_id`, `request_id`, ...) carried into errors and reports, so
    /// a failure says for which request it happened. In insertion order.
    pub fields: Vec<(Cow<'static, str>, String)>,
}

impl GroupConfig {
    /// Applies `options` to the default configuration and validates the result.
    ///
    /// # Errors
    ///
    /// An [`OptionError`] naming the first invalid value: a zero deadline, a zero concurrency
    /// limit, an empty or repeated context field name.
    pub fn build(options: impl GroupOption) -> Result<Self, OptionError> {
        let mut config = Self::default();
        options.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// Checks the configuration as [`GroupConfig::build`] does.
    ///
    /// # Errors
    ///
    /// See [`GroupConfig::build`].
    pub fn validate(&self) -> Result<(), OptionError> {
        if self.deadline == Some(Duration::ZERO) {
            return Err(OptionError::ZeroDeadline);
        }
        if self.limit == Some(0) {
            return Err(OptionError::ZeroLimit);
        }
        for (i, (name, _)) in self.fields.iter().enumerate() {
            if name.is_empty() {
                return Err(OptionError::EmptyFieldName);
            }
            if self.fields[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(OptionError::DuplicateField(name.clone()));
            }
        }
        Ok(())
    }
}

/// Something that adjusts a [`GroupConfig`].
///
/// Implement it to write an option of your own; combine options with tuples.
///
/// ```
/// # use muster_options as muster;
/// use std::time::Duration;
/// use muster::{GroupConfig, GroupOption};
///
/// /// The deadline our service level objective allows, minus a safety margin.
/// struct Slo;
///
/// impl GroupOption for Slo {
///     fn apply(&self, config: &mut GroupConfig) {
///         config.deadline = Some(Duration::from_millis(900));
///     }
/// }
///
/// assert_eq!(GroupConfig::build(Slo)?.deadline, Some(Duration::from_millis(900)));
/// # Ok::<(), muster_options::OptionError>(())
/// ```
pub trait GroupOption {
    /// Writes this option into `config`. Validation happens afterwards, in
    /// [`GroupConfig::build`].
    fn apply(&self, config: &mut GroupConfig);
}

impl GroupOption for () {
    fn apply(&self, _: &mut GroupConfig) {}
}

impl<O: GroupOption> GroupOption for Option<O> {
    fn apply(&self, config: &mut GroupConfig) {
        if let Some(option) = self {
            option.apply(config);
        }
    }
}

impl<O: GroupOption + ?Sized> GroupOption for &O {
    fn apply(&self, config: &mut GroupConfig) {
        (**self).apply(config);
    }
}

impl<O: GroupOption + ?Sized> GroupOption for Box<O> {
    fn apply(&self, config: &mut GroupConfig) {
        (**self).apply(config);
    }
}

impl<O: GroupOption> GroupOption for [O] {
    fn apply(&self, config: &mut GroupConfig) {
        self.iter().for_each(|option| option.apply(config));
    }
}

impl<O: GroupOption> GroupOption for Vec<O> {
    fn apply(&self, config: &mut GroupConfig) {
        self.as_slice().apply(config);
    }
}

macro_rules! tuple_option {
    ($($name:ident),+) => {
        impl<$($name: GroupOption),+> GroupOption for ($($name,)+) {
            #[allow(non_snake_case)]
            fn apply(&self, config: &mut GroupConfig) {
                let ($($name,)+) = self;
                $($name.apply(config);)+
            }
        }
    };
}

tuple_option!(A);
tuple_option!(A, B);
tuple_option!(A, B, C);
tuple_option!(A, B, C, D);
tuple_option!(A, B, C, D, E);
tuple_option!(A, B, C, D, E, F);
tuple_option!(A, B, C, D, E, F, G);
tuple_option!(A, B, C, D, E, F, G, H);

/// A deadline for the whole group, counted from the group's creation.
///
/// When it passes, every task still pending is cancelled and the group fails naming them. A task
/// that finishes exactly at the deadline is in time. Zero is refused by [`GroupConfig::build`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(pub Duration);

impl GroupOption for Deadline {
    fn apply(&self, config: &mut GroupConfig) {
        config.deadline = Some(self.0);
    }
}

/// At most this many tasks run at once; the rest wait in spawn order and never start once the
/// group has failed. Zero is refused by [`GroupConfig::build`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit(pub usize);

impl GroupOption for Limit {
    fn apply(&self, config: &mut GroupConfig) {
        config.limit = Some(self.0);
    }
}

/// Runs every task of the group inside this span (each in a child span with a `source` field),
/// instead of the span current at spawn time.
///
/// Give the span the request's fields to see them on every event a source emits:
///
/// ```
/// # use muster_options as muster;
/// let span = tracing::info_span!("dashboard", user_id = 42);
/// let config = muster::GroupConfig::build(muster::ParentSpan(span))?;
/// assert!(config.span.is_some());
/// # Ok::<(), muster_options::OptionError>(())
/// ```
#[derive(Clone, Debug)]
pub struct ParentSpan(pub tracing::Span);

impl GroupOption for ParentSpan {
    fn apply(&self, config: &mut GroupConfig) {
        config.span = Some(self.0.clone());
    }
}

/// A request-context field (`user_id`, `request_id`, ...) that errors and reports carry, so a
/// failure says for which request it happened.
///
/// ```
/// # use muster_options as muster;
/// use muster::{Field, GroupConfig};
///
/// let config = GroupConfig::build((Field::new("user_id", 42), Field::new("request_id", "r-1")))?;
/// assert_eq!(config.fields[0], ("user_id".into(), "42".to_owned()));
/// # Ok::<(), muster_options::OptionError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    name: Cow<'static, str>,
    value: String,
}

impl Field {
    /// A field named `name` whose value is `value` rendered with [`Display`](fmt::Display).
    pub fn new(name: impl Into<Cow<'static, str>>, value: impl fmt::Display) -> Self {
        Self { name: name.into(), value: value.to_string() }
    }
}

impl GroupOption for Field {
    fn apply(&self, config: &mut GroupConfig) {
        config.fields.push((self.name.clone(), self.value.clone()));
    }
}

/// Turns a closure into a [`GroupOption`], for one-off options.
///
/// ```
/// # use muster_options as muster;
/// use muster::{GroupConfig, option_fn};
///
/// let config = GroupConfig::build(option_fn(|config: &mut GroupConfig| config.limit = Some(2)))?;
/// assert_eq!(config.limit, Some(2));
/// # Ok::<(), muster_options::OptionError>(())
/// ```
pub fn option_fn<F: Fn(&mut GroupConfig)>(f: F) -> OptionFn<F> {
    OptionFn(f)
}

/// A closure used as a [`GroupOption`]; see [`option_fn`].
#[derive(Clone, Copy)]
pub struct OptionFn<F>(F);

impl<F> fmt::Debug for OptionFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OptionFn")
    }
}

impl<F: Fn(&mut GroupConfig)> GroupOption for OptionFn<F> {
    fn apply(&self, config: &mut GroupConfig) {
        (self.0)(config);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_options_override_earlier_ones() {
        let config = GroupConfig::build((Limit(2), Limit(3))).unwrap();
        assert_eq!(config.limit, Some(3));
    }

    #[test]
    fn zero_deadline_is_refused() {
        assert_eq!(GroupConfig::build(Deadline(Duration::ZERO)).unwrap_err(), OptionError::ZeroDeadline);
    }

    #[test]
    fn field_names_must_be_unique_and_non_empty() {
        let twice = (Field::new("user_id", 1), Field::new("user_id", 2));
        assert_eq!(GroupConfig::build(twice).unwrap_err(), OptionError::DuplicateField("user_id".into()));
        assert_eq!(GroupConfig::build(Field::new("", 1)).unwrap_err(), OptionError::EmptyFieldName);
    }

    #[test]
    fn absent_and_listed_options_compose() {
        let none: Option<Deadline> = None;
        let config = GroupConfig::build((none, vec![Limit(1), Limit(5)])).unwrap();
        assert_eq!((config.deadline, config.limit), (None, Some(5)));
    }
}
