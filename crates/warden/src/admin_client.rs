//! Asking a running Warden's admin listener on this machine: `warden tools list` reads
//! its catalogue, `warden reload` makes it read its configuration again. Plain HTTP, or
//! with `[admin] tls` HTTPS, where the listener must present exactly the certificate the
//! configuration names (it is this machine's own; no CA is asked).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::Failure;

/// How long an admin request may take (a reload restarts upstreams, which takes time).
const ADMIN_TIMEOUT: Duration = Duration::from_secs(70);

/// The admin listener to ask.
pub(crate) struct AdminTarget {
    pub address: String,
    /// With `[admin] tls`: the certificate file it presents.
    certificate: Option<PathBuf>,
}

impl std::fmt::Display for AdminTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.address)
    }
}

/// The admin listener to ask: `--admin`, else the `[admin] listen` of `--config`, else
/// the default; over TLS when the configuration says `[admin] tls`.
pub(crate) fn target(admin: Option<String>, config: Option<&Path>) -> Result<AdminTarget, Failure> {
    let locations = config.map(warden_config::locations_in).transpose()?;
    let certificate = locations.as_ref().and_then(|l| l.admin_certificate.clone());
    let address = match (admin, locations) {
        (Some(admin), _) => admin,
        (None, Some(locations)) => locations.admin_listen,
        (None, None) => warden_config::DEFAULT_ADMIN_LISTEN.to_owned(),
    };
    Ok(AdminTarget {
        address,
        certificate,
    })
}

/// GETs `path`; anything but 200 is an error naming the status.
pub(crate) fn get(target: &AdminTarget, path: &str) -> Result<String, Failure> {
    let (status, body) = request(target, "GET", path)?;
    if status != 200 {
        return Err(format!("the admin listener at {target} answered {status}").into());
    }
    Ok(body)
}

/// One request; the answer's status and body.
pub(crate) fn request(
    target: &AdminTarget,
    method: &str,
    path: &str,
) -> Result<(u16, String), Failure> {
    let address = &target.address;
    let unreachable = |error: std::io::Error| {
        format!(
            "cannot reach Warden's admin listener at {address} ({error}); is Warden running? Name its listener with --admin ADDR or --config FILE"
        )
    };
    let socket: std::net::SocketAddr = address
        .parse()
        .map_err(|_| format!("{address:?} is not an address and port, e.g. 127.0.0.1:9090"))?;
    let tcp = std::net::TcpStream::connect_timeout(&socket, Duration::from_secs(5))
        .map_err(unreachable)?;
    tcp.set_read_timeout(Some(ADMIN_TIMEOUT))
        .map_err(unreachable)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let answer = match &target.certificate {
        None => exchange(tcp, &head),
        Some(certificate) => {
            let config = pinned_to(certificate)?;
            let name = ServerName::IpAddress(socket.ip().into());
            let connection = rustls::ClientConnection::new(config, name)
                .map_err(|e| format!("TLS to the admin listener at {address}: {e}"))?;
            exchange(rustls::StreamOwned::new(connection, tcp), &head)
        }
    }
    .map_err(unreachable)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("the admin listener at {address} did not answer in HTTP"))?;
    Ok((status, body.to_owned()))
}

/// Writes `head`, reads the answer to its end.
fn exchange(mut stream: impl Read + Write, head: &str) -> std::io::Result<String> {
    stream.write_all(head.as_bytes())?;
    stream.flush()?;
    let mut answer = Vec::new();
    match stream.read_to_end(&mut answer) {
        Ok(_) => {}
        // A peer that closes without TLS's close_notify, once it has answered.
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof && !answer.is_empty() => {}
        Err(error) => return Err(error),
    }
    Ok(String::from_utf8_lossy(&answer).into_owned())
}

/// A TLS client that accepts only a server presenting the first certificate of the
/// PEM file at `path`.
fn pinned_to(path: &Path) -> Result<Arc<rustls::ClientConfig>, Failure> {
    let unreadable = |e: &dyn std::fmt::Display| {
        format!(
            "cannot read the admin listener's certificate {}: {e}",
            path.display()
        )
    };
    let expected = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(&e))?
        .next()
        .ok_or_else(|| unreadable(&"no certificate in it"))?
        .map_err(|e| unreadable(&e))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pinned { expected, provider }))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts exactly one certificate (the configured one); signatures are still checked.
#[derive(Debug)]
struct Pinned {
    expected: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.expected.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the admin listener presented another certificate than the configured one".into(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
