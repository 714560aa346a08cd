//! Authentication: `Authorization: Bearer <key>` and nothing else. An address that
//! presents too many wrong credentials is refused before any lookup until its window
//! ends. An unknown key and a revoked one get the same answer, after the same lookup.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use warden_store::Principal;

use crate::error::GatewayError;
use crate::listener::ClientAddr;
use crate::log::RequestFacts;
use crate::state::AppState;

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

pub(crate) async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let address = request
        .extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|ConnectInfo(ClientAddr(peer))| peer.ip());
    if let Some(left) = address.and_then(|a| state.failed_auth().refused_for(a)) {
        let retry_after = left.as_secs() + 1;
        return GatewayError::TooManyFailures { retry_after }.into_response();
    }
    let Some(token) = bearer(request.headers()).map(str::to_owned) else {
        return GatewayError::Unauthorized.into_response();
    };
    let refuse = || {
        if let Some(address) = address {
            state.failed_auth().record(address);
        }
        GatewayError::Unauthorized.into_response()
    };
    // A key accepted since the key database last changed is known without touching the
    // disk; otherwise the lookup (SQLite, and now and then a write of its last use) runs
    // off the async workers.
    let principal = match state.keys().recently_accepted(&token) {
        Some(principal) => principal,
        None => {
            let keys = state.keys().clone();
            match tokio::task::spawn_blocking(move || keys.authenticate(&token)).await {
                Ok(Ok(Some(principal))) => principal,
                Ok(Ok(None)) => return refuse(),
                Ok(Err(error)) => {
                    tracing::error!(%error, "key lookup failed");
                    return GatewayError::Unauthorized.into_response();
                }
                Err(error) => {
                    tracing::error!(%error, "key lookup task failed");
                    return GatewayError::Unauthorized.into_response();
                }
            }
        }
    };
    let facts = RequestFacts::for_principal(&principal);
    request.extensions_mut().insert(Arc::new(principal));
    let mut response = next.run(request).await;
    response.extensions_mut().insert(facts);
    response
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
