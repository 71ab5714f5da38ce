//! "Caught up as of a moment": every shard that existed then has been read and acknowledged up to
//! where the stream stood at that moment, children of shards that ended meanwhile included.
//!
//! It is decided from the status board alone, so it costs no stream call. A shard is caught up
//! as of `asked` when nothing handed to its handler is unacknowledged and either
//! - a GetRecords sent after `asked` (strictly) found it empty (everything written before was read), or
//! - a record written after `asked` was acknowledged (records are in write order within a
//!   shard, so every earlier one was too): its approximate creation time is later than the
//!   wall clock at `asked`. The time is rounded down by the service, so "later" is strict.
//!
//! A shard that ended is caught up; its children then count too, because they may hold records
//! written before `asked` (the parent may have closed before the consumer listed them) — unless
//! the parent itself took a record written after `asked`: it was open then, so its children hold
//! only later records (without this, a stream that rolls over faster than it is read would be
//! chased from child to child for ever). An
//! ended shard without known children waits for them: a shard closes only when it is split or
//! rolled over, and the service may list the closed parent before its children; only a disabled
//! stream's shards end without any.
//!
//! Nothing here is a stopping rule for reading: the consumer goes on, and a once-run that stops
//! here continues from its checkpoint next time, so an early "caught up" could only mean an
//! earlier stop, never a lost record.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::{Error, RuntimeError};
use crate::rt::Instant;
use crate::status::{Entry, Meta, ShardState, StatusBoard};

/// How often at most the board is evaluated while waiting: a busy consumer changes it with
/// every page and acknowledgement.
const SETTLE: Duration = Duration::from_millis(20);

/// Where a wait stands.
#[derive(Debug)]
pub(crate) enum Progress {
    /// Every shard concerned is caught up.
    Done,
    /// These shards are not yet (a few of them: `first`), `count` in all.
    Pending { count: usize, first: Vec<String> },
    /// A shard cannot get there (quarantined, or stopped by a gap).
    Blocked(Error),
}

/// One question: caught up as of `asked`?
#[derive(Debug)]
pub(crate) struct CatchUp {
    asked: Instant,
    asked_wall: SystemTime,
    /// The shards on the board at the first look: those that existed when it was asked.
    roots: Option<BTreeSet<String>>,
}

impl CatchUp {
    pub(crate) fn new(asked: Instant, asked_wall: SystemTime) -> Self {
        Self {
            asked,
            asked_wall,
            roots: None,
        }
    }

    /// Evaluate the board.
    pub(crate) fn evaluate(&mut self, shards: &BTreeMap<String, Entry>, meta: &Meta) -> Progress {
        let (asked, asked_wall) = (self.asked, self.asked_wall);
        let roots = self
            .roots
            .get_or_insert_with(|| shards.keys().cloned().collect());
        let mut children: HashMap<&str, Vec<&str>> = HashMap::new();
        for (id, e) in shards {
            if let Some(parent) = &e.parent {
                children
                    .entry(parent.as_str())
                    .or_default()
                    .push(id.as_str());
            }
        }
        let mut queue: Vec<&str> = roots.iter().map(String::as_str).collect();
        let mut seen = BTreeSet::new();
        let mut pending = 0;
        let mut first = Vec::new();
        let mut wait_for = |id: &str| {
            pending += 1;
            if first.len() < 3 {
                first.push(id.to_owned());
            }
        };
        while let Some(id) = queue.pop() {
            if !seen.insert(id) {
                continue;
            }
            // Gone from the board: it ended and was trimmed away (or its lease moved on).
            let Some(e) = shards.get(id) else { continue };
            match e.state {
                ShardState::Quarantined => {
                    return Progress::Blocked(Error::Quarantined {
                        shard_id: id.to_owned(),
                        last_error: e.last_error.clone().unwrap_or_default(),
                    })
                }
                ShardState::Stopped => {
                    let gap = meta.gaps.iter().rev().find(|g| g.shard_id == id);
                    return Progress::Blocked(match gap {
                        Some(gap) => Error::Gap(Box::new(gap.clone())),
                        None => RuntimeError::new("a shard stopped before it caught up").into(),
                    });
                }
                // Open after the question: its children hold only later records.
                ShardState::Ended if e.newest_acked_time.is_some_and(|t| t > asked_wall) => {}
                ShardState::Ended => match children.get(id) {
                    Some(kids) => queue.extend(kids.iter().copied()),
                    None if meta.stream_disabled => {}
                    None => wait_for(id),
                },
                _ => {
                    if !shard_caught_up(e, asked, asked_wall) {
                        wait_for(id);
                    }
                }
            }
        }
        if pending == 0 {
            Progress::Done
        } else {
            Progress::Pending {
                count: pending,
                first,
            }
        }
    }
}

/// Whether one shard that is being read (or waits to be) is caught up as of `asked`.
fn shard_caught_up(e: &Entry, asked: Instant, asked_wall: SystemTime) -> bool {
    let all_acked = e.unacked_pages.is_empty() && e.in_flight_records == 0;
    // Strictly later: at the very instant of the question (a coarse clock, a paused one) the
    // poll may have been sent before the last writes.
    let read_to_end = e.empty_poll_started.is_some_and(|t| t > asked);
    let past_it = e.newest_acked_time.is_some_and(|t| t > asked_wall);
    all_acked && (read_to_end || past_it)
}

/// Wait until the consumer behind `board` is caught up as of `asked`; `on_progress` hears how
/// many shards are not yet, after every evaluation.
pub(crate) async fn wait(
    board: Arc<StatusBoard>,
    asked: Instant,
    asked_wall: SystemTime,
    mut on_progress: impl FnMut(usize) + Send,
) -> crate::Result<()> {
    let mut changes = board.changes();
    let mut question = CatchUp::new(asked, asked_wall);
    loop {
        changes.borrow_and_update();
        let (progress, closed) =
            board.view(|shards, meta| (question.evaluate(shards, meta), meta.closed));
        match progress {
            Progress::Done => return Ok(()),
            Progress::Blocked(e) => return Err(e),
            Progress::Pending { count, first } => {
                tracing::trace!(count, ?first, "not caught up yet");
                on_progress(count)
            }
        }
        if closed || changes.changed().await.is_err() {
            return Err(RuntimeError::new("the consumer stopped before it caught up").into());
        }
        crate::rt::sleep(SETTLE).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Gap, GapAction, GapKind, LostRange};

    fn entry(parent: Option<&str>, state: ShardState) -> Entry {
        let mut e = Entry::new(parent.map(str::to_owned));
        e.state = state;
        e
    }

    fn board(entries: Vec<(&str, Entry)>) -> BTreeMap<String, Entry> {
        entries
            .into_iter()
            .map(|(id, e)| (id.to_owned(), e))
            .collect()
    }

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[tokio::test(start_paused = true)]
    async fn a_shard_is_caught_up_by_an_empty_poll_sent_after_the_question() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut q = CatchUp::new(at(t0, 100), wall);
        let mut a = entry(None, ShardState::CaughtUp);
        a.empty_poll_started = Some(at(t0, 50));
        let meta = Meta::default();
        let mut shards = board(vec![("a", a)]);
        assert!(matches!(
            q.evaluate(&shards, &meta),
            Progress::Pending { count: 1, .. }
        ));
        let a = shards.get_mut("a").unwrap();
        // Sent at the very instant of the question: it may have missed the last writes.
        a.empty_poll_started = Some(at(t0, 100));
        assert!(matches!(
            q.evaluate(&shards, &meta),
            Progress::Pending { count: 1, .. }
        ));
        shards.get_mut("a").unwrap().empty_poll_started = Some(at(t0, 101));
        assert!(matches!(q.evaluate(&shards, &meta), Progress::Done));
        // Pages handed over and not acknowledged keep it pending.
        shards
            .get_mut("a")
            .unwrap()
            .unacked_pages
            .push_back((None, None));
        assert!(matches!(
            q.evaluate(&shards, &meta),
            Progress::Pending { count: 1, .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_shard_is_caught_up_by_an_acknowledged_later_record() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut q = CatchUp::new(t0, wall);
        let mut a = entry(None, ShardState::Reading);
        // Same second as the question: it may have been written before it.
        a.newest_acked_time = Some(wall);
        let meta = Meta::default();
        let mut shards = board(vec![("a", a)]);
        assert!(matches!(
            q.evaluate(&shards, &meta),
            Progress::Pending { count: 1, .. }
        ));
        shards.get_mut("a").unwrap().newest_acked_time = Some(wall + Duration::from_secs(1));
        assert!(matches!(q.evaluate(&shards, &meta), Progress::Done));
    }

    #[tokio::test(start_paused = true)]
    async fn children_of_an_ended_shard_count_and_a_childless_end_waits_for_them() {
        let t0 = Instant::now();
        let wall = SystemTime::UNIX_EPOCH;
        let mut q = CatchUp::new(t0, wall);
        let mut meta = Meta::default();
        let mut shards = board(vec![("p", entry(None, ShardState::Ended))]);
        assert!(matches!(
            q.evaluate(&shards, &meta),
            Progress::Pending { count: 1, .. }
        ));
        // A disabled stream's shards end without children.
        meta.stream_disabled = true;
        assert!(matches!(q.evaluate(&shards, &meta), Progress::Done));
        meta.stream_disabled = false;

        // A child appears (found after the question was asked): it counts.
        shards.insert("c".into(), entry(Some("p"), ShardState::WaitingOnParent));
        assert!(matches!(
            q.evaluate(&shards, &meta),
            Progress::Pending { count: 1, .. }
        ));
        let c = shards.get_mut("c").unwrap();
        c.state = ShardState::CaughtUp;
        c.empty_poll_started = Some(at(t0, 20));
        assert!(matches!(q.evaluate(&shards, &meta), Progress::Done));
        // Children of a parent that took a record written after the question do not.
        shards.get_mut("p").unwrap().newest_acked_time = Some(wall + Duration::from_secs(1));
        shards.get_mut("c").unwrap().empty_poll_started = None;
        assert!(matches!(q.evaluate(&shards, &meta), Progress::Done));
        // A shard unrelated to those asked about does not.
        shards.insert("other".into(), entry(None, ShardState::Reading));
        assert!(matches!(q.evaluate(&shards, &meta), Progress::Done));
    }

    #[tokio::test(start_paused = true)]
    async fn a_quarantined_or_stopped_shard_blocks() {
        let t0 = Instant::now();
        let mut q = CatchUp::new(t0, SystemTime::UNIX_EPOCH);
        let mut meta = Meta::default();
        let shards = board(vec![("a", entry(None, ShardState::Quarantined))]);
        assert!(matches!(
            q.evaluate(&shards, &meta),
            Progress::Blocked(Error::Quarantined { .. })
        ));
        let mut q = CatchUp::new(t0, SystemTime::UNIX_EPOCH);
        meta.gaps.push(Gap {
            shard_id: "b".into(),
            kind: GapKind::TrimmedData,
            action: GapAction::Stopped,
            lost: LostRange {
                after: None,
                before: None,
            },
        });
        let shards = board(vec![("b", entry(None, ShardState::Stopped))]);
        assert!(matches!(
            q.evaluate(&shards, &meta),
            Progress::Blocked(Error::Gap(g)) if g.shard_id == "b"
        ));
    }
}
