//! What every request handler shares.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use warden_config::{Config, Results};
use warden_limits::Limiter;
use warden_proto::JsonLimits;
use warden_store::{Approvals, Keys};
use warden_upstream::Upstreams;

use crate::audit::Auditor;
use crate::auth::{Authenticator, Credential, FailedAuth};
use crate::client_addr::ClientAddresses;
use crate::confirm::Confirmations;
use crate::guard::HostGuard;
use crate::input_required::InputLot;
use crate::metrics::Metrics;
use crate::oauth::OAuthVerifier;
use crate::policy::PolicyEngine;
use crate::session::Sessions;
use crate::shared::{ClusterState, Tickets};
use crate::swap::Swap;

/// What the gateway is built from, besides its configuration.
pub struct Parts {
    pub keys: Arc<dyn Keys>,
    pub upstreams: Arc<Upstreams>,
    /// The verifier started for `[auth.oauth]`, if configured.
    pub oauth: Option<Arc<OAuthVerifier>>,
    pub limiter: Arc<Limiter>,
    pub auditor: Arc<Auditor>,
    pub metrics: Arc<Metrics>,
    /// Calls held for an operator's decision (`confirm = "approve"`).
    pub approvals: Arc<dyn Approvals>,
    /// What the replicas of a cluster share (`[cluster]`); `None` on a single node.
    pub cluster: Option<Arc<dyn ClusterState>>,
    /// The policies in force and the sessions' flow state.
    pub policy: Arc<PolicyEngine>,
    /// Where request traces go (`[telemetry]`), or off.
    pub telemetry: warden_telemetry::Telemetry,
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
    /// Parked calls this replica asked another to resume.
    tickets: Tickets,
    input_lot: InputLot,
    confirmations: Confirmations,
    limiter: Arc<Limiter>,
    auditor: Arc<Auditor>,
    metrics: Arc<Metrics>,
    policy: Arc<PolicyEngine>,
    telemetry: warden_telemetry::Telemetry,
    // What a reload changes in place (`reconfigure`); the rest needs a restart.
    guard: Arc<Swap<HostGuard>>,
    admin_guard: Swap<HostGuard>,
    client_addresses: Arc<Swap<ClientAddresses>>,
    body_caps: Swap<BodyCaps>,
    results: Swap<Results>,
    body_read_timeout: Duration,
}

/// What every body is held to while it is read and scanned, before it is parsed.
#[derive(Debug)]
pub(crate) struct BodyCaps {
    pub max_bytes: usize,
    pub json: JsonLimits,
}

impl BodyCaps {
    fn of(config: &Config) -> Self {
        Self {
            max_bytes: config.limits.max_body_bytes,
            json: config.limits.json,
        }
    }
}

fn client_addresses_of(config: &Config) -> ClientAddresses {
    ClientAddresses::new(
        &config.trusted_proxies,
        config.rate.ipv4_prefix,
        config.rate.ipv6_prefix,
    )
}

/// The public listener's guard: the hosts and browser origins allowed.
fn guard_of(config: &Config) -> HostGuard {
    HostGuard::new(
        config.listen,
        &config.allowed_hosts,
        &config.allowed_origins,
    )
}

/// The admin listener's guard: the same hosts, and no browser origin but its own.
fn admin_guard_of(config: &Config) -> HostGuard {
    HostGuard::new(config.admin_listen, &config.allowed_hosts, &[])
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
            cluster,
            policy,
            telemetry,
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
                    scheme: if config.tls.is_some() {
                        "https"
                    } else {
                        "http"
                    },
                }),
                upstreams,
                sessions: Arc::new(Sessions::new(&config.sessions, cluster.clone())),
                tickets: Tickets::default(),
                input_lot: InputLot::new(
                    &config.waiting,
                    cluster.as_ref().map(|cluster| cluster.replica_id()),
                ),
                confirmations: Confirmations::new(approvals, &config.waiting, cluster),
                limiter,
                auditor,
                metrics,
                policy,
                telemetry,
                guard: Arc::new(Swap::new(guard_of(config))),
                admin_guard: Swap::new(admin_guard_of(config)),
                client_addresses: Arc::new(Swap::new(client_addresses_of(config))),
                body_caps: Swap::new(BodyCaps::of(config)),
                results: Swap::new(config.results.clone()),
                body_read_timeout: config.connections.body_read_timeout,
            }),
        }
    }

    /// Puts in force what a reload may change here: allowed hosts and origins (both
    /// listeners), trusted proxies and address networks, body and JSON caps, the
    /// hardening of results, and the waiting lists' shares and confirmation time. Requests under way finish with what they started with.
    pub fn reconfigure(&self, config: &Config) {
        self.inner.guard.set(guard_of(config));
        self.inner.admin_guard.set(admin_guard_of(config));
        self.inner.client_addresses.set(client_addresses_of(config));
        self.inner.body_caps.set(BodyCaps::of(config));
        self.inner.results.set(config.results.clone());
        self.inner.confirmations.set_shares(&config.waiting);
        self.inner.input_lot.set_shares(&config.waiting);
    }

    /// Where request traces go.
    pub(crate) fn telemetry(&self) -> &warden_telemetry::Telemetry {
        &self.inner.telemetry
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

    /// What the replicas share, in a cluster.
    pub(crate) fn cluster(&self) -> Option<&Arc<dyn ClusterState>> {
        self.inner.sessions.shared()
    }

    pub(crate) fn tickets(&self) -> &Tickets {
        &self.inner.tickets
    }

    /// Calls parked until a modern client answers their upstream's questions.
    pub(crate) fn input_lot(&self) -> &InputLot {
        &self.inner.input_lot
    }

    /// Destructive calls waiting for a modern client's confirmation.
    pub(crate) fn confirmations(&self) -> &Confirmations {
        &self.inner.confirmations
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// The policies in force (a reload replaces them) and the sessions' flow state.
    pub fn policy(&self) -> &Arc<PolicyEngine> {
        &self.inner.policy
    }

    pub fn auditor(&self) -> &Arc<Auditor> {
        &self.inner.auditor
    }

    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.inner.limiter
    }

    pub(crate) fn oauth(&self) -> Option<&Arc<OAuthVerifier>> {
        self.inner.authenticator.oauth.as_ref()
    }

    /// The Host/Origin guard of the public listener.
    pub(crate) fn guard(&self) -> &Arc<Swap<HostGuard>> {
        &self.inner.guard
    }

    /// Whether the admin listener's Host/Origin guard (the public one's rules, for the
    /// admin address) lets a request with this `Host` and `Origin` in.
    pub fn admin_allows(&self, host: Option<&str>, origin: Option<&str>) -> bool {
        self.inner.admin_guard.get().allows(host, origin)
    }

    /// Checks a credential presented at the operator's console from `peer`: as the MCP
    /// endpoint would, a wrong one counted against the same address.
    pub async fn check_operator(&self, peer: IpAddr, presented: &str) -> Credential {
        let network = self
            .inner
            .client_addresses
            .get()
            .client(peer, &axum::http::HeaderMap::new());
        self.inner.authenticator.check(network, presented).await
    }

    /// How a request's client address is found and aggregated.
    pub(crate) fn client_addresses(&self) -> &Arc<Swap<ClientAddresses>> {
        &self.inner.client_addresses
    }

    /// The body cap and the caps every body is scanned against before it is parsed.
    pub(crate) fn body_caps(&self) -> Arc<BodyCaps> {
        self.inner.body_caps.get()
    }

    /// How upstream results are hardened before they reach a client.
    pub(crate) fn results(&self) -> Arc<Results> {
        self.inner.results.get()
    }

    pub(crate) fn body_read_timeout(&self) -> Duration {
        self.inner.body_read_timeout
    }
}
