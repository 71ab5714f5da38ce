//! AWS clients that work in a web browser (`wasm32-unknown-unknown` only).
//!
//! The SDK's own HTTP client (hyper, rustls), its tokio sleep and `std`'s clock do not exist in
//! the browser, and neither does aws-config's credential chain (no files, no environment). This
//! module supplies the three pieces the SDK needs — an HTTP client over the page's `fetch`, a
//! sleep on the JavaScript event loop and the wall clock from `Date` — and builds clients from
//! explicitly given credentials:
//!
//! ```no_run
//! # async fn run() -> Result<(), dynamodb_stream::Error> {
//! use dynamodb_stream::browser::BrowserAws;
//! use dynamodb_stream::{Batch, Consumer, HandlerError};
//!
//! let aws = BrowserAws::new("us-east-1", "AKIA…", "secret").endpoint("http://127.0.0.1:8000");
//! let consumer = Consumer::for_table(&aws.dynamodb_client(), aws.streams_client(), "orders")
//!     .await?
//!     .handler_fn(|_batch: Batch| async { Ok::<(), HandlerError>(()) })
//!     .spawn()
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! The endpoint must answer CORS preflights for the page's origin (DynamoDB Local: `-cors`).
//! See `docs/browser.md`.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_sdk_dynamodbstreams::config::{
    AsyncSleep, BehaviorVersion, Credentials, IdentityCache, Region, SharedAsyncSleep, Sleep,
};
use aws_smithy_async::time::{SharedTimeSource, TimeSource};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_runtime_api::shared::IntoShared;
use aws_smithy_types::body::SdkBody;
use aws_types::sdk_config::SharedCredentialsProvider;
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// Where and as whom the browser's AWS clients connect: region, credentials given explicitly,
/// and optionally an endpoint (DynamoDB Local, a proxy).
#[derive(Clone)]
pub struct BrowserAws {
    region: String,
    endpoint: Option<String>,
    credentials: Credentials,
}

impl fmt::Debug for BrowserAws {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Credentials`' own Debug redacts the secret.
        f.debug_struct("BrowserAws")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl BrowserAws {
    /// Clients for `region` signing with the given access key.
    pub fn new(
        region: impl Into<String>,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        BrowserAws {
            region: region.into(),
            endpoint: None,
            credentials: Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "dynamodb-stream-browser",
            ),
        }
    }

    /// Temporary credentials: the same with a session token.
    pub fn session_token(mut self, token: impl Into<String>) -> Self {
        self.credentials = Credentials::new(
            self.credentials.access_key_id(),
            self.credentials.secret_access_key(),
            Some(token.into()),
            None,
            "dynamodb-stream-browser",
        );
        self
    }

    /// Sends every request to `url` instead of the region's AWS endpoint.
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// A DynamoDB Streams client for this page.
    pub fn streams_client(&self) -> aws_sdk_dynamodbstreams::Client {
        aws_sdk_dynamodbstreams::Client::new(&self.sdk_config())
    }

    /// A DynamoDB client for this page (to resolve a table's stream, or to write items).
    pub fn dynamodb_client(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config())
    }

    /// What both clients share: the browser's fetch, sleep and clock, and these credentials.
    fn sdk_config(&self) -> aws_types::SdkConfig {
        let mut config = aws_types::SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(self.region.clone()))
            .credentials_provider(SharedCredentialsProvider::new(self.credentials.clone()))
            .identity_cache(IdentityCache::no_cache())
            .http_client(fetch_http_client())
            .sleep_impl(SharedAsyncSleep::new(EventLoopSleep))
            .time_source(SharedTimeSource::new(DateClock));
        if let Some(url) = &self.endpoint {
            config = config.endpoint_url(url);
        }
        config.build()
    }
}

/// The SDK's HTTP client over the browser's `fetch`.
pub fn fetch_http_client() -> SharedHttpClient {
    FetchHttpClient.into_shared()
}

#[derive(Debug, Clone, Copy)]
struct FetchHttpClient;

impl HttpClient for FetchHttpClient {
    fn http_connector(
        &self,
        _settings: &HttpConnectorSettings,
        _components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        // The SDK's connect/read timeouts are enforced by its own sleep around the call.
        SharedHttpConnector::new(FetchConnector)
    }
}

#[derive(Debug, Clone, Copy)]
struct FetchConnector;

impl HttpConnector for FetchConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        // JavaScript values are not `Send`, the SDK's futures must be: the fetch runs as a local
        // task on the event loop and only its (plain Rust) result crosses back.
        let (tx, rx) = tokio::sync::oneshot::channel();
        wasm_bindgen_futures::spawn_local(async move {
            let _ = tx.send(fetch(request).await);
        });
        HttpConnectorFuture::new(async move {
            rx.await.unwrap_or_else(|_| {
                Err(ConnectorError::other(
                    "the fetch task was dropped".into(),
                    None,
                ))
            })
        })
    }
}

/// Headers a page may not set (the browser sets them itself); setting one is silently ignored
/// at best, so they are not passed on. The signature still covers `host` and the browser sends
/// the same value.
const BROWSER_CONTROLLED: &[&str] = &["host", "content-length", "user-agent", "connection"];

async fn fetch(request: HttpRequest) -> Result<HttpResponse, ConnectorError> {
    let init = web_sys::RequestInit::new();
    init.set_method(request.method());
    let headers = web_sys::Headers::new().map_err(js_error)?;
    for (name, value) in request.headers().iter() {
        if BROWSER_CONTROLLED.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        headers.set(name, value).map_err(js_error)?;
    }
    init.set_headers(&headers);
    if let Some(bytes) = request.body().bytes() {
        if !bytes.is_empty() {
            init.set_body(&js_sys::Uint8Array::from(bytes));
        }
    } else {
        return Err(ConnectorError::other(
            "streaming request bodies are not supported in the browser".into(),
            None,
        ));
    }
    let js_request =
        web_sys::Request::new_with_str_and_init(request.uri(), &init).map_err(js_error)?;

    let global = js_sys::global();
    let promise = if let Some(window) = global.dyn_ref::<web_sys::Window>() {
        window.fetch_with_request(&js_request)
    } else if let Some(worker) = global.dyn_ref::<web_sys::WorkerGlobalScope>() {
        worker.fetch_with_request(&js_request)
    } else {
        return Err(ConnectorError::other(
            "no fetch in this JavaScript environment".into(),
            None,
        ));
    };
    // A rejected fetch is a network failure (refused, DNS, CORS): retryable like any I/O error.
    let response: web_sys::Response = JsFuture::from(promise)
        .await
        .map_err(js_io_error)?
        .dyn_into()
        .map_err(js_error)?;
    let status = StatusCode::try_from(response.status())
        .map_err(|e| ConnectorError::other(Box::new(e), None))?;
    let mut out = HttpResponse::new(status, SdkBody::empty());
    // Only CORS-exposed headers are visible here; the SDK reads errors from the body.
    if let Ok(Some(entries)) = js_sys::try_iter(&response.headers()) {
        for entry in entries.flatten() {
            let pair = js_sys::Array::from(&entry);
            if let (Some(name), Some(value)) = (pair.get(0).as_string(), pair.get(1).as_string()) {
                out.headers_mut().insert(name, value);
            }
        }
    }
    let body = JsFuture::from(response.array_buffer().map_err(js_error)?)
        .await
        .map_err(js_io_error)?;
    *out.body_mut() = SdkBody::from(js_sys::Uint8Array::new(&body).to_vec());
    Ok(out)
}

fn js_text(value: &JsValue) -> String {
    value
        .dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| value.as_string())
        .unwrap_or_else(|| format!("{value:?}"))
}

fn js_error(value: JsValue) -> ConnectorError {
    ConnectorError::other(js_text(&value).into(), None)
}

fn js_io_error(value: JsValue) -> ConnectorError {
    ConnectorError::io(format!("fetch failed: {}", js_text(&value)).into())
}

/// The SDK's sleep (retry backoff, timeouts) on the JavaScript event loop.
#[derive(Debug, Clone, Copy)]
struct EventLoopSleep;

impl AsyncSleep for EventLoopSleep {
    fn sleep(&self, duration: Duration) -> Sleep {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        wasm_bindgen_futures::spawn_local(async move {
            crate::rt::sleep(duration).await;
            let _ = tx.send(());
        });
        Sleep::new(async move {
            let _ = rx.await;
        })
    }
}

/// The SDK's wall clock (request signing) from JavaScript's `Date`.
#[derive(Debug, Clone, Copy)]
struct DateClock;

impl TimeSource for DateClock {
    fn now(&self) -> SystemTime {
        crate::rt::system_now()
    }
}
