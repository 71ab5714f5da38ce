//! `--otlp-endpoint URL` (or the standard `OTEL_EXPORTER_OTLP_*` variables): the consumer's
//! metrics and the library's spans pushed to an OpenTelemetry collector over OTLP/HTTP with
//! protobuf bodies, and the one meter provider every metrics reader of the command shares (this
//! and `--http`'s `/metrics`).
//!
//! Exporting never holds the consumer up: the SDK collects and exports on threads of its own,
//! the HTTP requests run as tasks on the command's runtime, and a failed export is a warning
//! (repeats folded) before the next one. The last export, when the command ends, is waited for
//! at most [`FINAL_EXPORT`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::Uri;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter};

use crate::fail::Failure;
use crate::output::Log;

/// How long the command waits, when it ends, for the last export: long enough for a collector
/// that answers, short enough that one that does not cannot hold the exit up.
const FINAL_EXPORT: Duration = Duration::from_secs(5);

/// The OpenTelemetry default export interval (`OTEL_METRIC_EXPORT_INTERVAL`).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// The OpenTelemetry default time for one export request (`OTEL_EXPORTER_OTLP_TIMEOUT`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What is exported: each kind has its own variables and its own path below a base URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Metrics,
    Traces,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Metrics => "metrics",
            Signal::Traces => "traces",
        }
    }

    /// Where OTLP/HTTP collectors take it, below their base URL.
    fn path(self) -> &'static str {
        match self {
            Signal::Metrics => "/v1/metrics",
            Signal::Traces => "/v1/traces",
        }
    }

    /// The variable of this kind's own `what` (`ENDPOINT`, `PROTOCOL`, `TIMEOUT`), which wins
    /// over the general `OTEL_EXPORTER_OTLP_<what>`.
    fn var(self, what: &str) -> String {
        format!("OTEL_EXPORTER_OTLP_{}_{what}", self.name().to_uppercase())
    }
}

/// `--otlp-endpoint`, shared by `tail` and `replicate`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct OtlpArgs {
    /// Push metrics and traces over OTLP/HTTP (protobuf) to the collector at this base URL,
    /// e.g. http://127.0.0.1:4318 (/v1/metrics and /v1/traces are added). Default:
    /// OTEL_EXPORTER_OTLP_{METRICS,TRACES}_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT, else no
    /// export. Metrics every OTEL_METRIC_EXPORT_INTERVAL ms (60000), and all when the command
    /// ends.
    #[arg(long, value_name = "URL", help_heading = "Probes and metrics")]
    otlp_endpoint: Option<String>,
}

/// Where one kind of telemetry goes, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// The full URL it is posted to.
    url: String,
    /// How long one export may take.
    timeout: Duration,
}

/// The variables, empty ones unset.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

impl OtlpArgs {
    /// The OTLP metrics reader, or `None` when neither the option nor a variable names a
    /// collector. Fails with one sentence for a URL, protocol or interval that cannot be used;
    /// nothing is sent yet.
    pub(crate) fn reader(&self) -> Result<Option<PeriodicReader<Exporter>>, Failure> {
        let Some(target) = resolve(Signal::Metrics, self.otlp_endpoint.as_deref(), env)? else {
            return Ok(None);
        };
        let interval = millis(&env, &["OTEL_METRIC_EXPORT_INTERVAL"])?.unwrap_or(DEFAULT_INTERVAL);
        let inner = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_http_client(client(&target)?)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(target.url.clone())
            .with_timeout(target.timeout)
            // No retries within an export: the counts are cumulative, so the next interval's
            // export carries everything a failed one had, and a retry would only make the
            // last export, when the command ends, wait longer for a collector that is down.
            .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
            .build()
            .map_err(|e| {
                Failure::new(format!("cannot export metrics to {}: {e}", target.url)).with_source(e)
            })?;
        Log::get().info(&format!(
            "ddbstream: exporting metrics over OTLP to {} every {}s",
            target.url,
            interval.as_secs_f64()
        ));
        let exporter = Exporter {
            inner,
            failures: Failures::new("metrics", target.url, interval),
        };
        Ok(Some(
            PeriodicReader::builder(exporter)
                .with_interval(interval)
                .build(),
        ))
    }

    /// The library's spans as OTLP traces, or `None` when no collector is named for them.
    /// Call within the command's runtime.
    pub(crate) fn traces(&self) -> Result<Option<Traces>, Failure> {
        let Some(target) = resolve(Signal::Traces, self.otlp_endpoint.as_deref(), env)? else {
            return Ok(None);
        };
        let inner = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client(&target)?)
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(target.url.clone())
            .with_timeout(target.timeout)
            // Retries would hold the last export, when the command ends, longer for a
            // collector that is down; the spans of a failed export are given up.
            .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
            .build()
            .map_err(|e| {
                Failure::new(format!("cannot export traces to {}: {e}", target.url)).with_source(e)
            })?;
        Log::get().info(&format!(
            "ddbstream: exporting traces over OTLP to {}",
            target.url
        ));
        let exporter = TraceExporter {
            inner,
            // The batch span processor's default delay (OTEL_BSP_SCHEDULE_DELAY).
            failures: Failures::new("traces", target.url, Duration::from_secs(5)),
        };
        let provider = SdkTracerProvider::builder()
            .with_resource(resource())
            .with_batch_exporter(exporter)
            .build();
        Ok(Some(Traces { provider }))
    }
}

/// An HTTP client for `target`: hyper, with rustls for https://, run on the current runtime.
fn client(target: &Target) -> Result<OnRuntime, Failure> {
    // System roots only for https: a machine without any must still reach an http://
    // collector.
    let client: Arc<dyn HttpClient> = if target.url.starts_with("https://") {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_native_roots()
            .map_err(|e| {
                Failure::new(format!(
                    "cannot export to {}: no TLS root certificates on this machine ({e}); \
                     install them or use an http:// collector",
                    target.url
                ))
                .with_source(e)
            })?
            .https_only()
            .enable_http1()
            .build();
        Arc::new(opentelemetry_http::hyper::HyperClient::new(
            connector,
            target.timeout,
            None,
        ))
    } else {
        Arc::new(
            opentelemetry_http::hyper::HyperClient::with_default_connector(target.timeout, None),
        )
    };
    Ok(OnRuntime {
        client,
        runtime: tokio::runtime::Handle::current(),
    })
}

/// Where `signal` goes, from the option and the variables (read through `env`) by the
/// OpenTelemetry rules: the option or `OTEL_EXPORTER_OTLP_ENDPOINT` is a base URL that the
/// signal's path is added to, `OTEL_EXPORTER_OTLP_<SIGNAL>_ENDPOINT` is used as it is.
fn resolve(
    signal: Signal,
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Target>, Failure> {
    let (source, given, base) = match flag.map(str::trim) {
        Some(url) => ("--otlp-endpoint".to_owned(), url.to_owned(), true),
        None => match (
            env(&signal.var("ENDPOINT")),
            env("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => (signal.var("ENDPOINT"), url, false),
            (None, Some(url)) => ("OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(), url, true),
            (None, None) => return Ok(None),
        },
    };
    let given = given.trim();
    let usable = given.parse::<Uri>().ok().is_some_and(|uri| {
        matches!(uri.scheme_str(), Some("http" | "https"))
            && uri.host().is_some_and(|h| !h.is_empty())
    });
    if !usable {
        return Err(Failure::new(format!(
            "{source} {given:?} is not an http:// or https:// URL: write it like \
             http://127.0.0.1:4318 (the collector's OTLP/HTTP port{})",
            if base {
                "; /v1/metrics and /v1/traces are added"
            } else {
                ""
            }
        )));
    }
    let url = if base {
        // A base URL with a path keeps it (a collector behind a proxy prefix).
        format!("{}{}", given.trim_end_matches('/'), signal.path())
    } else {
        given.to_owned()
    };
    for var in [
        signal.var("PROTOCOL"),
        "OTEL_EXPORTER_OTLP_PROTOCOL".to_owned(),
    ] {
        if let Some(protocol) = env(&var) {
            if protocol.trim() != "http/protobuf" {
                return Err(Failure::new(format!(
                    "{var}={protocol:?} is not supported: ddbstream exports OTLP over HTTP \
                     with protobuf; set it to http/protobuf (or unset it) and use the \
                     collector's OTLP/HTTP port (4318)"
                )));
            }
            // The signal's own variable wins over the general one.
            break;
        }
    }
    let timeout = millis(
        &env,
        &[&signal.var("TIMEOUT"), "OTEL_EXPORTER_OTLP_TIMEOUT"],
    )?
    .unwrap_or(DEFAULT_TIMEOUT);
    Ok(Some(Target { url, timeout }))
}

/// The first of `vars` that is set, as a positive number of milliseconds. A value that is not
/// one fails rather than being ignored: the operator meant something by it.
fn millis(
    env: &impl Fn(&str) -> Option<String>,
    vars: &[&str],
) -> Result<Option<Duration>, Failure> {
    let Some((var, text)) = vars.iter().find_map(|v| env(v).map(|t| (*v, t))) else {
        return Ok(None);
    };
    match text.trim().parse::<u64>() {
        Ok(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
        _ => Err(Failure::new(format!(
            "{var}={text:?} is not a positive number of milliseconds (e.g. 10000 for 10 s)"
        ))),
    }
}

/// opentelemetry-http's hyper client needs a tokio runtime, and the SDK's periodic reader
/// exports from a plain thread: each request is run as a task on the command's runtime and
/// waited for from there.
#[derive(Debug)]
struct OnRuntime {
    client: Arc<dyn HttpClient>,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OnRuntime {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        self.runtime
            .spawn(async move { client.send_bytes(request).await })
            .await
            // Only when the runtime is going away: the command is ending.
            .map_err(|e| Box::new(e) as HttpError)?
    }
}

/// Says when exports fail (a folded warning) and when they work again.
#[derive(Debug)]
struct Failures {
    what: &'static str,
    url: String,
    /// How soon the next export comes, for the warning.
    next_in: Duration,
    /// The last export failed (a recovery is worth a line).
    failing: AtomicBool,
}

impl Failures {
    fn new(what: &'static str, url: String, next_in: Duration) -> Self {
        Self {
            what,
            url,
            next_in,
            failing: AtomicBool::new(false),
        }
    }

    fn saw(&self, result: &OTelSdkResult) {
        match result {
            Err(e) => {
                self.failing.store(true, Ordering::Relaxed);
                // One key per kind: a collector that is down is one problem, however its
                // errors are worded.
                Log::get().warn(
                    &format!("otlp export {}", self.what),
                    &format!(
                        "ddbstream: cannot export {} to {} ({}); still consuming, next try in \
                         {}s",
                        self.what,
                        self.url,
                        crate::fail::one_line(&e.to_string()),
                        self.next_in.as_secs_f64()
                    ),
                );
            }
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                Log::get().info(&format!(
                    "ddbstream: exporting {} to {} again",
                    self.what, self.url
                ));
            }
            Ok(()) => {}
        }
    }
}

/// The OTLP metrics exporter, saying when exports fail and when they work again.
#[derive(Debug)]
pub(crate) struct Exporter {
    inner: opentelemetry_otlp::MetricExporter,
    failures: Failures,
}

impl PushMetricExporter for Exporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.failures.saw(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// The OTLP span exporter, the same way.
#[derive(Debug)]
struct TraceExporter {
    inner: opentelemetry_otlp::SpanExporter,
    failures: Failures,
}

impl SpanExporter for TraceExporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.failures.saw(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// `service.name` is ddbstream unless OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) names
/// it: the resource builder reads those.
fn resource() -> opentelemetry_sdk::Resource {
    let mut resource = opentelemetry_sdk::Resource::builder();
    let named = env("OTEL_SERVICE_NAME").is_some()
        || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|s| s.contains("service.name="));
    if !named {
        resource = resource.with_service_name("ddbstream");
    }
    resource.build()
}

/// Run the SDK's `shutdown` (the last export, then its threads stop), waiting at most
/// [`FINAL_EXPORT`].
async fn final_export(what: &str, shutdown: impl FnOnce() -> OTelSdkResult + Send + 'static) {
    let (done, finished) = tokio::sync::oneshot::channel();
    // The SDK's shutdown blocks until its thread has exported, and that export runs on this
    // runtime: a thread of its own keeps the runtime free. Not `spawn_blocking`: dropping the
    // runtime would wait for it, however long a silent collector takes.
    let spawned = std::thread::Builder::new()
        .name("otlp-final-export".to_owned())
        .spawn(move || {
            let _ = done.send(shutdown());
        });
    if spawned.is_err() {
        return;
    }
    if tokio::time::timeout(FINAL_EXPORT, finished).await.is_err() {
        Log::get().warn(
            &format!("otlp final export {what}"),
            &format!(
                "ddbstream: the last {what} export did not finish within {}s; exiting without it",
                FINAL_EXPORT.as_secs()
            ),
        );
    }
}

/// The library's spans on their way to the collector.
pub(crate) struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// What the tracing layer records spans with.
    pub(crate) fn tracer(&self) -> SdkTracer {
        self.provider.tracer("dynamodb-stream")
    }

    /// Export the spans not sent yet (waited for at most [`FINAL_EXPORT`]).
    pub(crate) async fn finish(self) {
        let provider = self.provider;
        final_export("traces", move || provider.shutdown()).await;
    }
}

/// The command's meter provider: one for every reader, so `/metrics` and the collector see the
/// same instruments. Absent when nothing reads metrics.
pub(crate) struct Metrics {
    provider: Option<SdkMeterProvider>,
}

impl Metrics {
    /// A provider with these readers, or none without any.
    pub(crate) fn new(
        prometheus: Option<opentelemetry_prometheus::PrometheusExporter>,
        otlp: Option<PeriodicReader<Exporter>>,
    ) -> Self {
        if prometheus.is_none() && otlp.is_none() {
            return Self { provider: None };
        }
        let mut builder = SdkMeterProvider::builder().with_resource(resource());
        if let Some(reader) = prometheus {
            builder = builder.with_reader(reader);
        }
        if let Some(reader) = otlp {
            builder = builder.with_reader(reader);
        }
        Self {
            provider: Some(builder.build()),
        }
    }

    /// The meter the consumer records into, when something reads it.
    pub(crate) fn meter(&self) -> Option<Meter> {
        self.provider.as_ref().map(|p| p.meter("dynamodb-stream"))
    }

    /// Export the last counts (waited for at most [`FINAL_EXPORT`]) and stop the readers.
    pub(crate) async fn finish(self) {
        let Some(provider) = self.provider else {
            return;
        };
        final_export("metrics", move || provider.shutdown()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| vars.get(name).cloned().filter(|v| !v.trim().is_empty())
    }

    fn resolved_for(
        signal: Signal,
        flag: Option<&str>,
        vars: &[(&str, &str)],
    ) -> Result<Option<Target>, String> {
        resolve(signal, flag, lookup(vars)).map_err(|f| f.message)
    }

    fn resolved(flag: Option<&str>, vars: &[(&str, &str)]) -> Result<Option<Target>, String> {
        resolved_for(Signal::Metrics, flag, vars)
    }

    fn url(flag: Option<&str>, vars: &[(&str, &str)]) -> Option<String> {
        resolved(flag, vars)
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|t| t.url)
    }

    #[test]
    fn traces_go_to_their_own_path_and_variable() {
        let traces = |flag, vars: &[(&str, &str)]| {
            resolved_for(Signal::Traces, flag, vars)
                .unwrap_or_else(|e| panic!("{e}"))
                .map(|t| t.url)
        };
        assert_eq!(
            traces(Some("http://c:4318"), &[]).as_deref(),
            Some("http://c:4318/v1/traces")
        );
        // A metrics-only variable names no trace collector.
        let metrics_only = [(
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            "http://m:4318/v1/metrics",
        )];
        assert_eq!(traces(None, &metrics_only), None);
        let own = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:4318/spans"),
        ];
        assert_eq!(traces(None, &own).as_deref(), Some("http://t:4318/spans"));
    }

    #[test]
    fn nothing_named_exports_nothing() {
        assert_eq!(url(None, &[]), None);
    }

    #[test]
    fn base_urls_get_the_metrics_path_and_the_signal_variable_is_used_as_is() {
        assert_eq!(
            url(Some("http://127.0.0.1:4318"), &[]).as_deref(),
            Some("http://127.0.0.1:4318/v1/metrics")
        );
        assert_eq!(
            url(Some("https://otel.example:4318/prefix/"), &[]).as_deref(),
            Some("https://otel.example:4318/prefix/v1/metrics")
        );
        assert_eq!(
            url(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]).as_deref(),
            Some("http://c:4318/v1/metrics")
        );
        let both = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://general:4318"),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://m:4318/custom",
            ),
        ];
        assert_eq!(url(None, &both).as_deref(), Some("http://m:4318/custom"));
        // The option wins over every variable.
        assert_eq!(
            url(Some("http://flag:1"), &both).as_deref(),
            Some("http://flag:1/v1/metrics")
        );
    }

    #[test]
    fn urls_that_cannot_be_used_are_one_sentence_naming_where_they_came_from() {
        for bad in [
            "127.0.0.1:4318",
            "localhost",
            "ftp://x:1",
            "http://",
            "http://a b",
        ] {
            let e = resolved(Some(bad), &[]).expect_err(bad);
            assert!(e.starts_with("--otlp-endpoint "), "{e}");
            assert!(e.contains("http://127.0.0.1:4318"), "{e}");
        }
        let e = resolved(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "nope")]).expect_err("nope");
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT \"nope\""), "{e}");
    }

    #[test]
    fn only_http_protobuf_is_spoken() {
        let on = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")];
        for protocol in ["grpc", "http/json"] {
            let vars = [on[0], ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)];
            let e = resolved(None, &vars).expect_err(protocol);
            assert!(e.contains("http/protobuf"), "{e}");
        }
        // The signal's variable wins over the general one.
        let vars = [
            on[0],
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "http/protobuf"),
        ];
        assert!(resolved(None, &vars).is_ok());
    }

    #[test]
    fn interval_and_timeout_are_milliseconds() {
        let on = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318");
        let t = resolved(None, &[on]).ok().flatten().expect("a target");
        assert_eq!(t.timeout, DEFAULT_TIMEOUT);
        let t = resolved(
            None,
            &[
                on,
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
                ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "2000"),
            ],
        )
        .ok()
        .flatten()
        .expect("a target");
        assert_eq!(t.timeout, Duration::from_millis(2000));
        let interval = |v| {
            millis(
                &lookup(&[("OTEL_METRIC_EXPORT_INTERVAL", v)]),
                &["OTEL_METRIC_EXPORT_INTERVAL"],
            )
        };
        assert_eq!(
            interval("1500").ok().flatten(),
            Some(Duration::from_millis(1500))
        );
        for bad in ["0", "10s", "-1"] {
            let e = interval(bad).map_err(|f| f.message).expect_err(bad);
            assert!(e.starts_with("OTEL_METRIC_EXPORT_INTERVAL="), "{e}");
        }
        let e = resolved(None, &[on, ("OTEL_EXPORTER_OTLP_TIMEOUT", "soon")]).expect_err("soon");
        assert!(e.starts_with("OTEL_EXPORTER_OTLP_TIMEOUT="), "{e}");
    }
}
