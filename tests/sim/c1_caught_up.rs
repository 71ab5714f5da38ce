//! Read until caught up, then stop (issue 20): `Consumer::caught_up` and
//! `ConsumerBuilder::run_once`, the pull style of the npm package's `fetchStreamState()`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynamodb_stream::checkpoint::MemoryCheckpointStore;
use dynamodb_stream::sim::Simulator;
use dynamodb_stream::{Consumer, Error, RestartPolicy, RunReport, StartPosition};

use crate::common::{check_deliveries, periodic_check, run_seeds, Log, Written};

/// One once-run of `sim` recording into `log`, reading pages of `page` records.
async fn once(
    sim: &Simulator,
    log: &Log,
    store: &MemoryCheckpointStore,
    page: u32,
) -> dynamodb_stream::Result<RunReport> {
    let l = log.clone();
    Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_factory(move |s| l.handler(s))
        .checkpoints(store.clone())
        .start_from(StartPosition::TrimHorizon)
        .configure(|c| c.max_records_per_call = page)
        .run_once()
        .await
}

/// Writes, splits and rollovers by a task of its own until `stop` is set.
fn spawn_writer(
    sim: &Simulator,
    written: &Arc<Mutex<Written>>,
    stop: &Arc<std::sync::atomic::AtomicBool>,
    seed: u64,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let (sim, written, stop) = (sim.clone(), written.clone(), stop.clone());
    tokio::spawn(async move {
        let mut rng = fastrand::Rng::with_seed(seed);
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            let key = format!("k{}", rng.usize(0..40));
            {
                let mut w = written.lock().unwrap();
                if rng.f64() < 0.15 {
                    w.delete(&sim, &key);
                } else {
                    w.put(&sim, &key);
                }
            }
            match rng.u32(0..100) {
                0..=1 => {
                    let open = sim.open_shards();
                    if open.len() < 6 {
                        let _ = sim.split_shard(&open[rng.usize(0..open.len())]);
                    }
                }
                2..=3 => {
                    let open = sim.open_shards();
                    let _ = sim.rollover_shard(&open[rng.usize(0..open.len())]);
                }
                _ => {}
            }
            tokio::time::sleep(every.mul_f64(0.2 + 1.6 * rng.f64())).await;
        }
    })
}

/// Repeated once-runs with one checkpoint store, while the table is written, split and rolled
/// over, deliver every record exactly once in total when nothing fails; every run returns.
#[test]
fn repeated_once_runs_deliver_every_record_exactly_once() {
    run_seeds("repeated once-runs", 100, |seed| async move {
        let mut rng = fastrand::Rng::with_seed(seed);
        let sim = Simulator::builder()
            .initial_shards(rng.usize(1..4))
            .seed(seed)
            .child_visibility_delay(Duration::from_millis(rng.u64(0..5_000)))
            .stale_describe_probability(rng.f64() * 0.5)
            .end_race_probability(rng.f64() * 0.3)
            .build();
        let written = Arc::new(Mutex::new(Written::default()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = spawn_writer(&sim, &written, &stop, seed, Duration::from_millis(40));
        let log = Log::new();
        let store = MemoryCheckpointStore::new();
        let page = rng.u32(1..20);
        let mut reported = 0;
        for _ in 0..rng.usize(3..8) {
            tokio::time::sleep(Duration::from_millis(rng.u64(0..3_000))).await;
            let before = log.len();
            let report =
                tokio::time::timeout(Duration::from_secs(600), once(&sim, &log, &store, page))
                    .await
                    .expect("a once-run ends")
                    .expect("a once-run succeeds");
            assert!(report.gaps.is_empty(), "{:?}", report.gaps);
            assert_eq!(report.total_records() as usize, log.len() - before);
            reported += report.total_records();
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        writer.await.expect("writer");
        // Whatever the last runs raced is read by one more.
        let report = once(&sim, &log, &store, page).await.expect("the last run");
        reported += report.total_records();
        let written = written.lock().unwrap().clone();
        let deliveries = log.snapshot();
        check_deliveries(&written, &deliveries, true);
        assert_eq!(
            reported,
            written.total(),
            "the reports count every delivery"
        );
    });
}

/// An open shard written to the whole time does not keep a once-run going: it reads up to the
/// moment it was called, and everything written before that is delivered.
#[tokio::test(start_paused = true)]
async fn a_once_run_on_a_busy_shard_ends_with_everything_written_before_it() {
    let sim = Simulator::builder().initial_shards(1).seed(20).build();
    let written = Arc::new(Mutex::new(Written::default()));
    for i in 0..500 {
        written.lock().unwrap().put(&sim, &format!("old{i}"));
    }
    let before = written.lock().unwrap().clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A write every 5 ms: the shard never runs empty, faster than any poll interval.
    let writer = spawn_writer(&sim, &written, &stop, 20, Duration::from_millis(5));
    let log = Log::new();
    // Slow handling: the run takes many polls, while the writes go on.
    *log.delay.lock().unwrap() = Duration::from_millis(30);
    let store = MemoryCheckpointStore::new();
    let report = tokio::time::timeout(Duration::from_secs(600), once(&sim, &log, &store, 20))
        .await
        .expect("the once-run ends although the shard never runs empty")
        .expect("the once-run succeeds");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.await.expect("writer");
    assert!(
        before.all_delivered(&log.snapshot()),
        "every record written before the run was delivered"
    );
    assert!(report.total_records() >= before.total());
}

/// `caught_up` on a running consumer: resolves once what was written before the question is
/// handled, including records in the children of a shard that split before the question but
/// are listed only seconds after their parent closed (as the real service may); the consumer
/// goes on reading afterwards.
#[tokio::test(start_paused = true)]
async fn caught_up_covers_what_was_written_before_it_and_the_consumer_goes_on() {
    let sim = Simulator::builder()
        .initial_shards(2)
        .seed(21)
        .child_visibility_delay(Duration::from_secs(20))
        .build();
    let log = Log::new();
    // Slow handler: the question is asked while most records are unhandled.
    *log.delay.lock().unwrap() = Duration::from_millis(200);
    let l = log.clone();
    let consumer = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_factory(move |s| l.handler(s))
        .configure(|c| c.max_records_per_call = 5)
        .spawn()
        .await
        .expect("spawn");
    let mut written = Written::default();
    for i in 0..60 {
        written.put(&sim, &format!("a{i}"));
    }
    for shard in sim.open_shards() {
        sim.split_shard(&shard).expect("split");
    }
    for i in 0..60 {
        written.put(&sim, &format!("b{i}"));
    }
    let asked = consumer.caught_up();
    tokio::time::timeout(Duration::from_secs(600), asked)
        .await
        .expect("caught up in time")
        .expect("caught up");
    assert!(written.all_delivered(&log.snapshot()));
    let mut later = Written::default();
    later.put(&sim, "after");
    periodic_check(
        || later.all_delivered(&log.snapshot()),
        Duration::from_secs(60),
        "a record written afterwards",
    )
    .await;
    consumer.shutdown().await.expect("shutdown");
}

/// A shard that cannot get there makes the question fail with why, instead of waiting forever.
#[tokio::test(start_paused = true)]
async fn caught_up_fails_on_a_quarantined_shard() {
    let sim = Simulator::builder().initial_shards(1).seed(22).build();
    let log = Log::new();
    log.poison_key("bad");
    let l = log.clone();
    let consumer = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_factory(move |s| l.handler(s))
        .configure(|c| {
            c.restart = RestartPolicy {
                max_failures: 2,
                ..RestartPolicy::default()
            }
        })
        .spawn()
        .await
        .expect("spawn");
    Written::default().put(&sim, "bad");
    let result = tokio::time::timeout(Duration::from_secs(3600), consumer.caught_up())
        .await
        .expect("answered in time");
    assert!(
        matches!(result, Err(Error::Quarantined { .. })),
        "{result:?}"
    );
    consumer.shutdown().await.expect("shutdown");
}

/// A handler error stops nothing here: the once-run's consumer restarts the shard, and the run
/// still ends with every record delivered (at least once).
#[tokio::test(start_paused = true)]
async fn a_once_run_survives_a_failing_batch() {
    let sim = Simulator::builder().initial_shards(1).seed(23).build();
    let mut written = Written::default();
    for i in 0..50 {
        written.put(&sim, &format!("k{i}"));
    }
    let log = Log::new();
    log.fail_batches.lock().unwrap().push(2);
    let l = log.clone();
    let report = Consumer::builder(sim.clone(), sim.stream_arn())
        .handler_factory(move |s| l.handler(s))
        .configure(|c| c.max_records_per_call = 10)
        .start_from(StartPosition::TrimHorizon)
        .run_once()
        .await
        .expect("the run ends");
    assert_eq!(log.failures(), 1);
    assert!(written.all_delivered(&log.snapshot()));
    assert!(report.total_records() >= written.total());
}
