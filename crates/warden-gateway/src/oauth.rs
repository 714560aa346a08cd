//! OAuth 2.1 resource-server mode: JWT access tokens from one authorization server,
//! checked against its published keys (a JWKS file or URL, cached and read again),
//! for this resource only (RFC 8707 audience), with claims mapped to a tenant and a
//! scope. The token itself goes nowhere: not upstream, not to a log.
//!
//! Only asymmetric signatures are accepted, and only with the algorithm the key is
//! for: a token cannot choose `none`, HMAC, or another key's algorithm.

use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};
use warden_config::{JwksSource, OAuth};
use warden_store::{Principal, Scope};
use warden_upstream::egress::EgressPolicy;

/// The well-known path of protected-resource metadata (RFC 9728).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
/// Longer bearer values are refused unread.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// A key set larger than this is refused.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Keys used from one set, at most.
const MAX_KEYS: usize = 64;
/// A token naming a key Warden does not know makes it read the keys again, at most this
/// often (tokens with made-up key ids must not hammer the authorization server).
const UNKNOWN_KEY_REFETCH: Duration = Duration::from_secs(5);
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// Subjects are cut to this length in logs and key ids (a digest of the whole one
/// follows).
const MAX_SUBJECT_CHARS: usize = 64;
/// How many groups, and how many string claims, a token brings to policies at most,
/// and how long each may be (longer ones are left out, never cut into another name).
const MAX_GROUPS: usize = 64;
const MAX_CLAIMS: usize = 64;
const MAX_CLAIM_CHARS: usize = 256;

/// A token's groups claim, as policies see it (`principal in Group::"ops"`).
fn groups(claim: Option<&Value>) -> Vec<String> {
    let Some(Value::Array(groups)) = claim else {
        return Vec::new();
    };
    groups
        .iter()
        .filter_map(Value::as_str)
        .filter(|group| group.chars().count() <= MAX_CLAIM_CHARS)
        .take(MAX_GROUPS)
        .map(str::to_owned)
        .collect()
}

/// A token's string claims, as policies see them (`principal.getTag("department")`).
fn string_claims(claims: &Map<String, Value>) -> std::collections::BTreeMap<String, String> {
    claims
        .iter()
        .filter_map(|(name, value)| Some((name, value.as_str()?)))
        .filter(|(name, value)| {
            name.chars().count() <= MAX_CLAIM_CHARS && value.chars().count() <= MAX_CLAIM_CHARS
        })
        .take(MAX_CLAIMS)
        .map(|(name, value)| (name.clone(), value.to_owned()))
        .collect()
}

const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

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

/// Why a token was refused. The reason goes to the log, never to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Invalid(&'static str),
    /// Valid, but grants none of this server's scopes.
    NoScope,
}

struct VerifyingKey {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

struct KeySet {
    keys: Vec<VerifyingKey>,
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
    validation: Validation,
    fetcher: Fetcher,
    keys: RwLock<Arc<KeySet>>,
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
        if config
            .default_tenant
            .as_deref()
            .is_some_and(|t| !warden_store::keys::is_valid_label(t))
        {
            return Err(OAuthError::DefaultTenant);
        }
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
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.resource]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway.as_secs();
        let verifier = Self {
            metadata: json!({
                "resource": config.resource,
                "authorization_servers": config.authorization_servers,
                "bearer_methods_supported": ["header"],
                "scopes_supported": [config.scopes.read, config.scopes.write, config.scopes.admin],
            }),
            metadata_url: metadata_url(&config.resource)?,
            config: config.clone(),
            validation,
            keys: RwLock::new(Arc::new(KeySet {
                keys: Vec::new(),
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
        if token.len() > MAX_TOKEN_BYTES {
            return Err(Refusal::Invalid("token too long"));
        }
        let header =
            jsonwebtoken::decode_header(token).map_err(|_| Refusal::Invalid("not a JWT"))?;
        if !ASYMMETRIC.contains(&header.alg) {
            return Err(Refusal::Invalid("algorithm not accepted"));
        }
        let kid = header.kid.as_deref();
        let mut keys = self.current_keys();
        if keys.fetched.elapsed() >= self.config.jwks_refresh {
            self.refresh(None).await;
            keys = self.current_keys();
        }
        if !keys.has(kid) {
            self.refresh(Some(UNKNOWN_KEY_REFETCH)).await;
            keys = self.current_keys();
        }
        let mut candidates = keys
            .keys
            .iter()
            .filter(|key| kid.is_none() || key.kid.as_deref() == kid)
            .filter(|key| key.algorithms.contains(&header.alg))
            .peekable();
        if candidates.peek().is_none() {
            return Err(Refusal::Invalid("no key for this token"));
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let mut last = Refusal::Invalid("bad signature");
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return self.principal(&data.claims),
                Err(error) => last = Refusal::Invalid(reason(error.kind())),
            }
        }
        Err(last)
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, Refusal> {
        let tenant = match claims.get(&self.config.tenant_claim) {
            Some(Value::String(tenant)) if warden_store::keys::is_valid_label(tenant) => {
                tenant.clone()
            }
            Some(_) => return Err(Refusal::Invalid("tenant claim is not a tenant name")),
            None => self
                .config
                .default_tenant
                .clone()
                .ok_or(Refusal::Invalid("no tenant claim"))?,
        };
        let granted: Vec<&str> = match claims.get(&self.config.scope_claim) {
            Some(Value::String(scopes)) => scopes.split_whitespace().collect(),
            Some(Value::Array(scopes)) => scopes.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let names = &self.config.scopes;
        let scope = if granted.contains(&names.admin.as_str()) {
            Scope::Admin
        } else if granted.contains(&names.write.as_str()) {
            Scope::Write
        } else if granted.contains(&names.read.as_str()) {
            Scope::Read
        } else {
            return Err(Refusal::NoScope);
        };
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default();
        // The readable part is cut and filtered for logs; the digest of the issuer,
        // tenant and whole subject keeps two subjects apart whatever they are made of.
        let readable: String = sub
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(MAX_SUBJECT_CHARS)
            .collect();
        let digest = Sha256::digest(format!("{}\0{tenant}\0{sub}", self.config.issuer).as_bytes());
        let digest = hex::encode(&digest[..6]);
        Ok(Principal {
            key_id: format!("oauth:{readable}~{digest}"),
            tenant,
            scope,
            rpm: None,
            name: String::new(),
            labels: string_claims(claims),
            groups: groups(claims.get(&self.config.groups_claim)),
        })
    }

    fn current_keys(&self) -> Arc<KeySet> {
        self.keys
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn install(&self, keys: Vec<VerifyingKey>) {
        *self.keys.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(KeySet {
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

    async fn fetch(&self) -> Result<Vec<VerifyingKey>, OAuthError> {
        let (source, bytes) = match &self.fetcher {
            Fetcher::File(path) => (path.display().to_string(), read_file(path).await),
            Fetcher::Url { client, url } => (url.clone(), read_url(client, url).await),
        };
        let bytes = bytes.map_err(|reason| OAuthError::Read {
            path: source,
            reason,
        })?;
        let keys = parse_key_set(&bytes);
        if keys.is_empty() {
            return Err(OAuthError::NoKeys);
        }
        Ok(keys)
    }
}

impl KeySet {
    fn has(&self, kid: Option<&str>) -> bool {
        match kid {
            Some(kid) => self.keys.iter().any(|key| key.kid.as_deref() == Some(kid)),
            None => !self.keys.is_empty(),
        }
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

/// The signing keys of a JWKS document; symmetric keys, encryption keys and keys of
/// unknown types are left out.
fn parse_key_set(bytes: &[u8]) -> Vec<VerifyingKey> {
    let Ok(document) = serde_json::from_slice::<Value>(bytes) else {
        return Vec::new();
    };
    let Some(entries) = document.get("keys").and_then(Value::as_array) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|entry| entry.get("use").is_none_or(|u| u == "sig"))
        .filter_map(|entry| serde_json::from_value::<Jwk>(entry.clone()).ok())
        .filter_map(|jwk| {
            let algorithms = algorithms_for(&jwk);
            if algorithms.is_empty() {
                return None;
            }
            Some(VerifyingKey {
                kid: jwk.common.key_id.clone(),
                key: DecodingKey::from_jwk(&jwk).ok()?,
                algorithms,
            })
        })
        .take(MAX_KEYS)
        .collect()
}

/// What a key may verify: the algorithm it names, or those its type allows.
fn algorithms_for(jwk: &Jwk) -> Vec<Algorithm> {
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => &ASYMMETRIC[..6],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            _ => &[],
        },
        AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
            &[Algorithm::EdDSA]
        }
        _ => &[],
    };
    match jwk.common.key_algorithm.map(Algorithm::try_from) {
        Some(Ok(named)) if by_type.contains(&named) => vec![named],
        Some(_) => Vec::new(),
        None => by_type.to_vec(),
    }
}

fn reason(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind;
    match kind {
        ErrorKind::ExpiredSignature => "expired",
        ErrorKind::ImmatureSignature => "not yet valid",
        ErrorKind::InvalidAudience => "wrong audience",
        ErrorKind::InvalidIssuer => "wrong issuer",
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::MissingRequiredClaim(_) => "missing claim",
        _ => "malformed",
    }
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

    #[test]
    fn only_signing_keys_of_known_types_are_kept() {
        let set = json!({"keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "sig", "alg": "ES256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "mislabelled", "alg": "RS256",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
             "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}
        ]});
        let keys = parse_key_set(set.to_string().as_bytes());
        let kids: Vec<_> = keys.iter().map(|k| k.kid.as_deref()).collect();
        assert_eq!(kids, [Some("sig")]);
        assert_eq!(keys[0].algorithms, [Algorithm::ES256]);
    }
}
