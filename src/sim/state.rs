//! The simulator's shared state and every operation on it, all synchronous.
//!
//! [`Simulator`](super::Simulator) locks this state for each call and never across an await.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, SystemTime};

use crate::error::{SourceError, SourceErrorKind};
use crate::record::{
    item_key_string, Item, RecordKind, SequenceNumber, StreamRecord, UserIdentity,
};
use crate::record::{AttributeValue, StreamViewType};
use crate::source::{DescribeStreamRequest, IteratorPosition, RecordsPage, Shard};
use crate::source::{StreamDescription, StreamStatus};

use super::builder::SimulatorBuilder;
use super::fault::{FaultKind, FaultRule, Operation, SimStats};
use super::iterator::{self, IteratorState};
use super::util::{epoch_millis, fnv1a64, iso_label, item_size, key_hash};
use super::{SimError, WrittenRecord};

/// The value behind the first sequence number: 10^20, the smallest 21-digit number, so every
/// rendered number has exactly 21 digits for the next 9 * 10^20 allocations.
const SEQ_BASE: u128 = 100_000_000_000_000_000_000;

/// How long after closing a shard a stale DescribeStream may still show it open.
const STALE_WINDOW: Duration = Duration::from_secs(10);

pub(super) struct SimRecord {
    seq: u128,
    created_at: Duration,
    record: StreamRecord,
}

pub(super) struct ShardState {
    id: String,
    parent: Option<String>,
    hash_start: u64,
    hash_end: u64,
    start_seq: u128,
    end_seq: Option<u128>,
    visible_at: Duration,
    closed_at: Option<Duration>,
    records: VecDeque<SimRecord>,
    /// The value of the newest record trimmed from this shard: positions before it lost data.
    trimmed_upto: Option<u128>,
}

impl ShardState {
    fn is_open(&self) -> bool {
        self.end_seq.is_none()
    }

    fn contains_hash(&self, hash: u64) -> bool {
        self.hash_start <= hash && hash <= self.hash_end
    }

    fn to_shard(&self) -> Shard {
        Shard {
            shard_id: self.id.clone(),
            parent_shard_id: self.parent.clone(),
            starting_sequence_number: Some(seq_number(self.start_seq)),
            ending_sequence_number: self.end_seq.map(seq_number),
        }
    }
}

pub(super) struct State {
    cfg: SimulatorBuilder,
    arn: String,
    created: crate::rt::Instant,
    offset: Duration,
    wall_start: SystemTime,
    rng: fastrand::Rng,
    secret: u64,
    items: BTreeMap<String, Item>,
    /// Keyed by shard id, whose format makes key order creation order.
    shards: BTreeMap<String, ShardState>,
    /// The last sequence value handed out (to a record or a new shard).
    seq: u128,
    /// No record or closed shard expires before this sim time, so `maintain` has nothing to do
    /// until then. Without it every call walked every shard: O(shards) per call, O(shards²) per
    /// second at 10,000 idle shards (docs/benchmarks.md).
    maintain_due: Duration,
    shard_serial: u32,
    iterator_serial: u64,
    disabled: bool,
    faults: HashMap<Operation, FaultRule>,
    latency: HashMap<Operation, Duration>,
    stats: SimStats,
    call_times: HashMap<String, Vec<Duration>>,
    written: Vec<WrittenRecord>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("arn", &self.arn)
            .field("items", &self.items.len())
            .field("shards", &self.shards.len())
            .field("disabled", &self.disabled)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn seq_number(value: u128) -> SequenceNumber {
    format!("{value:021}")
        .parse()
        .expect("simulator sequence values are 21-digit numbers")
}

/// `None` for numbers too large for any simulator shard.
fn seq_value(seq: &SequenceNumber) -> Option<u128> {
    seq.as_str().parse().ok()
}

fn source_error(kind: SourceErrorKind, message: String) -> SourceError {
    SourceError::new(kind, format!("simulator: {message}"))
}

impl State {
    pub(super) fn new(cfg: SimulatorBuilder) -> Self {
        let wall_start = cfg.start_time.unwrap_or_else(crate::rt::system_now);
        let arn = format!(
            "arn:aws:dynamodb:us-east-1:000000000000:table/{}/stream/{}",
            cfg.table_name,
            iso_label(wall_start)
        );
        let mut rng = fastrand::Rng::with_seed(cfg.seed);
        let secret = rng.u64(..);
        let mut state = Self {
            arn,
            created: crate::rt::Instant::now(),
            offset: Duration::ZERO,
            wall_start,
            rng,
            secret,
            items: BTreeMap::new(),
            shards: BTreeMap::new(),
            seq: SEQ_BASE,
            maintain_due: Duration::ZERO,
            shard_serial: 0,
            iterator_serial: 0,
            disabled: false,
            faults: HashMap::new(),
            latency: HashMap::new(),
            stats: SimStats::default(),
            call_times: HashMap::new(),
            written: Vec::new(),
            cfg,
        };
        let n = state.cfg.initial_shards.max(1) as u128;
        let width = (u128::from(u64::MAX) + 1) / n;
        for i in 0..n {
            let start = i * width;
            let end = if i + 1 == n {
                u128::from(u64::MAX)
            } else {
                (i + 1) * width - 1
            };
            // Both bounds fit: start < end <= u64::MAX.
            let range = (start as u64, end as u64);
            state.create_shard(Duration::ZERO, None, range, Duration::ZERO);
        }
        state
    }

    // ----- clock -----

    pub(super) fn now(&self) -> Duration {
        crate::rt::Instant::now().saturating_duration_since(self.created) + self.offset
    }

    pub(super) fn advance(&mut self, by: Duration) {
        self.offset += by;
    }

    pub(super) fn wall(&self, at: Duration) -> SystemTime {
        self.wall_start + at
    }

    pub(super) fn arn(&self) -> &str {
        &self.arn
    }

    pub(super) fn table_name(&self) -> &str {
        &self.cfg.table_name
    }

    /// Trims records older than the retention period and deletes closed shards that have been
    /// closed that long. Called lazily before every operation: nothing observes the state
    /// between calls, so this is the same as trimming continuously.
    pub(super) fn maintain(&mut self, now: Duration) {
        if now < self.maintain_due {
            return;
        }
        let retention = self.cfg.retention;
        for shard in self.shards.values_mut() {
            while let Some(front) = shard.records.front() {
                if now.saturating_sub(front.created_at) < retention {
                    break;
                }
                shard.trimmed_upto = Some(front.seq);
                shard.records.pop_front();
            }
        }
        self.shards.retain(|_, s| match s.closed_at {
            Some(closed) => now.saturating_sub(closed) < retention || !s.records.is_empty(),
            None => true,
        });
        // The next expiry: the oldest record of a shard, or a closed shard itself.
        self.maintain_due = self
            .shards
            .values()
            .flat_map(|s| {
                let oldest = s.records.front().map(|r| r.created_at);
                oldest.into_iter().chain(s.closed_at)
            })
            .map(|t| t.saturating_add(retention))
            .min()
            .unwrap_or(Duration::MAX);
    }

    /// Something created at `now` expires at `now + retention`: `maintain` must look again then.
    fn expires_from(&mut self, now: Duration) {
        let due = now.saturating_add(self.cfg.retention);
        self.maintain_due = self.maintain_due.min(due);
    }

    // ----- table -----

    fn extract_keys(&self, item: &Item) -> Result<Item, SimError> {
        let mut keys = Item::default();
        let names = std::iter::once(&self.cfg.hash_key).chain(self.cfg.range_key.as_ref());
        for name in names {
            match item.get(name) {
                None => return Err(SimError::MissingKey(name.clone())),
                Some(v @ (AttributeValue::S(_) | AttributeValue::N(_) | AttributeValue::B(_))) => {
                    keys.insert(name.clone(), v.clone());
                }
                Some(_) => return Err(SimError::InvalidKeyType(name.clone())),
            }
        }
        Ok(keys)
    }

    pub(super) fn put_item(&mut self, now: Duration, item: Item) -> Result<(), SimError> {
        let keys = self.extract_keys(&item)?;
        let old = self.items.insert(item_key_string(&keys), item.clone());
        match old {
            // DynamoDB writes no stream record for an update that changes nothing.
            Some(old) if old == item => {}
            Some(old) => self.append(now, keys, RecordKind::Modify, Some(old), Some(item), None),
            None => self.append(now, keys, RecordKind::Insert, None, Some(item), None),
        }
        Ok(())
    }

    pub(super) fn delete_item(
        &mut self,
        now: Duration,
        keys: &Item,
        identity: Option<UserIdentity>,
    ) -> Result<(), SimError> {
        let keys = self.extract_keys(keys)?;
        let ttl = identity.is_some();
        if let Some(old) = self.items.remove(&item_key_string(&keys)) {
            let kind = RecordKind::Remove { ttl };
            self.append(now, keys, kind, Some(old), None, identity);
        }
        Ok(())
    }

    pub(super) fn get_item(&self, keys: &Item) -> Option<Item> {
        let keys = self.extract_keys(keys).ok()?;
        self.items.get(&item_key_string(&keys)).cloned()
    }

    pub(super) fn scan(&self) -> Vec<Item> {
        self.items.values().cloned().collect()
    }

    pub(super) fn item_count(&self) -> usize {
        self.items.len()
    }

    fn next_seq(&mut self) -> u128 {
        self.seq += 1;
        self.seq
    }

    fn append(
        &mut self,
        now: Duration,
        keys: Item,
        kind: RecordKind,
        old: Option<Item>,
        new: Option<Item>,
        identity: Option<UserIdentity>,
    ) {
        if self.disabled {
            return;
        }
        let hash = key_hash(item_key_string(&keys).as_bytes());
        let Some(shard_id) = self
            .shards
            .values()
            .find(|s| s.is_open() && s.contains_hash(hash))
            .map(|s| s.id.clone())
        else {
            // Open shards always cover the whole hash space while the stream is enabled.
            return;
        };
        let (old, new) = match self.cfg.view_type {
            StreamViewType::KeysOnly => (None, None),
            StreamViewType::NewImage => (None, new),
            StreamViewType::OldImage => (old, None),
            StreamViewType::NewAndOldImages => (old, new),
        };
        let size = item_size(&keys)
            + old.as_ref().map_or(0, item_size)
            + new.as_ref().map_or(0, item_size);
        let seq = self.next_seq();
        let event_id = format!(
            "{:016x}{:016x}",
            fnv1a64(&(seq ^ u128::from(self.secret)).to_le_bytes()),
            seq - SEQ_BASE
        );
        let record = StreamRecord::new(kind, seq_number(seq), keys)
            .with_images(old, new)
            .with_meta(event_id, Some(self.wall(now)), size)
            .with_user_identity(identity);
        self.written.push(WrittenRecord {
            shard_id: shard_id.clone(),
            record: record.clone(),
        });
        if let Some(shard) = self.shards.get_mut(&shard_id) {
            shard.records.push_back(SimRecord {
                seq,
                created_at: now,
                record,
            });
        }
        self.expires_from(now);
    }

    pub(super) fn written(&self) -> Vec<WrittenRecord> {
        self.written.clone()
    }

    pub(super) fn records_written(&self) -> usize {
        self.written.len()
    }

    // ----- topology -----

    fn create_shard(
        &mut self,
        now: Duration,
        parent: Option<String>,
        (hash_start, hash_end): (u64, u64),
        visible_at: Duration,
    ) -> String {
        let start_seq = self.next_seq();
        self.shard_serial += 1;
        // Creation milliseconds, then a creation counter: ids sort in creation order.
        let id = format!(
            "shardId-{:020}-{:08x}",
            epoch_millis(self.wall(now)),
            self.shard_serial
        );
        self.shards.insert(
            id.clone(),
            ShardState {
                id: id.clone(),
                parent,
                hash_start,
                hash_end,
                start_seq,
                end_seq: None,
                visible_at,
                closed_at: None,
                records: VecDeque::new(),
                trimmed_upto: None,
            },
        );
        id
    }

    fn open_shard(&self, shard_id: &str) -> Result<&ShardState, SimError> {
        match self.shards.get(shard_id) {
            None => Err(SimError::ShardNotFound(shard_id.to_owned())),
            Some(s) if !s.is_open() => Err(SimError::ShardClosed(shard_id.to_owned())),
            Some(s) => Ok(s),
        }
    }

    /// Closes an open shard at the current sequence value, which may lie past its last record.
    fn close(&mut self, now: Duration, shard_id: &str) {
        let seq = self.seq;
        if let Some(shard) = self.shards.get_mut(shard_id) {
            shard.end_seq = Some(seq);
            shard.closed_at = Some(now);
        }
        self.expires_from(now);
    }

    pub(super) fn split_shard(
        &mut self,
        now: Duration,
        shard_id: &str,
    ) -> Result<(String, String), SimError> {
        let shard = self.open_shard(shard_id)?;
        let (start, end) = (shard.hash_start, shard.hash_end);
        if start == end {
            return Err(SimError::CannotSplit(shard_id.to_owned()));
        }
        let mid = start + (end - start) / 2;
        self.close(now, shard_id);
        let visible_at = now + self.cfg.child_visibility_delay;
        let parent = Some(shard_id.to_owned());
        let left = self.create_shard(now, parent.clone(), (start, mid), visible_at);
        let right = self.create_shard(now, parent, (mid + 1, end), visible_at);
        Ok((left, right))
    }

    pub(super) fn rollover_shard(
        &mut self,
        now: Duration,
        shard_id: &str,
    ) -> Result<String, SimError> {
        let shard = self.open_shard(shard_id)?;
        let range = (shard.hash_start, shard.hash_end);
        self.close(now, shard_id);
        let visible_at = now + self.cfg.child_visibility_delay;
        Ok(self.create_shard(now, Some(shard_id.to_owned()), range, visible_at))
    }

    pub(super) fn rollover_all(&mut self, now: Duration) -> Vec<String> {
        self.open_shards()
            .into_iter()
            .filter_map(|id| self.rollover_shard(now, &id).ok())
            .collect()
    }

    pub(super) fn disable_stream(&mut self, now: Duration) {
        for id in self.open_shards() {
            self.close(now, &id);
        }
        self.disabled = true;
    }

    pub(super) fn is_disabled(&self) -> bool {
        self.disabled
    }

    pub(super) fn open_shards(&self) -> Vec<String> {
        self.shards
            .values()
            .filter(|s| s.is_open())
            .map(|s| s.id.clone())
            .collect()
    }

    pub(super) fn shards(&self) -> Vec<Shard> {
        self.shards.values().map(ShardState::to_shard).collect()
    }

    pub(super) fn hash_range(&self, shard_id: &str) -> Option<(u64, u64)> {
        self.shards
            .get(shard_id)
            .map(|s| (s.hash_start, s.hash_end))
    }

    pub(super) fn shard_for_keys(&self, keys: &Item) -> Result<String, SimError> {
        let keys = self.extract_keys(keys)?;
        let hash = key_hash(item_key_string(&keys).as_bytes());
        self.shards
            .values()
            .find(|s| s.is_open() && s.contains_hash(hash))
            .map(|s| s.id.clone())
            .ok_or(SimError::StreamDisabled)
    }

    pub(super) fn retained_records(&self, shard_id: &str) -> Option<Vec<StreamRecord>> {
        self.shards
            .get(shard_id)
            .map(|s| s.records.iter().map(|r| r.record.clone()).collect())
    }

    // ----- faults and counters -----

    /// Counts the call and decides whether it fails and how long it takes.
    pub(super) fn begin_call(
        &mut self,
        op: Operation,
        shard_id: Option<&str>,
    ) -> (Option<FaultKind>, Duration) {
        let now = self.now();
        match op {
            Operation::DescribeStream => self.stats.describe_stream_calls += 1,
            Operation::GetShardIterator => self.stats.get_shard_iterator_calls += 1,
            Operation::GetRecords => self.stats.get_records_calls += 1,
        }
        if let Some(id) = shard_id {
            self.call_times.entry(id.to_owned()).or_default().push(now);
        }
        let delay = self.latency.get(&op).copied().unwrap_or_default();
        (self.roll_fault(op), delay)
    }

    fn roll_fault(&mut self, op: Operation) -> Option<FaultKind> {
        let rule = self.faults.get_mut(&op)?;
        if let Some(n) = rule.remaining.as_mut() {
            if *n == 0 {
                self.faults.remove(&op);
                return None;
            }
            *n -= 1;
        }
        let p = rule.probability;
        // Only draw for a real coin flip, so certain rules leave the generator untouched.
        let hit = p >= 1.0 || (p > 0.0 && self.rng.f64() < p);
        let kind = rule.kind;
        if rule.remaining == Some(0) {
            self.faults.remove(&op);
        }
        if hit {
            self.stats.faults_injected += 1;
            Some(kind)
        } else {
            None
        }
    }

    pub(super) fn set_fault(&mut self, op: Operation, rule: FaultRule) {
        self.faults.insert(op, rule);
    }

    pub(super) fn clear_faults(&mut self) {
        self.faults.clear();
    }

    pub(super) fn set_latency(&mut self, op: Operation, latency: Duration) {
        self.latency.insert(op, latency);
    }

    pub(super) fn stats(&self) -> SimStats {
        self.stats
    }

    pub(super) fn call_times(&self, shard_id: &str) -> Vec<Duration> {
        self.call_times.get(shard_id).cloned().unwrap_or_default()
    }

    // ----- the Streams API -----

    fn check_arn(&self, arn: &str) -> Result<(), SourceError> {
        if arn == self.arn {
            Ok(())
        } else {
            Err(source_error(
                SourceErrorKind::NotFound,
                format!("stream {arn} does not exist"),
            ))
        }
    }

    pub(super) fn describe_stream(
        &mut self,
        now: Duration,
        request: &DescribeStreamRequest,
    ) -> Result<StreamDescription, SourceError> {
        self.check_arn(&request.stream_arn)?;
        if request.limit == Some(0) {
            return Err(source_error(
                SourceErrorKind::Fatal,
                "DescribeStream limit must be at least 1".to_owned(),
            ));
        }
        let limit = request
            .limit
            .unwrap_or(self.cfg.describe_page_limit)
            .min(self.cfg.describe_page_limit) as usize;
        let mut matching = self
            .shards
            .values()
            .filter(|s| now >= s.visible_at)
            .filter(|s| match &request.child_shards_of {
                Some(parent) => s.parent.as_ref() == Some(parent),
                None => true,
            })
            .filter(|s| match &request.exclusive_start_shard_id {
                Some(start) => s.id.as_str() > start.as_str(),
                None => true,
            });
        let page: Vec<&ShardState> = matching.by_ref().take(limit).collect();
        let more = matching.next().is_some();
        let p = self.cfg.stale_describe_probability;
        let mut shards = Vec::with_capacity(page.len());
        for s in page {
            let mut shard = s.to_shard();
            let recently_closed = s
                .closed_at
                .is_some_and(|closed| now.saturating_sub(closed) < STALE_WINDOW);
            if recently_closed && p > 0.0 && self.rng.f64() < p {
                shard.ending_sequence_number = None;
            }
            shards.push(shard);
        }
        let last_evaluated_shard_id = if more {
            shards.last().map(|s| s.shard_id.clone())
        } else {
            None
        };
        Ok(StreamDescription {
            stream_arn: self.arn.clone(),
            stream_status: if self.disabled {
                StreamStatus::Disabled
            } else {
                StreamStatus::Enabled
            },
            stream_view_type: Some(self.cfg.view_type),
            table_name: Some(self.cfg.table_name.clone()),
            shards,
            last_evaluated_shard_id,
        })
    }

    fn find_shard(&self, shard_id: &str) -> Result<&ShardState, SourceError> {
        self.shards.get(shard_id).ok_or_else(|| {
            source_error(
                SourceErrorKind::NotFound,
                format!("shard {shard_id} does not exist in stream {}", self.arn),
            )
        })
    }

    fn check_not_trimmed(shard: &ShardState, after: u128) -> Result<(), SourceError> {
        match shard.trimmed_upto {
            Some(trimmed) if after < trimmed => Err(source_error(
                SourceErrorKind::TrimmedData,
                format!(
                    "records of shard {} up to {} are beyond the retention period",
                    shard.id,
                    seq_number(trimmed)
                ),
            )),
            _ => Ok(()),
        }
    }

    fn issue_iterator(&mut self, now: Duration, shard_id: &str, after: u128) -> String {
        self.iterator_serial += 1;
        let state = IteratorState {
            shard_id: shard_id.to_owned(),
            after,
            issued_at: now,
            issued_seq: self.seq,
        };
        iterator::encode(&self.arn, self.secret, self.iterator_serial, &state)
    }

    pub(super) fn decode_iterator(&self, iterator: &str) -> Option<IteratorState> {
        iterator::decode(&self.arn, self.secret, iterator)
    }

    pub(super) fn get_shard_iterator(
        &mut self,
        now: Duration,
        stream_arn: &str,
        shard_id: &str,
        position: &IteratorPosition,
    ) -> Result<String, SourceError> {
        self.check_arn(stream_arn)?;
        let shard = self.find_shard(shard_id)?;
        let in_range = |seq: &SequenceNumber| -> Result<u128, SourceError> {
            // An open shard's range ends at the newest number handed out: later ones do not
            // exist yet.
            let end = shard.end_seq.unwrap_or(self.seq);
            match seq_value(seq) {
                Some(v) if shard.start_seq <= v && v <= end => Ok(v),
                _ => Err(source_error(
                    SourceErrorKind::Fatal,
                    format!(
                        "invalid sequence number {seq} for shard {shard_id}: \
                         its range is {} to {}",
                        seq_number(shard.start_seq),
                        seq_number(end)
                    ),
                )),
            }
        };
        let after = match position {
            IteratorPosition::TrimHorizon => shard.trimmed_upto.unwrap_or(shard.start_seq - 1),
            IteratorPosition::Latest => self.seq,
            IteratorPosition::AtSequenceNumber(seq) => in_range(seq)? - 1,
            IteratorPosition::AfterSequenceNumber(seq) => in_range(seq)?,
        };
        Self::check_not_trimmed(shard, after)?;
        Ok(self.issue_iterator(now, shard_id, after))
    }

    pub(super) fn get_records(
        &mut self,
        now: Duration,
        shard_iterator: &str,
        limit: Option<u32>,
    ) -> Result<RecordsPage, SourceError> {
        let Some(it) = self.decode_iterator(shard_iterator) else {
            return Err(source_error(
                SourceErrorKind::Fatal,
                "invalid shard iterator: not issued by this stream".to_owned(),
            ));
        };
        if now.saturating_sub(it.issued_at) >= self.cfg.iterator_ttl {
            return Err(source_error(
                SourceErrorKind::ExpiredIterator,
                format!(
                    "iterator for shard {} expired: issued {:?} ago, valid for {:?}",
                    it.shard_id,
                    now.saturating_sub(it.issued_at),
                    self.cfg.iterator_ttl
                ),
            ));
        }
        if limit == Some(0) {
            return Err(source_error(
                SourceErrorKind::Fatal,
                "GetRecords limit must be at least 1".to_owned(),
            ));
        }
        let shard = self.find_shard(&it.shard_id)?;
        Self::check_not_trimmed(shard, it.after)?;
        let max = limit
            .unwrap_or(self.cfg.records_page_limit)
            .min(self.cfg.records_page_limit) as usize;
        let first = shard.records.partition_point(|r| r.seq <= it.after);
        let mut records = Vec::new();
        let mut bytes = 0u64;
        for r in shard.records.iter().skip(first).take(max) {
            let size = r.record.size_bytes();
            if !records.is_empty() && bytes + size > self.cfg.page_bytes_limit {
                break;
            }
            bytes += size;
            records.push(r.record.clone());
        }
        let read_to_end = first + records.len() == shard.records.len();
        let next_after = shard
            .records
            .get(first + records.len().saturating_sub(1))
            .filter(|_| !records.is_empty())
            .map_or(it.after, |r| r.seq);
        let closed = !shard.is_open();
        let end_seq = shard.end_seq;
        let shard_id = shard.id.clone();
        // A closed shard ends on the page that delivers its last records, never one later.
        let next_shard_iterator = if closed && read_to_end {
            None
        } else {
            Some(self.issue_iterator(now, &shard_id, next_after))
        };
        // DynamoDB Local's race (`end_race_probability`): records written, and the shard
        // closed, after the iterator was issued can be missing from the page, which still says
        // the shard ended. A fresh iterator issued after the close cannot race.
        let p = self.cfg.end_race_probability;
        let raced = records
            .iter()
            .position(|r| seq_value(r.sequence_number()).is_none_or(|v| v > it.issued_seq));
        if let Some(first_raced) = raced
            .filter(|_| next_shard_iterator.is_none() && end_seq.is_some_and(|e| e > it.issued_seq))
        {
            if p > 0.0 && self.rng.f64() < p {
                let keep = self.rng.usize(first_raced..records.len());
                records.truncate(keep);
                self.stats.faults_injected += 1;
            }
        }
        Ok(RecordsPage {
            records,
            next_shard_iterator,
        })
    }
}
