//! Issue 17, point 2: exit codes scripts can trust — documented in `--help`; 130 for SIGINT in
//! every command; a `--once` run stopped before it caught up is never success (130, or 143 for
//! SIGTERM); a follower stopped by SIGTERM is done (0); `status --check` exits 3 when a shard is
//! behind by more than `--max-lag` or close to the retention limit.

use std::process::Stdio;
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use serde_json::Value;

use crate::common::{
    ddbstream, item, put, put_many, run_cli, stderr, Lines, Running, SilentEndpoint,
};
use crate::ddb_local::{clients, create_table, dilate};

const WAIT: Duration = Duration::from_secs(90);

fn signal(running: &Running, name: &str) {
    let status = std::process::Command::new("kill")
        .args([name, &running.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {name}");
}

/// Start `ddbstream args`, stderr read line by line.
fn start(mut cmd: std::process::Command, args: &[&str]) -> (Running, Lines) {
    cmd.args(args).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut running = Running::spawn(cmd);
    let err = Lines::new(running.child.stderr.take().expect("stderr"));
    (running, err)
}

/// Read stderr lines until one contains `what`.
async fn wait_for(err: &Lines, what: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = err.next(WAIT).await;
        let found = line.contains(what);
        seen.push(line);
        if found {
            return seen;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_lists_the_exit_codes() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ddbstream"))
        .arg("--help")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("Exit codes:"), "{help}");
    for line in [
        "  0    done",
        "  1    error",
        "  2    usage error",
        "  3    status --check",
        "  130  interrupted by SIGINT",
        "  143  terminated by SIGTERM",
    ] {
        assert!(help.contains(line), "{line:?} missing from:\n{help}");
    }
    // Usage errors are 2.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ddbstream"))
        .args(["tail", "--no-such-flag"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_is_130_and_sigterm_stops_a_follower_cleanly() {
    let c = clients("cli_exit_follow");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let checkpoint = dir.path().join("tail.json");
    let checkpoint = checkpoint.to_str().expect("utf-8");
    for (sig, code) in [("-INT", 130), ("-TERM", 0)] {
        let (mut tail, err) = start(
            ddbstream(&c),
            &["tail", "--table", "orders", "--checkpoint", checkpoint],
        );
        wait_for(&err, "reading shard").await;
        signal(&tail, sig);
        let status = tail.wait(WAIT).await;
        assert_eq!(
            status.code(),
            Some(code),
            "{sig}: {status:?}\n{}",
            err.drain().join("\n")
        );
        // Stopped cleanly either way: the final checkpoint is there.
        let saved = std::fs::read_to_string(checkpoint).expect("checkpoint file");
        assert!(saved.contains("ddbstream-tail"), "{saved}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_once_run_stopped_before_it_caught_up_is_not_success() {
    let c = clients("cli_exit_once");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let items: Vec<_> = (0..400).map(|id| item(id, 1)).collect();
    put_many(&c, "orders", &items).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("orders.sqlite");
    let db = db.to_str().expect("utf-8");
    // One item per Scan page: the scan takes hundreds of calls, and the signal comes first.
    let args = [
        "replicate",
        "--table",
        "orders",
        "--db",
        db,
        "--once",
        "--segments",
        "1",
        "--scan-page-limit",
        "1",
    ];
    for (sig, code) in [("-INT", 130), ("-TERM", 143)] {
        let (mut run, err) = start(ddbstream(&c), &args);
        // "scanning in 1 segments", or on the second run "resuming the interrupted scan".
        let mut seen = wait_for(&err, " segments").await;
        signal(&run, sig);
        let status = run.wait(WAIT).await;
        seen.extend(err.until_end(WAIT).await);
        let log = seen.join("\n");
        assert_eq!(status.code(), Some(code), "{sig}: {status:?}\n{log}");
        assert!(
            log.contains("not caught up yet: the next run continues"),
            "{log}"
        );
    }
    // A run left alone catches up: 0.
    let out = run_cli(&c, &args).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("ddbstream: caught up"),
        "{}",
        stderr(&out)
    );

    // `tail --once` stopped while it still tries to reach its endpoint: not success either.
    let silent = SilentEndpoint::start();
    for (sig, code) in [("-INT", 130), ("-TERM", 143)] {
        let mut cmd = ddbstream(&c);
        cmd.env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{}", silent.port),
        );
        let (mut tail, err) = start(cmd, &["tail", "--table", "orders", "--once"]);
        // Its first call got no answer and is being retried.
        let mut seen = wait_for(&err, "WARN DescribeTable failed; retrying").await;
        signal(&tail, sig);
        let status = tail.wait(WAIT).await;
        seen.extend(err.until_end(WAIT).await);
        let log = seen.join("\n");
        assert_eq!(status.code(), Some(code), "{sig}: {status:?}\n{log}");
        assert!(log.contains("stopped before the stream was read"), "{log}");
    }
}

async fn check(c: &crate::ddb_local::TestClients, db: &str, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["status", "--table", "orders", "--db", db, "--check"];
    args.extend_from_slice(extra);
    let out = run_cli(c, &args).await;
    let code = out.status.code().expect("an exit code");
    assert!(
        code == 0 || code == 3,
        "{args:?}: exit {code}\n{}",
        stderr(&out)
    );
    (code, String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_check_fails_when_a_shard_is_behind_or_at_risk() {
    let c = clients("cli_exit_check");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    for id in 0..3 {
        put(&c, "orders", &item(id, 1)).await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("orders.sqlite");
    let db = db.to_str().expect("utf-8");
    let out = run_cli(
        &c,
        &["replicate", "--table", "orders", "--db", db, "--once"],
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));

    // Caught up: fine.
    let (code, text) = check(&c, db, &[]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("check: OK"), "{text}");

    // Two unread changes, minutes old: behind, but within --max-lag (10 minutes by default).
    put(&c, "orders", &item(10, 1)).await;
    put(&c, "orders", &item(11, 1)).await;
    let (code, text) = check(&c, db, &[]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("behind: 2 unread"), "{text}");

    // An hour later they are still unread: more than --max-lag.
    dilate(&c, Duration::from_secs(3600)).await;
    let (code, text) = check(&c, db, &["--max-lag", "30m"]).await;
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("check: FAILED: shard "), "{text}");
    assert!(text.contains("(more than 30m00s)"), "{text}");
    let (code, _) = check(&c, db, &["--max-lag", "2h"]).await;
    assert_eq!(code, 0, "a larger --max-lag accepts an hour");
    let (code, json) = check(&c, db, &["--max-lag", "30m", "--json"]).await;
    assert_eq!(code, 3);
    let doc: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(doc["check"]["ok"], Value::Bool(false), "{doc:#}");
    assert_eq!(doc["check"]["maxLagSeconds"], 1800, "{doc:#}");
    assert!(
        doc["check"]["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("is behind by 1h")),
        "{doc:#}"
    );

    // 21 hours: close to the 24-hour retention, whatever --max-lag says.
    dilate(&c, Duration::from_secs(20 * 3600)).await;
    let (code, text) = check(&c, db, &["--max-lag", "48h"]).await;
    assert_eq!(code, 3, "{text}");
    assert!(text.contains("is at risk"), "{text}");

    // --check needs stored positions to judge; --max-lag needs --check.
    for args in [
        &["status", "--table", "orders", "--check"][..],
        &["status", "--table", "orders", "--db", db, "--max-lag", "5m"],
    ] {
        let out = run_cli(&c, args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
}
