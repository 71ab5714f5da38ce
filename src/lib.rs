//! A supervised, at-least-once consumer for Amazon DynamoDB Streams.
//!
//! Implement a [`Handler`] (or pass a closure) and get every change of a table, in order per
//! shard, parents before children, across shard splits, throttling, iterator expiry and
//! restarts. Positions are checkpointed as sequence numbers only after your handler
//! acknowledged them. Gaps (trimmed data, vanished shards) are reported, never skipped quietly.
//!
//! ```
//! use dynamodb_stream::{sim::Simulator, Batch, Consumer, HandlerError};
//! use std::sync::{Arc, Mutex};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An in-memory stream to try things out; in production pass an
//! // `aws_sdk_dynamodbstreams::Client` and a real stream ARN.
//! let sim = Simulator::new();
//! let seen = Arc::new(Mutex::new(Vec::new()));
//! let sink = seen.clone();
//! let mut consumer = Consumer::builder(sim.clone(), sim.stream_arn())
//!     .handler_fn(move |batch: Batch| {
//!         let sink = sink.clone();
//!         async move {
//!             for record in batch.records() {
//!                 sink.lock().unwrap().push(record.key_string());
//!             }
//!             Ok::<(), HandlerError>(())
//!         }
//!     })
//!     .spawn()
//!     .await?;
//!
//! let item = serde_dynamo::to_item(serde_json::json!({ "pk": "order-1", "total": 42 }))?;
//! sim.put_item(item)?;
//! while seen.lock().unwrap().is_empty() {
//!     tokio::time::sleep(std::time::Duration::from_millis(10)).await;
//! }
//! consumer.shutdown().await?;
//! assert_eq!(seen.lock().unwrap().len(), 1);
//! # Ok(()) }
//! ```
//!
//! Guarantees are spelled out in `docs/semantics.md`; the actor design in
//! `docs/architecture.md`.
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rustdoc::broken_intra_doc_links
)]
#![forbid(unsafe_code)]

mod actors;
#[cfg(feature = "aws")]
mod aws_error;
mod backoff;
#[cfg(all(feature = "aws", target_arch = "wasm32", target_os = "unknown"))]
pub mod browser;
mod catch_up;
pub mod checkpoint;
mod config;
mod consumer;
pub mod decode;
pub mod delivery;
pub mod error;
pub mod events;
pub mod filter;
mod handler;
pub mod json;
pub mod lease;
mod position;
pub mod readiness;
pub mod record;
#[cfg(all(feature = "aws", feature = "sqlite"))]
pub mod replicate;
mod rt;
pub mod sim;
pub mod source;
pub mod status;
pub mod telemetry;

pub use config::{ConsumerConfig, GapPolicy, LeaseConfig, RestartPolicy};
pub use consumer::{Consumer, ConsumerBuilder, RunReport, EVENT_CAPACITY};
pub use error::{DecodeError, Error, HandlerError, Result, RuntimeError};
pub use events::ConsumerEvent;
pub use handler::{handler_fn, Batch, Handler, HandlerFn, ShardInfo};
pub use position::StartPosition;
pub use readiness::{NotReady, Probe, Readiness, ReadinessCriteria};
pub use record::{InvalidSequenceNumber, RecordKind, SequenceNumber, StreamRecord};
#[cfg(feature = "aws")]
pub use source::aws::recommended_timeouts;

/// The README's examples, compiled as doctests so they stay true.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
