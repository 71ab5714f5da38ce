//! `ddbstream tail | head -1`: when the reader goes away, tail stops cleanly (exit 0).

use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;

use crate::common::{ddbstream, item, put, Running};
use crate::ddb_local::{clients, create_table};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_stops_tail_cleanly() {
    let c = clients("cli_tail_pipe");
    create_table(&c, "orders", StreamViewType::NewImage).await;
    let mut cmd = ddbstream(&c);
    cmd.args(["tail", "--table", "orders", "--from", "trim-horizon"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut tail = Running::spawn(cmd);
    let stdout = tail.child.stdout.take().expect("stdout");
    put(&c, "orders", &item(1, 1)).await;
    // Read one line, then close the pipe, like `head -1`.
    let first = tokio::task::spawn_blocking(move || {
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("read");
        line
    })
    .await
    .expect("reader");
    assert!(first.contains("\"INSERT\""), "{first}");
    // The next records meet a closed pipe.
    for v in 2..5 {
        put(&c, "orders", &item(1, v)).await;
    }
    let status = tail.wait(Duration::from_secs(60)).await;
    assert!(
        status.success(),
        "exit {status:?}; stderr:\n{}",
        tail.stderr_text()
    );
}
