//! Issue 17, point 7: a newcomer can follow the README on a machine without the aws CLI. Its
//! DynamoDB Local run line — the one the install script prints and the docs repeat — runs
//! with `-sharedDb`; `scripts/local-table.sh` creates a table with a stream and writes to it
//! with one access key; `ddbstream` finds and reads it with another.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{read_replica, run_within, stderr, Running};
use crate::ddb_local::installed_env_file;

const BOUND: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The README's DynamoDB Local run line.
fn readme_run_line() -> String {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let lines: Vec<&str> = readme
        .lines()
        .filter(|l| l.starts_with("java ") && l.contains("$DDB_LOCAL_JAR"))
        .collect();
    assert_eq!(lines.len(), 1, "one run line in the README: {lines:#?}");
    lines[0].to_owned()
}

#[test]
fn one_run_line_everywhere() {
    let line = readme_run_line();
    assert!(line.contains(" -sharedDb "), "{line}");
    assert!(line.contains(" -inMemory "), "{line}");
    assert!(line.contains(" -port 8000 "), "{line}");
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    assert!(
        readme.contains("scripts/local-table.sh create orders"),
        "no table creation"
    );
    // The docs run the same line (the browser page adds its CORS origin to it).
    let command = line.trim_end_matches(" &");
    for doc in ["docs/cli.md", "docs/browser.md"] {
        let text = std::fs::read_to_string(repo().join(doc)).expect("doc");
        let runs: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("java ") && l.contains("$DDB_LOCAL_JAR"))
            .collect();
        assert!(!runs.is_empty(), "{doc} has no run line");
        for run in runs {
            assert!(run.starts_with(command), "{doc}: {run}\nREADME: {line}");
        }
    }
    // And the install script prints it.
    let out = Command::new("bash")
        .arg(repo().join("scripts/install-dynamodb-local.sh"))
        .stdin(Stdio::null())
        .output()
        .expect("run the install script");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(
        printed.lines().any(|l| l.trim() == line),
        "the install script does not print the README's line {line:?}:\n{printed}"
    );
}

/// `scripts/local-table.sh args...` against `endpoint` as `access_key`.
fn local_table(endpoint: &str, access_key: &str, args: &[&str]) -> std::process::Output {
    Command::new("bash")
        .arg(repo().join("scripts/local-table.sh"))
        .args(args)
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_ACCESS_KEY_ID", access_key)
        .env("AWS_REGION", "us-east-1")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/local-table.sh")
}

fn ddbstream_as(endpoint: &str, access_key: &str, home: &Path) -> Command {
    crate::common::bare_ddbstream(
        home,
        &[
            ("AWS_ENDPOINT_URL", endpoint),
            ("AWS_ACCESS_KEY_ID", access_key),
            ("AWS_SECRET_ACCESS_KEY", "local"),
            ("AWS_REGION", "us-east-1"),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_path_works_end_to_end() {
    // The README's own line, on a free port instead of 8000, after sourcing the env file.
    let port = crate::common::refused_port();
    let run = readme_run_line()
        .trim_end_matches(" &")
        .replace(" -port 8000 ", &format!(" -port {port} "));
    let env = installed_env_file();
    let mut cmd = Command::new("bash");
    cmd.arg("-c")
        .arg(format!(". '{}' && exec {run}", env.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = Running::spawn(cmd);
    let endpoint = format!("http://127.0.0.1:{port}");

    // Ready when the script can list tables.
    let deadline = Instant::now() + BOUND;
    loop {
        let out = local_table(&endpoint, "alice", &["list"]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "DynamoDB Local did not answer: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Alice creates the table and writes to it ...
    let out = local_table(&endpoint, "alice", &["create", "orders"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created = String::from_utf8_lossy(&out.stdout);
    assert!(created.contains("NEW_AND_OLD_IMAGES"), "{created}");
    for (pk, total) in [("o-1", "42"), ("o-2", "9007199254740993")] {
        let item = format!(r#"{{"pk":{{"S":"{pk}"}},"total":{{"N":"{total}"}}}}"#);
        let out = local_table(&endpoint, "alice", &["put", "orders", &item]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = local_table(
        &endpoint,
        "alice",
        &["delete", "orders", r#"{"pk":{"S":"o-1"}}"#],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A mistake is one line and exit 1.
    let out = local_table(&endpoint, "alice", &["create", "orders"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ResourceInUseException"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // ... and bob, another access key, finds it (-sharedDb): the README's commands.
    let home = tempfile::tempdir().expect("home");
    let db = home.path().join("orders.sqlite");
    let mut cmd = ddbstream_as(&endpoint, "bob", home.path());
    cmd.args(["replicate", "--table", "orders", "--db"])
        .arg(&db)
        .arg("--once");
    let out = run_within(cmd, BOUND).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let replica = read_replica(&db);
    assert_eq!(replica.len(), 1, "{replica:?}");
    // The replica's key column is `key_string()`'s form (issue 17, point 8).
    assert!(replica.contains_key(r#"pk="o-2""#), "{replica:?}");

    let mut cmd = ddbstream_as(&endpoint, "bob", home.path());
    cmd.args([
        "tail",
        "--table",
        "orders",
        "--from",
        "trim-horizon",
        "--once",
    ]);
    let out = run_within(cmd, BOUND).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = String::from_utf8_lossy(&out.stdout);
    let names: Vec<&str> = printed
        .lines()
        .map(|l| {
            if l.contains(r#""eventName":"INSERT""#) {
                "INSERT"
            } else if l.contains(r#""eventName":"REMOVE""#) {
                "REMOVE"
            } else {
                "?"
            }
        })
        .collect();
    assert_eq!(names, ["INSERT", "INSERT", "REMOVE"], "{printed}");
    assert!(
        printed.contains(r#""total":"9007199254740993""#),
        "{printed}"
    );
}
