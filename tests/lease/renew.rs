//! `renew` extends a lease only for its owner at the current counter.

use dynamodb_stream::lease::{LeaseErrorKind, LeaseStore};

use crate::common::{expect_kind, held_by, key, now_ms, one_lease, the_lease, SHARD};

both_stores!(
    owner_renews_with_the_current_counter,
    non_owner_cannot_renew,
    stale_counter_cannot_renew,
    free_or_missing_lease_cannot_be_renewed,
);

async fn owner_renews_with_the_current_counter(store: impl LeaseStore) {
    let held = held_by(&store, "w1", now_ms() + 1_000).await;
    let later = now_ms() + 20_000;
    let c = store
        .renew(&key(), SHARD, "w1", held.counter, later)
        .await
        .expect("renew");
    assert_eq!(c, 2);
    let c = store
        .renew(&key(), SHARD, "w1", c, later + 1)
        .await
        .expect("renew again");
    assert_eq!(c, 3);
    let lease = the_lease(&store).await;
    assert_eq!(
        (lease.owner.as_deref(), lease.counter, lease.expires_at_ms),
        (Some("w1"), 3, later + 1)
    );
}

async fn non_owner_cannot_renew(store: impl LeaseStore) {
    let held = held_by(&store, "w1", 5_000).await;
    let err = expect_kind(
        store
            .renew(&key(), SHARD, "w2", held.counter, now_ms() + 9_000)
            .await,
        LeaseErrorKind::Conflict,
    );
    assert!(err.to_string().contains("\"w1\""), "names the owner: {err}");
    assert_eq!(the_lease(&store).await, held);
}

async fn stale_counter_cannot_renew(store: impl LeaseStore) {
    let held = held_by(&store, "w1", 5_000).await;
    let c = store
        .renew(&key(), SHARD, "w1", held.counter, 6_000)
        .await
        .expect("renew");
    // Renewing again with the counter before the last renewal.
    expect_kind(
        store.renew(&key(), SHARD, "w1", held.counter, 7_000).await,
        LeaseErrorKind::Conflict,
    );
    let lease = the_lease(&store).await;
    assert_eq!((lease.counter, lease.expires_at_ms), (c, 6_000));
}

async fn free_or_missing_lease_cannot_be_renewed(store: impl LeaseStore) {
    expect_kind(
        store.renew(&key(), SHARD, "w1", 0, 5).await,
        LeaseErrorKind::NotFound,
    );
    one_lease(&store).await;
    expect_kind(
        store.renew(&key(), SHARD, "w1", 0, 5).await,
        LeaseErrorKind::Conflict,
    );
    let lease = the_lease(&store).await;
    assert_eq!((lease.owner, lease.counter), (None, 0));
}
