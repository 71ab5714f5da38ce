//! `--otlp-endpoint URL` (or the standard `OTEL_EXPORTER_OTLP_*` variables): the consumer's
//! metrics pushed to an OpenTelemetry collector over OTLP/HTTP with protobuf bodies, and the one
//! meter provider every metrics reader of the command shares (this and `--http`'s `/metrics`).
//!
//! Exporting never holds the consumer up: the SDK collects and exports on a thread of its own,
//! the HTTP requests run as tasks on the command's runtime, and a failed export is a warning
//! (repeats folded) before the next interval. The last export, when the command ends, is waited
//! for at most [`FINAL_EXPORT`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::Uri;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};

use crate::fail::Failure;
use crate::output::Log;

/// How long the command waits, when it ends, for the last export: long enough for a collector
/// that answers, short enough that one that does not cannot hold the exit up.
const FINAL_EXPORT: Duration = Duration::from_secs(5);

/// The OpenTelemetry default export interval (`OTEL_METRIC_EXPORT_INTERVAL`).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// The OpenTelemetry default time for one export request (`OTEL_EXPORTER_OTLP_TIMEOUT`).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where OTLP/HTTP collectors take metrics, below their base URL.
const METRICS_PATH: &str = "/v1/metrics";

/// `--otlp-endpoint`, shared by `tail` and `replicate`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct OtlpArgs {
    /// Push metrics over OTLP/HTTP (protobuf) to the collector at this base URL, e.g.
    /// http://127.0.0.1:4318 (/v1/metrics is added). Default: OTEL_EXPORTER_OTLP_METRICS_ENDPOINT
    /// or OTEL_EXPORTER_OTLP_ENDPOINT, else no export. Every OTEL_METRIC_EXPORT_INTERVAL ms
    /// (60000) and when the command ends.
    #[arg(long, value_name = "URL", help_heading = "Probes and metrics")]
    otlp_endpoint: Option<String>,
}

/// What the option and the environment ask for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// The full URL metrics are posted to.
    url: String,
    interval: Duration,
    timeout: Duration,
}

impl OtlpArgs {
    /// The OTLP metrics reader, or `None` when neither the option nor a variable names a
    /// collector. Fails with one sentence for a URL, protocol or interval that cannot be used;
    /// nothing is sent yet.
    pub(crate) fn reader(&self) -> Result<Option<PeriodicReader<Exporter>>, Failure> {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let Some(target) = resolve(self.otlp_endpoint.as_deref(), env)? else {
            return Ok(None);
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new();
        // System roots only for https: a machine without any must still reach an http://
        // collector.
        let client: Arc<dyn HttpClient> = if target.url.starts_with("https://") {
            let connector = connector
                .with_native_roots()
                .map_err(|e| {
                    Failure::new(format!(
                        "cannot export metrics to {}: no TLS root certificates on this \
                         machine ({e}); install them or use an http:// collector",
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
                opentelemetry_http::hyper::HyperClient::with_default_connector(
                    target.timeout,
                    None,
                ),
            )
        };
        let client = OnRuntime {
            client,
            runtime: tokio::runtime::Handle::current(),
        };
        let inner = opentelemetry_otlp::MetricExporter::builder()
            .with_http()
            .with_http_client(client)
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
            target.interval.as_secs_f64()
        ));
        let exporter = Exporter {
            inner,
            url: target.url,
            interval: target.interval,
            failing: AtomicBool::new(false),
        };
        Ok(Some(
            PeriodicReader::builder(exporter)
                .with_interval(target.interval)
                .build(),
        ))
    }
}

/// The option and the variables (read through `env`, empty values are unset), by the
/// OpenTelemetry rules: the option or `OTEL_EXPORTER_OTLP_ENDPOINT` is a base URL that
/// `/v1/metrics` is added to, `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` is used as it is.
fn resolve(
    flag: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Target>, Failure> {
    let (source, given, base) = match flag.map(str::trim) {
        Some(url) => ("--otlp-endpoint".to_owned(), url.to_owned(), true),
        None => match (
            env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"),
            env("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT".to_owned(), url, false),
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
            if base { "; /v1/metrics is added" } else { "" }
        )));
    }
    let url = if base {
        // A base URL with a path keeps it (a collector behind a proxy prefix).
        format!("{}{METRICS_PATH}", given.trim_end_matches('/'))
    } else {
        given.to_owned()
    };
    for var in [
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Some(protocol) = env(var) {
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
    let interval = millis(&env, &["OTEL_METRIC_EXPORT_INTERVAL"])?.unwrap_or(DEFAULT_INTERVAL);
    let timeout = millis(
        &env,
        &[
            "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ],
    )?
    .unwrap_or(DEFAULT_TIMEOUT);
    Ok(Some(Target {
        url,
        interval,
        timeout,
    }))
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

/// The OTLP exporter, saying when exports fail and when they work again.
#[derive(Debug)]
pub(crate) struct Exporter {
    inner: opentelemetry_otlp::MetricExporter,
    url: String,
    interval: Duration,
    /// The last export failed (a recovery is worth a line).
    failing: AtomicBool,
}

impl PushMetricExporter for Exporter {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        match &result {
            Err(e) => {
                self.failing.store(true, Ordering::Relaxed);
                // One key for every failure: a collector that is down is one problem, however
                // its errors are worded.
                Log::get().warn(
                    "otlp export",
                    &format!(
                        "ddbstream: cannot export metrics to {} ({}); still consuming, next \
                         try in {}s",
                        self.url,
                        crate::fail::one_line(&e.to_string()),
                        self.interval.as_secs_f64()
                    ),
                );
            }
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                Log::get().info(&format!(
                    "ddbstream: exporting metrics to {} again",
                    self.url
                ));
            }
            Ok(()) => {}
        }
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
        // `service.name` is ddbstream unless OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES)
        // names it: the resource builder reads those.
        let mut resource = opentelemetry_sdk::Resource::builder();
        let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|s| !s.is_empty())
            || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|s| s.contains("service.name="));
        if !named {
            resource = resource.with_service_name("ddbstream");
        }
        let mut builder = SdkMeterProvider::builder().with_resource(resource.build());
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
        let (done, finished) = tokio::sync::oneshot::channel();
        // The SDK's shutdown blocks until its reader thread has exported, and that export runs
        // on this runtime: a thread of its own keeps the runtime free. Not `spawn_blocking`:
        // dropping the runtime would wait for it, however long a silent collector takes.
        let spawned = std::thread::Builder::new()
            .name("otlp-final-export".to_owned())
            .spawn(move || {
                let _ = done.send(provider.shutdown());
            });
        if spawned.is_err() {
            return;
        }
        if tokio::time::timeout(FINAL_EXPORT, finished).await.is_err() {
            Log::get().warn(
                "otlp final export",
                &format!(
                    "ddbstream: the last metrics export did not finish within {}s; exiting \
                     without it",
                    FINAL_EXPORT.as_secs()
                ),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolved(flag: Option<&str>, vars: &[(&str, &str)]) -> Result<Option<Target>, String> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        resolve(flag, |name| {
            vars.get(name).cloned().filter(|v| !v.trim().is_empty())
        })
        .map_err(|f| f.message)
    }

    fn url(flag: Option<&str>, vars: &[(&str, &str)]) -> Option<String> {
        resolved(flag, vars)
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|t| t.url)
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
        assert_eq!((t.interval, t.timeout), (DEFAULT_INTERVAL, DEFAULT_TIMEOUT));
        let t = resolved(
            None,
            &[
                on,
                ("OTEL_METRIC_EXPORT_INTERVAL", "1500"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "3000"),
                ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "2000"),
            ],
        )
        .ok()
        .flatten()
        .expect("a target");
        assert_eq!(
            (t.interval, t.timeout),
            (Duration::from_millis(1500), Duration::from_millis(2000))
        );
        for bad in ["0", "10s", "-1"] {
            let e = resolved(None, &[on, ("OTEL_METRIC_EXPORT_INTERVAL", bad)]).expect_err(bad);
            assert!(e.starts_with("OTEL_METRIC_EXPORT_INTERVAL="), "{e}");
        }
    }
}
