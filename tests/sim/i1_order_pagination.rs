//! I1: one shard's records arrive in strictly increasing sequence order; discovery follows
//! DescribeStream pages past 100 shards.

use std::time::Duration;

use dynamodb_stream::checkpoint::{MemoryCheckpointStore, ShardCheckpoint, StreamKey};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::Consumer;

use crate::common::{check_deliveries, periodic_check, Log, Written};

#[tokio::test(start_paused = true)]
async fn every_record_of_250_shards_in_order() {
    let sim = Simulator::builder().initial_shards(250).seed(1).build();
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let mut written = Written::default();
    for i in 0..3000 {
        written.put(&sim, &format!("k{}", i % 700));
    }
    let l = log.clone();
    let consumer = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_factory(move |s| l.handler(s))
        .checkpoints(store.clone())
        .spawn()
        .await
        .expect("spawn");
    periodic_check(
        || log.len() as u64 >= written.total(),
        Duration::from_secs(600),
        "all records",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");

    check_deliveries(&written, &log.snapshot(), true);
    let shards: std::collections::HashSet<_> =
        log.snapshot().iter().map(|d| d.shard_id.clone()).collect();
    assert!(
        shards.len() > 200,
        "records came from {} shards",
        shards.len()
    );
    assert!(
        sim.stats().describe_stream_calls >= 3,
        "250 shards need 3 DescribeStream pages"
    );

    // The final checkpoint of every shard is its last record.
    let key = StreamKey {
        application: "default".into(),
        stream_arn: sim.stream_arn(),
    };
    let stored = store.snapshot(&key).expect("checkpoints stored");
    for shard_id in &shards {
        let last = log
            .snapshot()
            .iter()
            .filter(|d| &d.shard_id == shard_id)
            .map(|d| d.sequence_number.clone())
            .max();
        assert_eq!(
            stored.shards.get(shard_id),
            Some(&ShardCheckpoint::Processed {
                sequence_number: last.expect("delivered")
            }),
            "checkpoint of {shard_id}"
        );
    }
}
