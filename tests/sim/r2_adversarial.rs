//! Many seeds of an adversarial workload, the kinds of run that found the defects of issue 14:
//! first starts behind a moving trim horizon with tiny pages, outages longer than the retention
//! across split lineages, final pages racing rollovers, slow and hung GetRecords while handlers
//! acknowledge, key parallelism under restarts, and — with two or three workers sharing leases
//! — workers paused past their leases and wall-clock jumps, with balancing reads of the lease
//! table as stale as an eventually consistent read may be on every other seed.
//!
//! Checked against what was written, whatever happened:
//! - no quiet loss: every record was delivered or lies in the lost range of a gap reported for
//!   its own shard, every record still retained was delivered, and a bounded gap claims no
//!   record that was delivered;
//! - order: a handler instance sees its shard in increasing sequence order, and a version of an
//!   item is first delivered only after the previous version's first delivery (when that one
//!   was delivered at all);
//! - never two handler calls holding the same item at once, across lanes and workers;
//! - after every worker shut down gracefully, nothing delivered before is delivered again.
//!
//! `DDBSTREAM_SEEDS` sets how many seeds run (default 300, about 15 s); `DDBSTREAM_SEED` runs
//! one seed; `DDBSTREAM_DEBUG=1` prints a failing seed's trail.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dynamodb_stream::checkpoint::MemoryCheckpointStore;
use dynamodb_stream::lease::MemoryLeaseStore;
use dynamodb_stream::sim::{FaultKind, FaultRule, Operation, Simulator};
use dynamodb_stream::{Consumer, ConsumerEvent, GapPolicy, SequenceNumber};

use crate::common::{check_bounded_gaps, gaps, run_seeds, Call, Events, Log, Pausable, Written};

/// One consumer process: a worker of the lease group, or the only consumer.
struct Process {
    consumer: Option<Consumer>,
    events: Events,
    paused: Arc<AtomicBool>,
    id: String,
}

struct Run {
    seed: u64,
    rng: fastrand::Rng,
    sim: Simulator,
    log: Log,
    store: MemoryCheckpointStore,
    leases: Option<MemoryLeaseStore>,
    processes: Vec<Process>,
    key_parallelism: usize,
    page_limit: u32,
    /// Every event of every consumer ever started.
    events: Vec<Events>,
    written: Written,
    /// Every shard's parent, as seen at each step (vanished shards are not listed any more).
    parents: HashMap<String, Option<String>>,
    /// Records written before the first start: the start position (`TRIM_HORIZON`) covers those
    /// still retained when a shard is first read, which is where reading begins.
    written_before_start: usize,
}

impl Run {
    async fn spawn(&mut self, index: usize) {
        let paused = self.processes[index].paused.clone();
        let id = self.processes[index].id.clone();
        let log = self.log.tagged(&id);
        let api = Pausable {
            inner: self.sim.clone(),
            paused: paused.clone(),
        };
        let (lanes, limit) = (self.key_parallelism, self.page_limit);
        let mut builder = Consumer::builder(api, self.sim.stream_arn())
            .handler_factory(move |s| log.handler(s))
            .gap_policy(GapPolicy::Continue)
            .key_parallelism(lanes)
            .configure(move |c| {
                c.max_records_per_call = limit;
                c.checkpoint_interval = Duration::from_millis(500);
                c.lease.lease_duration = Duration::from_secs(10);
                c.lease.renew_interval = Duration::from_secs(3);
            });
        builder = match &self.leases {
            Some(leases) => builder.leases(
                Pausable {
                    inner: leases.clone(),
                    paused,
                },
                id,
            ),
            None => builder.checkpoints(self.store.clone()),
        };
        let events = Events::collect(builder.events());
        self.events.push(events.clone());
        let consumer = builder.spawn().await.unwrap_or_else(|e| {
            panic!("seed {}: spawn failed: {e}", self.seed);
        });
        self.processes[index].consumer = Some(consumer);
        self.processes[index].events = events;
    }

    fn write(&mut self, n: usize) {
        for _ in 0..n {
            let key = format!("k{}", self.rng.usize(0..60));
            if self.rng.u32(0..10) == 0 {
                self.written.delete(&self.sim, &key);
            } else {
                self.written.put(&self.sim, &key);
            }
        }
    }

    fn note_lineage(&mut self) {
        for s in self.sim.shards() {
            self.parents.insert(s.shard_id, s.parent_shard_id);
        }
    }

    fn split_or_roll(&mut self) {
        let open = self.sim.open_shards();
        let pick = open[self.rng.usize(0..open.len())].clone();
        if self.rng.bool() && open.len() < 12 {
            self.sim.split_shard(&pick).expect("split");
        } else {
            self.sim.rollover_shard(&pick).expect("rollover");
        }
        self.note_lineage();
    }

    /// Every record still retained was delivered, and every other one was delivered or lies in
    /// a reported gap of its shard.
    fn complete(&self) -> bool {
        self.missing(1).is_empty()
    }

    /// Up to `limit` records that are neither delivered nor reported lost, and why.
    fn missing(&self, limit: usize) -> Vec<String> {
        let delivered: HashSet<(String, SequenceNumber)> = self
            .log
            .snapshot()
            .into_iter()
            .map(|d| (d.shard_id, d.sequence_number))
            .collect();
        let events: Vec<ConsumerEvent> = self.events.iter().flat_map(|e| e.all()).collect();
        let gaps = gaps(&events);
        let discovered: HashSet<String> = events
            .iter()
            .filter_map(|e| match e {
                ConsumerEvent::ShardsDiscovered { shard_ids } => Some(shard_ids.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        // A shard no consumer ever saw, created and trimmed away while they were stopped, cannot
        // be named: its loss must show as a gap of a shard descending from it.
        let reported_below = |shard: &str| {
            gaps.iter().any(|g| {
                let mut at = Some(g.shard_id.clone());
                while let Some(s) = at {
                    if s == shard {
                        return true;
                    }
                    at = self.parents.get(&s).cloned().flatten();
                }
                false
            })
        };
        let mut first_read: HashMap<&str, &SequenceNumber> = HashMap::new();
        let deliveries = self.log.snapshot();
        for d in &deliveries {
            let first = first_read
                .entry(d.shard_id.as_str())
                .or_insert(&d.sequence_number);
            if d.sequence_number < **first {
                *first = &d.sequence_number;
            }
        }
        let mut retained: HashMap<String, HashSet<SequenceNumber>> = HashMap::new();
        let mut out = Vec::new();
        for (index, w) in self.sim.written_records().into_iter().enumerate() {
            let before_reading_began = index < self.written_before_start
                && first_read
                    .get(w.shard_id.as_str())
                    .is_none_or(|first| w.record.sequence_number() < *first);
            if before_reading_began {
                continue;
            }
            if out.len() >= limit {
                break;
            }
            let seq = w.record.sequence_number();
            if delivered.contains(&(w.shard_id.clone(), seq.clone())) {
                continue;
            }
            let kept = retained.entry(w.shard_id.clone()).or_insert_with(|| {
                self.sim
                    .retained_records(&w.shard_id)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|r| r.sequence_number().clone())
                    .collect()
            });
            if kept.contains(seq) {
                out.push(format!("{} {seq}: retained, not delivered", w.shard_id));
            } else if !gaps
                .iter()
                .any(|g| g.shard_id == w.shard_id && g.lost.contains(seq))
                && (discovered.contains(&w.shard_id) || !reported_below(&w.shard_id))
            {
                out.push(format!("{} {seq}: trimmed, no gap reported", w.shard_id));
            }
        }
        out
    }
}

/// A version is first delivered only after the previous version's first delivery, when that
/// one was delivered at all; a handler instance sees its shard in increasing order.
fn check_order(seed: u64, deliveries: &[crate::common::Delivery]) {
    let mut first: HashMap<(&str, u64), usize> = HashMap::new();
    for (i, d) in deliveries.iter().enumerate() {
        first.entry((&d.key, d.version)).or_insert(i);
    }
    let mut last_seq: HashMap<(&str, usize, &str), &SequenceNumber> = HashMap::new();
    for (i, d) in deliveries.iter().enumerate() {
        if let Some(prev) = last_seq.insert(
            (&d.tag, d.handler_instance, &d.shard_id),
            &d.sequence_number,
        ) {
            assert!(
                prev < &d.sequence_number,
                "seed {seed}: shard {} out of order in one handler: {} after {prev}",
                d.shard_id,
                d.sequence_number
            );
        }
        if d.version > 1 && first.get(&(d.key.as_str(), d.version)) == Some(&i) {
            if let Some(&before) = first.get(&(d.key.as_str(), d.version - 1)) {
                assert!(
                    before < i,
                    "seed {seed}: key {} version {} first delivered before version {}",
                    d.key,
                    d.version,
                    d.version - 1
                );
            }
        }
    }
}

/// Never two handler calls holding the same item at the same time — but for a call already
/// running when its worker was paused or the wall clock jumped: its lease may expire under it,
/// and the new owner's calls may begin before it returns (docs/semantics.md states that bound).
fn check_one_call_per_key(seed: u64, calls: &[Call], disturbed: &[tokio::time::Instant]) {
    let mut by_key: BTreeMap<&str, Vec<&Call>> = BTreeMap::new();
    for c in calls {
        let keys: HashSet<&str> = c.records.iter().map(|r| r.key.as_str()).collect();
        for k in keys {
            by_key.entry(k).or_default().push(c);
        }
    }
    for (key, mut calls) in by_key {
        calls.sort_by_key(|c| c.at);
        for pair in calls.windows(2) {
            let excused = pair[0].tag != pair[1].tag
                && disturbed
                    .iter()
                    .any(|d| pair[0].at <= *d && *d <= pair[1].at);
            if !(excused || pair[0].ended <= pair[1].at) && std::env::var("DDBSTREAM_DEBUG").is_ok()
            {
                eprintln!(
                    "a {:?}..{:?} b {:?}..{:?} disturbed {:?}",
                    pair[0].at, pair[0].ended, pair[1].at, pair[1].ended, disturbed
                );
                eprintln!("a {:?}\nb {:?}", pair[0], pair[1]);
            }
            assert!(
                excused || pair[0].ended <= pair[1].at,
                "seed {seed}: two calls held key {key} at once: {} (shard {}, {}) and {} (shard {}, {})",
                pair[0].tag,
                pair[0].shard_id,
                pair[0].handler_instance,
                pair[1].tag,
                pair[1].shard_id,
                pair[1].handler_instance,
            );
        }
    }
}

async fn run_seed(seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let leases = rng.u32(0..3) == 0;
    let page_limit = if rng.bool() {
        rng.u32(1..=3)
    } else {
        rng.u32(4..=100)
    };
    let sim = Simulator::builder()
        .seed(seed)
        // A fixed start: shard ids and record times repeat from run to run.
        .start_time(std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .initial_shards(rng.usize(1..=4))
        .records_page_limit(page_limit)
        .end_race_probability(rng.f64() * 0.5)
        .child_visibility_delay(Duration::from_secs(rng.u64(0..10)))
        .stale_describe_probability(rng.f64() * 0.2)
        .build();
    sim.set_fault(
        Operation::GetRecords,
        FaultRule::with_probability(rng.f64() * 0.2, FaultKind::Throttled),
    );
    sim.set_fault(
        Operation::GetShardIterator,
        FaultRule::with_probability(rng.f64() * 0.05, FaultKind::Retryable),
    );
    let log = Log::new();
    *log.fail_batches.lock().unwrap() = (0..rng.usize(0..3)).map(|_| rng.usize(1..80)).collect();
    *log.random_delay.lock().unwrap() = Some((
        fastrand::Rng::with_seed(seed ^ 0x5eed),
        Duration::from_millis(rng.u64(0..400)),
    ));
    let workers = if leases { rng.usize(2..=3) } else { 1 };
    let mut run = Run {
        seed,
        rng,
        sim,
        log,
        store: MemoryCheckpointStore::new(),
        // Every other seed, balancing rounds read leases as an eventually consistent read
        // would: each lease possibly one of its last versions.
        leases: leases.then(|| {
            if seed.is_multiple_of(2) {
                MemoryLeaseStore::with_stale_reads(seed)
            } else {
                MemoryLeaseStore::new()
            }
        }),
        processes: (0..workers)
            .map(|i| Process {
                consumer: None,
                events: Events::default(),
                paused: Arc::default(),
                id: format!("w{i}"),
            })
            .collect(),
        key_parallelism: 1,
        page_limit,
        events: Vec::new(),
        written: Written::default(),
        parents: HashMap::new(),
        written_before_start: 0,
    };
    run.note_lineage();
    run.key_parallelism = if run.rng.bool() {
        run.rng.usize(2..=4)
    } else {
        1
    };
    let debug = std::env::var("DDBSTREAM_DEBUG").is_ok();
    if debug {
        eprintln!(
            "seed {seed}: workers {workers}, leases {leases}, page limit {page_limit}, lanes {}",
            run.key_parallelism
        );
    }

    // Sometimes the first start is behind a trim horizon that is moving: old records expire one
    // a second while the consumer reads them in small pages. Not with leases: a lease that moves
    // before its first reader anchored where reading began is read from the moved horizon
    // (docs/semantics.md, "What is not detected").
    if !leases && run.rng.u32(0..3) == 0 {
        for _ in 0..30 {
            run.write(1);
            run.sim.advance(Duration::from_secs(1));
        }
        run.sim
            .advance(Duration::from_secs(24 * 3600 - 30 - run.rng.u64(1..20)));
        if run.rng.bool() {
            run.split_or_roll();
        }
    }
    run.written_before_start = run.sim.written_records().len();
    for i in 0..workers {
        run.spawn(i).await;
    }
    // No redelivery after a graceful stop of every worker: what was delivered before it.
    let mut settled: HashSet<(String, SequenceNumber)> = HashSet::new();
    let mut settled_at = 0;
    let mut last_crash_at = 0;
    let mut disturbed: Vec<tokio::time::Instant> = Vec::new();
    let mut failed_before_stop: HashSet<String> = HashSet::new();
    for _ in 0..50 {
        match run.rng.u32(0..100) {
            0..=49 => {
                let n = run.rng.usize(1..30);
                run.write(n);
            }
            50..=59 => run.split_or_roll(),
            60..=63 => {
                // Iterators expire; with leases this is a wall-clock jump too.
                run.sim.advance(Duration::from_secs(16 * 60));
                disturbed.push(tokio::time::Instant::now());
                if debug {
                    eprintln!("ADVANCE 16 min at {:?}", tokio::time::Instant::now());
                }
            }
            64..=68 => {
                // Slow or hung GetRecords for a while, handlers acknowledging meanwhile.
                let latency = Duration::from_millis(run.rng.u64(0..8000));
                run.sim.set_latency(Operation::GetRecords, latency);
                if debug {
                    eprintln!("LATENCY {latency:?} at {:?}", tokio::time::Instant::now());
                }
            }
            69..=74 => {
                // A crash of one process, perhaps a long outage while it is down.
                let i = run.rng.usize(0..workers);
                if debug {
                    eprintln!("CRASH w{i} at {:?}", tokio::time::Instant::now());
                    let key = crate::common::stream_key(&run.sim);
                    let stored =
                        dynamodb_stream::checkpoint::CheckpointStore::load(&run.store, &key).await;
                    eprintln!("STORED at crash: {stored:?}");
                }
                drop(run.processes[i].consumer.take());
                if workers == 1 && run.rng.u32(0..3) == 0 {
                    let n = run.rng.usize(1..30);
                    run.write(n);
                    run.split_or_roll();
                    run.write(n);
                    run.sim.advance(Duration::from_secs(25 * 3600));
                }
                run.spawn(i).await;
                // What was delivered before a crash and not checkpointed is delivered again,
                // perhaps only after a later graceful stop (a crashed worker's lease expires
                // before another takes it). Counted once the killed consumer's last handler
                // call could have returned.
                last_crash_at = run.log.len();
            }
            75..=79 => {
                // Every process stops gracefully, then starts again: nothing repeats.
                let stop_began = tokio::time::Instant::now();
                if debug {
                    eprintln!("GRACEFUL at {stop_began:?}");
                }
                for p in &mut run.processes {
                    if let Some(c) = p.consumer.take() {
                        c.shutdown().await.unwrap_or_else(|e| {
                            panic!("seed {seed}: shutdown failed: {e}");
                        });
                    }
                }
                if debug {
                    let key = crate::common::stream_key(&run.sim);
                    let stored =
                        dynamodb_stream::checkpoint::CheckpointStore::load(&run.store, &key).await;
                    eprintln!("STORED after graceful: {stored:?}");
                }
                let snapshot = run.log.snapshot();
                settled.extend(
                    snapshot
                        .into_iter()
                        .skip(last_crash_at)
                        .map(|d| (d.shard_id, d.sequence_number)),
                );
                settled_at = run.log.len();
                // A shard whose handler failed before or during the stop (waiting to restart,
                // or failing while draining) repeats its unacknowledged records — with key
                // parallelism also those other lanes finished behind the failed batch
                // (docs/semantics.md).
                failed_before_stop = run
                    .events
                    .iter()
                    .flat_map(|e| e.all())
                    .filter_map(|e| match e {
                        ConsumerEvent::WorkerRestarted { shard_id, .. } => Some(shard_id),
                        _ => None,
                    })
                    .chain(
                        run.log
                            .calls()
                            .into_iter()
                            .filter(|c| !c.ok && c.ended >= stop_began)
                            .map(|c| c.shard_id),
                    )
                    .collect();
                for i in 0..workers {
                    run.spawn(i).await;
                }
            }
            80..=86 if workers > 1 => {
                // One worker pauses past its lease; the others take its shards.
                let i = run.rng.usize(0..workers);
                run.processes[i].paused.store(true, Ordering::SeqCst);
                disturbed.push(tokio::time::Instant::now());
                if debug {
                    eprintln!("PAUSE w{i} at {:?}", tokio::time::Instant::now());
                }
                tokio::time::sleep(Duration::from_secs(run.rng.u64(11..30))).await;
                run.processes[i].paused.store(false, Ordering::SeqCst);
                if debug {
                    eprintln!("RESUME w{i} at {:?}", tokio::time::Instant::now());
                }
            }
            87..=90 if workers > 1 => {
                // The wall clock jumps past every lease at once.
                run.sim.advance(Duration::from_secs(run.rng.u64(11..40)));
                disturbed.push(tokio::time::Instant::now());
                if debug {
                    eprintln!("JUMP at {:?}", tokio::time::Instant::now());
                }
            }
            _ => {}
        }
        if debug {
            eprintln!(
                "t={:?} log={} step done",
                tokio::time::Instant::now(),
                run.log.len()
            );
        }
        let pause = run.rng.u64(0..2000);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    run.sim.set_latency(Operation::GetRecords, Duration::ZERO);
    run.sim.clear_faults();
    // Checked every 5 s of (paused) time: the check walks every record written.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6 * 3600);
    while !run.complete() {
        if tokio::time::Instant::now() >= deadline {
            for p in &run.processes {
                if let Some(c) = &p.consumer {
                    eprintln!("{}: {:#?}", p.id, c.status());
                }
            }
            eprintln!("shards: {:#?}", run.sim.shards());
            for m in run.missing(50) {
                eprintln!("missing {m}");
            }
            for e in &run.events {
                eprintln!("events {:?}", e.all());
            }
            panic!("seed {seed}: records neither delivered nor reported lost after 6 hours");
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    for p in &mut run.processes {
        if let Some(c) = p.consumer.take() {
            c.shutdown().await.unwrap_or_else(|e| {
                panic!("seed {seed}: final shutdown failed: {e}");
            });
        }
    }

    let deliveries = run.log.snapshot();
    let all_gaps: Vec<_> = run.events.iter().flat_map(|e| gaps(&e.all())).collect();
    let missing = run.missing(20);
    assert!(missing.is_empty(), "seed {seed}: {missing:#?}");
    check_bounded_gaps(&run.sim, &all_gaps);
    check_order(seed, &deliveries);
    check_one_call_per_key(seed, &run.log.calls(), &disturbed);
    // A lease that moved (a steal, a pause) repeats what its old owner handled and could not
    // checkpoint any more: at-least-once, whatever shut down gracefully later.
    let moved: HashSet<String> = run
        .events
        .iter()
        .flat_map(|e| e.all())
        .filter_map(|e| match e {
            ConsumerEvent::LeaseLost { shard_id } => Some(shard_id),
            _ => None,
        })
        .collect();
    if let Some(d) = deliveries[settled_at..].iter().find(|d| {
        !moved.contains(&d.shard_id)
            && !failed_before_stop.contains(&d.shard_id)
            && settled.contains(&(d.shard_id.clone(), d.sequence_number.clone()))
    }) {
        if std::env::var("DDBSTREAM_DEBUG").is_ok() {
            for (i, x) in deliveries.iter().enumerate() {
                if x.shard_id == d.shard_id {
                    eprintln!(
                        "{i} {} {} {} inst {}",
                        x.tag, x.sequence_number, x.key, x.handler_instance
                    );
                }
            }
            eprintln!("settled at {settled_at}");
            for e in &run.events {
                for ev in e.all() {
                    if format!("{ev:?}").contains(&d.shard_id[d.shard_id.len() - 3..]) {
                        eprintln!("{ev:?}");
                    }
                }
            }
        }
        panic!(
            "seed {seed}: record {} of shard {} delivered again after a graceful shutdown",
            d.sequence_number, d.shard_id
        );
    }
}

#[test]
fn adversarial_workloads() {
    run_seeds("adversarial workload", 300, run_seed);
}
