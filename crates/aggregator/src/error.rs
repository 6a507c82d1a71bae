//! The errors: [`AggregateError`] (an aggregation failed) and [`BuildError`] (an aggregator
//! could not be built), both also at the crate root, and a [`BoxError`](crate::BoxError) that
//! keeps its [kind](crate::ErrorKind) through type erasure ([`boxed`], [`Classified`]).

use std::error::Error;
use std::fmt;
use std::time::Duration;

use muster_core::muster_options::OptionError;
use muster_core::{Classify, ErrorKind, GroupError, Name};

use crate::report::Report;

#[doc(inline)]
pub use muster_core::{Classified, boxed};

/// Why [`AggregatorBuilder::build`](crate::builder::AggregatorBuilder::build) refused a configuration.
/// Nothing was built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Two sources (or two members of a [`completion`](crate::completion) policy) share a
    /// name.
    #[error("the name `{0}` is given twice")]
    DuplicateSource(Name),
    /// A source needs a name.
    #[error("a source name must not be empty")]
    EmptyName,
    /// A dependent source names an input that is not a source declared before it.
    #[error("the input `{0}` of a dependent source is not a source declared before it")]
    MissingInput(Name),
    /// A [`completion`](crate::completion) policy needs at least one member.
    #[error("a completion policy needs at least one member")]
    NoMembers,
    /// A [`quorum`](crate::completion::quorum) must be between 1 and the number of members.
    #[error("a quorum of {k} cannot be reached with {members} member(s)")]
    Quorum {
        /// The successes asked for.
        k: usize,
        /// The members.
        members: usize,
    },
    /// An aggregator-level option is invalid. `Display` says why (it is not a `source()`:
    /// a build error is often printed alone).
    #[error("invalid aggregator option: {0}")]
    Options(OptionError),
    /// A source's policy is invalid. `Display` says why, as for [`Options`](Self::Options).
    #[error("invalid policy for source `{name}`: {error}")]
    Source {
        /// The source.
        name: Name,
        /// What is wrong.
        error: OptionError,
    },
    /// A source's policies cannot fit in the deadline: a retry's backoffs alone take at least
    /// as long.
    #[error(
        "source `{name}`: its retry backoffs take at least {needs:?}, which does not fit in the {deadline:?} deadline"
    )]
    Budget {
        /// The source.
        name: Name,
        /// The least time its policies take.
        needs: Duration,
        /// The aggregator's deadline.
        deadline: Duration,
    },
}

impl From<OptionError> for BuildError {
    fn from(error: OptionError) -> Self {
        Self::Options(error)
    }
}

/// Checks source names: none empty, none twice.
pub(crate) fn check_names<'a>(names: impl Iterator<Item = &'a Name>) -> Result<(), BuildError> {
    let mut seen: Vec<&Name> = Vec::new();
    for name in names {
        if name.is_empty() {
            return Err(BuildError::EmptyName);
        }
        if seen.contains(&name) {
            return Err(BuildError::DuplicateSource(name.clone()));
        }
        seen.push(name);
    }
    Ok(())
}

/// Why [`Aggregator::aggregate`](crate::Aggregator::aggregate) failed, with the full report.
///
/// The root cause is the first required source to fail (its name, kind and error), the global
/// deadline (with the pending sources), or the caller's cancellation. The report says what
/// happened to every source, including the siblings that were cancelled, and carries the
/// call's context fields.
///
/// `Display` is one line: what failed, for which request (`source `profile` failed after
/// 30ms (user_id=42)`); [`Error::source`] is the source's own error, so the whole chain is
/// there for a logger; [`chain`](Self::chain) renders it in one string.
pub struct AggregateError {
    cause: Cause,
    report: Box<Report>,
}

enum Cause {
    Group(GroupError),
    /// Cannot happen: every source of a successful group writes its output.
    Missing,
}

impl AggregateError {
    pub(crate) fn group(error: GroupError, report: Report) -> Self {
        Self { cause: Cause::Group(error), report: Box::new(report) }
    }

    pub(crate) fn missing(report: Report) -> Self {
        Self { cause: Cause::Missing, report: Box::new(report) }
    }

    /// The kind of failure: the kind the failed source's error gave ([`Classify`]: an HTTP
    /// error's `Status`, `Connect`, `BodyTooLarge`, ...; `Timeout` for its own timeout; a
    /// user's own word), as the report recorded it; else `Panicked`, `Timeout` (the global
    /// deadline) or `Cancelled`.
    pub fn kind(&self) -> ErrorKind {
        match &self.cause {
            // The report gave the failed source its kind when it failed.
            Cause::Group(error) if error.is_failed() => self.failed_kind().unwrap_or(ErrorKind::Failed),
            Cause::Group(error) => error.kind(),
            Cause::Missing => ErrorKind::Failed,
        }
    }

    /// The kind the report gave the source that failed, if one did.
    fn failed_kind(&self) -> Option<ErrorKind> {
        self.source_name().and_then(|name| self.report.source(name)).and_then(|source| source.kind)
    }

    /// The source that failed, if a source did (not the deadline or a cancellation).
    pub fn source_name(&self) -> Option<&str> {
        self.group_error().and_then(GroupError::source_name)
    }

    /// The sources still pending when the global deadline passed; empty otherwise.
    pub fn pending(&self) -> &[Name] {
        self.group_error().map_or(&[], GroupError::pending)
    }

    /// The sources cancelled because of the failure, in declaration order.
    pub fn cancelled(&self) -> &[Name] {
        self.group_error().map_or(&[], GroupError::cancelled)
    }

    /// The failed source's error, to downcast to its concrete type.
    pub fn source_error(&self) -> Option<&(dyn Error + 'static)> {
        Error::source(self)
    }

    /// What happened to every source.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The value of the call's context field `name` (see
    /// [`RequestContext`](crate::RequestContext)), if set.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.report.field(name)
    }

    /// The underlying group error.
    pub fn group_error(&self) -> Option<&GroupError> {
        match &self.cause {
            Cause::Group(error) => Some(error),
            Cause::Missing => None,
        }
    }

    /// This error and every error under it, `a: b: c`: for a log line that must say what the
    /// connector said. Not for clients: it may carry internal detail (addresses, library
    /// text).
    pub fn chain(&self) -> String {
        chain(self)
    }
}

/// `error` and its sources, `a: b: c`.
pub(crate) fn chain(error: &(dyn Error + 'static)) -> String {
    let mut message = error.to_string();
    let mut cause = error.source();
    while let Some(error) = cause {
        message = format!("{message}: {error}");
        cause = error.source();
    }
    message
}

impl fmt::Display for AggregateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.cause {
            Cause::Group(error) => fmt::Display::fmt(error, f)?,
            Cause::Missing => f.write_str("a source ended without an output")?,
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
            Cause::Missing => debug.field("error", &"missing output"),
        };
        debug.field("report", &self.report).finish()
    }
}

/// A nested aggregation passes its kind on: its [`kind`](AggregateError::kind), and retryable
/// as the failed source's error was. A panic, the deadline (the whole budget of the
/// aggregation) and a cancellation are not retryable.
impl Classify for AggregateError {
    fn kind(&self) -> ErrorKind {
        AggregateError::kind(self)
    }

    fn is_retryable(&self) -> bool {
        match &self.cause {
            Cause::Group(error) if error.is_failed() => {
                self.source_name().and_then(|name| self.report.source(name)).is_some_and(|source| source.retryable)
            }
            _ => false,
        }
    }
}

impl Error for AggregateError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.group_error().and_then(Error::source)
    }
}
