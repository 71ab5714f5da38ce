//! Forced shard rollovers during a steady write load: 10,000 writes by four concurrent writers
//! while the control hook closes the open shard every ~300 writes (each rollover closes the
//! open shard and opens one child whose ParentShardId is the closed shard). Nothing is lost or
//! duplicated, every parent is finished before its child starts, and no child opens at LATEST.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::StreamViewType;
use dynamodb_stream::{Consumer, ConsumerEvent};

use crate::common::{check_deliveries, fast, lineage, periodic_check, put, Events, Log, Written};
use crate::ddb_local::{clients, create_table, rollover};

const TABLE: &str = "rollovers";
const WRITERS: usize = 4;
const KEYS_PER_WRITER: usize = 50;
const VERSIONS: u64 = 50; // 4 × 50 × 50 = 10,000 writes
const ROLLOVER_EVERY: usize = 300;
const MIN_ROLLOVERS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollovers_under_load_lose_and_repeat_nothing() {
    let started = Instant::now();
    let c = clients("rollovers");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    let log = Log::new();
    let l = log.clone();
    let builder = Consumer::builder(c.streams.clone(), &arn)
        .handler_factory(move |s| l.handler(s))
        .configure(fast);
    let events = Events::collect(builder.events());
    let consumer = builder.spawn().await.expect("spawn");

    let done = Arc::new(AtomicUsize::new(0));
    let writing = Arc::new(AtomicBool::new(true));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (c, done) = (c.clone(), done.clone());
        writers.push(tokio::spawn(async move {
            let mut written = Written::default();
            for v in 1..=VERSIONS {
                for k in 0..KEYS_PER_WRITER {
                    let key = format!("w{w}k{k}");
                    put(&c, TABLE, &key, v).await;
                    written.versions.insert(key, v);
                    done.fetch_add(1, Ordering::SeqCst);
                }
            }
            written
        }));
    }
    let roller = {
        let (c, done, writing) = (c.clone(), done.clone(), writing.clone());
        tokio::spawn(async move {
            let mut rollovers = 0;
            loop {
                let due = (rollovers + 1) * ROLLOVER_EVERY;
                if done.load(Ordering::SeqCst) >= due {
                    rollover(&c).await;
                    rollovers += 1;
                } else if !writing.load(Ordering::SeqCst) {
                    return rollovers;
                } else {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        })
    };
    let mut written = Written::default();
    for w in writers {
        written.merge(w.await.expect("writer"));
    }
    writing.store(false, Ordering::SeqCst);
    let rollovers = roller.await.expect("roller");
    let writes_done = started.elapsed();
    assert_eq!(written.total(), 10_000);
    assert!(
        rollovers >= MIN_ROLLOVERS,
        "only {rollovers} rollovers during the writes"
    );

    periodic_check(
        || log.has_all(&written),
        Duration::from_secs(120),
        "every write delivered",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    let deliveries = log.snapshot();
    check_deliveries(&written, &deliveries, true);

    // Lineage as DynamoDB reports it.
    let parents = lineage(&c, &arn).await;
    assert!(
        parents.len() > rollovers,
        "{} shards after {rollovers} rollovers",
        parents.len()
    );
    let chain_len = parents.values().filter(|p| p.is_some()).count();
    assert!(chain_len >= rollovers, "every rollover made a child");

    // Per shard: first and last delivery index; when its handler ended it.
    let mut span: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for (i, d) in deliveries.iter().enumerate() {
        assert!(
            parents.contains_key(&d.shard_id),
            "delivery from unknown shard {}",
            d.shard_id
        );
        let e = span.entry(d.shard_id.as_str()).or_insert((i, i));
        e.1 = i;
    }
    let ended: HashMap<String, usize> = log.ended.lock().unwrap().iter().cloned().collect();
    for (child, (first, _)) in &span {
        let Some(parent) = parents.get(*child).and_then(|p| p.as_deref()) else {
            continue;
        };
        if let Some((_, parent_last)) = span.get(parent) {
            assert!(
                parent_last < first,
                "child {child} delivered (#{first}) before its parent {parent} finished (#{parent_last})"
            );
        }
        let parent_end = ended
            .get(parent)
            .unwrap_or_else(|| panic!("parent {parent} of {child} never ended"));
        assert!(
            *parent_end <= *first,
            "child {child} delivered before its parent's on_shard_end"
        );
    }
    assert!(
        span.len() > MIN_ROLLOVERS,
        "records spread over {} shards",
        span.len()
    );

    // Shard starts: each shard once, never at LATEST.
    let mut starts: HashMap<String, usize> = HashMap::new();
    for e in events.all() {
        match e {
            ConsumerEvent::ShardStarted {
                shard_id, position, ..
            } => {
                assert_ne!(position, "LATEST", "shard {shard_id} opened at LATEST");
                *starts.entry(shard_id).or_default() += 1;
            }
            ConsumerEvent::WorkerRestarted {
                shard_id, error, ..
            } => {
                panic!("worker of {shard_id} restarted: {error}")
            }
            ConsumerEvent::Gap(gap) => panic!("gap: {gap:?}"),
            _ => {}
        }
    }
    for shard in span.keys() {
        assert_eq!(starts.get(*shard), Some(&1), "shard {shard} starts");
    }
    eprintln!(
        "rollovers: {rollovers} rollovers, {} shards, 10,000 writes in {writes_done:?}, all delivered after {:?}",
        parents.len(),
        started.elapsed()
    );
}
