//! What `ddbstream` prints: log lines and a progress line on stderr, records as JSON.

use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use dynamodb_stream::record::{item_to_json, Item};
use dynamodb_stream::{RecordKind, StreamRecord};
use serde_json::{json, Value};

/// Stderr, shared by log lines and a progress line that is redrawn in place on a terminal.
#[derive(Debug)]
pub(crate) struct Log {
    terminal: bool,
    /// Whether a progress line is on screen (a log line must clear it first).
    progress_shown: Mutex<bool>,
}

impl Log {
    pub(crate) fn get() -> &'static Log {
        static LOG: OnceLock<Log> = OnceLock::new();
        LOG.get_or_init(|| Log {
            terminal: std::io::stderr().is_terminal(),
            progress_shown: Mutex::new(false),
        })
    }

    /// Whether stderr is a terminal (progress is then redrawn in place).
    pub(crate) fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// One log line.
    pub(crate) fn line(&self, text: &str) {
        let mut shown = self
            .progress_shown
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut err = std::io::stderr().lock();
        // Nothing useful can be done when stderr is gone; the exit code still tells.
        if *shown {
            let _ = write!(err, "\r\x1b[K");
            *shown = false;
        }
        let _ = writeln!(err, "{text}");
    }

    /// Draw the progress line: in place on a terminal, as a plain line otherwise.
    pub(crate) fn progress(&self, text: &str) {
        if !self.terminal {
            self.line(text);
            return;
        }
        let mut shown = self
            .progress_shown
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[K{text}");
        let _ = err.flush();
        *shown = true;
    }
}

/// The record as one JSON object (images as plain JSON, numbers exact).
pub(crate) fn record_json(shard_id: &str, record: &StreamRecord) -> Value {
    let event_name = match record.kind() {
        RecordKind::Insert => "INSERT".to_owned(),
        RecordKind::Modify => "MODIFY".to_owned(),
        RecordKind::Remove { .. } => "REMOVE".to_owned(),
        RecordKind::Unknown(name) => name.clone(),
        other => format!("{other:?}"),
    };
    let image = |i: Option<&Item>| i.map(item_to_json).unwrap_or(Value::Null);
    let mut out = json!({
        "eventName": event_name,
        "eventId": record.event_id(),
        "shardId": shard_id,
        "sequenceNumber": record.sequence_number().as_str(),
        "approximateCreationDateTime": record.approximate_creation_time().map(rfc3339),
        "keys": item_to_json(record.keys()),
        "newImage": image(record.new_image()),
        "oldImage": image(record.old_image()),
    });
    if let (Some(identity), Some(map)) = (record.user_identity(), out.as_object_mut()) {
        map.insert(
            "userIdentity".into(),
            json!({ "type": identity.kind, "principalId": identity.principal_id }),
        );
    }
    out
}

/// `t` in RFC 3339, UTC (the library's rendering).
pub(crate) fn rfc3339(t: SystemTime) -> String {
    dynamodb_stream::record::rfc3339(t)
}

/// `1234567` → `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `3725 s` → `1:02:05`.
pub(crate) fn clock(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// Show the library's warnings on stderr, one `ddbstream: WARN ...` line each, through [`Log`]
/// so they never tear a progress line. Why: a failed GetRecords is retried inside the consumer
/// without an event, so without these lines an operator cannot tell an outage from a quiet
/// stream. `RUST_LOG` (e.g. `dynamodb_stream=debug`) shows more.
pub(crate) fn init_warnings() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    // Fails only when a subscriber is already set, which this binary never does.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter(Vec::new()))
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .try_init();
}

/// Collects one formatted event and hands it to [`Log::line`] when dropped.
struct LogWriter(Vec<u8>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.0);
        let text = text.trim_end();
        if !text.is_empty() {
            Log::get().line(&format!("ddbstream: {}", text.trim_start()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn formats_dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(clock(Duration::from_secs(3725)), "1:02:05");
        assert_eq!(clock(Duration::from_secs(65)), "1:05");
    }
}
