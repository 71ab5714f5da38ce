//! The browser page's consumer: reads a table's stream with [`dynamodb_stream::Consumer`] inside
//! the page and hands every change to JavaScript.
//!
//! Compiled only for `wasm32-unknown-unknown` (`scripts/wasm.sh`); on other targets this crate
//! is empty.
#![cfg(all(target_arch = "wasm32", target_os = "unknown"))]

use std::time::Duration;

use dynamodb_stream::browser::BrowserAws;
use std::sync::Arc;

use dynamodb_stream::checkpoint::{
    CheckpointStore, LocalStorageCheckpointStore, MemoryCheckpointStore,
};
use dynamodb_stream::record::item_to_json;
use dynamodb_stream::{
    Batch, Consumer, ConsumerBuilder, ConsumerEvent, HandlerError, RecordKind, StartPosition,
};
use tokio::sync::{broadcast, mpsc};
use wasm_bindgen::prelude::*;

/// A running consumer shown on the page. Dropping it (or [`Tail::stop`]) stops it.
#[wasm_bindgen]
pub struct Tail {
    consumer: Option<Consumer>,
    stream_arn: String,
}

#[wasm_bindgen]
impl Tail {
    /// The stream being read.
    #[wasm_bindgen(getter, js_name = streamArn)]
    pub fn stream_arn(&self) -> String {
        self.stream_arn.clone()
    }

    /// Graceful stop: drain, final checkpoint.
    pub async fn stop(&mut self) -> Result<(), JsError> {
        if let Some(consumer) = self.consumer.take() {
            consumer.shutdown().await.map_err(js_error)?;
        }
        Ok(())
    }
}

/// What `start` needs: where, which table, as whom, from where.
#[wasm_bindgen]
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    endpoint: String,
    region: String,
    table: String,
    access_key_id: String,
    secret_access_key: String,
    session_token: String,
    from_latest: bool,
    remember: bool,
}

#[wasm_bindgen]
impl StartOptions {
    /// Options for `table`; an empty `endpoint` means AWS itself.
    #[wasm_bindgen(constructor)]
    pub fn new(
        endpoint: String,
        region: String,
        table: String,
        access_key_id: String,
        secret_access_key: String,
    ) -> StartOptions {
        StartOptions {
            endpoint,
            region,
            table,
            access_key_id,
            secret_access_key,
            ..Default::default()
        }
    }

    /// Temporary credentials' session token.
    #[wasm_bindgen(setter, js_name = sessionToken)]
    pub fn set_session_token(&mut self, token: String) {
        self.session_token = token;
    }

    /// Keep the positions in this origin's `localStorage`, so a reload resumes where the page
    /// stopped (otherwise they are kept in memory and a reload starts over).
    #[wasm_bindgen(setter)]
    pub fn set_remember(&mut self, remember: bool) {
        self.remember = remember;
    }

    /// Start at `LATEST` instead of `TRIM_HORIZON` (the oldest record still in the stream).
    #[wasm_bindgen(setter, js_name = fromLatest)]
    pub fn set_from_latest(&mut self, latest: bool) {
        self.from_latest = latest;
    }
}

/// Resolves the table's stream, starts a consumer in the page and calls `on_change` with one
/// JSON string per record — `{"kind":"insert"|"modify"|"remove","ttl":bool,"keys":{..},
/// "newImage":{..}|null,"oldImage":{..}|null,"sequenceNumber":"..","shard":".."}` — in order
/// per shard, and `on_event` with the consumer's lifecycle events (shard started, ended,
/// restarted, quarantined, gaps) as text.
#[wasm_bindgen]
pub async fn start(
    options: StartOptions,
    on_change: js_sys::Function,
    on_event: js_sys::Function,
) -> Result<Tail, JsError> {
    let (builder, received) = consumer_for(&options).await?;
    let consumer = builder.spawn().await.map_err(js_error)?;
    forward(received, consumer.events(), on_change, on_event);
    Ok(Tail {
        stream_arn: consumer.stream_arn().to_owned(),
        consumer: Some(consumer),
    })
}

/// The npm package's `fetchStreamState()` in the page: reads every shard up to where the stream
/// stands now, calls `on_change` for each record as [`start`] does, takes the final checkpoint
/// and resolves with the number of records read. The next call continues after them (from
/// `localStorage` with `remember`, else from this page's memory).
#[wasm_bindgen(js_name = fetchNow)]
pub async fn fetch_now(
    options: StartOptions,
    on_change: js_sys::Function,
    on_event: js_sys::Function,
) -> Result<f64, JsError> {
    let (builder, mut received) = consumer_for(&options).await?;
    let events = builder.events();
    let (_, no_changes) = mpsc::unbounded_channel();
    forward(no_changes, events, on_change.clone(), on_event);
    // Changes are shown here, not from a task of their own, so every one is on the page by the
    // time the promise resolves.
    let show = |line: String| {
        let _ = on_change.call1(&JsValue::NULL, &JsValue::from_str(&line));
    };
    let mut run = std::pin::pin!(builder.run_once());
    let report = loop {
        tokio::select! {
            report = &mut run => break report.map_err(js_error)?,
            Some(line) = received.recv() => show(line),
        }
    };
    while let Ok(line) = received.try_recv() {
        show(line);
    }
    // Counts stay far below 2^53: exact as a JavaScript number.
    Ok(report.total_records() as f64)
}

thread_local! {
    /// Positions kept in this page's memory (without `remember`), shared by its fetches.
    static PAGE_CHECKPOINTS: MemoryCheckpointStore = MemoryCheckpointStore::new();
}

/// A consumer of the table named in `options` whose handler sends each record's JSON line to
/// the returned receiver.
async fn consumer_for(
    options: &StartOptions,
) -> Result<(ConsumerBuilder, mpsc::UnboundedReceiver<String>), JsError> {
    let mut aws = BrowserAws::new(
        options.region.clone(),
        options.access_key_id.clone(),
        options.secret_access_key.clone(),
    );
    if !options.endpoint.is_empty() {
        aws = aws.endpoint(options.endpoint.clone());
    }
    if !options.session_token.is_empty() {
        aws = aws.session_token(options.session_token.clone());
    }
    let checkpoints: Arc<dyn CheckpointStore> = if options.remember {
        Arc::new(LocalStorageCheckpointStore::default())
    } else {
        Arc::new(PAGE_CHECKPOINTS.with(Clone::clone))
    };
    let start = if options.from_latest {
        StartPosition::Latest
    } else {
        StartPosition::TrimHorizon
    };

    // The handler runs in the consumer's (Send) tasks; JavaScript functions are not Send, so
    // changes cross over a channel to a local task that calls them.
    let (changes, received) = mpsc::unbounded_channel::<String>();
    let builder = Consumer::for_table(&aws.dynamodb_client(), aws.streams_client(), &options.table)
        .await
        .map_err(js_error)?
        .checkpoints(checkpoints)
        .start_from(start)
        .configure(|c| {
            // A page wants to see a change soon after it happens.
            c.idle_poll_interval = Duration::from_millis(250);
        })
        .handler_fn(move |batch: Batch| {
            let changes = changes.clone();
            async move {
                for line in batch_json(&batch) {
                    changes
                        .send(line)
                        .map_err(|_| HandlerError::msg("the page is gone"))?;
                }
                Ok::<(), HandlerError>(())
            }
        });
    Ok((builder, received))
}

/// Hand records and events to the page's functions, from local tasks (they are not `Send`).
fn forward(
    mut received: mpsc::UnboundedReceiver<String>,
    mut events: broadcast::Receiver<ConsumerEvent>,
    on_change: js_sys::Function,
    on_event: js_sys::Function,
) {
    wasm_bindgen_futures::spawn_local(async move {
        while let Some(line) = received.recv().await {
            let _ = on_change.call1(&JsValue::NULL, &JsValue::from_str(&line));
        }
    });
    wasm_bindgen_futures::spawn_local(async move {
        loop {
            match events.recv().await {
                Ok(event) => {
                    let text = describe(&event);
                    let _ = on_event.call1(&JsValue::NULL, &JsValue::from_str(&text));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let text = format!("{n} consumer events skipped (the page was busy)");
                    let _ = on_event.call1(&JsValue::NULL, &JsValue::from_str(&text));
                }
                Err(broadcast::error::RecvError::Closed) => break,
            }
        }
    });
}

fn js_error(e: dynamodb_stream::Error) -> JsError {
    JsError::new(&e.to_string())
}

fn describe(event: &ConsumerEvent) -> String {
    format!("{event:?}")
}

/// One JSON object per record of `batch`.
fn batch_json(batch: &Batch) -> Vec<String> {
    batch
        .records()
        .iter()
        .map(|record| {
            let (kind, ttl) = match record.kind() {
                RecordKind::Insert => ("insert", false),
                RecordKind::Modify => ("modify", false),
                RecordKind::Remove { ttl } => ("remove", *ttl),
                RecordKind::Unknown(name) => (name.as_str(), false),
                _ => ("unknown", false),
            };
            serde_json::json!({
                "kind": kind,
                "ttl": ttl,
                "keys": item_to_json(record.keys()),
                "newImage": record.new_image().map(item_to_json),
                "oldImage": record.old_image().map(item_to_json),
                "sequenceNumber": record.sequence_number().as_str(),
                "shard": batch.shard().shard_id,
            })
            .to_string()
        })
        .collect()
}
