//! Shard leases: several worker processes sharing one stream, the KCL way.
//!
//! A [`LeaseStore`] keeps one [`Lease`] per (consumer application, stream ARN, shard): who
//! processes the shard right now, until when, and how far it got (its checkpoint). Every
//! worker of an application lists the leases, takes free or expired ones (and steals some when
//! the load is unbalanced), renews the ones it holds, and checkpoints its progress into them.
//! Two implementations: [`MemoryLeaseStore`] (in-process consumers sharing one map; tests) and
//! `DynamoDbLeaseStore` (feature `aws`; one item per lease in a DynamoDB table).
//!
//! # The lease model
//!
//! - **Ownership.** [`Lease::owner`] names the worker processing the shard, `None` when the
//!   lease is free. Only the owner reads the shard and writes its checkpoint.
//! - **Expiry.** The owner's claim is valid until [`Lease::expires_at_ms`] (wall-clock Unix
//!   milliseconds, chosen by the writer). The owner renews well before then; a worker that
//!   crashes or hangs stops renewing, and once its lease expired any other worker may take it.
//!   The stores never read a clock: whether a lease is free, expired or stolen is the caller's
//!   judgement, and the store only checks the counter. Workers' clocks must agree to well
//!   within the lease duration, or a lease may be taken while its owner still believes it valid.
//! - **The counter is a fencing token.** [`Lease::counter`] grows by one with *every*
//!   successful write (take, renew, checkpoint, release). A writer states the counter it last
//!   saw, and the write happens only if the lease still has it. A worker that was paused (GC,
//!   network partition, a stuck handler) past its expiry may wake up convinced that it still
//!   owns the shard; by then another worker has taken the lease and the counter has moved, so
//!   every write of the paused worker is refused with [`LeaseErrorKind::Conflict`] — in
//!   particular it can never move the checkpoint over the new owner's.
//! - **Every write is conditional**, so two workers can never both believe a write of theirs
//!   succeeded: of several racing takers of one lease exactly one wins, the others get
//!   `Conflict` and re-read. Without conditions the last writer would silently win and two
//!   workers would process (and checkpoint) the same shard.
//! - **Checkpoints only move forward**: `Latest` < `Processed` (by sequence number, compared
//!   numerically) < `Ended`. A write that would move the stored position backwards is refused
//!   with `Conflict`, even from the rightful owner.
//!
//! Because every write changes the counter, an owner must serialise its writes to one lease
//! and pass the counter returned by the previous write to the next one (a renewal racing a
//! checkpoint of the same owner makes one of them fail with `Conflict`).
//!
//! # Cost (DynamoDB, on-demand capacity)
//!
//! A lease item is well under 1 KB (≈ 0.4 KB with a 90-character stream ARN), so each write
//! costs one write request unit (WRU). Listing is a strongly consistent Query over all leases
//! of the stream: one read request unit (RRU) per 4 KB read, so about ten leases per RRU.
//!
//! ```text
//! writes per shard per hour = 3600 s / renew_interval + 3600 s / checkpoint_interval
//!                             (+ the rare take / release when leases move)
//! reads per hour            = workers × 3600 s / list_interval × ⌈leases × 0.4 KB / 4 KB⌉
//! ```
//!
//! where `list_interval` is the discovery / balancing interval, and `leases` counts every lease
//! kept, including those of ended shards not yet deleted (DynamoDB Streams replaces shards
//! every few hours and keeps them for 24 hours, so there are several per open shard).
//! Checkpoint writes happen only for shards that made progress; a busy shard writes every
//! interval.
//!
//! Example, at renew every 3 s and checkpoint every 1 s (the values the coordinator may choose
//! differently): 1,200 + 3,600 = 4,800 WRU per busy shard per hour, about 3.5 million per
//! month; at $0.625 per million WRU (us-east-1 on-demand at the time of writing) that is about
//! $2.16 per shard per month. Listing 100 leases every 10 s from 4 workers costs
//! 4 × 360 × 10 = 14,400 RRU per hour, about $1.30 per month at $0.125 per million RRU. Writes
//! dominate, and the checkpoint interval is the biggest lever: checkpointing every 10 s brings
//! a shard down to 1,560 WRU per hour.

#[cfg(feature = "aws")]
mod dynamodb;
pub(crate) mod guard;
mod memory;
pub(crate) mod plan;

use std::fmt;

use crate::checkpoint::{ShardCheckpoint, StreamKey};
use crate::error::BoxError;
use crate::source::BoxFuture;

#[cfg(feature = "aws")]
pub use dynamodb::DynamoDbLeaseStore;
pub use memory::MemoryLeaseStore;

/// One shard's lease and checkpoint (one item / row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The shard.
    pub shard_id: String,
    /// The shard's parents, which must be processed to their end before it.
    pub parent_shard_ids: Vec<String>,
    /// The worker processing the shard; `None` when the lease is free.
    pub owner: Option<String>,
    /// Incremented by every successful write (take, renew, checkpoint, release): the fencing
    /// token every conditional write states.
    pub counter: u64,
    /// The owner's lease is valid until then (wall-clock Unix milliseconds); 0 when free.
    pub expires_at_ms: u64,
    /// How far the shard was processed; `None` when it never was.
    pub checkpoint: Option<ShardCheckpoint>,
    /// Another worker asked the owner to hand this lease over
    /// ([`LeaseStore::request_handoff`]): the owner stops reading the shard, lets its handler
    /// finish what it was given, writes the checkpoint and releases the lease, so the next owner
    /// starts exactly after it. Cleared by a take and by a release.
    pub handoff_to: Option<String>,
}

impl Lease {
    /// A free, never processed lease (what [`LeaseStore::create`] stores).
    fn new_free(shard_id: &str, parent_shard_ids: &[String]) -> Self {
        Self {
            shard_id: shard_id.to_owned(),
            parent_shard_ids: parent_shard_ids.to_vec(),
            owner: None,
            counter: 0,
            expires_at_ms: 0,
            checkpoint: None,
            handoff_to: None,
        }
    }
}

/// What went wrong with a lease write or the lease store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LeaseErrorKind {
    /// A condition failed: someone else wrote the lease since the caller read it (the lease
    /// was lost or taken), or the checkpoint would have moved backwards. Re-read before
    /// deciding anything; never retry the same write.
    Conflict,
    /// The lease does not exist (never created, or deleted).
    NotFound,
    /// The store could not be reached or was overloaded (throttling, 5xx, timeouts); the same
    /// request may succeed later.
    Io,
    /// A failure retrying cannot fix: validation errors, access denied, a missing table, or a
    /// table whose key schema is not a lease table's.
    Fatal,
    /// A stored lease cannot be read (missing or ill-typed attributes, a bad sequence number).
    /// Never treated as "no lease": that would reprocess or skip records.
    Corrupt,
}

/// An error from a [`LeaseStore`], with its classification.
#[derive(Debug)]
pub struct LeaseError {
    kind: LeaseErrorKind,
    message: String,
    source: Option<BoxError>,
}

impl LeaseError {
    /// A new error of `kind` with a human-readable message.
    pub fn new(kind: LeaseErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attach the lower-level cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The classification.
    pub fn kind(&self) -> LeaseErrorKind {
        self.kind
    }

    /// The message, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Only [`Io`](LeaseErrorKind::Io) failures are worth retrying as they are: a conflict needs
    /// a fresh read first, and the others stay as they are.
    pub fn is_retryable(&self) -> bool {
        self.kind == LeaseErrorKind::Io
    }
}

impl fmt::Display for LeaseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            LeaseErrorKind::Conflict => "lease conflict",
            LeaseErrorKind::NotFound => "lease not found",
            LeaseErrorKind::Io => "lease store failed",
            LeaseErrorKind::Fatal => "lease store unusable",
            LeaseErrorKind::Corrupt => "lease data is corrupt",
        };
        write!(f, "{kind}: {}", self.message)
    }
}

impl std::error::Error for LeaseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Storage for leases, shared by every worker of one application.
///
/// Contract for implementors: every write is atomic and conditional as documented per method;
/// a refused condition is [`Conflict`](LeaseErrorKind::Conflict) (or
/// [`NotFound`](LeaseErrorKind::NotFound) when the lease is missing) and changes nothing; a
/// successful write increments the counter by exactly one. Reads are strongly consistent, except
/// [`list_recent`](LeaseStore::list_recent)'s.
pub trait LeaseStore: Send + Sync + 'static {
    /// Create the table if missing (DynamoDB: on-demand billing, hash key `leaseKey` =
    /// `"{application}|{stream_arn}"`, range key `shardId`), or validate its key schema if it
    /// exists (a wrong schema is [`Fatal`](LeaseErrorKind::Fatal) with a clear message).
    /// Idempotent.
    fn ensure_table(&self) -> BoxFuture<'_, Result<(), LeaseError>>;

    /// Every lease of `key`, sorted by shard id (paged internally; consistent read).
    fn list(&self, key: &StreamKey) -> BoxFuture<'_, Result<Vec<Lease>, LeaseError>>;

    /// Every lease of `key`, sorted by shard id, where each lease may be an older version of
    /// itself (DynamoDB: an eventually consistent read, at half the read units of
    /// [`list`](Self::list)). What a worker's balancing round reads: every decision it takes
    /// from the listing is a write conditional on the listed counter, so a stale lease makes
    /// that write fail ([`Conflict`](LeaseErrorKind::Conflict)) and nothing else. Default:
    /// [`list`](Self::list).
    fn list_recent(&self, key: &StreamKey) -> BoxFuture<'_, Result<Vec<Lease>, LeaseError>> {
        self.list(key)
    }

    /// Create a free lease for a new shard if none exists (conditional on absence).
    /// `Ok(true)`: created; `Ok(false)`: it existed (and is left as it was).
    fn create(
        &self,
        key: &StreamKey,
        shard_id: &str,
        parent_shard_ids: &[String],
    ) -> BoxFuture<'_, Result<bool, LeaseError>>;

    /// Take a lease (free, expired, or stolen) for `owner` until `expires_at_ms`, conditional
    /// on the counter still being `expected_counter`. Returns the new lease (counter + 1).
    fn take(
        &self,
        key: &StreamKey,
        shard_id: &str,
        expected_counter: u64,
        owner: &str,
        expires_at_ms: u64,
    ) -> BoxFuture<'_, Result<Lease, LeaseError>>;

    /// Extend an owned lease until `expires_at_ms`, conditional on owner == `owner` and
    /// counter == `counter`. Returns the new counter.
    fn renew(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        counter: u64,
        expires_at_ms: u64,
    ) -> BoxFuture<'_, Result<u64, LeaseError>>;

    /// Write the checkpoint, conditional on owner == `owner` and counter == `counter` (fencing:
    /// a worker whose lease was taken can never move the checkpoint), and on the position not
    /// moving backwards (`Latest` < `Processed`, by sequence number numerically, < `Ended`).
    /// Returns the new counter. Does not extend the lease.
    fn checkpoint(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        counter: u64,
        checkpoint: &ShardCheckpoint,
    ) -> BoxFuture<'_, Result<u64, LeaseError>>;

    /// Give a lease back (owner := `None`, expires_at_ms := 0), conditional on owner and
    /// counter, so another worker takes it without waiting for expiry. The checkpoint stays.
    /// Returns the new counter.
    fn release(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        counter: u64,
    ) -> BoxFuture<'_, Result<u64, LeaseError>>;

    /// Remove the lease of a shard that ended and is no longer in the stream (cleanup).
    /// Unconditional and idempotent: removing a missing lease is `Ok`, so racing cleaners all
    /// succeed.
    fn delete(&self, key: &StreamKey, shard_id: &str) -> BoxFuture<'_, Result<(), LeaseError>>;

    /// Ask the owner of a live lease to hand it over (`handoff_to := to`), conditional on
    /// owner == `owner`: the graceful alternative to stealing it. The one write that leaves the
    /// counter as it is — it changes no ownership, and the owner's fenced writes must go on
    /// succeeding until it releases the lease. `Ok(true)`: asked; `Ok(false)`: this store cannot
    /// hand leases over (the default, for stores written before it existed), and the caller
    /// steals instead.
    fn request_handoff(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        to: &str,
    ) -> BoxFuture<'_, Result<bool, LeaseError>> {
        let _ = (key, shard_id, owner, to);
        Box::pin(async { Ok(false) })
    }
}

impl<T: LeaseStore + ?Sized> LeaseStore for std::sync::Arc<T> {
    fn ensure_table(&self) -> BoxFuture<'_, Result<(), LeaseError>> {
        (**self).ensure_table()
    }

    fn list_recent(&self, key: &StreamKey) -> BoxFuture<'_, Result<Vec<Lease>, LeaseError>> {
        (**self).list_recent(key)
    }

    fn list(&self, key: &StreamKey) -> BoxFuture<'_, Result<Vec<Lease>, LeaseError>> {
        (**self).list(key)
    }

    fn create(
        &self,
        key: &StreamKey,
        shard_id: &str,
        parent_shard_ids: &[String],
    ) -> BoxFuture<'_, Result<bool, LeaseError>> {
        (**self).create(key, shard_id, parent_shard_ids)
    }

    fn take(
        &self,
        key: &StreamKey,
        shard_id: &str,
        expected_counter: u64,
        owner: &str,
        expires_at_ms: u64,
    ) -> BoxFuture<'_, Result<Lease, LeaseError>> {
        (**self).take(key, shard_id, expected_counter, owner, expires_at_ms)
    }

    fn renew(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        counter: u64,
        expires_at_ms: u64,
    ) -> BoxFuture<'_, Result<u64, LeaseError>> {
        (**self).renew(key, shard_id, owner, counter, expires_at_ms)
    }

    fn checkpoint(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        counter: u64,
        checkpoint: &ShardCheckpoint,
    ) -> BoxFuture<'_, Result<u64, LeaseError>> {
        (**self).checkpoint(key, shard_id, owner, counter, checkpoint)
    }

    fn release(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        counter: u64,
    ) -> BoxFuture<'_, Result<u64, LeaseError>> {
        (**self).release(key, shard_id, owner, counter)
    }

    fn delete(&self, key: &StreamKey, shard_id: &str) -> BoxFuture<'_, Result<(), LeaseError>> {
        (**self).delete(key, shard_id)
    }

    fn request_handoff(
        &self,
        key: &StreamKey,
        shard_id: &str,
        owner: &str,
        to: &str,
    ) -> BoxFuture<'_, Result<bool, LeaseError>> {
        (**self).request_handoff(key, shard_id, owner, to)
    }
}

// ---------------------------------------------------------------------------------------------
// Condition checks shared by the stores
//
// The memory store decides with them; the DynamoDB store lets DynamoDB decide (the conditions
// must be evaluated atomically with the write) and uses them only to explain a refusal from the
// item DynamoDB returns, so both stores report the same reasons.
// ---------------------------------------------------------------------------------------------

fn not_found(key: &StreamKey, shard_id: &str) -> LeaseError {
    LeaseError::new(
        LeaseErrorKind::NotFound,
        format!(
            "no lease for shard {shard_id} of application {:?} on {}",
            key.application, key.stream_arn
        ),
    )
}

/// Refuse unless the lease still has the counter the caller saw.
fn check_counter(lease: &Lease, expected: u64) -> Result<(), LeaseError> {
    if lease.counter == expected {
        return Ok(());
    }
    Err(LeaseError::new(
        LeaseErrorKind::Conflict,
        format!(
            "lease of shard {} is at counter {} (owner {}), not {expected}: it was written since",
            lease.shard_id,
            lease.counter,
            owner_text(lease.owner.as_deref()),
        ),
    ))
}

/// Refuse unless `owner` holds the lease at `counter` (the fencing check).
fn check_owner(lease: &Lease, owner: &str, counter: u64) -> Result<(), LeaseError> {
    check_held_by(lease, owner)?;
    check_counter(lease, counter)
}

/// The lease is held by `owner`, whatever its counter.
fn check_held_by(lease: &Lease, owner: &str) -> Result<(), LeaseError> {
    if lease.owner.as_deref() != Some(owner) {
        return Err(LeaseError::new(
            LeaseErrorKind::Conflict,
            format!(
                "lease of shard {} is held by {} (counter {}), not by {owner:?}",
                lease.shard_id,
                owner_text(lease.owner.as_deref()),
                lease.counter,
            ),
        ));
    }
    Ok(())
}

/// Refuse a checkpoint that would move the stored position backwards.
fn check_forward(lease: &Lease, new: &ShardCheckpoint) -> Result<(), LeaseError> {
    match &lease.checkpoint {
        Some(current) if moves_backwards(current, new) => Err(LeaseError::new(
            LeaseErrorKind::Conflict,
            format!(
                "checkpoint of shard {} would move backwards from {} to {}",
                lease.shard_id,
                checkpoint_text(current),
                checkpoint_text(new),
            ),
        )),
        _ => Ok(()),
    }
}

/// Positions are ordered `Latest` < `Processed` (numerically by sequence number) < `Ended`.
fn moves_backwards(current: &ShardCheckpoint, new: &ShardCheckpoint) -> bool {
    // Writing the same position again is harmless; anything else must advance.
    current != new && !ShardCheckpoint::advances(Some(current), new)
}

/// The counter after one more write. A counter at `u64::MAX` cannot fence any more writes.
fn next_counter(shard_id: &str, counter: u64) -> Result<u64, LeaseError> {
    counter.checked_add(1).ok_or_else(|| {
        LeaseError::new(
            LeaseErrorKind::Corrupt,
            format!("lease of shard {shard_id} has counter {counter}, which cannot grow"),
        )
    })
}

fn owner_text(owner: Option<&str>) -> String {
    match owner {
        Some(owner) => format!("{owner:?}"),
        None => "nobody".to_owned(),
    }
}

fn checkpoint_text(checkpoint: &ShardCheckpoint) -> String {
    match checkpoint {
        ShardCheckpoint::Processed { sequence_number } => format!("processed {sequence_number}"),
        ShardCheckpoint::Ended => "ended".to_owned(),
        ShardCheckpoint::Latest { since_ms } => format!("latest since {since_ms} ms"),
        ShardCheckpoint::Discovered { from: None, .. } => "discovered".to_owned(),
        ShardCheckpoint::Discovered { from: Some(s), .. } => format!("discovered, read from {s}"),
    }
}
