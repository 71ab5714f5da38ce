//! Issue 14, defect 3, on the real server: DynamoDB Local reads a GetRecords page, then asks
//! separately whether the shard is closed; a write plus a rollover in between give a page that
//! lacks its last records and has no NextShardIterator. The launcher's end-race hook widens that
//! window to 300 ms, and the shard is rolled over every 1–2 s while writers write, so the race is
//! met on most rollovers. Every apparent end is confirmed from a fresh iterator after the last
//! record read, so every write is delivered, in order per key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use dynamodb_stream::Consumer;

use crate::common::{check_deliveries, fast, periodic_check, put, Log, Written};
use crate::ddb_local::{clients, create_table, end_race, rollover};

const TABLE: &str = "endrace";
const WRITERS: usize = 3;
const KEYS_PER_WRITER: usize = 20;
const VERSIONS: u64 = 15; // 3 × 20 × 15 = 900 writes

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_page_racing_a_rollover_loses_nothing_on_dynamodb_local() {
    let c = clients("endrace");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    end_race(&c, Duration::from_millis(300)).await;
    let log = Log::new();
    let l = log.clone();
    let consumer = Consumer::builder(c.streams.clone(), &arn)
        .handler_factory(move |s| l.handler(s))
        .configure(fast)
        .spawn()
        .await
        .expect("spawn");

    let writing = Arc::new(AtomicBool::new(true));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let c = c.clone();
        writers.push(tokio::spawn(async move {
            let mut written = Written::default();
            for v in 1..=VERSIONS {
                for k in 0..KEYS_PER_WRITER {
                    let key = format!("w{w}k{k}");
                    put(&c, TABLE, &key, v).await;
                    written.versions.insert(key, v);
                    // A steady trickle, so writes land inside the widened window.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            }
            written
        }));
    }
    let roller = {
        let (c, writing) = (c.clone(), writing.clone());
        tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(14);
            let mut rollovers = 0;
            while writing.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(rng.u64(1000..2000))).await;
                rollover(&c).await;
                rollovers += 1;
            }
            rollovers
        })
    };
    let mut written = Written::default();
    for w in writers {
        written.merge(w.await.expect("writer"));
    }
    writing.store(false, Ordering::SeqCst);
    let rollovers = roller.await.expect("roller");
    assert!(rollovers >= 3, "only {rollovers} rollovers happened");
    // The last shard is closed too, so its end is read as well.
    rollover(&c).await;
    periodic_check(
        || log.distinct() as u64 == written.total(),
        Duration::from_secs(120),
        "every write delivered",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
    end_race(&c, Duration::ZERO).await;
    check_deliveries(&written, &log.snapshot(), true);
}
