//! Metrics (feature `metrics`), on the [`metrics`](https://docs.rs/metrics) facade: every
//! aggregation records what its [`Report`] says into whatever recorder the application
//! installed (Prometheus, StatsD, OpenTelemetry, a test's), or into nothing when it installed
//! none.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `muster_aggregations_total` | counter | `outcome` | aggregations, by outcome: `ok`, `failed`, `panicked`, `timeout`, `cancelled` |
//! | `muster_aggregation_duration_seconds` | histogram | `outcome` | from the start of an aggregation to its answer |
//! | `muster_source_calls_total` | counter | `source` | sources started: one call per source per aggregation |
//! | `muster_source_attempts_total` | counter | `source` | attempts made, the first included: retries and hedges are the attempts beyond the calls |
//! | `muster_source_hedges_total` | counter | `source` | hedged attempts (so retries are attempts − calls − hedges) |
//! | `muster_source_outcomes_total` | counter | `source`, `outcome`, `kind` | how each source ended (`ok`, `failed`, `timeout`, `panicked`, `cancelled`, `fallback`) and the kind: the one its error gave ([`Classify`](crate::Classify): the HTTP fetcher's `connect`, `status`, ..., or a word of its own) for a source that failed, the kind of what a fallback replaced for `fallback`, else the outcome |
//! | `muster_source_duration_seconds` | histogram | `source`, `outcome` | how long a source ran, until it finished or was cancelled |
//! | `muster_source_queued_seconds` | histogram | `source` | time queued behind the aggregator's [`Limit`](crate::options::Limit) before starting (zero without one) |
//! | `muster_source_cancellations_total` | counter | `source`, `cause` | sources stopped before they finished, by cause: `sibling` (a required source failed), `deadline`, `caller` (a parent cancellation), `completed` |
//! | `muster_breaker_state` | gauge | `source` | a [`CircuitBreaker`](crate::policy::CircuitBreaker)'s state: 0 closed, 1 half-open, 2 open |
//! | `muster_breaker_transitions_total` | counter | `source`, `to` | a breaker's transitions, by the state entered: `open`, `half_open`, `closed` |
//! | `muster_breaker_rejections_total` | counter | `source` | calls an open breaker refused (kind `circuit_open`) |
//! | `muster_source_suppressed_total` | counter | `source`, `attempt`, `reason` | extra attempts a [`Budget`](crate::policy::Budget) did not start: `attempt` `retry` or `hedge`, `reason` `budget` (spent) or `latency` (the source's p50 does not fit in the time left) |
//! | `muster_cache_redis_failures_total` | counter | `namespace`, `operation` | failed reads and writes of a [`Cache`](crate::policy::Cache)'s Redis tier (feature `redis`), each a miss that the source and the local tier answer: `operation` `read` or `write` |
//!
//! Everything is recorded once, when the aggregation answers, from its report. An aggregation
//! whose caller stops waiting (drops the future, e.g. a client that disconnects) has no report:
//! it counts as an aggregation of outcome `cancelled`, its sources are not recorded, and the
//! aggregator logs it at `info`.
//!
//! Serving them, e.g. as Prometheus text from an axum router, is the application's part; with
//! the `metrics-exporter-prometheus` crate:
//!
//! ```ignore
//! let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
//! muster::metrics::describe();
//! let app = app.route("/metrics", axum::routing::get(move || std::future::ready(prometheus.render())));
//! ```
//!
//! Nothing needs to be set up in `muster` itself: with the feature on, an aggregation records
//! into the recorder current when it answers.
//!
//! ```
//! use muster::{Aggregator, fetcher_fn};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Once, after installing the application's recorder: names the metrics' units and help.
//! muster::metrics::describe();
//!
//! let profile = fetcher_fn(|_: &u64| async { Ok::<_, std::io::Error>("Ada") });
//! let aggregator = Aggregator::builder().source("profile", profile).build()?;
//! aggregator.aggregate(&7).await?; // muster_aggregations_total{outcome="ok"} += 1, ...
//! # Ok(()) }
//! ```

use ::metrics::{Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};
use muster_core::{ErrorKind, GroupError};

use crate::report::{Outcome, Report, TimeoutKind, Trigger};

/// Counter: aggregations, labelled `outcome`.
pub const AGGREGATIONS: &str = "muster_aggregations_total";
/// Histogram, seconds: aggregation durations, labelled `outcome`.
pub const AGGREGATION_DURATION: &str = "muster_aggregation_duration_seconds";
/// Counter: sources started, labelled `source`.
pub const SOURCE_CALLS: &str = "muster_source_calls_total";
/// Counter: attempts made (the first included), labelled `source`.
pub const SOURCE_ATTEMPTS: &str = "muster_source_attempts_total";
/// Counter: hedged attempts (counted in the attempts too), labelled `source`.
pub const SOURCE_HEDGES: &str = "muster_source_hedges_total";
/// Counter: source outcomes, labelled `source`, `outcome` and `kind`.
pub const SOURCE_OUTCOMES: &str = "muster_source_outcomes_total";
/// Histogram, seconds: how long sources ran, labelled `source` and `outcome`.
pub const SOURCE_DURATION: &str = "muster_source_duration_seconds";
/// Histogram, seconds: time sources spent queued before starting, labelled `source`.
pub const SOURCE_QUEUED: &str = "muster_source_queued_seconds";
/// Counter: sources stopped before they finished, labelled `source` and `cause`.
pub const SOURCE_CANCELLATIONS: &str = "muster_source_cancellations_total";
/// Gauge: a circuit breaker's state (0 closed, 1 half-open, 2 open), labelled `source`.
pub const BREAKER_STATE: &str = "muster_breaker_state";
/// Counter: a circuit breaker's transitions, labelled `source` and `to`.
pub const BREAKER_TRANSITIONS: &str = "muster_breaker_transitions_total";
/// Counter: calls an open circuit breaker refused, labelled `source`.
pub const BREAKER_REJECTIONS: &str = "muster_breaker_rejections_total";
/// Counter: extra attempts a budget did not start, labelled `source`, `attempt` and `reason`.
pub const SOURCE_SUPPRESSED: &str = "muster_source_suppressed_total";
/// Counter: failed reads and writes of a cache's Redis tier (each one a miss: the source and
/// the local tier answer), labelled `namespace` and `operation` (`read`, `write`).
pub const CACHE_REDIS_FAILURES: &str = "muster_cache_redis_failures_total";

/// Describes every metric (its unit and help text) to the installed recorder: call it once,
/// after installing the recorder, so that an exporter shows the help text. Recording works
/// without it.
///
/// ```
/// muster::metrics::describe();
/// ```
pub fn describe() {
    describe_counter!(AGGREGATIONS, Unit::Count, "Aggregations, by outcome.");
    describe_histogram!(AGGREGATION_DURATION, Unit::Seconds, "From the start of an aggregation to its answer.");
    describe_counter!(SOURCE_CALLS, Unit::Count, "Sources started, once per source per aggregation.");
    describe_counter!(
        SOURCE_ATTEMPTS,
        Unit::Count,
        "Attempts made by sources, the first included (retries and hedges)."
    );
    describe_counter!(SOURCE_HEDGES, Unit::Count, "Hedged attempts made by sources (also counted as attempts).");
    describe_counter!(SOURCE_OUTCOMES, Unit::Count, "How sources ended, by outcome and kind.");
    describe_histogram!(SOURCE_DURATION, Unit::Seconds, "How long sources ran, until they finished or were cancelled.");
    describe_histogram!(SOURCE_QUEUED, Unit::Seconds, "Time sources spent queued behind the concurrency limit.");
    describe_counter!(SOURCE_CANCELLATIONS, Unit::Count, "Sources stopped before they finished, by cause.");
    describe_gauge!(BREAKER_STATE, Unit::Count, "Circuit breaker state: 0 closed, 1 half-open, 2 open.");
    describe_counter!(BREAKER_TRANSITIONS, Unit::Count, "Circuit breaker transitions, by the state entered.");
    describe_counter!(BREAKER_REJECTIONS, Unit::Count, "Calls an open circuit breaker refused.");
    describe_counter!(SOURCE_SUPPRESSED, Unit::Count, "Retries and hedges a budget did not start, by reason.");
    describe_counter!(
        CACHE_REDIS_FAILURES,
        Unit::Count,
        "Failed reads and writes of a cache's Redis tier (each a miss), by namespace and operation."
    );
}

/// Records a breaker's transition into `to` (`closed`, `half_open`, `open`).
pub(crate) fn breaker_transition(source: &str, to: &'static str) {
    let state = match to {
        "closed" => 0.0,
        "half_open" => 1.0,
        _ => 2.0,
    };
    gauge!(BREAKER_STATE, "source" => source.to_owned()).set(state);
    counter!(BREAKER_TRANSITIONS, "source" => source.to_owned(), "to" => to).increment(1);
}

/// Records a call an open breaker refused.
pub(crate) fn breaker_rejection(source: &str) {
    counter!(BREAKER_REJECTIONS, "source" => source.to_owned()).increment(1);
}

/// Records an extra attempt (`retry` or `hedge`) a budget did not start, and why.
pub(crate) fn suppressed(source: &str, attempt: &'static str, reason: &'static str) {
    counter!(SOURCE_SUPPRESSED, "source" => source.to_owned(), "attempt" => attempt, "reason" => reason).increment(1);
}

/// Records a failed read or write of the Redis tier of namespace `namespace`.
#[cfg(feature = "redis")]
pub(crate) fn redis_failure(namespace: &str, operation: &'static str) {
    counter!(CACHE_REDIS_FAILURES, "namespace" => namespace.to_owned(), "operation" => operation).increment(1);
}

/// Records one aggregation's metrics from its report and, if it failed, its error.
pub(crate) fn record(report: &Report, error: Option<&GroupError>) {
    let failed = error.and_then(GroupError::source_name);
    // What the report says of the source that failed the aggregation.
    let failed_source = failed.and_then(|name| report.source(name));
    let cause = match &report.trigger {
        Some(Trigger::Source(_)) => "sibling",
        Some(Trigger::Deadline) => "deadline",
        Some(Trigger::Cancelled) => "caller",
        // A source still running when the aggregation succeeded (none does with the
        // all-required completion).
        _ => "completed",
    };
    for source in &report.sources {
        let outcome = source.outcome.as_str();
        // The kind the report recorded (the one the error, the log event and the HTTP body
        // say), for a source that failed or whose fallback stands in; else the outcome.
        let kind = source.kind.map_or(outcome, ErrorKind::as_str);
        counter!(SOURCE_OUTCOMES, "source" => source.name.clone(), "outcome" => outcome, "kind" => kind).increment(1);
        if matches!(source.outcome, Outcome::Cancelled { .. } | Outcome::TimedOut { timeout: TimeoutKind::Global }) {
            counter!(SOURCE_CANCELLATIONS, "source" => source.name.clone(), "cause" => cause).increment(1);
        }
        if source.start.is_some() {
            counter!(SOURCE_CALLS, "source" => source.name.clone()).increment(1);
            counter!(SOURCE_ATTEMPTS, "source" => source.name.clone()).increment(u64::from(source.attempts));
            counter!(SOURCE_HEDGES, "source" => source.name.clone()).increment(u64::from(source.hedges));
            histogram!(SOURCE_DURATION, "source" => source.name.clone(), "outcome" => outcome)
                .record(source.duration.as_secs_f64());
        }
        if source.start.is_some() || !source.queued.is_zero() {
            histogram!(SOURCE_QUEUED, "source" => source.name.clone()).record(source.queued.as_secs_f64());
        }
    }
    let outcome = match error {
        None => "ok",
        // The group's kind, but `timeout` when the failed source's own timeout failed it.
        Some(error) => match error.kind() {
            ErrorKind::Failed
                if failed_source.map(|source| &source.outcome)
                    == Some(&Outcome::TimedOut { timeout: TimeoutKind::Source }) =>
            {
                "timeout"
            }
            kind => kind.as_str(),
        },
    };
    counter!(AGGREGATIONS, "outcome" => outcome).increment(1);
    histogram!(AGGREGATION_DURATION, "outcome" => outcome).record(report.elapsed.as_secs_f64());
}

/// Records an aggregation whose caller stopped waiting (dropped it) after `elapsed`: outcome
/// `cancelled`; its sources, which have no report, are not recorded.
pub(crate) fn caller_gone(elapsed: std::time::Duration) {
    counter!(AGGREGATIONS, "outcome" => "cancelled").increment(1);
    histogram!(AGGREGATION_DURATION, "outcome" => "cancelled").record(elapsed.as_secs_f64());
}
