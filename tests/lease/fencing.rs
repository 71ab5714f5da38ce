//! THE fencing guarantee: a worker that lost its lease — paused past its expiry and taken over,
//! or stolen from — can never move the checkpoint, even with a position beyond the new owner's,
//! and the stored checkpoint stays the new owner's.

use std::time::Duration;

use dynamodb_stream::lease::{LeaseErrorKind, LeaseStore};

use crate::common::{expect_kind, key, now_ms, one_lease, processed, the_lease, SHARD};

both_stores!(
    paused_owner_is_fenced_after_expiry_and_takeover,
    owner_is_fenced_after_a_steal,
);

const A: &str = "worker-a";
const B: &str = "worker-b";

async fn paused_owner_is_fenced_after_expiry_and_takeover(store: impl LeaseStore) {
    const LEASE_MS: u64 = 300;
    one_lease(&store).await;

    // A takes the lease and checkpoints once.
    let a = store
        .take(&key(), SHARD, 0, A, now_ms() + LEASE_MS)
        .await
        .expect("A takes");
    let a_counter = store
        .checkpoint(&key(), SHARD, A, a.counter, &processed(100))
        .await
        .expect("A checkpoints");

    // A pauses (GC, partition, stuck handler): it stops calling the store. B, listing, sees
    // A's lease run out by the wall clock.
    let seen = loop {
        let lease = the_lease(&store).await;
        if now_ms() > lease.expires_at_ms {
            break lease;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(seen.owner.as_deref(), Some(A));
    assert_eq!(seen.counter, a_counter);

    // B takes the expired lease, resumes from A's checkpoint and moves on.
    let b = store
        .take(&key(), SHARD, seen.counter, B, now_ms() + 60_000)
        .await
        .expect("B takes the expired lease");
    assert_eq!(b.checkpoint, Some(processed(100)));
    let b_counter = store
        .checkpoint(&key(), SHARD, B, b.counter, &processed(200))
        .await
        .expect("B checkpoints");

    // A wakes up still believing it owns the shard, with a position it reached before it
    // paused — beyond B's, so only fencing can refuse it.
    let err = expect_kind(
        store
            .checkpoint(&key(), SHARD, A, a_counter, &processed(300))
            .await,
        LeaseErrorKind::Conflict,
    );
    assert!(err.to_string().contains(B), "names the new owner: {err}");
    expect_kind(
        store
            .renew(&key(), SHARD, A, a_counter, now_ms() + 60_000)
            .await,
        LeaseErrorKind::Conflict,
    );
    expect_kind(
        store.release(&key(), SHARD, A, a_counter).await,
        LeaseErrorKind::Conflict,
    );

    let lease = the_lease(&store).await;
    assert_eq!(
        lease.checkpoint,
        Some(processed(200)),
        "B's checkpoint stands"
    );
    assert_eq!(lease.owner.as_deref(), Some(B));
    assert_eq!(lease.counter, b_counter);
}

async fn owner_is_fenced_after_a_steal(store: impl LeaseStore) {
    one_lease(&store).await;
    let a = store
        .take(&key(), SHARD, 0, A, now_ms() + 60_000)
        .await
        .expect("A takes");
    let a_counter = store
        .checkpoint(&key(), SHARD, A, a.counter, &processed(10))
        .await
        .expect("A checkpoints");
    // B steals the live lease (load balancing) with the counter it listed.
    let listed = the_lease(&store).await;
    let b = store
        .take(&key(), SHARD, listed.counter, B, now_ms() + 60_000)
        .await
        .expect("B steals");
    let b_counter = store
        .checkpoint(&key(), SHARD, B, b.counter, &processed(20))
        .await
        .expect("B checkpoints");

    // A has not noticed yet; its in-flight checkpoint is refused.
    expect_kind(
        store
            .checkpoint(&key(), SHARD, A, a_counter, &processed(30))
            .await,
        LeaseErrorKind::Conflict,
    );
    let lease = the_lease(&store).await;
    assert_eq!(
        (lease.owner.as_deref(), lease.counter, lease.checkpoint),
        (Some(B), b_counter, Some(processed(20)))
    );
}
