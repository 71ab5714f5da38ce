use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{merge, streams_of, CheckpointStore, ShardCheckpoint, StreamCheckpoints, StreamKey};
use crate::error::{CheckpointError, CheckpointErrorKind};
use crate::source::BoxFuture;

const FORMAT_VERSION: u32 = 1;

/// Checkpoints in a JSON file, written atomically.
///
/// Each save writes a temporary file next to the target, fsyncs it, renames it over the target
/// and fsyncs the directory, so a crash at any moment leaves either the old or the new file,
/// never a torn one. The file is created with mode 0600 (it names your streams). One file can
/// hold several applications and streams. A file that cannot be parsed is reported as
/// [`Corrupt`](CheckpointErrorKind::Corrupt) with its path — the consumer then refuses to start
/// rather than silently starting over.
///
/// Only one process may write a given file at a time.
///
/// ```no_run
/// use dynamodb_stream::checkpoint::FileCheckpointStore;
/// let store = FileCheckpointStore::new("orders.checkpoints.json");
/// # drop(store);
/// ```
#[derive(Debug, Clone)]
pub struct FileCheckpointStore {
    path: PathBuf,
    // The file's content as last read or written; `None` until first read. Serialises saves so
    // two writers in this process never interleave renames.
    cache: Arc<Mutex<Option<BTreeMap<StreamKey, StreamCheckpoints>>>>,
}

#[derive(Serialize, Deserialize)]
struct FileFormat {
    version: u32,
    streams: Vec<StoredStream>,
}

#[derive(Serialize, Deserialize)]
struct StoredStream {
    application: String,
    stream_arn: String,
    #[serde(flatten)]
    checkpoints: StreamCheckpoints,
}

impl FileCheckpointStore {
    /// A store backed by `path` (created on first save; the directory must exist).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            cache: Arc::new(Mutex::new(None)),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Check that saves can succeed, before anything is read: the directory exists and a file
    /// can be created in it (a save writes a temporary file there and renames it over the
    /// target), and the target, if it exists, is not a directory. Nothing is left behind.
    ///
    /// Why: a consumer whose checkpoints cannot be written delivers every record and retries
    /// the write forever; a tool should say so at start instead.
    pub async fn check_writable(&self) -> Result<(), CheckpointError> {
        let path = self.path.clone();
        run_blocking(move || check_writable(&path)).await
    }

    async fn read(&self) -> Result<BTreeMap<StreamKey, StreamCheckpoints>, CheckpointError> {
        let path = self.path.clone();
        run_blocking(move || read_file(&path)).await
    }
}

fn io_error(path: &Path, what: &str, e: std::io::Error) -> CheckpointError {
    CheckpointError::new(
        CheckpointErrorKind::Io,
        format!("{what} {}: {e}", path.display()),
    )
    .with_source(e)
}

fn read_file(path: &Path) -> Result<BTreeMap<StreamKey, StreamCheckpoints>, CheckpointError> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(io_error(path, "cannot read checkpoint file", e)),
    };
    // Check the version first so a future format is reported as such, not as corruption.
    let version: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        CheckpointError::new(
            CheckpointErrorKind::Corrupt,
            format!("{} is not valid JSON ({e}); refusing to start over from the start position — restore or delete the file deliberately", path.display()),
        )
        .with_source(e)
    })?;
    match version.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(CheckpointError::new(
                CheckpointErrorKind::Mismatch,
                format!(
                    "{} has format version {v}, this build reads version {FORMAT_VERSION}",
                    path.display()
                ),
            ))
        }
        None => {
            return Err(CheckpointError::new(
                CheckpointErrorKind::Corrupt,
                format!(
                    "{} has no \"version\" field: not a dynamodb-stream checkpoint file",
                    path.display()
                ),
            ))
        }
    }
    let parsed: FileFormat = serde_json::from_value(version).map_err(|e| {
        CheckpointError::new(
            CheckpointErrorKind::Corrupt,
            format!("{} does not hold valid checkpoints: {e}", path.display()),
        )
        .with_source(e)
    })?;
    let mut out = BTreeMap::new();
    for s in parsed.streams {
        let key = StreamKey {
            application: s.application,
            stream_arn: s.stream_arn,
        };
        if out.insert(key.clone(), s.checkpoints).is_some() {
            return Err(CheckpointError::new(
                CheckpointErrorKind::Corrupt,
                format!(
                    "{} lists application {:?} on stream {} twice",
                    path.display(),
                    key.application,
                    key.stream_arn
                ),
            ));
        }
    }
    Ok(out)
}

fn check_writable(path: &Path) -> Result<(), CheckpointError> {
    if path.is_dir() {
        return Err(CheckpointError::new(
            CheckpointErrorKind::Io,
            format!("{} is a directory", path.display()),
        ));
    }
    let (dir, tmp) = temporary_beside(path);
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(CheckpointError::new(
                CheckpointErrorKind::Io,
                format!("{} is not a directory", dir.display()),
            ))
        }
        Err(e) => return Err(io_error(&dir, "cannot use directory", e)),
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(&tmp)
        .map_err(|e| io_error(&tmp, "cannot create", e))?;
    std::fs::remove_file(&tmp).map_err(|e| io_error(&tmp, "cannot remove", e))
}

/// The directory of `path` and the temporary file a save writes there.
fn temporary_beside(path: &Path) -> (PathBuf, PathBuf) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "checkpoints".into());
    let tmp = dir.join(format!(".{file_name}.tmp.{}", std::process::id()));
    (dir, tmp)
}

fn write_file(
    path: &Path,
    content: &BTreeMap<StreamKey, StreamCheckpoints>,
) -> Result<(), CheckpointError> {
    let format = FileFormat {
        version: FORMAT_VERSION,
        streams: content
            .iter()
            .map(|(k, v)| StoredStream {
                application: k.application.clone(),
                stream_arn: k.stream_arn.clone(),
                checkpoints: v.clone(),
            })
            .collect(),
    };
    let bytes = serde_json::to_vec_pretty(&format).map_err(|e| {
        CheckpointError::new(
            CheckpointErrorKind::Io,
            format!("cannot encode checkpoints: {e}"),
        )
    })?;
    let (dir, tmp) = temporary_beside(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut f = options
        .open(&tmp)
        .map_err(|e| io_error(&tmp, "cannot create", e))?;
    f.write_all(&bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_error(&tmp, "cannot write", e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| io_error(path, "cannot replace", e))?;
    // Make the rename itself durable.
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(&dir) {
        d.sync_all()
            .map_err(|e| io_error(&dir, "cannot sync directory", e))?;
    }
    Ok(())
}

async fn run_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, CheckpointError> + Send + 'static,
) -> Result<T, CheckpointError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        CheckpointError::new(
            CheckpointErrorKind::Io,
            format!("checkpoint I/O task failed: {e}"),
        )
    })?
}

impl CheckpointStore for FileCheckpointStore {
    fn load(
        &self,
        key: &StreamKey,
    ) -> BoxFuture<'_, Result<Option<StreamCheckpoints>, CheckpointError>> {
        let key = key.clone();
        Box::pin(async move {
            let mut cache = self.cache.lock().await;
            let content = self.read().await?;
            let out = content.get(&key).cloned();
            *cache = Some(content);
            Ok(out)
        })
    }

    fn save(
        &self,
        key: &StreamKey,
        started_at_ms: u64,
        shards: Vec<(String, ShardCheckpoint)>,
    ) -> BoxFuture<'_, Result<(), CheckpointError>> {
        let key = key.clone();
        Box::pin(async move {
            let mut cache = self.cache.lock().await;
            let mut content = match cache.take() {
                Some(c) => c,
                None => self.read().await?,
            };
            merge(&mut content, &key, started_at_ms, shards);
            let path = self.path.clone();
            let (content, result) = {
                let to_write = content.clone();
                let r = run_blocking(move || write_file(&path, &to_write)).await;
                (content, r)
            };
            // Keep the merged view even if the write failed: the next save retries it whole.
            *cache = Some(content);
            result
        })
    }

    fn streams(&self, application: &str) -> BoxFuture<'_, Result<Vec<String>, CheckpointError>> {
        let application = application.to_owned();
        Box::pin(async move {
            let mut cache = self.cache.lock().await;
            let content = match cache.take() {
                Some(c) => c,
                None => self.read().await?,
            };
            let out = streams_of(&content, &application);
            *cache = Some(content);
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StreamKey {
        StreamKey {
            application: "app".into(),
            stream_arn: "arn:aws:dynamodb:us-east-1:1:table/t/stream/x".into(),
        }
    }

    #[tokio::test]
    async fn round_trips_and_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cp.json");
        let store = FileCheckpointStore::new(&path);
        assert_eq!(store.load(&key()).await.expect("load"), None);
        let seq = "000000000000000000042".parse().expect("seq");
        store
            .save(
                &key(),
                5,
                vec![(
                    "s1".into(),
                    ShardCheckpoint::Processed {
                        sequence_number: seq,
                    },
                )],
            )
            .await
            .expect("save");
        store
            .save(&key(), 9, vec![("s2".into(), ShardCheckpoint::Ended)])
            .await
            .expect("save");
        let fresh = FileCheckpointStore::new(&path);
        let loaded = fresh.load(&key()).await.expect("load").expect("stored");
        assert_eq!(loaded.started_at_ms, 5, "first start time is kept");
        assert_eq!(loaded.shards.len(), 2);
        assert_eq!(loaded.shards.get("s2"), Some(&ShardCheckpoint::Ended));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[tokio::test]
    async fn writability_is_checked_without_leaving_anything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let good = FileCheckpointStore::new(dir.path().join("cp.json"));
        good.check_writable().await.expect("writable");
        assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 0);

        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("write");
        for bad in [
            file.join("cp.json"),
            dir.path().join("missing").join("cp.json"),
            dir.path().to_path_buf(),
        ] {
            let err = FileCheckpointStore::new(&bad)
                .check_writable()
                .await
                .expect_err("not writable");
            assert_eq!(err.kind(), CheckpointErrorKind::Io, "{err}");
        }
    }

    #[tokio::test]
    async fn corrupt_and_foreign_files_are_errors_not_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cp.json");
        std::fs::write(&path, b"{\"version\":1,\"streams\":[{").expect("write");
        let err = FileCheckpointStore::new(&path)
            .load(&key())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), CheckpointErrorKind::Corrupt);
        assert!(err.to_string().contains("cp.json"), "{err}");

        std::fs::write(&path, b"{\"version\":7,\"streams\":[]}").expect("write");
        let err = FileCheckpointStore::new(&path)
            .load(&key())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), CheckpointErrorKind::Mismatch);

        std::fs::write(&path, br#"{"version":1,"streams":[{"application":"a","stream_arn":"s","started_at_ms":1,"shards":{"x":{"state":"processed","sequence_number":"12"}}}]}"#).expect("write");
        let err = FileCheckpointStore::new(&path)
            .load(&key())
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            CheckpointErrorKind::Corrupt,
            "a bad sequence number is corruption"
        );

        // A save must not overwrite a corrupt file either.
        std::fs::write(&path, b"garbage").expect("write");
        let store = FileCheckpointStore::new(&path);
        assert!(store.save(&key(), 1, vec![]).await.is_err());
        assert_eq!(std::fs::read(&path).expect("read"), b"garbage");
    }
}
