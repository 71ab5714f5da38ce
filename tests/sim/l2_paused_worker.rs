//! A worker paused past its lease (issue 21; issue 14, defect 4): while it is stalled another
//! worker takes its shards; when it wakes it delivers nothing of them before it learns the lease
//! is gone, it reports `LeaseLost` (not a failure), and it never runs two workers on one shard.
//!
//! The pause is all of one worker's calls to the stream and to the lease table hanging (what a
//! stopped process, a VM pause or a partition looks like from outside); its own timers and its
//! delivery stage keep running, which is harder than a real pause: only its lease guard keeps it
//! from delivering.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dynamodb_stream::lease::MemoryLeaseStore;
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{Consumer, ConsumerEvent};

use crate::common::{check_deliveries, periodic_check, Call, Events, Log, Pausable, Written};

struct Worker {
    consumer: Consumer,
    events: Events,
    paused: Arc<AtomicBool>,
}

async fn worker(sim: &Simulator, leases: &MemoryLeaseStore, log: &Log, id: &str) -> Worker {
    let paused = Arc::new(AtomicBool::new(false));
    // One log for both workers (deliveries in the order they happened), tagged per worker.
    let log = log.tagged(id);
    let l = log.clone();
    let api = Pausable {
        inner: sim.clone(),
        paused: paused.clone(),
    };
    let store = Pausable {
        inner: leases.clone(),
        paused: paused.clone(),
    };
    let builder = Consumer::builder(api, sim.stream_arn())
        .handler_factory(move |s| l.handler(s))
        .leases(store, id)
        .configure(|c| {
            c.lease.lease_duration = Duration::from_secs(10);
            c.lease.renew_interval = Duration::from_secs(3);
            c.checkpoint_interval = Duration::from_millis(500);
        });
    let events = Events::collect(builder.events());
    Worker {
        consumer: builder.spawn().await.expect("spawn"),
        events,
        paused,
    }
}

/// Calls of `a` and `b` on one shard that ran at the same time.
fn overlapping_calls(a: &[Call], b: &[Call]) -> Vec<(String, tokio::time::Instant)> {
    let mut out = Vec::new();
    for x in a {
        for y in b.iter().filter(|y| y.shard_id == x.shard_id) {
            if x.at < y.ended && y.at < x.ended {
                out.push((x.shard_id.clone(), x.at));
            }
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_worker_paused_past_its_lease_delivers_nothing_of_it_when_it_wakes() {
    let sim = Simulator::builder().initial_shards(4).seed(21).build();
    let leases = MemoryLeaseStore::new();
    let mut written = Written::default();
    let log = Log::new();
    let w1 = worker(&sim, &leases, &log, "w1").await;
    let w2 = worker(&sim, &leases, &log, "w2").await;
    // Handlers take a while, so batches queue up in w1's delivery stage during the pause.
    *log.delay.lock().unwrap() = Duration::from_millis(300);
    for round in 0..20 {
        for i in 0..20 {
            written.put(&sim, &format!("k{}", (round * 20 + i) % 200));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    periodic_check(
        || {
            w1.events
                .count(|e| matches!(e, ConsumerEvent::LeaseAcquired { .. }))
                > 0
        },
        Duration::from_secs(60),
        "w1 holds leases",
    )
    .await;

    // Pause w1 for 25 s, longer than its 10 s leases, while writes go on.
    w1.paused.store(true, Ordering::SeqCst);
    let paused_at = tokio::time::Instant::now();
    for round in 0..50 {
        for i in 0..10 {
            written.put(&sim, &format!("k{}", (round * 10 + i) % 200));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    w1.paused.store(false, Ordering::SeqCst);
    assert!(
        w2.events
            .count(|e| matches!(e, ConsumerEvent::LeaseAcquired { .. }))
            >= 4,
        "w2 took w1's shards during the pause"
    );
    for round in 0..20 {
        for i in 0..10 {
            written.put(&sim, &format!("k{}", (round * 10 + i) % 200));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    periodic_check(
        || written.all_delivered(&log.snapshot()),
        Duration::from_secs(300),
        "every record",
    )
    .await;
    w1.consumer.shutdown().await.expect("shutdown w1");
    w2.consumer.shutdown().await.expect("shutdown w2");

    // The paused worker learned of the loss as a lease loss, never as a failure.
    assert!(
        w1.events
            .count(|e| matches!(e, ConsumerEvent::LeaseLost { .. }))
            > 0,
        "w1 reported its lost leases"
    );
    assert_eq!(
        w1.events
            .count(|e| matches!(e, ConsumerEvent::WorkerRestarted { .. })),
        0,
        "a lost lease is not a worker failure: {:?}",
        w1.events.all()
    );
    // Its delivery stage started no handler call once its leases could have expired: nothing
    // between the end of its guard (last renewal before the pause + 10 s - 2 s margin, so at
    // most 8 s into the pause) and its next lease acquisition.
    let cutoff = paused_at + Duration::from_secs(8);
    let resumed = paused_at + Duration::from_secs(25);
    let calls =
        |tag: &str| -> Vec<Call> { log.calls().into_iter().filter(|c| c.tag == tag).collect() };
    let late: Vec<Call> = calls("w1")
        .into_iter()
        .filter(|c| c.at >= cutoff && c.at < resumed)
        .collect();
    assert!(
        late.is_empty(),
        "w1 delivered while its leases could have expired: {late:?}"
    );
    // Across the fleet, one shard is never handled by two workers at once.
    let overlaps = overlapping_calls(&calls("w1"), &calls("w2"));
    if std::env::var("DEBUG_L2").is_ok() {
        let t0 = paused_at;
        let rel = |t: tokio::time::Instant| {
            t.checked_duration_since(t0)
                .map(|d| d.as_secs_f64())
                .unwrap_or_else(|| -(t0 - t).as_secs_f64())
        };
        for name in ["w1", "w2"] {
            for c in calls(name) {
                eprintln!(
                    "{name} {} {:.3}..{:.3} inst {}",
                    &c.shard_id[c.shard_id.len() - 2..],
                    rel(c.at),
                    rel(c.ended),
                    c.handler_instance
                );
            }
        }
        eprintln!("w1 events {:?}", w1.events.all());
        eprintln!("w2 events {:?}", w2.events.all());
    }
    assert!(
        overlaps.is_empty(),
        "two workers handled one shard at once: {overlaps:?}"
    );
    // Inside one process, never two workers (handler instances) on one shard at once.
    for name in ["w1", "w2"] {
        let mut by_shard: BTreeMap<String, Vec<Call>> = BTreeMap::new();
        for c in calls(name) {
            by_shard.entry(c.shard_id.clone()).or_default().push(c);
        }
        for (shard, calls) in by_shard {
            let n = crate::common::max_concurrent_calls(&calls, &shard);
            assert!(n <= 1, "{n} handler calls at once on shard {shard}");
        }
    }
    check_deliveries(&written, &log.snapshot(), false);
}
