//! What `ddbstream` prints on stderr: its own lines (at a verbosity), the library's warnings
//! (repeats folded), a progress bar or periodic progress lines, and the final error.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use indicatif::ProgressBar;

/// How much `ddbstream` says: `-q` (errors only), default, `-v`, `-vv`, ...
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Verbosity(pub(crate) i8);

impl Verbosity {
    pub(crate) const QUIET: Verbosity = Verbosity(-1);
    pub(crate) const DEFAULT: Verbosity = Verbosity(0);
}

/// A repeated warning is shown again, with a count, after this long.
const FOLD_FOR: Duration = Duration::from_secs(10);

/// Stderr, shared by log lines, warnings and a progress bar.
#[derive(Debug)]
pub(crate) struct Log {
    terminal: bool,
    verbosity: Verbosity,
    /// `-v` or `RUST_LOG`: every warning as it comes, and the error's causes.
    detailed: bool,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The progress bar on screen (terminal only); lines are printed around it.
    bar: Option<ProgressBar>,
    /// Warnings shown recently: when, and how many like it were held back since.
    shown: HashMap<String, (Instant, u32)>,
}

static LOG: OnceLock<Log> = OnceLock::new();

impl Log {
    /// Set up stderr once, at start (before any line).
    pub(crate) fn init(verbosity: Verbosity, rust_log: bool) {
        let _ = LOG.set(Log {
            terminal: std::io::stderr().is_terminal(),
            verbosity,
            detailed: verbosity > Verbosity::DEFAULT || rust_log,
            state: Mutex::new(State::default()),
        });
    }

    pub(crate) fn get() -> &'static Log {
        LOG.get_or_init(|| Log {
            terminal: std::io::stderr().is_terminal(),
            verbosity: Verbosity::DEFAULT,
            detailed: false,
            state: Mutex::new(State::default()),
        })
    }

    /// Whether stderr is a terminal (progress is then a bar).
    pub(crate) fn is_terminal(&self) -> bool {
        self.terminal
    }

    /// Whether details (every warning, the causes of an error) are shown.
    pub(crate) fn detailed(&self) -> bool {
        self.detailed
    }

    /// Whether informational lines and progress are shown (not with `-q`).
    pub(crate) fn chatty(&self) -> bool {
        self.verbosity > Verbosity::QUIET
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write one line, around the progress bar if there is one.
    fn write(&self, state: &State, text: &str) {
        let write = || {
            // Nothing useful can be done when stderr is gone; the exit code still tells.
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        };
        match &state.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    /// An informational line (`ddbstream: tailing ...`): not with `-q`.
    pub(crate) fn info(&self, text: &str) {
        if self.chatty() {
            self.write(&self.state(), text);
        }
    }

    /// A line that is always shown: errors, and losses (gaps, quarantine).
    pub(crate) fn error(&self, text: &str) {
        self.write(&self.state(), text);
    }

    /// A warning (a retried failure): not with `-q`. The same warning again within
    /// [`FOLD_FOR`] is held back and counted, then shown once with the count — unless `-v`
    /// asks for every one. `key` says which warnings are the same.
    pub(crate) fn warn(&self, key: &str, text: &str) {
        if !self.chatty() {
            return;
        }
        let mut state = self.state();
        if self.detailed {
            self.write(&state, text);
            return;
        }
        let now = Instant::now();
        let line = match state.shown.get_mut(key) {
            Some((last, held)) if now.duration_since(*last) < FOLD_FOR => {
                *held += 1;
                return;
            }
            Some((last, held)) => {
                let line = match *held {
                    0 => text.to_owned(),
                    n => format!(
                        "{text} ({n} more like it in the last {}s)",
                        now.duration_since(*last).as_secs()
                    ),
                };
                *last = now;
                *held = 0;
                line
            }
            None => {
                state.shown.insert(key.to_owned(), (now, 0));
                text.to_owned()
            }
        };
        self.write(&state, &line);
    }

    /// Show `bar` (terminal only) until [`clear_bar`](Self::clear_bar).
    pub(crate) fn show_bar(&self, bar: ProgressBar) {
        self.state().bar = Some(bar);
    }

    pub(crate) fn clear_bar(&self) {
        if let Some(bar) = self.state().bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Which warnings are "the same" for folding: the text without the fields that change from one
/// retry to the next.
fn fold_key(text: &str) -> String {
    text.split_whitespace()
        .filter(|w| {
            !["retry_in=", "attempt=", "attempts=", "backoff="]
                .iter()
                .any(|p| w.starts_with(p))
        })
        .collect::<Vec<_>>()
        .join(" ")
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

/// Show the library's log events on stderr, one `ddbstream: WARN ...` line each, through
/// [`Log`] so they never tear the progress bar and repeats are folded. Why: a failed GetRecords
/// is retried inside the consumer without an event, so without these lines an operator cannot
/// tell an outage from a quiet stream.
///
/// `RUST_LOG` sets the filter when given. Otherwise: nothing with `-q`; warnings by default
/// (the library's error events are left out: `ddbstream` reports each of those itself, as an
/// event line or its final error); errors and the library's info events with `-v`; debug with
/// `-vv`; everything, the AWS SDK's included, with `-vvv`.
///
/// With `tracer` (an OTLP collector is named), the library's spans — `discover`, `poll`,
/// `handle`, `checkpoint`, with their stream, shard and sequence number — and the events within
/// them go to it as well, whatever the verbosity.
pub(crate) fn init_tracing(
    verbosity: Verbosity,
    tracer: Option<opentelemetry_sdk::trace::SdkTracer>,
) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};

    let from_env = std::env::var_os("RUST_LOG").is_some();
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        Err(_) => EnvFilter::new(match verbosity.0 {
            i8::MIN..=-1 => "off",
            0 => "warn",
            1 => "warn,dynamodb_stream=info",
            2 => "info,dynamodb_stream=debug",
            _ => "debug,dynamodb_stream=trace",
        }),
    };
    let skip_errors = !from_env && verbosity == Verbosity::DEFAULT;
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(|| LogWriter(Vec::new()))
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .with_filter(filter)
        .with_filter(tracing_subscriber::filter::filter_fn(move |meta| {
            !(skip_errors && *meta.level() == tracing::Level::ERROR)
        }));
    let otlp = tracer.map(|tracer| {
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_filter(EnvFilter::new("dynamodb_stream=debug"))
    });
    // Fails only when a subscriber is already set, which this binary never does.
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(otlp)
        .try_init();
}

/// Collects one formatted event and hands it to [`Log::warn`] when dropped.
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
        let text = text.trim();
        if !text.is_empty() {
            let line = format!("ddbstream: {text}");
            Log::get().warn(&fold_key(&line), &line);
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

    #[test]
    fn retries_of_one_failure_fold_together() {
        let a = "ddbstream: WARN DescribeStream failed; retrying error=x retry_in=1s";
        let b = "ddbstream: WARN DescribeStream failed; retrying error=x retry_in=4s";
        let c = "ddbstream: WARN DescribeStream failed; retrying error=y retry_in=4s";
        assert_eq!(fold_key(a), fold_key(b));
        assert_ne!(fold_key(a), fold_key(c));
    }
}
