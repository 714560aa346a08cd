//! OAuth access tokens as Warden checks them: the signing keys of a JWKS document, a
//! JWT verified against them for this resource (issuer, audience, lifetime), and the
//! caller its claims make (tenant, scope, groups, string claims for policies).
//!
//! Only asymmetric signatures are accepted, and only with the algorithm the key is
//! for: a token cannot choose `none`, HMAC, or another key's algorithm.
//!
//! Everything here is a function of its inputs. Fetching the keys, refreshing them and
//! answering clients is the gateway's (`warden-gateway`'s `oauth` module), so the fuzz
//! target runs exactly the checks the request path runs. The crypto backend is chosen
//! by the `aws-lc` feature (the binary) or by the one linking this crate (the fuzz
//! targets use jsonwebtoken's pure-Rust one).

use std::collections::BTreeMap;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use warden_config::OAuth;

/// Longer bearer values are refused unread.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// A key set larger than this is refused.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// Keys used from one set, at most.
pub const MAX_KEYS: usize = 64;
/// Subjects are cut to this length in key ids (a digest of the whole one follows).
pub const MAX_SUBJECT_CHARS: usize = 64;
/// How many groups, and how many string claims, a token brings to policies at most,
/// and how long each may be (longer ones are left out, never cut into another name).
pub const MAX_GROUPS: usize = 64;
pub const MAX_CLAIMS: usize = 64;
pub const MAX_CLAIM_CHARS: usize = 256;

/// The algorithms a token may be signed with.
pub const ASYMMETRIC: [Algorithm; 9] = [
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

/// Why a token was refused. The reason goes to the log, never to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Invalid(&'static str),
    /// Valid, but grants none of this server's scopes.
    NoScope,
}

/// The Warden scope a token grants (the highest of its scopes Warden knows).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granted {
    Read,
    Write,
    Admin,
}

/// Who a valid token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// `oauth:<readable subject>~<digest of issuer, tenant and whole subject>`: stable
    /// per subject, printable, and never longer than the cut subject plus 13.
    pub key_id: String,
    pub tenant: String,
    pub scope: Granted,
    /// The token's string claims, for policies (`principal.getTag("department")`).
    pub labels: BTreeMap<String, String>,
    /// The token's groups claim, for policies (`principal in Group::"ops"`).
    pub groups: Vec<String>,
}

/// A token's header, read before any key is looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenHeader {
    pub algorithm: Algorithm,
    pub kid: Option<String>,
}

/// Reads a bearer value's header: too long, not a JWT, or an algorithm other than the
/// asymmetric ones is refused here.
pub fn read_header(token: &str) -> Result<TokenHeader, Refusal> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::Invalid("token too long"));
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| Refusal::Invalid("not a JWT"))?;
    if !ASYMMETRIC.contains(&header.alg) {
        return Err(Refusal::Invalid("algorithm not accepted"));
    }
    Ok(TokenHeader {
        algorithm: header.alg,
        kid: header.kid,
    })
}

struct VerifyingKey {
    kid: Option<String>,
    key: DecodingKey,
    algorithms: Vec<Algorithm>,
}

/// The signing keys of one JWKS document.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<VerifyingKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|key| (&key.kid, &key.algorithms)))
            .finish()
    }
}

impl KeySet {
    /// The signing keys of a JWKS document (at most [`MAX_KEYS`]); symmetric keys,
    /// encryption keys, keys of unknown types and anything unreadable are left out.
    pub fn parse(bytes: &[u8]) -> Self {
        let Ok(document) = serde_json::from_slice::<Value>(bytes) else {
            return Self::default();
        };
        let Some(entries) = document.get("keys").and_then(Value::as_array) else {
            return Self::default();
        };
        let keys = entries
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
            .collect();
        Self { keys }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Each key's id and the algorithms it may verify, in the document's order.
    pub fn describe(&self) -> impl Iterator<Item = (Option<&str>, &[Algorithm])> {
        self.keys
            .iter()
            .map(|key| (key.kid.as_deref(), key.algorithms.as_slice()))
    }

    /// Whether a token naming `kid` (or none) has a key here to be tried with.
    pub fn has(&self, kid: Option<&str>) -> bool {
        match kid {
            Some(kid) => self.keys.iter().any(|key| key.kid.as_deref() == Some(kid)),
            None => !self.keys.is_empty(),
        }
    }
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

/// How this resource checks tokens: `[auth.oauth]`'s issuer, audience, leeway and
/// claim names.
#[derive(Debug, Clone)]
pub struct TokenRules {
    config: OAuth,
    validation: Validation,
}

impl TokenRules {
    /// The rules of `config`; `None` when its `default_tenant` is not a tenant name.
    pub fn new(config: &OAuth) -> Option<Self> {
        if config
            .default_tenant
            .as_deref()
            .is_some_and(|t| !warden_config::is_valid_label(t))
        {
            return None;
        }
        let mut validation = Validation::new(Algorithm::ES256);
        validation.set_issuer(&[&config.issuer]);
        validation.set_audience(&[&config.resource]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = config.leeway.as_secs();
        Some(Self {
            config: config.clone(),
            validation,
        })
    }

    /// Verifies `token` (whose header is `header`) with the keys of `keys` that are for
    /// its key id and algorithm, and makes its caller.
    pub fn check(
        &self,
        token: &str,
        header: &TokenHeader,
        keys: &KeySet,
    ) -> Result<Caller, Refusal> {
        let kid = header.kid.as_deref();
        let mut candidates = keys
            .keys
            .iter()
            .filter(|key| kid.is_none() || key.kid.as_deref() == kid)
            .filter(|key| key.algorithms.contains(&header.algorithm))
            .peekable();
        if candidates.peek().is_none() {
            return Err(Refusal::Invalid("no key for this token"));
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.algorithm];
        let mut last = Refusal::Invalid("bad signature");
        for key in candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return self.caller(&data.claims),
                Err(error) => last = Refusal::Invalid(reason(error.kind())),
            }
        }
        Err(last)
    }

    fn caller(&self, claims: &Map<String, Value>) -> Result<Caller, Refusal> {
        let tenant = match claims.get(&self.config.tenant_claim) {
            Some(Value::String(tenant)) if warden_config::is_valid_label(tenant) => tenant.clone(),
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
            Granted::Admin
        } else if granted.contains(&names.write.as_str()) {
            Granted::Write
        } else if granted.contains(&names.read.as_str()) {
            Granted::Read
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
        Ok(Caller {
            key_id: format!("oauth:{readable}~{digest}"),
            tenant,
            scope,
            labels: string_claims(claims),
            groups: groups(claims.get(&self.config.groups_claim)),
        })
    }
}

/// A token's groups claim, as policies see it.
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

/// A token's string claims, as policies see them.
fn string_claims(claims: &Map<String, Value>) -> BTreeMap<String, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let keys = KeySet::parse(set.to_string().as_bytes());
        let described: Vec<_> = keys.describe().collect();
        assert_eq!(described, [(Some("sig"), &[Algorithm::ES256][..])]);
        assert!(keys.has(Some("sig")) && !keys.has(Some("hmac")) && keys.has(None));
    }

    #[test]
    fn headers_without_an_asymmetric_algorithm_are_refused_before_any_key() {
        // {"alg":"HS256"}: a header jsonwebtoken reads, refused here.
        assert_eq!(
            read_header("eyJhbGciOiJIUzI1NiJ9.e30.c2ln"),
            Err(Refusal::Invalid("algorithm not accepted"))
        );
        // {"alg":"none"}: jsonwebtoken knows no such algorithm.
        assert_eq!(
            read_header("eyJhbGciOiJub25lIn0.e30."),
            Err(Refusal::Invalid("not a JWT"))
        );
        assert_eq!(read_header("a.b"), Err(Refusal::Invalid("not a JWT")));
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(read_header(&long), Err(Refusal::Invalid("token too long")));
    }
}
