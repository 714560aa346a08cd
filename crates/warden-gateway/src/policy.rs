//! Policies as code in the request path. The policies in force
//! ([`warden_policy::rules::Policies`]: the operator's Cedar files, or the built-in
//! ones, and the shipped session policy) decide each call and filter each list; this
//! module gives them their facts: who asks, the tool, and what the asking session has
//! met so far.
//!
//! That last part is the flow state. Per legacy session, or per modern client instance
//! (its key and client name, as per-session limits count), Warden records whether a
//! result from an untrusted source (an `untrusted` upstream, or a tool marked
//! `returns = "untrusted"`) reached the client, whether tenant-private data did
//! (`returns = "private"`), how many calls it made and which tools it used (the first
//! 64). It lives for the session idle time in a [`FlowStore`]: this replica's memory,
//! or with `[cluster]` Redis, so that a session's next call sees what its last one met
//! whichever replica serves it. Each tenant keeps at most `max_sessions` of them (its
//! least recently used go first), so no tenant can push another's out.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use warden_config::Returns;
use warden_policy::CatalogueTool;
use warden_policy::rules::{Policies, PrincipalFacts, RequestFacts, SessionFacts, ToolFacts};
use warden_proto::Era;
use warden_store::Principal;
use warden_upstream::{Upstream, Upstreams};

use crate::shared::{SharedFuture, Unreachable};
use crate::swap::Swap;

/// How many tool names a session's flow state remembers.
pub const TOOLS_REMEMBERED: usize = 64;

/// While flow states cannot be read, how often the log says so again.
const UNREADABLE_LOG_EVERY: Duration = Duration::from_secs(60);

/// Where the flow states live. Both methods are confined to one tenant, and a tenant
/// keeps at most its share of them.
pub trait FlowStore: Send + Sync + 'static {
    /// What `instance` has met so far (nothing, for one unknown or idle too long).
    fn facts<'a>(&'a self, tenant: &'a str, instance: &'a str) -> SharedFuture<'a, SessionFacts>;

    /// Records that a result of `tool` (`None`: not a tool call), carrying what
    /// `returns` says, reached `instance`.
    fn record<'a>(
        &'a self,
        tenant: &'a str,
        instance: &'a str,
        tool: Option<&'a str>,
        returns: Returns,
    ) -> SharedFuture<'a, ()>;
}

/// The policies in force, and the flow state of every session they read.
pub struct PolicyEngine {
    policies: Swap<Policies>,
    flows: Arc<dyn FlowStore>,
    /// When an unreadable flow state was last logged, so an outage is one line a
    /// minute rather than one per request.
    unreadable_logged: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine").finish_non_exhaustive()
    }
}

impl PolicyEngine {
    /// `policies` in force, reading flow states in `flows` (`None`: this replica's
    /// memory).
    pub fn new(
        policies: Policies,
        sessions: &warden_config::Sessions,
        flows: Option<Arc<dyn FlowStore>>,
    ) -> Self {
        let flows = flows.unwrap_or_else(|| {
            Arc::new(Flows {
                tenants: Mutex::new(HashMap::new()),
                per_tenant: sessions.max_sessions,
                idle: sessions.idle_timeout,
            })
        });
        Self {
            policies: Swap::new(policies),
            flows,
            unreadable_logged: Mutex::new(None),
        }
    }

    /// Puts `policies` in force from the next request on.
    pub fn replace(&self, policies: Policies) {
        self.policies.set(policies);
    }

    /// The policies in force.
    pub fn current(&self) -> Arc<Policies> {
        self.policies.get()
    }

    /// What `instance` has met so far. A flow state that cannot be read (Redis) is
    /// decided as the worst case, untrusted text and private data: reads go on,
    /// writes need a person.
    pub(crate) async fn session(&self, tenant: &str, instance: &str) -> SessionFacts {
        match self.flows.facts(tenant, instance).await {
            Ok(facts) => facts,
            Err(Unreachable) => {
                self.note_unreadable();
                worst_case_session()
            }
        }
    }

    /// Logs an unreadable flow state when it starts, then once a minute.
    fn note_unreadable(&self) {
        let now = Instant::now();
        let mut logged = self
            .unreadable_logged
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if logged.is_some_and(|at| now.duration_since(at) < UNREADABLE_LOG_EVERY) {
            return;
        }
        *logged = Some(now);
        drop(logged);
        tracing::warn!(
            "sessions' flow states cannot be read (Redis): deciding as if they read untrusted text and private data (said again each minute this lasts)"
        );
    }

    /// Records that a result of `tool` (carrying what `returns` says) reached `instance`.
    pub(crate) async fn record(
        &self,
        tenant: &str,
        instance: &str,
        tool: Option<&str>,
        returns: Returns,
    ) -> Result<(), Unreachable> {
        self.flows.record(tenant, instance, tool, returns).await
    }
}

/// The flow state of one session or client instance.
struct Flow {
    facts: SessionFacts,
    touched: Instant,
}

/// Flow states by tenant, then by instance, in this replica's memory.
struct Flows {
    tenants: Mutex<HashMap<String, HashMap<String, Flow>>>,
    per_tenant: usize,
    idle: Duration,
}

impl FlowStore for Flows {
    fn facts<'a>(&'a self, tenant: &'a str, instance: &'a str) -> SharedFuture<'a, SessionFacts> {
        let facts = self.get(tenant, instance);
        Box::pin(std::future::ready(Ok(facts)))
    }

    fn record<'a>(
        &'a self,
        tenant: &'a str,
        instance: &'a str,
        tool: Option<&'a str>,
        returns: Returns,
    ) -> SharedFuture<'a, ()> {
        self.note(tenant, instance, tool, returns);
        Box::pin(std::future::ready(Ok(())))
    }
}

impl Flows {
    fn get(&self, tenant: &str, instance: &str) -> SessionFacts {
        let tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        tenants
            .get(tenant)
            .and_then(|flows| flows.get(instance))
            .filter(|flow| flow.touched.elapsed() < self.idle)
            .map(|flow| flow.facts.clone())
            .unwrap_or_default()
    }

    fn note(&self, tenant: &str, instance: &str, tool: Option<&str>, returns: Returns) {
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let flows = tenants.entry(tenant.to_owned()).or_default();
        if !flows.contains_key(instance) && flows.len() >= self.per_tenant {
            // Idle ones first; else the least recently used of this tenant's own.
            flows.retain(|_, flow| flow.touched.elapsed() < self.idle);
            if flows.len() >= self.per_tenant
                && let Some(oldest) = flows
                    .iter()
                    .min_by_key(|(_, flow)| flow.touched)
                    .map(|(name, _)| name.clone())
            {
                flows.remove(&oldest);
            }
        }
        let flow = flows.entry(instance.to_owned()).or_insert_with(|| Flow {
            facts: SessionFacts::default(),
            touched: Instant::now(),
        });
        if flow.touched.elapsed() >= self.idle {
            flow.facts = SessionFacts::default();
        }
        flow.touched = Instant::now();
        let facts = &mut flow.facts;
        facts.untrusted_seen |= returns.untrusted;
        facts.private_read |= returns.private;
        if let Some(tool) = tool {
            facts.calls = facts.calls.saturating_add(1);
            if facts.tools_used.len() < TOOLS_REMEMBERED
                && !facts.tools_used.iter().any(|used| used == tool)
            {
                facts.tools_used.push(tool.to_owned());
            }
        }
    }
}

/// What a session whose flow state cannot be read is taken to have met: everything.
fn worst_case_session() -> SessionFacts {
    SessionFacts {
        untrusted_seen: true,
        private_read: true,
        ..SessionFacts::default()
    }
}

/// Who asks, as policies see it.
pub(crate) fn principal_facts(principal: &Principal) -> PrincipalFacts {
    PrincipalFacts {
        id: principal.key_id.clone(),
        tenant: principal.tenant.clone(),
        scope: principal.scope.as_str().to_owned(),
        name: principal.name.clone(),
        tags: principal.labels.clone(),
        groups: principal.groups.clone(),
    }
}

/// The request around a decision.
pub(crate) fn request_facts(
    era: Era,
    client_name: &str,
    address: Option<IpAddr>,
    session: SessionFacts,
) -> RequestFacts {
    RequestFacts {
        client_name: client_name.to_owned(),
        era: era.as_str(),
        address: address.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        session,
    }
}

/// What a tool's results carry: what its `returns` rule says, and untrusted text
/// whatever it says when its upstream is `untrusted`.
pub(crate) fn returns_of(tool: &CatalogueTool, upstream: &Upstream) -> Returns {
    let mut returns = tool.returns();
    returns.untrusted |= upstream.is_untrusted();
    returns
}

/// A catalogue tool as policies see it.
pub(crate) fn tool_facts<'a>(tool: &'a CatalogueTool, upstream: &'a Upstream) -> ToolFacts<'a> {
    static NO_SCHEMA: serde_json::Value = serde_json::Value::Null;
    let definition = tool.definition();
    ToolFacts {
        name: tool.name(),
        upstream: upstream.name(),
        kind: tool.kind(),
        untrusted: returns_of(tool, upstream).untrusted,
        input_schema: definition.get("inputSchema").unwrap_or(&NO_SCHEMA),
        annotations: definition.get("annotations"),
    }
}

/// Compiles `[policy]` against the catalogue `upstreams` offers now: the policies and
/// their warnings, or every problem.
pub fn compile(
    config: &warden_config::Policy,
    upstreams: &Upstreams,
) -> Result<
    (Policies, Vec<warden_policy::rules::PolicyProblem>),
    Vec<warden_policy::rules::PolicyProblem>,
> {
    let catalogue = upstreams.catalogue();
    let owners: Vec<(&CatalogueTool, Arc<Upstream>)> = catalogue
        .visible(warden_policy::ToolKind::Destructive)
        .filter_map(|tool| Some((tool, upstreams.get(tool.origin().upstream)?)))
        .collect();
    let tools: Vec<ToolFacts<'_>> = owners
        .iter()
        .map(|(tool, upstream)| tool_facts(tool, upstream))
        .collect();
    Policies::compile(config, &tools)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flows(per_tenant: usize) -> Flows {
        Flows {
            tenants: Mutex::new(HashMap::new()),
            per_tenant,
            idle: Duration::from_secs(3600),
        }
    }

    const UNTRUSTED: Returns = Returns {
        untrusted: true,
        private: false,
    };

    #[test]
    fn a_session_remembers_what_reached_it_and_no_other_session_does() {
        let flows = flows(10);
        flows.note("acme", "s1", Some("get_note"), UNTRUSTED);
        flows.note("acme", "s1", Some("search_notes"), Returns::default());
        let seen = flows.get("acme", "s1");
        assert!(seen.untrusted_seen);
        assert!(!seen.private_read);
        assert_eq!(seen.calls, 2);
        assert_eq!(seen.tools_used, ["get_note", "search_notes"]);
        assert_eq!(flows.get("acme", "s2"), SessionFacts::default());
        assert_eq!(flows.get("globex", "s1"), SessionFacts::default());
    }

    #[test]
    fn a_full_tenant_forgets_its_own_oldest_session_not_another_tenants() {
        let flows = flows(2);
        flows.note("globex", "g1", Some("t"), UNTRUSTED);
        for instance in ["a1", "a2", "a3"] {
            flows.note("acme", instance, Some("t"), UNTRUSTED);
        }
        assert!(!flows.get("acme", "a1").untrusted_seen, "the oldest went");
        assert!(flows.get("acme", "a3").untrusted_seen);
        assert!(flows.get("globex", "g1").untrusted_seen);
    }
}
