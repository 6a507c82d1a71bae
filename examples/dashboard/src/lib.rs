//! The banking dashboard on muster: `GET /dashboard/{user_id}` fetches the user's profile and
//! recent transactions from two HTTP services in parallel, under one deadline, and answers one
//! JSON object, or at the first failure cancels the other call and says which source failed,
//! why, and for which user.
//!
//! Run with: cargo run --release -p dashboard
//!
//! The binary serves [`app::app`] and, unless told where the real services are, starts two
//! [`demo`] backends in-process on ephemeral loopback ports. The library exists so that the
//! tests can serve the same router and backends on `127.0.0.1:0`.

pub mod app;
pub mod debug;
pub mod demo;
pub mod limits;
pub mod logging;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod server;
pub mod stats;

pub use crate::app::{AppState, CacheConfig, Config, ConfigError, DashboardRequest, Knobs, Resilience, app};
pub use crate::demo::{DemoBackend, Service, Stats};
