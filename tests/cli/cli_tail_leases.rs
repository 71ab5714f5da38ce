//! Several `ddbstream tail` processes share one stream through a DynamoDB lease table on
//! DynamoDB Local: a SIGKILLed worker's shard is taken over within about a lease duration; a
//! SIGTERMed worker hands its lease back and another takes it without waiting for expiry; a
//! newcomer joins; every record is printed by some worker (at-least-once across failovers); a
//! rolling restart — every worker SIGTERMed in turn and replaced, under writes and rollovers —
//! prints every record exactly once (planned handoffs repeat nothing).
//!
//! DynamoDB Local keeps one open shard per stream, so balancing across many shards is proven on
//! the simulator (tests/sim/l1_leases.rs); this test proves the real processes, the real lease
//! table and its conditional writes.

use std::collections::{BTreeSet, HashMap};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::StreamViewType;
use serde_json::Value;

use crate::common::{ddbstream, item, Lines, Running};
use crate::ddb_local::{clients, create_table, rollover, TestClients};

const LEASE_SECONDS: u64 = 6;

struct Worker {
    name: String,
    process: Running,
    out: Lines,
    err: Lines,
}

fn start(c: &TestClients, name: &str) -> Worker {
    let mut cmd = ddbstream(c);
    cmd.args([
        "tail",
        "--table",
        "orders",
        "--from",
        "trim-horizon",
        "--lease-table",
        "leases",
    ])
    .args([
        "--worker-id",
        name,
        "--lease-duration",
        &LEASE_SECONDS.to_string(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut process = Running::spawn(cmd);
    let out = Lines::new(process.child.stdout.take().expect("stdout"));
    let err = Lines::new(process.child.stderr.take().expect("stderr"));
    Worker {
        name: name.to_owned(),
        process,
        out,
        err,
    }
}

/// (worker, when seen, key, version, shard) of every printed record.
type Seen = Vec<(String, Instant, String, u64, String)>;

fn collect(workers: &[Worker], seen: &mut Seen, stderr: &mut HashMap<String, String>) {
    for w in workers {
        for line in w.out.drain() {
            let v: Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let key = v["keys"]["pk"].as_str().unwrap_or_default().to_owned();
            let shard = v["shardId"].as_str().unwrap_or_default().to_owned();
            let version = v["newImage"]["v"]
                .as_u64()
                .or_else(|| v["newImage"]["v"].as_str().and_then(|s| s.parse().ok()));
            if let Some(version) = version {
                seen.push((w.name.clone(), Instant::now(), key, version, shard));
            }
        }
        let e = stderr.entry(w.name.clone()).or_default();
        for line in w.err.drain() {
            e.push_str(&line);
            e.push('\n');
        }
    }
}

/// The worker that printed a record after `since` and is not `except`.
fn printer_since(seen: &Seen, since: Instant, except: &[&str]) -> Option<String> {
    seen.iter()
        .find(|(w, t, ..)| *t > since && !except.contains(&w.as_str()))
        .map(|(w, ..)| w.clone())
}

/// Collect until every one of `expected` was printed by some worker; fails naming how many are
/// missing (and what the workers said) after `within`.
async fn until_all_printed(
    workers: &[Worker],
    seen: &mut Seen,
    stderr: &mut HashMap<String, String>,
    expected: &BTreeSet<(String, u64)>,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        collect(workers, seen, stderr);
        let printed: BTreeSet<(String, u64)> =
            seen.iter().map(|(_, _, k, v, _)| (k.clone(), *v)).collect();
        if expected.is_subset(&printed) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "records lost: {} missing; {stderr:?}",
            expected.difference(&printed).count()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a writer wrote, the flag that stops it, and its task: new versions of 40 items, one put
/// every ~25 ms, until the flag is set.
type SteadyWriter = (
    Arc<Mutex<BTreeSet<(String, u64)>>>,
    Arc<AtomicBool>,
    tokio::task::JoinHandle<()>,
);

fn steady_writer(c: &TestClients) -> SteadyWriter {
    let written: Arc<Mutex<BTreeSet<(String, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (dynamodb, written, stop) = (c.dynamodb.clone(), written.clone(), stop.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let (id, version) = ((n % 40) as u32, n / 40 + 1);
                let it = item(id, version);
                dynamodb
                    .put_item()
                    .table_name("orders")
                    .set_item(Some(crate::common::to_sdk(&it)))
                    .send()
                    .await
                    .expect("put");
                written
                    .lock()
                    .unwrap()
                    .insert((format!("item-{id:05}"), version));
                n += 1;
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };
    (written, stop, writer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tails_share_a_stream_fail_over_and_hand_off() {
    let c = clients("clileases");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let mut workers = vec![start(&c, "w1"), start(&c, "w2"), start(&c, "w3")];

    // A writer putting new versions of 40 items until told to stop (same namespace: the same
    // client).
    let (written, stop, writer) = steady_writer(&c);

    let mut seen: Seen = Vec::new();
    let mut stderr: HashMap<String, String> = HashMap::new();
    let t0 = Instant::now();
    let owner = loop {
        collect(&workers, &mut seen, &mut stderr);
        if let Some(w) = printer_since(&seen, t0, &[]) {
            break w;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "nobody printed: {stderr:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        seen.iter().all(|(w, ..)| *w == owner),
        "one open shard, one reader"
    );

    // SIGKILL the owner: its lease expires and another worker takes the shard over.
    let killed_at = Instant::now();
    workers
        .iter_mut()
        .find(|w| w.name == owner)
        .expect("owner")
        .process
        .kill_hard();
    let second = loop {
        collect(&workers, &mut seen, &mut stderr);
        if let Some(w) = printer_since(&seen, killed_at, &[&owner]) {
            break w;
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(60),
            "no takeover: {stderr:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let takeover = killed_at.elapsed();
    assert!(
        takeover < Duration::from_secs(LEASE_SECONDS * 2 + 4),
        "takeover took {takeover:?} with {LEASE_SECONDS} s leases"
    );

    // SIGTERM the new owner: it hands the lease back; the last worker takes it at once.
    let handed_at = Instant::now();
    let w = workers
        .iter_mut()
        .find(|w| w.name == second)
        .expect("second owner");
    w.process.terminate();
    let status = w.process.wait(Duration::from_secs(60)).await;
    assert!(status.success(), "a SIGTERMed tail exits 0: {status:?}");
    let third = loop {
        collect(&workers, &mut seen, &mut stderr);
        if let Some(w) = printer_since(&seen, handed_at, &[&owner, &second]) {
            break w;
        }
        assert!(
            handed_at.elapsed() < Duration::from_secs(60),
            "no handoff: {stderr:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let handoff = handed_at.elapsed();
    assert!(
        handoff < Duration::from_secs(LEASE_SECONDS),
        "handoff took {handoff:?}: it waited for the {LEASE_SECONDS} s lease to expire"
    );
    assert!(
        stderr
            .get(&third)
            .is_some_and(|e| e.contains("took the lease")),
        "the new owner says so: {stderr:?}"
    );

    // A newcomer joins without disturbing anything.
    workers.push(start(&c, "w4"));
    tokio::time::sleep(Duration::from_secs(3)).await;

    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    let expected = written.lock().unwrap().clone();
    until_all_printed(
        &workers,
        &mut seen,
        &mut stderr,
        &expected,
        Duration::from_secs(60),
    )
    .await;
    for w in workers
        .iter_mut()
        .filter(|w| w.name != owner && w.name != second)
    {
        w.process.terminate();
        assert!(w.process.wait(Duration::from_secs(60)).await.success());
    }
    eprintln!(
        "takeover after SIGKILL: {takeover:?}; handoff after SIGTERM: {handoff:?}; {} records written, {} printed",
        expected.len(),
        seen.len()
    );
}

/// Issue 21: three workers under writes and rollovers; the owner of the open shard is paused
/// with SIGSTOP for longer than its lease while writes go on, another worker takes the shard
/// over, and on SIGCONT the paused worker prints nothing more of the shard it lost — by its own
/// clock its lease had expired, so nothing it read before or after the pause is handed to its
/// handler before it learns the lease is gone — and reports a lost lease, not a failure. Its
/// stale checkpoint is never written (fencing), and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_prints_nothing_of_its_shard_when_it_wakes() {
    let c = clients("clipause");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let mut workers = vec![start(&c, "p1"), start(&c, "p2"), start(&c, "p3")];
    let mut seen: Seen = Vec::new();
    let mut stderr: HashMap<String, String> = HashMap::new();

    // A writer (new versions of 30 items, ~20 a second) and a roller (every ~3 s), both
    // pausable, so the owner can be caught idle.
    let written: Arc<Mutex<BTreeSet<(String, u64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let hold = Arc::new(AtomicBool::new(false));
    let writer = {
        let (c, written, stop, hold) = (c.clone(), written.clone(), stop.clone(), hold.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut since_rollover = Instant::now();
            while !stop.load(Ordering::SeqCst) {
                if hold.load(Ordering::SeqCst) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                let (id, version) = ((n % 30) as u32, n / 30 + 1);
                c.dynamodb
                    .put_item()
                    .table_name("orders")
                    .set_item(Some(crate::common::to_sdk(&item(id, version))))
                    .send()
                    .await
                    .expect("put");
                written
                    .lock()
                    .unwrap()
                    .insert((format!("item-{id:05}"), version));
                n += 1;
                if since_rollover.elapsed() > Duration::from_secs(3) {
                    crate::ddb_local::rollover(&c).await;
                    since_rollover = Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let all_printed = |seen: &Seen, written: &BTreeSet<(String, u64)>| {
        let got: BTreeSet<(String, u64)> =
            seen.iter().map(|(_, _, k, v, _)| (k.clone(), *v)).collect();
        written.is_subset(&got)
    };

    // Let it run through a few rollovers, then catch the owner idle: hold the writer, wait until
    // everything written is printed.
    tokio::time::sleep(Duration::from_secs(8)).await;
    hold.store(true, Ordering::SeqCst);
    let t0 = Instant::now();
    loop {
        collect(&workers, &mut seen, &mut stderr);
        if all_printed(&seen, &written.lock().unwrap()) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "not caught up: {stderr:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (owner, shard) = seen
        .last()
        .map(|(w, .., s)| (w.clone(), s.clone()))
        .expect("something printed");
    let pid = workers
        .iter()
        .find(|w| w.name == owner)
        .expect("owner")
        .process
        .pid();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig}");
    };

    // Paused for 9-14 s (the lease is 6 s) while writes and rollovers go on.
    signal("-STOP");
    let paused_at = Instant::now();
    hold.store(false, Ordering::SeqCst);
    let pause = Duration::from_millis(fastrand::u64(9_000..14_000));
    while paused_at.elapsed() < pause {
        collect(&workers, &mut seen, &mut stderr);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen.iter().any(|(w, t, ..)| *w != owner && *t > paused_at),
        "nobody took over while {owner} was paused: {stderr:?}"
    );
    signal("-CONT");
    let resumed_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    let expected = written.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        collect(&workers, &mut seen, &mut stderr);
        if all_printed(&seen, &expected) {
            break;
        }
        assert!(Instant::now() < deadline, "records lost");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let late: Vec<_> = seen
        .iter()
        .filter(|(w, t, .., s)| *w == owner && *t > resumed_at && *s == shard)
        .collect();
    assert!(
        late.is_empty(),
        "{owner} printed {} records of shard {shard} after it woke up past its lease",
        late.len()
    );
    let owner_err = stderr.get(&owner).cloned().unwrap_or_default();
    assert!(owner_err.contains("lost the lease"), "{owner_err}");
    assert!(
        !owner_err.contains("failed") && !owner_err.contains("retrying in"),
        "a lost lease is not a failure: {owner_err}"
    );
    // The lost shard's lease is not the paused worker's: its stale writes were refused.
    let leases = dynamodb_stream::lease::DynamoDbLeaseStore::new(c.dynamodb.clone(), "leases");
    let stream_arn = c
        .dynamodb
        .describe_table()
        .table_name("orders")
        .send()
        .await
        .expect("describe")
        .table()
        .and_then(|t| t.latest_stream_arn().map(str::to_owned))
        .expect("stream");
    let key = dynamodb_stream::checkpoint::StreamKey {
        application: "ddbstream-tail".into(),
        stream_arn,
    };
    let stored = dynamodb_stream::lease::LeaseStore::list(&leases, &key)
        .await
        .expect("list");
    let lost = stored
        .iter()
        .find(|l| l.shard_id == shard)
        .expect("the lease of the lost shard");
    assert_ne!(lost.owner.as_deref(), Some(owner.as_str()), "{lost:?}");
    for w in workers.iter_mut() {
        w.process.terminate();
        assert!(w.process.wait(Duration::from_secs(60)).await.success());
    }
}

/// A planned rolling restart, as a deploy does it: three workers under steady writes, the open
/// shard rolled over every 1–2 s; four times the worker printing now is stopped with SIGTERM
/// (it finishes what it printed, writes its checkpoint and gives its leases back) and a new
/// worker started. Every write is printed, and none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_prints_every_record_exactly_once() {
    let c = clients("clirolling");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let mut workers = vec![start(&c, "w1"), start(&c, "w2"), start(&c, "w3")];
    let (written, stop, writer) = steady_writer(&c);
    let roller = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut rollovers = 0u32;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(fastrand::u64(1_000..2_000))).await;
                rollover(&c).await;
                rollovers += 1;
            }
            rollovers
        })
    };

    let mut seen: Seen = Vec::new();
    let mut stderr: HashMap<String, String> = HashMap::new();
    let mut stopped = Vec::new();
    for round in 0..4 {
        // The worker printing now.
        let since = Instant::now();
        let printer = loop {
            collect(&workers, &mut seen, &mut stderr);
            if let Some(w) = printer_since(&seen, since, &[]) {
                break w;
            }
            assert!(
                since.elapsed() < Duration::from_secs(60),
                "round {round}: nobody printed: {stderr:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let i = workers
            .iter()
            .position(|w| w.name == printer)
            .expect("printer");
        let mut w = workers.remove(i);
        w.process.terminate();
        let status = w.process.wait(Duration::from_secs(60)).await;
        assert!(status.success(), "a SIGTERMed tail exits 0: {status:?}");
        collect(std::slice::from_ref(&w), &mut seen, &mut stderr);
        stopped.push(w);
        workers.push(start(&c, &format!("w{}", round + 4)));
        tokio::time::sleep(Duration::from_millis(1_500)).await;
    }

    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    let rollovers = roller.await.expect("roller");
    assert!(rollovers >= 3, "only {rollovers} rollovers");
    let expected = written.lock().unwrap().clone();
    until_all_printed(
        &workers,
        &mut seen,
        &mut stderr,
        &expected,
        Duration::from_secs(90),
    )
    .await;
    for w in &mut workers {
        w.process.terminate();
        assert!(w.process.wait(Duration::from_secs(60)).await.success());
    }
    collect(&workers, &mut seen, &mut stderr);
    let mut times: HashMap<(String, u64), Vec<(String, String)>> = HashMap::new();
    for (w, _, k, v, shard) in &seen {
        times
            .entry((k.clone(), *v))
            .or_default()
            .push((w.clone(), shard.clone()));
    }
    let twice: Vec<_> = times.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "{} of {} records printed more than once, e.g. {:?}; {stderr:?}",
        twice.len(),
        expected.len(),
        twice.iter().take(5).collect::<Vec<_>>()
    );
    eprintln!(
        "{} records, {rollovers} rollovers, 4 planned handoffs, none printed twice",
        expected.len()
    );
}
