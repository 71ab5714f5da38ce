//! The JSON-lines failure sink (files and a blocking pool: native only).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{DeliveryFailure, FailureReason, FailureSink};
use crate::error::BoxError;
use crate::record::{item_to_json, system_time_to_millis};
use crate::source::BoxFuture;

/// A [`FailureSink`] appending one JSON object per failure to a file (JSON lines), fsynced.
///
/// Each line holds `streamArn`, `shardId`, `firstSequenceNumber`, `lastSequenceNumber`,
/// `reason`, `error`, and `records` (each with `eventName`, `sequenceNumber`, `keys`,
/// `newImage`, `oldImage`, `approximateCreationDateTime` in Unix milliseconds).
///
/// ```no_run
/// use dynamodb_stream::delivery::JsonLinesFailureSink;
/// let sink = JsonLinesFailureSink::new("orders.failures.jsonl");
/// # drop(sink);
/// ```
#[derive(Debug, Clone)]
pub struct JsonLinesFailureSink {
    path: PathBuf,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl JsonLinesFailureSink {
    /// Append to `path` (created if missing).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock: Arc::default(),
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn to_json(f: &DeliveryFailure) -> serde_json::Value {
    let reason = match &f.reason {
        FailureReason::RetriesExhausted { attempts } => {
            serde_json::json!({ "kind": "retries_exhausted", "attempts": attempts })
        }
        FailureReason::RecordTooOld { age } => {
            serde_json::json!({ "kind": "record_too_old", "ageMillis": age.as_millis() as u64 })
        }
    };
    let records: Vec<serde_json::Value> = f
        .records
        .iter()
        .map(|r| {
            serde_json::json!({
                "eventName": match r.kind() {
                    crate::RecordKind::Insert => "INSERT".to_owned(),
                    crate::RecordKind::Modify => "MODIFY".to_owned(),
                    crate::RecordKind::Remove { .. } => "REMOVE".to_owned(),
                    crate::RecordKind::Unknown(n) => n.clone(),
                },
                "sequenceNumber": r.sequence_number().as_str(),
                "keys": item_to_json(r.keys()),
                "newImage": r.new_image().map(item_to_json),
                "oldImage": r.old_image().map(item_to_json),
                "approximateCreationDateTime": r.approximate_creation_time().map(system_time_to_millis),
            })
        })
        .collect();
    serde_json::json!({
        "streamArn": f.stream_arn,
        "shardId": f.shard_id,
        "firstSequenceNumber": f.first_sequence_number().map(|s| s.as_str()),
        "lastSequenceNumber": f.last_sequence_number().map(|s| s.as_str()),
        "reason": reason,
        "error": f.error,
        "records": records,
    })
}

impl FailureSink for JsonLinesFailureSink {
    fn send(&self, failure: DeliveryFailure) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let mut line = serde_json::to_vec(&to_json(&failure))?;
            line.push(b'\n');
            let _guard = self.lock.lock().await;
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || -> Result<(), BoxError> {
                let mut options = std::fs::OpenOptions::new();
                options.create(true).append(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    options.mode(0o600);
                }
                let mut f = options
                    .open(&path)
                    .map_err(|e| format!("cannot open failure sink {}: {e}", path.display()))?;
                f.write_all(&line)?;
                f.sync_data()?;
                Ok(())
            })
            .await
            .map_err(|e| format!("failure sink task: {e}"))?
        })
    }
}
