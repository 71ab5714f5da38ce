//! Scenario 4, the soak. For 3 × `DDBSTREAM_CHAOS_SECS` a writer puts ~40 items/s (each
//! carrying its write time), the open shard is rolled over every `DDBSTREAM_CHAOS_ROLLOVER_SECS`
//! (default: every 1–2 s, drawn), with DynamoDB Local's end-of-shard race widened to 200 ms, and the consumer — the real `ddbstream tail --checkpoint FILE` process — is
//! killed with SIGKILL after a random life of ½–1½ × `DDBSTREAM_CHAOS_KILL_SECS` (default 5)
//! and started again on the same checkpoint file. Its stdout (one JSON line per record) is the
//! delivery log, each line stamped when it arrived; its RSS is sampled from /proc every 500 ms.
//! After the writer stops, a last run reads to the end and is stopped with SIGTERM.
//!
//! Pass: nothing lost, no order inversion per shard, no lineage violation, no per-key version
//! regression; duplicates only around kills — none within one process run, each a replay at
//! the start of a shard in the run after a kill, and at most 2 pages (2 × 1000 records) per
//! kill; RSS stable after warm-up within each run that lives long enough; lag p99 reported.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::StreamViewType;
use dynamodb_stream::SequenceNumber;

use crate::common::{
    chaos_secs, check, cli_env, env_u64, lineage, missing, now_ms, seed, Delivery, TailProcess,
    Writer,
};
use crate::ddb_local::{clients, create_table, end_race, rollover, TestClients};

const TABLE: &str = "soak";
/// GetRecords returns at most this many records: one page.
const PAGE: usize = 1000;
/// RSS samples of a run's first seconds are warm-up.
const WARM_UP: Duration = Duration::from_secs(2);

/// `ddbstream tail --table soak --from trim-horizon --checkpoint FILE`.
fn start_tail(c: &TestClients, checkpoint: &Path, stderr: PathBuf) -> TailProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ddbstream"));
    cli_env(&mut cmd, c);
    cmd.args([
        "tail",
        "--table",
        TABLE,
        "--from",
        "trim-horizon",
        "--checkpoint",
    ])
    .arg(checkpoint);
    TailProcess::spawn(cmd, stderr)
}

fn median(mut xs: Vec<u64>) -> u64 {
    xs.sort_unstable();
    xs.get(xs.len() / 2).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_rollovers_and_sigkills_loses_nothing() {
    let soak = Duration::from_secs(chaos_secs() * 3);
    let kill_every = Duration::from_secs(env_u64("DDBSTREAM_CHAOS_KILL_SECS").unwrap_or(5).max(1));
    let rollover_every =
        env_u64("DDBSTREAM_CHAOS_ROLLOVER_SECS").map(|s| Duration::from_secs(s.max(1)));
    let seed = seed("soak");
    let mut rng = fastrand::Rng::with_seed(seed);
    let c = clients("chaos_soak");
    let arn = create_table(&c, TABLE, StreamViewType::NewAndOldImages).await;
    // DynamoDB Local's end-of-shard race, widened so rollovers meet it (issue 14).
    end_race(&c, Duration::from_millis(200)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let checkpoint = dir.path().join("tail.checkpoints.json");
    let writer = Writer::start(&c, TABLE, 100, Duration::from_millis(25), seed);

    let started = Instant::now();
    let next_rollover_in = |rng: &mut fastrand::Rng| {
        rollover_every.unwrap_or_else(|| Duration::from_millis(rng.u64(1_000..2_000)))
    };
    let mut next_rollover = started + next_rollover_in(&mut rng);
    let mut rollovers = 0;
    let mut runs: Vec<TailProcess> = Vec::new();
    while started.elapsed() < soak {
        let index = runs.len();
        let mut tail = start_tail(&c, &checkpoint, dir.path().join(format!("run-{index}.log")));
        let kill_ms = kill_every.as_millis() as u64;
        let life = Duration::from_millis(rng.u64(kill_ms / 2..=kill_ms * 3 / 2));
        let mut next_sample = Instant::now();
        while tail.started.elapsed() < life && started.elapsed() < soak {
            if Instant::now() >= next_sample {
                tail.sample_rss();
                next_sample += Duration::from_millis(500);
            }
            if Instant::now() >= next_rollover {
                rollover(&c).await;
                rollovers += 1;
                next_rollover += next_rollover_in(&mut rng);
            }
            if let Some(status) = tail.exited() {
                panic!(
                    "run {index}: tail exited by itself ({status}):\n{}",
                    tail.stderr_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tail.kill();
        runs.push(tail);
    }
    let kills = runs.len();
    let written = writer.stop().await;

    // The last run reads everything that is left, then stops cleanly.
    let last_index = runs.len();
    let mut last = start_tail(
        &c,
        &checkpoint,
        dir.path().join(format!("run-{last_index}.log")),
    );
    let collect = |runs: &[TailProcess], last: &TailProcess| -> (Vec<Delivery>, usize) {
        let mut all = Vec::new();
        let mut bad = 0;
        for (i, t) in runs.iter().chain(std::iter::once(last)).enumerate() {
            let (d, b) = t.deliveries(i);
            all.extend(d);
            bad += b;
        }
        (all, bad)
    };
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut next_sample = Instant::now();
    loop {
        if Instant::now() >= next_sample {
            last.sample_rss();
            next_sample += Duration::from_millis(500);
        }
        let (all, _) = collect(&runs, &last);
        let missing = missing(&written, &all);
        if missing == 0 {
            break;
        }
        if let Some(status) = last.exited() {
            panic!(
                "the last run exited by itself ({status}):\n{}",
                last.stderr_text()
            );
        }
        assert!(
            Instant::now() < deadline,
            "{missing} writes still undelivered 90 s after the soak; last run's log:\n{}",
            last.stderr_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    last.terminate().await;
    let (deliveries, cut_lines) = collect(&runs, &last);
    let shards = lineage(&c, &arn).await;
    let report = check(&written, &deliveries, &shards);

    // Duplicates: none within a run; in a run after a kill, only a replay at the start of a
    // shard (a prefix of what that run printed for the shard).
    let mut first_run: std::collections::HashMap<(&str, &SequenceNumber), usize> =
        std::collections::HashMap::new();
    let mut dups_per_run = vec![0usize; runs.len() + 1];
    let mut fresh_seen: std::collections::HashSet<(usize, &str)> = std::collections::HashSet::new();
    let mut misplaced = Vec::new();
    for d in &deliveries {
        let id = (d.shard_id.as_str(), &d.sequence_number);
        match first_run.get(&id) {
            None => {
                first_run.insert(id, d.run);
                fresh_seen.insert((d.run, d.shard_id.as_str()));
            }
            Some(&r) => {
                dups_per_run[d.run] += 1;
                if r == d.run {
                    misplaced.push(format!(
                        "{} {} twice in run {r}",
                        d.shard_id, d.sequence_number
                    ));
                } else if fresh_seen.contains(&(d.run, d.shard_id.as_str())) {
                    misplaced.push(format!(
                        "{} {} repeated in run {} after new records of its shard",
                        d.shard_id, d.sequence_number, d.run
                    ));
                }
            }
        }
    }
    let worst_kill = dups_per_run.iter().copied().max().unwrap_or(0);

    // RSS: per run, after warm-up, the last third against the first third.
    let mut rss_report = Vec::new();
    let mut peak_kb = 0;
    for (i, t) in runs.iter().chain(std::iter::once(&last)).enumerate() {
        let steady: Vec<u64> = t
            .rss
            .iter()
            .filter(|(at, _)| *at >= WARM_UP)
            .map(|(_, kb)| *kb)
            .collect();
        peak_kb = peak_kb.max(t.rss.iter().map(|(_, kb)| *kb).max().unwrap_or(0));
        if steady.len() >= 6 {
            let third = steady.len() / 3;
            let early = median(steady[..third].to_vec());
            let late = median(steady[steady.len() - third..].to_vec());
            rss_report.push((i, early, late, steady.len()));
        }
    }
    let lag_p99 = report.lag_percentile(0.99);
    let per_run: Vec<String> = runs
        .iter()
        .chain(std::iter::once(&last))
        .map(|t| {
            let lines = t.lines.lock().unwrap();
            let first = lines.first().map(|(at, _)| {
                at.saturating_sub(now_ms() - t.started.elapsed().as_millis() as u64)
            });
            format!("{} lines (first after {first:?} ms)", lines.len())
        })
        .collect();
    println!("soak: runs: {per_run:?}");
    if std::env::var_os("DDBSTREAM_CHAOS_DEBUG").is_some() {
        for (i, t) in runs.iter().chain(std::iter::once(&last)).enumerate() {
            let (d, _) = t.deliveries(i);
            let mut firsts = std::collections::BTreeMap::new();
            let mut lasts = std::collections::BTreeMap::new();
            for x in &d {
                firsts
                    .entry(x.shard_id.clone())
                    .or_insert(x.sequence_number.to_string());
                lasts.insert(x.shard_id.clone(), x.sequence_number.to_string());
            }
            println!(
                "run {i}: first {firsts:?}\n        last {lasts:?}\n{}",
                t.stderr_text()
            );
        }
    }
    println!(
        "soak: {} s, {kills} SIGKILLs, {rollovers} rollovers, {} shards, {} writes; {}; \
         duplicates per run {dups_per_run:?} (worst {worst_kill}, bound {} per kill); {cut_lines} lines cut by SIGKILL; \
         RSS peak {} MB, steady runs (run, early kB, late kB, samples): {rss_report:?}; lag p99 {:?} ms",
        soak.as_secs(),
        shards.len(),
        written.total(),
        report.summary(),
        2 * PAGE,
        peak_kb / 1024,
        lag_p99,
    );

    report.assert_clean(false);
    assert!(
        misplaced.is_empty(),
        "duplicates not explained by a kill: {:?}",
        &misplaced[..misplaced.len().min(10)]
    );
    assert!(
        report.duplicates <= kills * 2 * PAGE,
        "{} duplicates after {kills} kills",
        report.duplicates
    );
    assert_eq!(dups_per_run[0], 0, "the first run repeats nothing");
    for (run, early, late, _) in &rss_report {
        assert!(
            *late as f64 <= *early as f64 * 1.25 + 8.0 * 1024.0,
            "run {run}: RSS grew from {early} kB to {late} kB after warm-up"
        );
    }
    assert!(kills >= 2, "only {kills} kills: run longer");
    assert!(rollovers >= 2, "only {rollovers} rollovers: run longer");
    assert!(
        lag_p99.is_some_and(|p| p < 60_000),
        "lag p99 {lag_p99:?} ms"
    );
}
