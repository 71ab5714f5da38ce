//! `--http ADDR`: `/healthz`, `/readyz` and `/metrics` for an orchestrator's probes and a
//! Prometheus scraper (docs/operations.md).
//!
//! The address is bound before anything else is done, so a bad address or a port in use fails
//! at once; the endpoints answer from then on: while the consumer starts, `/healthz` says ok and
//! `/readyz` says it is not streaming yet. The server is a task that ends with the command.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use dynamodb_stream::{NotReady, Probe, Readiness, ReadinessCriteria};

use crate::fail::Failure;
use crate::output::Log;

/// The Prometheus text exposition format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `--http` and what goes with it, shared by `tail` and `replicate`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct HttpArgs {
    /// Serve /healthz (alive), /readyz (reading, none stalled or quarantined, lag below
    /// --ready-max-lag; why not as JSON) and /metrics (Prometheus text) on this address, e.g.
    /// 127.0.0.1:9090 (port 0: any free port, printed on stderr).
    #[arg(long, value_name = "ADDR", help_heading = "Probes and metrics")]
    http: Option<String>,

    /// /readyz fails while a shard lags more than this (90s, 10m, 2h; `off`: lag is not
    /// considered).
    #[arg(long, value_name = "AGE", default_value = "5m", requires = "http",
          value_parser = parse_max_lag, help_heading = "Probes and metrics")]
    ready_max_lag: MaxLag,

    /// A shard with no successful read for this long is stalled: /readyz fails (and a warning
    /// is printed). Checked every quarter of it, at most every 10 s.
    #[arg(long, value_name = "AGE", default_value = "2m", value_parser = parse_stall,
          help_heading = "Probes and metrics")]
    stall_after: Duration,
}

/// `--ready-max-lag`: a threshold, or none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MaxLag(Option<Duration>);

fn parse_max_lag(text: &str) -> Result<MaxLag, String> {
    if text.trim() == "off" {
        return Ok(MaxLag(None));
    }
    crate::parse_age(text).map(|d| MaxLag(Some(d)))
}

fn parse_stall(text: &str) -> Result<Duration, String> {
    match crate::parse_age(text)? {
        d if d.is_zero() => Err(format!(
            "{text:?} is not a positive age like 90s, 10m or 2h"
        )),
        d => Ok(d),
    }
}

impl HttpArgs {
    /// The watchdog's stall threshold, and a round often enough to notice it in time.
    pub(crate) fn apply(&self, c: &mut dynamodb_stream::ConsumerConfig) {
        c.stall_timeout = self.stall_after;
        c.watchdog_interval = c.watchdog_interval.min(self.stall_after / 4);
    }

    /// Bind `--http`'s address and start serving, before the consumer exists; `None` without
    /// `--http`. Fails with one sentence for an address that is not one or cannot be bound.
    /// `/metrics` shows what the returned reader reads: give it to the command's meter
    /// provider (`otlp::Metrics`).
    pub(crate) async fn start(
        &self,
    ) -> Result<Option<(Endpoints, opentelemetry_prometheus::PrometheusExporter)>, Failure> {
        let Some(text) = &self.http else {
            return Ok(None);
        };
        // Only an IP address and a port: a host name would make which interface is served
        // depend on name resolution.
        let addr: SocketAddr = text.trim().parse().map_err(|_| {
            Failure::new(format!(
                "--http {text:?} is not an address and port: write it like 127.0.0.1:9090 \
                 (0.0.0.0:9090 for every interface, port 0 for any free port)"
            ))
        })?;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::AddrInUse => ": another process uses that port; choose another",
                std::io::ErrorKind::PermissionDenied => ": choose a port above 1023",
                std::io::ErrorKind::AddrNotAvailable => ": that address is not this machine's",
                _ => "",
            };
            Failure::new(format!("cannot serve --http on {addr} ({e}){hint}")).with_source(e)
        })?;
        let bound = listener.local_addr().map_err(|e| {
            Failure::new(format!("cannot serve --http on {addr}: {e}")).with_source(e)
        })?;
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .build()
            .map_err(|e| {
                Failure::new(format!("cannot set up the Prometheus exporter: {e}")).with_source(e)
            })?;
        let state = Served {
            probe: Arc::new(Mutex::new(None)),
            criteria: ReadinessCriteria::default().with_max_lag(self.ready_max_lag.0),
            registry,
        };
        let app = Router::new()
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                Log::get().error(&format!("ddbstream: the --http server stopped: {e}"));
            }
        });
        // One line tests and scripts can read the port from (port 0 picks one).
        Log::get().info(&format!(
            "ddbstream: serving /healthz /readyz /metrics on http://{bound}"
        ));
        Ok(Some((Endpoints { state, server }, exporter)))
    }
}

/// The running server; stops when dropped (with the command).
pub(crate) struct Endpoints {
    state: Served,
    server: tokio::task::JoinHandle<()>,
}

impl Endpoints {
    /// From now on, answer for this consumer (or replicator).
    pub(crate) fn serve(&self, probe: Probe) {
        *self.state.probe.lock().unwrap_or_else(|p| p.into_inner()) = Some(probe);
    }
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What the handlers share.
#[derive(Clone)]
struct Served {
    /// `None` while the consumer starts.
    probe: Arc<Mutex<Option<Probe>>>,
    criteria: ReadinessCriteria,
    registry: prometheus::Registry,
}

impl Served {
    fn probe(&self) -> Option<Probe> {
        self.probe.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// 200 `ok` while the consumer runs (or starts), 503 `stopped` once it stopped.
async fn healthz(State(s): State<Served>) -> Response {
    match s.probe() {
        Some(probe) if !probe.is_alive() => (StatusCode::SERVICE_UNAVAILABLE, "stopped\n"),
        _ => (StatusCode::OK, "ok\n"),
    }
    .into_response()
}

/// 200 with `{"ready":true,"reasons":[]}`, or 503 with the reasons.
async fn readyz(State(s): State<Served>) -> Response {
    let readiness = match s.probe() {
        Some(probe) => probe.readiness(&s.criteria),
        None => Readiness::from_reasons(vec![NotReady::NotStreaming {
            phase: "starting".to_owned(),
        }]),
    };
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    match serde_json::to_string(&readiness) {
        Ok(body) => (code, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the readiness as JSON: {e}\n"),
        )
            .into_response(),
    }
}

/// The consumer's instruments in the Prometheus text format.
async fn metrics(State(s): State<Served>) -> Response {
    let families = s.registry.gather();
    match prometheus::TextEncoder::new().encode_to_string(&families) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the metrics: {e}\n"),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_thresholds_and_stall_ages_parse() {
        assert_eq!(
            parse_max_lag("10m").map(|m| m.0),
            Ok(Some(Duration::from_secs(600)))
        );
        assert_eq!(parse_max_lag("off").map(|m| m.0), Ok(None));
        assert!(parse_max_lag("soon").is_err());
        assert_eq!(parse_stall("2s"), Ok(Duration::from_secs(2)));
        assert!(parse_stall("0").is_err());
    }

    #[test]
    fn the_watchdog_looks_four_times_per_stall_threshold_at_most_every_10_s() {
        let probes = |stall_after| HttpArgs {
            http: None,
            ready_max_lag: MaxLag(None),
            stall_after,
        };
        let mut c = dynamodb_stream::ConsumerConfig::default();
        probes(Duration::from_secs(2)).apply(&mut c);
        assert_eq!(
            (c.stall_timeout, c.watchdog_interval),
            (Duration::from_secs(2), Duration::from_millis(500))
        );
        let mut c = dynamodb_stream::ConsumerConfig::default();
        probes(Duration::from_secs(600)).apply(&mut c);
        assert_eq!(c.watchdog_interval, Duration::from_secs(10));
    }
}
