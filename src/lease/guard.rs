//! How long this process may still act on a lease it holds, by its own clocks.
//!
//! A lease is valid until `acquired + duration` by the wall clock of whoever reads the lease
//! table. A worker that stalls past that — a VM pause, SIGSTOP, a laptop sleep, a long GC-like
//! stall — wakes up believing it still owns the shard while another worker may already read it
//! (the "zombie worker" of every lease-based consumer). The guard closes that window: a
//! handler call starts, and a checkpoint is written, only while the lease is valid by *both*
//! this process's monotonic clock (which runs on through a pause) and its wall clock (which
//! jumps forward after a suspend, when the monotonic clock may not have counted the sleep),
//! measured from when the take or the last successful renewal was *sent*, minus a safety
//! margin. After that nothing is delivered until a renewal succeeds again or the lease is known
//! lost.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::rt::Instant;

#[derive(Debug, Clone, Copy)]
struct Validity {
    monotonic: Instant,
    wall: SystemTime,
    lost: bool,
}

/// One held lease's validity, shared by the checkpointer (which extends it on every renewal and
/// ends it when the lease is lost) and the shard's delivery stage (which waits on it before every
/// handler call).
#[derive(Debug, Clone)]
pub(crate) struct LeaseGuard(Arc<Mutex<Validity>>);

/// What a guard says now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseState {
    /// Valid: act on the shard.
    Valid,
    /// Maybe expired: wait for a renewal before acting.
    Expired,
    /// Gone: another worker has it, or it was released.
    Lost,
}

impl LeaseGuard {
    /// A guard for a lease taken or renewed by a request sent at (`sent`, `sent_wall`), valid for
    /// `valid_for` (the lease duration minus the safety margin).
    pub(crate) fn new(sent: Instant, sent_wall: SystemTime, valid_for: Duration) -> Self {
        Self(Arc::new(Mutex::new(Validity {
            monotonic: sent + valid_for,
            wall: sent_wall + valid_for,
            lost: false,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Validity> {
        // The data is three plain values: a panic elsewhere cannot leave it half-written.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A renewal sent at (`sent`, `sent_wall`) succeeded.
    pub(crate) fn extend(&self, sent: Instant, sent_wall: SystemTime, valid_for: Duration) {
        let mut v = self.lock();
        if !v.lost {
            v.monotonic = v.monotonic.max(sent + valid_for);
            v.wall = v.wall.max(sent_wall + valid_for);
        }
    }

    /// The lease is gone for good.
    pub(crate) fn lose(&self) {
        self.lock().lost = true;
    }

    /// Where the lease stands at `now` / `wall_now`.
    pub(crate) fn state(&self, now: Instant, wall_now: SystemTime) -> LeaseState {
        let v = self.lock();
        if v.lost {
            LeaseState::Lost
        } else if now < v.monotonic && wall_now < v.wall {
            LeaseState::Valid
        } else {
            LeaseState::Expired
        }
    }

    /// Wait until the lease is valid (`true`) or lost (`false`), looking every `every`.
    pub(crate) async fn wait_valid(
        &self,
        wall_clock: &(dyn Fn() -> SystemTime + Send + Sync),
        every: Duration,
    ) -> bool {
        loop {
            match self.state(Instant::now(), wall_clock()) {
                LeaseState::Valid => return true,
                LeaseState::Lost => return false,
                LeaseState::Expired => crate::rt::sleep(every).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn valid_until_either_clock_passes_the_deadline() {
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let guard = LeaseGuard::new(Instant::now(), wall, Duration::from_secs(8));
        assert_eq!(guard.state(Instant::now(), wall), LeaseState::Valid);
        // The monotonic clock ran on (a pause): expired, whatever the wall clock says.
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(guard.state(Instant::now(), wall), LeaseState::Expired);
        // A renewal sent now makes it valid again.
        guard.extend(Instant::now(), wall, Duration::from_secs(8));
        assert_eq!(guard.state(Instant::now(), wall), LeaseState::Valid);
        // The wall clock jumped (a suspend the monotonic clock did not count): expired.
        let later = wall + Duration::from_secs(30);
        assert_eq!(guard.state(Instant::now(), later), LeaseState::Expired);
        guard.lose();
        assert_eq!(guard.state(Instant::now(), wall), LeaseState::Lost);
        guard.extend(Instant::now(), wall, Duration::from_secs(8));
        assert_eq!(
            guard.state(Instant::now(), wall),
            LeaseState::Lost,
            "a lost lease stays lost"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_ends_at_a_renewal_or_a_loss() {
        let wall = SystemTime::UNIX_EPOCH;
        let clock = move || wall;
        let guard = LeaseGuard::new(Instant::now(), wall, Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(2)).await;
        let g = guard.clone();
        let renew = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            g.extend(Instant::now(), wall, Duration::from_secs(10));
        });
        assert!(guard.wait_valid(&clock, Duration::from_millis(50)).await);
        renew.await.expect("renewal task");
        tokio::time::advance(Duration::from_secs(20)).await;
        let g = guard.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            g.lose();
        });
        assert!(!guard.wait_valid(&clock, Duration::from_millis(50)).await);
    }
}
