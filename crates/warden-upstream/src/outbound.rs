//! How Warden itself talks HTTP to other servers (remote upstreams, an authorization
//! server's keys): one client policy and one bounded body reader, so every outbound path
//! gets the same rules.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;

use crate::UpstreamError;
use crate::egress::{CONNECT_TIMEOUT, EgressPolicy, GuardedResolver};

const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// TLS always verified (rustls, the platform's roots), no proxy from the environment,
/// and names resolved through the egress guard. `https_only` refuses plain-HTTP URLs
/// outright. At most `max_redirects` redirects are followed, each hop's URL checked by
/// the guard before it is requested (its name is checked again when resolved).
pub fn client(
    https_only: bool,
    max_redirects: usize,
    egress: &Arc<EgressPolicy>,
) -> reqwest::Result<reqwest::Client> {
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
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver {
            policy: egress.clone(),
        }))
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .redirect(redirects)
        .no_proxy()
        .https_only(https_only)
        .build()
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
    let mut causes = Vec::new();
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        causes.push(inner.to_string());
        source = inner.source();
    }
    let mut text = error.without_url().to_string();
    for part in causes {
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
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
}
