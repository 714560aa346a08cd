//! Reloading a running Warden: SIGHUP, or `warden reload` (the admin listener's
//! `POST /reload`), reads the configuration file again and applies what can change live:
//! allowed hosts and origins, trusted proxies, body and JSON caps, waiting lists, rates
//! and caps (keys' defaults included), tool rules, result hardening and egress rules.
//! Upstreams whose own definition changed are restarted, the others keep running. What
//! needs a restart (listen addresses, data directory, TLS settings, connections, auth,
//! sessions, audit, the list of upstreams) keeps its running value and is reported.
//! The TLS certificate files are read again at every reload. A file that does not load
//! changes nothing.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};
use warden_config::{Config, Overrides, plan_reload};
use warden_egress::EgressPolicy;
use warden_gateway::{AppState, TlsCertificate};
use warden_limits::Limiter;
use warden_store::Audit;
use warden_upstream::Upstreams;

/// Everything a reload changes, and where the configuration comes from.
pub(crate) struct Reloader {
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
    /// The configuration in force.
    pub running: Config,
    pub state: AppState,
    pub limiter: Arc<Limiter>,
    pub upstreams: Arc<Upstreams>,
    pub egress: Arc<EgressPolicy>,
    pub certificate: Option<Arc<TlsCertificate>>,
    /// Where a reload is recorded, as an operator's action.
    pub audit: Arc<dyn Audit>,
}

impl Reloader {
    /// Watches SIGHUP from now on (the default action of a SIGHUP no one watches is to
    /// end the process): call it before the start says it listens.
    pub fn watch_hangups() -> Option<tokio::signal::unix::Signal> {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
            Ok(hangups) => Some(hangups),
            Err(error) => {
                tracing::warn!(%error, "cannot watch SIGHUP; reload with `warden reload`");
                None
            }
        }
    }

    /// Reloads on every SIGHUP and every request from the admin listener (answered with
    /// the report), one at a time, until the admin listener is gone.
    pub async fn run(
        mut self,
        mut hangups: Option<tokio::signal::unix::Signal>,
        mut requests: mpsc::Receiver<oneshot::Sender<Value>>,
    ) {
        loop {
            let hangup = async {
                match hangups.as_mut() {
                    Some(hangups) => hangups.recv().await,
                    None => std::future::pending().await,
                }
            };
            let answer = tokio::select! {
                _ = hangup => None,
                request = requests.recv() => match request {
                    Some(answer) => Some(answer),
                    None => return,
                },
            };
            let report = self.reload().await;
            if let Some(answer) = answer {
                let _ = answer.send(report);
            }
        }
    }

    /// Reads the configuration again and applies it; the report says what happened.
    async fn reload(&mut self) -> Value {
        let certificate = self.certificate.as_ref().map(|certificate| {
            certificate.reload().map_err(|error| {
                tracing::error!(%error, "TLS certificate not reloaded; the previous one stays");
                error.to_string()
            })
        });
        if let Some(Ok(())) = certificate {
            tracing::info!("TLS certificate reloaded");
        }
        let read = match Config::load(self.path.as_deref(), &self.overrides) {
            Ok(read) => read,
            Err(error) => {
                tracing::error!(%error, "configuration not reloaded; the running one stays");
                self.record("refused").await;
                return json!({"ok": false, "error": error.to_string()});
            }
        };
        // Policies first: a file that does not compile changes nothing at all.
        let policies = match warden_gateway::compile_policies(&read.policy, &self.upstreams) {
            Ok((policies, warnings)) => {
                for warning in warnings {
                    tracing::warn!("policy: {warning}");
                }
                policies
            }
            Err(problems) => {
                let problems: Vec<String> = problems.iter().map(ToString::to_string).collect();
                tracing::error!(
                    ?problems,
                    "configuration not reloaded: the policies do not load; the running ones stay"
                );
                self.record("refused").await;
                return json!({"ok": false, "error": format!("the policies do not load:\n{}", problems.join("\n"))});
            }
        };
        let (plan, next) = plan_reload(&self.running, &read);
        self.state.policy().replace(policies);
        self.state.reconfigure(&next);
        let slots: Vec<usize> = next.upstreams.iter().map(|u| u.max_concurrent).collect();
        self.limiter.reconfigure(&next.rate, &next.tools, &slots);
        self.egress.replace(&next.egress_allow);
        if self.running.tools != next.tools {
            self.upstreams.set_rules(&next.tools).await;
        }
        let mut restarted = Vec::new();
        let mut failed = Vec::new();
        for &index in &plan.restart_upstreams {
            let config = &next.upstreams[index];
            match self.upstreams.restart(index, config).await {
                Ok(()) => restarted.push(config.name.clone()),
                Err(error) => {
                    tracing::error!(upstream = %config.name, %error, "upstream not restarted; its calls fail until the next reload or restart");
                    failed.push(json!({"upstream": config.name, "error": error.to_string()}));
                }
            }
        }
        for rule in self.upstreams.unmatched_rules() {
            tracing::warn!("{}", crate::unmatched_message(&rule));
        }
        self.running = next;
        tracing::info!(
            applied = ?plan.live,
            restarted = ?restarted,
            needs_restart = ?plan.needs_restart,
            "configuration reloaded{}",
            if plan.is_empty() { " (nothing changed)" } else { "" }
        );
        self.record(if failed.is_empty() { "ok" } else { "partial" })
            .await;
        json!({
            "ok": true,
            "applied": plan.live,
            "restarted": restarted,
            "failed": failed,
            "needs_restart": plan.needs_restart,
            "certificate": certificate.map(|done| done.err().unwrap_or_else(|| "reloaded".into())),
        })
    }

    /// The reload in the audit trail, as an operator's action.
    async fn record(&self, outcome: &str) {
        let target = self.path.as_ref().map_or_else(
            || "<defaults>".to_owned(),
            |path| path.display().to_string(),
        );
        let record = crate::installation::operator_action("config/reload", "*", &target, outcome);
        if let Err(error) = self.audit.append(std::slice::from_ref(&record)).await {
            tracing::error!(%error, "the reload was not recorded in the audit trail");
        }
    }
}
