//! Functional options for muster: small values that apply themselves to a configuration.
//!
//! The Go original configured an aggregator with `WithTimeout(d)`, `WithLogger(l)`. In Rust an
//! option is a value implementing [`GroupOption`]: `()` means "no options", tuples combine
//! options, [`Option`] makes one conditional and [`option_fn`] turns a closure into a one-off
//! option. Nothing is checked while options are applied; [`GroupConfig::build`] validates the
//! result once and returns an [`OptionError`] naming what is wrong, never a panic.
//!
//! ```
//! # use muster_options as muster;
//! use std::time::Duration;
//! use muster::{Deadline, Field, GroupConfig, Limit, OptionError};
//!
//! let config = GroupConfig::build((Deadline(Duration::from_secs(1)), Limit(4), Field::new("user_id", 42)))?;
//! assert_eq!(config.deadline, Some(Duration::from_secs(1)));
//! assert_eq!(config.limit, Some(4));
//!
//! // Invalid values are refused when the configuration is built.
//! assert_eq!(GroupConfig::build(Limit(0)).unwrap_err(), OptionError::ZeroLimit);
//! # Ok::<(), OptionError>(())
//! ```
//!
//! Options are open: any type implementing [`GroupOption`] is one.
//!
//! Source-level options are plain values too: [`Timeout`], [`Retry`], [`Hedge`], [`Optional`]
//! and [`Fallback`]. Each has a `validate` method; the `muster` crate turns each into a policy
//! that wraps a source's fetcher (a layer), so they compose with policies users write.
#![doc(test(attr(deny(warnings))))]

mod error;
mod group;
mod source;

pub use crate::error::OptionError;
pub use crate::group::{Deadline, Field, GroupConfig, GroupOption, Limit, OptionFn, ParentSpan, option_fn};
pub use crate::source::{ByError, Fallback, Hedge, Optional, Retry, Timeout};
