//! An outage is visible: while `ddbstream tail` cannot reach its endpoint it keeps retrying and
//! says so on stderr (it used to print nothing, docs/reliability.md finding 5), and SIGTERM
//! stops it (it used to be ignored until the first start succeeded).

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Lines, Running};

const ARN: &str =
    "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_endpoint_is_reported_while_retrying() {
    // A loopback port nobody listens on: every call is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ddbstream"));
    for var in [
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "RUST_LOG",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("AWS_ACCESS_KEY_ID", "AKIDWARNINGS")
        .env("AWS_SECRET_ACCESS_KEY", "secret")
        .args(["--endpoint-url", &format!("http://127.0.0.1:{port}")])
        .args(["--region", "us-east-1", "tail", "--stream-arn", ARN])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut running = Running::spawn(cmd);
    let lines = Lines::new(running.child.stderr.take().expect("stderr"));

    let mut warnings = Vec::new();
    while warnings.len() < 2 {
        let line = lines.next(Duration::from_secs(20)).await;
        assert!(
            line.starts_with("ddbstream: "),
            "every stderr line is the tool's: {line:?}"
        );
        if line.contains("WARN") {
            warnings.push(line);
        }
    }
    for line in &warnings {
        assert!(line.contains("DescribeStream failed; retrying"), "{line}");
        assert!(line.contains("Connection refused"), "{line}");
        assert!(line.contains("retry_in="), "{line}");
    }
    assert!(
        running.child.try_wait().expect("try_wait").is_none(),
        "an unreachable endpoint is retried, not fatal"
    );

    // Stoppable while it retries: SIGTERM ends it at once, cleanly.
    running.terminate();
    let status = running.wait(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    let rest = lines.until_end(Duration::from_secs(10)).await;
    assert!(
        rest.iter()
            .any(|l| l == "ddbstream: stopped before the stream was read"),
        "{rest:#?}"
    );
}
