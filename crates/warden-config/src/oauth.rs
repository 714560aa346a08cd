//! `[auth.oauth]`: Warden as an OAuth 2.1 resource server. It accepts JWT access tokens
//! issued by one authorization server for this resource, checks them against that
//! server's published keys, and maps claims to a tenant and a scope.

use std::path::PathBuf;
use std::time::Duration;

use crate::upstream::check_url;
use crate::{bounded, raw};

pub const DEFAULT_JWKS_REFRESH_SECS: u64 = 300;
pub const DEFAULT_LEEWAY_SECS: u64 = 60;

#[derive(Debug, Clone, PartialEq)]
pub struct OAuth {
    /// The `iss` every token must carry, exactly.
    pub issuer: String,
    /// This server's resource URI: the audience every token must name (RFC 8707), and
    /// the `resource` of the protected-resource metadata (RFC 9728).
    pub resource: String,
    /// Where clients get tokens, as published in the metadata.
    pub authorization_servers: Vec<String>,
    pub jwks: JwksSource,
    /// SubjectPublicKeyInfo SHA-256 hashes the `jwks_url` server's certificate must have
    /// one of (`pin_sha256`), besides a valid chain.
    pub jwks_pins: Vec<[u8; 32]>,
    /// Keys are read again this often, and sooner when a token names an unknown key.
    pub jwks_refresh: Duration,
    /// Allowed clock difference for `exp` and `nbf`.
    pub leeway: Duration,
    /// The claim naming the caller's tenant.
    pub tenant_claim: String,
    /// The tenant of tokens without that claim; without it such tokens are refused.
    /// Checked against the key store's rule for tenant names when the verifier starts.
    pub default_tenant: Option<String>,
    /// The claim holding the granted scopes (a space-separated string or an array).
    pub scope_claim: String,
    /// The claim holding the caller's groups (an array of strings), for policies.
    pub groups_claim: String,
    /// The token scope that grants each Warden scope.
    pub scopes: ScopeNames,
}

#[derive(Debug, Clone, PartialEq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScopeNames {
    pub read: String,
    pub write: String,
    pub admin: String,
}

pub(crate) fn validate(raw: raw::OAuth) -> Result<OAuth, (&'static str, String)> {
    let issuer = raw
        .issuer
        .filter(|issuer| !issuer.trim().is_empty())
        .ok_or(("auth.oauth.issuer", "is required".to_owned()))?;
    let resource = raw
        .resource
        .ok_or(("auth.oauth.resource", "is required".to_owned()))?;
    check_url(&resource).map_err(|m| ("auth.oauth.resource", m))?;
    if resource.contains(['#', '?']) {
        return Err((
            "auth.oauth.resource",
            "must not have a query or fragment (RFC 8707)".into(),
        ));
    }
    let mut jwks_pins = Vec::new();
    let jwks = match (raw.jwks_file, raw.jwks_url) {
        (Some(file), None) if raw.pin_sha256.is_empty() => JwksSource::File(PathBuf::from(file)),
        (Some(_), None) => {
            return Err((
                "auth.oauth.pin_sha256",
                "pins the certificate of jwks_url; a jwks_file has none".into(),
            ));
        }
        (None, Some(url)) => {
            check_url(&url).map_err(|m| ("auth.oauth.jwks_url", m))?;
            jwks_pins = crate::pinning::spki_pins(raw.pin_sha256, &url)
                .map_err(|m| ("auth.oauth.pin_sha256", m))?;
            JwksSource::Url(url)
        }
        _ => {
            return Err((
                "auth.oauth.jwks_file",
                "needs exactly one of jwks_file or jwks_url".into(),
            ));
        }
    };
    let authorization_servers = if raw.authorization_servers.is_empty() {
        vec![issuer.clone()]
    } else {
        raw.authorization_servers
    };
    let jwks_refresh = bounded(
        raw.jwks_refresh_secs,
        DEFAULT_JWKS_REFRESH_SECS,
        10..=86_400,
    )
    .map_err(|m| ("auth.oauth.jwks_refresh_secs", m))?;
    let leeway = bounded(raw.leeway_secs, DEFAULT_LEEWAY_SECS, 0..=600)
        .map_err(|m| ("auth.oauth.leeway_secs", m))?;
    let scopes = raw.scopes.unwrap_or_default();
    Ok(OAuth {
        issuer,
        resource,
        authorization_servers,
        jwks,
        jwks_pins,
        jwks_refresh: Duration::from_secs(jwks_refresh),
        leeway: Duration::from_secs(leeway),
        tenant_claim: raw.tenant_claim.unwrap_or_else(|| "tenant".into()),
        default_tenant: raw.default_tenant,
        scope_claim: raw.scope_claim.unwrap_or_else(|| "scope".into()),
        groups_claim: raw.groups_claim.unwrap_or_else(|| "groups".into()),
        scopes: ScopeNames {
            read: scopes.read.unwrap_or_else(|| "read".into()),
            write: scopes.write.unwrap_or_else(|| "write".into()),
            admin: scopes.admin.unwrap_or_else(|| "admin".into()),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<OAuth, (&'static str, String)> {
        let raw: crate::raw::Config = toml::from_str(text).unwrap();
        validate(raw.auth.oauth.unwrap())
    }

    const GOOD: &str = "[auth.oauth]\nissuer = \"https://idp.example.com\"\nresource = \"https://mcp.example.com/mcp\"\njwks_file = \"jwks.json\"\n";

    #[test]
    fn defaults_fill_in_around_the_required_fields() {
        let oauth = parse(GOOD).unwrap();
        assert_eq!(oauth.authorization_servers, ["https://idp.example.com"]);
        assert_eq!(oauth.jwks, JwksSource::File("jwks.json".into()));
        assert_eq!(oauth.tenant_claim, "tenant");
        assert_eq!(oauth.scopes.write, "write");
        assert_eq!(oauth.leeway, Duration::from_secs(60));
    }

    #[test]
    fn bad_settings_name_their_field() {
        for (text, field) in [
            (GOOD.replace("issuer", "# issuer"), "auth.oauth.issuer"),
            (
                GOOD.replace("https://mcp", "http://mcp"),
                "auth.oauth.resource",
            ),
            (GOOD.replace("/mcp\"", "/mcp#x\""), "auth.oauth.resource"),
            (
                GOOD.replace("jwks_file = \"jwks.json\"", ""),
                "auth.oauth.jwks_file",
            ),
            (
                format!("{GOOD}jwks_url = \"https://idp.example.com/jwks\"\n"),
                "auth.oauth.jwks_file",
            ),
            (
                format!("{GOOD}leeway_secs = 3600\n"),
                "auth.oauth.leeway_secs",
            ),
        ] {
            assert_eq!(parse(&text).unwrap_err().0, field, "{text}");
        }
    }
}
