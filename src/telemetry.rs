//! Metric names and instruments (OpenTelemetry API), and the tracing span names.
//!
//! The consumer records into the `Meter` given to
//! [`ConsumerBuilder::meter`](crate::ConsumerBuilder::meter), or the global meter provider's
//! `dynamodb-stream` meter (a no-op until the application installs a provider). Exporters (OTLP,
//! Prometheus) are the application's choice. `docs/operations.md` says what to alert on.
//!
//! Spans (tracing): `discover`, `poll`, `handle`, `checkpoint`, with `stream`, `shard` and
//! `sequence_number` fields. Item contents and credentials are never logged.

use std::sync::Arc;

use opentelemetry::metrics::{Counter, Histogram, Meter};
use opentelemetry::KeyValue;

use crate::status::{ShardState, StatusBoard};

/// Metric names, stable across releases.
pub mod names {
    /// Records acknowledged by handlers (counter).
    pub const RECORDS: &str = "ddbstream.records";
    /// Bytes of acknowledged records, as DynamoDB counts them (counter).
    pub const BYTES: &str = "ddbstream.bytes";
    /// Handler calls that succeeded (counter).
    pub const BATCHES: &str = "ddbstream.batches";
    /// Handler call duration in seconds (histogram), attribute `outcome`.
    pub const HANDLER_DURATION: &str = "ddbstream.handler.duration";
    /// GetRecords duration in seconds (histogram).
    pub const GET_RECORDS_DURATION: &str = "ddbstream.get_records.duration";
    /// Stream API errors (counter), attributes `operation` and `class`.
    pub const SOURCE_ERRORS: &str = "ddbstream.source.errors";
    /// Throttled stream API calls (counter), attribute `operation`.
    pub const THROTTLES: &str = "ddbstream.throttles";
    /// Shard iterators replaced (counter), attribute `reason` (`age` or `expired`).
    pub const ITERATOR_REFRESHES: &str = "ddbstream.iterator.refreshes";
    /// Shard worker restarts (counter).
    pub const RESTARTS: &str = "ddbstream.worker.restarts";
    /// Gaps reported: records lost before they could be read (counter), attribute `kind`.
    pub const GAPS: &str = "ddbstream.gaps";
    /// Leases this worker lost to another worker or to expiry (counter).
    pub const LEASES_LOST: &str = "ddbstream.leases.lost";
    /// Leases this worker took (counter), attribute `how`: `free` (free or expired), `stolen`
    /// (from a live owner), `handed_over` (adopted after a handoff it asked for).
    pub const LEASES_TAKEN: &str = "ddbstream.leases.taken";
    /// Leases this worker handed over to a worker that asked for them (counter).
    pub const LEASES_HANDED_OVER: &str = "ddbstream.leases.handed_over";
    /// Gauge (lease mode): workers holding a live lease on the stream in the last lease
    /// listing, this one included — a sudden drop is a crashed or partitioned peer.
    pub const WORKERS: &str = "ddbstream.leases.workers";
    /// Records read from the stream (counter): what Lambda's event source mapping calls polled.
    pub const RECORDS_POLLED: &str = "ddbstream.records.polled";
    /// Records dropped by the filters before the handler (counter; they are acknowledged).
    pub const RECORDS_FILTERED: &str = "ddbstream.records.filtered";
    /// Records handed to the failure sink after the retry policy gave up on them (counter).
    pub const RECORDS_TO_FAILURE_SINK: &str = "ddbstream.records.failure_sink";
    /// Handler calls that did not succeed (counter), attribute `outcome`: `error`, `panic` or
    /// `timeout`.
    pub const HANDLER_FAILURES: &str = "ddbstream.handler.failures";
    /// Checkpoint write duration in seconds (histogram).
    pub const CHECKPOINT_DURATION: &str = "ddbstream.checkpoint.duration";
    /// Shards being read by this consumer (gauge).
    pub const SHARDS_OWNED: &str = "ddbstream.shards.owned";
    /// Quarantined shards (gauge).
    pub const SHARDS_QUARANTINED: &str = "ddbstream.shards.quarantined";
    /// Pages handed to handlers and not yet acknowledged (gauge).
    pub const IN_FLIGHT: &str = "ddbstream.batches.in_flight";
    /// Per shard (attribute `shard`): milliseconds behind the stream, 0 when caught up (gauge).
    pub const SHARD_LAG: &str = "ddbstream.shard.lag";
    /// Per shard (attribute `shard`): 1 when an empty poll of the open shard found nothing to
    /// read and nothing is in flight, else 0 (gauge).
    pub const SHARD_CAUGHT_UP: &str = "ddbstream.shard.caught_up";
    /// 1 when the watchdog sees no problem, else 0 (gauge).
    pub const HEALTHY: &str = "ddbstream.healthy";
}

/// Bucket bounds of the duration histograms, in seconds: from a fast local call (1 ms) to the
/// SDK's 30 s operation timeout. (The SDK's default bounds, 0 to 10,000, suit milliseconds: in
/// seconds every call would fall in the first bucket.)
const SECONDS_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The instruments one consumer records into.
#[derive(Clone)]
pub(crate) struct Metrics {
    pub(crate) records: Counter<u64>,
    pub(crate) bytes: Counter<u64>,
    pub(crate) batches: Counter<u64>,
    pub(crate) handler_duration: Histogram<f64>,
    pub(crate) get_records_duration: Histogram<f64>,
    pub(crate) source_errors: Counter<u64>,
    pub(crate) throttles: Counter<u64>,
    pub(crate) iterator_refreshes: Counter<u64>,
    pub(crate) restarts: Counter<u64>,
    pub(crate) gaps: Counter<u64>,
    pub(crate) leases_lost: Counter<u64>,
    pub(crate) leases_taken: Counter<u64>,
    pub(crate) leases_handed_over: Counter<u64>,
    pub(crate) records_polled: Counter<u64>,
    pub(crate) records_filtered: Counter<u64>,
    pub(crate) records_to_failure_sink: Counter<u64>,
    pub(crate) handler_failures: Counter<u64>,
    pub(crate) checkpoint_duration: Histogram<f64>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Create the instruments, and gauges that read `board` when collected.
    pub(crate) fn new(meter: &Meter, board: Arc<StatusBoard>) -> Self {
        let gauge_board = board.clone();
        meter
            .i64_observable_gauge(names::SHARDS_OWNED)
            .with_description("shards being read")
            .with_callback(move |o| {
                let n = gauge_board.with_all(|all| {
                    all.values()
                        .filter(|e| matches!(e.state, ShardState::Reading | ShardState::CaughtUp))
                        .count()
                });
                o.observe(n as i64, &[]);
            })
            .build();
        let gauge_board = board.clone();
        meter
            .i64_observable_gauge(names::SHARDS_QUARANTINED)
            .with_callback(move |o| {
                let n = gauge_board.with_all(|all| {
                    all.values()
                        .filter(|e| e.state == ShardState::Quarantined)
                        .count()
                });
                o.observe(n as i64, &[]);
            })
            .build();
        let gauge_board = board.clone();
        meter
            .i64_observable_gauge(names::IN_FLIGHT)
            .with_callback(move |o| {
                let n: usize =
                    gauge_board.with_all(|all| all.values().map(|e| e.unacked_pages.len()).sum());
                o.observe(n as i64, &[]);
            })
            .build();
        let gauge_board = board.clone();
        meter
            .u64_observable_gauge(names::SHARD_LAG)
            .with_unit("ms")
            .with_description("how far behind the stream a shard's handler is; refreshed every watchdog_interval and on every poll")
            .with_callback(move |o| {
                gauge_board.with_all(|all| {
                    for (id, e) in all {
                        if matches!(e.state, ShardState::Reading | ShardState::CaughtUp) {
                            if let Some(lag) = e.lag_cached {
                                o.observe(lag.as_millis() as u64, &[KeyValue::new("shard", id.clone())]);
                            }
                        }
                    }
                });
            })
            .build();
        let gauge_board = board.clone();
        meter
            .u64_observable_gauge(names::SHARD_CAUGHT_UP)
            .with_callback(move |o| {
                gauge_board.with_all(|all| {
                    for (id, e) in all {
                        if matches!(e.state, ShardState::Reading | ShardState::CaughtUp) {
                            let up = e.caught_up && e.unacked_pages.is_empty();
                            o.observe(u64::from(up), &[KeyValue::new("shard", id.clone())]);
                        }
                    }
                });
            })
            .build();
        let gauge_board = board.clone();
        meter
            .u64_observable_gauge(names::WORKERS)
            .with_description("workers holding a live lease on the stream, this one included")
            .with_callback(move |o| {
                if let Some(n) = gauge_board.read_meta(|m| m.workers_seen) {
                    o.observe(n as u64, &[]);
                }
            })
            .build();
        let gauge_board = board;
        meter
            .u64_observable_gauge(names::HEALTHY)
            .with_callback(move |o| o.observe(u64::from(gauge_board.health().is_healthy()), &[]))
            .build();
        Self {
            records: meter.u64_counter(names::RECORDS).build(),
            bytes: meter.u64_counter(names::BYTES).with_unit("By").build(),
            batches: meter.u64_counter(names::BATCHES).build(),
            handler_duration: meter
                .f64_histogram(names::HANDLER_DURATION)
                .with_unit("s")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build(),
            get_records_duration: meter
                .f64_histogram(names::GET_RECORDS_DURATION)
                .with_unit("s")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build(),
            source_errors: meter.u64_counter(names::SOURCE_ERRORS).build(),
            throttles: meter.u64_counter(names::THROTTLES).build(),
            iterator_refreshes: meter.u64_counter(names::ITERATOR_REFRESHES).build(),
            restarts: meter.u64_counter(names::RESTARTS).build(),
            gaps: meter.u64_counter(names::GAPS).build(),
            leases_lost: meter.u64_counter(names::LEASES_LOST).build(),
            leases_taken: meter.u64_counter(names::LEASES_TAKEN).build(),
            leases_handed_over: meter.u64_counter(names::LEASES_HANDED_OVER).build(),
            records_polled: meter.u64_counter(names::RECORDS_POLLED).build(),
            records_filtered: meter.u64_counter(names::RECORDS_FILTERED).build(),
            records_to_failure_sink: meter.u64_counter(names::RECORDS_TO_FAILURE_SINK).build(),
            handler_failures: meter.u64_counter(names::HANDLER_FAILURES).build(),
            checkpoint_duration: meter
                .f64_histogram(names::CHECKPOINT_DURATION)
                .with_unit("s")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build(),
        }
    }

    pub(crate) fn source_error(
        &self,
        operation: &'static str,
        kind: crate::error::SourceErrorKind,
    ) {
        let class = format!("{kind:?}");
        self.source_errors.add(
            1,
            &[
                KeyValue::new("operation", operation),
                KeyValue::new("class", class),
            ],
        );
        if kind == crate::error::SourceErrorKind::Throttled {
            self.throttles
                .add(1, &[KeyValue::new("operation", operation)]);
        }
    }
}
