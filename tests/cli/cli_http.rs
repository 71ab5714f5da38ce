//! `ddbstream tail --http`: `/healthz`, `/readyz` and `/metrics` read over HTTP while tailing
//! DynamoDB Local. `/metrics` is parsed as Prometheus text and its records counter equals the
//! records printed; `/readyz` turns 503 naming the stalled shard while a dedicated DynamoDB
//! Local is paused with SIGSTOP, and 200 again after SIGCONT; a bad address or a port in use is
//! one sentence and exit code 1. `replicate --http` is ready once its replica is live.

use std::process::{Command, Stdio};
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::{
    assert_one_line_error, bare_ddbstream, ddbstream, item, put, run_within, wait_until, Lines,
    Running,
};
use crate::ddb_local::{clients, clients_of, create_table, dedicated, lineage, TestClients};

const WAIT: Duration = Duration::from_secs(60);

/// One HTTP answer.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

/// `GET path` over a plain HTTP/1.0 connection (the server closes it after the answer).
async fn get(addr: &str, path: &str) -> std::io::Result<Answer> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut raw))
        .await
        .map_err(|_| std::io::Error::other(format!("no answer to GET {path} within 10 s")))??;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {raw:?}")))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line in {raw:?}")))?;
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    Ok(Answer {
        status,
        content_type,
        body: body.to_owned(),
    })
}

/// `GET path`, panicking on a connection failure.
async fn must_get(addr: &str, path: &str) -> Answer {
    get(addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// `/readyz` as JSON, with its status.
async fn readyz(addr: &str) -> (u16, Value) {
    let a = must_get(addr, "/readyz").await;
    assert_eq!(a.content_type, "application/json", "{}", a.body);
    let json: Value = serde_json::from_str(&a.body)
        .unwrap_or_else(|e| panic!("/readyz is not JSON ({e}): {}", a.body));
    assert_eq!(json["ready"], Value::Bool(a.status == 200), "{json}");
    (a.status, json)
}

/// `ddbstream tail ... --http 127.0.0.1:0`, and the address it serves on (from its stderr).
async fn start_tail(c: &TestClients, extra: &[&str]) -> (Running, Lines, Lines, String) {
    let mut cmd = ddbstream(c);
    cmd.args(["tail", "--table", "orders", "--from", "trim-horizon"])
        .args(["--http", "127.0.0.1:0"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut running = Running::spawn(cmd);
    let out = Lines::new(running.child.stdout.take().expect("stdout"));
    let err = Lines::new(running.child.stderr.take().expect("stderr"));
    let addr = served_addr(&err).await;
    (running, out, err, addr)
}

/// The address from the line that says where the endpoints are served.
async fn served_addr(err: &Lines) -> String {
    let prefix = "ddbstream: serving /healthz /readyz /metrics on http://";
    let addr = loop {
        if let Some(addr) = err.next(WAIT).await.strip_prefix(prefix) {
            break addr.trim().to_owned();
        }
    };
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    assert_ne!(addr, "127.0.0.1:0", "the bound port is printed");
    addr
}

async fn wait_ready(addr: &str, what: &str) {
    wait_until(what, WAIT, || async { readyz(addr).await.0 == 200 }).await;
    let (_, json) = readyz(addr).await;
    assert_eq!(json["reasons"], serde_json::json!([]), "{json}");
}

/// The samples of one metric in a Prometheus text page, parsed by a real parser.
fn samples(text: &str, name: &str) -> Vec<prometheus_parse::Sample> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
        .unwrap_or_else(|e| panic!("/metrics is not Prometheus text ({e}):\n{text}"));
    scrape
        .samples
        .into_iter()
        .filter(|s| s.metric == name)
        .collect()
}

fn counter_total(samples: &[prometheus_parse::Sample]) -> f64 {
    samples
        .iter()
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{} is not a counter: {other:?}", s.metric),
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_serves_health_readiness_and_prometheus_metrics() {
    let c = clients("cli_http");
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let (mut tail, out, _err, addr) = start_tail(&c, &[]).await;

    let health = must_get(&addr, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    wait_ready(&addr, "/readyz 200 once the shard is read").await;

    const ITEMS: u32 = 7;
    for i in 0..ITEMS {
        put(&c, "orders", &item(i, 1)).await;
    }
    for _ in 0..ITEMS {
        let line = out.next(WAIT).await;
        let record: Value = serde_json::from_str(&line).expect("a JSON record");
        assert_eq!(record["eventName"], "INSERT", "{record}");
    }
    // Printed, then acknowledged: the counter catches up right after the handler returns.
    let delivered = "ddbstream_records_total";
    wait_until("records counter = items written", WAIT, || async {
        let text = must_get(&addr, "/metrics").await.body;
        counter_total(&samples(&text, delivered)) >= f64::from(ITEMS)
    })
    .await;
    let metrics = must_get(&addr, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .content_type
            .starts_with("text/plain; version=0.0.4"),
        "{}",
        metrics.content_type
    );
    assert_eq!(
        counter_total(&samples(&metrics.body, delivered)),
        f64::from(ITEMS),
        "{}",
        metrics.body
    );
    assert_eq!(
        counter_total(&samples(&metrics.body, "ddbstream_records_polled_total")),
        f64::from(ITEMS),
        "{}",
        metrics.body
    );
    // Gauges read from the status board: one shard owned, healthy.
    let owned = samples(&metrics.body, "ddbstream_shards_owned");
    assert!(
        owned
            .iter()
            .any(|s| matches!(s.value, prometheus_parse::Value::Gauge(v) if v == 1.0)),
        "{}",
        metrics.body
    );
    // Durations in seconds, with buckets for seconds (the SDK's default ones suit milliseconds).
    let polls = samples(&metrics.body, "ddbstream_get_records_duration_seconds");
    let buckets = polls
        .iter()
        .find_map(|s| match &s.value {
            prometheus_parse::Value::Histogram(b) => Some(b.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no GetRecords histogram:\n{}", metrics.body));
    assert!(buckets.iter().any(|b| b.less_than == 0.01), "{buckets:?}");
    assert!(
        metrics.body.contains(r#"service_name="ddbstream""#),
        "{}",
        metrics.body
    );
    assert_eq!(must_get(&addr, "/nothing").await.status, 404);
    wait_ready(&addr, "still ready after the writes").await;

    tail.terminate();
    assert!(tail.wait(WAIT).await.success());
    // The server ends with the command.
    assert!(
        get(&addr, "/healthz").await.is_err(),
        "still served after exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_is_ready_once_the_replica_is_live() {
    let c = clients("cli_http_replicate");
    create_table(&c, "orders", StreamViewType::NewImage).await;
    let initial: Vec<_> = (0..20).map(|id| item(id, 1)).collect();
    crate::common::put_many(&c, "orders", &initial).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("orders.sqlite");
    let mut cmd = ddbstream(&c);
    cmd.args([
        "replicate",
        "--table",
        "orders",
        "--http",
        "127.0.0.1:0",
        "--db",
    ])
    .arg(&db)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let mut running = Running::spawn(cmd);
    let err = Lines::new(running.child.stderr.take().expect("stderr"));
    let addr = served_addr(&err).await;
    // Until the replica is live the reason names the phase; then it is ready.
    let (status, json) = readyz(&addr).await;
    if status == 503 {
        let phase = json["reasons"][0]["phase"].as_str().unwrap_or_default();
        assert!(
            ["starting", "scanning", "catching_up"].contains(&phase),
            "{json}"
        );
    }
    wait_ready(&addr, "/readyz 200 once the replica is live").await;
    assert_eq!(must_get(&addr, "/healthz").await.status, 200);

    put(&c, "orders", &item(99, 1)).await;
    wait_until("the stream's change counted in /metrics", WAIT, || async {
        let text = must_get(&addr, "/metrics").await.body;
        counter_total(&samples(&text, "ddbstream_records_total")) >= 1.0
    })
    .await;
    running.terminate();
    assert!(running.wait(WAIT).await.success());
}

/// Resumes a stopped process when the test ends, however it ends.
struct Stopped(u32);

impl Stopped {
    fn new(pid: u32) -> Self {
        signal("-STOP", pid);
        Self(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(which: &str, pid: u32) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {which} {pid} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_naming_the_stalled_shard_while_dynamodb_is_paused() {
    // A server of its own: the shared one must never be paused under the other tests.
    let server = dedicated();
    let c = clients_of(&server, "cli_http_stall");
    let arn = create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    let shards = lineage(&c, &arn).await;
    let (mut tail, _out, _err, addr) = start_tail(&c, &["--stall-after", "2s"]).await;
    wait_ready(&addr, "/readyz 200 before the fault").await;

    let paused = Stopped::new(server.pid());
    let deadline = std::time::Instant::now() + WAIT;
    let stalled = loop {
        let (status, json) = readyz(&addr).await;
        let reason = json["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["reason"] == "shard_stalled")
            .cloned();
        match reason {
            Some(reason) if status == 503 => break Some(reason),
            _ if std::time::Instant::now() > deadline => break None,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    let reason = stalled.expect("/readyz 503 with a stalled shard within a minute");
    let shard = reason["shard_id"].as_str().expect("shard_id");
    assert!(
        shards.contains_key(shard),
        "{shard} is not one of {shards:?}"
    );
    assert!(
        reason["for_seconds"].as_f64().expect("for_seconds") > 2.0,
        "{reason}"
    );
    // Alive all along: a paused stream is not a reason to restart the process.
    assert_eq!(must_get(&addr, "/healthz").await.status, 200);

    drop(paused);
    wait_ready(&addr, "/readyz 200 again after SIGCONT").await;
    assert_eq!(must_get(&addr, "/healthz").await.status, 200);
    tail.terminate();
    assert!(tail.wait(WAIT).await.success());
}

#[tokio::test]
async fn a_bad_address_or_a_port_in_use_is_one_sentence() {
    let home = tempfile::tempdir().expect("tempdir");
    let vars = [
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "x"),
        ("AWS_SECRET_ACCESS_KEY", "y"),
    ];
    let mut cmd = bare_ddbstream(home.path(), &vars);
    cmd.args(["tail", "--table", "orders", "--http", "localhost"]);
    let out = run_within(cmd, WAIT).await;
    assert_one_line_error(&out, "--http \"localhost\" is not an address and port");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    for command in ["tail", "replicate"] {
        let mut cmd = bare_ddbstream(home.path(), &vars);
        cmd.args([command, "--table", "orders", "--http", &addr]);
        if command == "replicate" {
            let db = home.path().join("replica.sqlite");
            cmd.arg("--db").arg(db);
        }
        let out = run_within(cmd, WAIT).await;
        assert_one_line_error(
            &out,
            &format!("cannot serve --http on {addr} (Address already in use"),
        );
    }
}
