//! `ddbstream tail --otlp-endpoint`: the consumer's metrics and spans pushed over OTLP/HTTP
//! (protobuf) to a fake collector in the test, which decodes each body with the OTLP protobuf
//! definitions. A `--once` run's last export carries every record delivered, under
//! `service.name` ddbstream, and its spans name the shard they polled;
//! a collector that is down costs warnings, never a record or the exit code; a URL that cannot
//! be used is one sentence and exit code 1; `replicate` exports the same way.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_dynamodb::types::StreamViewType;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;

use crate::common::{
    assert_one_line_error, ddbstream, item, once_printed, put, refused_port, run_within, stderr,
    Lines, Running, TAIL_ORDERS_ONCE,
};
use crate::ddb_local::{clients, create_table, TestClients};

const WAIT: Duration = Duration::from_secs(120);

/// What the fake collector was sent.
#[derive(Default)]
struct Received {
    requests: Vec<ExportMetricsServiceRequest>,
    traces: Vec<ExportTraceServiceRequest>,
    /// Bodies it could not take, described.
    refused: Vec<String>,
}

impl Received {
    /// The last export that carries the records counter, every body having been taken. Counts
    /// are cumulative: it holds them all.
    fn last_export(&self) -> &ExportMetricsServiceRequest {
        assert_eq!(self.refused, Vec::<String>::new());
        self.requests
            .iter()
            .rev()
            .find(|r| sum_of(r, "ddbstream.records").is_some())
            .unwrap_or_else(|| {
                panic!(
                    "no export with ddbstream.records in {} requests",
                    self.requests.len()
                )
            })
    }
}

/// A loopback OTLP/HTTP collector that takes `POST /v1/metrics` with protobuf bodies.
struct Collector {
    url: String,
    received: Arc<Mutex<Received>>,
    server: tokio::task::JoinHandle<()>,
}

impl Collector {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the collector");
        let addr = listener.local_addr().expect("the collector's address");
        let received = Arc::new(Mutex::new(Received::default()));
        let app = Router::new()
            .route("/v1/metrics", post(receive))
            .route("/v1/traces", post(receive_traces))
            .with_state(received.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .await
                .expect("the collector serves");
        });
        Self {
            url: format!("http://{addr}"),
            received,
            server,
        }
    }

    fn received(&self) -> std::sync::MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What a collector answers: an empty Export…ServiceResponse is full success.
type Answer = (StatusCode, [(header::HeaderName, &'static str); 1], Vec<u8>);

async fn receive(
    State(received): State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let mut received = received.lock().unwrap_or_else(|p| p.into_inner());
    let status = match decode::<ExportMetricsServiceRequest>(&headers, body) {
        Ok(request) => {
            received.requests.push(request);
            StatusCode::OK
        }
        Err(why) => {
            received.refused.push(why);
            StatusCode::BAD_REQUEST
        }
    };
    answer(status)
}

async fn receive_traces(
    State(received): State<Arc<Mutex<Received>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let mut received = received.lock().unwrap_or_else(|p| p.into_inner());
    let status = match decode::<ExportTraceServiceRequest>(&headers, body) {
        Ok(request) => {
            received.traces.push(request);
            StatusCode::OK
        }
        Err(why) => {
            received.refused.push(why);
            StatusCode::BAD_REQUEST
        }
    };
    answer(status)
}

/// An OTLP protobuf body, or why not.
fn decode<M: Message + Default>(headers: &HeaderMap, body: Bytes) -> Result<M, String> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type != "application/x-protobuf" {
        return Err(format!("content type {content_type:?}"));
    }
    M::decode(body).map_err(|e| format!("not OTLP protobuf: {e}"))
}

fn answer(status: StatusCode) -> Answer {
    (
        status,
        [(header::CONTENT_TYPE, "application/x-protobuf")],
        Vec::new(),
    )
}

/// The data points of a sum named `name` in one export, added up (over shards, kinds...).
fn sum_of(request: &ExportMetricsServiceRequest, name: &str) -> Option<f64> {
    let mut found = None;
    let metrics = request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .filter(|m| m.name == name);
    for m in metrics {
        let Some(metric::Data::Sum(sum)) = &m.data else {
            panic!("{name} is not a sum: {m:?}");
        };
        let total: f64 = sum
            .data_points
            .iter()
            .map(|p| match p.value {
                Some(number_data_point::Value::AsInt(v)) => v as f64,
                Some(number_data_point::Value::AsDouble(v)) => v,
                None => 0.0,
            })
            .sum();
        *found.get_or_insert(0.0) += total;
    }
    found
}

/// The `service.name` of every resource in an export.
fn service_names(request: &ExportMetricsServiceRequest) -> Vec<String> {
    names_in(
        request
            .resource_metrics
            .iter()
            .filter_map(|r| r.resource.as_ref()),
    )
}

fn names_in<'a>(
    resources: impl Iterator<Item = &'a opentelemetry_proto::tonic::resource::v1::Resource>,
) -> Vec<String> {
    resources
        .flat_map(|r| &r.attributes)
        .filter(|kv| kv.key == "service.name")
        .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
            AnyValue::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

async fn table_with_items(name: &str, n: u32) -> TestClients {
    let c = clients(name);
    create_table(&c, "orders", StreamViewType::NewAndOldImages).await;
    for i in 0..n {
        put(&c, "orders", &item(i, 1)).await;
    }
    c
}

/// `ddbstream tail --once` from the stream's start, with `extra` arguments.
fn tail_once(c: &TestClients, extra: &[&str]) -> std::process::Command {
    let mut cmd = ddbstream(c);
    cmd.args(TAIL_ORDERS_ONCE).args(extra);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_once_run_exports_every_delivered_record_to_the_collector() {
    const ITEMS: u32 = 9;
    let c = table_with_items("cli_otlp", ITEMS).await;
    let collector = Collector::start().await;
    let out = run_within(tail_once(&c, &["--otlp-endpoint", &collector.url]), WAIT).await;
    let printed = once_printed(&out);
    assert_eq!(printed.len(), ITEMS as usize, "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains(&format!(
            "exporting metrics over OTLP to {}/v1/metrics",
            collector.url
        )),
        "{log}"
    );
    assert!(!log.contains("cannot export"), "{log}");

    // The default interval is a minute: this short run's counts come from the export made when
    // it ended.
    let received = collector.received();
    let last = received.last_export();
    assert_eq!(sum_of(last, "ddbstream.records"), Some(f64::from(ITEMS)));
    assert_eq!(
        sum_of(last, "ddbstream.records.polled"),
        Some(f64::from(ITEMS))
    );
    assert_eq!(service_names(last), vec!["ddbstream".to_owned()]);

    // The library's spans: each GetRecords poll names its stream and shard.
    let spans: Vec<_> = received
        .traces
        .iter()
        .flat_map(|t| &t.resource_spans)
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .collect();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"discover"), "{names:?}");
    let poll = spans
        .iter()
        .find(|s| s.name == "poll")
        .unwrap_or_else(|| panic!("no poll span in {names:?}"));
    let attributes: Vec<&str> = poll.attributes.iter().map(|kv| kv.key.as_str()).collect();
    for key in ["stream", "shard", "sequence_number"] {
        assert!(attributes.contains(&key), "{key} not in {attributes:?}");
    }
    let traced_by = names_in(
        received
            .traces
            .iter()
            .flat_map(|t| &t.resource_spans)
            .filter_map(|r| r.resource.as_ref()),
    );
    assert!(
        traced_by.iter().all(|n| n == "ddbstream") && !traced_by.is_empty(),
        "{traced_by:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_interval_and_service_name_come_from_the_standard_variables() {
    const ITEMS: u32 = 3;
    let c = table_with_items("cli_otlp_env", ITEMS).await;
    let collector = Collector::start().await;
    let mut cmd = tail_once(&c, &[]);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector.url)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "100")
        .env("OTEL_SERVICE_NAME", "orders-tail");
    // --http too: one provider, both readers.
    cmd.args(["--http", "127.0.0.1:0"]);
    let out = run_within(cmd, WAIT).await;
    assert_eq!(once_printed(&out).len(), ITEMS as usize);
    let received = collector.received();
    let last = received.last_export();
    assert_eq!(sum_of(last, "ddbstream.records"), Some(f64::from(ITEMS)));
    assert_eq!(service_names(last), vec!["orders-tail".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_stopped_by_sigterm_exports_its_last_counts() {
    const ITEMS: u32 = 4;
    let c = table_with_items("cli_otlp_sigterm", ITEMS).await;
    let collector = Collector::start().await;
    let mut cmd = ddbstream(&c);
    cmd.args(["tail", "--table", "orders", "--from", "trim-horizon"])
        .args(["--otlp-endpoint", &collector.url])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut tail = Running::spawn(cmd);
    let out = Lines::new(tail.child.stdout.take().expect("stdout"));
    for _ in 0..ITEMS {
        out.next(WAIT).await;
    }
    // The interval is the default minute: nothing was exported yet.
    assert_eq!(collector.received().requests.len(), 0);
    tail.terminate();
    assert!(tail.wait(WAIT).await.success());
    let received = collector.received();
    let last = received.last_export();
    assert_eq!(sum_of(last, "ddbstream.records"), Some(f64::from(ITEMS)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_a_warning_not_a_record() {
    const ITEMS: u32 = 5;
    let c = table_with_items("cli_otlp_down", ITEMS).await;
    let down = format!("http://127.0.0.1:{}", refused_port());
    let mut cmd = tail_once(&c, &["--otlp-endpoint", &down]);
    // Failing every 100 ms during the run: still a warning or two, not one per export.
    cmd.env("OTEL_METRIC_EXPORT_INTERVAL", "100");
    let started = std::time::Instant::now();
    let out = run_within(cmd, WAIT).await;
    let printed = once_printed(&out);
    assert_eq!(printed.len(), ITEMS as usize, "{}", stderr(&out));
    let log = stderr(&out);
    for what in ["metrics", "traces"] {
        let warnings = log
            .lines()
            .filter(|l| l.starts_with(&format!("ddbstream: cannot export {what} to ")))
            .count();
        assert!(warnings <= 2, "{warnings} {what} warnings:\n{log}");
    }
    assert!(
        log.contains("ddbstream: cannot export metrics to "),
        "{log}"
    );
    assert!(log.contains("still consuming"), "{log}");
    // Refused at once, never retried: the end is not held up.
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_url_that_cannot_be_used_is_one_sentence() {
    let c = clients("cli_otlp_bad_url");
    let out = run_within(tail_once(&c, &["--otlp-endpoint", "localhost:4318"]), WAIT).await;
    assert_one_line_error(
        &out,
        "--otlp-endpoint \"localhost:4318\" is not an http:// or https:// URL",
    );
    assert!(out.stdout.is_empty());

    let mut cmd = tail_once(&c, &[]);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
    let out = run_within(cmd, WAIT).await;
    assert_one_line_error(
        &out,
        "OTEL_EXPORTER_OTLP_PROTOCOL=\"grpc\" is not supported",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicate_exports_too() {
    let c = table_with_items("cli_otlp_replicate", 6).await;
    let collector = Collector::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("orders.sqlite");
    let mut cmd = ddbstream(&c);
    cmd.args(["replicate", "--table", "orders", "--once", "--db"])
        .arg(&db)
        .args(["--otlp-endpoint", &collector.url]);
    let out = run_within(cmd, WAIT).await;
    assert!(out.status.success(), "{}", stderr(&out));
    let received = collector.received();
    assert_eq!(received.refused, Vec::<String>::new());
    let last = received
        .requests
        .last()
        .unwrap_or_else(|| panic!("no metrics export:\n{}", stderr(&out)));
    assert_eq!(service_names(last), vec!["ddbstream".to_owned()]);
    assert!(
        sum_of(last, "ddbstream.records.polled").is_some(),
        "no ddbstream.records.polled in {last:?}"
    );
}
