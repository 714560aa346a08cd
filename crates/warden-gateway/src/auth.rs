//! Authentication: `Authorization: Bearer <key>` and nothing else.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use warden_store::Principal;

use crate::error::GatewayError;
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

pub(crate) async fn require_key(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(token) = bearer(request.headers()).map(str::to_owned) else {
        return GatewayError::Unauthorized.into_response();
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
                Ok(Ok(None)) => return GatewayError::Unauthorized.into_response(),
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
