//! The scanner's own HTTP client: it sends exactly the request a probe describes (a
//! header left out is left out, a credential can go in the URL instead of the header),
//! follows no redirect, reads at most 1 MiB of an answer, and gives up after the
//! configured timeout. What it keeps of an exchange is for evidence: the request as a
//! line without header values, the status, the headers, the body's start and the
//! JSON-RPC message that answered.

use futures_util::StreamExt as _;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use warden_proto::sse::SseParser;

/// Bytes of an answer kept.
const MAX_BODY: usize = 1 << 20;

/// One request and what came back.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// `POST /mcp tools/call` and the header names sent (never their values).
    pub request: String,
    /// 0 when nothing came back (see `error`).
    pub status: u16,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Why nothing (or only part) came back: refused, timed out, TLS, …
    pub error: Option<String>,
    /// The JSON-RPC message in the answer (the JSON body, or the SSE event with an id).
    pub message: Option<Value>,
}

impl Exchange {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The JSON-RPC error code, if the answer is an error.
    pub fn error_code(&self) -> Option<i64> {
        self.message.as_ref()?.get("error")?.get("code")?.as_i64()
    }

    /// The `result`, if the answer is a success.
    pub fn result(&self) -> Option<&Value> {
        self.message.as_ref()?.get("result")
    }

    /// A 2xx answer whose message is a result that is not a tool error: the server did
    /// what it was asked.
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
            && self
                .result()
                .is_some_and(|result| result.get("isError") != Some(&Value::Bool(true)))
    }

    /// Refused before acting: a 4xx, a JSON-RPC error, or a tool error result.
    pub fn refused(&self) -> bool {
        (400..500).contains(&self.status)
            || self.error_code().is_some()
            || self
                .result()
                .is_some_and(|result| result.get("isError") == Some(&Value::Bool(true)))
    }

    /// The scan stopped waiting (`--timeout`) before the answer was complete.
    pub fn timed_out(&self) -> bool {
        self.error
            .as_deref()
            .is_some_and(|e| e.starts_with("timed out"))
    }

    /// A server fault: a 5xx, or no answer at all.
    pub fn broke(&self) -> bool {
        self.status >= 500 || self.status == 0
    }

    /// `status` and the body's first line, for evidence.
    pub fn summary(&self) -> String {
        if let Some(error) = &self.error
            && self.status == 0
        {
            return format!("{} → no answer ({error})", self.request);
        }
        let first = self.body.lines().next().unwrap_or_default();
        let first: String = first.chars().take(160).collect();
        format!("{} → {} {first}", self.request, self.status)
    }
}

/// What to send.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: reqwest::Method,
    /// Appended to the target URL's query (`access_token=…`), when set.
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Option<String>,
    /// A label for the evidence line (`tools/call`).
    pub label: String,
}

impl Request {
    pub fn post(label: &str, body: String, headers: Vec<(String, String)>) -> Self {
        Self {
            method: reqwest::Method::POST,
            query: None,
            headers,
            body: Some(body),
            label: label.to_owned(),
        }
    }
}

#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    pub url: url::Url,
    progress: Option<crate::Progress>,
}

impl HttpClient {
    /// A client for `url` as `options` say: each request's timeout, the extra CA
    /// certificates to trust, whom to tell of each request.
    pub fn new(url: url::Url, options: &crate::ScanOptions) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(options.timeout)
            .connect_timeout(options.timeout);
        if let Some(pem) = &options.ca_pem {
            builder = builder.tls_certs_merge(reqwest::Certificate::from_pem_bundle(pem)?);
        }
        Ok(Self {
            client: builder.build()?,
            url,
            progress: options.progress.clone(),
        })
    }

    pub async fn send(&self, request: &Request) -> Exchange {
        if let Some(progress) = &self.progress {
            progress(&request.label);
        }
        let mut url = self.url.clone();
        if let Some(query) = &request.query {
            let joined = match url.query() {
                Some(existing) => format!("{existing}&{query}"),
                None => query.clone(),
            };
            url.set_query(Some(&joined));
        }
        let mut headers = HeaderMap::new();
        for (name, value) in &request.headers {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value),
            ) {
                headers.insert(name, value);
            }
        }
        let names: Vec<&str> = request.headers.iter().map(|(n, _)| n.as_str()).collect();
        let shown_query = if request.query.is_some() { "?…" } else { "" };
        let line = format!(
            "{} {}{shown_query} {} [headers: {}]",
            request.method,
            url.path(),
            request.label,
            names.join(", ")
        );
        let mut builder = self
            .client
            .request(request.method.clone(), url)
            .headers(headers);
        if let Some(body) = &request.body {
            builder = builder.body(body.clone());
        }
        let response = match builder.send().await {
            Ok(response) => response,
            Err(error) => {
                return Exchange {
                    request: line,
                    error: Some(describe(&error)),
                    ..Exchange::default()
                };
            }
        };
        let status = response.status().as_u16();
        let headers: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let is_sse = headers
            .iter()
            .any(|(n, v)| n == "content-type" && v.starts_with("text/event-stream"));
        let (body, message, error) = read_body(response, is_sse).await;
        Exchange {
            request: line,
            status,
            headers,
            body,
            error,
            message,
        }
    }
}

/// The body (at most [`MAX_BODY`]) and the JSON-RPC message in it. An SSE answer is
/// read until the event that carries an id (the response), so that an open stream does
/// not hold the probe.
async fn read_body(
    response: reqwest::Response,
    is_sse: bool,
) -> (String, Option<Value>, Option<String>) {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    let mut parser = SseParser::new(MAX_BODY);
    let mut message = None;
    let mut error = None;
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(failed) => {
                error = Some(describe(&failed));
                break;
            }
        };
        if body.len() < MAX_BODY {
            let room = MAX_BODY - body.len();
            body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
        if is_sse {
            let Ok(events) = parser.push(&chunk) else {
                break;
            };
            if let Some(found) = events
                .iter()
                .filter_map(|event| serde_json::from_slice::<Value>(&event.data).ok())
                .find(|value| value.get("id").is_some())
            {
                message = Some(found);
                break;
            }
        } else if body.len() >= MAX_BODY {
            break;
        }
    }
    if !is_sse {
        message = serde_json::from_slice(&body).ok();
    }
    (String::from_utf8_lossy(&body).into_owned(), message, error)
}

/// A transport error in a few words, without the URL (it may carry a credential).
fn describe(error: &reqwest::Error) -> String {
    let mut cause: Option<&dyn std::error::Error> = Some(error);
    let mut deepest = String::new();
    while let Some(current) = cause {
        deepest = current.to_string();
        cause = current.source();
    }
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else if error.is_body() || error.is_decode() {
        "the body broke off"
    } else {
        "request failed"
    };
    format!("{kind}: {deepest}")
}
