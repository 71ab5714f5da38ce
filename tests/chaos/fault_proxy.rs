//! A loopback HTTP/1.1 fault proxy between the AWS SDK and DynamoDB Local.
//!
//! The SDK is pointed at [`FaultProxy::url`]; every request is read whole, matched by its
//! `X-Amz-Target` header against the current [`Rule`]s, and then either forwarded to the
//! upstream server (one fresh upstream connection per request, `Connection: close`, the answer
//! re-framed with a `Content-Length` so the client connection stays alive) or answered with a
//! fault: an AWS JSON error (throttling, 5xx, expired iterator, trimmed data), a delay, a hang,
//! a connection reset before or after forwarding, or a truncated body.
//!
//! Rules change at run time through the handle ([`FaultProxy::set_rule`], [`FaultProxy::remove`],
//! [`FaultProxy::clear`]). Every request is recorded ([`Seen`]: operation, time since the proxy
//! started, the SDK's invocation id and attempt number, the fault injected, the status returned),
//! so tests can assert request rates.
//!
//! Bounded: the proxy runs on its own thread and single-threaded runtime; every loop ends on a
//! deadline, on end of input or on shutdown; dropping the handle stops the runtime (cancelling
//! every connection task, hung ones included) and joins the thread.

#![allow(dead_code)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// `X-Amz-Target` of GetRecords.
pub const GET_RECORDS: &str = "DynamoDBStreams_20120810.GetRecords";
/// `X-Amz-Target` of GetShardIterator.
pub const GET_SHARD_ITERATOR: &str = "DynamoDBStreams_20120810.GetShardIterator";
/// `X-Amz-Target` of DescribeStream.
pub const DESCRIBE_STREAM: &str = "DynamoDBStreams_20120810.DescribeStream";
/// Every DynamoDB (table) operation.
pub const DYNAMODB_ANY: &str = "DynamoDB_20120810.*";

/// Longest a request head may be.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request or response body handled.
const MAX_BODY: usize = 32 * 1024 * 1024;
/// An idle client connection is closed after this long.
const IDLE: Duration = Duration::from_secs(120);
/// A hung request is given up after this long even if the client never closes.
const HANG_MAX: Duration = Duration::from_secs(600);
/// Connecting to and hearing back from the upstream server.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// How many requests are recorded (older ones are kept, newer ones counted only).
const MAX_SEEN: usize = 2_000_000;

/// What the proxy does to a matching request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// 400 `LimitExceededException` (DynamoDB Streams' throttling error).
    LimitExceeded,
    /// 400 `ProvisionedThroughputExceededException`.
    ProvisionedThroughputExceeded,
    /// 400 `ThrottlingException`.
    Throttling,
    /// 500 `InternalServerError`.
    InternalServerError,
    /// 503 without an error code (a load balancer's "Service Unavailable").
    ServiceUnavailable,
    /// 400 `ExpiredIteratorException`.
    ExpiredIterator,
    /// 400 `TrimmedDataAccessException`.
    TrimmedData,
    /// 400 `ResourceNotFoundException` (a stream gone for good, as 24 h after its table was
    /// deleted).
    ResourceNotFound,
    /// Wait this long, then forward (nothing is forwarded if the client left meanwhile).
    Delay(Duration),
    /// Never answer; the connection is held until the client closes it.
    Hang,
    /// Reset the connection (RST) without forwarding.
    ResetBeforeForward,
    /// Forward, let the server answer, then reset the connection without answering: the
    /// outcome is ambiguous to the client.
    ResetAfterForward,
    /// Forward, then send the head (with the full `Content-Length`) and half of the body, and
    /// close.
    TruncateBody,
}

impl Action {
    /// A short name, as recorded in [`Seen::fault`].
    pub fn name(&self) -> &'static str {
        match self {
            Action::LimitExceeded => "LimitExceededException",
            Action::ProvisionedThroughputExceeded => "ProvisionedThroughputExceededException",
            Action::Throttling => "ThrottlingException",
            Action::InternalServerError => "500",
            Action::ServiceUnavailable => "503",
            Action::ExpiredIterator => "ExpiredIteratorException",
            Action::TrimmedData => "TrimmedDataAccessException",
            Action::ResourceNotFound => "ResourceNotFoundException",
            Action::Delay(_) => "delay",
            Action::Hang => "hang",
            Action::ResetBeforeForward => "reset-before",
            Action::ResetAfterForward => "reset-after",
            Action::TruncateBody => "truncate",
        }
    }

    /// The canned error answer, for the error actions: (status, reason, AWS error type).
    fn error(&self) -> Option<(u16, &'static str, Option<&'static str>)> {
        Some(match self {
            Action::LimitExceeded => (400, "Bad Request", Some("LimitExceededException")),
            Action::ProvisionedThroughputExceeded => (
                400,
                "Bad Request",
                Some("ProvisionedThroughputExceededException"),
            ),
            Action::Throttling => (400, "Bad Request", Some("ThrottlingException")),
            Action::InternalServerError => {
                (500, "Internal Server Error", Some("InternalServerError"))
            }
            Action::ServiceUnavailable => (503, "Service Unavailable", None),
            Action::ExpiredIterator => (400, "Bad Request", Some("ExpiredIteratorException")),
            Action::TrimmedData => (400, "Bad Request", Some("TrimmedDataAccessException")),
            Action::ResourceNotFound => (400, "Bad Request", Some("ResourceNotFoundException")),
            _ => return None,
        })
    }
}

/// A fault rule: which requests (by `X-Amz-Target`), what to do, how often.
#[derive(Debug, Clone)]
pub struct Rule {
    /// An exact `X-Amz-Target`, or a prefix ending in `*` (e.g. [`DYNAMODB_ANY`]).
    pub target: String,
    /// Actions with their probabilities; one roll per request picks at most one (the
    /// probabilities add up to at most 1; the rest passes).
    pub actions: Vec<(f64, Action)>,
    /// Fire at most this many times, then the rule is spent.
    pub count: Option<u64>,
    /// Let this many matching requests through before the rule may fire.
    pub skip: u64,
}

impl Rule {
    /// Always `action` on `target`.
    pub fn new(target: &str, action: Action) -> Self {
        Self::mix(target, vec![(1.0, action)])
    }

    /// One of `actions`, by probability, on `target`.
    pub fn mix(target: &str, actions: Vec<(f64, Action)>) -> Self {
        let total: f64 = actions.iter().map(|(p, _)| p).sum();
        assert!(
            (0.0..=1.0 + 1e-9).contains(&total),
            "probabilities add up to {total}"
        );
        Self {
            target: target.to_owned(),
            actions,
            count: None,
            skip: 0,
        }
    }

    /// Fire with probability `p` (scales every action's probability).
    pub fn probability(mut self, p: f64) -> Self {
        for (q, _) in &mut self.actions {
            *q *= p;
        }
        self
    }

    /// Fire at most `n` times.
    pub fn count(mut self, n: u64) -> Self {
        self.count = Some(n);
        self
    }

    /// Let the first `n` matching requests through.
    pub fn skip(mut self, n: u64) -> Self {
        self.skip = n;
        self
    }

    fn matches(&self, target: &str) -> bool {
        match self.target.strip_suffix('*') {
            Some(prefix) => target.starts_with(prefix),
            None => target == self.target,
        }
    }
}

/// One request the proxy saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Its `X-Amz-Target` (empty if it had none).
    pub target: String,
    /// When it arrived, since the proxy started.
    pub at: Duration,
    /// The SDK's `amz-sdk-invocation-id`: the same for every attempt of one call.
    pub invocation: Option<String>,
    /// The attempt number from `amz-sdk-request` (`attempt=N; max=M`).
    pub attempt: Option<u32>,
    /// The attempt limit from `amz-sdk-request`.
    pub max_attempts: Option<u32>,
    /// The fault injected ([`Action::name`]), if any.
    pub fault: Option<&'static str>,
    /// The status the client was sent, once known (none for resets and hangs).
    pub status: Option<u16>,
}

struct RuleState {
    name: String,
    rule: Rule,
    skipped: u64,
    fired: u64,
}

struct Shared {
    upstream: String,
    started: Instant,
    rules: Mutex<(Vec<RuleState>, fastrand::Rng)>,
    seen: Mutex<Vec<Seen>>,
    dropped: std::sync::atomic::AtomicUsize,
}

impl Shared {
    fn decide(&self, target: &str) -> Option<Action> {
        let mut guard = self.rules.lock().unwrap();
        let (rules, rng) = &mut *guard;
        for r in rules.iter_mut() {
            if !r.rule.matches(target) {
                continue;
            }
            if r.skipped < r.rule.skip {
                r.skipped += 1;
                continue;
            }
            if r.rule.count.is_some_and(|n| r.fired >= n) {
                continue;
            }
            let roll = rng.f64();
            let mut acc = 0.0;
            for (p, action) in &r.rule.actions {
                acc += p;
                if roll < acc {
                    r.fired += 1;
                    return Some(action.clone());
                }
            }
        }
        None
    }

    fn record(&self, seen: Seen) -> Option<usize> {
        let mut all = self.seen.lock().unwrap();
        if all.len() >= MAX_SEEN {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return None;
        }
        all.push(seen);
        Some(all.len() - 1)
    }

    fn set_status(&self, index: Option<usize>, status: u16) {
        if let Some(i) = index {
            if let Some(s) = self.seen.lock().unwrap().get_mut(i) {
                s.status = Some(status);
            }
        }
    }
}

/// The running proxy; dropping it stops it.
pub struct FaultProxy {
    url: String,
    seed: u64,
    shared: Arc<Shared>,
    shutdown: Option<watch::Sender<bool>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("url", &self.url)
            .field("seed", &self.seed)
            .finish()
    }
}

impl FaultProxy {
    /// A proxy on a free loopback port forwarding to `upstream` (`http://HOST:PORT`), its random
    /// choices seeded with `seed`.
    pub fn start(upstream: &str, seed: u64) -> Self {
        let upstream = upstream
            .strip_prefix("http://")
            .unwrap_or(upstream)
            .trim_end_matches('/')
            .to_owned();
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port for the proxy");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("the proxy's address")
        );
        let shared = Arc::new(Shared {
            upstream,
            started: Instant::now(),
            rules: Mutex::new((Vec::new(), fastrand::Rng::with_seed(seed))),
            seen: Mutex::new(Vec::new()),
            dropped: Default::default(),
        });
        let (tx, rx) = watch::channel(false);
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the proxy's runtime");
                runtime.block_on(accept_loop(listener, thread_shared, rx));
                // Dropping the runtime cancels every connection task still running.
                drop(runtime);
            })
            .expect("start the proxy thread");
        Self {
            url,
            seed,
            shared,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The seed of its random choices.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Time since the proxy started (the clock of [`Seen::at`]).
    pub fn now(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// Add the rule `name`, or replace it (keeping its place and resetting its counters). Rules
    /// are tried in the order they were first added; the first that fires decides.
    pub fn set_rule(&self, name: &str, rule: Rule) {
        let mut guard = self.shared.rules.lock().unwrap();
        let state = RuleState {
            name: name.to_owned(),
            rule,
            skipped: 0,
            fired: 0,
        };
        match guard.0.iter_mut().find(|r| r.name == name) {
            Some(r) => *r = state,
            None => guard.0.push(state),
        }
    }

    /// Remove the rule `name`, if present.
    pub fn remove(&self, name: &str) {
        self.shared
            .rules
            .lock()
            .unwrap()
            .0
            .retain(|r| r.name != name);
    }

    /// Remove every rule: everything is forwarded from now on.
    pub fn clear(&self) {
        self.shared.rules.lock().unwrap().0.clear();
    }

    /// How often the rule `name` fired so far.
    pub fn fired(&self, name: &str) -> u64 {
        self.shared
            .rules
            .lock()
            .unwrap()
            .0
            .iter()
            .find(|r| r.name == name)
            .map_or(0, |r| r.fired)
    }

    /// Every request seen so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    /// Requests seen for `target` (exact, or a prefix ending in `*`).
    pub fn count(&self, target: &str) -> usize {
        let probe = Rule::new(target, Action::Hang);
        self.shared
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| probe.matches(&s.target))
            .count()
    }

    /// Requests beyond [`MAX_SEEN`] that were not recorded.
    pub fn unrecorded(&self) -> usize {
        self.shared
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(true);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Arrival times of the first attempt of every call of `target` within `[from, to)` (the
/// requests a caller made, not the SDK's retries of them).
pub fn call_starts(seen: &[Seen], target: &str, from: Duration, to: Duration) -> Vec<Duration> {
    let mut invocations = std::collections::HashSet::new();
    seen.iter()
        .filter(|s| s.target == target && s.at >= from && s.at < to)
        .filter(|s| match &s.invocation {
            Some(id) => invocations.insert(id.clone()),
            None => s.attempt.is_none_or(|a| a <= 1),
        })
        .map(|s| s.at)
        .collect()
}

/// Arrival times of every request (attempts included) of `target` within `[from, to)`.
pub fn attempts(seen: &[Seen], target: &str, from: Duration, to: Duration) -> Vec<Duration> {
    seen.iter()
        .filter(|s| s.target == target && s.at >= from && s.at < to)
        .map(|s| s.at)
        .collect()
}

/// The most of `times` (sorted ascending) inside any window of length `window`.
pub fn max_in_window(times: &[Duration], window: Duration) -> usize {
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] >= window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

// ---------------------------------------------------------------------------------------------
// The server side
// ---------------------------------------------------------------------------------------------

async fn accept_loop(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fault proxy: cannot listen: {e}");
            return;
        }
    };
    loop {
        if *shutdown.borrow() {
            return;
        }
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                tokio::spawn(serve(stream, shared.clone(), shutdown.clone()));
            }
            _ = shutdown.changed() => return,
        }
    }
}

/// A request as read from the client.
struct Request {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A response from the upstream server.
struct Response {
    status: u16,
    status_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Serve one client connection: requests one after the other until it closes, idles, is
/// reset by a fault, or the proxy stops.
async fn serve(mut client: TcpStream, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let request = tokio::select! {
            r = tokio::time::timeout(IDLE, read_request(&mut client, &mut buf)) => r,
            _ = shutdown.changed() => return,
        };
        let request = match request {
            Ok(Ok(Some(r))) => r,
            // Idle too long, closed, or unreadable: end the connection.
            _ => return,
        };
        let target = request.header("x-amz-target").unwrap_or("").to_owned();
        let action = shared.decide(&target);
        let (attempt, max_attempts) = parse_attempts(request.header("amz-sdk-request"));
        let index = shared.record(Seen {
            target: target.clone(),
            at: shared.started.elapsed(),
            invocation: request.header("amz-sdk-invocation-id").map(str::to_owned),
            attempt,
            max_attempts,
            fault: action.as_ref().map(Action::name),
            status: None,
        });
        let Some(action) = action else {
            let response = forward(&shared.upstream, &request).await;
            shared.set_status(index, response.status);
            if write_response(&mut client, &response).await.is_err() {
                return;
            }
            continue;
        };
        if let Some((status, reason, error_type)) = action.error() {
            let response = error_response(status, reason, error_type, &target);
            shared.set_status(index, status);
            if write_response(&mut client, &response).await.is_err() {
                return;
            }
            continue;
        }
        match action {
            Action::Delay(d) => {
                if !wait_while_connected(&mut client, &mut buf, d, &mut shutdown).await {
                    return;
                }
                let response = forward(&shared.upstream, &request).await;
                shared.set_status(index, response.status);
                if write_response(&mut client, &response).await.is_err() {
                    return;
                }
            }
            Action::Hang => {
                wait_while_connected(&mut client, &mut buf, HANG_MAX, &mut shutdown).await;
                return;
            }
            Action::ResetBeforeForward => {
                reset(client);
                return;
            }
            Action::ResetAfterForward => {
                let response = forward(&shared.upstream, &request).await;
                shared.set_status(index, response.status);
                reset(client);
                return;
            }
            Action::TruncateBody => {
                let response = forward(&shared.upstream, &request).await;
                shared.set_status(index, response.status);
                let mut bytes = head_bytes(&response, response.body.len());
                let half = response.body.len() / 2;
                bytes.extend_from_slice(&response.body[..half]);
                let _ = client.write_all(&bytes).await;
                let _ = client.flush().await;
                let _ = client.shutdown().await;
                return;
            }
            _ => unreachable!("error actions are answered above"),
        }
    }
}

/// `attempt=N; max=M` (possibly with a `ttl=...` pair first).
fn parse_attempts(value: Option<&str>) -> (Option<u32>, Option<u32>) {
    let mut attempt = None;
    let mut max = None;
    for pair in value.unwrap_or("").split(';') {
        let pair = pair.trim();
        if let Some(v) = pair.strip_prefix("attempt=") {
            attempt = v.parse().ok();
        } else if let Some(v) = pair.strip_prefix("max=") {
            max = v.parse().ok();
        }
    }
    (attempt, max)
}

/// Close with a TCP reset.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Wait `d` while watching the client; false when it closed (or the proxy stops) first.
async fn wait_while_connected(
    client: &mut TcpStream,
    buf: &mut Vec<u8>,
    d: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let deadline = tokio::time::sleep(d);
    tokio::pin!(deadline);
    let mut chunk = [0u8; 4096];
    loop {
        tokio::select! {
            _ = &mut deadline => return true,
            _ = shutdown.changed() => return false,
            r = client.read(&mut chunk) => match r {
                Ok(0) | Err(_) => return false,
                // A client does not send while waiting for an answer; keep it anyway.
                Ok(n) => {
                    if buf.len() + n > MAX_HEAD + MAX_BODY {
                        return false;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
            },
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Read from `stream` into `buf` until `buf` holds at least `want` bytes; false at end of input.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>, want: usize) -> std::io::Result<bool> {
    let mut chunk = [0u8; 16 * 1024];
    while buf.len() < want {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(false);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(true)
}

/// Parse `Name: value` lines.
fn parse_headers(lines: &str) -> Vec<(String, String)> {
    lines
        .split("\r\n")
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            Some((n.trim().to_owned(), v.trim().to_owned()))
        })
        .collect()
}

/// Read one request (head and body); `None` at a clean end of input.
async fn read_request(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Request>> {
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too long"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let (request_line, rest) = head.split_once("\r\n").unwrap_or((head.as_str(), ""));
    let request_line = request_line.to_owned();
    let headers = parse_headers(rest);
    buf.drain(..head_end + 4);
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let chunked =
        get("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    let body = if chunked {
        read_chunked(stream, buf).await?
    } else {
        let len: usize = get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if len > MAX_BODY {
            return Err(std::io::Error::other("request body too large"));
        }
        if !fill(stream, buf, len).await? {
            return Err(std::io::Error::other("end of input inside a request body"));
        }
        buf.drain(..len).collect()
    };
    Ok(Some(Request {
        request_line,
        headers,
        body,
    }))
}

/// Decode a chunked body from `stream` (with `buf` holding what was read already).
async fn read_chunked(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = loop {
            if let Some(i) = find(buf, b"\r\n") {
                break i;
            }
            if buf.len() > MAX_HEAD {
                return Err(std::io::Error::other("chunk size line too long"));
            }
            let want = buf.len() + 1;
            if !fill(stream, buf, want).await? {
                return Err(std::io::Error::other("end of input inside a chunked body"));
            }
        };
        let size_text = String::from_utf8_lossy(&buf[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        buf.drain(..line_end + 2);
        if size == 0 {
            // Trailers, if any, end with an empty line.
            loop {
                let end = loop {
                    if let Some(i) = find(buf, b"\r\n") {
                        break i;
                    }
                    let want = buf.len() + 1;
                    if !fill(stream, buf, want).await? {
                        return Ok(body);
                    }
                };
                buf.drain(..end + 2);
                if end == 0 {
                    return Ok(body);
                }
            }
        }
        if body.len() + size > MAX_BODY {
            return Err(std::io::Error::other("chunked body too large"));
        }
        if !fill(stream, buf, size + 2).await? {
            return Err(std::io::Error::other("end of input inside a chunk"));
        }
        body.extend_from_slice(&buf[..size]);
        buf.drain(..size + 2);
    }
}

/// Hop-by-hop and framing headers, replaced by the proxy.
fn is_framing(name: &str) -> bool {
    [
        "connection",
        "keep-alive",
        "transfer-encoding",
        "content-length",
        "proxy-connection",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Forward `request` on a fresh upstream connection and read the whole answer. Upstream
/// trouble is answered as 502 (never expected on loopback; it shows in [`Seen::status`]).
async fn forward(upstream: &str, request: &Request) -> Response {
    match tokio::time::timeout(UPSTREAM_TIMEOUT, try_forward(upstream, request)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => bad_gateway(&format!("upstream failed: {e}")),
        Err(_) => bad_gateway("upstream timed out"),
    }
}

fn bad_gateway(message: &str) -> Response {
    let body = format!("{{\"message\":\"fault proxy: {message}\"}}").into_bytes();
    Response {
        status: 502,
        status_line: "HTTP/1.1 502 Bad Gateway".into(),
        headers: vec![("Content-Type".into(), "application/x-amz-json-1.0".into())],
        body,
    }
}

async fn try_forward(upstream: &str, request: &Request) -> std::io::Result<Response> {
    let mut server = TcpStream::connect(upstream).await?;
    let _ = server.set_nodelay(true);
    let mut out = Vec::with_capacity(request.body.len() + 1024);
    out.extend_from_slice(request.request_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (n, v) in &request.headers {
        if !is_framing(n) {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
    }
    out.extend_from_slice(
        format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            request.body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(&request.body);
    server.write_all(&out).await?;
    server.flush().await?;
    // `Connection: close`: the answer ends at end of input.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    loop {
        let n = server.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        if raw.len() + n > MAX_HEAD + MAX_BODY {
            return Err(std::io::Error::other("upstream answer too large"));
        }
        raw.extend_from_slice(&chunk[..n]);
    }
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let head_end =
        find(raw, b"\r\n\r\n").ok_or_else(|| std::io::Error::other("no response head"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let (status_line, rest) = head.split_once("\r\n").unwrap_or((head.as_str(), ""));
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {status_line:?}")))?;
    let headers = parse_headers(rest);
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut rest = &raw[head_end + 4..];
    let body = if get("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    {
        let mut body = Vec::new();
        loop {
            let line_end =
                find(rest, b"\r\n").ok_or_else(|| std::io::Error::other("truncated chunk"))?;
            let size_text = String::from_utf8_lossy(&rest[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                break body;
            }
            if rest.len() < size {
                return Err(std::io::Error::other("truncated chunk"));
            }
            body.extend_from_slice(&rest[..size]);
            rest = &rest[(size + 2).min(rest.len())..];
        }
    } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        if rest.len() < len {
            return Err(std::io::Error::other("truncated upstream body"));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        status_line: status_line.to_owned(),
        headers,
        body,
    })
}

/// An AWS JSON 1.0 error answer.
fn error_response(status: u16, reason: &str, error_type: Option<&str>, target: &str) -> Response {
    let body = match error_type {
        Some(t) => format!(
            "{{\"__type\":\"com.amazonaws.dynamodb.v20120810#{t}\",\"message\":\"fault proxy: {t} injected into {target}\"}}"
        ),
        None => format!("{{\"message\":\"fault proxy: {status} injected into {target}\"}}"),
    };
    let mut headers = vec![(
        "Content-Type".to_owned(),
        "application/x-amz-json-1.0".to_owned(),
    )];
    headers.push((
        "x-amzn-RequestId".to_owned(),
        format!("fault-proxy-{}", fastrand::u64(..)),
    ));
    Response {
        status,
        status_line: format!("HTTP/1.1 {status} {reason}"),
        headers,
        body: body.into_bytes(),
    }
}

/// The status line and headers of `response`, re-framed with `Content-Length: len`.
fn head_bytes(response: &Response, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(response.status_line.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (n, v) in &response.headers {
        if !is_framing(n) {
            out.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
        }
    }
    out.extend_from_slice(format!("Content-Length: {len}\r\n\r\n").as_bytes());
    out
}

async fn write_response(client: &mut TcpStream, response: &Response) -> std::io::Result<()> {
    let mut bytes = head_bytes(response, response.body.len());
    bytes.extend_from_slice(&response.body);
    client.write_all(&bytes).await?;
    client.flush().await
}
