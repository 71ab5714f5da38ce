//! Liveness and readiness for an orchestrator's probes, without an HTTP server.
//!
//! A [`Probe`] is a cheap, cloneable handle on a running consumer (or replicator) that answers
//! two questions at any time, from any task, without waiting on the consumer:
//!
//! - **alive** ([`Probe::is_alive`]): the consumer's actor tree still runs. It turns false only
//!   when the consumer stopped — by an error, a shutdown or a crash — never because the stream
//!   is slow or unreachable (restarting the process would not help then). A liveness probe.
//! - **ready** ([`Probe::readiness`]): every shard this consumer owns is being read, none is
//!   quarantined, stalled, restarting after a failure, stopped by a gap or blocked in its
//!   handler, no ended shard misses its children, and no shard lags more than
//!   [`ReadinessCriteria::max_lag`]. A consumer that owns no shard (leases: more workers than
//!   shards) is ready: it stands by. When not, the
//!   [`Readiness`] says why, shard by shard, and serializes to JSON for the probe's body.
//!
//! Stalled shards and stuck handlers are judged when asked, from the status board, with the
//! watchdog's thresholds ([`ConsumerConfig::stall_timeout`](crate::ConsumerConfig::stall_timeout),
//! [`handler_stuck_after`](crate::ConsumerConfig::handler_stuck_after)): an answer never waits
//! for the watchdog's next round, nor for a coordinator busy listing the stream. Missing
//! children come from the watchdog ([`Consumer::health`](crate::Consumer::health)).
//!
//! Mount it in your own server (axum, hyper, ...); the crate depends on none. The answer for
//! each path, whatever the server:
//!
//! ```no_run
//! use dynamodb_stream::{Probe, ReadinessCriteria};
//!
//! /// Status code and body for a probe's path.
//! fn answer(probe: &Probe, criteria: &ReadinessCriteria, path: &str) -> (u16, String) {
//!     match path {
//!         "/healthz" if probe.is_alive() => (200, "ok".into()),
//!         "/healthz" => (503, "stopped".into()),
//!         "/readyz" => {
//!             let readiness = probe.readiness(criteria);
//!             let code = if readiness.ready { 200 } else { 503 };
//!             // {"ready":false,"reasons":[{"reason":"shard_stalled","shard_id":"shardId-…","for_seconds":151.2}]}
//!             (code, serde_json::to_string(&readiness).unwrap_or_default())
//!         }
//!         _ => (404, "not found".into()),
//!     }
//! }
//!
//! # async fn serve(consumer: dynamodb_stream::Consumer) {
//! let probe = consumer.probe(); // cloneable, 'static: move it into the server's handlers
//! let criteria = ReadinessCriteria::default(); // lag above 5 minutes: not ready
//! let (code, body) = answer(&probe, &criteria, "/readyz");
//! # drop((code, body));
//! # }
//! ```

use std::sync::Arc;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::actors::Liveness;
use crate::source::StreamsApi;
use crate::status::{HealthProblem, ShardState, StatusBoard};

/// What readiness asks beyond the watchdog's findings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReadinessCriteria {
    /// A shard whose lag ([`ShardStatus::lag`](crate::status::ShardStatus::lag)) is above this
    /// makes the consumer not ready; `None` leaves lag out. Default 5 minutes. Records from
    /// DynamoDB Local carry creation times truncated to the minute: keep it above a minute
    /// there.
    pub max_lag: Option<Duration>,
}

impl Default for ReadinessCriteria {
    fn default() -> Self {
        Self {
            max_lag: Some(Duration::from_secs(5 * 60)),
        }
    }
}

impl ReadinessCriteria {
    /// The same criteria with another lag threshold (`None`: lag is not considered).
    pub fn with_max_lag(mut self, max_lag: Option<Duration>) -> Self {
        self.max_lag = max_lag;
        self
    }
}

/// Whether the consumer is doing its job now, and if not, why; serializes to
/// `{"ready": bool, "reasons": [...]}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Readiness {
    /// True when there is no reason.
    pub ready: bool,
    /// Why not, in shard order (empty when ready).
    pub reasons: Vec<NotReady>,
}

impl Readiness {
    /// Ready exactly when there is no reason: for services that add reasons of their own.
    pub fn from_reasons(reasons: Vec<NotReady>) -> Self {
        Self {
            ready: reasons.is_empty(),
            reasons,
        }
    }

    pub(crate) fn of(reasons: Vec<NotReady>) -> Self {
        Self::from_reasons(reasons)
    }
}

/// One reason a consumer is not ready. In JSON an object whose `reason` names the variant in
/// snake case, with its fields beside it (durations in seconds: `for_seconds`, `lag_seconds`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
#[non_exhaustive]
pub enum NotReady {
    /// The consumer stopped (an error, a shutdown, a crash): it reads nothing any more.
    Stopped,
    /// The consumer does not read the stream yet: a replicator is still copying the table or
    /// catching up with the stream (`phase`: `starting`, `scanning`, `catching_up`).
    NotStreaming {
        /// Where it is.
        phase: String,
    },
    /// A shard was stopped after repeated failures; its children wait behind it.
    Quarantined {
        /// The shard.
        shard_id: String,
    },
    /// An open shard has had no successful GetRecords for `for_` (more than the
    /// `stall_timeout`) while it should be reading.
    ShardStalled {
        /// The shard.
        shard_id: String,
        /// How long.
        #[serde(rename = "for_seconds", serialize_with = "seconds")]
        for_: Duration,
    },
    /// A handler call of this shard has been running for `for_` (more than
    /// `handler_stuck_after`).
    HandlerStuck {
        /// The shard.
        shard_id: String,
        /// How long.
        #[serde(rename = "for_seconds", serialize_with = "seconds")]
        for_: Duration,
    },
    /// A shard ended `for_` ago and none of its children was found.
    ChildrenMissing {
        /// The parent shard.
        shard_id: String,
        /// How long.
        #[serde(rename = "for_seconds", serialize_with = "seconds")]
        for_: Duration,
    },
    /// A shard this consumer owns is not being read: its worker failed and waits to restart
    /// (`state`: `restarting`), or a gap stopped it (`stopped`).
    ShardNotReading {
        /// The shard.
        shard_id: String,
        /// `restarting` or `stopped`.
        state: String,
        /// Its last failure.
        last_error: Option<String>,
    },
    /// A shard lags more than [`ReadinessCriteria::max_lag`].
    LagAboveThreshold {
        /// The shard.
        shard_id: String,
        /// Its lag.
        #[serde(rename = "lag_seconds", serialize_with = "seconds")]
        lag: Duration,
        /// The threshold.
        #[serde(rename = "max_lag_seconds", serialize_with = "seconds")]
        max_lag: Duration,
    },
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stopped => f.write_str("the consumer stopped"),
            Self::NotStreaming { phase } => {
                write!(f, "not reading the stream yet ({phase})")
            }
            Self::Quarantined { shard_id } => write!(f, "shard {shard_id} is quarantined"),
            Self::ShardStalled { shard_id, for_ } => {
                write!(
                    f,
                    "shard {shard_id} has had no successful read for {for_:?}"
                )
            }
            Self::HandlerStuck { shard_id, for_ } => {
                write!(f, "a handler call of shard {shard_id} has run for {for_:?}")
            }
            Self::ChildrenMissing { shard_id, for_ } => write!(
                f,
                "shard {shard_id} ended {for_:?} ago and no child shard was found"
            ),
            Self::ShardNotReading {
                shard_id, state, ..
            } => write!(f, "shard {shard_id} is not being read ({state})"),
            Self::LagAboveThreshold {
                shard_id,
                lag,
                max_lag,
            } => write!(f, "shard {shard_id} lags {lag:?} (more than {max_lag:?})"),
        }
    }
}

fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// A cloneable handle that tells whether a consumer is alive and ready; made by
/// [`Consumer::probe`](crate::Consumer::probe) or
/// [`Replicator::probe`](crate::replicate::Replicator::probe). Answers from shared state at
/// once; it keeps nothing running, and once the consumer is gone it reports it stopped.
#[derive(Clone)]
pub struct Probe {
    readiness: Arc<dyn Fn(&ReadinessCriteria) -> Readiness + Send + Sync>,
    alive: Arc<dyn Fn() -> bool + Send + Sync>,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("alive", &self.is_alive())
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// Whether the consumer still runs (for a liveness probe).
    pub fn is_alive(&self) -> bool {
        (self.alive)()
    }

    /// Whether the consumer does its job now, judged by `criteria` (for a readiness probe).
    pub fn readiness(&self, criteria: &ReadinessCriteria) -> Readiness {
        (self.readiness)(criteria)
    }

    pub(crate) fn new(
        alive: impl Fn() -> bool + Send + Sync + 'static,
        readiness: impl Fn(&ReadinessCriteria) -> Readiness + Send + Sync + 'static,
    ) -> Self {
        Self {
            readiness: Arc::new(readiness),
            alive: Arc::new(alive),
        }
    }

    /// A probe of one consumer's board and actor tree.
    pub(crate) fn of_consumer(consumer: ConsumerProbe) -> Self {
        let alive = consumer.clone();
        Self::new(move || alive.is_alive(), move |c| consumer.readiness(c))
    }
}

/// What a consumer's probe reads: its status board, its clock and its coordinator.
#[derive(Clone)]
pub(crate) struct ConsumerProbe {
    pub(crate) board: Arc<StatusBoard>,
    pub(crate) api: Arc<dyn StreamsApi>,
    pub(crate) liveness: Liveness,
    pub(crate) stall_timeout: Duration,
    pub(crate) handler_stuck_after: Duration,
}

impl ConsumerProbe {
    pub(crate) fn is_alive(&self) -> bool {
        // `closed` is set by the coordinator's post_stop and by a kill: either means stopped.
        self.liveness.is_alive() && !self.board.view(|_, meta| meta.closed)
    }

    pub(crate) fn readiness(&self, criteria: &ReadinessCriteria) -> Readiness {
        if !self.is_alive() {
            return Readiness::of(vec![NotReady::Stopped]);
        }
        let now = crate::rt::Instant::now();
        let wall = self.api.wall_clock();
        let mut reasons = Vec::new();
        self.board.with_all(|all| {
            for (id, e) in all {
                match e.state {
                    ShardState::Quarantined => reasons.push(NotReady::Quarantined {
                        shard_id: id.clone(),
                    }),
                    ShardState::Restarting | ShardState::Stopped => {
                        reasons.push(NotReady::ShardNotReading {
                            shard_id: id.clone(),
                            state: if e.state == ShardState::Restarting {
                                "restarting"
                            } else {
                                "stopped"
                            }
                            .to_owned(),
                            last_error: e.last_error.clone(),
                        });
                    }
                    _ => {}
                }
                for problem in
                    e.reading_problems(id, now, self.stall_timeout, self.handler_stuck_after)
                {
                    reasons.push(from_problem(problem));
                }
                if let (Some(max_lag), Some(lag)) = (criteria.max_lag, e.lag(wall)) {
                    if lag > max_lag {
                        reasons.push(NotReady::LagAboveThreshold {
                            shard_id: id.clone(),
                            lag,
                            max_lag,
                        });
                    }
                }
            }
        });
        // Only the coordinator knows which parents have children: the watchdog's finding.
        for problem in self.board.health().problems {
            if let HealthProblem::ChildrenMissing { .. } = problem {
                reasons.push(from_problem(problem));
            }
        }
        Readiness::of(reasons)
    }
}

fn from_problem(problem: HealthProblem) -> NotReady {
    match problem {
        HealthProblem::ShardStalled { shard_id, for_ } => NotReady::ShardStalled { shard_id, for_ },
        HealthProblem::HandlerStuck { shard_id, for_ } => NotReady::HandlerStuck { shard_id, for_ },
        HealthProblem::ChildrenMissing { shard_id, for_ } => {
            NotReady::ChildrenMissing { shard_id, for_ }
        }
        HealthProblem::Quarantined { shard_id } => NotReady::Quarantined { shard_id },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_serialize_as_tagged_objects_with_seconds() {
        let r = Readiness::of(vec![
            NotReady::ShardStalled {
                shard_id: "shardId-1".into(),
                for_: Duration::from_millis(2500),
            },
            NotReady::Stopped,
        ]);
        assert_eq!(
            serde_json::to_value(&r).expect("plain data"),
            serde_json::json!({
                "ready": false,
                "reasons": [
                    {"reason": "shard_stalled", "shard_id": "shardId-1", "for_seconds": 2.5},
                    {"reason": "stopped"},
                ]
            })
        );
        assert_eq!(
            serde_json::to_value(Readiness::of(Vec::new())).expect("plain data"),
            serde_json::json!({"ready": true, "reasons": []})
        );
    }

    #[test]
    fn lag_threshold_defaults_to_five_minutes() {
        assert_eq!(
            ReadinessCriteria::default().max_lag,
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            ReadinessCriteria::default().with_max_lag(None).max_lag,
            None
        );
    }
}
