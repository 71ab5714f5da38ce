//! Metrics through OpenTelemetry, read back with the SDK's in-memory exporter after scripted
//! simulator runs: lag rises while the handler is blocked and returns to zero once caught up
//! (and stays reported on empty polls); throttle and restart counters match injected faults.

use std::sync::Arc;
use std::time::Duration;

use dynamodb_stream::sim::{FaultKind, FaultRule, Operation, Simulator};
use dynamodb_stream::telemetry::names;
use dynamodb_stream::{Batch, Consumer, HandlerError};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, SdkMeterProvider};

use crate::common::{periodic_check, Log};

/// Metrics read back through the SDK's in-memory exporter (d8 reads the filter counter too).
pub(crate) struct Reader {
    provider: SdkMeterProvider,
    exporter: InMemoryMetricExporter,
}

impl Reader {
    pub(crate) fn new() -> Self {
        let exporter = InMemoryMetricExporter::default();
        let provider = SdkMeterProvider::builder()
            .with_periodic_exporter(exporter.clone())
            .build();
        Self { provider, exporter }
    }

    pub(crate) fn meter(&self) -> opentelemetry::metrics::Meter {
        self.provider.meter("test")
    }

    /// Every data point of `name` as (attributes, value), from a fresh collection.
    fn read(&self, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
        self.exporter.reset();
        self.provider.force_flush().expect("flush");
        let exported = self.exporter.get_finished_metrics().expect("metrics");
        let mut out = Vec::new();
        for rm in exported.iter().rev().take(1) {
            for sm in rm.scope_metrics() {
                for m in sm.metrics().filter(|m| m.name() == name) {
                    collect(m.data(), &mut out);
                }
            }
        }
        out
    }

    pub(crate) fn total(&self, name: &str, attr: Option<(&str, &str)>) -> f64 {
        self.read(name)
            .into_iter()
            .filter(|(attrs, _)| {
                attr.is_none_or(|(k, v)| attrs.iter().any(|(a, b)| a == k && b == v))
            })
            .map(|(_, v)| v)
            .sum()
    }
}

fn attrs<'a>(it: impl Iterator<Item = &'a opentelemetry::KeyValue>) -> Vec<(String, String)> {
    it.map(|kv| (kv.key.to_string(), kv.value.to_string()))
        .collect()
}

fn collect(data: &AggregatedMetrics, out: &mut Vec<(Vec<(String, String)>, f64)>) {
    fn points<T: Copy + Into<f64>>(d: &MetricData<T>, out: &mut Vec<(Vec<(String, String)>, f64)>) {
        match d {
            MetricData::Gauge(g) => out.extend(
                g.data_points()
                    .map(|p| (attrs(p.attributes()), p.value().into())),
            ),
            MetricData::Sum(s) => out.extend(
                s.data_points()
                    .map(|p| (attrs(p.attributes()), p.value().into())),
            ),
            MetricData::Histogram(h) => out.extend(
                h.data_points()
                    .map(|p| (attrs(p.attributes()), p.count() as f64)),
            ),
            _ => {}
        }
    }
    match data {
        AggregatedMetrics::F64(d) => points(d, out),
        AggregatedMetrics::U64(d) => match d {
            MetricData::Gauge(g) => out.extend(
                g.data_points()
                    .map(|p| (attrs(p.attributes()), p.value() as f64)),
            ),
            MetricData::Sum(s) => out.extend(
                s.data_points()
                    .map(|p| (attrs(p.attributes()), p.value() as f64)),
            ),
            MetricData::Histogram(h) => out.extend(
                h.data_points()
                    .map(|p| (attrs(p.attributes()), p.count() as f64)),
            ),
            _ => {}
        },
        AggregatedMetrics::I64(d) => match d {
            MetricData::Gauge(g) => out.extend(
                g.data_points()
                    .map(|p| (attrs(p.attributes()), p.value() as f64)),
            ),
            MetricData::Sum(s) => out.extend(
                s.data_points()
                    .map(|p| (attrs(p.attributes()), p.value() as f64)),
            ),
            _ => {}
        },
    }
}

#[tokio::test(start_paused = true)]
async fn lag_rises_while_blocked_and_returns_to_zero() {
    let sim = Simulator::builder().initial_shards(1).seed(21).build();
    let reader = Reader::new();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (g, s) = (gate.clone(), seen.clone());
    let consumer = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_fn(move |batch: Batch| {
            let (g, s) = (g.clone(), s.clone());
            async move {
                g.acquire().await.map_err(HandlerError::from)?.forget();
                s.fetch_add(batch.len(), std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
        })
        .meter(reader.meter())
        .configure(|c| {
            c.handler_timeout = Duration::from_secs(3600);
            // Lag gauges are refreshed by the watchdog tick (and every poll).
            c.watchdog_interval = Duration::from_secs(1);
        })
        .spawn()
        .await
        .expect("spawn");
    let shard = sim.open_shards()[0].clone();
    // Caught up on an empty stream: lag 0 and caught_up 1 — known, not missing.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(reader.total(names::SHARD_LAG, Some(("shard", &shard))), 0.0);
    assert_eq!(
        reader.total(names::SHARD_CAUGHT_UP, Some(("shard", &shard))),
        1.0
    );

    for i in 0..50 {
        sim.put_item(crate::common::item(&format!("k{i}"), 1))
            .expect("put");
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    let lag = reader.total(names::SHARD_LAG, Some(("shard", &shard)));
    assert!(lag >= 29_000.0, "lag while blocked: {lag} ms");
    assert_eq!(
        reader.total(names::SHARD_CAUGHT_UP, Some(("shard", &shard))),
        0.0
    );
    tokio::time::sleep(Duration::from_secs(30)).await;
    let later = reader.total(names::SHARD_LAG, Some(("shard", &shard)));
    assert!(
        later >= lag + 29_000.0,
        "lag keeps rising while blocked: {lag} then {later}"
    );
    assert!(reader.total(names::IN_FLIGHT, None) >= 1.0);

    gate.add_permits(1000);
    periodic_check(
        || seen.load(std::sync::atomic::Ordering::SeqCst) == 50,
        Duration::from_secs(60),
        "records",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        reader.total(names::SHARD_LAG, Some(("shard", &shard))),
        0.0,
        "caught up again"
    );
    assert_eq!(
        reader.total(names::SHARD_CAUGHT_UP, Some(("shard", &shard))),
        1.0
    );
    assert_eq!(reader.total(names::RECORDS, None), 50.0);
    assert!(reader.total(names::BATCHES, None) >= 1.0);
    assert!(reader.total(names::HANDLER_DURATION, None) >= 1.0);
    assert!(
        reader.total(names::GET_RECORDS_DURATION, None) > 10.0,
        "every poll is timed"
    );
    assert_eq!(reader.total(names::SHARDS_OWNED, None), 1.0);
    assert_eq!(reader.total(names::HEALTHY, None), 1.0);
    assert!(reader.total(names::CHECKPOINT_DURATION, None) >= 1.0);
    consumer.shutdown().await.expect("shutdown");
}

#[tokio::test(start_paused = true)]
async fn throttle_and_restart_counters_match_injected_faults() {
    let sim = Simulator::builder().initial_shards(1).seed(22).build();
    for i in 0..20 {
        sim.put_item(crate::common::item(&format!("k{i}"), 1))
            .expect("put");
    }
    sim.set_fault(
        Operation::GetRecords,
        FaultRule::next(5, FaultKind::Throttled),
    );
    sim.set_fault(
        Operation::GetShardIterator,
        FaultRule::next(2, FaultKind::Retryable),
    );
    let reader = Reader::new();
    let log = Log::new();
    *log.fail_batches.lock().unwrap() = vec![1, 2, 3];
    let l = log.clone();
    let consumer = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_factory(move |s| l.handler(s))
        .meter(reader.meter())
        .spawn()
        .await
        .expect("spawn");
    periodic_check(|| log.len() == 20, Duration::from_secs(120), "records").await;
    assert_eq!(sim.stats().faults_injected, 7);
    assert_eq!(
        reader.total(names::THROTTLES, Some(("operation", "GetRecords"))),
        5.0
    );
    assert_eq!(
        reader.total(names::SOURCE_ERRORS, Some(("class", "Throttled"))),
        5.0
    );
    assert_eq!(
        reader.total(
            names::SOURCE_ERRORS,
            Some(("operation", "GetShardIterator"))
        ),
        2.0
    );
    assert_eq!(reader.total(names::RESTARTS, None), 3.0);
    assert_eq!(log.failures(), 3);
    assert_eq!(
        reader.total(names::HANDLER_FAILURES, Some(("outcome", "error"))),
        3.0
    );
    // Every failed batch is read again: 20 records and the three repeats at least.
    assert!(reader.total(names::RECORDS_POLLED, None) >= 23.0);
    consumer.shutdown().await.expect("shutdown");
}

/// The counts a Lambda event source mapping user compares with: polled, filtered out, sent to
/// the failure sink; and lease takes and handoffs.
#[tokio::test(start_paused = true)]
async fn polled_filtered_and_failure_sink_counts() {
    use dynamodb_stream::delivery::{FailureSink, KindFilter, RetryPolicy};
    let sim = Simulator::builder().initial_shards(1).seed(23).build();
    for i in 0..10 {
        sim.put_item(crate::common::item(&format!("k{i}"), 1))
            .expect("put");
    }
    for i in 0..4 {
        sim.delete_item(&crate::common::keys(&format!("k{i}")))
            .expect("delete");
    }
    #[derive(Clone, Default)]
    struct Sink(std::sync::Arc<std::sync::Mutex<usize>>);
    impl FailureSink for Sink {
        fn send(
            &self,
            failure: dynamodb_stream::delivery::DeliveryFailure,
        ) -> dynamodb_stream::source::BoxFuture<'_, Result<(), dynamodb_stream::error::BoxError>>
        {
            *self.0.lock().unwrap() += failure.records.len();
            Box::pin(async { Ok(()) })
        }
    }
    let sink = Sink::default();
    let reader = Reader::new();
    let log = Log::new();
    log.poison_key("k5");
    let l = log.clone();
    let consumer = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_factory(move |s| l.handler(s))
        .filter_kinds([KindFilter::Insert])
        .retry(RetryPolicy {
            max_attempts: 2,
            bisect_on_error: true,
            ..RetryPolicy::default()
        })
        .failure_sink(sink.clone())
        .meter(reader.meter())
        .spawn()
        .await
        .expect("spawn");
    periodic_check(
        || *sink.0.lock().unwrap() == 1 && log.len() == 9,
        Duration::from_secs(120),
        "nine inserts handled, k5 in the sink",
    )
    .await;
    assert_eq!(reader.total(names::RECORDS_POLLED, None), 14.0);
    assert_eq!(reader.total(names::RECORDS_FILTERED, None), 4.0);
    assert_eq!(reader.total(names::RECORDS_TO_FAILURE_SINK, None), 1.0);
    assert!(reader.total(names::HANDLER_FAILURES, Some(("outcome", "error"))) >= 2.0);
    consumer.shutdown().await.expect("shutdown");
}

/// `ddbstream.leases.workers`: each worker sees the others through the lease table; a worker
/// that stops and releases its leases drops out of the count.
#[tokio::test(start_paused = true)]
async fn workers_seen_follow_the_lease_table() {
    use dynamodb_stream::lease::MemoryLeaseStore;
    let sim = Simulator::builder().initial_shards(4).seed(7).build();
    let leases = MemoryLeaseStore::new();
    let worker = |id: &str, reader: &Reader| {
        Consumer::builder(sim.clone(), sim.stream_arn())
            .handler_fn(|_b: Batch| async { Ok::<_, HandlerError>(()) })
            .leases(leases.clone(), id)
            .meter(reader.meter())
            .configure(|c| {
                c.lease.lease_duration = Duration::from_secs(6);
                c.lease.renew_interval = Duration::from_secs(2);
            })
            .spawn()
    };
    let (r1, r2) = (Reader::new(), Reader::new());
    let w1 = worker("w1", &r1).await.expect("spawn w1");
    periodic_check(
        || r1.total(names::WORKERS, None) == 1.0,
        Duration::from_secs(60),
        "w1 sees itself",
    )
    .await;
    let w2 = worker("w2", &r2).await.expect("spawn w2");
    periodic_check(
        || r1.total(names::WORKERS, None) == 2.0 && r2.total(names::WORKERS, None) == 2.0,
        Duration::from_secs(120),
        "both workers see two",
    )
    .await;
    w2.shutdown().await.expect("shutdown w2");
    periodic_check(
        || r1.total(names::WORKERS, None) == 1.0,
        Duration::from_secs(120),
        "w1 sees w2 gone",
    )
    .await;
    w1.shutdown().await.expect("shutdown w1");
}
