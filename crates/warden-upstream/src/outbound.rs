//! How Warden itself talks HTTP to other servers (remote upstreams, an authorization
//! server's keys): one client policy and one bounded body reader, so every outbound path
//! gets the same rules.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures_util::StreamExt as _;
use sha2::Digest as _;

use crate::UpstreamError;
use warden_egress::{CONNECT_TIMEOUT, EgressPolicy};

/// A kept connection unused this long is closed rather than reused (reqwest's pools and
/// the upstream connections alike).
pub(crate) const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// TLS always verified (rustls, the platform's roots), no proxy from the environment,
/// and names resolved through the egress guard. `https_only` refuses plain-HTTP URLs
/// outright. At most `max_redirects` redirects are followed, each hop's URL checked by
/// the guard before it is requested (its name is checked again when resolved).
pub fn client(
    https_only: bool,
    max_redirects: usize,
    egress: &Arc<EgressPolicy>,
    pins: Option<&SpkiPins>,
) -> Result<reqwest::Client, String> {
    let redirects = if max_redirects == 0 {
        reqwest::redirect::Policy::none()
    } else {
        let policy = egress.clone();
        reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                attempt.error(RedirectRefused::TooMany)
            } else if !matches!(attempt.url().scheme(), "http" | "https") {
                attempt.error(RedirectRefused::Scheme)
            } else if let Err(refused) = policy.check_url(attempt.url()) {
                attempt.error(refused)
            } else {
                attempt.follow()
            }
        })
    };
    let mut builder = reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver {
            policy: egress.clone(),
        }))
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .redirect(redirects)
        .no_proxy()
        .https_only(https_only);
    if let Some(pins) = pins {
        builder = builder.tls_backend_preconfigured(tls_config(Some(pins))?);
    }
    builder.build().map_err(cause)
}

/// Certificates a server must present besides a valid chain (`pin_sha256`): the
/// SHA-256 of the end-entity certificate's SubjectPublicKeyInfo, as `openssl` and HPKP
/// print it (base64). Two pins let a key be rotated.
#[derive(Debug, Clone)]
pub struct SpkiPins {
    /// Who is pinned (`upstream "fs"`, `the JWKS`), for the error.
    pub who: String,
    pub hashes: Vec<[u8; 32]>,
}

/// The platform's chain verification, then the pins.
#[derive(Debug)]
struct PinnedVerifier {
    chain: rustls_platform_verifier::Verifier,
    pins: SpkiPins,
}

impl rustls::client::danger::ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        server_name: &rustls::pki_types::ServerName<'_>,
        ocsp_response: &[u8],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        let verified = self.chain.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        let certificate = webpki::EndEntityCert::try_from(end_entity).map_err(|_| {
            rustls::Error::General(format!("{}: the certificate cannot be read", self.pins.who))
        })?;
        let spki = certificate.subject_public_key_info();
        let hash: [u8; 32] = sha2::Sha256::digest(spki.as_ref()).into();
        if self.pins.hashes.contains(&hash) {
            Ok(verified)
        } else {
            Err(rustls::Error::General(format!(
                "the certificate of {} matches none of its pin_sha256 (its key's pin is {})",
                self.pins.who,
                base64::engine::general_purpose::STANDARD.encode(hash)
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.chain.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.chain.supported_verify_schemes()
    }
}

/// TLS that verifies the chain against the platform's roots, and then the pins if any.
pub fn tls_config(pins: Option<&SpkiPins>) -> Result<rustls::ClientConfig, String> {
    let built = || -> Result<rustls::ClientConfig, rustls::Error> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let chain = rustls_platform_verifier::Verifier::new(provider.clone())?;
        let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> = match pins {
            Some(pins) => Arc::new(PinnedVerifier {
                chain,
                pins: pins.clone(),
            }),
            None => Arc::new(chain),
        };
        Ok(rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth())
    };
    built().map_err(|error| match pins {
        Some(pins) => format!("TLS for {}: {error}", pins.who),
        None => format!("TLS: {error}"),
    })
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum RedirectRefused {
    #[error("too many redirects")]
    TooMany,
    #[error("a redirect to a scheme other than http or https")]
    Scheme,
}

/// The whole body, refused as soon as it passes `max` bytes.
pub async fn read_capped(
    response: reqwest::Response,
    max: usize,
) -> Result<Vec<u8>, UpstreamError> {
    let mut body = Vec::new();
    let mut chunks = response.bytes_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|_| UpstreamError::Connect)?;
        if body.len() + chunk.len() > max {
            return Err(UpstreamError::Oversized);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A URL as a log line may show it: scheme, host, port and path, without the user,
/// password, query or fragment (any of them may carry a credential).
pub fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    let _ = shown.set_username("");
    let _ = shown.set_password(None);
    shown.set_query(None);
    shown.set_fragment(None);
    shown.to_string()
}

/// Why a request failed, down to the cause (`connection refused`, the egress guard's
/// reason), without the URL reqwest would put in it.
pub fn cause(error: reqwest::Error) -> String {
    chain(&error.without_url())
}

/// An error and its causes on one line, each said once (`connection refused`, the TLS
/// alert, the pin that did not match).
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        let part = inner.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = inner.source();
    }
    text
}

/// Resolves names and keeps only the addresses the policy allows; a name left with
/// none fails, so nothing is connected to.
#[derive(Debug)]
pub struct GuardedResolver {
    pub policy: Arc<EgressPolicy>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addresses = policy.addresses(&host).await?;
            let addresses = addresses.into_iter().map(|ip| SocketAddr::new(ip, 0));
            Ok(Box::new(addresses) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shown_url_keeps_no_credential() {
        let url =
            reqwest::Url::parse("https://user:pw@mcp.example.com:8443/v1/mcp?token=secret#frag")
                .unwrap();
        assert_eq!(shown_url(&url), "https://mcp.example.com:8443/v1/mcp");
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_at_connect_time() {
        use reqwest::dns::Resolve as _;
        let guarded = GuardedResolver {
            policy: EgressPolicy::new(&[]),
        };
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(guarded.resolve(name).await.is_err());
        let open = GuardedResolver {
            policy: EgressPolicy::new(&[warden_config::EgressRule::Host("localhost".into())]),
        };
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        assert!(open.resolve(name).await.is_ok());
    }
}
