//! I6: per shard at most `max_in_flight_batches` unacknowledged batches, however slow the
//! handler; an iterator held while the handler lags is refreshed before it can expire.

use std::time::Duration;

use dynamodb_stream::error::SourceErrorKind;
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::Consumer;

use crate::common::{check_deliveries, periodic_check, Counting, Log, Written};

#[tokio::test(start_paused = true)]
async fn a_slow_handler_bounds_reads_and_keeps_iterators_fresh() {
    let sim = Simulator::builder()
        .initial_shards(1)
        .records_page_limit(10)
        .seed(11)
        .build();
    let mut written = Written::default();
    for i in 0..100 {
        written.put(&sim, &format!("k{i}"));
    }
    let log = Log::new();
    // Each batch takes 20 minutes: longer than an iterator lives.
    *log.delay.lock().unwrap() = Duration::from_secs(20 * 60);
    let source = Counting::new(sim.clone());
    let l = log.clone();
    let consumer = Consumer::builder(source.clone(), sim.stream_arn())
        .handler_factory(move |s| l.handler(s))
        .configure(|c| {
            c.max_in_flight_batches = 2;
            c.max_records_per_call = 10;
            c.handler_timeout = Duration::from_secs(3600);
        })
        .spawn()
        .await
        .expect("spawn");
    tokio::time::sleep(Duration::from_secs(10 * 60)).await;
    assert_eq!(log.len(), 0);
    assert_eq!(
        sim.stats().get_records_calls,
        2,
        "with 2 batches in flight the worker must stop reading"
    );
    periodic_check(
        || log.len() == 100,
        Duration::from_secs(6 * 3600),
        "all records",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    check_deliveries(&written, &log.snapshot(), true);
    // Every read after a 20-minute handler call replaced the aged iterator first (9 of them),
    // so no GetRecords ever met an expired iterator.
    assert_eq!(source.count(SourceErrorKind::ExpiredIterator), 0);
    assert!(
        sim.stats().get_shard_iterator_calls >= 9,
        "aging iterators must have been replaced: {:?}",
        sim.stats()
    );
}
