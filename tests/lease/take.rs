//! `take` succeeds only with the lease's current counter — whether the lease is free, expired
//! or still held (a steal) — and returns the lease with counter + 1.

use dynamodb_stream::lease::{LeaseErrorKind, LeaseStore};

use crate::common::{expect_kind, held_by, key, now_ms, one_lease, the_lease, SHARD};

both_stores!(
    take_free_lease,
    take_with_a_wrong_counter_conflicts,
    take_expired_lease,
    steal_live_lease_needs_the_current_counter,
    take_missing_lease_is_not_found,
);

async fn take_free_lease(store: impl LeaseStore) {
    one_lease(&store).await;
    let expires = now_ms() + 10_000;
    let taken = store
        .take(&key(), SHARD, 0, "w1", expires)
        .await
        .expect("take");
    assert_eq!(taken.owner.as_deref(), Some("w1"));
    assert_eq!(taken.counter, 1);
    assert_eq!(taken.expires_at_ms, expires);
    assert_eq!(taken.shard_id, SHARD);
    assert_eq!(the_lease(&store).await, taken);
}

async fn take_with_a_wrong_counter_conflicts(store: impl LeaseStore) {
    one_lease(&store).await;
    let before = the_lease(&store).await;
    let err = expect_kind(
        store.take(&key(), SHARD, 1, "w1", 5).await,
        LeaseErrorKind::Conflict,
    );
    assert!(err.to_string().contains(SHARD), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(
        the_lease(&store).await,
        before,
        "a refused take changes nothing"
    );
}

async fn take_expired_lease(store: impl LeaseStore) {
    // Held by w1 until long ago.
    let held = held_by(&store, "w1", 1_000).await;
    let expires = now_ms() + 10_000;
    let taken = store
        .take(&key(), SHARD, held.counter, "w2", expires)
        .await
        .expect("take expired");
    assert_eq!(
        (taken.owner.as_deref(), taken.counter, taken.expires_at_ms),
        (Some("w2"), 2, expires)
    );
}

async fn steal_live_lease_needs_the_current_counter(store: impl LeaseStore) {
    let held = held_by(&store, "w1", now_ms() + 60_000).await;
    // The counter w2 saw before w1 took the lease.
    expect_kind(
        store.take(&key(), SHARD, 0, "w2", now_ms() + 60_000).await,
        LeaseErrorKind::Conflict,
    );
    assert_eq!(the_lease(&store).await.owner.as_deref(), Some("w1"));
    let stolen = store
        .take(&key(), SHARD, held.counter, "w2", now_ms() + 60_000)
        .await
        .expect("steal");
    assert_eq!((stolen.owner.as_deref(), stolen.counter), (Some("w2"), 2));
    assert_eq!(the_lease(&store).await, stolen);
}

async fn take_missing_lease_is_not_found(store: impl LeaseStore) {
    let err = expect_kind(
        store.take(&key(), SHARD, 0, "w1", 5).await,
        LeaseErrorKind::NotFound,
    );
    assert!(err.to_string().contains(SHARD), "{err}");
    assert!(
        store.list(&key()).await.expect("list").is_empty(),
        "a take never creates a lease"
    );
}
