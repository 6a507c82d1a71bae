//! The group benchmark's cases, shared by `group.rs` (the times) and `allocations.rs` (the
//! heap allocations, under a counting allocator that would slow the times): the sources of each
//! scenario and the implementations that run them (see `group.rs` for what each one is).

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::future::try_join_all;
use muster_core::{Group, GroupError, Name, Outputs};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// Precomputed task names, so that formatting names is not measured.
pub(crate) const NAMES: [&str; 64] = [
    "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12", "s13", "s14", "s15", "s16", "s17",
    "s18", "s19", "s20", "s21", "s22", "s23", "s24", "s25", "s26", "s27", "s28", "s29", "s30", "s31", "s32", "s33",
    "s34", "s35", "s36", "s37", "s38", "s39", "s40", "s41", "s42", "s43", "s44", "s45", "s46", "s47", "s48", "s49",
    "s50", "s51", "s52", "s53", "s54", "s55", "s56", "s57", "s58", "s59", "s60", "s61", "s62", "s63",
];

pub(crate) const SIZES: [usize; 3] = [2, 8, 64];
pub(crate) const LATENCY_N: usize = 8;

/// The error of a failing source: free to construct, and boxing it does not allocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Boom;

impl fmt::Display for Boom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("boom")
    }
}

impl Error for Boom {}

// ---------------------------------------------------------------------------------------------
// Sources: one function per scenario, so each scenario's future is only as large as it needs.

pub(crate) async fn ready(i: usize) -> Result<usize, Boom> {
    Ok(i)
}

pub(crate) async fn yield_once(i: usize) -> Result<usize, Boom> {
    tokio::task::yield_now().await;
    Ok(i)
}

pub(crate) async fn fail_fast(i: usize) -> Result<usize, Boom> {
    if i == 0 {
        tokio::task::yield_now().await;
        Err(Boom)
    } else {
        std::future::pending().await
    }
}

pub(crate) async fn cancel_latency(i: usize) -> Result<usize, Boom> {
    if i == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Err(Boom)
    } else {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(i)
    }
}

/// When source 0 of `fail_after_timer` returned its error, in nanoseconds since [`epoch`].
pub(crate) static ERRORED_AT: AtomicU64 = AtomicU64::new(0);

/// A fixed instant that [`ERRORED_AT`] counts from.
pub(crate) fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

pub(crate) fn nanos_since_epoch() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

pub(crate) async fn fail_after_timer(i: usize) -> Result<usize, Boom> {
    if i == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        ERRORED_AT.store(nanos_since_epoch(), Ordering::Relaxed);
        Err(Boom)
    } else {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(i)
    }
}

// ---------------------------------------------------------------------------------------------
// Implementations.

/// `tokio::try_join!` over sources 0..2 or 0..8: what a user writes for a fixed set of sources.
pub(crate) async fn run_try_join<S, F>(n: usize, source: S) -> Result<Vec<usize>, Boom>
where
    S: Fn(usize) -> F,
    F: Future<Output = Result<usize, Boom>> + Send + 'static,
{
    match n {
        2 => tokio::try_join!(source(0), source(1)).map(|(a, b)| vec![a, b]),
        8 => tokio::try_join!(source(0), source(1), source(2), source(3), source(4), source(5), source(6), source(7))
            .map(|(a, b, c, d, e, f, g, h)| vec![a, b, c, d, e, f, g, h]),
        _ => unreachable!("try_join! is measured for N = 2 and 8"),
    }
}

pub(crate) async fn run_muster<S, F>(n: usize, source: S) -> Result<Outputs<usize>, GroupError>
where
    S: Fn(usize) -> F,
    F: Future<Output = Result<usize, Boom>> + Send + 'static,
{
    let mut group = Group::new();
    for (i, &name) in NAMES[..n].iter().enumerate() {
        group.spawn(name, source(i)).expect("the names are unique");
    }
    group.wait().await
}

/// `try_join_all` over the unboxed source futures, each carrying its name (returned with its
/// output or its error) and instrumented with a `source` span: the least that any group of
/// named, traced tasks does, with none of the group's checks (unique names), panics, deadline
/// or cause. It tells what names and spans alone cost over bare `try_join_all`.
pub(crate) async fn run_try_join_all_named<S, F>(n: usize, source: S) -> Result<Vec<(Name, usize)>, (Name, Boom)>
where
    S: Fn(usize) -> F,
    F: Future<Output = Result<usize, Boom>> + Send + 'static,
{
    let named = |(i, &name): (usize, &&'static str)| {
        let name = Name::from(name);
        let span = tracing::info_span!("source", source = %name);
        let task = source(i);
        async move {
            match task.await {
                Ok(value) => Ok((name, value)),
                Err(error) => Err((name, error)),
            }
        }
        .instrument(span)
    };
    try_join_all(NAMES[..n].iter().enumerate().map(named)).await
}

pub(crate) async fn run_try_join_all<S, F>(n: usize, source: S) -> Result<Vec<usize>, Boom>
where
    S: Fn(usize) -> F,
    F: Future<Output = Result<usize, Boom>> + Send + 'static,
{
    try_join_all((0..n).map(source)).await
}

/// `try_join_all` over boxed futures: what a hand-written aggregator over sources of different
/// types (or `async_trait` fetchers) runs, since the futures must share one type.
pub(crate) async fn run_try_join_all_boxed<S, F>(n: usize, source: S) -> Result<Vec<usize>, Boom>
where
    S: Fn(usize) -> F,
    F: Future<Output = Result<usize, Boom>> + Send + 'static,
{
    let boxed = |i| -> Pin<Box<dyn Future<Output = Result<usize, Boom>> + Send>> { Box::pin(source(i)) };
    try_join_all((0..n).map(boxed)).await
}

pub(crate) async fn run_join_set<S, F>(n: usize, source: S) -> Result<Vec<usize>, Boom>
where
    S: Fn(usize) -> F,
    F: Future<Output = Result<usize, Boom>> + Send + 'static,
{
    let mut set = JoinSet::new();
    for i in 0..n {
        let task = source(i);
        set.spawn(async move { (i, task.await) });
    }
    let mut outputs = vec![0; n];
    while let Some(joined) = set.join_next().await {
        match joined.expect("the sources do not panic") {
            (i, Ok(value)) => outputs[i] = value,
            (_, Err(error)) => {
                set.abort_all();
                while set.join_next().await.is_some() {}
                return Err(error);
            }
        }
    }
    Ok(outputs)
}

pub(crate) async fn run_spawn_token<S, F>(n: usize, source: S) -> Result<Vec<usize>, Boom>
where
    S: Fn(usize) -> F,
    F: Future<Output = Result<usize, Boom>> + Send + 'static,
{
    let token = CancellationToken::new();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let token = token.clone();
            let task = source(i);
            tokio::spawn(async move {
                tokio::select! {
                    biased;
                    () = token.cancelled() => None,
                    result = task => Some(result),
                }
            })
        })
        .collect();
    let mut outputs = Vec::with_capacity(n);
    let mut handles = handles.into_iter();
    for handle in handles.by_ref() {
        match handle.await.expect("the sources do not panic") {
            Some(Ok(value)) => outputs.push(value),
            Some(Err(error)) => {
                token.cancel();
                for handle in handles {
                    // Cancelled (`None`) or already finished: either way the task is gone.
                    let _ = handle.await;
                }
                return Err(error);
            }
            None => unreachable!("the token is cancelled only after a failure"),
        }
    }
    Ok(outputs)
}

/// The implementations measured at `n`: `try_join!` only where it is written out.
pub(crate) fn implementations(n: usize) -> Vec<&'static str> {
    let mut implementations =
        vec!["muster", "try_join_all", "try_join_all_named", "try_join_all_boxed", "join_set", "spawn_token"];
    if n == 2 || n == 8 {
        implementations.push("try_join");
    }
    if let Ok(only) = std::env::var("MUSTER_BENCH_IMPLS") {
        implementations.retain(|implementation| only.split(',').any(|wanted| wanted == *implementation));
    }
    implementations
}

/// One run of `implementation`, its result dropped. With `stamp`, returns when it returned (in
/// nanoseconds since [`epoch`]), read before its result is dropped; else 0.
pub(crate) async fn run_once<S, F>(implementation: &str, n: usize, source: S, stamp: bool) -> u64
where
    S: Fn(usize) -> F + Copy,
    F: Future<Output = Result<usize, Boom>> + Send + 'static,
{
    match implementation {
        "muster" => returned(run_muster(n, source).await, stamp),
        "try_join_all" => returned(run_try_join_all(n, source).await, stamp),
        "try_join_all_named" => returned(run_try_join_all_named(n, source).await, stamp),
        "try_join_all_boxed" => returned(run_try_join_all_boxed(n, source).await, stamp),
        "join_set" => returned(run_join_set(n, source).await, stamp),
        "spawn_token" => returned(run_spawn_token(n, source).await, stamp),
        _ => returned(run_try_join(n, source).await, stamp),
    }
}

/// Drops `result`; with `stamp`, returns the time just before.
pub(crate) fn returned<R>(result: R, stamp: bool) -> u64 {
    let at = if stamp { nanos_since_epoch() } else { 0 };
    drop(black_box(result));
    at
}
