//! `release` frees a lease (owner and counter conditional) so another worker takes it at once;
//! `delete` removes a lease, idempotently.

use dynamodb_stream::checkpoint::ShardCheckpoint;
use dynamodb_stream::lease::{LeaseErrorKind, LeaseStore};

use crate::common::{expect_kind, held_by, key, now_ms, the_lease, SHARD};

both_stores!(
    release_then_take_by_another,
    only_the_owner_at_the_current_counter_releases,
    delete_is_idempotent,
);

async fn release_then_take_by_another(store: impl LeaseStore) {
    let held = held_by(&store, "w1", now_ms() + 60_000).await;
    let c = store
        .release(&key(), SHARD, "w1", held.counter)
        .await
        .expect("release");
    assert_eq!(c, 2);
    let lease = the_lease(&store).await;
    assert_eq!(
        (lease.owner.as_deref(), lease.expires_at_ms, lease.counter),
        (None, 0, 2)
    );
    // Fenced: the former owner can no longer write with any counter it held.
    for counter in [held.counter, c] {
        expect_kind(
            store
                .checkpoint(&key(), SHARD, "w1", counter, &ShardCheckpoint::Ended)
                .await,
            LeaseErrorKind::Conflict,
        );
        expect_kind(
            store.renew(&key(), SHARD, "w1", counter, 1).await,
            LeaseErrorKind::Conflict,
        );
    }
    let taken = store
        .take(&key(), SHARD, c, "w2", now_ms() + 60_000)
        .await
        .expect("take released lease before its old expiry");
    assert_eq!((taken.owner.as_deref(), taken.counter), (Some("w2"), 3));
}

async fn only_the_owner_at_the_current_counter_releases(store: impl LeaseStore) {
    let held = held_by(&store, "w1", 60_000).await;
    expect_kind(
        store.release(&key(), SHARD, "w2", held.counter).await,
        LeaseErrorKind::Conflict,
    );
    expect_kind(
        store.release(&key(), SHARD, "w1", held.counter - 1).await,
        LeaseErrorKind::Conflict,
    );
    assert_eq!(the_lease(&store).await, held);
    let c = store
        .release(&key(), SHARD, "w1", held.counter)
        .await
        .expect("release");
    // Releasing twice: the lease is no longer w1's.
    expect_kind(
        store.release(&key(), SHARD, "w1", c).await,
        LeaseErrorKind::Conflict,
    );
    expect_kind(
        store.release(&key(), "shardId-missing", "w1", 0).await,
        LeaseErrorKind::NotFound,
    );
}

async fn delete_is_idempotent(store: impl LeaseStore) {
    held_by(&store, "w1", 60_000).await;
    store.delete(&key(), SHARD).await.expect("delete");
    assert!(store.list(&key()).await.expect("list").is_empty());
    store.delete(&key(), SHARD).await.expect("delete again");
    expect_kind(
        store.renew(&key(), SHARD, "w1", 1, 5).await,
        LeaseErrorKind::NotFound,
    );
    assert!(
        store.create(&key(), SHARD, &[]).await.expect("recreate"),
        "a deleted lease can be created afresh"
    );
    assert_eq!(the_lease(&store).await.counter, 0);
}
