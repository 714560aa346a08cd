//! Finished spans on their way to the collector: the SDK's batch processor (its own
//! thread, a bounded queue that drops rather than waits) and OTLP/HTTP protobuf export
//! through Warden's own HTTP client on the gateway's runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SpanProcessor as _};

use crate::TelemetryError;

/// How often a failing export is logged: a collector that is away must not flood the log.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);
/// How much of a collector's answer is read (it says how many spans it took, or why not).
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// How long finished spans gather before a batch goes out.
const BATCH_DELAY: Duration = Duration::from_secs(1);

pub(crate) fn processor(
    config: &warden_config::Telemetry,
    runtime: tokio::runtime::Handle,
) -> Result<BatchSpanProcessor, TelemetryError> {
    let client = reqwest::Client::builder()
        // The collector is the operator's: no environment proxy, no redirect to follow.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.export_timeout)
        .build()
        .map_err(|error| TelemetryError::Client(error.to_string()))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(config.traces_url.clone())
        .with_timeout(config.export_timeout)
        .with_headers(
            config
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), value.expose().to_owned()))
                .collect(),
        )
        .with_http_client(Collector {
            client,
            runtime,
            last_failure_logged: Mutex::new(None),
        })
        .build()
        .map_err(|error| TelemetryError::Exporter(error.to_string()))?;
    let batches = BatchConfigBuilder::default()
        .with_max_queue_size(config.max_queued_spans)
        .with_max_export_batch_size(512.min(config.max_queued_spans))
        .with_scheduled_delay(BATCH_DELAY)
        .build();
    let mut processor = BatchSpanProcessor::builder(exporter)
        .with_batch_config(batches)
        .build();
    processor.set_resource(
        &Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build(),
    );
    Ok(processor)
}

/// The exporter's HTTP client. The batch processor exports from its own thread, outside
/// any runtime; the request runs on the gateway's runtime and is awaited from there.
#[derive(Debug)]
struct Collector {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
    last_failure_logged: Mutex<Option<Instant>>,
}

type Answer = Result<Response<Bytes>, HttpError>;

impl HttpClient for Collector {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: Request<Bytes>,
    ) -> Pin<Box<dyn Future<Output = Answer> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        let sent = self
            .runtime
            .spawn(async move { send(&client, request).await });
        Box::pin(async move {
            let answer = match sent.await {
                Ok(answer) => answer,
                Err(_) => Err("the export task was stopped".into()),
            };
            let failure = match &answer {
                Ok(response) if response.status().is_success() => None,
                Ok(response) => Some(format!("the collector answered {}", response.status())),
                Err(error) => Some(format!("the collector could not be reached ({error})")),
            };
            if let Some(failure) = failure {
                self.log_failure(&failure);
            }
            answer
        })
    }
}

impl Collector {
    /// Logs an export failure at most once a minute. It names the status or the
    /// connection error, never the configured headers.
    fn log_failure(&self, failure: &str) {
        let mut last = self
            .last_failure_logged
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|at| at.elapsed() < FAILURE_LOG_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        tracing::warn!(%failure, "traces could not be exported; spans are dropped until the collector takes them again");
    }
}

async fn send(client: &reqwest::Client, request: Request<Bytes>) -> Answer {
    let request = reqwest::Request::try_from(request)?;
    let mut response = client.execute(request).await?;
    let mut answer = Response::builder().status(response.status());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    if let Some(kind) = response.headers().get(http::header::CONTENT_TYPE) {
        answer = answer.header(http::header::CONTENT_TYPE, kind);
    }
    Ok(answer.body(Bytes::from(body))?)
}
