//! The SQLite sink's checkpoint store: positions never move backwards (compared as numbers),
//! `Ended` is final, and `apply` skips changes its stored position already covers.

use dynamodb_stream::checkpoint::{CheckpointStore, ShardCheckpoint, StreamKey};
use dynamodb_stream::error::CheckpointErrorKind;
use dynamodb_stream::record::StreamViewType;
use dynamodb_stream::replicate::{
    ItemChange, KeyAttribute, KeyRole, ReplicaSink, ScalarType, SequencedChange, SqliteReplica,
    TableInfo,
};
use dynamodb_stream::{Error, SequenceNumber};

use crate::common::{item, keys};

const ARN: &str =
    "arn:aws:dynamodb:us-east-1:000000000000:table/orders/stream/2024-01-01T00:00:00.000";

fn key() -> StreamKey {
    StreamKey {
        application: "app".into(),
        stream_arn: ARN.into(),
    }
}

fn seq(s: &str) -> SequenceNumber {
    s.parse().expect("sequence number")
}

fn processed(s: &str) -> ShardCheckpoint {
    ShardCheckpoint::Processed {
        sequence_number: seq(s),
    }
}

fn table() -> TableInfo {
    TableInfo {
        table_name: "orders".into(),
        stream_arn: ARN.into(),
        view_type: Some(StreamViewType::NewAndOldImages),
        key_schema: vec![KeyAttribute {
            name: "pk".into(),
            role: KeyRole::Partition,
            scalar_type: Some(ScalarType::S),
        }],
        item_count: None,
    }
}

async fn stored(sink: &SqliteReplica, shard: &str) -> Option<ShardCheckpoint> {
    sink.load(&key())
        .await
        .expect("load")
        .and_then(|s| s.shards.get(shard).cloned())
}

#[tokio::test]
async fn save_never_moves_a_shard_backwards() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SqliteReplica::open(dir.path().join("r.sqlite"))
        .await
        .expect("open");
    let (small, big) = ("900000000000000000000", "1000000000000000000000");
    assert!(sink.load(&key()).await.expect("load").is_none());

    sink.save(
        &key(),
        1_000,
        vec![("s1".into(), ShardCheckpoint::Latest { since_ms: 50 })],
    )
    .await
    .expect("save");
    // The first start time stays.
    sink.save(&key(), 2_000, vec![("s1".into(), processed(small))])
        .await
        .expect("save");
    assert_eq!(
        sink.load(&key())
            .await
            .expect("load")
            .expect("some")
            .started_at_ms,
        1_000
    );
    assert_eq!(stored(&sink, "s1").await, Some(processed(small)));

    // 22 digits beat 21: numeric, not textual, order.
    sink.save(&key(), 1_000, vec![("s1".into(), processed(big))])
        .await
        .expect("save");
    assert_eq!(stored(&sink, "s1").await, Some(processed(big)));
    // An older acknowledged position (the checkpointer lagging behind apply) is ignored ...
    sink.save(&key(), 1_000, vec![("s1".into(), processed(small))])
        .await
        .expect("save");
    assert_eq!(stored(&sink, "s1").await, Some(processed(big)));
    // ... and so is a LATEST bookmark over a position.
    sink.save(
        &key(),
        1_000,
        vec![("s1".into(), ShardCheckpoint::Latest { since_ms: 9 })],
    )
    .await
    .expect("save");
    assert_eq!(stored(&sink, "s1").await, Some(processed(big)));
    // Ended is final.
    sink.save(&key(), 1_000, vec![("s1".into(), ShardCheckpoint::Ended)])
        .await
        .expect("save");
    sink.save(
        &key(),
        1_000,
        vec![("s1".into(), processed("9".repeat(40).as_str()))],
    )
    .await
    .expect("save");
    assert_eq!(stored(&sink, "s1").await, Some(ShardCheckpoint::Ended));
    // Saving the same state again is harmless.
    sink.save(&key(), 1_000, vec![("s1".into(), ShardCheckpoint::Ended)])
        .await
        .expect("save");
    assert_eq!(stored(&sink, "s1").await, Some(ShardCheckpoint::Ended));

    // Positions are stored as DynamoDB sent them, plus a zero-padded key that sorts as numbers.
    sink.save(&key(), 1_000, vec![("s2".into(), processed(small))])
        .await
        .expect("save");
    let conn = rusqlite::Connection::open(sink.path()).expect("open");
    let (raw, sort_key): (String, String) = conn
        .query_row(
            "SELECT sequence_number, sequence_key FROM checkpoints WHERE shard_id = 's2'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("row");
    assert_eq!(raw, small);
    assert_eq!(sort_key, format!("{:0>40}", small));
}

#[tokio::test]
async fn apply_skips_what_the_stored_position_covers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SqliteReplica::open(dir.path().join("r.sqlite"))
        .await
        .expect("open");
    sink.bind(&table()).await.expect("bind");
    let put = |s: &str, id: u32, v: u64| SequencedChange {
        sequence_number: seq(s),
        change: ItemChange::Put {
            keys: keys(id),
            item: item(id, v),
        },
    };
    let del = |s: &str, id: u32| SequencedChange {
        sequence_number: seq(s),
        change: ItemChange::Delete { keys: keys(id) },
    };
    let n = |i: u64| format!("{:021}", 100_000_000_000_000_000_000u128 + u128::from(i));

    let applied = sink
        .apply(
            &key(),
            "s1",
            vec![put(&n(1), 1, 1), put(&n(2), 2, 1), put(&n(3), 1, 2)],
            seq(&n(3)),
        )
        .await
        .expect("apply");
    assert_eq!(applied, 3);
    assert_eq!(stored(&sink, "s1").await, Some(processed(&n(3))));
    // A restarted worker redelivers from an older position: only what is new applies.
    let applied = sink
        .apply(
            &key(),
            "s1",
            vec![put(&n(2), 2, 7), put(&n(3), 1, 7), del(&n(4), 2)],
            seq(&n(4)),
        )
        .await
        .expect("apply");
    assert_eq!(applied, 1);
    assert_eq!(sink.get(&keys(1)).await.expect("get"), Some(item(1, 2)));
    assert_eq!(sink.get(&keys(2)).await.expect("get"), None);
    assert_eq!(stored(&sink, "s1").await, Some(processed(&n(4))));
    // A whole batch behind the position changes nothing.
    let applied = sink
        .apply(&key(), "s1", vec![put(&n(1), 9, 1)], seq(&n(1)))
        .await
        .expect("apply");
    assert_eq!(applied, 0);
    assert_eq!(sink.get(&keys(9)).await.expect("get"), None);
    assert_eq!(stored(&sink, "s1").await, Some(processed(&n(4))));
    // Nothing applies to an ended shard.
    sink.save(&key(), 0, vec![("s1".into(), ShardCheckpoint::Ended)])
        .await
        .expect("save");
    let applied = sink
        .apply(&key(), "s1", vec![put(&n(9), 9, 1)], seq(&n(9)))
        .await
        .expect("apply");
    assert_eq!(applied, 0);
    assert_eq!(sink.get(&keys(9)).await.expect("get"), None);
}

#[tokio::test]
async fn checkpoints_of_another_stream_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SqliteReplica::open(dir.path().join("r.sqlite"))
        .await
        .expect("open");
    sink.bind(&table()).await.expect("bind");
    let other = StreamKey {
        application: "app".into(),
        stream_arn: ARN.replace("2024", "2025"),
    };
    let err = sink.load(&other).await.expect_err("foreign stream");
    assert_eq!(err.kind(), CheckpointErrorKind::Mismatch);
    let err = sink
        .apply(&other, "s1", Vec::new(), seq("100000000000000000001"))
        .await
        .expect_err("foreign stream");
    assert!(matches!(err, Error::Checkpoint(e) if e.kind() == CheckpointErrorKind::Mismatch));
}
