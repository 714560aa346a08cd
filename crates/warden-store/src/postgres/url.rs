//! A `postgres://` URL as Warden reads it: the connection settings, and whether the
//! server is reached in plaintext or over TLS that verifies the server.
//!
//! TLS is never optional once asked for, and never unverified: `sslmode=require`,
//! `verify-ca` and `verify-full` all verify the certificate chain and the host name
//! (libpq's `require` verifies neither; a gateway should not trust a server it cannot
//! tell from an impostor). Plaintext is for this machine, or where the URL says
//! `sslmode=disable`; a server elsewhere with no mode named is reached over TLS.

use std::str::FromStr as _;
use std::sync::Arc;

use rustls_pki_types::pem::PemObject as _;
use tokio_postgres::config::{Host, SslMode};

use crate::{Result, StoreError};

/// How connections reach the server.
#[derive(Clone)]
pub(crate) enum Transport {
    Plain,
    /// TLS, trusting the PEM file `root_cert` names, else the system's roots.
    Tls {
        root_cert: Option<String>,
    },
}

/// The TLS connector for [`Transport::Tls`]: its roots are read here, when a caller is
/// about to connect (not when a URL is only read for its user name).
pub(crate) fn tls_connector(
    root_cert: Option<&str>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StoreError::Invalid(format!("TLS to PostgreSQL: {e}")))?
    .with_root_certificates(roots(root_cert)?)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(client))
}

/// The connection settings in `url` and the transport they call for, without the URL
/// (it may hold a password) in any error.
pub(crate) fn parse(url: &str) -> Result<(tokio_postgres::Config, Transport)> {
    let (rest, tls) = take_tls_parameters(url)?;
    let mut config = tokio_postgres::Config::from_str(&rest).map_err(|_| {
        StoreError::Invalid(
            "the PostgreSQL URL does not parse (expected postgres://user@host:port/database)"
                .into(),
        )
    })?;
    let local = config.get_hosts().iter().all(|host| match host {
        Host::Tcp(name) => {
            name == "localhost"
                || name
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Host::Unix(_) => true,
    });
    let encrypted = match tls.mode.as_deref() {
        Some("disable") => false,
        // The driver's default would try TLS and fall back to plaintext silently.
        None | Some("prefer" | "allow") => !local,
        Some("require" | "verify-ca" | "verify-full") => true,
        Some(other) => {
            return Err(StoreError::Invalid(format!(
                "sslmode={other} is not a mode: disable, prefer, require, verify-ca or verify-full"
            )));
        }
    };
    if !encrypted {
        config.ssl_mode(SslMode::Disable);
        return Ok((config, Transport::Plain));
    }
    config.ssl_mode(SslMode::Require);
    Ok((
        config,
        Transport::Tls {
            root_cert: tls.root_cert,
        },
    ))
}

/// What the URL says about TLS, which the driver does not read itself.
#[derive(Default)]
struct TlsParameters {
    mode: Option<String>,
    /// `sslrootcert`: a PEM file of the certificates to trust, or `system`.
    root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of the URL's query (the driver knows only
/// three modes and no root file), and refuses client certificates.
fn take_tls_parameters(url: &str) -> Result<(String, TlsParameters)> {
    let mut tls = TlsParameters::default();
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_owned(), tls));
    };
    let mut kept = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "sslmode" => tls.mode = Some(value.into_owned()),
            "sslrootcert" => tls.root_cert = Some(value.into_owned()),
            "sslcert" | "sslkey" | "sslpassword" => {
                return Err(StoreError::Invalid(format!(
                    "{key}: client certificates to PostgreSQL are not supported; authenticate with a password (or trust on a local socket)"
                )));
            }
            _ => {
                kept.append_pair(&key, &value);
            }
        }
    }
    let kept = kept.finish();
    Ok((
        if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{kept}")
        },
        tls,
    ))
}

/// The certificates TLS to PostgreSQL trusts: the file `sslrootcert` names, else the
/// system's.
fn roots(root_cert: Option<&str>) -> Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) if path != "system" => {
            let certificates = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .and_then(Iterator::collect::<std::result::Result<Vec<_>, _>>)
                .map_err(|e| StoreError::Invalid(format!("sslrootcert {path}: {e}")))?;
            let (added, _) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(StoreError::Invalid(format!(
                    "sslrootcert {path}: no certificate in it"
                )));
            }
        }
        _ => {
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(StoreError::Invalid(
                    "TLS to PostgreSQL: the system holds no trusted certificates; name the server's CA with sslrootcert=/path/ca.pem".into(),
                ));
            }
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transport(url: &str) -> &'static str {
        match parse(url) {
            Ok((_, Transport::Plain)) => "plain",
            Ok((_, Transport::Tls { .. })) => "tls",
            Err(_) => "refused",
        }
    }

    /// `url` read, and its TLS connector made when it asks for one.
    fn ready(url: &str) -> Result<()> {
        match parse(url)?.1 {
            Transport::Plain => Ok(()),
            Transport::Tls { root_cert } => tls_connector(root_cert.as_deref()).map(drop),
        }
    }

    #[test]
    fn plaintext_only_on_this_machine_or_when_asked_for() {
        assert_eq!(transport("postgres://warden@127.0.0.1/warden"), "plain");
        assert_eq!(
            transport("postgres://warden@localhost:5433/warden?sslmode=prefer"),
            "plain"
        );
        assert_eq!(
            transport("postgres://warden@db.example.com/warden?sslmode=disable"),
            "plain"
        );
        // Elsewhere, TLS unless disabled, whatever the driver's default would do.
        assert_eq!(transport("postgres://warden@db.example.com/warden"), "tls");
        assert_eq!(
            transport("postgres://warden@10.0.0.5/warden?sslmode=prefer"),
            "tls"
        );
        assert_eq!(
            transport("postgres://warden@127.0.0.1/warden?sslmode=require&application_name=x"),
            "tls"
        );
    }

    #[test]
    fn refusals_never_show_the_url() {
        for url in [
            "postgres://warden:pw@db.example.com/warden?sslmode=sometimes",
            "postgres://warden:pw@db.example.com/warden?sslcert=/c.pem",
            "postgres://warden:pw@db/warden?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
            "mysql://warden:pw@nope",
        ] {
            let refused = ready(url).err().unwrap().to_string();
            assert!(!refused.contains("pw"), "{refused}");
        }
    }
}
