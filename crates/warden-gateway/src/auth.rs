//! Authentication: `Authorization: Bearer <credential>` and nothing else; the credential
//! is a Warden key or, with `[auth.oauth]`, a JWT access token. An address that
//! presents too many wrong credentials is refused before any lookup until its window
//! ends. An unknown key and a revoked one get the same answer, after the same lookup.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use warden_store::{KEY_PREFIX, Keys, Principal};
use warden_telemetry::{Span, Trace};

use crate::bench_layers;
use crate::client_addr::client_network;
use crate::error::{Challenge, GatewayError};
use crate::log::RequestFacts;
use crate::oauth::{OAuthVerifier, Refusal};

/// The key from a single `Authorization: Bearer` header; the scheme is case-insensitive
/// (RFC 9110), anything else is no credential at all.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (scheme, token) = value.to_str().ok()?.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Addresses tracked at once; past this, the oldest windows are forgotten first.
const MAX_TRACKED_ADDRESSES: usize = 65_536;

/// Wrong credentials per client address, counted in fixed windows.
pub(crate) struct FailedAuth {
    max_failures: u32,
    window: Duration,
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailedAuth {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            windows: Mutex::default(),
        }
    }

    /// How long `address` must wait, if it is over the limit.
    fn refused_for(&self, address: IpAddr) -> Option<Duration> {
        let windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        let (started, failures) = windows.get(&address)?;
        let left = self.window.checked_sub(started.elapsed())?;
        (*failures >= self.max_failures).then_some(left)
    }

    fn record(&self, address: IpAddr) {
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if windows.len() >= MAX_TRACKED_ADDRESSES && !windows.contains_key(&address) {
            let window = self.window;
            windows.retain(|_, (started, _)| started.elapsed() < window);
            if windows.len() >= MAX_TRACKED_ADDRESSES
                && let Some(oldest) = windows.iter().min_by_key(|(_, (s, _))| *s).map(|(a, _)| *a)
            {
                windows.remove(&oldest);
            }
        }
        let entry = windows.entry(address).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= self.window {
            *entry = (Instant::now(), 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// What authentication needs: the key store, the wrong-key counter, and the OAuth
/// verifier when configured.
pub(crate) struct Authenticator {
    pub keys: Arc<dyn Keys>,
    pub failed: FailedAuth,
    pub oauth: Option<Arc<OAuthVerifier>>,
    /// Warden's own keys authenticate (they may be turned off when OAuth is on).
    pub api_keys: bool,
    /// The scheme clients reach Warden by, for the metadata URL a key-mode challenge
    /// names.
    pub scheme: &'static str,
}

impl Authenticator {
    /// Where the protected-resource metadata (RFC 9728) is: the authorization server's
    /// resource with OAuth, else this server's own for `host` (when it is a plain host
    /// name, so that nothing a client sent can bend the header).
    fn metadata_url(&self, host: Option<&str>) -> Option<String> {
        if let Some(oauth) = &self.oauth {
            return Some(oauth.metadata_url().to_owned());
        }
        let host = host.filter(|host| {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || ".-:[]".contains(c))
        })?;
        Some(format!(
            "{}://{host}{}{}",
            self.scheme,
            crate::oauth::METADATA_PATH,
            crate::MCP_PATH
        ))
    }
}

/// Why no principal came out of a credential.
enum Refused {
    /// Unknown, revoked, expired, forged: counted against the address.
    Credential,
    /// A valid OAuth token that grants none of this server's scopes.
    Scope,
    /// The key store cannot be reached (logged); not the client's fault, not counted.
    Unavailable,
    /// The lookup itself failed (logged); not the client's fault, not counted.
    Internal,
}

/// Authentication, a step of the front door: nothing on the MCP endpoint runs without a
/// valid, unrevoked key (or token), and an address that keeps guessing is refused before
/// any lookup. On success the caller goes into the request's extensions, and what the
/// log records of it is returned; a refusal is the answer.
pub(crate) async fn authenticate_request(
    auth: &Authenticator,
    request: &mut Request,
) -> Result<RequestFacts, Response> {
    if let Some(principal) = bench_layers::stand_in() {
        let facts = RequestFacts::for_principal(&principal);
        request.extensions_mut().insert(principal);
        return Ok(facts);
    }
    let mut span = request
        .extensions()
        .get::<Trace>()
        .map_or_else(Span::inert, |trace| trace.span("warden.authenticate"));
    let mut refuse = |error: GatewayError| {
        span.refuse("authentication", error.rule());
        error.into_response()
    };
    let address = client_network(request);
    if let Some(left) = address.and_then(|a| auth.failed.refused_for(a)) {
        let retry_after = left.as_secs() + 1;
        return Err(refuse(GatewayError::TooManyFailures { retry_after }));
    }
    // Built for refusals only: an accepted key costs nothing here.
    let challenge = |headers: &axum::http::HeaderMap, invalid_token| Challenge {
        resource_metadata: auth.metadata_url(
            headers
                .get(axum::http::header::HOST)
                .and_then(|value| value.to_str().ok()),
        ),
        invalid_token,
        scope: None,
    };
    let Some(token) = bearer(request.headers()).map(str::to_owned) else {
        return Err(refuse(GatewayError::Unauthorized(challenge(
            request.headers(),
            false,
        ))));
    };
    let principal = match authenticate(auth, token).await {
        Ok(principal) => principal,
        Err(Refused::Credential) => {
            if let Some(address) = address {
                auth.failed.record(address);
            }
            return Err(refuse(GatewayError::Unauthorized(challenge(
                request.headers(),
                true,
            ))));
        }
        Err(Refused::Scope) => {
            let mut challenge = challenge(request.headers(), true);
            challenge.scope = auth.oauth.as_ref().map(|o| o.read_scope().to_owned());
            return Err(refuse(GatewayError::InsufficientScope(challenge)));
        }
        Err(Refused::Unavailable) => return Err(refuse(GatewayError::StoreUnavailable)),
        Err(Refused::Internal) => {
            return Err(refuse(GatewayError::Unauthorized(challenge(
                request.headers(),
                false,
            ))));
        }
    };
    let facts = RequestFacts::for_principal(&principal);
    let principal = Arc::new(principal);
    bench_layers::authenticated(&principal);
    request.extensions_mut().insert(principal);
    Ok(facts)
}

/// What a credential presented outside the MCP endpoint (the operator's console) is.
#[derive(Debug)]
pub enum Credential {
    Valid(Principal),
    /// Unknown, revoked, expired, forged, or granting none of this server's scopes;
    /// counted against the address.
    Refused,
    /// The address presented too many wrong ones: refused without a lookup.
    Throttled {
        retry_after: u64,
    },
    /// The key store cannot be reached now.
    Unavailable,
}

impl Authenticator {
    /// Checks `presented` as the MCP endpoint would (a key, or with OAuth a token), and
    /// counts a wrong one against the client's `network` in the same window, so that guessing at
    /// the console is throttled like guessing at the MCP port.
    pub(crate) async fn check(&self, network: IpAddr, presented: &str) -> Credential {
        if let Some(left) = self.failed.refused_for(network) {
            return Credential::Throttled {
                retry_after: left.as_secs() + 1,
            };
        }
        match authenticate(self, presented.to_owned()).await {
            Ok(principal) => Credential::Valid(principal),
            Err(Refused::Credential | Refused::Scope) => {
                self.failed.record(network);
                Credential::Refused
            }
            Err(Refused::Unavailable | Refused::Internal) => Credential::Unavailable,
        }
    }
}

/// A Warden key goes to the key store; with OAuth on, anything else is a JWT. Without
/// OAuth every credential takes the key lookup, so a made-up one costs what a revoked
/// one does.
async fn authenticate(auth: &Authenticator, token: String) -> Result<Principal, Refused> {
    match auth.oauth.as_ref() {
        Some(oauth) if !token.starts_with(KEY_PREFIX) => {
            oauth.verify(&token).await.map_err(|refusal| match refusal {
                Refusal::Invalid(reason) => {
                    tracing::info!(reason, "OAuth token refused");
                    Refused::Credential
                }
                Refusal::NoScope => Refused::Scope,
            })
        }
        _ if !auth.api_keys => Err(Refused::Credential),
        _ => look_up_key(&auth.keys, token).await,
    }
}

async fn look_up_key(keys: &Arc<dyn Keys>, token: String) -> Result<Principal, Refused> {
    // SQLite answers a key accepted since its database last changed from memory, and
    // does the rest off the async workers; PostgreSQL looks every key up, so that a
    // revocation on one replica holds on all.
    match keys.authenticate(&token).await {
        Ok(Some(principal)) => Ok(principal),
        Ok(None) => Err(Refused::Credential),
        Err(error) => {
            tracing::error!(%error, "key lookup failed");
            if error.is_unavailable() {
                Err(Refused::Unavailable)
            } else {
                Err(Refused::Internal)
            }
        }
    }
}

/// The authenticated caller, put in place by [`require_key`].
pub(crate) type Caller = axum::Extension<Arc<Principal>>;

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn an_address_is_refused_past_the_limit_until_its_window_ends() {
        let failures = FailedAuth::new(3, Duration::from_millis(200));
        let (one, other): (IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for _ in 0..2 {
            failures.record(one);
        }
        assert!(failures.refused_for(one).is_none());
        failures.record(one);
        assert!(failures.refused_for(one).is_some());
        assert!(failures.refused_for(other).is_none());
        std::thread::sleep(Duration::from_millis(250));
        assert!(failures.refused_for(one).is_none());
    }

    #[test]
    fn only_one_bearer_header_counts() {
        assert_eq!(bearer(&headers(&["Bearer wdn_abc"])), Some("wdn_abc"));
        assert_eq!(bearer(&headers(&["bearer wdn_abc"])), Some("wdn_abc"));
        assert_eq!(bearer(&headers(&["Basic d2RuOg=="])), None);
        assert_eq!(bearer(&headers(&["Bearer "])), None);
        assert_eq!(bearer(&headers(&["wdn_abc"])), None);
        assert_eq!(bearer(&headers(&["Bearer wdn_a", "Bearer wdn_b"])), None);
        assert_eq!(bearer(&headers(&[])), None);
    }
}
