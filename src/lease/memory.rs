use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use super::{
    check_counter, check_forward, check_held_by, check_owner, next_counter, not_found, Lease,
    LeaseError, LeaseStore,
};
use crate::checkpoint::{ShardCheckpoint, StreamKey};
use crate::source::BoxFuture;

type Leases = BTreeMap<StreamKey, BTreeMap<String, Lease>>;

/// Leases in memory: lost with the process, shared by clones.
///
/// Several consumers in one process built with clones of one store share its leases exactly as
/// workers on several hosts share a DynamoDB lease table, with the same conditional writes.
/// Useful for tests and for scaling out within one process.
///
/// ```
/// use dynamodb_stream::lease::MemoryLeaseStore;
/// let store = MemoryLeaseStore::new();
/// let same = store.clone(); // shares the same leases
/// # drop(same);
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryLeaseStore {
    inner: Arc<Mutex<Leases>>,
    /// With stale reads: recent versions of every lease, and the dice.
    stale: Option<Arc<Mutex<Stale>>>,
}

/// What [`MemoryLeaseStore::with_stale_reads`] keeps.
#[derive(Debug)]
struct Stale {
    rng: fastrand::Rng,
    versions: BTreeMap<(StreamKey, String), VecDeque<Lease>>,
}

/// How many versions of a lease a stale read may go back to.
const STALE_VERSIONS: usize = 4;

impl MemoryLeaseStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose [`list_recent`](LeaseStore::list_recent) answers like an eventually
    /// consistent read: each lease, independently, as it is or as one of its last few versions
    /// (drawn from `seed`). For tests of what a worker does with a stale listing.
    pub fn with_stale_reads(seed: u64) -> Self {
        Self {
            inner: Arc::default(),
            stale: Some(Arc::new(Mutex::new(Stale {
                rng: fastrand::Rng::with_seed(seed),
                versions: BTreeMap::new(),
            }))),
        }
    }

    /// Remember `lease` as the newest version of itself (stale reads only).
    fn remember(&self, key: &StreamKey, lease: &Lease) {
        if let Some(stale) = &self.stale {
            let mut stale = stale.lock().unwrap_or_else(|p| p.into_inner());
            let versions = stale
                .versions
                .entry((key.clone(), lease.shard_id.clone()))
                .or_default();
            versions.push_back(lease.clone());
            if versions.len() > STALE_VERSIONS {
                versions.pop_front();
            }
        }
    }

    /// A copy of every lease of `key`, sorted by shard id.
    pub fn snapshot(&self, key: &StreamKey) -> Vec<Lease> {
        self.lock()
            .get(key)
            .map(|leases| leases.values().cloned().collect())
            .unwrap_or_default()
    }

    fn lock(&self) -> MutexGuard<'_, Leases> {
        // Every update checks all its conditions before it changes anything, and then only
        // assigns fields, so a panic while holding the lock cannot leave a lease half-written:
        // the data behind a poisoned lock is still sound.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Apply `write` to the lease of `shard_id` under the lock, or report it missing.
    fn with_lease<T>(
        &self,
        key: &StreamKey,
        shard_id: &str,
        write: impl FnOnce(&mut Lease) -> Result<T, LeaseError>,
    ) -> Result<T, LeaseError> {
        let mut leases = self.lock();
        match leases.get_mut(key).and_then(|l| l.get_mut(shard_id)) {
            Some(lease) => {
                let out = write(lease);
                if out.is_ok() {
                    self.remember(key, lease);
                }
                out
            }
            None => Err(not_found(key, shard_id)),
        }
    }
}

impl LeaseStore for MemoryLeaseStore {
    fn ensure_table(&self) -> BoxFuture<'_, Result<(), LeaseError>> {
        Box::pin(async { Ok(()) })
    }

    fn list(&self, key: &StreamKey) -> BoxFuture<'_, Result<Vec<Lease>, LeaseError>> {
        let out = self.snapshot(key);
        Box::pin(async move { Ok(out) })
    }

    fn list_recent(&self, key: &StreamKey) -> BoxFuture<'_, Result<Vec<Lease>, LeaseError>> {
        let mut out = self.snapshot(key);
        if let Some(stale) = &self.stale {
            let mut stale = stale.lock().unwrap_or_else(|p| p.into_inner());
            let Stale { rng, versions } = &mut *stale;
            for lease in &mut out {
                if let Some(v) = versions.get(&(key.clone(), lease.shard_id.clone())) {
                    if let Some(old) = v.get(rng.usize(..v.len())) {
                        *lease = old.clone();
                    }
                }
            }
        }
        Box::pin(async move { Ok(out) })
    }

    fn create(
        &self,
        key: &StreamKey,
        shard_id: &str,
        parent_shard_ids: &[String],
    ) -> BoxFuture<'_, Result<bool, LeaseError>> {
        let mut leases = self.lock();
        let shards = leases.entry(key.clone()).or_default();
        let created = if shards.contains_key(shard_id) {
            false
        } else {
            let lease = Lease::new_free(shard_id, parent_shard_ids);
            self.remember(key, &lease);
            shards.insert(shard_id.to_owned(), lease);
            true
        };
        Box::pin(async move { Ok(created) })
    }

    fn take(
        &self,
        key: &StreamKey,
        shard_id: &str,
        expected_counter: u64,
        owner: &str,
        expires_at_ms: u64,
    ) -> BoxFuture<'_, Result<Lease, LeaseError>> {
        let out = self.with_lease(key, shard_id, |lease| {
            check_counter(lease, expected_counter)?;
            lease.counter = next_counter(shard_id, lease.counter)?;
            lease.owner = Some(owner.to_owned());
            lease.expires_at_ms = expires_at_ms;
            lease.handoff_to = None;
            Ok(lease.clone())
        });
        Box::pin(async move { out })
    }

    fn renew(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        counter: u64,
        expires_at_ms: u64,
    ) -> BoxFuture<'_, Result<u64, LeaseError>> {
        let out = self.with_lease(key, shard_id, |lease| {
            check_owner(lease, owner, counter)?;
            lease.counter = next_counter(shard_id, lease.counter)?;
            lease.expires_at_ms = expires_at_ms;
            Ok(lease.counter)
        });
        Box::pin(async move { out })
    }

    fn checkpoint(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        counter: u64,
        checkpoint: &ShardCheckpoint,
    ) -> BoxFuture<'_, Result<u64, LeaseError>> {
        let out = self.with_lease(key, shard_id, |lease| {
            check_owner(lease, owner, counter)?;
            check_forward(lease, checkpoint)?;
            lease.counter = next_counter(shard_id, lease.counter)?;
            lease.checkpoint = Some(checkpoint.clone());
            Ok(lease.counter)
        });
        Box::pin(async move { out })
    }

    fn release(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        counter: u64,
    ) -> BoxFuture<'_, Result<u64, LeaseError>> {
        let out = self.with_lease(key, shard_id, |lease| {
            check_owner(lease, owner, counter)?;
            lease.counter = next_counter(shard_id, lease.counter)?;
            lease.owner = None;
            lease.expires_at_ms = 0;
            lease.handoff_to = None;
            Ok(lease.counter)
        });
        Box::pin(async move { out })
    }

    fn request_handoff(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        to: &str,
    ) -> BoxFuture<'_, Result<bool, LeaseError>> {
        let out = self.with_lease(key, shard_id, |lease| {
            check_held_by(lease, owner)?;
            lease.handoff_to = Some(to.to_owned());
            Ok(true)
        });
        Box::pin(async move { out })
    }

    fn delete(&self, key: &StreamKey, shard_id: &str) -> BoxFuture<'_, Result<(), LeaseError>> {
        let mut leases = self.lock();
        if let Some(shards) = leases.get_mut(key) {
            shards.remove(shard_id);
            if shards.is_empty() {
                leases.remove(key);
            }
        }
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::LeaseErrorKind;
    use crate::record::SequenceNumber;

    const SHARD: &str = "shardId-00000001700000000000-aaaaaaaa";

    fn key() -> StreamKey {
        StreamKey {
            application: "app".into(),
            stream_arn:
                "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/2024-01-01T00:00:00.000"
                    .into(),
        }
    }

    fn seq(digits: &str) -> SequenceNumber {
        digits.parse().expect("valid sequence number")
    }

    fn processed(digits: &str) -> ShardCheckpoint {
        ShardCheckpoint::Processed {
            sequence_number: seq(digits),
        }
    }

    fn lease(store: &MemoryLeaseStore) -> Lease {
        let mut all = store.snapshot(&key());
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

    fn assert_kind<T: std::fmt::Debug>(result: Result<T, LeaseError>, kind: LeaseErrorKind) {
        match result {
            Err(e) => assert_eq!(e.kind(), kind, "{e}"),
            Ok(v) => panic!("expected {kind:?}, got Ok({v:?})"),
        }
    }

    /// A store with one free lease of [`SHARD`].
    async fn one_lease() -> MemoryLeaseStore {
        let store = MemoryLeaseStore::new();
        assert!(store.create(&key(), SHARD, &[]).await.expect("create"));
        store
    }

    /// A store where "a" holds [`SHARD`] at counter 1.
    async fn held_by_a() -> MemoryLeaseStore {
        let store = one_lease().await;
        store
            .take(&key(), SHARD, 0, "a", 10_000)
            .await
            .expect("take");
        store
    }

    #[tokio::test]
    async fn create_is_idempotent_and_list_shows_free_leases() {
        let store = MemoryLeaseStore::new();
        let parents = vec!["shardId-p1".to_owned(), "shardId-p0".to_owned()];
        assert!(store.create(&key(), SHARD, &parents).await.expect("create"));
        assert!(!store.create(&key(), SHARD, &[]).await.expect("again"));
        assert!(store.create(&key(), "shardId-0", &[]).await.expect("other"));
        let other_key = StreamKey {
            application: "other".into(),
            ..key()
        };
        assert!(store.create(&other_key, SHARD, &[]).await.expect("key"));

        let listed = store.list(&key()).await.expect("list");
        assert_eq!(
            listed,
            vec![
                Lease::new_free("shardId-0", &[]),
                // The second create did not overwrite the parents.
                Lease::new_free(SHARD, &parents),
            ]
        );
        assert_eq!(store.list(&other_key).await.expect("list").len(), 1);
        let unknown = StreamKey {
            application: "nobody".into(),
            ..key()
        };
        assert!(store.list(&unknown).await.expect("list").is_empty());
    }

    #[tokio::test]
    async fn take_free_lease_with_the_right_counter() {
        let store = one_lease().await;
        let taken = store
            .take(&key(), SHARD, 0, "a", 5_000)
            .await
            .expect("take");
        assert_eq!(taken.owner.as_deref(), Some("a"));
        assert_eq!(taken.counter, 1);
        assert_eq!(taken.expires_at_ms, 5_000);
        assert_eq!(lease(&store), taken);
    }

    #[tokio::test]
    async fn take_with_a_wrong_counter_conflicts_and_changes_nothing() {
        let store = one_lease().await;
        assert_kind(
            store.take(&key(), SHARD, 3, "a", 5_000).await,
            LeaseErrorKind::Conflict,
        );
        assert_eq!(lease(&store), Lease::new_free(SHARD, &[]));
    }

    #[tokio::test]
    async fn take_expired_or_stolen_needs_the_current_counter() {
        let store = held_by_a().await;
        // "a"'s lease (valid until 10 s) is expired or stolen: the store does not judge time.
        assert_kind(
            store.take(&key(), SHARD, 0, "b", 20_000).await,
            LeaseErrorKind::Conflict,
        );
        let taken = store
            .take(&key(), SHARD, 1, "b", 20_000)
            .await
            .expect("steal");
        assert_eq!(
            (taken.owner.as_deref(), taken.counter, taken.expires_at_ms),
            (Some("b"), 2, 20_000)
        );
    }

    #[tokio::test]
    async fn take_missing_lease_is_not_found() {
        let store = MemoryLeaseStore::new();
        assert_kind(
            store.take(&key(), SHARD, 0, "a", 1).await,
            LeaseErrorKind::NotFound,
        );
    }

    #[tokio::test]
    async fn renew_by_owner_with_current_counter() {
        let store = held_by_a().await;
        assert_eq!(
            store
                .renew(&key(), SHARD, "a", 1, 15_000)
                .await
                .expect("renew"),
            2
        );
        let l = lease(&store);
        assert_eq!((l.counter, l.expires_at_ms), (2, 15_000));
    }

    #[tokio::test]
    async fn renew_by_non_owner_or_with_stale_counter_conflicts() {
        let store = held_by_a().await;
        let before = lease(&store);
        assert_kind(
            store.renew(&key(), SHARD, "b", 1, 15_000).await,
            LeaseErrorKind::Conflict,
        );
        assert_kind(
            store.renew(&key(), SHARD, "a", 0, 15_000).await,
            LeaseErrorKind::Conflict,
        );
        assert_eq!(lease(&store), before);

        let free = one_lease().await;
        assert_kind(
            free.renew(&key(), SHARD, "a", 0, 15_000).await,
            LeaseErrorKind::Conflict,
        );
        assert_kind(
            MemoryLeaseStore::new()
                .renew(&key(), SHARD, "a", 0, 1)
                .await,
            LeaseErrorKind::NotFound,
        );
    }

    #[tokio::test]
    async fn checkpoint_by_owner_advances_and_counts() {
        let store = held_by_a().await;
        let c = store
            .checkpoint(
                &key(),
                SHARD,
                "a",
                1,
                &ShardCheckpoint::Latest { since_ms: 7 },
            )
            .await
            .expect("latest");
        let c = store
            .checkpoint(&key(), SHARD, "a", c, &processed("000000000000000000100"))
            .await
            .expect("processed");
        let c = store
            .checkpoint(&key(), SHARD, "a", c, &ShardCheckpoint::Ended)
            .await
            .expect("ended");
        assert_eq!(c, 4);
        let l = lease(&store);
        assert_eq!((l.counter, l.checkpoint), (4, Some(ShardCheckpoint::Ended)));
        assert_eq!(
            l.owner.as_deref(),
            Some("a"),
            "a checkpoint keeps the lease"
        );
        assert_eq!(l.expires_at_ms, 10_000, "a checkpoint does not renew");
    }

    #[tokio::test]
    async fn checkpoint_is_fenced_after_a_steal() {
        let store = held_by_a().await;
        let c = store
            .checkpoint(&key(), SHARD, "a", 1, &processed("000000000000000000100"))
            .await
            .expect("a checkpoints");
        let stolen = store
            .take(&key(), SHARD, c, "b", 20_000)
            .await
            .expect("b steals");
        store
            .checkpoint(
                &key(),
                SHARD,
                "b",
                stolen.counter,
                &processed("000000000000000000150"),
            )
            .await
            .expect("b checkpoints");
        // "a" woke up with a position beyond b's: fencing refuses it, not the order rule.
        assert_kind(
            store
                .checkpoint(&key(), SHARD, "a", c, &processed("000000000000000000900"))
                .await,
            LeaseErrorKind::Conflict,
        );
        assert_eq!(
            lease(&store).checkpoint,
            Some(processed("000000000000000000150"))
        );
    }

    #[tokio::test]
    async fn processed_never_moves_backwards_numerically() {
        let store = held_by_a().await;
        // 22 digits: larger than any 21-digit number although "1..." < "9..." as text.
        let big = processed("1000000000000000000000");
        let small = processed("900000000000000000001");
        let c = store
            .checkpoint(&key(), SHARD, "a", 1, &big)
            .await
            .expect("big");
        let err = store
            .checkpoint(&key(), SHARD, "a", c, &small)
            .await
            .expect_err("backwards");
        assert_eq!(err.kind(), LeaseErrorKind::Conflict);
        assert!(err.to_string().contains("backwards"), "{err}");
        assert_eq!(lease(&store).checkpoint, Some(big.clone()));
        // The same position again is fine (idempotent), and the counter still counts.
        let c = store
            .checkpoint(&key(), SHARD, "a", c, &big)
            .await
            .expect("same");
        assert_eq!(c, 3);
        // Nothing moves a processed position back to latest, nor an ended shard back.
        assert_kind(
            store
                .checkpoint(
                    &key(),
                    SHARD,
                    "a",
                    c,
                    &ShardCheckpoint::Latest { since_ms: 1 },
                )
                .await,
            LeaseErrorKind::Conflict,
        );
        let c = store
            .checkpoint(&key(), SHARD, "a", c, &ShardCheckpoint::Ended)
            .await
            .expect("ended");
        assert_kind(
            store.checkpoint(&key(), SHARD, "a", c, &big).await,
            LeaseErrorKind::Conflict,
        );
        assert_eq!(lease(&store).checkpoint, Some(ShardCheckpoint::Ended));
    }

    #[tokio::test]
    async fn release_then_take_by_another() {
        let store = held_by_a().await;
        assert_kind(
            store.release(&key(), SHARD, "b", 1).await,
            LeaseErrorKind::Conflict,
        );
        assert_kind(
            store.release(&key(), SHARD, "a", 0).await,
            LeaseErrorKind::Conflict,
        );
        let c = store.release(&key(), SHARD, "a", 1).await.expect("release");
        assert_eq!(c, 2);
        let l = lease(&store);
        assert_eq!((l.owner, l.expires_at_ms, l.counter), (None, 0, 2));
        // The released lease is fenced against its former owner too.
        assert_kind(
            store
                .checkpoint(&key(), SHARD, "a", 2, &ShardCheckpoint::Ended)
                .await,
            LeaseErrorKind::Conflict,
        );
        let taken = store.take(&key(), SHARD, 2, "b", 9).await.expect("take");
        assert_eq!((taken.owner.as_deref(), taken.counter), (Some("b"), 3));
    }

    #[tokio::test]
    async fn delete_is_idempotent() {
        let store = held_by_a().await;
        store.delete(&key(), SHARD).await.expect("delete");
        store.delete(&key(), SHARD).await.expect("again");
        assert!(store.snapshot(&key()).is_empty());
        assert_kind(
            store.renew(&key(), SHARD, "a", 1, 1).await,
            LeaseErrorKind::NotFound,
        );
        assert!(store.create(&key(), SHARD, &[]).await.expect("recreate"));
    }

    #[tokio::test]
    async fn clones_share_leases() {
        let store = one_lease().await;
        let other = store.clone();
        other
            .take(&key(), SHARD, 0, "b", 1)
            .await
            .expect("take via clone");
        assert_eq!(lease(&store).owner.as_deref(), Some("b"));
        assert_kind(
            store.take(&key(), SHARD, 0, "a", 1).await,
            LeaseErrorKind::Conflict,
        );
    }

    #[test]
    fn error_kinds_say_whether_to_retry() {
        let io = LeaseError::new(LeaseErrorKind::Io, "slow");
        assert!(io.is_retryable());
        assert_eq!(io.to_string(), "lease store failed: slow");
        for kind in [
            LeaseErrorKind::Conflict,
            LeaseErrorKind::NotFound,
            LeaseErrorKind::Fatal,
            LeaseErrorKind::Corrupt,
        ] {
            assert!(!LeaseError::new(kind, "x").is_retryable(), "{kind:?}");
        }
    }
}
