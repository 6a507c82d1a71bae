use std::error::Error;
use std::fmt;
use std::time::Duration;

use muster_core::{ErrorKind, GroupError, Name, SpawnError};
use muster_options::OptionError;

use crate::report::Report;

/// Why [`Builder::build`](crate::Builder::build) refused a configuration. Nothing was built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two sources share a name.
    #[error("two sources are named `{0}`")]
    DuplicateSource(Name),
    /// A source needs a name.
    #[error("a source name must not be empty")]
    EmptyName,
    /// A group-level option is invalid.
    #[error("invalid aggregator option")]
    Options(#[from] OptionError),
    /// A source-level option is invalid.
    #[error("invalid option for source `{name}`")]
    Source {
        /// The source.
        name: Name,
        /// What is wrong.
        #[source]
        error: OptionError,
    },
    /// A retry policy cannot fit in the deadline: its backoffs alone take longer.
    #[error(
        "source `{name}`: {attempts} attempts need at least {needs:?} of backoff, more than the {deadline:?} deadline"
    )]
    RetryBudget {
        /// The source.
        name: Name,
        /// The attempts the policy allows.
        attempts: u32,
        /// The least time its backoffs take.
        needs: Duration,
        /// The aggregator's deadline.
        deadline: Duration,
    },
}

/// A source's attempt ran out of time under its own [`Timeout`](muster_options::Timeout).
///
/// Returned as the source's error (so it names the source in the
/// [`AggregateError`]); retryable under a [`Retry`](muster_options::Retry) policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("source timeout of {after:?} elapsed")]
pub struct SourceTimeout {
    /// The timeout that elapsed.
    pub after: Duration,
}

/// Why [`Aggregator::aggregate`](crate::Aggregator::aggregate) failed, with the full report.
///
/// The root cause is the first required source to fail (its name, kind and error), the global
/// deadline (with the pending sources), or the caller's cancellation. The report says what
/// happened to every source, including the siblings that were cancelled.
pub struct AggregateError {
    cause: Cause,
    report: Box<Report>,
}

enum Cause {
    Group(GroupError),
    Spawn(SpawnError),
}

impl AggregateError {
    pub(crate) fn group(error: GroupError, report: Report) -> Self {
        Self { cause: Cause::Group(error), report: Box::new(report) }
    }

    pub(crate) fn spawn(error: SpawnError, report: Report) -> Self {
        Self { cause: Cause::Spawn(error), report: Box::new(report) }
    }

    /// The kind of failure: `Failed`, `Panicked`, `Timeout` (the global deadline, or a
    /// source's own timeout) or `Cancelled`.
    pub fn kind(&self) -> ErrorKind {
        match &self.cause {
            Cause::Group(error) if error.is_failed() && self.timeout().is_some() => ErrorKind::Timeout,
            Cause::Group(error) => error.kind(),
            Cause::Spawn(_) => ErrorKind::Cancelled,
        }
    }

    /// The source that failed, if a source did (not the deadline or a cancellation).
    pub fn source_name(&self) -> Option<&str> {
        match &self.cause {
            Cause::Group(error) => error.source_name(),
            Cause::Spawn(_) => None,
        }
    }

    /// The sources still pending when the global deadline passed; empty otherwise.
    pub fn pending(&self) -> &[Name] {
        match &self.cause {
            Cause::Group(error) => error.pending(),
            Cause::Spawn(_) => &[],
        }
    }

    /// The source's own timeout, when that is what failed it.
    pub fn timeout(&self) -> Option<&SourceTimeout> {
        self.source().and_then(|error| error.downcast_ref::<SourceTimeout>())
    }

    /// The failed source's error, to downcast to its concrete type.
    pub fn source_error(&self) -> Option<&(dyn Error + 'static)> {
        Error::source(self)
    }

    /// What happened to every source.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The underlying group error, if the group ran.
    pub fn group_error(&self) -> Option<&GroupError> {
        match &self.cause {
            Cause::Group(error) => Some(error),
            Cause::Spawn(_) => None,
        }
    }
}

impl fmt::Display for AggregateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Group(error) => fmt::Display::fmt(error, f)?,
            Cause::Spawn(error) => fmt::Display::fmt(error, f)?,
        }
        // The request-context fields say for which request it failed.
        for (i, (name, value)) in self.report.fields.iter().enumerate() {
            let separator = if i == 0 { " (" } else { ", " };
            write!(f, "{separator}{name}={value}")?;
        }
        if !self.report.fields.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl fmt::Debug for AggregateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("AggregateError");
        match &self.cause {
            Cause::Group(error) => debug.field("error", error),
            Cause::Spawn(error) => debug.field("error", error),
        };
        debug.field("report", &self.report).finish()
    }
}

impl Error for AggregateError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match &self.cause {
            Cause::Group(error) => error.source(),
            Cause::Spawn(error) => error.source(),
        }
    }
}

/// Why a typed output could not be taken from an [`Aggregate`](crate::Aggregate).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MergeError {
    /// No output under that key: the source is unknown, was omitted by its fallback, or its
    /// output was already taken.
    #[error("no output for source `{0}`")]
    Missing(Name),
    /// The key's type is not the source's output type.
    #[error("the output of source `{0}` is not of the key's type")]
    WrongType(Name),
}
