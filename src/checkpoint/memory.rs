use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{merge, streams_of, CheckpointStore, ShardCheckpoint, StreamCheckpoints, StreamKey};
use crate::error::CheckpointError;
use crate::source::BoxFuture;

/// Checkpoints in memory: lost with the process, shared by clones.
///
/// Useful for tests (a restarted consumer built with a clone of the store resumes where the
/// first one stopped) and for consumers that do not need to resume after a restart.
///
/// ```
/// use dynamodb_stream::checkpoint::MemoryCheckpointStore;
/// let store = MemoryCheckpointStore::new();
/// let same = store.clone(); // shares the same checkpoints
/// # drop(same);
/// ```
#[derive(Debug, Clone, Default)]
pub struct MemoryCheckpointStore {
    inner: Arc<Mutex<BTreeMap<StreamKey, StreamCheckpoints>>>,
}

impl MemoryCheckpointStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of what is stored for `key`.
    pub fn snapshot(&self, key: &StreamKey) -> Option<StreamCheckpoints> {
        self.lock().get(key).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<StreamKey, StreamCheckpoints>> {
        // A panic while holding this lock cannot leave the map half-updated (every update is one
        // `extend`), so the data behind a poisoned lock is still sound.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl CheckpointStore for MemoryCheckpointStore {
    fn load(
        &self,
        key: &StreamKey,
    ) -> BoxFuture<'_, Result<Option<StreamCheckpoints>, CheckpointError>> {
        let out = self.snapshot(key);
        Box::pin(async move { Ok(out) })
    }

    fn save(
        &self,
        key: &StreamKey,
        started_at_ms: u64,
        shards: Vec<(String, ShardCheckpoint)>,
    ) -> BoxFuture<'_, Result<(), CheckpointError>> {
        merge(&mut self.lock(), key, started_at_ms, shards);
        Box::pin(async { Ok(()) })
    }

    fn streams(&self, application: &str) -> BoxFuture<'_, Result<Vec<String>, CheckpointError>> {
        let out = streams_of(&self.lock(), application);
        Box::pin(async move { Ok(out) })
    }
}
