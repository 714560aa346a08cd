//! The egress proxy for stdio children: an HTTP forward proxy (absolute-form requests and
//! `CONNECT` tunnels) on a loopback port of its own for each child, so every request a
//! child makes through `HTTP_PROXY`/`HTTPS_PROXY`/`ALL_PROXY` passes the same egress guard
//! as Warden's own, and the log can say which upstream (and tenant) made it. Under the
//! sandbox this port is the only TCP destination the child may connect to.
//!
//! The proxy never follows redirects (the child does, through the proxy again, so every
//! hop is checked) and never logs paths or queries, which may carry credentials.

use std::convert::Infallible;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::{Either, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::EgressPolicy;

/// Connections one child may hold open through its proxy at once.
const MAX_CONNECTIONS: usize = 64;
/// How long a request head may take to arrive.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a tunnel stays open after one side has finished.
const HALF_CLOSED_GRACE: Duration = Duration::from_secs(10);
/// The pause after a failed `accept`.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

type ProxyBody = Either<Incoming, Full<Bytes>>;

/// One child's proxy; dropping it closes the port and every connection through it.
#[derive(Debug)]
pub struct EgressProxy {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for EgressProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EgressProxy {
    /// Listens on a fresh loopback port for the child of `upstream` (serving `tenant`).
    pub async fn start(
        policy: Arc<EgressPolicy>,
        upstream: Arc<str>,
        tenant: Option<&str>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let proxying = Arc::new(Proxying {
            policy,
            upstream,
            tenant: tenant.map(Arc::from),
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
            detached: Mutex::new(JoinSet::new()),
        });
        let task = tokio::spawn(accept(listener, proxying));
        Ok(Self { port, task })
    }

    /// The URL children are given in their proxy variables.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

/// What every connection of one proxy shares.
struct Proxying {
    policy: Arc<EgressPolicy>,
    /// Whose requests these are, for the log.
    upstream: Arc<str>,
    tenant: Option<Arc<str>>,
    /// Client connections and open tunnels together stay under [`MAX_CONNECTIONS`].
    slots: Arc<Semaphore>,
    /// Tunnels and destination connections outlive the request that opened them; held
    /// here so that they end with the proxy.
    detached: Mutex<JoinSet<()>>,
}

impl Proxying {
    fn detach(&self, task: impl Future<Output = ()> + Send + 'static) {
        let mut detached = self.detached.lock().unwrap_or_else(PoisonError::into_inner);
        while detached.try_join_next().is_some() {}
        detached.spawn(task);
    }
}

async fn accept(listener: TcpListener, proxying: Arc<Proxying>) {
    // Held here so that aborting the accept loop ends every connection with it.
    let mut connections = JoinSet::new();
    loop {
        let Ok(slot) = proxying.slots.clone().acquire_owned().await else {
            return;
        };
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of descriptors, most likely: let some close before trying again.
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                };
                let proxying = proxying.clone();
                connections.spawn(async move {
                    serve_connection(stream, proxying).await;
                    drop(slot);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn serve_connection(stream: TcpStream, proxying: Arc<Proxying>) {
    let service = hyper::service::service_fn(move |request| {
        let proxying = proxying.clone();
        async move { Ok::<_, Infallible>(handle(request, &proxying).await) }
    });
    let _ = http1_server()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

/// How the proxy reads its clients' connections (public so the fuzz target reads
/// request heads exactly as the proxy does).
pub fn http1_server() -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    builder
}

async fn handle(request: Request<Incoming>, proxying: &Proxying) -> Response<ProxyBody> {
    let Some((host, port)) = target(request.method(), request.uri()) else {
        return refusal(
            StatusCode::BAD_REQUEST,
            "this is a forward proxy: send CONNECT host:port or an absolute http:// URL",
        );
    };
    let method = request.method().clone();
    // A tunnel outlives its request: it takes a slot of its own.
    let tunnel_slot = if method == Method::CONNECT {
        match proxying.slots.clone().try_acquire_owned() {
            Ok(slot) => Some(slot),
            Err(_) => return refusal(StatusCode::SERVICE_UNAVAILABLE, "too many connections"),
        }
    } else {
        None
    };
    let connected = proxying.policy.connect(&host, port).await;
    let upstream = &*proxying.upstream;
    let tenant = proxying.tenant.as_deref();
    let stream = match connected {
        Ok(stream) => {
            tracing::info!(upstream, tenant, %method, %host, port, "egress proxy: allowed");
            stream
        }
        Err(error) => {
            tracing::warn!(upstream, tenant, %method, %host, port, %error, "egress proxy: refused");
            return refusal(StatusCode::FORBIDDEN, &error.to_string());
        }
    };
    if method == Method::CONNECT {
        proxying.detach(async move {
            if let Ok(upgraded) = hyper::upgrade::on(request).await {
                tunnel(TokioIo::new(upgraded), stream).await;
            }
            drop(tunnel_slot);
        });
        return Response::new(Either::Right(Full::new(Bytes::new())));
    }
    match forward(request, stream, proxying).await {
        Ok(response) => response.map(Either::Left),
        Err(_) => refusal(
            StatusCode::BAD_GATEWAY,
            "the destination broke the connection",
        ),
    }
}

/// Carries bytes both ways until both sides are done. Once one side has finished, the
/// other gets [`HALF_CLOSED_GRACE`] to finish too: a peer that never closes its half
/// would otherwise hold the tunnel (and its slot) forever.
async fn tunnel(client: impl AsyncRead + AsyncWrite, destination: TcpStream) {
    let (mut from_client, mut to_client) = tokio::io::split(client);
    let (mut from_destination, mut to_destination) = destination.into_split();
    let up = pump(&mut from_client, &mut to_destination);
    let down = pump(&mut from_destination, &mut to_client);
    tokio::pin!(up, down);
    tokio::select! {
        () = &mut up => { let _ = tokio::time::timeout(HALF_CLOSED_GRACE, down).await; }
        () = &mut down => { let _ = tokio::time::timeout(HALF_CLOSED_GRACE, up).await; }
    }
}

/// Copies until end of stream or an error, then closes the writing half.
async fn pump(from: &mut (impl AsyncRead + Unpin), to: &mut (impl AsyncWrite + Unpin)) {
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        match from.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(read) => {
                if to.write_all(&buffer[..read]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// `host` and `port` of a proxy request: a `CONNECT` authority, or an absolute
/// `http://` URL (HTTPS goes through `CONNECT`). An authority with userinfo is none:
/// clients send credentials in headers, and `[@:x]`-shaped authorities parse to an
/// empty host.
pub fn target(method: &Method, uri: &Uri) -> Option<(String, u16)> {
    let authority = uri.authority()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let port = if method == Method::CONNECT {
        authority.port_u16()?
    } else {
        if uri.scheme_str() != Some("http") {
            return None;
        }
        authority.port_u16().unwrap_or(80)
    };
    let host = authority.host();
    // `[::1]` comes bracketed; the guard parses hosts the way a URL would.
    Some((host.to_owned(), port))
}

/// Sends a plain-HTTP request on to its destination over the checked connection.
async fn forward(
    request: Request<Incoming>,
    stream: TcpStream,
    proxying: &Proxying,
) -> Result<Response<Incoming>, hyper::Error> {
    let (mut parts, body) = request.into_parts();
    destination_head(&mut parts);
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    proxying.detach(async move {
        let _ = connection.await;
    });
    sender.send_request(Request::from_parts(parts, body)).await
}

/// Turns a proxy request's head into the one its destination gets: the target in
/// origin form, `Host` naming the destination (host and port as the URL wrote them,
/// never its userinfo), and no header meant for the proxy hop.
pub fn destination_head(parts: &mut Parts) {
    let host = parts
        .uri
        .authority()
        .map(|authority| match authority.port() {
            Some(port) => format!("{}:{}", authority.host(), port.as_str()),
            None => authority.host().to_owned(),
        });
    let origin_form = parts
        .uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    parts.uri = origin_form;
    strip_hop_by_hop(&mut parts.headers);
    if let Some(host) = host.and_then(|host| HeaderValue::from_str(&host).ok()) {
        parts.headers.insert(header::HOST, host);
    }
}

/// Headers meant for the proxy hop, not the destination (RFC 9110 §7.6.1), including
/// any credentials the child addressed to the proxy.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .collect();
    for name in listed {
        headers.remove(name.as_str());
    }
    for name in [
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "upgrade",
    ] {
        headers.remove(name);
    }
}

fn refusal(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(format!(
        "warden egress proxy: {message}\n"
    )))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    use warden_config::EgressRule;

    async fn page_server() -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(|request: Request<Incoming>| async move {
                            let seen = format!(
                                "{} {} auth={}",
                                request.method(),
                                request.uri(),
                                request.headers().contains_key("proxy-authorization")
                            );
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(seen))))
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (address, task)
    }

    fn proxied_client(proxy: &EgressProxy) -> reqwest::Client {
        reqwest::Client::builder()
            .proxy(reqwest::Proxy::all(proxy.url()).unwrap())
            .build()
            .unwrap()
    }

    #[tokio::test]
    async fn forwards_only_what_the_guard_allows() {
        let (page, _server) = page_server().await;
        let closed = EgressProxy::start(EgressPolicy::new(&[]), "files".into(), Some("acme"))
            .await
            .unwrap();
        let response = proxied_client(&closed)
            .get(format!("http://{page}/secret?token=x"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("loopback (this machine); open it with [egress] allow")
        );

        let open = EgressProxy::start(
            EgressPolicy::new(&[EgressRule::Host("127.0.0.1".into())]),
            "files".into(),
            None,
        )
        .await
        .unwrap();
        let response = proxied_client(&open)
            .get(format!("http://{page}/page?q=1"))
            .header("proxy-authorization", "Basic c2VjcmV0")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        // Origin-form on the far side, and nothing meant for the proxy passed on.
        assert_eq!(response.text().await.unwrap(), "GET /page?q=1 auth=false");
    }

    #[tokio::test]
    async fn tunnels_are_checked_before_they_open() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (page, _server) = page_server().await;
        let proxy = EgressProxy::start(
            EgressPolicy::new(&[EgressRule::Host("127.0.0.1".into())]),
            "files".into(),
            None,
        )
        .await
        .unwrap();
        for (target, expect) in [
            (format!("127.0.0.1:{}", page.port()), "200"),
            (format!("0x7f.1:{}", page.port()), "200"),
            (format!("[::1]:{}", page.port()), "403"),
            (format!("169.254.169.254:{}", page.port()), "403"),
            (format!("metadata.google.internal:{}", page.port()), "403"),
        ] {
            let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
                .await
                .unwrap();
            stream
                .write_all(
                    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes(),
                )
                .await
                .unwrap();
            let mut head = [0_u8; 12];
            stream.read_exact(&mut head).await.unwrap();
            let head = String::from_utf8_lossy(&head);
            assert!(head.ends_with(expect), "{target}: {head}");
            if expect == "200" {
                let mut rest = vec![0_u8; 256];
                let _ = stream.read(&mut rest).await.unwrap();
                stream
                    .write_all(b"GET /through HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    .await
                    .unwrap();
                let mut answer = String::new();
                stream.read_to_string(&mut answer).await.unwrap();
                assert!(answer.ends_with("GET /through auth=false"), "{answer}");
            }
        }
    }

    #[tokio::test]
    async fn what_is_not_a_proxy_request_gets_a_400() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let proxy = EgressProxy::start(EgressPolicy::new(&[]), "files".into(), None)
            .await
            .unwrap();
        for head in [
            "GET /origin-form HTTP/1.1\r\nHost: x\r\n\r\n",
            "CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
            "GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
            // Userinfo in the target (found by the proxy_head fuzz target: this one
            // parses to an empty host).
            "CONNECT [@:C&]:443 HTTP/1.1\r\nHost: [::1]:443\r\n\r\n",
            "GET http://user:pw@example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
        ] {
            let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
                .await
                .unwrap();
            stream.write_all(head.as_bytes()).await.unwrap();
            let mut status = [0_u8; 12];
            stream.read_exact(&mut status).await.unwrap();
            let status = String::from_utf8_lossy(&status);
            assert!(status.ends_with("400"), "{head:?}: {status}");
        }
        // A garbled head is refused by the HTTP parser; the proxy keeps serving.
        let mut stream = TcpStream::connect(("127.0.0.1", proxy.port()))
            .await
            .unwrap();
        stream
            .write_all(b"\x00\x01 not http\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        assert!(
            TcpStream::connect(("127.0.0.1", proxy.port()))
                .await
                .is_ok()
        );
    }

    #[test]
    fn the_destination_gets_origin_form_and_nothing_meant_for_the_proxy() {
        let request = Request::builder()
            .uri("http://example.com:8080/a/b?c=d")
            .header("connection", "keep-alive, x-hop")
            .header("x-hop", "1")
            .header("proxy-authorization", "Basic Zm9vOmJhcg==")
            .header("te", "trailers")
            .header("accept", "*/*")
            .header("host", "elsewhere.example")
            .body(())
            .unwrap();
        let (mut parts, ()) = request.into_parts();
        assert_eq!(
            target(&parts.method, &parts.uri),
            Some(("example.com".to_owned(), 8080))
        );
        destination_head(&mut parts);
        assert_eq!(parts.uri, "/a/b?c=d");
        assert_eq!(parts.headers["host"], "example.com:8080");
        assert_eq!(parts.headers["accept"], "*/*");
        for gone in ["connection", "x-hop", "proxy-authorization", "te"] {
            assert!(!parts.headers.contains_key(gone), "{gone} was sent on");
        }
    }
}
