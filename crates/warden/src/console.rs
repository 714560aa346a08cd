//! The running gateway as the operator's console sees it: the one place where
//! `warden-console`'s narrow [`Gateway`] interface meets the gateway's parts.

use std::net::IpAddr;

use warden_console::{
    Gateway, GatewayFuture, Login, TenantCost, ToolEntry, Totals, UpstreamStatus,
};
use warden_gateway::{AppState, Credential};
use warden_store::AuditRecord;

pub(crate) struct GatewayView(pub AppState);

impl Gateway for GatewayView {
    fn login<'a>(&'a self, address: IpAddr, presented: &'a str) -> GatewayFuture<'a, Login> {
        Box::pin(async move {
            match self.0.check_operator(address, presented).await {
                Credential::Valid(principal) => Login::Valid(principal),
                Credential::Refused => Login::Refused,
                Credential::Throttled { retry_after } => Login::Throttled { retry_after },
                Credential::Unavailable => Login::Unavailable,
            }
        })
    }

    fn allows(&self, host: Option<&str>, origin: Option<&str>) -> bool {
        self.0.admin_allows(host, origin)
    }

    fn upstreams(&self) -> Vec<UpstreamStatus> {
        self.0
            .upstreams()
            .all()
            .iter()
            .map(|upstream| UpstreamStatus {
                name: upstream.name().to_owned(),
                up: upstream.facts().is_some(),
                restarts: upstream.restarts(),
            })
            .collect()
    }

    fn tools(&self) -> Vec<ToolEntry> {
        self.0
            .upstreams()
            .tool_kinds()
            .into_iter()
            .map(|tool| ToolEntry {
                name: tool.name,
                upstream: tool.upstream,
                kind: tool.kind.as_str().to_owned(),
                kind_from: tool.source.as_str().to_owned(),
            })
            .collect()
    }

    fn not_ready(&self) -> GatewayFuture<'_, Option<&'static str>> {
        Box::pin(async move {
            if !self.0.limiter().ready().await {
                Some("shared limits (Redis) unavailable")
            } else if self.0.auditor().is_failing() {
                Some("audit trail not written")
            } else {
                None
            }
        })
    }

    fn metrics(&self) -> Option<String> {
        self.0.metrics().encode().ok()
    }

    fn totals(&self) -> Totals {
        let totals = self.0.metrics().totals();
        Totals {
            requests: totals.requests,
            refusals: totals.refusals,
        }
    }

    fn costs(&self) -> Vec<TenantCost> {
        self.0
            .limiter()
            .costs_today()
            .into_iter()
            .map(|cost| TenantCost {
                tenant: cost.tenant,
                spent: cost.spent,
                cap: cost.cap,
            })
            .collect()
    }

    fn record(&self, record: AuditRecord) -> GatewayFuture<'_, ()> {
        Box::pin(self.0.auditor().record(record))
    }
}
