//! The simulator through its public API only, the way a user's test drives it: a minimal
//! consumer reads a stream that splits, rolls over, lags in DescribeStream, throttles and
//! expires iterators, and must still see every record once, in per-key order.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use dynamodb_stream::error::{SourceError, SourceErrorKind};
use dynamodb_stream::record::{AttributeValue, Item};
use dynamodb_stream::sim::{FaultKind, FaultRule, Operation, SimError, Simulator};
use dynamodb_stream::source::{DescribeStreamRequest, IteratorPosition, Shard, StreamsApi};
use dynamodb_stream::{SequenceNumber, StreamRecord};

fn item(pk: &str, v: u64) -> Item {
    let mut item = Item::default();
    item.insert("pk".into(), AttributeValue::S(pk.into()));
    item.insert("v".into(), AttributeValue::N(v.to_string()));
    item
}

fn retryable(e: &SourceError) -> bool {
    e.is_retryable()
}

/// Retries throttled and transient failures, with a pause between tries.
async fn describe_all(api: &dyn StreamsApi, arn: &str) -> Vec<Shard> {
    let mut request = DescribeStreamRequest {
        stream_arn: arn.to_owned(),
        ..Default::default()
    };
    let mut shards = Vec::new();
    loop {
        match api.describe_stream(request.clone()).await {
            Ok(page) => {
                shards.extend(page.shards);
                match page.last_evaluated_shard_id {
                    Some(last) => request.exclusive_start_shard_id = Some(last),
                    None => return shards,
                }
            }
            Err(e) if retryable(&e) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => panic!("describe: {e}"),
        }
    }
}

#[derive(Default)]
struct Consumer {
    finished: HashSet<String>,
    last: HashMap<String, SequenceNumber>,
    iterators: HashMap<String, String>,
    delivered: Vec<StreamRecord>,
}

impl Consumer {
    async fn fresh_iterator(&self, api: &dyn StreamsApi, arn: &str, shard: &str) -> String {
        let position = match self.last.get(shard) {
            Some(seq) => IteratorPosition::AfterSequenceNumber(seq.clone()),
            None => IteratorPosition::TrimHorizon,
        };
        loop {
            match api
                .get_shard_iterator(arn.to_owned(), shard.to_owned(), position.clone())
                .await
            {
                Ok(it) => return it,
                Err(e) if retryable(&e) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(e) => panic!("get_shard_iterator {shard}: {e}"),
            }
        }
    }

    /// One pass over the stream: every readable shard until it ends or has nothing new.
    async fn pass(&mut self, api: &dyn StreamsApi, arn: &str) {
        // Hidden children only appear as time passes.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let shards = describe_all(api, arn).await;
        let listed: HashSet<&str> = shards.iter().map(|s| s.shard_id.as_str()).collect();
        for shard in &shards {
            let id = &shard.shard_id;
            let parent_pending = shard
                .parent_shard_id
                .as_deref()
                .is_some_and(|p| listed.contains(p) && !self.finished.contains(p));
            if self.finished.contains(id) || parent_pending {
                continue;
            }
            loop {
                let it = match self.iterators.remove(id) {
                    Some(it) => it,
                    None => self.fresh_iterator(api, arn, id).await,
                };
                // Stay under 5 GetRecords calls per second per shard.
                tokio::time::sleep(Duration::from_millis(200)).await;
                let page = match api.get_records(it.clone(), Some(7)).await {
                    Ok(page) => page,
                    Err(e) if e.kind() == SourceErrorKind::ExpiredIterator => continue,
                    Err(e) if retryable(&e) => {
                        self.iterators.insert(id.clone(), it);
                        continue;
                    }
                    Err(e) => panic!("get_records {id}: {e}"),
                };
                let empty = page.records.is_empty();
                if let Some(last) = page.records.last() {
                    self.last.insert(id.clone(), last.sequence_number().clone());
                }
                self.delivered.extend(page.records);
                match page.next_shard_iterator {
                    None => {
                        self.finished.insert(id.clone());
                        break;
                    }
                    Some(next) => {
                        self.iterators.insert(id.clone(), next);
                        if empty {
                            break;
                        }
                    }
                }
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_simple_consumer_loses_nothing_across_splits_faults_and_expiry() {
    let sim = Simulator::builder()
        .initial_shards(3)
        .seed(11)
        .child_visibility_delay(Duration::from_secs(5))
        .stale_describe_probability(0.3)
        .build();
    sim.set_fault(
        Operation::GetRecords,
        FaultRule::with_probability(0.2, FaultKind::Throttled),
    );
    sim.set_fault(
        Operation::GetShardIterator,
        FaultRule::with_probability(0.1, FaultKind::Retryable),
    );
    sim.set_fault(
        Operation::DescribeStream,
        FaultRule::with_probability(0.1, FaultKind::Throttled),
    );
    let api: Arc<dyn StreamsApi> = Arc::new(sim.clone());
    let arn = sim.stream_arn();
    let mut consumer = Consumer::default();
    let mut version = 0u64;

    for round in 0..12u64 {
        for i in 0..25u64 {
            version += 1;
            sim.put_item(item(&format!("k{}", (i * 7 + round) % 40), version))
                .expect("put");
        }
        let open = sim.open_shards();
        match round % 3 {
            0 => {
                sim.split_shard(&open[0]).expect("split");
            }
            1 => {
                sim.rollover_all();
            }
            _ => {
                sim.rollover_shard(&open[open.len() / 2]).expect("rollover");
            }
        }
        if round == 6 {
            // Every held iterator is now stale.
            sim.advance(Duration::from_secs(16 * 60));
        }
        consumer.pass(&*api, &arn).await;
    }
    sim.disable_stream();
    for _ in 0..20 {
        consumer.pass(&*api, &arn).await;
    }

    let written = sim.written_records();
    assert_eq!(written.len(), 300);
    let delivered: Vec<_> = consumer
        .delivered
        .iter()
        .map(|r| r.sequence_number().clone())
        .collect();
    let unique: HashSet<_> = delivered.iter().collect();
    assert_eq!(unique.len(), delivered.len(), "each record once");
    let expected: HashSet<_> = written
        .iter()
        .map(|w| w.record.sequence_number().clone())
        .collect();
    assert_eq!(unique, expected.iter().collect(), "every record");

    // Per key, records arrive in write order.
    let mut last_per_key: HashMap<String, SequenceNumber> = HashMap::new();
    for r in &consumer.delivered {
        let key = r.key_string();
        if let Some(prev) = last_per_key.insert(key.clone(), r.sequence_number().clone()) {
            assert!(&prev < r.sequence_number(), "{key} out of order");
        }
    }
    assert_eq!(
        consumer.finished.len(),
        sim.shards().len(),
        "all shards ended"
    );

    // The politeness rule held on every shard.
    for shard in sim.shards() {
        let times = sim.get_records_call_times(&shard.shard_id);
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(200));
        }
    }
    let stats = sim.stats();
    assert!(stats.faults_injected > 0);
    assert!(stats.get_records_calls > 0 && stats.describe_stream_calls > 0);
}

#[test]
fn write_errors_are_typed() {
    let sim = Simulator::new();
    let err = sim.put_item(Item::default()).expect_err("no key");
    assert_eq!(err, SimError::MissingKey("pk".into()));
    assert_eq!(err.to_string(), "item lacks key attribute \"pk\"");
    assert_eq!(sim.item_count(), 0);
    assert_eq!(sim.records_written(), 0);
}
