//! How user code failed, as the delivery stage reports it to its shard worker: which entry
//! point, and whether it returned an error, panicked or ran out of time. Typed all the way to
//! the coordinator; turned into text only in public events and errors.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::FailureReason;
use crate::error::HandlerError;

/// A user-code entry point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hook {
    OnShardStart,
    Handle,
    OnShardEnd,
    OnShutdown,
    OnLeaseLost,
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::OnShardStart => "on_shard_start",
            Self::Handle => "handler",
            Self::OnShardEnd => "on_shard_end",
            Self::OnShutdown => "on_shutdown",
            Self::OnLeaseLost => "on_lease_lost",
        })
    }
}

/// Why a shard's user code cannot go on.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum HandlerFailure {
    /// It returned an error.
    #[error("{hook} failed: {error}")]
    Returned {
        hook: Hook,
        // Not a `#[source]`: `HandlerError` is not a `std::error::Error` (so any error converts
        // into it with `?`); its text is in the message.
        error: Arc<HandlerError>,
    },
    /// It panicked (`message`: the panic's payload, when it was text).
    #[error("{hook} panicked: {message}")]
    Panicked { hook: Hook, message: Arc<str> },
    /// It did not return within the handler timeout.
    #[error("{hook} did not return within {timeout:?}")]
    TimedOut { hook: Hook, timeout: Duration },
    /// A lane task of the delivery stage is gone (it was aborted or failed).
    #[error("a handler lane stopped")]
    LaneStopped,
    /// The delivery stage itself failed.
    #[error("the delivery stage failed: {0}")]
    Stage(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The retry policy gave up on records and there is nowhere to put them.
    #[error("{cause}; gave up ({reason:?}) and no failure sink is configured")]
    NoFailureSink {
        cause: Box<HandlerFailure>,
        reason: FailureReason,
    },
    /// The failure sink refused the records again and again.
    #[error("the failure sink keeps failing: {0}")]
    SinkFailing(#[source] Arc<dyn std::error::Error + Send + Sync>),
}

impl HandlerFailure {
    /// The text of a panic's payload.
    pub(crate) fn panicked(hook: Hook, payload: Box<dyn std::any::Any + Send>) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| Arc::from(*s))
            .or_else(|| {
                payload
                    .downcast_ref::<String>()
                    .map(|s| Arc::from(s.as_str()))
            })
            .unwrap_or_else(|| Arc::from("a non-string panic payload"));
        Self::Panicked { hook, message }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_as_before() {
        let returned = HandlerFailure::Returned {
            hook: Hook::Handle,
            error: Arc::new(HandlerError::msg("boom")),
        };
        assert_eq!(returned.to_string(), "handler failed: boom");
        let timed_out = HandlerFailure::TimedOut {
            hook: Hook::OnShardStart,
            timeout: Duration::from_secs(3),
        };
        assert_eq!(
            timed_out.to_string(),
            "on_shard_start did not return within 3s"
        );
        let panicked = HandlerFailure::panicked(Hook::Handle, Box::new("oops"));
        assert_eq!(panicked.to_string(), "handler panicked: oops");
        let gave_up = HandlerFailure::NoFailureSink {
            cause: Box::new(returned),
            reason: FailureReason::RetriesExhausted { attempts: 3 },
        };
        assert!(gave_up
            .to_string()
            .starts_with("handler failed: boom; gave up (RetriesExhausted"));
    }
}
