//! Tracing: discovery, polls, handler calls and checkpoints are spans carrying `stream`, `shard`
//! and `sequence_number` fields; item contents never reach the logs, even at TRACE level.
//!
//! Its own test binary: tracing caches callsite interest process-wide, so a subscriber set for
//! one test races tests running without one in the same process.

#[path = "../sim/common.rs"]
mod common;
// The simulator suite's helpers; this binary uses a few of them.
#[path = "../support/events.rs"]
#[allow(dead_code)]
mod events;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynamodb_stream::checkpoint::MemoryCheckpointStore;
use dynamodb_stream::record::{AttributeValue, Item};
use dynamodb_stream::sim::Simulator;
use tracing_subscriber::fmt::format::FmtSpan;

use common::{periodic_check, start, Log};

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn spans_carry_stream_shard_and_sequence_number_and_no_item_contents() {
    let out = Buffer::default();
    let writer = out.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let sim = Simulator::builder().initial_shards(1).seed(31).build();
    let secret = "s3cr3t-card-4111";
    let mut m = std::collections::HashMap::new();
    m.insert("pk".to_owned(), AttributeValue::S("user-1".into()));
    m.insert("card".to_owned(), AttributeValue::S(secret.into()));
    sim.put_item(Item::from(m)).expect("put");
    let log = Log::new();
    let store = MemoryCheckpointStore::new();
    let (consumer, _) = start(&sim, &log, &store, |c| {
        c.checkpoint_interval = Duration::from_millis(100)
    })
    .await;
    periodic_check(|| log.len() == 1, Duration::from_secs(30), "the record").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    consumer.shutdown().await.expect("shutdown");

    let text = String::from_utf8(out.0.lock().unwrap().clone()).expect("utf8");
    let shard = sim.open_shards()[0].clone();
    let seq = log.snapshot()[0].sequence_number.to_string();
    for span in ["discover", "poll", "handle", "checkpoint"] {
        let line = text
            .lines()
            .find(|l| l.contains(&format!("{span}{{")) && l.contains(&sim.stream_arn()))
            .unwrap_or_else(|| panic!("no {span} span with the stream in:\n{text}"));
        if span == "poll" || span == "handle" {
            assert!(line.contains(&format!("shard={shard}")), "{line}");
        }
    }
    assert!(
        text.lines()
            .any(|l| l.contains("handle{") && l.contains(&format!("sequence_number={seq}"))),
        "the handle span names the batch's last sequence number:\n{text}"
    );
    assert!(!text.contains(secret), "item contents leaked into the logs");
}
