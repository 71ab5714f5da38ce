//! `create` makes a free lease once and never overwrites; `list` returns every lease of one
//! (application, stream) key, sorted by shard id, and nothing of other keys.

use dynamodb_stream::lease::{Lease, LeaseStore};

use crate::common::{key, key_of, SHARD};

both_stores!(
    create_is_idempotent,
    list_returns_the_leases_of_one_key_sorted
);

async fn create_is_idempotent(store: impl LeaseStore) {
    let parents = vec!["shardId-p1".to_owned()];
    assert!(store.create(&key(), SHARD, &parents).await.expect("create"));
    assert!(!store.create(&key(), SHARD, &[]).await.expect("again"));
    assert!(!store.create(&key(), SHARD, &parents).await.expect("again"));
    assert_eq!(
        store.list(&key()).await.expect("list"),
        vec![Lease {
            shard_id: SHARD.into(),
            parent_shard_ids: parents.clone(),
            owner: None,
            counter: 0,
            expires_at_ms: 0,
            checkpoint: None,
            handoff_to: None,
        }]
    );

    // Creating over a lease in use leaves it alone.
    let taken = store
        .take(&key(), SHARD, 0, "w1", 1_000)
        .await
        .expect("take");
    assert!(!store.create(&key(), SHARD, &[]).await.expect("again"));
    assert_eq!(store.list(&key()).await.expect("list"), vec![taken]);
}

async fn list_returns_the_leases_of_one_key_sorted(store: impl LeaseStore) {
    assert!(store.list(&key()).await.expect("empty").is_empty());
    let two_parents = vec!["shardId-b".to_owned(), "shardId-a".to_owned()];
    for (shard, parents) in [
        ("shardId-3", vec![]),
        ("shardId-1", vec!["shardId-0".to_owned()]),
        ("shardId-2", two_parents.clone()),
    ] {
        assert!(store.create(&key(), shard, &parents).await.expect("create"));
    }
    // Same stream, another application; same application, another stream.
    let other_app = key_of("other");
    let other_stream = dynamodb_stream::checkpoint::StreamKey {
        stream_arn: format!("{}-2", key().stream_arn),
        ..key()
    };
    assert!(store
        .create(&other_app, "shardId-1", &[])
        .await
        .expect("app"));
    assert!(store
        .create(&other_stream, "shardId-9", &[])
        .await
        .expect("stream"));

    let leases = store.list(&key()).await.expect("list");
    let shards: Vec<_> = leases.iter().map(|l| l.shard_id.as_str()).collect();
    assert_eq!(shards, ["shardId-1", "shardId-2", "shardId-3"]);
    assert_eq!(leases[0].parent_shard_ids, ["shardId-0"]);
    assert_eq!(
        leases[1].parent_shard_ids, two_parents,
        "parents keep their order"
    );
    assert!(leases[2].parent_shard_ids.is_empty());
    assert!(leases
        .iter()
        .all(|l| l.owner.is_none() && l.counter == 0 && l.checkpoint.is_none()));

    let other = store.list(&other_app).await.expect("list");
    assert_eq!(other.len(), 1);
    let other = store.list(&other_stream).await.expect("list");
    assert_eq!(other.len(), 1);
    assert_eq!(other[0].shard_id, "shardId-9");
}
