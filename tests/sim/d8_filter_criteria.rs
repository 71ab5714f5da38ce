//! D8: Lambda-style filter criteria. Only records matching one of the patterns reach the
//! handler, in sequence order per shard; the records filtered out are counted in
//! `records.filtered` and count as processed — each shard's checkpoint reaches its last record
//! although the last records (whole pages of them) were filtered out, so a restarted consumer
//! re-delivers nothing. The expected records are chosen by a plain Rust predicate, not by the
//! filter code.

use std::collections::HashMap;
use std::time::Duration;

use dynamodb_stream::checkpoint::MemoryCheckpointStore;
use dynamodb_stream::delivery::KindFilter;
use dynamodb_stream::filter::FilterCriteria;
use dynamodb_stream::record::{AttributeValue, Item};
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::telemetry::names;
use dynamodb_stream::{ConsumerBuilder, RecordKind, SequenceNumber, StreamRecord};

use crate::common::{keys, start_with, until_checkpointed_to_last, Log};
use crate::o1_metrics::Reader;

/// Shipped orders over 100, and removals of `vip` orders.
const PATTERNS: [&str; 2] = [
    r#"{"dynamodb": {"NewImage": {"status": {"S": ["SHIPPED"]}, "total": {"N": [{"numeric": [">", 100]}]}}}}"#,
    r#"{"eventName": ["REMOVE"], "dynamodb": {"Keys": {"pk": {"S": [{"prefix": "vip-"}]}}}}"#,
];

/// The same choice, written out by hand.
fn wanted(r: &StreamRecord) -> bool {
    let s = |item: Option<&Item>, name: &str| match item.and_then(|i| i.get(name)) {
        Some(AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    };
    let total = match r.new_image().and_then(|i| i.get("total")) {
        Some(AttributeValue::N(n)) => n.parse::<f64>().ok(),
        _ => None,
    };
    let shipped = s(r.new_image(), "status").as_deref() == Some("SHIPPED")
        && total.is_some_and(|t| t > 100.0);
    let vip_removed = matches!(r.kind(), RecordKind::Remove { .. })
        && s(Some(r.keys()), "pk").is_some_and(|k| k.starts_with("vip-"));
    shipped || vip_removed
}

fn order(key: &str, status: &str, total: u32) -> Item {
    let mut m = HashMap::new();
    m.insert("pk".to_string(), AttributeValue::S(key.to_string()));
    m.insert("status".to_string(), AttributeValue::S(status.to_string()));
    m.insert("total".to_string(), AttributeValue::N(total.to_string()));
    Item::from(m)
}

fn with_criteria(b: ConsumerBuilder) -> ConsumerBuilder {
    b.filter_criteria(FilterCriteria::from_patterns(PATTERNS).expect("valid patterns"))
}

#[tokio::test(start_paused = true)]
async fn only_matching_records_are_delivered_in_order_and_the_rest_is_checkpointed() {
    let sim = Simulator::builder()
        .initial_shards(2)
        .records_page_limit(4)
        .seed(108)
        .build();
    for i in 0..30u32 {
        let key = if i % 4 == 0 {
            format!("vip-{i}")
        } else {
            format!("o-{i}")
        };
        sim.put_item(order(&key, "PENDING", 50 + i * 5))
            .expect("put");
        if i % 2 == 0 {
            sim.put_item(order(&key, "SHIPPED", 50 + i * 5))
                .expect("ship");
        }
        if i % 3 == 0 {
            sim.delete_item(&keys(&key)).expect("delete");
        }
    }
    // Every shard ends with records nobody wants: pending orders, more than a page of them.
    for i in 30..50u32 {
        sim.put_item(order(&format!("o-{i}"), "PENDING", 500))
            .expect("put");
    }
    let written = sim.written_records();
    let expected: Vec<(String, SequenceNumber)> = written
        .iter()
        .filter(|w| wanted(&w.record))
        .map(|w| (w.shard_id.clone(), w.record.sequence_number().clone()))
        .collect();
    let filtered_out = written.len() - expected.len();
    assert!(
        expected.len() >= 10 && filtered_out >= 40,
        "{} wanted, {filtered_out} not",
        expected.len()
    );

    let reader = Reader::new();
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let meter = reader.meter();
    let (consumer, _events) =
        start_with(&sim, &log, &store, |b| with_criteria(b).meter(meter)).await;
    for shard in sim.open_shards() {
        until_checkpointed_to_last(
            &store,
            &sim,
            &shard,
            Duration::from_secs(120),
            "each shard is checkpointed to its last (filtered) record",
        )
        .await;
    }
    assert_eq!(
        reader.total(names::RECORDS_FILTERED, None),
        filtered_out as f64
    );
    consumer.shutdown().await.expect("shutdown");

    // Delivered: exactly the wanted records, once each, in sequence order within each shard.
    let calls = log.calls();
    assert!(calls.iter().all(|c| c.ok));
    let delivered: Vec<(String, SequenceNumber)> = calls
        .iter()
        .flat_map(|c| {
            c.records
                .iter()
                .map(|r| (c.shard_id.clone(), r.sequence_number.clone()))
        })
        .collect();
    for shard in sim.open_shards() {
        let of = |list: &[(String, SequenceNumber)]| -> Vec<SequenceNumber> {
            list.iter()
                .filter(|(s, _)| *s == shard)
                .map(|(_, q)| q.clone())
                .collect()
        };
        assert_eq!(of(&delivered), of(&expected), "shard {shard}, in order");
    }
    assert_eq!(delivered.len(), expected.len());

    // A restarted consumer finds nothing left: the filtered records were processed.
    let log2 = Log::new();
    let (consumer, _events) = start_with(&sim, &log2, &store, with_criteria).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    consumer.shutdown().await.expect("shutdown");
    assert!(log2.calls().is_empty(), "{:#?}", log2.calls());
}

#[tokio::test(start_paused = true)]
async fn criteria_are_anded_with_the_kind_and_closure_filters() {
    let sim = Simulator::builder()
        .initial_shards(1)
        .records_page_limit(3)
        .seed(109)
        .build();
    let shard = sim.open_shards()[0].clone();
    for i in 0..12u32 {
        let key = format!("vip-{i}");
        sim.put_item(order(&key, "SHIPPED", 500)).expect("put");
        sim.delete_item(&keys(&key)).expect("delete");
    }
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    // Criteria: shipped orders over 100 (the inserts) or vip removals (the deletions); the kind
    // filter keeps only inserts; the closure keeps even-numbered keys.
    let (consumer, _events) = start_with(&sim, &log, &store, |b| {
        with_criteria(b)
            .filter_kinds([KindFilter::Insert])
            .filter(|r| {
                matches!(r.keys().get("pk"), Some(AttributeValue::S(k))
                    if k.trim_start_matches("vip-").parse::<u32>().is_ok_and(|n| n % 2 == 0))
            })
    })
    .await;
    until_checkpointed_to_last(
        &store,
        &sim,
        &shard,
        Duration::from_secs(60),
        "the checkpoint reaches the last record",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    let mut seen: Vec<(String, RecordKind)> = log
        .calls()
        .into_iter()
        .flat_map(|c| c.records.into_iter().map(|r| (r.key, r.kind)))
        .collect();
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want: Vec<(String, RecordKind)> = (0..12)
        .filter(|i| i % 2 == 0)
        .map(|i| {
            (
                crate::common::key_string(&format!("vip-{i}")),
                RecordKind::Insert,
            )
        })
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen, want);
}
