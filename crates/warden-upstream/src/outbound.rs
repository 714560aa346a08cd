//! How Warden itself talks HTTP to other servers (remote upstreams, an authorization
//! server's keys): one client policy and one bounded body reader, so every outbound path
//! gets the same rules.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt as _;

use crate::UpstreamError;
use crate::egress::{EgressPolicy, GuardedResolver};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// TLS always verified (rustls, the platform's roots), no redirects (a redirect could
/// lead anywhere), no proxy from the environment (proxies come from Warden's
/// configuration), and names resolved through the egress guard. `https_only` refuses
/// plain-HTTP URLs outright.
pub fn client(https_only: bool, egress: &Arc<EgressPolicy>) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver {
            policy: egress.clone(),
        }))
        .connect_timeout(CONNECT_TIMEOUT)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .https_only(https_only)
        .build()
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
