//! THE CRASH TEST. A writer keeps putting, updating and deleting items while `ddbstream
//! replicate` is killed with SIGKILL at random moments — during the scan and while streaming —
//! and restarted, at least ten times; meanwhile the open shard is rolled over every 1–2 s with
//! DynamoDB Local's end-of-shard race widened (issue 14). After the writer stops, one
//! `replicate --once` run; the replica then equals a full Scan, item for item: every
//! acknowledged write is applied. Once into a SQLite file, once into PostgreSQL (a real server,
//! tests/support/postgres.rs).
//!
//! `DDBSTREAM_CRASH_SEED=<n>` replays a run (the seed is printed).

use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;

use dynamodb_stream::replicate::{PostgresReplica, ReplicaSink, TableSource};

use crate::common::{
    assert_same_items, by_key, ddbstream, delete, item, keys, put, put_many, read_replica, run_cli,
    scan_table, stderr, Running,
};
use crate::ddb_local::{clients, create_table, end_race, rollover};

const KILLS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing() {
    crash_test("cli_crash", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_at_random_moments_loses_nothing_in_postgres() {
    let url = crate::postgres::database("cli_crash_pg").await;
    crash_test("cli_crash_pg", Some(url)).await;
}

/// The crash test into a SQLite file, or into the PostgreSQL database at `postgres`.
async fn crash_test(name: &str, postgres: Option<String>) {
    let seed = std::env::var("DDBSTREAM_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    println!("DDBSTREAM_CRASH_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);

    let c = clients(name);
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let initial: Vec<_> = (0..2_000).map(|id| item(id, 1)).collect();
    put_many(&c, "orders", &initial).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("orders.sqlite");
    let db_arg = match &postgres {
        Some(url) => url.clone(),
        None => db.to_str().expect("utf-8 path").to_owned(),
    };
    end_race(&c, Duration::from_millis(200)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let roller = {
        let (c, stop) = (c.clone(), stop.clone());
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x0011);
        tokio::spawn(async move {
            let mut rollovers = 0u32;
            while !stop.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(rng.u64(1_000..2_000))).await;
                rollover(&c).await;
                rollovers += 1;
            }
            rollovers
        })
    };
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (c, stop, writes) = (c.clone(), stop.clone(), writes.clone());
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
        tokio::spawn(async move {
            let mut version = 2;
            while !stop.load(Ordering::SeqCst) {
                let id = rng.u32(0..2_300);
                if rng.u8(0..4) == 0 {
                    delete(&c, "orders", &keys(id)).await;
                } else {
                    put(&c, "orders", &item(id, version)).await;
                }
                version += 1;
                writes.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(rng.u64(1..6))).await;
            }
        })
    };

    // Small scan pages make the scan long enough to be killed in the middle of.
    let args = [
        "replicate",
        "--table",
        "orders",
        "--to",
        &db_arg,
        "--segments",
        "4",
        "--scan-page-limit",
        "10",
    ];
    let (mut during_scan, mut while_streaming, mut resumed_scan) = (0, 0, false);
    for round in 0..KILLS {
        let log_path = dir.path().join(format!("round-{round}.log"));
        let log_file = std::fs::File::create(&log_path).expect("log file");
        let mut cmd = ddbstream(&c);
        cmd.args(args).stdout(Stdio::null()).stderr(log_file);
        let mut running = Running::spawn(cmd);
        if round < 2 {
            // The first rounds die during the scan: soon after it says it started.
            wait_for_log(&log_path, "scan").await;
            tokio::time::sleep(Duration::from_millis(rng.u64(0..150))).await;
        } else {
            // Then at random moments, mostly while streaming.
            let life = if round < 5 {
                rng.u64(100..900)
            } else {
                rng.u64(300..3_000)
            };
            tokio::time::sleep(Duration::from_millis(life)).await;
        }
        if let Some(status) = running.child.try_wait().expect("try_wait") {
            panic!("round {round}: replicate exited by itself ({status})");
        }
        running.kill_hard();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        resumed_scan |= log.contains("resuming the interrupted scan");
        if log.contains("applying the stream") {
            while_streaming += 1;
        } else if log.contains("scanning in") || log.contains("resuming the interrupted scan") {
            during_scan += 1;
        }
    }
    println!("killed {during_scan} times during the scan, {while_streaming} times while streaming");
    assert!(during_scan >= 2, "only {during_scan} kills during the scan");
    assert!(resumed_scan, "no run resumed an interrupted scan");
    assert!(
        while_streaming >= 3,
        "only {while_streaming} kills while streaming"
    );
    stop.store(true, Ordering::SeqCst);
    writer.await.expect("writer");
    let rollovers = roller.await.expect("roller");
    assert!(rollovers >= 3, "only {rollovers} rollovers");
    end_race(&c, Duration::ZERO).await;
    assert!(
        writes.load(Ordering::SeqCst) > 500,
        "the writer barely wrote"
    );

    let out = run_cli(
        &c,
        &["replicate", "--table", "orders", "--to", &db_arg, "--once"],
    )
    .await;
    let log = stderr(&out);
    assert!(out.status.success(), "final run failed:\n{log}");
    assert!(
        !log.contains("first run"),
        "the bookmark was taken again:\n{log}"
    );
    let copy = match &postgres {
        Some(url) => {
            let sink = PostgresReplica::connect(url).await.expect("connect");
            let info = c.dynamodb.table_info("orders").await.expect("table info");
            sink.bind(&info).await.expect("bind");
            by_key(sink.items().await.expect("items"))
        }
        None => read_replica(&db),
    };
    assert_same_items(&copy, &scan_table(&c, "orders").await, "replica vs Scan");
}

/// Wait until the log at `path` mentions `word` (the scan started or resumed).
async fn wait_for_log(path: &std::path::Path, word: &str) {
    crate::common::wait_until(
        &format!("{} mentions {word:?}", path.display()),
        Duration::from_secs(30),
        || async { std::fs::read_to_string(path).is_ok_and(|l| l.contains(word)) },
    )
    .await;
}
