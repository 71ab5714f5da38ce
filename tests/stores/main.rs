//! The `CheckpointStore` contract, run against every store of the crate: the memory store, the
//! JSON file, the SQLite replica and (with the `postgres` feature) the PostgreSQL replica, on a
//! real server started by `tests/support/postgres.rs`. Each store must answer `None` for what was never saved,
//! keep every kind of position, record the first start once, never move a position backwards
//! (`ShardCheckpoint::advances`), take a repeated save as a no-op, keep streams and
//! applications apart, and list an application's streams.

use std::future::Future;

#[cfg(feature = "postgres")]
#[path = "../support/postgres.rs"]
mod postgres;

use dynamodb_stream::checkpoint::{
    CheckpointStore, FileCheckpointStore, MemoryCheckpointStore, ShardCheckpoint, StreamKey,
};
use dynamodb_stream::replicate::SqliteReplica;
use dynamodb_stream::SequenceNumber;

/// Run `test` against each store, each fresh.
async fn each_store<F, Fut>(test: F)
where
    F: Fn(Box<dyn CheckpointStore>) -> Fut,
    Fut: Future<Output = ()>,
{
    test(Box::new(MemoryCheckpointStore::new())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    test(Box::new(FileCheckpointStore::new(
        dir.path().join("c.json"),
    )))
    .await;
    let replica = SqliteReplica::open(dir.path().join("r.sqlite"))
        .await
        .expect("open the replica");
    test(Box::new(replica)).await;
    #[cfg(feature = "postgres")]
    {
        let url = postgres::database("stores").await;
        let replica = dynamodb_stream::replicate::PostgresReplica::connect(&url)
            .await
            .expect("connect to the PostgreSQL replica");
        test(Box::new(replica)).await;
    }
}

fn key(stream: &str) -> StreamKey {
    StreamKey {
        application: "app".into(),
        stream_arn: format!("arn:aws:dynamodb:us-east-1:1:table/t/stream/{stream}"),
    }
}

fn at(n: u64) -> ShardCheckpoint {
    ShardCheckpoint::Processed {
        sequence_number: seq(n),
    }
}

fn seq(n: u64) -> SequenceNumber {
    format!("{:021}", 100_000_000_000_000_000_000u128 + u128::from(n))
        .parse()
        .expect("sequence number")
}

async fn shard(
    store: &dyn CheckpointStore,
    key: &StreamKey,
    shard: &str,
) -> Option<ShardCheckpoint> {
    store
        .load(key)
        .await
        .expect("load")
        .and_then(|s| s.shards.get(shard).cloned())
}

#[tokio::test]
async fn nothing_saved_is_none() {
    each_store(|store| async move {
        assert_eq!(store.load(&key("a")).await.expect("load"), None);
    })
    .await;
}

#[tokio::test]
async fn every_kind_of_position_is_kept() {
    each_store(|store| async move {
        let k = key("a");
        let positions = [
            (
                "s1",
                ShardCheckpoint::Discovered {
                    from: None,
                    since_ms: 7,
                },
            ),
            (
                "s2",
                ShardCheckpoint::Discovered {
                    from: Some(seq(3)),
                    since_ms: 8,
                },
            ),
            (
                "s3",
                ShardCheckpoint::Latest {
                    since_ms: 1_700_000_000_000,
                },
            ),
            ("s4", at(42)),
            ("s5", ShardCheckpoint::Ended),
        ];
        let updates = positions
            .iter()
            .map(|(s, c)| (s.to_string(), c.clone()))
            .collect();
        store.save(&k, 1_000, updates).await.expect("save");
        let stored = store.load(&k).await.expect("load").expect("stored");
        assert_eq!(stored.started_at_ms, 1_000);
        for (s, c) in positions {
            assert_eq!(stored.shards.get(s), Some(&c), "shard {s}");
        }
    })
    .await;
}

#[tokio::test]
async fn the_first_start_is_recorded_once() {
    each_store(|store| async move {
        let k = key("a");
        store
            .save(&k, 1_000, vec![("s".into(), at(1))])
            .await
            .expect("save");
        store
            .save(&k, 2_000, vec![("s".into(), at(2))])
            .await
            .expect("save");
        assert_eq!(
            store
                .load(&k)
                .await
                .expect("load")
                .expect("stored")
                .started_at_ms,
            1_000
        );
    })
    .await;
}

#[tokio::test]
async fn a_position_never_moves_backwards() {
    each_store(|store| async move {
        let k = key("a");
        let steps = [
            (
                ShardCheckpoint::Discovered {
                    from: None,
                    since_ms: 1,
                },
                true,
            ),
            (
                ShardCheckpoint::Discovered {
                    from: Some(seq(2)),
                    since_ms: 2,
                },
                true,
            ),
            (
                ShardCheckpoint::Discovered {
                    from: None,
                    since_ms: 3,
                },
                false,
            ),
            (at(10), true),
            (at(9), false),
            (ShardCheckpoint::Latest { since_ms: 5 }, false),
            (
                ShardCheckpoint::Discovered {
                    from: None,
                    since_ms: 4,
                },
                false,
            ),
            (at(1_000_000), true),
            (ShardCheckpoint::Ended, true),
            (at(2_000_000), false),
        ];
        let mut expected = None;
        for (step, moves) in steps {
            store
                .save(&k, 1, vec![("s".into(), step.clone())])
                .await
                .unwrap_or_else(|e| panic!("saving {step:?} is not an error: {e}"));
            if moves {
                expected = Some(step.clone());
            }
            assert_eq!(
                shard(store.as_ref(), &k, "s").await,
                expected,
                "after {step:?}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn saving_twice_is_harmless() {
    each_store(|store| async move {
        let k = key("a");
        for _ in 0..2 {
            store
                .save(
                    &k,
                    1,
                    vec![("s".into(), at(5)), ("t".into(), ShardCheckpoint::Ended)],
                )
                .await
                .expect("save");
        }
        assert_eq!(shard(store.as_ref(), &k, "s").await, Some(at(5)));
        assert_eq!(
            shard(store.as_ref(), &k, "t").await,
            Some(ShardCheckpoint::Ended)
        );
    })
    .await;
}

#[tokio::test]
async fn streams_and_applications_are_kept_apart() {
    each_store(|store| async move {
        let (a, b) = (key("a"), key("b"));
        let other_app = StreamKey {
            application: "other".into(),
            ..a.clone()
        };
        store
            .save(&a, 1, vec![("s".into(), at(1))])
            .await
            .expect("save a");
        assert_eq!(shard(store.as_ref(), &a, "s").await, Some(at(1)));
        assert_eq!(store.load(&other_app).await.expect("load"), None);
        // A store that holds one stream (the replica) may refuse another with Mismatch; one
        // that takes it keeps the two apart.
        if store.save(&b, 1, vec![("s".into(), at(2))]).await.is_ok() {
            assert_eq!(shard(store.as_ref(), &b, "s").await, Some(at(2)));
            assert_eq!(shard(store.as_ref(), &a, "s").await, Some(at(1)));
        }
        let listed = store.streams("app").await.expect("streams");
        assert!(listed.contains(&a.stream_arn), "{listed:?}");
    })
    .await;
}
