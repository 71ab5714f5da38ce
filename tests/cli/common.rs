//! Helpers shared by the replicator and CLI tests.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::{AttributeValue as Sdk, PutRequest, WriteRequest};
use dynamodb_stream::record::{item_key_string, AttributeValue, Item};
use dynamodb_stream::replicate::{ScanPage, ScanRequest, TableInfo, TableSource};
use dynamodb_stream::sim::{Simulator, WrittenRecord};
use dynamodb_stream::source::BoxFuture;
use dynamodb_stream::{RecordKind, SequenceNumber};

use crate::ddb_local::{env_for_cli, TestClients};

// ----- items -----

/// `{pk: "item-<id>", v: version, tags: [..], big: 38 digits}`: several attribute types, and a
/// number no float holds.
pub fn item(id: u32, version: u64) -> Item {
    let mut m = HashMap::new();
    m.insert("pk".to_owned(), AttributeValue::S(format!("item-{id:05}")));
    m.insert("v".to_owned(), AttributeValue::N(version.to_string()));
    m.insert(
        "big".to_owned(),
        AttributeValue::N(format!(
            "9876543210987654321098765432109876{:04}",
            version % 10_000
        )),
    );
    m.insert(
        "tags".to_owned(),
        AttributeValue::Ss(vec![format!("t{}", version % 3), "x".to_owned()]),
    );
    if version.is_multiple_of(2) {
        let mut nested = HashMap::new();
        nested.insert("even".to_owned(), AttributeValue::Bool(true));
        nested.insert(
            "raw".to_owned(),
            AttributeValue::B(vec![0, 1, (version % 251) as u8]),
        );
        m.insert("meta".to_owned(), AttributeValue::M(nested));
    }
    Item::from(m)
}

/// The key of [`item`].
pub fn keys(id: u32) -> Item {
    let mut m = HashMap::new();
    m.insert("pk".to_owned(), AttributeValue::S(format!("item-{id:05}")));
    Item::from(m)
}

/// Items keyed by their key string (the replica's `_key`), for item-for-item comparison.
pub fn by_key(items: impl IntoIterator<Item = Item>) -> BTreeMap<String, Item> {
    items
        .into_iter()
        .map(|item| {
            let mut k = Item::default();
            if let Some(pk) = item.get("pk") {
                k.insert("pk".to_owned(), pk.clone());
            }
            (item_key_string(&k), item)
        })
        .collect()
}

/// The table as it was right after the record `upto` (inclusive), replayed from every record
/// the simulator wrote.
pub fn state_at(written: &[WrittenRecord], upto: &SequenceNumber) -> BTreeMap<String, Item> {
    let mut state = BTreeMap::new();
    for w in written {
        if w.record.sequence_number() > upto {
            break;
        }
        let key = item_key_string(w.record.keys());
        match (w.record.kind(), w.record.new_image()) {
            (RecordKind::Remove { .. }, _) => {
                state.remove(&key);
            }
            (_, Some(image)) => {
                state.insert(key, image.clone());
            }
            _ => {}
        }
    }
    state
}

// ----- waiting -----

/// Poll `check` until it returns true; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ----- the replica file, read directly -----

/// Every item of a replica file, by key, read through a plain read-only SQLite connection.
pub fn read_replica(path: &Path) -> BTreeMap<String, Item> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open replica");
    read_items(&conn)
}

fn read_items(conn: &rusqlite::Connection) -> BTreeMap<String, Item> {
    let mut stmt = conn
        .prepare("SELECT _key, _item FROM items ORDER BY _key")
        .expect("items table");
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .expect("query items");
    rows.map(|r| {
        let (k, json) = r.expect("row");
        (k, serde_json::from_str(&json).expect("item JSON"))
    })
    .collect()
}

/// Every shard's stored checkpoint: shard id → (state, sequence number).
pub type StoredCheckpoints = BTreeMap<String, (String, Option<String>)>;

/// One consistent snapshot of a replica: every shard's stored checkpoint and every item, read
/// in one transaction.
pub fn replica_snapshot(
    conn: &mut rusqlite::Connection,
) -> (StoredCheckpoints, BTreeMap<String, Item>) {
    let tx = conn.transaction().expect("read transaction");
    let checkpoints = {
        let mut stmt = tx
            .prepare("SELECT shard_id, state, sequence_number FROM checkpoints")
            .expect("checkpoints table");
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    (r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?),
                ))
            })
            .expect("query checkpoints");
        rows.map(|r| r.expect("row")).collect()
    };
    let items = read_items(&tx);
    tx.commit().expect("end read transaction");
    (checkpoints, items)
}

// ----- a table source that counts its scan calls -----

/// The simulator as a table, counting Scan pages (to tell a resumed scan from a rescan).
#[derive(Clone)]
pub struct CountingTable {
    pub sim: Simulator,
    pub pages: Arc<AtomicUsize>,
}

impl CountingTable {
    pub fn new(sim: &Simulator) -> Self {
        Self {
            sim: sim.clone(),
            pages: Arc::new(AtomicUsize::new(0)),
        }
    }

    pub fn pages(&self) -> usize {
        self.pages.load(Ordering::SeqCst)
    }
}

impl TableSource for CountingTable {
    fn table_info(&self, table_name: &str) -> BoxFuture<'_, dynamodb_stream::Result<TableInfo>> {
        self.sim.table_info(table_name)
    }

    fn scan_segment(
        &self,
        request: ScanRequest,
    ) -> BoxFuture<'_, dynamodb_stream::Result<ScanPage>> {
        self.pages.fetch_add(1, Ordering::SeqCst);
        self.sim.scan_segment(request)
    }
}

// ----- DynamoDB Local -----

/// The `ddbstream` binary, set up for `c`'s namespace on DynamoDB Local.
/// `tail` of the tests' `orders` table from its trim horizon, once (add options after it).
pub const TAIL_ORDERS_ONCE: [&str; 6] = [
    "tail",
    "--table",
    "orders",
    "--from",
    "trim-horizon",
    "--once",
];

pub fn ddbstream(c: &TestClients) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ddbstream"));
    // Only the test's own settings: no profile or credentials of the machine.
    for var in ["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"] {
        cmd.env_remove(var);
    }
    cmd.envs(env_for_cli(c));
    cmd
}

/// Run `ddbstream args...` to its end (off the async threads).
pub async fn run_cli(c: &TestClients, args: &[&str]) -> Output {
    let mut cmd = ddbstream(c);
    cmd.args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("run ddbstream"))
        .await
        .expect("join")
}

/// Stderr of a finished run, for assertion messages.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The JSON lines a `tail --once` run printed, checked to be a clean, successful once-run.
pub fn once_printed(out: &Output) -> Vec<serde_json::Value> {
    let log = stderr(out);
    assert!(
        out.status.success(),
        "exit {:?}; stderr:\n{log}",
        out.status
    );
    assert!(log.contains("ddbstream: caught up"), "{log}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Asserts a failed run: exit code 1 and exactly one stderr line, `ddbstream: ...`, that
/// contains `expected`.
pub fn assert_one_line_error(out: &Output, expected: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(1), "exit code; stderr:\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one stderr line expected, got:\n{err}");
    assert!(lines[0].starts_with("ddbstream: "), "{err}");
    assert!(
        lines[0].contains(expected),
        "{:?} lacks {expected:?}",
        lines[0]
    );
}

/// `Item` → SDK attribute map.
pub fn to_sdk(item: &Item) -> HashMap<String, Sdk> {
    item.iter()
        .map(|(k, v)| (k.clone(), attribute_to_sdk(v)))
        .collect()
}

fn attribute_to_sdk(value: &AttributeValue) -> Sdk {
    use aws_sdk_dynamodb::primitives::Blob;
    match value {
        AttributeValue::S(s) => Sdk::S(s.clone()),
        AttributeValue::N(n) => Sdk::N(n.clone()),
        AttributeValue::B(b) => Sdk::B(Blob::new(b.clone())),
        AttributeValue::Ss(s) => Sdk::Ss(s.clone()),
        AttributeValue::Ns(n) => Sdk::Ns(n.clone()),
        AttributeValue::Bs(b) => Sdk::Bs(b.iter().map(|b| Blob::new(b.clone())).collect()),
        AttributeValue::M(m) => Sdk::M(
            m.iter()
                .map(|(k, v)| (k.clone(), attribute_to_sdk(v)))
                .collect(),
        ),
        AttributeValue::L(l) => Sdk::L(l.iter().map(attribute_to_sdk).collect()),
        AttributeValue::Null(b) => Sdk::Null(*b),
        AttributeValue::Bool(b) => Sdk::Bool(*b),
    }
}

/// SDK attribute map → `Item`.
pub fn from_sdk(map: HashMap<String, Sdk>) -> Item {
    Item::from(
        map.into_iter()
            .map(|(k, v)| (k, attribute_from_sdk(v)))
            .collect::<HashMap<_, _>>(),
    )
}

fn attribute_from_sdk(value: Sdk) -> AttributeValue {
    match value {
        Sdk::S(s) => AttributeValue::S(s),
        Sdk::N(n) => AttributeValue::N(n),
        Sdk::B(b) => AttributeValue::B(b.into_inner()),
        Sdk::Ss(s) => AttributeValue::Ss(s),
        Sdk::Ns(n) => AttributeValue::Ns(n),
        Sdk::Bs(b) => AttributeValue::Bs(b.into_iter().map(|b| b.into_inner()).collect()),
        Sdk::M(m) => AttributeValue::M(
            m.into_iter()
                .map(|(k, v)| (k, attribute_from_sdk(v)))
                .collect(),
        ),
        Sdk::L(l) => AttributeValue::L(l.into_iter().map(attribute_from_sdk).collect()),
        Sdk::Null(b) => AttributeValue::Null(b),
        Sdk::Bool(b) => AttributeValue::Bool(b),
        other => panic!("unexpected attribute {other:?}"),
    }
}

pub async fn put(c: &TestClients, table: &str, item: &Item) {
    c.dynamodb
        .put_item()
        .table_name(table)
        .set_item(Some(to_sdk(item)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("PutItem: {}", crate::ddb_local::sdk_error(&e)));
}

pub async fn delete(c: &TestClients, table: &str, keys: &Item) {
    c.dynamodb
        .delete_item()
        .table_name(table)
        .set_key(Some(to_sdk(keys)))
        .send()
        .await
        .unwrap_or_else(|e| panic!("DeleteItem: {}", crate::ddb_local::sdk_error(&e)));
}

/// Write many items, 25 per BatchWriteItem.
pub async fn put_many(c: &TestClients, table: &str, items: &[Item]) {
    for chunk in items.chunks(25) {
        let mut requests: Vec<WriteRequest> = chunk
            .iter()
            .map(|i| {
                WriteRequest::builder()
                    .put_request(
                        PutRequest::builder()
                            .set_item(Some(to_sdk(i)))
                            .build()
                            .expect("put request"),
                    )
                    .build()
            })
            .collect();
        while !requests.is_empty() {
            let out = c
                .dynamodb
                .batch_write_item()
                .request_items(table, requests)
                .send()
                .await
                .unwrap_or_else(|e| panic!("BatchWriteItem: {}", crate::ddb_local::sdk_error(&e)));
            requests = out
                .unprocessed_items
                .and_then(|mut m| m.remove(table))
                .unwrap_or_default();
        }
    }
}

/// Every item of the table (consistent reads), by key.
pub async fn scan_table(c: &TestClients, table: &str) -> BTreeMap<String, Item> {
    let mut out = Vec::new();
    let mut start = None;
    loop {
        let page = c
            .dynamodb
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap_or_else(|e| panic!("Scan: {}", crate::ddb_local::sdk_error(&e)));
        out.extend(page.items.unwrap_or_default().into_iter().map(from_sdk));
        start = page.last_evaluated_key.filter(|k| !k.is_empty());
        if start.is_none() {
            return by_key(out);
        }
    }
}

/// Compare two replicas item for item, naming the first difference.
pub fn assert_same_items(
    actual: &BTreeMap<String, Item>,
    expected: &BTreeMap<String, Item>,
    what: &str,
) {
    for (k, v) in expected {
        match actual.get(k) {
            None => panic!(
                "{what}: {k} missing (expected {v:?}); {} vs {} items",
                actual.len(),
                expected.len()
            ),
            Some(a) if a != v => panic!("{what}: {k} differs:\n  got      {a:?}\n  expected {v:?}"),
            _ => {}
        }
    }
    for k in actual.keys() {
        assert!(expected.contains_key(k), "{what}: {k} should not be there");
    }
}

// ----- running processes -----

/// A child process that is killed if the test ends (or panics) before it exits.
pub struct Running {
    pub child: std::process::Child,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Self {
        cmd.stdin(std::process::Stdio::null());
        Self {
            child: cmd.spawn().expect("start ddbstream"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send SIGTERM, as `kill` does.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// SIGKILL, no chance to clean up.
    pub fn kill_hard(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Wait for the exit; panics after `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "ddbstream did not exit within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whatever is left on stderr (after the exit).
    pub fn stderr_text(&mut self) -> String {
        use std::io::Read;
        let mut text = String::new();
        if let Some(mut err) = self.child.stderr.take() {
            let _ = err.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Lines of a child's output, read by a thread so a full pipe never blocks the child.
pub struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
}

impl Lines {
    pub fn new(pipe: impl std::io::Read + Send + 'static) -> Self {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { rx }
    }

    /// The next line; panics after `timeout` (or at end of output).
    pub async fn next(&self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            match self.rx.try_recv() {
                Ok(line) => return line,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    panic!("the output ended while a line was expected")
                }
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    assert!(Instant::now() < deadline, "no line within {timeout:?}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Every line up to the end of the output (the process exited); panics after `timeout`.
    pub async fn until_end(&self, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            match self.rx.try_recv() {
                Ok(line) => lines.push(line),
                Err(std::sync::mpsc::TryRecvError::Disconnected) => return lines,
                Err(std::sync::mpsc::TryRecvError::Empty) => {
                    assert!(
                        Instant::now() < deadline,
                        "output still open after {timeout:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    }

    /// Every line that arrived so far.
    pub fn drain(&self) -> Vec<String> {
        self.rx.try_iter().collect()
    }
}

// ----- runs outside any test namespace: set-up errors -----

/// `ddbstream` with nothing of this machine's AWS set-up: no credentials, no profile files
/// (`HOME` is `home`), no instance metadata, no region unless given. Only `vars` are set.
pub fn bare_ddbstream(home: &Path, vars: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ddbstream"));
    cmd.env_clear()
        .env("HOME", home)
        .env("AWS_EC2_METADATA_DISABLED", "true");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd
}

/// Run `cmd` to its end, killing it (and failing) if it takes longer than `bound`: a command
/// that must give up must do so in bounded time.
pub async fn run_within(mut cmd: Command, bound: Duration) -> Output {
    use std::process::Stdio;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("start ddbstream");
    let pid = child.id();
    let waited = tokio::task::spawn_blocking(move || child.wait_with_output());
    match tokio::time::timeout(bound, waited).await {
        Ok(joined) => joined.expect("join").expect("wait for ddbstream"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("ddbstream did not end within {bound:?}")
        }
    }
}

/// A loopback port nothing listens on: connections are refused.
pub fn refused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A loopback endpoint that accepts connections and never answers, until dropped.
pub struct SilentEndpoint {
    pub port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl SilentEndpoint {
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => held.push(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Self { port, stop }
    }
}

impl Drop for SilentEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A loopback endpoint that answers every request with one DynamoDB error (HTTP 400 and a JSON
/// body with `__type` = `code`), until dropped: for answers DynamoDB Local never gives (access
/// denied).
pub struct ErrorEndpoint {
    pub port: u16,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl ErrorEndpoint {
    pub fn start(code: &'static str, message: &'static str) -> Self {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let body = format!(r#"{{"__type":"{code}","message":"{message}"}}"#);
            while !flag.load(Ordering::SeqCst) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                let _ = conn.set_nonblocking(false);
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                // Read the request head and its body (Content-Length), then answer and close.
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    request.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                let response = format!(
                    "HTTP/1.1 400 Bad Request\r\nContent-Type: application/x-amz-json-1.0\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(response.as_bytes());
            }
        });
        Self { port, stop }
    }
}

impl Drop for ErrorEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}
