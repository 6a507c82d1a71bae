//! Adapters that turn the outside world into muster [`Fetcher`](muster_core::Fetcher)s.
//!
//! This crate will hold the HTTP fetcher (feature `http`), scripted mock fetchers (feature
//! `mock`) and the tower interop. Today it re-exports the core so that the dependency chain
//! options ← core ← adapters ← aggregator is in place.
#![doc(test(attr(deny(warnings))))]

#[doc(no_inline)]
pub use muster_core;
