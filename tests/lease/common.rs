//! Helpers shared by the lease tests.

#![allow(dead_code)]

use std::fmt::Debug;
use std::time::{SystemTime, UNIX_EPOCH};

use dynamodb_stream::checkpoint::{ShardCheckpoint, StreamKey};
use dynamodb_stream::lease::{DynamoDbLeaseStore, Lease, LeaseError, LeaseErrorKind, LeaseStore};
use dynamodb_stream::SequenceNumber;

use crate::ddb_local::clients;

/// The lease table of every DynamoDB test.
pub const TABLE: &str = "leases";

pub const SHARD: &str = "shardId-00000001700000000000-aaaaaaaa";

/// A lease store on a fresh lease table, in a DynamoDB Local namespace of its own.
pub async fn dynamodb_store(test_name: &str) -> DynamoDbLeaseStore {
    let c = clients(test_name);
    let store = DynamoDbLeaseStore::new(c.dynamodb, TABLE);
    store.ensure_table().await.expect("ensure_table");
    store
}

pub fn key() -> StreamKey {
    key_of("app")
}

pub fn key_of(application: &str) -> StreamKey {
    StreamKey {
        application: application.into(),
        stream_arn:
            "arn:aws:dynamodb:ddblocal:000000000000:table/orders/stream/2024-01-01T00:00:00.000"
                .into(),
    }
}

/// A 21-digit sequence number.
pub fn seq(n: u128) -> SequenceNumber {
    format!("{n:021}").parse().expect("valid sequence number")
}

pub fn processed(n: u128) -> ShardCheckpoint {
    ShardCheckpoint::Processed {
        sequence_number: seq(n),
    }
}

pub fn processed_digits(digits: &str) -> ShardCheckpoint {
    ShardCheckpoint::Processed {
        sequence_number: digits.parse().expect("valid sequence number"),
    }
}

pub fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    u64::try_from(since_epoch.as_millis()).expect("ms fit in u64")
}

/// The error of `result`, which must be of `kind`.
pub fn expect_kind<T: Debug>(result: Result<T, LeaseError>, kind: LeaseErrorKind) -> LeaseError {
    match result {
        Err(e) => {
            assert_eq!(e.kind(), kind, "{e}");
            e
        }
        Ok(v) => panic!("expected {kind:?}, got Ok({v:?})"),
    }
}

/// The one lease of [`SHARD`] under [`key()`].
pub async fn the_lease(store: &impl LeaseStore) -> Lease {
    let mut all = store.list(&key()).await.expect("list");
    let i = all
        .iter()
        .position(|l| l.shard_id == SHARD)
        .unwrap_or_else(|| panic!("no lease of {SHARD} in {all:?}"));
    all.swap_remove(i)
}

/// A free lease of [`SHARD`] under [`key()`].
pub async fn one_lease(store: &impl LeaseStore) {
    assert!(store.create(&key(), SHARD, &[]).await.expect("create"));
}

/// [`SHARD`] held by `owner` at counter 1, valid until `expires_at_ms`.
pub async fn held_by(store: &impl LeaseStore, owner: &str, expires_at_ms: u64) -> Lease {
    one_lease(store).await;
    store
        .take(&key(), SHARD, 0, owner, expires_at_ms)
        .await
        .expect("take")
}
