//! The JSON-lines failure sink (files and a blocking pool: native only).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{DeliveryFailure, FailureReason, FailureSink};
use crate::error::BoxError;
use crate::json::{write_record, write_str, RecordFormat, RecordSource};
use crate::source::BoxFuture;

/// A [`FailureSink`] appending one JSON object per failure to a file (JSON lines), fsynced.
///
/// Each line holds `streamArn`, `shardId`, `firstSequenceNumber`, `lastSequenceNumber`,
/// `reason`, `error`, and `records`, each written as `ddbstream tail` prints it (the compact
/// form of [`crate::json`]: `eventName`, `eventId`, `sequenceNumber`, `keys`, `newImage`,
/// `oldImage`, `approximateCreationDateTime` in RFC 3339, numbers a double cannot hold as
/// strings). The file is created with mode 0600: it holds whole items.
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

/// One failure as one JSON line (with its newline). The records are written exactly as
/// `ddbstream tail` prints them ([`RecordFormat::Compact`]), straight into the line.
fn to_line(f: &DeliveryFailure) -> Vec<u8> {
    let reason = match &f.reason {
        FailureReason::RetriesExhausted { attempts } => {
            serde_json::json!({ "kind": "retries_exhausted", "attempts": attempts })
        }
        FailureReason::RecordTooOld { age } => {
            serde_json::json!({ "kind": "record_too_old", "ageMillis": age.as_millis() as u64 })
        }
    };
    let mut out = Vec::with_capacity(256 * (f.records.len() + 1));
    let optional = |out: &mut Vec<u8>, s: Option<&str>| match s {
        Some(s) => write_str(out, s),
        None => out.extend_from_slice(b"null"),
    };
    out.extend_from_slice(b"{\"streamArn\":");
    write_str(&mut out, &f.stream_arn);
    out.extend_from_slice(b",\"shardId\":");
    write_str(&mut out, &f.shard_id);
    out.extend_from_slice(b",\"firstSequenceNumber\":");
    optional(&mut out, f.first_sequence_number().map(|s| s.as_str()));
    out.extend_from_slice(b",\"lastSequenceNumber\":");
    optional(&mut out, f.last_sequence_number().map(|s| s.as_str()));
    out.extend_from_slice(b",\"reason\":");
    out.extend_from_slice(reason.to_string().as_bytes());
    out.extend_from_slice(b",\"error\":");
    write_str(&mut out, &f.error);
    out.extend_from_slice(b",\"records\":[");
    let from = RecordSource {
        shard_id: &f.shard_id,
        stream_arn: &f.stream_arn,
    };
    for (i, record) in f.records.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_record(&mut out, RecordFormat::Compact, &from, record);
    }
    out.extend_from_slice(b"]}\n");
    out
}

impl FailureSink for JsonLinesFailureSink {
    fn send(&self, failure: DeliveryFailure) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            let line = to_line(&failure);
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
