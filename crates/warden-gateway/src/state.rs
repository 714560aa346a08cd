//! What every request handler shares.

use std::sync::Arc;
use std::time::Duration;

use warden_config::{Config, Results};
use warden_limits::Limiter;
use warden_proto::JsonLimits;
use warden_store::{ApprovalStore, KeyStore};
use warden_upstream::Upstreams;

use crate::audit::Auditor;
use crate::auth::{Authenticator, FailedAuth};
use crate::client_addr::ClientAddresses;
use crate::confirm::Confirmations;
use crate::input_required::InputLot;
use crate::metrics::Metrics;
use crate::oauth::OAuthVerifier;
use crate::session::Sessions;

/// What the gateway is built from, besides its configuration.
pub struct Parts {
    pub keys: Arc<KeyStore>,
    pub upstreams: Arc<Upstreams>,
    /// The verifier started for `[auth.oauth]`, if configured.
    pub oauth: Option<Arc<OAuthVerifier>>,
    pub limiter: Arc<Limiter>,
    pub auditor: Arc<Auditor>,
    pub metrics: Arc<Metrics>,
    /// Calls held for an operator's decision (`confirm = "approve"`).
    pub approvals: Arc<ApprovalStore>,
}

/// Cheap to clone: one `Arc` around everything.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    authenticator: Arc<Authenticator>,
    upstreams: Arc<Upstreams>,
    sessions: Arc<Sessions>,
    input_lot: InputLot,
    confirmations: Confirmations,
    limiter: Arc<Limiter>,
    auditor: Arc<Auditor>,
    metrics: Arc<Metrics>,
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
    client_addresses: ClientAddresses,
    max_body_bytes: usize,
    results: Results,
    json_limits: JsonLimits,
    body_read_timeout: Duration,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState").finish_non_exhaustive()
    }
}

impl AppState {
    pub fn new(config: &Config, parts: Parts) -> Self {
        let Parts {
            keys,
            upstreams,
            oauth,
            limiter,
            auditor,
            metrics,
            approvals,
        } = parts;
        Self {
            inner: Arc::new(Inner {
                authenticator: Arc::new(Authenticator {
                    keys,
                    failed: FailedAuth::new(
                        config.auth.max_failures_per_ip,
                        config.auth.failure_window,
                    ),
                    oauth,
                    api_keys: config.auth.api_keys,
                }),
                upstreams,
                sessions: Arc::new(Sessions::new(&config.sessions)),
                input_lot: InputLot::new(&config.waiting),
                confirmations: Confirmations::new(approvals, &config.waiting),
                limiter,
                auditor,
                metrics,
                allowed_hosts: config.allowed_hosts.clone(),
                allowed_origins: config.allowed_origins.clone(),
                client_addresses: ClientAddresses::new(
                    &config.trusted_proxies,
                    config.rate.ipv4_prefix,
                    config.rate.ipv6_prefix,
                ),
                max_body_bytes: config.limits.max_body_bytes,
                results: config.results.clone(),
                json_limits: config.limits.json,
                body_read_timeout: config.connections.body_read_timeout,
            }),
        }
    }

    /// What the authentication layer needs.
    pub(crate) fn authenticator(&self) -> &Arc<Authenticator> {
        &self.inner.authenticator
    }

    pub fn upstreams(&self) -> &Arc<Upstreams> {
        &self.inner.upstreams
    }

    pub(crate) fn sessions(&self) -> Arc<Sessions> {
        self.inner.sessions.clone()
    }

    /// Calls parked until a modern client answers their upstream's questions.
    pub(crate) fn input_lot(&self) -> &InputLot {
        &self.inner.input_lot
    }

    /// Destructive calls waiting for a modern client's confirmation.
    pub(crate) fn confirmations(&self) -> &Confirmations {
        &self.inner.confirmations
    }

    pub(crate) fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub(crate) fn auditor(&self) -> &Arc<Auditor> {
        &self.inner.auditor
    }

    pub(crate) fn limiter(&self) -> &Arc<Limiter> {
        &self.inner.limiter
    }

    pub(crate) fn oauth(&self) -> Option<&Arc<OAuthVerifier>> {
        self.inner.authenticator.oauth.as_ref()
    }

    pub(crate) fn allowed_hosts(&self) -> &[String] {
        &self.inner.allowed_hosts
    }

    pub(crate) fn allowed_origins(&self) -> &[String] {
        &self.inner.allowed_origins
    }

    /// How a request's client address is found and aggregated.
    pub(crate) fn client_addresses(&self) -> &ClientAddresses {
        &self.inner.client_addresses
    }

    pub(crate) fn max_body_bytes(&self) -> usize {
        self.inner.max_body_bytes
    }

    /// How upstream results are hardened before they reach a client.
    pub(crate) fn results(&self) -> &Results {
        &self.inner.results
    }

    /// Caps every body is scanned against before it is parsed.
    pub(crate) fn json_limits(&self) -> &JsonLimits {
        &self.inner.json_limits
    }

    pub(crate) fn body_read_timeout(&self) -> Duration {
        self.inner.body_read_timeout
    }
}
