//! Upstreams that speak only the deprecated HTTP+SSE transport (protocol 2024-11-05):
//! a GET opens one event stream, whose first `endpoint` event names the URL messages are
//! POSTed to; every message from the server (answers included) comes on that stream.
//!
//! Like a stdio child, it is one conversation shared by all callers (a [`Link`]): a
//! supervisor connects, handshakes, publishes the link, and connects again (with
//! backoff) when the stream ends. The client is the one for every outbound request:
//! verified TLS, no redirects, no proxies from the environment, names resolved through
//! the egress guard, and only the configured headers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt as _;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};
use warden_config::Http;

use crate::UpstreamError;
use crate::handshake::{EraCache, handshake};
use crate::link::{Link, Outbound};
use crate::outbound;
use crate::stdio::Ready;
use warden_egress::EgressPolicy;
use warden_proto::cut::MessageLimits;
use warden_proto::sse::SseParser;

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The server names its message endpoint in its first event, or the connection is
/// given up.
const ENDPOINT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct SseUpstream {
    ready: watch::Receiver<Option<Ready>>,
    task: tokio::task::JoinHandle<()>,
}

/// What the supervisor needs to connect and connect again.
struct Connector {
    name: Arc<str>,
    client: reqwest::Client,
    url: reqwest::Url,
    shown_url: String,
    headers: HeaderMap,
    limits: MessageLimits,
    unsolicited: broadcast::Sender<Value>,
    eras: EraCache,
    restarts: Arc<AtomicU64>,
}

impl SseUpstream {
    pub fn start(
        name: Arc<str>,
        config: &Http,
        limits: MessageLimits,
        unsolicited: broadcast::Sender<Value>,
        egress: &Arc<EgressPolicy>,
        shutdown: watch::Receiver<bool>,
        restarts: Arc<AtomicU64>,
    ) -> Result<Self, UpstreamError> {
        let url = reqwest::Url::parse(&config.url)
            .map_err(|_| UpstreamError::Spawn("invalid url".into()))?;
        egress
            .check_url(&url)
            .map_err(|error| UpstreamError::Spawn(error.to_string()))?;
        let mut headers = HeaderMap::new();
        for (header, value) in &config.headers {
            let header = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| UpstreamError::Spawn("invalid header name".into()))?;
            let mut value = HeaderValue::from_str(value.expose())
                .map_err(|_| UpstreamError::Spawn("invalid header value".into()))?;
            value.set_sensitive(true);
            headers.insert(header, value);
        }
        let pins = (!config.pins.is_empty()).then(|| outbound::SpkiPins {
            who: format!("upstream {name:?}"),
            hashes: config.pins.clone(),
        });
        let client = outbound::client(url.scheme() == "https", 0, egress, pins.as_ref())
            .map_err(UpstreamError::Spawn)?;
        let connector = Connector {
            name,
            client,
            shown_url: outbound::shown_url(&url),
            url,
            headers,
            limits,
            unsolicited,
            eras: EraCache::default(),
            restarts,
        };
        let (ready_tx, ready) = watch::channel(None);
        let task = tokio::spawn(connector.supervise(ready_tx, shutdown));
        Ok(Self { ready, task })
    }

    /// The connected upstream, waiting for a reconnection up to `wait`.
    pub async fn ready(&self, wait: Duration) -> Result<Ready, UpstreamError> {
        let mut ready = self.ready.clone();
        match tokio::time::timeout(wait, ready.wait_for(Option::is_some)).await {
            Ok(Ok(ready)) => ready.clone().ok_or(UpstreamError::Unavailable),
            Ok(Err(_)) | Err(_) => Err(UpstreamError::Unavailable),
        }
    }
}

impl Drop for SseUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Connector {
    async fn supervise(
        self,
        ready: watch::Sender<Option<Ready>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut backoff = FIRST_BACKOFF;
        while !*shutdown.borrow() {
            let (link, queue) = Link::new(self.name.clone(), self.unsolicited.clone());
            let session = tokio::select! {
                session = self.connect(&link, queue) => session,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            match session {
                Ok(mut reader) => {
                    let facts = tokio::select! {
                        facts = handshake(&link, &self.eras) => facts,
                        _ = &mut reader => Err(UpstreamError::Exited),
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    };
                    match facts {
                        Ok(facts) => {
                            tracing::info!(upstream = %self.name, url = %self.shown_url, "upstream connected (HTTP+SSE)");
                            backoff = FIRST_BACKOFF;
                            ready.send_replace(Some(Ready {
                                link: link.clone(),
                                facts: Arc::new(facts),
                            }));
                            tokio::select! {
                                _ = &mut reader => {
                                    tracing::warn!(upstream = %self.name, "upstream event stream ended");
                                }
                                _ = shutdown.wait_for(|stop| *stop) => {}
                            }
                        }
                        Err(error) => {
                            tracing::error!(upstream = %self.name, %error, "upstream handshake failed");
                        }
                    }
                    reader.abort();
                }
                Err(error) => {
                    tracing::warn!(upstream = %self.name, url = %self.shown_url, %error, "cannot connect to the upstream");
                }
            }
            ready.send_replace(None);
            link.close(UpstreamError::Exited);
            if *shutdown.borrow() {
                return;
            }
            self.restarts.fetch_add(1, Ordering::Relaxed);
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Opens the event stream and learns where messages go; then delivers what comes on
    /// the stream to the link, and POSTs what the link sends, until the stream ends
    /// (the returned task).
    async fn connect(
        &self,
        link: &Arc<Link>,
        queue: mpsc::Receiver<Outbound>,
    ) -> Result<tokio::task::JoinHandle<()>, UpstreamError> {
        let mut headers = self.headers.clone();
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        let response = self
            .client
            .get(self.url.clone())
            .headers(headers)
            .send()
            .await
            .map_err(|error| {
                tracing::debug!(upstream = %self.name, error = %outbound::cause(error), "event stream not opened");
                UpstreamError::Connect
            })?;
        if !response.status().is_success() {
            return Err(UpstreamError::Status(response.status().as_u16()));
        }
        let mut parser = SseParser::cutting(self.limits);
        let mut chunks = response.bytes_stream();
        // The first event names the message endpoint.
        let endpoint = tokio::time::timeout(ENDPOINT_WAIT, async {
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.map_err(|_| UpstreamError::Connect)?;
                let events = parser.push(&chunk).map_err(|_| UpstreamError::Oversized)?;
                if let Some(event) = events.into_iter().find(|e| e.name == "endpoint") {
                    return Ok(String::from_utf8_lossy(&event.data).trim().to_owned());
                }
            }
            Err(UpstreamError::Protocol)
        })
        .await
        .map_err(|_| UpstreamError::Handshake("no endpoint event".into()))??;
        let post_url = self.message_url(&endpoint)?;
        tokio::spawn(post_messages(
            self.client.clone(),
            post_url,
            self.headers.clone(),
            queue,
            link.clone(),
        ));
        let link = link.clone();
        let name = self.name.clone();
        Ok(tokio::spawn(async move {
            while let Some(chunk) = chunks.next().await {
                let Ok(chunk) = chunk else { return };
                let Ok(events) = parser.push(&chunk) else {
                    tracing::error!(upstream = %name, "upstream sent an event over the size limit");
                    return;
                };
                for event in events.into_iter().filter(|e| e.name == "message") {
                    match serde_json::from_slice::<Value>(&event.data) {
                        Ok(message) => link.receive(message, None),
                        Err(_) => {
                            tracing::error!(upstream = %name, "upstream sent an event that is not JSON");
                            return;
                        }
                    }
                }
            }
        }))
    }

    /// The message endpoint the server named, resolved against the stream's URL. It must
    /// be on the same origin: a server cannot send Warden's messages, and the configured
    /// headers with them, anywhere else.
    fn message_url(&self, endpoint: &str) -> Result<reqwest::Url, UpstreamError> {
        same_origin(&self.url, endpoint)
    }
}

/// `endpoint` resolved against `base`, if it stays on `base`'s origin.
fn same_origin(base: &reqwest::Url, endpoint: &str) -> Result<reqwest::Url, UpstreamError> {
    let url = base
        .join(endpoint)
        .map_err(|_| UpstreamError::Handshake("the endpoint event is not a URL".into()))?;
    if url.origin() != base.origin() {
        return Err(UpstreamError::Handshake(
            "the endpoint event names another origin".into(),
        ));
    }
    Ok(url)
}

/// POSTs each message the link sends to the endpoint, in order; a call whose message
/// cannot be delivered fails at once.
async fn post_messages(
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    mut queue: mpsc::Receiver<Outbound>,
    link: Arc<Link>,
) {
    let name = link.upstream().to_owned();
    while let Some(outbound) = queue.recv().await {
        let sent = client
            .post(url.clone())
            .headers(headers.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(outbound.message.to_string())
            .send()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => {}
            Ok(response) => {
                let status = response.status().as_u16();
                tracing::warn!(upstream = %name, status, "upstream refused a message");
                if let Some(call) = outbound.call {
                    link.fail(call, UpstreamError::Status(status));
                }
            }
            Err(error) => {
                tracing::warn!(upstream = %name, error = %outbound::cause(error), "upstream message not sent");
                if let Some(call) = outbound.call {
                    link.fail(call, UpstreamError::Connect);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_go_only_to_the_streams_own_origin() {
        let base = reqwest::Url::parse("http://127.0.0.1:8767/sse").unwrap();
        assert_eq!(
            same_origin(&base, "/messages/?session_id=abc")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8767/messages/?session_id=abc"
        );
        for elsewhere in [
            "http://169.254.169.254/latest",
            "https://127.0.0.1:8767/messages",
            "//attacker.example/messages",
            "http://127.0.0.1:9999/messages",
        ] {
            assert!(same_origin(&base, elsewhere).is_err(), "{elsewhere}");
        }
    }
}
