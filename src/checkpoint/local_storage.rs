//! Checkpoints in the browser's `localStorage` (wasm32 only).

use std::collections::BTreeMap;

use super::{merge, CheckpointStore, ShardCheckpoint, StreamCheckpoints, StreamKey};
use crate::error::{CheckpointError, CheckpointErrorKind};
use crate::source::BoxFuture;

/// Checkpoints in the page origin's `localStorage`: a reload, a closed tab or a restarted
/// browser resumes right after the last acknowledged record (I3), like a file store natively.
///
/// One entry per stream, under `"{prefix}{application}\u{1f}{stream ARN}"`, holding the
/// [`StreamCheckpoints`] as JSON. `localStorage` writes are synchronous and survive the page, so
/// `save` is durable when it returns. Every tab of the origin shares the storage: run one
/// consumer per application and stream per origin (there are no leases in the browser).
/// Windows only (workers have no `localStorage`).
#[derive(Debug, Clone)]
pub struct LocalStorageCheckpointStore {
    prefix: String,
}

impl Default for LocalStorageCheckpointStore {
    fn default() -> Self {
        Self::new("dynamodb-stream/")
    }
}

impl LocalStorageCheckpointStore {
    /// Entries under `prefix` (the default store uses `"dynamodb-stream/"`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    fn entry_name(&self, key: &StreamKey) -> String {
        format!("{}{}\u{1f}{}", self.prefix, key.application, key.stream_arn)
    }

    fn read(&self, key: &StreamKey) -> Result<Option<StreamCheckpoints>, CheckpointError> {
        let name = self.entry_name(key);
        let Some(text) = storage()?.get_item(&name).map_err(js_io)? else {
            return Ok(None);
        };
        serde_json::from_str(&text).map(Some).map_err(|e| {
            CheckpointError::new(
                CheckpointErrorKind::Corrupt,
                format!("localStorage entry {name:?} is not a checkpoint: {e}"),
            )
        })
    }

    fn write(
        &self,
        key: &StreamKey,
        started_at_ms: u64,
        shards: Vec<(String, ShardCheckpoint)>,
    ) -> Result<(), CheckpointError> {
        let mut content = BTreeMap::new();
        if let Some(stored) = self.read(key)? {
            content.insert(key.clone(), stored);
        }
        merge(&mut content, key, started_at_ms, shards);
        let text = serde_json::to_string(&content[key]).map_err(|e| {
            CheckpointError::new(CheckpointErrorKind::Io, format!("cannot encode: {e}"))
        })?;
        // Fails when the origin's quota is used up: an error, so the consumer stops rather than
        // running without recording positions.
        storage()?
            .set_item(&self.entry_name(key), &text)
            .map_err(js_io)
    }

    fn list(&self, application: &str) -> Result<Vec<String>, CheckpointError> {
        let storage = storage()?;
        let head = format!("{}{}\u{1f}", self.prefix, application);
        let mut out = Vec::new();
        for i in 0..storage.length().map_err(js_io)? {
            if let Some(name) = storage.key(i).map_err(js_io)? {
                if let Some(arn) = name.strip_prefix(&head) {
                    out.push(arn.to_owned());
                }
            }
        }
        Ok(out)
    }
}

// The work is synchronous and done before the future is returned: JavaScript values never live
// across an await (they are not `Send`).
impl CheckpointStore for LocalStorageCheckpointStore {
    fn load(
        &self,
        key: &StreamKey,
    ) -> BoxFuture<'_, Result<Option<StreamCheckpoints>, CheckpointError>> {
        let out = self.read(key);
        Box::pin(async move { out })
    }

    fn save(
        &self,
        key: &StreamKey,
        started_at_ms: u64,
        shards: Vec<(String, ShardCheckpoint)>,
    ) -> BoxFuture<'_, Result<(), CheckpointError>> {
        let out = self.write(key, started_at_ms, shards);
        Box::pin(async move { out })
    }

    fn streams(&self, application: &str) -> BoxFuture<'_, Result<Vec<String>, CheckpointError>> {
        let out = self.list(application);
        Box::pin(async move { out })
    }
}

fn storage() -> Result<web_sys::Storage, CheckpointError> {
    web_sys::window()
        .ok_or_else(|| CheckpointError::new(CheckpointErrorKind::Io, "no window (localStorage)"))?
        .local_storage()
        .map_err(js_io)?
        .ok_or_else(|| {
            CheckpointError::new(CheckpointErrorKind::Io, "localStorage is not available")
        })
}

fn js_io(value: wasm_bindgen::JsValue) -> CheckpointError {
    let text = value.as_string().unwrap_or_else(|| format!("{value:?}"));
    CheckpointError::new(CheckpointErrorKind::Io, format!("localStorage: {text}"))
}
