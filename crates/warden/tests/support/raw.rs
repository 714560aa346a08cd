//! A raw HTTP client for the MCP endpoint, for tests that must see (or break) the wire
//! format itself: statuses, headers, SSE events.

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};

use super::Warden;

pub const MODERN: &str = "2026-07-28";

pub struct Http {
    pub client: reqwest::Client,
    pub url: String,
    pub key: String,
}

pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Reply {
    /// The names of the tools in a `tools/list` answer.
    pub fn tool_names(&self) -> Vec<String> {
        self.json()["result"]["tools"]
            .as_array()
            .unwrap_or_else(|| panic!("no tools in {}", self.text))
            .iter()
            .map(|tool| tool["name"].as_str().unwrap().to_owned())
            .collect()
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| panic!("not JSON: {:?}", self.text))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The name of the first question an `InputRequiredResult`'s `inputRequests` asks.
pub fn first_question(input_requests: &Value) -> String {
    input_requests
        .as_object()
        .and_then(|asked| asked.keys().next())
        .unwrap_or_else(|| panic!("no question in {input_requests}"))
        .clone()
}

pub fn meta() -> Value {
    meta_with(json!({}))
}

/// The modern `_meta` envelope of a client that declares `capabilities`.
pub fn meta_with(capabilities: Value) -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
        "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "1"},
    })
}

pub fn modern_body(method: &str, params: Value) -> Value {
    modern_body_as(method, params, json!({}))
}

pub fn modern_body_as(method: &str, mut params: Value, capabilities: Value) -> Value {
    params["_meta"] = meta_with(capabilities);
    json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params})
}

impl Http {
    pub fn new(warden: &Warden) -> Self {
        Self::with_key(warden, &warden.admin_key)
    }

    /// A client presenting `key` (any Bearer credential).
    pub fn with_key(warden: &Warden, key: &str) -> Self {
        Self {
            client: reqwest::Client::new(),
            url: warden.url.clone(),
            key: key.to_owned(),
        }
    }

    /// Posts `body` in 64 KiB chunks with no Content-Length; the status, or `None` when
    /// Warden closed the upload once its cap was passed.
    pub async fn post_streamed(&self, body: &[u8]) -> Option<u16> {
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
            body.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
        self.client
            .post(&self.url)
            .bearer_auth(&self.key)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                chunks,
            )))
            .send()
            .await
            .ok()
            .map(|response| response.status().as_u16())
    }

    /// A modern `tools/call`.
    pub async fn call_tool(&self, tool: &str, arguments: Value) -> Reply {
        self.modern(
            "tools/call",
            Some(tool),
            json!({"name": tool, "arguments": arguments}),
        )
        .await
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        self.try_send(method, headers, body)
            .await
            .expect("the request reached Warden and was answered")
    }

    /// A modern `tools/call`, or `None` when no answer came (the server went away).
    pub async fn try_call_tool(&self, tool: &str, arguments: Value) -> Option<Reply> {
        let body = modern_body("tools/call", json!({"name": tool, "arguments": arguments}));
        let auth = format!("Bearer {}", self.key);
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", MODERN),
            ("mcp-method", "tools/call"),
            ("mcp-name", tool),
        ];
        self.try_send(
            reqwest::Method::POST,
            &headers,
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    async fn try_send(
        &self,
        method: reqwest::Method,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Option<Reply> {
        let mut request = self.client.request(method, &self.url);
        for (name, value) in headers {
            request = request.header(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.ok()?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        Some(Reply {
            status,
            headers,
            text: response.text().await.ok()?,
        })
    }

    /// A POST with the usual headers plus `extra`.
    pub async fn post(&self, extra: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Reply {
        let auth = format!("Bearer {}", self.key);
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
        ];
        headers.retain(|(name, _)| !extra.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)));
        headers.extend_from_slice(extra);
        self.send(reqwest::Method::POST, &headers, Some(body.into()))
            .await
    }

    pub async fn post_json(&self, extra: &[(&str, &str)], body: &Value) -> Reply {
        self.post(extra, body.to_string()).await
    }

    pub async fn modern(&self, method: &str, name: Option<&str>, params: Value) -> Reply {
        self.post_modern(&[], method, name, &modern_body(method, params))
            .await
    }

    /// A modern request from a client that declares `capabilities`.
    pub async fn modern_as(
        &self,
        method: &str,
        name: Option<&str>,
        params: Value,
        capabilities: Value,
    ) -> Reply {
        let body = modern_body_as(method, params, capabilities);
        self.post_modern(&[], method, name, &body).await
    }

    /// A modern request's `body` with its headers (`MCP-Protocol-Version`, `Mcp-Method`,
    /// `Mcp-Name` when `name` is given) and `extra` ones.
    pub async fn post_modern(
        &self,
        extra: &[(&str, &str)],
        method: &str,
        name: Option<&str>,
        body: &Value,
    ) -> Reply {
        let mut headers = vec![("mcp-protocol-version", MODERN), ("mcp-method", method)];
        if let Some(name) = name {
            headers.push(("mcp-name", name));
        }
        headers.extend_from_slice(extra);
        self.post_json(&headers, body).await
    }

    pub async fn initialize(&self) -> String {
        self.initialize_with(json!({})).await
    }

    /// Opens a legacy session for a client that declares `capabilities`.
    pub async fn initialize_with(&self, capabilities: Value) -> String {
        let reply = self
            .post_json(
                &[],
                &json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": capabilities,
                    "clientInfo": {"name": "raw", "version": "1"}}}),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json()["result"]["protocolVersion"], "2025-11-25");
        reply
            .header("mcp-session-id")
            .expect("initialize mints a session")
            .to_owned()
    }

    /// A legacy POST whose answer is read as it streams.
    pub async fn legacy_streaming(&self, session: &str, body: &Value) -> Events {
        let response = self
            .authorized(reqwest::Method::POST)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-11-25")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        Events::new(response)
    }

    /// The session's GET stream.
    pub async fn listen(&self, session: &str) -> Events {
        let response = self
            .authorized(reqwest::Method::GET)
            .header("accept", "text/event-stream")
            .header("mcp-session-id", session)
            .header("mcp-protocol-version", "2025-11-25")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        Events::new(response)
    }

    fn authorized(&self, method: reqwest::Method) -> reqwest::RequestBuilder {
        self.client
            .request(method, &self.url)
            .header("authorization", format!("Bearer {}", self.key))
    }

    pub async fn legacy(&self, session: &str, body: &Value) -> Reply {
        self.post_json(
            &[
                ("mcp-session-id", session),
                ("mcp-protocol-version", "2025-11-25"),
            ],
            body,
        )
        .await
    }

    /// The server still answers a plain, valid request.
    pub async fn assert_still_serving(&self) {
        let reply = self.modern("tools/list", None, json!({})).await;
        assert_eq!(reply.status, 200, "server stopped serving: {}", reply.text);
    }
}

/// JSON-RPC messages from an SSE answer (or a plain JSON one), as they arrive.
pub struct Events {
    response: reqwest::Response,
    buffer: String,
    plain: bool,
}

impl Events {
    fn new(response: reqwest::Response) -> Self {
        let plain = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
        Self {
            response,
            buffer: String::new(),
            plain,
        }
    }

    /// The next message; panics after 10 s without one, or at the end of the stream.
    pub async fn next(&mut self) -> Value {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.read())
            .await
            .expect("no message within 10 s")
            .expect("the stream ended")
    }

    /// Whether the stream ends (within 10 s) with no further message.
    pub async fn ends(&mut self) -> bool {
        matches!(
            tokio::time::timeout(std::time::Duration::from_secs(10), self.read()).await,
            Ok(None)
        )
    }

    /// Whether the stream ends (within 10 s) with no further message but repeated
    /// `notifications/tools/list_changed`.
    pub async fn ends_after_list_changes(&mut self) -> bool {
        let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                match self.read().await {
                    None => return true,
                    Some(message) if message["method"] == "notifications/tools/list_changed" => {}
                    Some(_) => return false,
                }
            }
        });
        matches!(ended.await, Ok(true))
    }

    async fn read(&mut self) -> Option<Value> {
        loop {
            if self.plain {
                if let Some(chunk) = self.response.chunk().await.unwrap() {
                    self.buffer.push_str(std::str::from_utf8(&chunk).unwrap());
                    continue;
                }
                self.plain = false;
                let body = std::mem::take(&mut self.buffer);
                return (!body.is_empty()).then(|| serde_json::from_str(&body).unwrap());
            }
            if let Some(end) = self.buffer.find("\n\n") {
                let event: String = self.buffer.drain(..end + 2).collect();
                let data: Vec<&str> = event
                    .lines()
                    .filter_map(|line| line.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if data.is_empty() || data.iter().all(|d| d.is_empty()) {
                    continue; // a priming or keep-alive event
                }
                return Some(serde_json::from_str(&data.join("\n")).unwrap());
            }
            let chunk = self.response.chunk().await.unwrap()?;
            self.buffer
                .push_str(&std::str::from_utf8(&chunk).unwrap().replace("\r\n", "\n"));
        }
    }
}
