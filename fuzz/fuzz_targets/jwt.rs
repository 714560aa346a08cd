//! OAuth access tokens and the key sets they are checked against, through the same
//! functions the gateway calls (`warden-oauth`; jsonwebtoken's pure-Rust crypto here).
//!
//! The first byte chooses what the rest is:
//! - a JWKS document: only signing keys of asymmetric algorithms are kept, at most
//!   `MAX_KEYS`, and neither an unsigned token nor one signed with HMAC over the
//!   document's own bytes (the algorithm-confusion attack) gets past them;
//! - a token's claims, signed here with a test key: a token that passes had this
//!   resource's issuer and audience, was not expired, and makes a well-formed caller;
//!   the same token with any one byte changed is refused;
//! - a bearer value as sent: refused, or a well-formed caller.
//!
//! A well-formed caller has a tenant name, a key id `oauth:<printable>~<12 hex>`, and
//! groups and string claims within their caps.

#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};
use warden_config::{JwksSource, OAuth, ScopeNames};
use warden_oauth::{
    ASYMMETRIC, Caller, Granted, KeySet, MAX_CLAIM_CHARS, MAX_CLAIMS, MAX_GROUPS, MAX_KEYS,
    MAX_SUBJECT_CHARS, TokenRules, read_header,
};

const ISSUER: &str = "https://auth.example.com";
const RESOURCE: &str = "https://mcp.example.com/mcp";
const LEEWAY: u64 = 30;

// Test keys made for this target alone (openssl genpkey); they sign nothing else.
const ED25519_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIGdwqHWO9PNXy/sCRs2wCWI3v8qEMwy3zkv5gd8s/EG1
-----END PRIVATE KEY-----";
const P256_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgMSLA+stGzsIuINX2
biNh0Qi0+foUzPcNc+9clUOflwChRANCAARWjeeVa1FNDbh5/MKpkZaPDxMv0A2i
zzaMqQcMZhaKRvg0skal/YDxVdwmUK8os7xSfs6UwjaDckgy6roEhe4I
-----END PRIVATE KEY-----";
const KEY_SET: &str = r#"{"keys": [
  {"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": "ryy0EQh8NC5nopkdcHxbyPvh9BK6Lpet10iv9hXSIow"},
  {"kty": "EC", "crv": "P-256", "kid": "ec", "alg": "ES256", "use": "sig",
   "x": "Vo3nlWtRTQ24efzCqZGWjw8TL9ANos82jKkHDGYWikY",
   "y": "-DSyRqX9gPFV3CZQryizvFJ-zpTCNoNySDLqugSF7gg"}
]}"#;

struct Fixture {
    rules: TokenRules,
    keys: KeySet,
    ed25519: EncodingKey,
    p256: EncodingKey,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let config = OAuth {
        issuer: ISSUER.into(),
        resource: RESOURCE.into(),
        authorization_servers: vec![ISSUER.into()],
        jwks: JwksSource::File("keys.json".into()),
        jwks_pins: Vec::new(),
        jwks_refresh: Duration::from_secs(300),
        leeway: Duration::from_secs(LEEWAY),
        tenant_claim: "tenant".into(),
        default_tenant: Some("default".into()),
        scope_claim: "scope".into(),
        groups_claim: "groups".into(),
        scopes: ScopeNames {
            read: "warden:read".into(),
            write: "warden:write".into(),
            admin: "warden:admin".into(),
        },
    };
    let keys = KeySet::parse(KEY_SET.as_bytes());
    assert_eq!(keys.describe().count(), 2, "the test keys are read");
    Fixture {
        rules: TokenRules::new(&config).expect("a valid default tenant"),
        keys,
        ed25519: EncodingKey::from_ed_pem(ED25519_PRIVATE.as_bytes()).expect("Ed25519 key"),
        p256: EncodingKey::from_ec_pem(P256_PRIVATE.as_bytes()).expect("P-256 key"),
    }
});

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// What the gateway does with a bearer value.
fn check(token: &str, keys: &KeySet) -> Option<Caller> {
    let header = read_header(token).ok()?;
    let caller = FIXTURE.rules.check(token, &header, keys).ok()?;
    well_formed(&caller);
    Some(caller)
}

fn well_formed(caller: &Caller) {
    assert!(warden_config::is_valid_label(&caller.tenant), "{caller:?}");
    let id = caller.key_id.strip_prefix("oauth:").expect("oauth: key id");
    let (readable, digest) = id.rsplit_once('~').expect("a digest");
    assert!(readable.chars().count() <= MAX_SUBJECT_CHARS, "{id}");
    assert!(readable.chars().all(|c| c.is_ascii_graphic()), "{id}");
    assert!(digest.len() == 12 && digest.chars().all(|c| c.is_ascii_hexdigit()));
    assert!(caller.groups.len() <= MAX_GROUPS);
    assert!(
        caller
            .groups
            .iter()
            .all(|g| g.chars().count() <= MAX_CLAIM_CHARS)
    );
    assert!(caller.labels.len() <= MAX_CLAIMS);
    for (name, value) in &caller.labels {
        assert!(name.chars().count() <= MAX_CLAIM_CHARS);
        assert!(value.chars().count() <= MAX_CLAIM_CHARS);
    }
}

/// `header.payload.signature` with an HMAC over the signing input, keyed by `secret`.
fn hmac_token(secret: &[u8], claims: &str) -> String {
    let header = Header::new(Algorithm::HS256);
    let key = EncodingKey::from_secret(secret);
    let claims: Value = serde_json::from_str(claims).unwrap_or_default();
    jsonwebtoken::encode(&header, &claims, &key).expect("HMAC signs anything")
}

fn key_set(document: &[u8]) {
    let keys = KeySet::parse(document);
    assert!(keys.describe().count() <= MAX_KEYS);
    for (kid, algorithms) in keys.describe() {
        assert!(!algorithms.is_empty(), "{kid:?} verifies nothing");
        assert!(algorithms.iter().all(|a| ASYMMETRIC.contains(a)), "{kid:?}");
    }
    let claims = format!(
        r#"{{"iss":"{ISSUER}","aud":"{RESOURCE}","sub":"x","exp":{},"scope":"warden:admin"}}"#,
        now() + 600
    );
    assert!(check(&hmac_token(document, &claims), &keys).is_none());
    let unsigned = format!("eyJhbGciOiJub25lIn0.{}.", base64_url(claims.as_bytes()));
    assert!(check(&unsigned, &keys).is_none());
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0_u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

fn signed_claims(choice: u8, claims: &[u8]) {
    let Ok(claims) = serde_json::from_slice::<Map<String, Value>>(claims) else {
        return;
    };
    let (mut header, key) = if choice & 1 == 0 {
        (Header::new(Algorithm::EdDSA), &FIXTURE.ed25519)
    } else {
        (Header::new(Algorithm::ES256), &FIXTURE.p256)
    };
    header.kid = match choice >> 1 & 3 {
        0 => None,
        1 => Some("ed".into()),
        2 => Some("ec".into()),
        _ => Some("elsewhere".into()),
    };
    let Ok(token) = jsonwebtoken::encode(&header, &claims, key) else {
        return;
    };
    if let Some(caller) = check(&token, &FIXTURE.keys) {
        assert_eq!(claims.get("iss"), Some(&Value::from(ISSUER)));
        let audience = claims.get("aud").expect("an audience");
        assert!(
            audience == RESOURCE
                || audience
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v == RESOURCE)),
            "{audience}"
        );
        let expires = claims.get("exp").and_then(Value::as_f64).expect("exp");
        assert!(
            expires + LEEWAY as f64 >= now() as f64,
            "expired at {expires}"
        );
        assert!(claims.get("sub").is_some_and(Value::is_string));
        let granted = |name: &str| match claims.get("scope") {
            Some(Value::String(s)) => s.split_whitespace().any(|s| s == name),
            Some(Value::Array(a)) => a.iter().any(|s| s == name),
            _ => false,
        };
        let named = match caller.scope {
            Granted::Read => "warden:read",
            Granted::Write => "warden:write",
            Granted::Admin => "warden:admin",
        };
        assert!(granted(named), "{named} was not granted");
        // Any one byte changed: refused.
        let at = usize::from(choice) * 7 % token.len();
        let mut changed = token.clone().into_bytes();
        changed[at] ^= 1 << (choice % 7);
        if let Ok(changed) = String::from_utf8(changed) {
            assert!(
                check(&changed, &FIXTURE.keys).is_none(),
                "byte {at} changed"
            );
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&choice, rest)) = input.split_first() else {
        return;
    };
    match choice % 3 {
        0 => key_set(rest),
        1 => signed_claims(choice / 3, rest),
        _ => {
            if let Ok(token) = std::str::from_utf8(rest) {
                check(token, &FIXTURE.keys);
            }
        }
    }
});
