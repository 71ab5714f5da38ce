//! `checkpoint` writes a position only for the owner at the current counter, and never moves
//! it backwards (`ShardCheckpoint::advances`, the one rule every store obeys): `Discovered` <
//! `Latest` < `Processed` (by sequence number, numerically) < `Ended`; an earlier `Latest`
//! bookmark replaces a later one (it skips less), never the other way.

use dynamodb_stream::checkpoint::ShardCheckpoint;
use dynamodb_stream::lease::{LeaseErrorKind, LeaseStore};

use crate::common::{expect_kind, held_by, key, processed, processed_digits, the_lease, SHARD};

both_stores!(
    owner_checkpoints_every_kind_of_position,
    processed_never_moves_backwards_numerically,
    nothing_moves_an_ended_shard_back,
    non_owner_or_stale_counter_cannot_checkpoint,
    checkpoint_of_a_missing_lease_is_not_found,
    checkpoint_survives_a_change_of_owner,
);

async fn owner_checkpoints_every_kind_of_position(store: impl LeaseStore) {
    let held = held_by(&store, "w1", 50_000).await;
    let positions = [
        ShardCheckpoint::Discovered {
            from: None,
            since_ms: 1_700_000_000_000,
        },
        ShardCheckpoint::Discovered {
            from: Some("100000000000000000050".parse().expect("seq")),
            since_ms: 1_700_000_000_001,
        },
        ShardCheckpoint::Latest {
            since_ms: 1_700_000_000_001,
        },
        ShardCheckpoint::Latest {
            since_ms: 1_700_000_000_000,
        },
        processed(100),
        processed(250),
        ShardCheckpoint::Ended,
    ];
    let mut counter = held.counter;
    for position in positions {
        let next = store
            .checkpoint(&key(), SHARD, "w1", counter, &position)
            .await
            .unwrap_or_else(|e| panic!("checkpoint {position:?}: {e}"));
        assert_eq!(next, counter + 1);
        counter = next;
        let lease = the_lease(&store).await;
        assert_eq!(lease.checkpoint.as_ref(), Some(&position));
        assert_eq!(lease.counter, counter);
        assert_eq!(lease.owner.as_deref(), Some("w1"), "the owner keeps it");
        assert_eq!(lease.expires_at_ms, 50_000, "a checkpoint does not renew");
    }
}

async fn processed_never_moves_backwards_numerically(store: impl LeaseStore) {
    let held = held_by(&store, "w1", 50_000).await;
    // 21 digits vs 22 digits: as text "9..." > "1...", as numbers the 22-digit one is larger.
    let small = processed_digits("900000000000000000001");
    let big = processed_digits("1000000000000000000000");
    let c = store
        .checkpoint(&key(), SHARD, "w1", held.counter, &small)
        .await
        .expect("small");
    let c = store
        .checkpoint(&key(), SHARD, "w1", c, &big)
        .await
        .expect("small -> big is forward");
    let err = expect_kind(
        store.checkpoint(&key(), SHARD, "w1", c, &small).await,
        LeaseErrorKind::Conflict,
    );
    assert!(err.to_string().contains("backwards"), "{err}");
    assert_eq!(the_lease(&store).await.checkpoint, Some(big.clone()));
    assert_eq!(the_lease(&store).await.counter, c, "refused: no write");

    // The same position again is accepted (and counts as a write).
    let c = store
        .checkpoint(&key(), SHARD, "w1", c, &big)
        .await
        .expect("same position");
    // Processed back to latest is backwards too.
    expect_kind(
        store
            .checkpoint(
                &key(),
                SHARD,
                "w1",
                c,
                &ShardCheckpoint::Latest { since_ms: 1 },
            )
            .await,
        LeaseErrorKind::Conflict,
    );
    assert_eq!(the_lease(&store).await.checkpoint, Some(big));
}

async fn nothing_moves_an_ended_shard_back(store: impl LeaseStore) {
    let held = held_by(&store, "w1", 50_000).await;
    let c = store
        .checkpoint(&key(), SHARD, "w1", held.counter, &processed(5))
        .await
        .expect("processed");
    let c = store
        .checkpoint(&key(), SHARD, "w1", c, &ShardCheckpoint::Ended)
        .await
        .expect("ended");
    for backwards in [processed(6), ShardCheckpoint::Latest { since_ms: 1 }] {
        expect_kind(
            store.checkpoint(&key(), SHARD, "w1", c, &backwards).await,
            LeaseErrorKind::Conflict,
        );
    }
    let c = store
        .checkpoint(&key(), SHARD, "w1", c, &ShardCheckpoint::Ended)
        .await
        .expect("ended again");
    let lease = the_lease(&store).await;
    assert_eq!(
        (lease.checkpoint, lease.counter),
        (Some(ShardCheckpoint::Ended), c)
    );
}

async fn non_owner_or_stale_counter_cannot_checkpoint(store: impl LeaseStore) {
    let held = held_by(&store, "w1", 50_000).await;
    let c = store
        .checkpoint(&key(), SHARD, "w1", held.counter, &processed(10))
        .await
        .expect("checkpoint");
    expect_kind(
        store
            .checkpoint(&key(), SHARD, "w2", c, &processed(20))
            .await,
        LeaseErrorKind::Conflict,
    );
    expect_kind(
        store
            .checkpoint(&key(), SHARD, "w1", held.counter, &processed(20))
            .await,
        LeaseErrorKind::Conflict,
    );
    let lease = the_lease(&store).await;
    assert_eq!((lease.checkpoint, lease.counter), (Some(processed(10)), c));
}

async fn checkpoint_of_a_missing_lease_is_not_found(store: impl LeaseStore) {
    expect_kind(
        store
            .checkpoint(&key(), SHARD, "w1", 0, &processed(1))
            .await,
        LeaseErrorKind::NotFound,
    );
}

async fn checkpoint_survives_a_change_of_owner(store: impl LeaseStore) {
    let held = held_by(&store, "w1", 50_000).await;
    let c = store
        .checkpoint(&key(), SHARD, "w1", held.counter, &processed(42))
        .await
        .expect("checkpoint");
    let c = store
        .release(&key(), SHARD, "w1", c)
        .await
        .expect("release");
    let taken = store
        .take(&key(), SHARD, c, "w2", 60_000)
        .await
        .expect("take");
    assert_eq!(taken.checkpoint, Some(processed(42)));
    assert_eq!(taken.owner.as_deref(), Some("w2"));
}
