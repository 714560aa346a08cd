//! Where connections come from: plain TCP on loopback (or with the operator's consent),
//! or TLS. TLS handshakes run in tasks of their own, bounded in number and in time, so a
//! client that stalls mid-handshake holds neither the accept loop nor a worker. The
//! certificate is read at start and again on [`TlsCertificate::reload`] (SIGHUP); new
//! connections get the new one, established ones keep theirs.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use warden_config::Tls;

/// Handshakes in progress at once; past it, new connections wait to be accepted.
const MAX_HANDSHAKES: usize = 256;
/// Finished handshakes waiting for the server to take them.
const READY_QUEUE: usize = 64;

/// Why TLS could not be set up. The message names the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path} holds no PEM certificate")]
    NoCertificate { path: String },
    #[error("{path} holds no PEM private key")]
    NoKey { path: String },
    #[error("the certificate and key do not make a TLS configuration: {0}")]
    Invalid(rustls::Error),
}

/// The certificate files and the configuration built from them.
pub struct TlsCertificate {
    tls: Tls,
    current: RwLock<Arc<ServerConfig>>,
}

impl TlsCertificate {
    pub fn load(tls: &Tls) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(Self {
            tls: tls.clone(),
            current: RwLock::new(server_config(&tls.cert, &tls.key)?),
        }))
    }

    /// Reads the files again; on failure the previous certificate stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let fresh = server_config(&self.tls.cert, &self.tls.key)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone(),
        )
    }
}

/// TLS 1.2 and 1.3 only (rustls offers nothing older), HTTP/1.1.
fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.display().to_string(),
            source,
        })
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert.display().to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|_| TlsError::NoKey {
        path: key.display().to_string(),
    })?;
    let mut config = ServerConfig::builder_with_protocol_versions(&[
        &rustls::version::TLS13,
        &rustls::version::TLS12,
    ])
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(TlsError::Invalid)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A connection, plain or encrypted.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Connection for T {}

/// An accepted connection and its place under the connection cap, released when the
/// connection is dropped.
pub(crate) struct Accepted {
    pub io: Box<dyn Connection>,
    pub peer: SocketAddr,
    pub slot: OwnedSemaphorePermit,
}

/// Where `serve` takes its connections from. At most `max_connections` are open at
/// once, TLS handshakes included; past that, nothing is accepted and new clients wait in
/// the kernel's backlog.
pub struct Listener {
    local: SocketAddr,
    kind: Kind,
}

enum Kind {
    Plain {
        listener: TcpListener,
        slots: Arc<Semaphore>,
    },
    Tls {
        ready: mpsc::Receiver<Accepted>,
        accepting: tokio::task::JoinHandle<()>,
    },
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Kind::Tls { accepting, .. } = &self.kind {
            accepting.abort();
        }
    }
}

impl Listener {
    pub fn plain(listener: TcpListener, max_connections: usize) -> io::Result<Self> {
        Ok(Self {
            local: listener.local_addr()?,
            kind: Kind::Plain {
                listener,
                slots: Arc::new(Semaphore::new(max_connections)),
            },
        })
    }

    pub fn tls(
        listener: TcpListener,
        max_connections: usize,
        certificate: Arc<TlsCertificate>,
        handshake_timeout: Duration,
    ) -> io::Result<Self> {
        let local = listener.local_addr()?;
        let (done, ready) = mpsc::channel(READY_QUEUE);
        let slots = Arc::new(Semaphore::new(max_connections));
        let accepting = tokio::spawn(accept_tls(
            listener,
            slots,
            certificate,
            handshake_timeout,
            done,
        ));
        Ok(Self {
            local,
            kind: Kind::Tls { ready, accepting },
        })
    }

    pub fn is_tls(&self) -> bool {
        matches!(self.kind, Kind::Tls { .. })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    pub(crate) async fn accept(&mut self) -> Accepted {
        match &mut self.kind {
            Kind::Plain { listener, slots } => {
                let slot = take_slot(slots).await;
                let (tcp, peer) = accept_tcp(listener).await;
                Accepted {
                    io: Box::new(tcp),
                    peer,
                    slot,
                }
            }
            Kind::Tls { ready, .. } => match ready.recv().await {
                Some(accepted) => accepted,
                // The accept task is gone (it ends only with the listener): nothing more
                // will come.
                None => std::future::pending().await,
            },
        }
    }
}

async fn take_slot(slots: &Arc<Semaphore>) -> OwnedSemaphorePermit {
    match slots.clone().acquire_owned().await {
        Ok(slot) => slot,
        // The semaphore is never closed.
        Err(_) => std::future::pending().await,
    }
}

async fn accept_tcp(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn accept_tls(
    listener: TcpListener,
    slots: Arc<Semaphore>,
    certificate: Arc<TlsCertificate>,
    handshake_timeout: Duration,
    done: mpsc::Sender<Accepted>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let slot = take_slot(&slots).await;
        let handshake = take_slot(&handshakes).await;
        let (tcp, peer) = accept_tcp(&listener).await;
        let acceptor = certificate.acceptor();
        let done = done.clone();
        tokio::spawn(async move {
            let result = tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await;
            drop(handshake);
            match result {
                Ok(Ok(stream)) => {
                    let _ = done
                        .send(Accepted {
                            io: Box::new(stream),
                            peer,
                            slot,
                        })
                        .await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// The client's address, as authentication and the rate limits count by it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientAddr(pub SocketAddr);
