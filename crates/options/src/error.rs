use std::borrow::Cow;

/// Why a set of options was refused.
///
/// Returned by [`GroupConfig::build`](crate::GroupConfig::build) (and by the constructors of
/// the crates that take options); the configuration is not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionError {
    /// A deadline of zero would fail every group before it starts.
    #[error("the deadline must be greater than zero")]
    ZeroDeadline,
    /// A concurrency limit of zero would never start a task.
    #[error("the concurrency limit must be at least 1")]
    ZeroLimit,
    /// A request-context field needs a name.
    #[error("a context field name must not be empty")]
    EmptyFieldName,
    /// Two request-context fields share a name.
    #[error("context field `{0}` is set twice")]
    DuplicateField(Cow<'static, str>),
}
