//! `request_handoff` asks the owner of a live lease to hand it over: it names the asker on the
//! lease without changing the counter (the owner's fenced writes go on), only while the named
//! owner holds it; the owner's take on the asker's behalf (the handoff) and a release clear it.

use dynamodb_stream::checkpoint::ShardCheckpoint;
use dynamodb_stream::lease::{LeaseErrorKind, LeaseStore};

use crate::common::{expect_kind, held_by, key, now_ms, the_lease, SHARD};

both_stores!(
    a_request_names_the_asker_and_leaves_the_counter,
    only_the_current_owner_can_be_asked,
    the_handoff_and_a_release_clear_the_request,
);

async fn a_request_names_the_asker_and_leaves_the_counter(store: impl LeaseStore) {
    let held = held_by(&store, "w1", now_ms() + 60_000).await;
    assert!(store
        .request_handoff(&key(), SHARD, "w1", "w2")
        .await
        .expect("asked"));
    let lease = the_lease(&store).await;
    assert_eq!(lease.handoff_to.as_deref(), Some("w2"));
    assert_eq!(
        (lease.owner.as_deref(), lease.counter),
        (Some("w1"), held.counter)
    );
    // The owner goes on: its fenced writes still succeed, and keep the request.
    let c = store
        .checkpoint(
            &key(),
            SHARD,
            "w1",
            held.counter,
            &ShardCheckpoint::Processed {
                sequence_number: "100000000000000000007".parse().expect("valid"),
            },
        )
        .await
        .expect("checkpoint");
    let c = store
        .renew(&key(), SHARD, "w1", c, now_ms() + 60_000)
        .await
        .expect("renew");
    let lease = the_lease(&store).await;
    assert_eq!(
        (lease.counter, lease.handoff_to.as_deref()),
        (c, Some("w2"))
    );
}

async fn only_the_current_owner_can_be_asked(store: impl LeaseStore) {
    held_by(&store, "w1", now_ms() + 60_000).await;
    expect_kind(
        store.request_handoff(&key(), SHARD, "w3", "w2").await,
        LeaseErrorKind::Conflict,
    );
    assert_eq!(the_lease(&store).await.handoff_to, None);
    expect_kind(
        store
            .request_handoff(&key(), "shardId-missing", "w1", "w2")
            .await,
        LeaseErrorKind::NotFound,
    );
}

async fn the_handoff_and_a_release_clear_the_request(store: impl LeaseStore) {
    let held = held_by(&store, "w1", now_ms() + 60_000).await;
    store
        .request_handoff(&key(), SHARD, "w1", "w2")
        .await
        .expect("asked");
    // The handoff: the owner takes the lease on the asker's behalf, fenced by its counter.
    let handed = store
        .take(&key(), SHARD, held.counter, "w2", now_ms() + 60_000)
        .await
        .expect("handed over");
    assert_eq!(
        (handed.owner.as_deref(), handed.handoff_to.as_deref()),
        (Some("w2"), None)
    );
    // The former owner is fenced out.
    expect_kind(
        store.renew(&key(), SHARD, "w1", held.counter, 1).await,
        LeaseErrorKind::Conflict,
    );
    store
        .request_handoff(&key(), SHARD, "w2", "w3")
        .await
        .expect("asked again");
    store
        .release(&key(), SHARD, "w2", handed.counter)
        .await
        .expect("release");
    let lease = the_lease(&store).await;
    assert_eq!((lease.owner, lease.handoff_to), (None, None));
}
