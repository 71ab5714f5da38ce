//! Bookmark → scan → stream on the simulator: the replica ends equal to the table, item for
//! item, with writes and a shard split during the scan.

use std::collections::HashMap;
use std::time::Duration;

use dynamodb_stream::record::{AttributeValue, Item};
use dynamodb_stream::replicate::{ReplicaPhase, Replicator, ReplicatorEvent, SqliteReplica};
use dynamodb_stream::sim::Simulator;

use crate::common::{by_key, item, keys, wait_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_plus_stream_equals_the_table() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sim = Simulator::builder()
        .table_name("orders")
        .initial_shards(3)
        .seed(11)
        .build();
    for id in 0..1_500 {
        sim.put_item(item(id, 1)).expect("put");
    }
    let writer_sim = sim.clone();
    let writer = tokio::spawn(async move {
        let mut rng = fastrand::Rng::with_seed(3);
        for step in 0..1_200u64 {
            let id = rng.u32(0..1_800);
            if rng.u8(0..4) == 0 {
                writer_sim.delete_item(&keys(id)).expect("delete");
            } else {
                writer_sim.put_item(item(id, step + 2)).expect("put");
            }
            if step == 400 {
                let shard = writer_sim.open_shards()[1].clone();
                writer_sim.split_shard(&shard).expect("split");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    });

    let sink = SqliteReplica::open(dir.path().join("r.sqlite"))
        .await
        .expect("open");
    let builder = Replicator::builder(sim.clone(), sim.clone(), "orders", sink.clone())
        .segments(4)
        .scan_page_limit(50);
    let mut events = builder.events();
    let mut replicator = builder.spawn().await.expect("spawn");
    assert!(replicator.status().is_catching_up());
    replicator.caught_up().await.expect("caught up");
    let status = replicator.status();
    assert_eq!(status.phase, ReplicaPhase::Live);
    assert_eq!(status.shards_behind, Some(0));
    assert!(status.scanned_items >= 1_400, "{status:?}");
    assert!(status.applied_changes > 0, "{status:?}");
    // The table's count when the replicator started (the writer was already busy).
    assert!(
        status.estimated_items.is_some_and(|n| n >= 1_400),
        "{status:?}"
    );

    writer.await.expect("writer");
    wait_until(
        "replica equals the table",
        Duration::from_secs(30),
        || async { by_key(sink.items().await.expect("items")) == by_key(sim.scan()) },
    )
    .await;
    replicator.shutdown().await.expect("shutdown");

    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        if !matches!(e, ReplicatorEvent::Consumer(_)) {
            seen.push(e);
        }
    }
    assert!(
        matches!(seen[0], ReplicatorEvent::Bookmarked { shards: 3, .. }),
        "{seen:?}"
    );
    assert!(matches!(
        seen[1],
        ReplicatorEvent::ScanStarted {
            total_segments: 4,
            resumed: false
        }
    ));
    assert!(
        matches!(seen[2], ReplicatorEvent::ScanCompleted { .. }),
        "{seen:?}"
    );
    assert!(seen.contains(&ReplicatorEvent::StreamStarted), "{seen:?}");
    assert!(seen.contains(&ReplicatorEvent::CaughtUp), "{seen:?}");
}

/// A composite key with a numeric sort key: key columns keep their types, 38-digit numbers
/// keep every digit, and items round-trip exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composite_keys_become_typed_columns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("r.sqlite");
    let sim = Simulator::builder()
        .table_name("events")
        .hash_key("user")
        .range_key("at")
        .build();
    let long = "12345678901234567890123456789012345678";
    let row = |user: &str, at: &str, body: &str| {
        let mut m = HashMap::new();
        m.insert("user".to_owned(), AttributeValue::S(user.to_owned()));
        m.insert("at".to_owned(), AttributeValue::N(at.to_owned()));
        m.insert("body".to_owned(), AttributeValue::S(body.to_owned()));
        m.insert("nothing".to_owned(), AttributeValue::Null(true));
        m.insert(
            "list".to_owned(),
            AttributeValue::L(vec![AttributeValue::N(long.to_owned())]),
        );
        Item::from(m)
    };
    sim.put_item(row("ann", "1", "scanned")).expect("put");
    sim.put_item(row("ann", long, "scanned too")).expect("put");
    let sink = SqliteReplica::open(&path).await.expect("open");
    let mut replicator = Replicator::builder(sim.clone(), sim.clone(), "events", sink.clone())
        .spawn()
        .await
        .expect("spawn");
    replicator.caught_up().await.expect("caught up");
    sim.put_item(row("bob", "-2.5", "streamed")).expect("put");
    sim.put_item(row("ann", "1", "changed")).expect("put");
    wait_until(
        "replica equals the table",
        Duration::from_secs(20),
        || async { sink.items().await.expect("items") == sim.scan() },
    )
    .await;
    replicator.shutdown().await.expect("shutdown");

    let conn = rusqlite::Connection::open(&path).expect("open");
    let mut stmt = conn
        .prepare("SELECT user, at, typeof(at) FROM items ORDER BY user, at")
        .expect("key columns");
    let rows: Vec<(String, String, String)> = stmt
        .query_map([], |r| {
            let at: rusqlite::types::Value = r.get(1)?;
            let at = match at {
                rusqlite::types::Value::Integer(i) => i.to_string(),
                rusqlite::types::Value::Text(t) => t,
                other => format!("{other:?}"),
            };
            Ok((r.get(0)?, at, r.get(2)?))
        })
        .expect("query")
        .map(|r| r.expect("row"))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("ann".to_owned(), "1".to_owned(), "integer".to_owned()),
            ("ann".to_owned(), long.to_owned(), "text".to_owned()),
            ("bob".to_owned(), "-2.5".to_owned(), "text".to_owned()),
        ]
    );
}
