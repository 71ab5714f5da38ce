//! Scale out: several workers share one stream through a lease table (here the in-memory
//! implementation of the same trait the DynamoDB table implements). Shards end up balanced;
//! a crashed worker's shards are taken over after about one lease duration; a worker that shuts
//! down hands its leases back at once; a new worker gets a fair share; parents are finished
//! before children even when different workers hold them; nothing is lost.

use std::collections::HashMap;
use std::time::Duration;

use dynamodb_stream::checkpoint::{ShardCheckpoint, StreamKey};
use dynamodb_stream::lease::MemoryLeaseStore;
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{Consumer, ConsumerEvent};

use crate::common::{check_deliveries, periodic_check, Events, Log, Written};

fn key(sim: &Simulator) -> StreamKey {
    StreamKey {
        application: "default".into(),
        stream_arn: sim.stream_arn(),
    }
}

/// Live (owned, unexpired, not ended) leases per worker.
fn owners(leases: &MemoryLeaseStore, sim: &Simulator) -> HashMap<String, usize> {
    let now = dynamodb_stream::source::StreamsApi::wall_clock(sim)
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut out = HashMap::new();
    for l in leases.snapshot(&key(sim)) {
        if matches!(l.checkpoint, Some(ShardCheckpoint::Ended)) {
            continue;
        }
        if let Some(o) = l.owner.filter(|_| l.expires_at_ms > now) {
            *out.entry(o).or_insert(0) += 1;
        }
    }
    out
}

async fn worker(
    sim: &Simulator,
    leases: &MemoryLeaseStore,
    log: &Log,
    id: &str,
) -> (Consumer, Events) {
    worker_with(sim, leases, log, id, true).await
}

/// A worker; `handoff`: `lease.graceful_handoff` (off: balancing steals live leases).
async fn worker_with(
    sim: &Simulator,
    leases: &MemoryLeaseStore,
    log: &Log,
    id: &str,
    handoff: bool,
) -> (Consumer, Events) {
    let l = log.clone();
    let builder = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_factory(move |s| l.handler(s))
        .leases(leases.clone(), id)
        .configure(|c| {
            c.lease.lease_duration = Duration::from_secs(6);
            c.lease.renew_interval = Duration::from_secs(2);
            c.lease.graceful_handoff = handoff;
            c.checkpoint_interval = Duration::from_millis(500);
        });
    let events = Events::collect(builder.events());
    (builder.spawn().await.expect("spawn"), events)
}

fn balanced(counts: &HashMap<String, usize>, workers: &[&str], shards: usize) -> bool {
    let fair = shards as f64 / workers.len() as f64;
    workers.iter().all(|w| {
        let n = counts.get(*w).copied().unwrap_or(0) as f64;
        (n - fair).abs() <= 1.0
    }) && counts.values().sum::<usize>() == shards
}

#[tokio::test(start_paused = true)]
async fn workers_balance_fail_over_hand_off_and_share_with_newcomers() {
    let sim = Simulator::builder().initial_shards(12).seed(41).build();
    let leases = MemoryLeaseStore::new();
    let log = Log::new();
    let mut written = Written::default();
    // Balancing by stealing, as with a store that cannot hand leases over (the graceful
    // handoff has a test of its own below).
    let (w1, _) = worker_with(&sim, &leases, &log, "w1", false).await;
    let (w2, _) = worker_with(&sim, &leases, &log, "w2", false).await;
    let (w3, w3_events) = worker_with(&sim, &leases, &log, "w3", false).await;
    for i in 0..600 {
        written.put(&sim, &format!("k{i}"));
    }
    periodic_check(
        || balanced(&owners(&leases, &sim), &["w1", "w2", "w3"], 12),
        Duration::from_secs(120),
        "3 workers balanced",
    )
    .await;
    periodic_check(
        || written.all_delivered(&log.snapshot()),
        Duration::from_secs(120),
        "records",
    )
    .await;

    // A crash: w1 stops renewing; after about a lease duration the others take its shards.
    drop(w1);
    for i in 0..600 {
        written.put(&sim, &format!("k{i}"));
    }
    periodic_check(
        || balanced(&owners(&leases, &sim), &["w2", "w3"], 12),
        Duration::from_secs(30),
        "w1's shards taken over",
    )
    .await;
    periodic_check(
        || written.all_delivered(&log.snapshot()),
        Duration::from_secs(120),
        "records after the crash",
    )
    .await;

    // A graceful stop hands leases back at once: taken within a couple of rounds, well before
    // they would have expired.
    w2.shutdown().await.expect("shutdown");
    let released_at = tokio::time::Instant::now();
    periodic_check(
        || owners(&leases, &sim).get("w3").copied() == Some(12),
        Duration::from_secs(30),
        "w2's shards taken over",
    )
    .await;
    assert!(
        released_at.elapsed() < Duration::from_secs(6),
        "handoff waited for expiry: {:?}",
        released_at.elapsed()
    );

    // A newcomer gets a fair share, gradually, taking leases from w3 — whose handlers are told.
    let (w4, _) = worker_with(&sim, &leases, &log, "w4", false).await;
    periodic_check(
        || balanced(&owners(&leases, &sim), &["w3", "w4"], 12),
        Duration::from_secs(120),
        "w4 got its share",
    )
    .await;
    // w4's six leases all came from w3, which notices each at its next renewal.
    periodic_check(
        || w3_events.count(|e| matches!(e, ConsumerEvent::LeaseLost { .. })) >= 6,
        Duration::from_secs(30),
        "w3 noticed its lost leases",
    )
    .await;
    let lost = w3_events.count(|e| matches!(e, ConsumerEvent::LeaseLost { .. }));
    periodic_check(
        || log.leases_lost.lock().unwrap().len() >= lost,
        Duration::from_secs(60),
        "on_lease_lost called",
    )
    .await;
    for i in 0..600 {
        written.put(&sim, &format!("k{i}"));
    }
    periodic_check(
        || written.all_delivered(&log.snapshot()),
        Duration::from_secs(120),
        "records after rebalancing",
    )
    .await;
    w3.shutdown().await.expect("shutdown");
    w4.shutdown().await.expect("shutdown");
    // At-least-once: duplicates only around the crash and the moves.
    check_deliveries(&written, &log.snapshot(), false);
}

#[tokio::test(start_paused = true)]
async fn parents_end_before_children_across_workers() {
    let sim = Simulator::builder().initial_shards(4).seed(42).build();
    let leases = MemoryLeaseStore::new();
    let log = Log::new();
    let (a, ea) = worker(&sim, &leases, &log, "a").await;
    let (b, eb) = worker(&sim, &leases, &log, "b").await;
    let mut written = Written::default();
    for round in 0..20u64 {
        for i in 0..40 {
            written.put(&sim, &format!("k{}", (round * 7 + i) % 60));
        }
        let open = sim.open_shards();
        let pick = open[(round as usize * 5) % open.len()].clone();
        if round % 2 == 0 && open.len() < 10 {
            sim.split_shard(&pick).expect("split");
        } else {
            sim.rollover_shard(&pick).expect("rollover");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    periodic_check(
        || written.all_delivered(&log.snapshot()),
        Duration::from_secs(600),
        "all records",
    )
    .await;
    a.shutdown().await.expect("shutdown");
    b.shutdown().await.expect("shutdown");
    let deliveries = log.snapshot();
    // Balancing moves leases; the worker losing one learns it at its next renewal or checkpoint
    // write, so the new owner may repeat what it handled meanwhile (at-least-once). Without a
    // move, nothing repeats.
    let moves = ea.count(|x| matches!(x, ConsumerEvent::LeaseLost { .. }))
        + eb.count(|x| matches!(x, ConsumerEvent::LeaseLost { .. }));
    check_deliveries(&written, &deliveries, moves == 0);
    // Lineage: a child's first record comes after its parent's last.
    let parents: HashMap<String, Option<String>> = sim
        .shards()
        .into_iter()
        .map(|s| (s.shard_id, s.parent_shard_id))
        .collect();
    let mut first: HashMap<&str, usize> = HashMap::new();
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, d) in deliveries.iter().enumerate() {
        first.entry(&d.shard_id).or_insert(i);
        last.insert(&d.shard_id, i);
    }
    for (child, start) in &first {
        if let Some(Some(parent)) = parents.get(*child) {
            if let Some(end) = last.get(parent.as_str()) {
                assert!(
                    end < start,
                    "child {child} started before parent {parent} ended"
                );
            }
        }
    }
    // Both workers did work.
    let acquired = |e: &Events| e.count(|x| matches!(x, ConsumerEvent::LeaseAcquired { .. }));
    assert!(
        acquired(&ea) > 0 && acquired(&eb) > 0,
        "both workers held leases"
    );
}

/// Two workers balanced on 8 shards of `sim`, a third joining while writes go on, until all
/// three are balanced and every record was delivered; then all shut down gracefully. The three
/// workers' events, what was written and the delivery log.
async fn newcomer_joins(sim: &Simulator, leases: &MemoryLeaseStore) -> ([Events; 3], Written, Log) {
    let log = Log::new();
    let (w1, e1) = worker(sim, leases, &log, "w1").await;
    let (w2, e2) = worker(sim, leases, &log, "w2").await;
    let mut written = Written::default();
    periodic_check(
        || balanced(&owners(leases, sim), &["w1", "w2"], 8),
        Duration::from_secs(120),
        "2 workers balanced",
    )
    .await;
    // Writes go on while the newcomer joins and leases move.
    let (w3, e3) = worker(sim, leases, &log, "w3").await;
    for round in 0..60 {
        for i in 0..10 {
            written.put(sim, &format!("k{}", (round * 10 + i) % 97));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    periodic_check(
        || balanced(&owners(leases, sim), &["w1", "w2", "w3"], 8),
        Duration::from_secs(120),
        "3 workers balanced",
    )
    .await;
    periodic_check(
        || written.all_delivered(&log.snapshot()),
        Duration::from_secs(120),
        "every record",
    )
    .await;
    for w in [w1, w2, w3] {
        w.shutdown().await.expect("shutdown");
    }
    ([e1, e2, e3], written, log)
}

fn lost(e: &Events) -> usize {
    e.count(|x| matches!(x, ConsumerEvent::LeaseLost { .. }))
}

/// A newcomer asks for its share and the busier workers hand leases over: each stops reading the
/// shard, lets its handler finish, writes the checkpoint and makes the newcomer the owner, which
/// starts right after it. Under steady writes, nothing is lost and nothing is delivered twice.
#[tokio::test(start_paused = true)]
async fn a_newcomer_is_handed_its_share_and_nothing_repeats() {
    let sim = Simulator::builder().initial_shards(8).seed(43).build();
    let leases = MemoryLeaseStore::new();
    let ([e1, e2, e3], written, log) = newcomer_joins(&sim, &leases).await;
    let handed = |e: &Events| e.count(|x| matches!(x, ConsumerEvent::LeaseHandedOver { .. }));
    let stolen = |e: &Events| {
        e.count(|x| {
            matches!(
                x,
                ConsumerEvent::LeaseAcquired {
                    stolen_from: Some(_),
                    ..
                }
            )
        })
    };
    assert!(handed(&e1) + handed(&e2) >= 2, "leases were handed over");
    assert_eq!(lost(&e1) + lost(&e2) + lost(&e3), 0, "no lease was lost");
    assert_eq!(stolen(&e3), 0, "no lease was stolen");
    // Exactly once: the moves repeat nothing.
    check_deliveries(&written, &log.snapshot(), true);
}

/// Balancing rounds read the lease table as an eventually consistent read may answer (each
/// lease possibly one of its last versions): a newcomer is still handed its share, no worker
/// drops a lease it holds because a stale listing named its previous owner, and nothing
/// repeats.
#[tokio::test(start_paused = true)]
async fn stale_lease_listings_move_nothing_twice_and_lose_no_lease() {
    let sim = Simulator::builder().initial_shards(8).seed(47).build();
    let leases = MemoryLeaseStore::with_stale_reads(47);
    let ([e1, e2, e3], written, log) = newcomer_joins(&sim, &leases).await;
    assert_eq!(lost(&e1) + lost(&e2) + lost(&e3), 0, "no lease was lost");
    check_deliveries(&written, &log.snapshot(), true);
}
