//! I2: no record of a child shard is handed out before every record of its parent was
//! acknowledged and the parent's end checkpointed — across splits, rollovers, late children and
//! stale DescribeStream answers, under load.

use std::collections::HashMap;
use std::time::Duration;

use dynamodb_stream::checkpoint::{MemoryCheckpointStore, ShardCheckpoint, StreamKey};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::ConsumerEvent;

use crate::common::{check_deliveries, periodic_check, start, Log, Written};

async fn split_and_roll_under_load(sim: Simulator) {
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let (consumer, events) = start(&sim, &log, &store, |_| {}).await;
    let mut written = Written::default();
    for round in 0..40u64 {
        for i in 0..25 {
            written.put(&sim, &format!("k{}", (round * 7 + i) % 90));
        }
        let open = sim.open_shards();
        let pick = &open[(round as usize * 31) % open.len()];
        if round % 3 == 0 && open.len() < 12 {
            sim.split_shard(pick).expect("split");
        } else if round % 3 == 1 {
            sim.rollover_shard(pick).expect("rollover");
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    periodic_check(
        || log.len() as u64 >= written.total(),
        Duration::from_secs(600),
        "all records",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");

    let deliveries = log.snapshot();
    check_deliveries(&written, &deliveries, true);

    let parents: HashMap<String, Option<String>> = sim
        .shards()
        .into_iter()
        .map(|s| (s.shard_id, s.parent_shard_id))
        .collect();
    let ended: HashMap<String, usize> = log.ended.lock().unwrap().iter().cloned().collect();
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, d) in deliveries.iter().enumerate() {
        first.entry(&d.shard_id).or_insert(i);
        last.insert(&d.shard_id, i);
    }
    let mut checked = 0;
    for (child, start_at) in &first {
        let Some(Some(parent)) = parents.get(*child) else {
            continue;
        };
        if let Some(parent_last) = last.get(parent.as_str()) {
            assert!(
                parent_last < start_at,
                "child {child} delivered before its parent {parent} finished"
            );
        }
        let parent_end = ended
            .get(parent)
            .unwrap_or_else(|| panic!("parent {parent} of {child} never ended"));
        assert!(
            *parent_end <= *start_at,
            "child {child} started before on_shard_end of {parent}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} child shards carried records");
    let key = StreamKey {
        application: "default".into(),
        stream_arn: sim.stream_arn(),
    };
    let stored = store.snapshot(&key).expect("stored");
    for s in sim
        .shards()
        .iter()
        .filter(|s| s.ending_sequence_number.is_some())
    {
        assert_eq!(
            stored.shards.get(&s.shard_id),
            Some(&ShardCheckpoint::Ended),
            "closed shard {} ended",
            s.shard_id
        );
    }
    assert!(events.count(|e| matches!(e, ConsumerEvent::ShardEnded { .. })) >= 20);
}

#[tokio::test(start_paused = true)]
async fn splits_and_rollovers_under_load() {
    split_and_roll_under_load(Simulator::builder().initial_shards(3).seed(2).build()).await;
}

#[tokio::test(start_paused = true)]
async fn late_children_and_stale_listings() {
    let sim = Simulator::builder()
        .initial_shards(2)
        .seed(3)
        .child_visibility_delay(Duration::from_secs(20))
        .stale_describe_probability(0.5)
        .build();
    split_and_roll_under_load(sim).await;
}
