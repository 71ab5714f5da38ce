//! The watchdog: stalled shards, stuck handlers, missing children, quarantines.

use std::collections::HashSet;

use crate::rt::Instant;

use crate::events::ConsumerEvent;
use crate::status::{HealthProblem, ShardState};

use super::CoordinatorState;

impl CoordinatorState {
    /// The watchdog: problems now present, reported as events when they appear or clear.
    pub(super) fn watchdog(&mut self) {
        self.shared.board.refresh_lags(self.shared.api.wall_clock());
        let cfg = &self.shared.config;
        let now = Instant::now();
        let mut problems = Vec::new();
        let parents_with_children: HashSet<&str> = self
            .shards
            .values()
            .filter_map(|e| e.shard.parent_shard_id.as_deref())
            .collect();
        self.shared.board.with_all(|all| {
            for (id, e) in all {
                match e.state {
                    ShardState::Reading | ShardState::CaughtUp => problems.extend(
                        e.reading_problems(id, now, cfg.stall_timeout, cfg.handler_stuck_after),
                    ),
                    ShardState::Quarantined => problems.push(HealthProblem::Quarantined {
                        shard_id: id.clone(),
                    }),
                    ShardState::Ended
                        if !self.stream_disabled
                            && !parents_with_children.contains(id.as_str()) =>
                    {
                        if let Some(t) = e
                            .ended_at
                            .filter(|t| now.duration_since(*t) > cfg.children_timeout)
                        {
                            problems.push(HealthProblem::ChildrenMissing {
                                shard_id: id.clone(),
                                for_: now.duration_since(t),
                            });
                        }
                    }
                    _ => {}
                }
            }
        });
        let key = |p: &HealthProblem| match p {
            HealthProblem::ShardStalled { shard_id, .. } => ("stalled", shard_id.clone()),
            HealthProblem::HandlerStuck { shard_id, .. } => ("stuck", shard_id.clone()),
            HealthProblem::ChildrenMissing { shard_id, .. } => ("children", shard_id.clone()),
            HealthProblem::Quarantined { shard_id } => ("quarantined", shard_id.clone()),
        };
        let before = self.shared.board.health().problems;
        let before_keys: HashSet<_> = before.iter().map(key).collect();
        let now_keys: HashSet<_> = problems.iter().map(key).collect();
        for p in &problems {
            if !before_keys.contains(&key(p)) {
                tracing::warn!(problem = ?p, "consumer unhealthy");
                self.shared.emit(ConsumerEvent::Unhealthy(p.clone()));
            }
        }
        for p in before {
            if !now_keys.contains(&key(&p)) {
                tracing::info!(problem = ?p, "recovered");
                self.shared.emit(ConsumerEvent::Recovered(p));
            }
        }
        self.shared.board.set_problems(problems);
    }
}
