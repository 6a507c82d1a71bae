//! Instrumented test sources: each records when it started, whether it finished, and whether
//! it was dropped before finishing (cancelled), and how many ran at once.
#![allow(dead_code, unreachable_pub, unused_imports)] // each test binary uses a different part

use std::fmt;
use std::future::{Future, pending};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use muster_core::{CancelToken, Cause};

mod panics;

pub(crate) use panics::{PANIC_MESSAGE, quiet_deliberate_panics};

/// What a test source does once its delay has passed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Err,
    Panic,
    Hang,
}

/// The error a failing test source returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceError(pub String);

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed on purpose", self.0)
    }
}

impl std::error::Error for SourceError {}

#[derive(Debug, Default)]
pub struct State {
    pub running: usize,
    pub high_water: usize,
    pub started: Vec<String>,
    pub finished: Vec<String>,
    pub cancelled: Vec<String>,
    /// The cause each cancelled source read from the group's token while being dropped.
    pub causes: Vec<Option<String>>,
}

/// Shared observation point for a set of test sources.
#[derive(Clone, Debug, Default)]
pub struct Probe {
    state: Arc<Mutex<State>>,
    token: Option<CancelToken>,
}

impl Probe {
    pub fn new() -> Self {
        Self::default()
    }

    /// A probe whose sources read `token`'s cause when they are dropped.
    pub fn with_token(token: CancelToken) -> Self {
        Self { token: Some(token), ..Self::default() }
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A source that starts when first polled, waits `delay` (no timer at all for zero), then
    /// does what `outcome` says. Its output is `value`.
    pub fn source(
        &self,
        name: impl Into<String>,
        delay: Duration,
        outcome: Outcome,
        value: u32,
    ) -> impl Future<Output = Result<u32, SourceError>> + Send + 'static {
        let (probe, name) = (self.clone(), name.into());
        async move {
            let guard = Running::start(probe, name.clone());
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            match outcome {
                Outcome::Ok => {
                    guard.finish();
                    Ok(value)
                }
                Outcome::Err => {
                    guard.finish();
                    Err(SourceError(name))
                }
                Outcome::Panic => {
                    guard.finish();
                    panic!("{PANIC_MESSAGE}")
                }
                Outcome::Hang => pending().await,
            }
        }
    }
}

/// Marks a source as running until it finishes or is dropped.
struct Running {
    probe: Probe,
    name: String,
    finished: bool,
}

impl Running {
    fn start(probe: Probe, name: String) -> Self {
        let mut state = probe.state();
        state.running += 1;
        state.high_water = state.high_water.max(state.running);
        state.started.push(name.clone());
        drop(state);
        Self { probe, name, finished: false }
    }

    fn finish(mut self) {
        self.finished = true;
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let cause = self.probe.token.as_ref().and_then(CancelToken::cause).map(Cause::to_string);
        let mut state = self.probe.state();
        state.running -= 1;
        if self.finished {
            state.finished.push(self.name.clone());
        } else {
            state.cancelled.push(self.name.clone());
            state.causes.push(cause);
        }
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}
