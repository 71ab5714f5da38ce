//! Issue 17, point 6: the whole replicate bootstrap shows progress — the scan, then the
//! catch-up with the shards still behind: periodic lines when stderr is a pipe, an indicatif
//! bar on a terminal (run under `script`, which gives it a pseudo-terminal).

use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;

use crate::common::{delete, item, keys, put, put_many, run_cli, stderr};
use crate::ddb_local::{clients, create_table, TestClients};

/// 300 items, and a writer that changes some of them while the first copy runs, so the
/// catch-up has changes to apply.
async fn busy_table(c: &TestClients) -> tokio::task::JoinHandle<()> {
    create_table(c, "orders", StreamViewType::NewAndOldImages).await;
    let items: Vec<_> = (0..300).map(|id| item(id, 1)).collect();
    put_many(c, "orders", &items).await;
    let c = c.clone();
    tokio::spawn(async move {
        for step in 0..200u32 {
            if step % 5 == 0 {
                delete(&c, "orders", &keys(step)).await;
            } else {
                put(&c, "orders", &item(step, u64::from(step) + 2)).await;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piped_progress_lines_cover_the_scan_and_the_catch_up() {
    let c = clients("cli_progress_piped");
    let writer = busy_table(&c).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("orders.sqlite");
    let db = db.to_str().expect("utf-8");
    let out = run_cli(
        &c,
        &[
            "replicate",
            "--table",
            "orders",
            "--db",
            db,
            "--once",
            "--segments",
            "1",
            "--scan-page-limit",
            "3",
            "--progress-every",
            "100",
        ],
    )
    .await;
    writer.await.expect("writer");
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    let scanned = log
        .lines()
        // "of ~N items": DescribeTable's item count, an estimate (the writer deletes some).
        .position(|l| l.starts_with("ddbstream: scanned ") && l.contains(" items ("))
        .unwrap_or_else(|| panic!("no scan progress line:\n{log}"));
    let catching_up = log
        .lines()
        .position(|l| l.starts_with("ddbstream: catching up: "))
        .unwrap_or_else(|| panic!("no catch-up progress line:\n{log}"));
    assert!(scanned < catching_up, "{log}");
    assert!(
        log.lines()
            .filter(|l| l.starts_with("ddbstream: catching up: "))
            .any(|l| l.contains("shard") && l.contains("changes applied")),
        "{log}"
    );
    // No terminal: no escape sequences.
    assert!(!log.contains('\u{1b}'), "{log}");

    // -q: no progress at all.
    let db2 = dir.path().join("quiet.sqlite");
    let out = run_cli(
        &c,
        &[
            "-q",
            "replicate",
            "--table",
            "orders",
            "--db",
            db2.to_str().expect("utf-8"),
            "--once",
            "--progress-every",
            "100",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_gets_a_bar() {
    let c = clients("cli_progress_tty");
    let writer = busy_table(&c).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("orders.sqlite");
    let line = format!(
        "{} replicate --table orders --db {} --once --segments 1 --scan-page-limit 3",
        env!("CARGO_BIN_EXE_ddbstream"),
        db.display()
    );
    // `script` (util-linux) runs the command on a pseudo-terminal and copies what it drew.
    let mut cmd = std::process::Command::new("script");
    for var in [
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(crate::ddb_local::env_for_cli(&c))
        .args(["-qec", &line, "/dev/null"]);
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || cmd.output()),
    )
    .await
    .expect("replicate under script ends")
    .expect("join")
    .unwrap_or_else(|e| {
        panic!("cannot run `script` (util-linux, e.g. apt-get install bsdutils): {e}")
    });
    writer.await.expect("writer");
    let drawn = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{drawn}");
    // The bar: drawn in place (carriage returns, erase-line), filling up, then the catch-up.
    assert!(drawn.contains("ddbstream: scanning ["), "{drawn}");
    assert!(drawn.contains(" items, "), "{drawn}");
    assert!(drawn.contains("\u{1b}[2K"), "{drawn}");
    assert!(drawn.contains("ddbstream: catching up "), "{drawn}");
    assert!(drawn.contains("ddbstream: caught up"), "{drawn}");
}
