//! How to test your own handler against the simulator, deterministically and fast.
//!
//! Under `tokio::time::pause()` the simulator's clock is tokio's, so backoffs, idle polls,
//! 15-minute iterator expiry and 24-hour trimming cost no real time. This example runs the same
//! checks you would put in a `#[tokio::test(start_paused = true)]`: a split, 20 % throttling, one
//! handler failure — and the handler still sees every change of every item, in order.
//!
//! Run: `cargo run --example test_your_handler`

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dynamodb_stream::sim::{FaultKind, FaultRule, Operation, Simulator};
use dynamodb_stream::{Batch, Consumer, Handler, HandlerError};

/// The handler under test: counts versions per item and refuses out-of-order updates.
#[derive(Clone, Default)]
struct VersionTracker {
    seen: Arc<Mutex<HashMap<String, u64>>>,
    fail_once: Arc<Mutex<bool>>,
}

#[derive(serde::Deserialize)]
struct Doc {
    version: u64,
}

impl Handler for VersionTracker {
    async fn handle(&mut self, batch: Batch) -> Result<(), HandlerError> {
        if std::mem::take(&mut *self.fail_once.lock().expect("lock")) {
            return Err(HandlerError::msg("a transient failure"));
        }
        let mut seen = self.seen.lock().expect("lock");
        for record in batch.records() {
            if let Some(doc) = record.new_image_as::<Doc>()? {
                let last = seen.entry(record.key_string()).or_insert(0);
                if doc.version <= *last {
                    // At-least-once: a redelivered change is skipped, an older one is a bug.
                    continue;
                }
                assert_eq!(doc.version, *last + 1, "versions must arrive in order");
                *last = doc.version;
            }
        }
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()?;
    rt.block_on(async {
        let sim = Simulator::builder().initial_shards(2).seed(7).build();
        sim.set_fault(Operation::GetRecords, FaultRule::with_probability(0.2, FaultKind::Throttled));
        let handler = VersionTracker { fail_once: Arc::new(Mutex::new(true)), ..Default::default() };
        let consumer = Consumer::builder(sim.clone(), sim.stream_arn()).handler(handler.clone()).spawn().await?;

        for version in 1..=20u64 {
            for item in 0..50 {
                let doc = serde_json::json!({ "pk": format!("doc-{item}"), "version": version });
                sim.put_item(serde_dynamo::to_item(doc)?)?;
            }
            if version == 10 {
                sim.split_shard(&sim.open_shards()[0])?;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        // Paused time: this "minute" passes instantly once everything is idle.
        for _ in 0..60 {
            if handler.seen.lock().expect("lock").values().all(|v| *v == 20) && handler.seen.lock().expect("lock").len() == 50 {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        consumer.shutdown().await?;
        let seen = handler.seen.lock().expect("lock");
        assert_eq!(seen.len(), 50);
        assert!(seen.values().all(|v| *v == 20), "every item reached version 20");
        println!(
            "50 items × 20 versions seen in order through a split, {} injected throttles and one handler failure",
            sim.stats().faults_injected
        );
        Ok(())
    })
}
