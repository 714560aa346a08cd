//! OAuth 2.1 resource-server mode: JWT access tokens from one authorization server,
//! checked against its published keys (a JWKS file or URL, cached and read again),
//! for this resource only (RFC 8707 audience), with claims mapped to a tenant and a
//! scope. The token itself goes nowhere: not upstream, not to a log.
//!
//! The checks themselves (keys, signature, claims) are `warden-oauth`'s; this module
//! reads the keys, keeps them fresh and answers clients.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use warden_config::{JwksSource, OAuth};
use warden_egress::EgressPolicy;
use warden_oauth::{Granted, KeySet, MAX_JWKS_BYTES, TokenRules};
use warden_store::{Principal, Scope};

pub(crate) use warden_oauth::Refusal;

/// The well-known path of protected-resource metadata (RFC 9728).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
/// A token naming a key Warden does not know makes it read the keys again, at most this
/// often (tokens with made-up key ids must not hammer the authorization server).
const UNKNOWN_KEY_REFETCH: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    #[error("cannot read the key set {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("the key set holds no usable signing key")]
    NoKeys,
    #[error("auth.oauth.default_tenant must be 1-64 letters, digits, '-', '_' or '.'")]
    DefaultTenant,
    #[error("auth.oauth.resource is not a URL")]
    Resource,
    #[error("cannot build the HTTP client for the key set")]
    Client,
    #[error("auth.oauth.jwks_url: {0}")]
    Egress(String),
}

/// The keys in use, and when they were read.
struct FetchedKeys {
    keys: KeySet,
    fetched: Instant,
}

enum Fetcher {
    File(std::path::PathBuf),
    Url {
        client: reqwest::Client,
        url: String,
    },
}

pub struct OAuthVerifier {
    config: OAuth,
    rules: TokenRules,
    fetcher: Fetcher,
    keys: RwLock<Arc<FetchedKeys>>,
    /// Held while the keys are read again; also the time of the last attempt.
    refetch: tokio::sync::Mutex<Option<Instant>>,
    metadata: Value,
    metadata_url: String,
}

impl std::fmt::Debug for OAuthVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OAuthVerifier")
            .field("issuer", &self.config.issuer)
            .finish_non_exhaustive()
    }
}

impl OAuthVerifier {
    /// Reads the keys once. A file that cannot be read stops the start; a URL that
    /// cannot be fetched is logged and fetched again when a token comes (tokens are
    /// refused until it answers: fail closed).
    pub async fn start(
        config: &OAuth,
        egress: &Arc<EgressPolicy>,
    ) -> Result<Arc<Self>, OAuthError> {
        let rules = TokenRules::new(config).ok_or(OAuthError::DefaultTenant)?;
        let fetcher = match &config.jwks {
            JwksSource::File(path) => Fetcher::File(path.clone()),
            JwksSource::Url(url) => {
                let parsed = reqwest::Url::parse(url).map_err(|_| OAuthError::Client)?;
                egress
                    .check_url(&parsed)
                    .map_err(|error| OAuthError::Egress(error.to_string()))?;
                let pins =
                    (!config.jwks_pins.is_empty()).then(|| warden_upstream::outbound::SpkiPins {
                        who: "the JWKS (auth.oauth.jwks_url)".to_owned(),
                        hashes: config.jwks_pins.clone(),
                    });
                Fetcher::Url {
                    client: warden_upstream::outbound::client(
                        url.starts_with("https:"),
                        0,
                        egress,
                        pins.as_ref(),
                    )
                    .map_err(|_| OAuthError::Client)?,
                    url: url.clone(),
                }
            }
        };
        let verifier = Self {
            metadata: json!({
                "resource": config.resource,
                "authorization_servers": config.authorization_servers,
                "bearer_methods_supported": ["header"],
                "scopes_supported": [config.scopes.read, config.scopes.write, config.scopes.admin],
            }),
            metadata_url: metadata_url(&config.resource)?,
            config: config.clone(),
            rules,
            keys: RwLock::new(Arc::new(FetchedKeys {
                keys: KeySet::default(),
                fetched: Instant::now(),
            })),
            refetch: tokio::sync::Mutex::new(None),
            fetcher,
        };
        match verifier.fetch().await {
            Ok(keys) => verifier.install(keys),
            Err(error) if matches!(verifier.fetcher, Fetcher::File(_)) => return Err(error),
            Err(error) => {
                tracing::error!(%error, "OAuth key set not fetched; tokens are refused until it is")
            }
        }
        *verifier.refetch.lock().await = Some(Instant::now());
        Ok(Arc::new(verifier))
    }

    /// The URL clients find the metadata at, for `WWW-Authenticate`.
    pub(crate) fn metadata_url(&self) -> &str {
        &self.metadata_url
    }

    /// The metadata's path on this server: the resource's path appended to the
    /// well-known prefix (RFC 9728 §3.1).
    pub(crate) fn metadata_path(&self) -> String {
        let path = self
            .config
            .resource
            .parse::<axum::http::Uri>()
            .map(|uri| uri.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        format!("{METADATA_PATH}{path}")
    }

    /// The scope a read-only client asks for, for `insufficient_scope` answers.
    pub(crate) fn read_scope(&self) -> &str {
        &self.config.scopes.read
    }

    pub(crate) async fn verify(&self, token: &str) -> Result<Principal, Refusal> {
        let header = warden_oauth::read_header(token)?;
        let mut keys = self.current_keys();
        if keys.fetched.elapsed() >= self.config.jwks_refresh {
            self.refresh(None).await;
            keys = self.current_keys();
        }
        if !keys.keys.has(header.kid.as_deref()) {
            self.refresh(Some(UNKNOWN_KEY_REFETCH)).await;
            keys = self.current_keys();
        }
        let caller = self.rules.check(token, &header, &keys.keys)?;
        Ok(Principal {
            key_id: caller.key_id,
            tenant: caller.tenant,
            scope: match caller.scope {
                Granted::Read => Scope::Read,
                Granted::Write => Scope::Write,
                Granted::Admin => Scope::Admin,
            },
            rpm: None,
            name: String::new(),
            labels: caller.labels,
            groups: caller.groups,
        })
    }

    fn current_keys(&self) -> Arc<FetchedKeys> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn install(&self, keys: KeySet) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(FetchedKeys {
            keys,
            fetched: Instant::now(),
        });
    }

    /// Reads the keys again unless another request is already doing it, or (with
    /// `cooldown`) the last attempt was too recent. On failure the old keys stay.
    async fn refresh(&self, cooldown: Option<Duration>) {
        let Ok(mut last) = self.refetch.try_lock() else {
            return;
        };
        if let (Some(cooldown), Some(at)) = (cooldown, *last)
            && at.elapsed() < cooldown
        {
            return;
        }
        *last = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => self.install(keys),
            Err(error) => {
                tracing::warn!(%error, "OAuth key set not refreshed; the previous keys stay")
            }
        }
    }

    async fn fetch(&self) -> Result<KeySet, OAuthError> {
        let (source, bytes) = match &self.fetcher {
            Fetcher::File(path) => (path.display().to_string(), read_file(path).await),
            Fetcher::Url { client, url } => (url.clone(), read_url(client, url).await),
        };
        let bytes = bytes.map_err(|reason| OAuthError::Read {
            path: source,
            reason,
        })?;
        let keys = KeySet::parse(&bytes);
        if keys.is_empty() {
            return Err(OAuthError::NoKeys);
        }
        Ok(keys)
    }
}

async fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = tokio::fs::read(path).await.map_err(|e| e.to_string())?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
    }
    Ok(bytes)
}

async fn read_url(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    let response = client
        .get(url)
        .timeout(FETCH_TIMEOUT)
        .send()
        .await
        // The cause, without the URL: a refused pin, a bad chain, no route.
        .map_err(|error| format!("not reachable: {}", warden_upstream::outbound::cause(error)))?;
    if !response.status().is_success() {
        return Err(format!("HTTP status {}", response.status().as_u16()));
    }
    warden_upstream::outbound::read_capped(response, MAX_JWKS_BYTES)
        .await
        .map_err(|e| e.to_string())
}

/// `https://host/path` → `https://host/.well-known/oauth-protected-resource/path`.
fn metadata_url(resource: &str) -> Result<String, OAuthError> {
    let uri: axum::http::Uri = resource.parse().map_err(|_| OAuthError::Resource)?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(OAuthError::Resource);
    };
    let path = uri.path().trim_end_matches('/');
    Ok(format!("{scheme}://{authority}{METADATA_PATH}{path}"))
}

/// Protected-resource metadata, public (no credentials needed).
pub(crate) async fn metadata(State(verifier): State<Arc<OAuthVerifier>>) -> Response {
    axum::Json(verifier.metadata.clone()).into_response()
}

/// What the API-key metadata needs to name this resource.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyResource {
    pub tls: bool,
}

/// RFC 9728 metadata when Warden's own keys authenticate: the credential goes in the
/// `Authorization` header and nowhere else, and no authorization server issues it. The
/// resource is named by the Host the guard has already accepted.
pub(crate) async fn key_metadata(
    State(resource): State<KeyResource>,
    headers: axum::http::HeaderMap,
) -> Response {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if resource.tls { "https" } else { "http" };
    axum::Json(json!({
        "resource": format!("{scheme}://{host}{}", crate::MCP_PATH),
        "bearer_methods_supported": ["header"],
        "resource_name": "Warden",
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metadata_url_inserts_the_well_known_prefix() {
        assert_eq!(
            metadata_url("https://mcp.example.com/mcp").unwrap(),
            "https://mcp.example.com/.well-known/oauth-protected-resource/mcp"
        );
        assert_eq!(
            metadata_url("https://mcp.example.com:8443/").unwrap(),
            "https://mcp.example.com:8443/.well-known/oauth-protected-resource"
        );
    }
}
