//! The `ReplicaSink` contract (src/replicate/sink.rs), run against every sink of the crate:
//! binding, scan progress, apply with its checkpoint in one transaction, positions that never
//! move backwards, exact items, reset, and refusals that change nothing.

use std::collections::HashMap;

use dynamodb_stream::checkpoint::{ShardCheckpoint, StreamKey};
use dynamodb_stream::error::CheckpointErrorKind;
use dynamodb_stream::record::{AttributeValue, Item, StreamViewType};
use dynamodb_stream::replicate::{
    ItemChange, KeyAttribute, KeyRole, ReplicaSink, ScalarType, ScanProgress, SegmentProgress,
    SequencedChange, TableInfo,
};
use dynamodb_stream::{Error, SequenceNumber};

use crate::common::{item, keys};
use crate::harness::{Kind, Sink, Storage, KINDS};

const STREAM: &str = "2024-01-01T00:00:00.000";

fn arn(table: &str, stream: &str) -> String {
    format!("arn:aws:dynamodb:us-east-1:000000000000:table/{table}/stream/{stream}")
}

fn table(name: &str, stream: &str) -> TableInfo {
    TableInfo {
        table_name: name.into(),
        stream_arn: arn(name, stream),
        view_type: Some(StreamViewType::NewAndOldImages),
        key_schema: vec![KeyAttribute {
            name: "pk".into(),
            role: KeyRole::Partition,
            scalar_type: Some(ScalarType::S),
        }],
        item_count: None,
    }
}

fn orders() -> TableInfo {
    table("orders", STREAM)
}

fn key() -> StreamKey {
    StreamKey {
        application: "app".into(),
        stream_arn: arn("orders", STREAM),
    }
}

/// The `i`-th sequence number (21 digits, numeric order = `i` order).
fn n(i: u64) -> SequenceNumber {
    format!("{:021}", 100_000_000_000_000_000_000u128 + u128::from(i))
        .parse()
        .expect("sequence number")
}

fn processed(i: u64) -> ShardCheckpoint {
    ShardCheckpoint::Processed {
        sequence_number: n(i),
    }
}

fn put(i: u64, id: u32, version: u64) -> SequencedChange {
    SequencedChange {
        sequence_number: n(i),
        change: ItemChange::Put {
            keys: keys(id),
            item: item(id, version),
        },
    }
}

fn del(i: u64, id: u32) -> SequencedChange {
    SequencedChange {
        sequence_number: n(i),
        change: ItemChange::Delete { keys: keys(id) },
    }
}

async fn stored(sink: &Sink, shard: &str) -> Option<ShardCheckpoint> {
    sink.sink
        .load(&key())
        .await
        .expect("load")
        .and_then(|s| s.shards.get(shard).cloned())
}

/// A bound sink of `kind` on fresh storage.
async fn bound(kind: Kind, name: &str) -> (Storage, Sink) {
    let storage = Storage::new(kind, name).await;
    let sink = storage.open().await;
    assert_eq!(
        sink.sink.bind(&orders()).await.expect("bind"),
        ScanProgress::NotStarted,
        "{kind:?}"
    );
    (storage, sink)
}

fn invalid_argument<T: std::fmt::Debug>(r: dynamodb_stream::Result<T>) -> String {
    match r {
        Err(Error::InvalidArgument(m)) => m,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scan_resumes_where_it_stopped_and_completes_once() {
    for kind in KINDS {
        let (storage, sink) = bound(kind, "scan_resumes").await;
        sink.sink.begin_scan(3).await.expect("begin");
        sink.sink
            .write_scan_page(0, vec![item(1, 1), item(2, 1)], Some(keys(2)))
            .await
            .expect("page");
        sink.sink
            .write_scan_page(1, vec![item(3, 1)], None)
            .await
            .expect("page");
        // A page of a segment that was never begun is an error, not a silent success.
        assert!(sink.sink.write_scan_page(7, vec![], None).await.is_err());
        drop(sink);

        // A restart: the progress is what was committed.
        let sink = storage.open().await;
        let progress = sink.sink.bind(&orders()).await.expect("bind again");
        assert_eq!(
            progress,
            ScanProgress::Running {
                total_segments: 3,
                segments: vec![
                    SegmentProgress {
                        segment: 0,
                        resume_after: Some(keys(2)),
                        done: false,
                        items: 2
                    },
                    SegmentProgress {
                        segment: 1,
                        resume_after: None,
                        done: true,
                        items: 1
                    },
                    SegmentProgress {
                        segment: 2,
                        resume_after: None,
                        done: false,
                        items: 0
                    },
                ],
            },
            "{kind:?}"
        );
        // Pages are upserts: a page written again (a crash before its commit was seen) is
        // harmless.
        sink.sink
            .write_scan_page(0, vec![item(2, 1), item(4, 1)], None)
            .await
            .expect("page");
        sink.sink
            .write_scan_page(2, vec![], None)
            .await
            .expect("page");
        sink.sink.complete_scan().await.expect("complete");
        let items = sink.items().await;
        assert_eq!(items.len(), 4, "{kind:?}");
        assert_eq!(sink.get(&keys(4)).await, Some(item(4, 1)), "{kind:?}");
        let sink = storage.open().await;
        assert_eq!(
            sink.sink.bind(&orders()).await.expect("bind"),
            ScanProgress::Complete { items: 5 },
            "{kind:?}: items written by the scan, repeats included"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_table_or_stream_is_refused_and_nothing_changes() {
    for kind in KINDS {
        let (storage, sink) = bound(kind, "other_table").await;
        sink.sink
            .apply(&key(), "s1", vec![put(1, 1, 1)], n(1))
            .await
            .expect("apply");
        let before = storage.dump();
        let other_stream = table("orders", "2025-01-01T00:00:00.000");
        let m = invalid_argument(storage.open().await.sink.bind(&other_stream).await);
        assert!(m.contains("but the table now streams"), "{kind:?}: {m}");
        let mut other_key = orders();
        other_key.key_schema[0].name = "id".into();
        let m = invalid_argument(storage.open().await.sink.bind(&other_key).await);
        assert!(m.contains("another key schema"), "{kind:?}: {m}");
        if kind == Kind::Sqlite {
            // One file holds one table.
            let m = invalid_argument(
                storage
                    .open()
                    .await
                    .sink
                    .bind(&table("users", STREAM))
                    .await,
            );
            assert!(m.contains("is a replica of table"), "{kind:?}: {m}");
        }
        assert!(
            storage.dump() == before,
            "{kind:?}: a refusal changed the storage"
        );
        // The right table still binds, with what it held.
        let sink = storage.open().await;
        sink.sink.bind(&orders()).await.expect("bind");
        assert_eq!(sink.get(&keys(1)).await, Some(item(1, 1)), "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_skips_what_the_stored_position_covers() {
    for kind in KINDS {
        let (_storage, sink) = bound(kind, "apply_skips").await;
        let s = &sink.sink;
        let applied = s
            .apply(
                &key(),
                "s1",
                vec![put(1, 1, 1), put(2, 2, 1), put(3, 1, 2)],
                n(3),
            )
            .await
            .expect("apply");
        assert_eq!(applied, 3, "{kind:?}");
        assert_eq!(stored(&sink, "s1").await, Some(processed(3)), "{kind:?}");
        // A restarted worker redelivers from an older position: only what is new applies.
        let applied = s
            .apply(
                &key(),
                "s1",
                vec![put(2, 2, 7), put(3, 1, 7), del(4, 2)],
                n(4),
            )
            .await
            .expect("apply");
        assert_eq!(applied, 1, "{kind:?}");
        assert_eq!(sink.get(&keys(1)).await, Some(item(1, 2)), "{kind:?}");
        assert_eq!(sink.get(&keys(2)).await, None, "{kind:?}");
        assert_eq!(stored(&sink, "s1").await, Some(processed(4)), "{kind:?}");
        // A whole batch behind the position changes nothing, and does not move it back.
        let applied = s
            .apply(&key(), "s1", vec![put(1, 9, 1)], n(1))
            .await
            .expect("apply");
        assert_eq!(applied, 0, "{kind:?}");
        assert_eq!(sink.get(&keys(9)).await, None, "{kind:?}");
        assert_eq!(stored(&sink, "s1").await, Some(processed(4)), "{kind:?}");
        // Shards are independent.
        s.apply(&key(), "s2", vec![put(2, 5, 1)], n(2))
            .await
            .expect("apply");
        assert_eq!(stored(&sink, "s2").await, Some(processed(2)), "{kind:?}");
        // Nothing applies to an ended shard.
        s.save(&key(), 0, vec![("s1".into(), ShardCheckpoint::Ended)])
            .await
            .expect("save");
        let applied = s
            .apply(&key(), "s1", vec![put(9, 9, 1)], n(9))
            .await
            .expect("apply");
        assert_eq!(applied, 0, "{kind:?}");
        assert_eq!(sink.get(&keys(9)).await, None, "{kind:?}");
        assert_eq!(
            stored(&sink, "s1").await,
            Some(ShardCheckpoint::Ended),
            "{kind:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_never_move_backwards_whoever_writes() {
    for kind in KINDS {
        let (_storage, sink) = bound(kind, "never_backwards").await;
        let s = &sink.sink;
        s.save(
            &key(),
            1_000,
            vec![("s1".into(), ShardCheckpoint::Latest { since_ms: 50 })],
        )
        .await
        .expect("save");
        s.apply(&key(), "s1", vec![put(5, 1, 1)], n(5))
            .await
            .expect("apply");
        // The checkpointer acknowledging an older position than apply committed is ignored.
        s.save(&key(), 2_000, vec![("s1".into(), processed(3))])
            .await
            .expect("save");
        assert_eq!(stored(&sink, "s1").await, Some(processed(5)), "{kind:?}");
        // So is a LATEST bookmark over a position.
        s.save(
            &key(),
            1_000,
            vec![("s1".into(), ShardCheckpoint::Latest { since_ms: 9 })],
        )
        .await
        .expect("save");
        assert_eq!(stored(&sink, "s1").await, Some(processed(5)), "{kind:?}");
        // 22 digits beat 21: numeric, not textual order.
        let big: SequenceNumber = "1000000000000000000000".parse().expect("seq");
        s.save(
            &key(),
            1_000,
            vec![(
                "s1".into(),
                ShardCheckpoint::Processed {
                    sequence_number: big.clone(),
                },
            )],
        )
        .await
        .expect("save");
        s.save(&key(), 1_000, vec![("s1".into(), processed(900))])
            .await
            .expect("save");
        assert_eq!(
            stored(&sink, "s1").await,
            Some(ShardCheckpoint::Processed {
                sequence_number: big
            }),
            "{kind:?}"
        );
        assert_eq!(
            s.load(&key())
                .await
                .expect("load")
                .expect("stored")
                .started_at_ms,
            1_000,
            "{kind:?}: the first start stays"
        );
    }
}

/// Writers racing on one shard (a restarted worker's apply, the checkpointer's save) leave the
/// furthest position, whatever order they commit in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_leave_the_furthest_position() {
    for kind in KINDS {
        let (_storage, sink) = bound(kind, "racing_writers").await;
        let mut tasks = Vec::new();
        for i in 1..=40u64 {
            let s = sink.sink.clone();
            // Shuffled: positions arrive out of order.
            let at = (i * 17) % 41;
            tasks.push(tokio::spawn(async move {
                if at % 2 == 0 {
                    s.apply(&key(), "s1", vec![put(at, at as u32, at)], n(at))
                        .await
                        .map(|_| ())
                } else {
                    s.save(&key(), 1, vec![("s1".into(), processed(at))])
                        .await
                        .map_err(Error::from)
                }
            }));
        }
        for t in tasks {
            t.await.expect("join").expect("write");
        }
        assert_eq!(stored(&sink, "s1").await, Some(processed(40)), "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn items_round_trip_exactly() {
    let long = "12345678901234567890123456789012345678";
    let mut m = HashMap::new();
    m.insert(
        "pk".to_owned(),
        AttributeValue::S("ünïcode ✓ \"quoted\"".into()),
    );
    m.insert("n".to_owned(), AttributeValue::N(long.into()));
    m.insert(
        "neg".to_owned(),
        AttributeValue::N("-0.000000000000000000000000000000000001".into()),
    );
    m.insert("exp".to_owned(), AttributeValue::N("1E+125".into()));
    m.insert("empty".to_owned(), AttributeValue::S(String::new()));
    m.insert("b".to_owned(), AttributeValue::B(vec![0, 1, 2, 255]));
    m.insert(
        "ss".to_owned(),
        AttributeValue::Ss(vec!["a".into(), "b".into()]),
    );
    m.insert(
        "ns".to_owned(),
        AttributeValue::Ns(vec![long.into(), "2".into()]),
    );
    m.insert(
        "bs".to_owned(),
        AttributeValue::Bs(vec![vec![1], vec![2, 3]]),
    );
    m.insert("null".to_owned(), AttributeValue::Null(true));
    m.insert("t".to_owned(), AttributeValue::Bool(true));
    let mut nested = HashMap::new();
    nested.insert(
        "deep".to_owned(),
        AttributeValue::L(vec![AttributeValue::N(long.into())]),
    );
    m.insert("m".to_owned(), AttributeValue::M(nested));
    let rich = Item::from(m);
    let mut rich_keys = Item::default();
    rich_keys.insert("pk".to_owned(), rich.get("pk").cloned().expect("pk"));
    for kind in KINDS {
        let (_storage, sink) = bound(kind, "round_trip").await;
        sink.sink.begin_scan(1).await.expect("begin");
        sink.sink
            .write_scan_page(0, vec![item(1, 2)], None)
            .await
            .expect("page");
        sink.sink
            .apply(
                &key(),
                "s1",
                vec![SequencedChange {
                    sequence_number: n(1),
                    change: ItemChange::Put {
                        keys: rich_keys.clone(),
                        item: rich.clone(),
                    },
                }],
                n(1),
            )
            .await
            .expect("apply");
        assert_eq!(sink.get(&rich_keys).await.as_ref(), Some(&rich), "{kind:?}");
        assert_eq!(sink.get(&keys(1)).await, Some(item(1, 2)), "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_forgets_items_scan_and_checkpoints_but_keeps_the_binding() {
    for kind in KINDS {
        let (storage, sink) = bound(kind, "reset").await;
        sink.sink.begin_scan(1).await.expect("begin");
        sink.sink
            .write_scan_page(0, vec![item(1, 1)], Some(keys(1)))
            .await
            .expect("page");
        sink.sink
            .apply(&key(), "s1", vec![put(1, 2, 1)], n(1))
            .await
            .expect("apply");
        sink.sink.reset().await.expect("reset");
        assert!(sink.items().await.is_empty(), "{kind:?}");
        assert_eq!(
            sink.sink.load(&key()).await.expect("load"),
            None,
            "{kind:?}"
        );
        let sink = storage.open().await;
        assert_eq!(
            sink.sink.bind(&orders()).await.expect("bind"),
            ScanProgress::NotStarted,
            "{kind:?}"
        );
        // Still bound to its table: another one is refused.
        let m = invalid_argument(sink.sink.bind(&table("orders", "2030")).await);
        assert!(m.contains("now streams"), "{kind:?}: {m}");
    }
}

/// The one-transaction rule: a failure after the rows are written and before the checkpoint
/// is, leaves neither — the items and the position stay as they were, together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_between_rows_and_checkpoint_leaves_both_unchanged() {
    for kind in KINDS {
        let (storage, sink) = bound(kind, "failure_between").await;
        sink.sink
            .apply(&key(), "s1", vec![put(1, 1, 1), put(2, 2, 1)], n(2))
            .await
            .expect("apply");
        let items_before = sink.items().await;
        storage.fail_checkpoint_writes(true).await;
        let err = sink
            .sink
            .apply(
                &key(),
                "s1",
                vec![put(3, 1, 9), del(4, 2), put(5, 3, 1)],
                n(5),
            )
            .await
            .expect_err("the checkpoint write fails");
        assert!(
            err.to_string().contains("injected failure"),
            "{kind:?}: {err}"
        );
        assert_eq!(sink.items().await, items_before, "{kind:?}: rows were kept");
        assert_eq!(stored(&sink, "s1").await, Some(processed(2)), "{kind:?}");
        // Once the database takes writes again, the same batch applies whole.
        storage.fail_checkpoint_writes(false).await;
        let applied = sink
            .sink
            .apply(
                &key(),
                "s1",
                vec![put(3, 1, 9), del(4, 2), put(5, 3, 1)],
                n(5),
            )
            .await
            .expect("apply");
        assert_eq!(applied, 3, "{kind:?}");
        assert_eq!(sink.get(&keys(1)).await, Some(item(1, 9)), "{kind:?}");
        assert_eq!(sink.get(&keys(2)).await, None, "{kind:?}");
        assert_eq!(stored(&sink, "s1").await, Some(processed(5)), "{kind:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_of_another_stream_are_refused() {
    for kind in KINDS {
        let (_storage, sink) = bound(kind, "foreign_stream").await;
        let other = StreamKey {
            application: "app".into(),
            stream_arn: arn("orders", "2025-01-01T00:00:00.000"),
        };
        let err = sink.sink.load(&other).await.expect_err("foreign stream");
        assert_eq!(err.kind(), CheckpointErrorKind::Mismatch, "{kind:?}");
        let err = sink
            .sink
            .apply(&other, "s1", Vec::new(), n(1))
            .await
            .expect_err("foreign stream");
        assert!(
            matches!(&err, Error::Checkpoint(e) if e.kind() == CheckpointErrorKind::Mismatch),
            "{kind:?}: {err:?}"
        );
    }
}

/// The stream catch-up time of an unfinished backfill: the latest one given is kept, across a
/// restart, and `reset` forgets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_catch_up_time_only_grows_and_reset_forgets_it() {
    for kind in KINDS {
        let (storage, sink) = bound(kind, "caught_up_at").await;
        assert_eq!(
            sink.sink.stream_caught_up_at().await.expect("read"),
            None,
            "{kind:?}"
        );
        sink.sink
            .record_stream_caught_up(2_000)
            .await
            .expect("record");
        sink.sink
            .record_stream_caught_up(1_000)
            .await
            .expect("an older time is ignored, not an error");
        let sink = storage.open().await;
        sink.sink.bind(&orders()).await.expect("bind");
        assert_eq!(
            sink.sink.stream_caught_up_at().await.expect("read"),
            Some(2_000),
            "{kind:?}"
        );
        sink.sink.reset().await.expect("reset");
        assert_eq!(
            sink.sink.stream_caught_up_at().await.expect("read"),
            None,
            "{kind:?}"
        );
    }
}
