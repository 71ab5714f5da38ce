//! D5: filters. `filter_kinds([Remove, TtlRemove])` plus a predicate: the handler sees only
//! matching records (TTL deletions from `Simulator::ttl_delete` recognised as
//! `Remove { ttl: true }`), and filtered records count as processed — the stored checkpoint
//! reaches each shard's last record even when its last records (and whole pages) were filtered
//! out, so a restarted consumer has nothing left to do.

use std::time::Duration;

use dynamodb_stream::checkpoint::{MemoryCheckpointStore, ShardCheckpoint};
use dynamodb_stream::delivery::KindFilter;
use dynamodb_stream::record::AttributeValue;
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{RecordKind, SequenceNumber, StreamRecord};

use crate::common::{
    item, keys, last_sequence_number, periodic_check, start_with, stored_checkpoint, Log,
};

fn wanted(r: &StreamRecord) -> bool {
    matches!(r.kind(), RecordKind::Remove { .. })
        && matches!(r.keys().get("pk"), Some(AttributeValue::S(k)) if k.starts_with("keep"))
}

fn filtered(b: dynamodb_stream::ConsumerBuilder) -> dynamodb_stream::ConsumerBuilder {
    b.filter_kinds([KindFilter::Remove, KindFilter::TtlRemove])
        .filter(
            |r| matches!(r.keys().get("pk"), Some(AttributeValue::S(k)) if k.starts_with("keep")),
        )
}

#[tokio::test(start_paused = true)]
async fn only_matching_records_reach_the_handler_and_the_rest_is_checkpointed() {
    let sim = Simulator::builder()
        .initial_shards(2)
        .records_page_limit(5)
        .seed(106)
        .build();
    for i in 0..20 {
        sim.put_item(item(&format!("keep-{i}"), 1)).expect("put");
        sim.put_item(item(&format!("drop-{i}"), 1)).expect("put");
    }
    for i in 0..20 {
        sim.put_item(item(&format!("keep-{i}"), 2)).expect("modify");
    }
    for i in 0..20 {
        let (k, d) = (format!("keep-{i}"), format!("drop-{i}"));
        match i % 3 {
            0 => {
                sim.delete_item(&keys(&k)).expect("delete");
                sim.ttl_delete(&keys(&d)).expect("ttl delete");
            }
            1 => {
                sim.ttl_delete(&keys(&k)).expect("ttl delete");
                sim.delete_item(&keys(&d)).expect("delete");
            }
            _ => {}
        }
    }
    // The shards end with records nobody wants: inserts, and removals of `drop` items.
    for i in 20..40 {
        sim.put_item(item(&format!("keep-{i}"), 1)).expect("put");
    }
    for i in 20..30 {
        sim.put_item(item(&format!("drop-{i}"), 1)).expect("put");
        sim.ttl_delete(&keys(&format!("drop-{i}")))
            .expect("ttl delete");
    }
    let expected: Vec<(String, SequenceNumber, RecordKind)> = sim
        .written_records()
        .into_iter()
        .filter(|w| wanted(&w.record))
        .map(|w| {
            (
                w.shard_id,
                w.record.sequence_number().clone(),
                w.record.kind().clone(),
            )
        })
        .collect();
    let ttl = expected
        .iter()
        .filter(|e| e.2 == RecordKind::Remove { ttl: true })
        .count();
    assert!(
        ttl >= 6 && ttl < expected.len(),
        "{ttl} of {}",
        expected.len()
    );

    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let (consumer, _events) = start_with(&sim, &log, &store, filtered).await;
    for shard in sim.open_shards() {
        let last = last_sequence_number(&sim, &shard);
        periodic_check(
            || {
                stored_checkpoint(&store, &sim, &shard)
                    == Some(ShardCheckpoint::Processed {
                        sequence_number: last.clone(),
                    })
            },
            Duration::from_secs(120),
            "each shard is checkpointed to its last (filtered) record",
        )
        .await;
    }
    consumer.shutdown().await.expect("shutdown");

    let mut seen: Vec<(String, SequenceNumber, RecordKind)> = log
        .calls()
        .into_iter()
        .flat_map(|c| {
            let shard = c.shard_id.clone();
            c.records
                .into_iter()
                .map(move |r| (shard.clone(), r.sequence_number, r.kind))
        })
        .collect();
    seen.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(seen, expected, "exactly the matching records, once each");
    assert!(log
        .calls()
        .iter()
        .all(|c| c.ok && c.records.iter().all(|r| r.key.starts_with("pk=\"keep"))));

    // A restarted consumer finds nothing left: the filtered records were processed.
    let log2 = Log::new();
    let (consumer, _events) = start_with(&sim, &log2, &store, filtered).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    consumer.shutdown().await.expect("shutdown");
    assert!(log2.calls().is_empty(), "{:#?}", log2.calls());
}

#[tokio::test(start_paused = true)]
async fn a_shard_whose_records_are_all_filtered_still_moves() {
    let sim = Simulator::builder()
        .initial_shards(1)
        .records_page_limit(3)
        .seed(107)
        .build();
    let shard = sim.open_shards()[0].clone();
    for i in 0..10 {
        sim.put_item(item(&format!("keep-{i}"), 1)).expect("put");
    }
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let (consumer, _events) = start_with(&sim, &log, &store, filtered).await;
    let last = last_sequence_number(&sim, &shard);
    periodic_check(
        || {
            stored_checkpoint(&store, &sim, &shard)
                == Some(ShardCheckpoint::Processed {
                    sequence_number: last.clone(),
                })
        },
        Duration::from_secs(60),
        "the checkpoint passes records nobody wants",
    )
    .await;
    // Then a wanted TTL removal arrives.
    sim.ttl_delete(&keys("keep-4")).expect("ttl delete");
    periodic_check(
        || !log.calls().is_empty(),
        Duration::from_secs(60),
        "the TTL removal",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    let calls = log.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].records.len(), 1);
    assert_eq!(calls[0].records[0].kind, RecordKind::Remove { ttl: true });
    assert_eq!(calls[0].records[0].key, crate::common::key_string("keep-4"));
    assert_eq!(
        stored_checkpoint(&store, &sim, &shard),
        Some(ShardCheckpoint::Processed {
            sequence_number: last_sequence_number(&sim, &shard)
        })
    );
}
