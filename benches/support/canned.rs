//! A canned DynamoDB Streams endpoint on loopback, for comparing stream consumers on equal
//! terms: the same pages, served as fast as the client asks, so the client (not the server, not
//! the network) is what is measured.
//!
//! It speaks the DynamoDB Streams JSON 1.0 protocol over HTTP/1.1 with keep-alive: a `POST` with
//! `X-Amz-Target: DynamoDBStreams_20120810.<Operation>` and an `application/x-amz-json-1.0`
//! body; signatures are not checked. Operations:
//!
//! - `DescribeStream`: one stream (`NEW_AND_OLD_IMAGES`, status `ENABLED`) with `shards` shards,
//!   all closed (each has an `EndingSequenceNumber`), no parents; `Limit` (default and maximum
//!   100) and `ExclusiveStartShardId` page through them; a `ShardFilter` (children of a shard)
//!   finds none.
//! - `GetShardIterator`: an iterator that encodes (shard, page index). `TRIM_HORIZON` and
//!   `LATEST` both point at page 0 (for `LATEST` the canned records are taken to arrive after
//!   the iterator was issued; the npm contender only asks for `LATEST`); `AT_/AFTER_SEQUENCE_NUMBER`
//!   point at the page holding that record (or the next page after a page's last record).
//! - `GetRecords`: page `p` of the shard: `records_per_page` records, with a `NextShardIterator`
//!   for page `p + 1`, except on the last page, which has none: the shard is closed and read to
//!   its end, so every run ends.
//!
//! Every page is serialized once, up front; a response is a few bytes of framing, the shared
//! page bytes and the next iterator. All shards serve the same page contents (sequence numbers
//! only need to grow within a shard). Records are `MODIFY` events of about 900 bytes of JSON
//! each (see [`record_json`]): keys `pk`/`sk` (S) and two images mixing S, N, BOOL, M, L and SS.

#![allow(dead_code)]

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The stream's ARN (any ARN-shaped string works: the consumer checks the shape).
pub const STREAM_ARN: &str =
    "arn:aws:dynamodb:us-east-1:000000000000:table/bench/stream/2024-01-01T00:00:00.000";
/// The region clients should use.
pub const REGION: &str = "us-east-1";
const TARGET_PREFIX: &str = "DynamoDBStreams_20120810.";
const SHARD_PREFIX: &str = "shardId-00000001700000000000-";
/// Real iterators are a few hundred characters; requests carry them, so ours are as long.
const ITERATOR_LEN: usize = 256;

/// What the endpoint serves.
#[derive(Debug, Clone, Copy)]
pub struct Spec {
    /// Shards in the stream.
    pub shards: usize,
    /// Pages per shard; then the shard ends.
    pub pages_per_shard: usize,
    /// Records per page (at most 1000, as the service).
    pub records_per_page: usize,
    /// Open shards: no `EndingSequenceNumber`, and every GetRecords past the last page answers
    /// an empty page with a next iterator (idle shards, for the scale bench).
    pub open: bool,
}

impl Spec {
    /// `shards` open shards without any record: every GetRecords is an empty page.
    pub fn idle(shards: usize) -> Self {
        Self {
            shards,
            pages_per_shard: 0,
            records_per_page: 1,
            open: true,
        }
    }

    /// Records a consumer reading every shard to its end receives.
    pub fn total_records(&self) -> u64 {
        (self.shards * self.pages_per_shard * self.records_per_page) as u64
    }
}

/// Calls served, by operation.
#[derive(Debug, Default)]
pub struct Stats {
    pub describe_stream: AtomicU64,
    pub get_shard_iterator: AtomicU64,
    pub get_records: AtomicU64,
    pub errors: AtomicU64,
    pub body_bytes: AtomicU64,
}

struct Shared {
    spec: Spec,
    /// The JSON array of each page's records, by page index.
    pages: Vec<Arc<[u8]>>,
    stats: Arc<Stats>,
}

/// A running endpoint; stops when dropped.
pub struct Endpoint {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The one stream's ARN.
    pub stream_arn: String,
    /// What it serves.
    pub spec: Spec,
    /// Calls served so far.
    pub stats: Arc<Stats>,
    /// Mean JSON size of one record, in bytes.
    pub record_bytes: usize,
    /// Size of one full GetRecords response body, in bytes.
    pub page_bytes: usize,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Endpoint {
    /// Serialize the pages and start serving on a free loopback port, on a thread (and tokio
    /// runtime) of its own.
    pub fn start(spec: Spec) -> Endpoint {
        assert!(spec.records_per_page > 0 && spec.records_per_page <= 1000);
        let pages: Vec<Arc<[u8]>> = (0..spec.pages_per_shard)
            .map(|p| {
                let records: Vec<Value> = (0..spec.records_per_page)
                    .map(|i| record_json(p * spec.records_per_page + i))
                    .collect();
                Arc::from(serde_json::to_vec(&records).expect("serialize a page"))
            })
            .collect();
        let record_bytes = pages.first().map_or(0, |p| p.len() / spec.records_per_page);
        let page_bytes = pages.first().map_or(0, |p| p.len() + ITERATOR_LEN + 40);
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            spec,
            pages,
            stats: stats.clone(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr: SocketAddr = listener.local_addr().expect("local address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("canned-endpoint".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("endpoint runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("tokio listener");
                    let accept = async {
                        loop {
                            let Ok((socket, _)) = listener.accept().await else {
                                continue;
                            };
                            let shared = shared.clone();
                            tokio::spawn(async move {
                                let _ = serve(shared, socket).await;
                            });
                        }
                    };
                    tokio::select! {
                        () = accept => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime ends every connection task.
            })
            .expect("spawn the endpoint thread");
        Endpoint {
            url: format!("http://{addr}"),
            stream_arn: STREAM_ARN.to_owned(),
            spec,
            stats,
            record_bytes,
            page_bytes,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `(DescribeStream, GetShardIterator, GetRecords, errors)` calls so far.
    pub fn calls(&self) -> (u64, u64, u64, u64) {
        let s = &self.stats;
        (
            s.describe_stream.load(Ordering::Relaxed),
            s.get_shard_iterator.load(Ordering::Relaxed),
            s.get_records.load(Ordering::Relaxed),
            s.errors.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The `n`-th record of a shard (0-based): a `MODIFY` with both images, about 900 bytes.
pub fn record_json(n: usize) -> Value {
    let pk = json!({ "S": format!("cust#{:06}", n % 100_000) });
    let sk = json!({ "S": format!("ord#{n:08}") });
    let image = |status: &str| {
        json!({
            "pk": pk,
            "sk": sk,
            "status": { "S": status },
            "amount": { "N": format!("{}.{:02}", n % 1000, n % 100) },
            "gift": { "BOOL": n.is_multiple_of(3) },
            "tags": { "SS": ["vip", format!("eu-{}", n % 5)] },
            "address": { "M": {
                "street": { "S": format!("{} Elm St", n % 999 + 1) },
                "zip": { "S": format!("{:05}", n % 99_999) },
            } },
            "lines": { "L": [
                { "M": { "sku": { "S": format!("sku-{:06}", n % 7919) }, "qty": { "N": "2" } } },
            ] },
        })
    };
    json!({
        "awsRegion": REGION,
        "dynamodb": {
            "ApproximateCreationDateTime": 1_700_000_000u64 + (n / 1000) as u64,
            "Keys": { "pk": pk, "sk": sk },
            "NewImage": image("SHIPPED"),
            "OldImage": image("PAID"),
            "SequenceNumber": sequence_number(n),
            "SizeBytes": 412,
            "StreamViewType": "NEW_AND_OLD_IMAGES",
        },
        "eventID": format!("{:032x}", (n as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
        "eventName": "MODIFY",
        "eventSource": "aws:dynamodb",
        "eventVersion": "1.1",
    })
}

/// The `n`-th record's sequence number: 21 digits, growing with `n`.
pub fn sequence_number(n: usize) -> String {
    format!("1{:020}", n + 1)
}

fn shard_id(k: usize) -> String {
    format!("{SHARD_PREFIX}{k:08}")
}

fn parse_shard(id: &str) -> Option<usize> {
    id.strip_prefix(SHARD_PREFIX)?.parse().ok()
}

fn iterator(k: usize, page: usize) -> String {
    let mut it = format!("{STREAM_ARN}|{k}|{page}|");
    while it.len() < ITERATOR_LEN {
        it.push('A');
    }
    it
}

fn parse_iterator(it: &str) -> Option<(usize, usize)> {
    let mut parts = it.strip_prefix(STREAM_ARN)?.split('|').skip(1);
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// What to send back: a status, the body's start, shared page bytes, the body's end.
struct Reply {
    status: u16,
    head: Vec<u8>,
    page: Option<Arc<[u8]>>,
    tail: Vec<u8>,
}

impl Reply {
    fn json(value: Value) -> Reply {
        Reply {
            status: 200,
            head: serde_json::to_vec(&value).expect("serialize"),
            page: None,
            tail: Vec::new(),
        }
    }

    fn error(status: u16, code: &str, message: impl Into<String>) -> Reply {
        let body = json!({
            "__type": format!("com.amazonaws.dynamodb.v20120810#{code}"),
            "message": message.into(),
        });
        Reply {
            status,
            ..Reply::json(body)
        }
    }

    fn len(&self) -> usize {
        self.head.len() + self.page.as_ref().map_or(0, |p| p.len()) + self.tail.len()
    }
}

impl Shared {
    fn respond(&self, target: &str, body: &[u8]) -> Reply {
        let request: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(e) => return Reply::error(400, "SerializationException", e.to_string()),
        };
        let text = |name: &str| request.get(name).and_then(Value::as_str);
        match target.strip_prefix(TARGET_PREFIX).unwrap_or(target) {
            "DescribeStream" => {
                self.stats.describe_stream.fetch_add(1, Ordering::Relaxed);
                if text("StreamArn") != Some(STREAM_ARN) {
                    return Reply::error(400, "ResourceNotFoundException", "no such stream");
                }
                let shards: Vec<Value> = if request.get("ShardFilter").is_some() {
                    Vec::new() // children of a shard: there are none
                } else {
                    let from = text("ExclusiveStartShardId")
                        .and_then(parse_shard)
                        .map_or(0, |k| k + 1);
                    let limit = request
                        .get("Limit")
                        .and_then(Value::as_u64)
                        .map_or(100, |l| l.clamp(1, 100) as usize);
                    (from..self.spec.shards.min(from + limit))
                        .map(|k| self.describe_shard(k))
                        .collect()
                };
                let last = shards
                    .last()
                    .and_then(|s| s["ShardId"].as_str())
                    .filter(|id| parse_shard(id).is_some_and(|k| k + 1 < self.spec.shards))
                    .map(str::to_owned);
                let mut description = json!({
                    "StreamArn": STREAM_ARN,
                    "StreamLabel": "2024-01-01T00:00:00.000",
                    "StreamStatus": "ENABLED",
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                    "TableName": "bench",
                    "CreationRequestDateTime": 1_700_000_000u64,
                    "KeySchema": [
                        { "AttributeName": "pk", "KeyType": "HASH" },
                        { "AttributeName": "sk", "KeyType": "RANGE" },
                    ],
                    "Shards": shards,
                });
                if let Some(last) = last {
                    description["LastEvaluatedShardId"] = Value::String(last);
                }
                Reply::json(json!({ "StreamDescription": description }))
            }
            "GetShardIterator" => {
                self.stats
                    .get_shard_iterator
                    .fetch_add(1, Ordering::Relaxed);
                let Some(k) = text("ShardId")
                    .and_then(parse_shard)
                    .filter(|&k| k < self.spec.shards)
                else {
                    return Reply::error(400, "ResourceNotFoundException", "no such shard");
                };
                let rpp = self.spec.records_per_page;
                // Sequence numbers are 1-based record positions after the leading 1.
                let position = || {
                    text("SequenceNumber")
                        .and_then(|s| s.get(1..))
                        .and_then(|s| s.parse::<usize>().ok())
                };
                let page = match text("ShardIteratorType") {
                    Some("TRIM_HORIZON") | Some("LATEST") => 0,
                    Some("AT_SEQUENCE_NUMBER") => match position() {
                        Some(n) => n.saturating_sub(1) / rpp,
                        None => return Reply::error(400, "ValidationException", "bad sequence"),
                    },
                    Some("AFTER_SEQUENCE_NUMBER") => match position() {
                        Some(n) => n / rpp,
                        None => return Reply::error(400, "ValidationException", "bad sequence"),
                    },
                    _ => return Reply::error(400, "ValidationException", "bad iterator type"),
                };
                Reply::json(json!({ "ShardIterator": iterator(k, page) }))
            }
            "GetRecords" => {
                self.stats.get_records.fetch_add(1, Ordering::Relaxed);
                let Some((k, page)) = text("ShardIterator").and_then(parse_iterator) else {
                    return Reply::error(400, "ValidationException", "invalid shard iterator");
                };
                if k >= self.spec.shards {
                    return Reply::error(400, "ResourceNotFoundException", "no such shard");
                }
                if page >= self.spec.pages_per_shard {
                    if self.spec.open {
                        // An open shard with nothing new: an empty page, the same position.
                        return Reply::json(
                            json!({ "Records": [], "NextShardIterator": iterator(k, page) }),
                        );
                    }
                    // Read to the end of a closed shard.
                    return Reply::json(json!({ "Records": [] }));
                }
                let tail = if page + 1 < self.spec.pages_per_shard {
                    format!(",\"NextShardIterator\":\"{}\"}}", iterator(k, page + 1))
                } else {
                    "}".to_owned()
                };
                Reply {
                    status: 200,
                    head: b"{\"Records\":".to_vec(),
                    page: Some(self.pages[page].clone()),
                    tail: tail.into_bytes(),
                }
            }
            other => Reply::error(
                400,
                "UnknownOperationException",
                format!("unknown operation {other:?}"),
            ),
        }
    }

    fn describe_shard(&self, k: usize) -> Value {
        let records = self.spec.pages_per_shard * self.spec.records_per_page;
        if self.spec.open {
            return json!({
                "ShardId": shard_id(k),
                "SequenceNumberRange": { "StartingSequenceNumber": sequence_number(0) },
            });
        }
        json!({
            "ShardId": shard_id(k),
            "SequenceNumberRange": {
                "StartingSequenceNumber": sequence_number(0),
                "EndingSequenceNumber": sequence_number(records.saturating_sub(1)),
            },
        })
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Serve one keep-alive connection until the client closes it.
async fn serve(shared: Arc<Shared>, mut socket: TcpStream) -> io::Result<()> {
    socket.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let mut scanned: usize = 0;
    loop {
        // The request head.
        let head_end = loop {
            if let Some(pos) = find(&buf[scanned.saturating_sub(3)..], b"\r\n\r\n") {
                break scanned.saturating_sub(3) + pos + 4;
            }
            scanned = buf.len();
            if buf.len() > 64 * 1024 {
                return Err(io::Error::other("request head too large"));
            }
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                return Ok(()); // closed between requests
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut content_length = 0usize;
        let mut target = String::new();
        let mut close = false;
        let mut expect_continue = false;
        for line in head.split("\r\n").skip(1) {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.parse().unwrap_or(0),
                "x-amz-target" => target = value.to_owned(),
                "connection" => close = value.eq_ignore_ascii_case("close"),
                "expect" => expect_continue = value.eq_ignore_ascii_case("100-continue"),
                _ => {}
            }
        }
        if expect_continue && buf.len() < head_end + content_length {
            socket.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        // The body.
        while buf.len() < head_end + content_length {
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let reply = shared.respond(&target, &buf[head_end..head_end + content_length]);
        if reply.status != 200 {
            shared.stats.errors.fetch_add(1, Ordering::Relaxed);
        }
        shared
            .stats
            .body_bytes
            .fetch_add(reply.len() as u64, Ordering::Relaxed);
        let reason = if reply.status == 200 {
            "OK"
        } else {
            "Bad Request"
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: application/x-amz-json-1.0\r\n\
             Content-Length: {}\r\nx-amzn-RequestId: canned\r\n{}\r\n",
            reply.status,
            reply.len(),
            if close { "Connection: close\r\n" } else { "" },
        )
        .into_bytes();
        out.extend_from_slice(&reply.head);
        socket.write_all(&out).await?;
        if let Some(page) = &reply.page {
            socket.write_all(page).await?;
        }
        if !reply.tail.is_empty() {
            socket.write_all(&reply.tail).await?;
        }
        buf.drain(..head_end + content_length);
        scanned = 0;
        if close {
            return Ok(());
        }
    }
}
