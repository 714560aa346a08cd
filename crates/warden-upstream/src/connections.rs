//! The HTTP/1.1 connections to one remote upstream. A call drives its connection in its
//! own task: the request is written and the answer read there, with no hop to a
//! connection task and back (at low load those wake-ups cost more than the request).
//! A connection whose answer was read to its end goes back for the next call; one
//! dropped before that is closed, which is how a 2026-07-28 server learns that a call
//! was cancelled.

use std::future::{Future as _, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Instant;

use crate::outbound::{POOL_IDLE_TIMEOUT, SpkiPins, chain, tls_config};
use base64::Engine as _;
use http_body_util::Full;
use hyper::body::{Body as _, Bytes, Incoming};
use hyper::client::conn::http1;
use hyper::header::{AUTHORIZATION, HOST, HeaderMap, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use warden_egress::{CONNECT_TIMEOUT, EgressPolicy};

/// Idle connections kept per upstream; one more is closed. Sixteen parallel calls keep
/// sixteen.
const MAX_IDLE: usize = 64;
const CLOSED_EARLY: &str = "the server closed the connection before its answer";

/// Where one upstream is and how to reach it; connections are opened on demand and
/// kept while idle.
pub(crate) struct Connections {
    host: url::Host<String>,
    port: u16,
    /// The request target (`/mcp?x=y`) and the `Host` header, fixed per upstream.
    target: Uri,
    authority: HeaderValue,
    /// The URL's `user:password`, as HTTP Basic credentials (what reqwest sent).
    credentials: Option<HeaderValue>,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    egress: Arc<EgressPolicy>,
    idle: Mutex<Vec<Idle>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

struct Idle {
    connection: Connection,
    since: Instant,
}

/// One HTTP/1.1 connection: its sender, and the state machine its caller drives.
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: http1::Connection<TokioIo<Stream>, Full<Bytes>>,
    closed: bool,
}

impl Connection {
    /// Moves the connection's reading and writing on; remembers when it has closed
    /// (the server hung up, or an error ended it).
    fn drive(&mut self, cx: &mut Context<'_>) {
        if !self.closed && Pin::new(&mut self.driver).poll(cx).is_ready() {
            self.closed = true;
        }
    }
}

impl Connections {
    /// An `https` URL gets verified TLS (`outbound::tls_config`), with `pins` if any.
    pub fn new(
        url: &url::Url,
        pins: Option<&SpkiPins>,
        egress: Arc<EgressPolicy>,
    ) -> Result<Self, String> {
        let host = url.host().ok_or("a URL without a host")?.to_owned();
        let port = url.port_or_known_default().ok_or("a URL without a port")?;
        let target = url[url::Position::BeforePath..url::Position::AfterQuery]
            .parse::<Uri>()
            .map_err(|_| "a path that is no request target")?;
        let authority =
            HeaderValue::from_str(&url[url::Position::BeforeHost..url::Position::AfterPort])
                .map_err(|_| "a host that is no header value")?;
        let credentials = basic_credentials(url)?;
        let tls = match url.scheme() {
            "https" => {
                let mut config = tls_config(pins)?;
                config.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = match &host {
                    url::Host::Domain(name) => ServerName::try_from(name.clone())
                        .map_err(|_| "a host name TLS cannot verify")?,
                    url::Host::Ipv4(ip) => ServerName::from(std::net::IpAddr::V4(*ip)),
                    url::Host::Ipv6(ip) => ServerName::from(std::net::IpAddr::V6(*ip)),
                };
                Some((TlsConnector::from(Arc::new(config)), name))
            }
            _ => None,
        };
        Ok(Self {
            host,
            port,
            target,
            authority,
            credentials,
            tls,
            egress,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Sends one request with `headers` (the upstream's target, `Host` and URL
    /// credentials are added) and gives its answer once the head has arrived. An idle
    /// connection found closed, or one that could not take the request before any of
    /// it was written, is replaced by a new one: a request is never sent twice.
    pub async fn send(
        &self,
        method: Method,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<Answer<'_>, String> {
        headers.insert(HOST, self.authority.clone());
        if let Some(credentials) = &self.credentials
            && !headers.contains_key(AUTHORIZATION)
        {
            headers.insert(AUTHORIZATION, credentials.clone());
        }
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = self.target.clone();
        *request.headers_mut() = headers;
        loop {
            let (mut connection, reused) = match self.take_idle() {
                Some(connection) => (connection, true),
                None => (self.connect().await?, false),
            };
            let ready = poll_fn(|cx| {
                connection.drive(cx);
                if connection.closed {
                    return Poll::Ready(Err(None));
                }
                connection.sender.poll_ready(cx).map_err(Some)
            })
            .await;
            match ready {
                Ok(()) => {}
                Err(_) if reused => continue,
                Err(Some(error)) => return Err(chain(&error)),
                Err(None) => return Err(CLOSED_EARLY.into()),
            }
            let mut sending = pin!(connection.sender.try_send_request(request));
            let sent = poll_fn(|cx| {
                connection.drive(cx);
                match sending.as_mut().poll(cx) {
                    Poll::Pending if connection.closed => Poll::Ready(None),
                    polled => polled.map(Some),
                }
            })
            .await;
            let mut refused = match sent {
                Some(Ok(response)) => {
                    let (head, body) = response.into_parts();
                    return Ok(Answer {
                        head,
                        body,
                        connection: Some(connection),
                        ended: false,
                        connections: self,
                    });
                }
                Some(Err(refused)) => refused,
                // The connection ended with the request queued or on its way: closing
                // it answers the request (with the request itself if none of it went).
                None => {
                    drop(connection);
                    match sending.await {
                        Ok(_) => return Err(CLOSED_EARLY.into()),
                        Err(refused) => refused,
                    }
                }
            };
            match refused.take_message() {
                Some(unsent) if reused => request = unsent,
                _ => return Err(chain(refused.error())),
            }
        }
    }

    /// The connection used last, unless it has idled too long (older ones are
    /// closed: they are older still).
    fn take_idle(&self) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let found = idle.pop()?;
        if found.since.elapsed() < POOL_IDLE_TIMEOUT {
            return Some(found.connection);
        }
        let stale = std::mem::take(&mut *idle);
        drop(idle);
        drop(stale);
        None
    }

    fn keep(&self, connection: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                connection,
                since: Instant::now(),
            });
        }
    }

    /// A new connection, through the egress guard (only to an address it allows, never
    /// to a second lookup's answer), then TLS for an `https` upstream.
    async fn connect(&self) -> Result<Connection, String> {
        let opening = async {
            let host = self.host.to_string();
            let tcp = self
                .egress
                .connect(&host, self.port)
                .await
                .map_err(|error| error.to_string())?;
            // Requests are written whole; waiting for more to send only delays them.
            tcp.set_nodelay(true).map_err(|error| error.to_string())?;
            match &self.tls {
                None => Ok(Stream::Plain(tcp)),
                Some((connector, name)) => connector
                    .connect(name.clone(), tcp)
                    .await
                    .map(|tls| Stream::Tls(Box::new(tls)))
                    .map_err(|error| chain(&error)),
            }
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, opening)
            .await
            .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))??;
        let (sender, driver) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| chain(&error))?;
        Ok(Connection {
            sender,
            driver,
            closed: false,
        })
    }
}

/// An answer whose head has arrived; its body is read with [`Answer::chunk`].
pub(crate) struct Answer<'a> {
    pub head: hyper::http::response::Parts,
    body: Incoming,
    connection: Option<Connection>,
    ended: bool,
    connections: &'a Connections,
}

impl Answer<'_> {
    /// The next piece of the body, or `None` at its end.
    pub async fn chunk(&mut self) -> Option<Result<Bytes, String>> {
        while !self.ended {
            let frame = poll_fn(|cx| {
                let Some(connection) = &mut self.connection else {
                    return Poll::Ready(Some(Err(CLOSED_EARLY.to_owned())));
                };
                connection.drive(cx);
                match Pin::new(&mut self.body).poll_frame(cx) {
                    // Nothing more can come once the connection is closed.
                    Poll::Pending if connection.closed => {
                        Poll::Ready(Some(Err(CLOSED_EARLY.to_owned())))
                    }
                    frame => frame.map(|frame| frame.map(|frame| frame.map_err(|e| chain(&e)))),
                }
            })
            .await;
            match frame {
                None => self.ended = true,
                Some(Ok(frame)) => {
                    // Trailers carry nothing an upstream's message needs.
                    if let Ok(data) = frame.into_data() {
                        return Some(Ok(data));
                    }
                }
                Some(Err(error)) => return Some(Err(error)),
            }
        }
        None
    }
}

impl Drop for Answer<'_> {
    /// A body read to its end leaves the connection ready for the next request; any
    /// other is closed with it.
    fn drop(&mut self) {
        if let Some(connection) = self.connection.take()
            && self.ended
            && !connection.closed
        {
            self.connections.keep(connection);
        }
    }
}

/// `Authorization: Basic` from a URL's `user:password`, as browsers and reqwest send it.
fn basic_credentials(url: &url::Url) -> Result<Option<HeaderValue>, String> {
    if url.username().is_empty() && url.password().is_none() {
        return Ok(None);
    }
    let decode = |part: &str| percent_encoding::percent_decode_str(part).collect::<Vec<u8>>();
    let mut pair = decode(url.username());
    pair.push(b':');
    pair.extend(decode(url.password().unwrap_or_default()));
    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
    let mut value = HeaderValue::from_str(&format!("Basic {encoded}"))
        .map_err(|_| "credentials that are no header value")?;
    value.set_sensitive(true);
    Ok(Some(value))
}

/// A plain or TLS connection, read and written alike.
enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(tcp) => tcp.is_write_vectored(),
            Stream::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Stream::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use hyper::body::Incoming;
    use hyper::{Response, StatusCode};
    use tokio::net::TcpListener;
    use warden_config::EgressRule;

    use super::*;

    /// A listener on 127.0.0.1 that counts the connections it accepted and those
    /// `serve` is done with (each served in a task of its own).
    struct Server {
        port: u16,
        accepted: Arc<AtomicUsize>,
        ended: Arc<AtomicUsize>,
    }

    async fn counting<Serving>(serve: impl Fn(TcpStream) -> Serving + Send + 'static) -> Server
    where
        Serving: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let ended = Arc::new(AtomicUsize::new(0));
        let (on_accept, on_end) = (accepted.clone(), ended.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                on_accept.fetch_add(1, Ordering::SeqCst);
                let serving = serve(stream);
                let on_end = on_end.clone();
                tokio::spawn(async move {
                    serving.await;
                    on_end.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Server {
            port,
            accepted,
            ended,
        }
    }

    /// An HTTP/1.1 server that keeps connections, and answers `/big` with a megabyte,
    /// anything else with what it was sent (`Host`, target, `Authorization`).
    async fn server() -> Server {
        counting(|stream| async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(echo))
                .await;
        })
        .await
    }

    async fn echo(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
        if request.uri().path() == "/big" {
            return Ok(Response::new(Full::new(Bytes::from(vec![b'x'; 1 << 20]))));
        }
        let header = |name| {
            request
                .headers()
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        let seen = format!(
            "{} {} {}",
            header(HOST),
            request.uri(),
            header(AUTHORIZATION)
        );
        let mut response = Response::new(Full::new(Bytes::from(seen)));
        *response.status_mut() = StatusCode::OK;
        Ok(response)
    }

    fn connections(url: &str) -> Connections {
        let egress = EgressPolicy::new(&[EgressRule::Host("127.0.0.1".into())]);
        Connections::new(&url::Url::parse(url).unwrap(), None, egress).unwrap()
    }

    async fn body(connections: &Connections, headers: HeaderMap) -> String {
        let mut answer = connections
            .send(Method::POST, headers, Bytes::from_static(b"{}"))
            .await
            .unwrap();
        assert_eq!(answer.head.status, StatusCode::OK);
        let mut text = Vec::new();
        while let Some(chunk) = answer.chunk().await {
            text.extend_from_slice(&chunk.unwrap());
        }
        String::from_utf8(text).unwrap()
    }

    async fn until(what: &str, done: impl Fn() -> bool) {
        for _ in 0..500 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("never: {what}");
    }

    #[tokio::test]
    async fn answers_read_to_their_end_leave_the_connection_for_the_next_call() {
        let server = server().await;
        let upstream = connections(&format!("http://127.0.0.1:{}/mcp?x=1", server.port));
        for _ in 0..3 {
            let seen = body(&upstream, HeaderMap::new()).await;
            assert_eq!(seen, format!("127.0.0.1:{} /mcp?x=1 -", server.port));
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 1);
        assert_eq!(server.ended.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn an_answer_dropped_before_its_end_closes_its_connection() {
        let server = server().await;
        let big = connections(&format!("http://127.0.0.1:{}/big", server.port));
        let answer = big
            .send(Method::POST, HeaderMap::new(), Bytes::new())
            .await
            .unwrap();
        drop(answer);
        // The server sees the close (how a cancelled call is announced) ...
        until("the server saw the connection end", || {
            server.ended.load(Ordering::SeqCst) == 1
        })
        .await;
        // ... and the next call opens a connection of its own.
        let mut answer = big
            .send(Method::POST, HeaderMap::new(), Bytes::new())
            .await
            .unwrap();
        let mut read = 0;
        while let Some(chunk) = answer.chunk().await {
            read += chunk.unwrap().len();
        }
        assert_eq!(read, 1 << 20);
        assert_eq!(server.accepted.load(Ordering::SeqCst), 2);
    }

    /// A server that answers one request per connection as if it kept the connection
    /// (no `Connection: close`), then hangs up when told: what a server whose idle
    /// timeout struck does to a kept connection.
    async fn hanging_up_server(hang_up: Arc<tokio::sync::Notify>) -> Server {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        counting(move |mut stream| {
            let hang_up = hang_up.clone();
            async move {
                let mut request = Vec::new();
                let mut buffer = [0u8; 1024];
                while !request.ends_with(b"\r\n\r\n{}") {
                    let read = stream.read(&mut buffer).await.unwrap();
                    assert!(read > 0, "the request ended early");
                    request.extend_from_slice(&buffer[..read]);
                }
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                hang_up.notified().await;
            }
        })
        .await
    }

    #[tokio::test]
    async fn an_idle_connection_the_server_closed_is_replaced_without_an_error() {
        let hang_up = Arc::new(tokio::sync::Notify::new());
        let server = hanging_up_server(hang_up.clone()).await;
        let upstream = connections(&format!("http://127.0.0.1:{}/mcp", server.port));
        for round in 1..=3 {
            assert_eq!(body(&upstream, HeaderMap::new()).await, "ok");
            // Kept: its answer said nothing of closing.
            assert_eq!(upstream.idle.lock().unwrap().len(), 1);
            hang_up.notify_one();
            until("the server hung up", || {
                server.ended.load(Ordering::SeqCst) == round
            })
            .await;
        }
        assert_eq!(server.accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn url_credentials_are_sent_as_basic_unless_the_operator_set_authorization() {
        let server = server().await;
        let upstream = connections(&format!(
            "http://us%20er:p%40ss@127.0.0.1:{}/mcp",
            server.port
        ));
        let seen = body(&upstream, HeaderMap::new()).await;
        let basic = base64::engine::general_purpose::STANDARD.encode("us er:p@ss");
        assert_eq!(
            seen,
            format!("127.0.0.1:{} /mcp Basic {basic}", server.port)
        );
        let mut configured = HeaderMap::new();
        configured.insert(AUTHORIZATION, HeaderValue::from_static("Bearer operator"));
        let seen = body(&upstream, configured).await;
        assert!(seen.ends_with(" Bearer operator"), "{seen}");
    }

    #[tokio::test]
    async fn an_address_the_egress_guard_refuses_is_never_connected() {
        let server = server().await;
        let egress = EgressPolicy::new(&[]);
        let url = url::Url::parse(&format!("http://127.0.0.1:{}/mcp", server.port)).unwrap();
        let upstream = Connections::new(&url, None, egress).unwrap();
        let refused = upstream
            .send(Method::POST, HeaderMap::new(), Bytes::new())
            .await
            .err()
            .unwrap();
        assert!(refused.contains("127.0.0.1"), "{refused}");
        assert_eq!(server.accepted.load(Ordering::SeqCst), 0);
    }
}
