//! What a reload (SIGHUP, `warden reload`) does with a configuration read again: which
//! changed settings take effect at once, which upstreams restart because their own
//! definition changed, and which changes wait for the next start. A running Warden
//! never applies half a setting: what it cannot change live stays as it was, and is
//! reported as waiting for a restart until it is.

use crate::Config;

/// The outcome of comparing the configuration in force with the one read again.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReloadPlan {
    /// Changed settings that take effect now, as an operator writes them.
    pub live: Vec<&'static str>,
    /// Upstreams (by position) whose definition changed: each is restarted; the
    /// others keep running untouched.
    pub restart_upstreams: Vec<usize>,
    /// Changed settings that take effect only at the next start.
    pub needs_restart: Vec<&'static str>,
}

impl ReloadPlan {
    /// Whether the file changed nothing.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty() && self.restart_upstreams.is_empty() && self.needs_restart.is_empty()
    }
}

/// Compares the configuration in force with `read`, and returns the plan and the
/// configuration in force after it: `read`, except for what needs a restart, which
/// keeps its running value (so that the next reload still reports it).
pub fn plan_reload(running: &Config, read: &Config) -> (ReloadPlan, Config) {
    let mut plan = ReloadPlan::default();
    let mut next = read.clone();
    // Settings the gateway, the limiter and the upstreams read afresh.
    let live: [(&'static str, bool); 10] = [
        (
            "[server] allowed_hosts",
            running.allowed_hosts != read.allowed_hosts,
        ),
        (
            "[server] allowed_origins",
            running.allowed_origins != read.allowed_origins,
        ),
        (
            "[server] trusted_proxies",
            running.trusted_proxies != read.trusted_proxies,
        ),
        ("[limits] body and JSON caps", running.limits != read.limits),
        (
            "[limits] waiting lists and confirm_timeout_ms",
            running.waiting != read.waiting,
        ),
        ("[rate] and [tenants]", running.rate != read.rate),
        ("[tools]", running.tools != read.tools),
        ("[results]", running.results != read.results),
        ("[egress]", running.egress_allow != read.egress_allow),
        ("[policy] and its files", running.policy != read.policy),
    ];
    plan.live = changed(&live);

    // The same upstreams in the same order: each whose definition changed restarts.
    // Adding, removing or reordering them changes every index the limiter, the routes
    // and the cursors hold: that waits for a restart.
    let same_list = running.upstreams.len() == read.upstreams.len()
        && running
            .upstreams
            .iter()
            .zip(&read.upstreams)
            .all(|(old, new)| old.name == new.name);
    if same_list {
        plan.restart_upstreams = (0..read.upstreams.len())
            .filter(|&index| running.upstreams[index] != read.upstreams[index])
            .collect();
    } else {
        next.upstreams = running.upstreams.clone();
    }

    let restart_only: [(&'static str, bool); 14] = [
        ("[server] listen", running.listen != read.listen),
        ("[admin] listen", running.admin_listen != read.admin_listen),
        ("[admin] tls", running.admin_tls != read.admin_tls),
        ("data_dir", running.data_dir != read.data_dir),
        (
            "[server] allow_plaintext",
            running.allow_plaintext != read.allow_plaintext,
        ),
        (
            "[server] tls_cert, tls_key, tls_handshake_timeout_ms",
            running.tls != read.tls,
        ),
        (
            "[server] connection limits and timeouts",
            running.connections != read.connections,
        ),
        ("[auth]", running.auth != read.auth),
        (
            "[sessions] and [limits] max_sessions_per_key",
            running.sessions != read.sessions,
        ),
        ("[audit]", running.audit != read.audit),
        ("[[upstream]] added, removed or reordered", !same_list),
        ("[store]", running.store != read.store),
        ("[cluster]", running.cluster != read.cluster),
        ("[telemetry]", running.telemetry != read.telemetry),
    ];
    plan.needs_restart = changed(&restart_only);
    next.listen = running.listen;
    next.admin_listen = running.admin_listen;
    next.admin_tls = running.admin_tls;
    next.data_dir = running.data_dir.clone();
    next.allow_plaintext = running.allow_plaintext;
    next.tls = running.tls.clone();
    next.connections = running.connections.clone();
    next.auth = running.auth.clone();
    next.sessions = running.sessions.clone();
    next.audit = running.audit.clone();
    next.store = running.store.clone();
    next.cluster = running.cluster.clone();
    next.telemetry = running.telemetry.clone();
    (plan, next)
}

fn changed(settings: &[(&'static str, bool)]) -> Vec<&'static str> {
    settings
        .iter()
        .filter(|(_, differs)| *differs)
        .map(|(name, _)| *name)
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(text: &str) -> Config {
        Config::from_text(text, Path::new("w.toml"), |_| Some("set".into())).unwrap()
    }

    const TWO: &str = r#"
[[upstream]]
name = "a"
command = ["a-server"]

[[upstream]]
name = "b"
url = "https://b.example.com/mcp"
"#;

    #[test]
    fn the_same_file_changes_nothing() {
        let running = config(TWO);
        let (plan, next) = plan_reload(&running, &config(TWO));
        assert!(plan.is_empty(), "{plan:?}");
        assert_eq!(next, running);
    }

    #[test]
    fn live_settings_apply_and_only_the_changed_upstream_restarts() {
        let running = config(TWO);
        let read = config(&format!(
            "{}\n[server]\nallowed_origins = [\"https://app.example.com\"]\n[rate]\nper_key_rpm = 5\n[tools.\"a__x\"]\nkind = \"read\"\n[egress]\nallow = [\"10.0.0.0/8\"]\n",
            TWO.replace("a-server", "a-server-2")
        ));
        let (plan, next) = plan_reload(&running, &read);
        assert_eq!(
            plan.live,
            [
                "[server] allowed_origins",
                "[rate] and [tenants]",
                "[tools]",
                "[egress]"
            ]
        );
        assert_eq!(plan.restart_upstreams, [0]);
        assert!(plan.needs_restart.is_empty(), "{plan:?}");
        assert_eq!(next, read);
    }

    #[test]
    fn what_cannot_change_live_keeps_its_running_value_and_is_reported() {
        let running = config(TWO);
        let read = config(&format!(
            "[server]\nlisten = \"127.0.0.1:8181\"\n[auth]\nmax_failures_per_ip = 3\n{}\n[[upstream]]\nname = \"c\"\nurl = \"https://c.example.com/mcp\"\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\n",
            TWO
        ));
        let (plan, next) = plan_reload(&running, &read);
        assert_eq!(
            plan.needs_restart,
            [
                "[server] listen",
                "[auth]",
                "[[upstream]] added, removed or reordered",
                "[telemetry]"
            ]
        );
        assert!(plan.restart_upstreams.is_empty());
        assert_eq!(next.listen, running.listen);
        assert_eq!(next.auth, running.auth);
        assert_eq!(next.telemetry, None);
        assert_eq!(next.upstreams, running.upstreams);
        // Still waiting at the next reload of the same file.
        let (again, _) = plan_reload(&next, &read);
        assert_eq!(again.needs_restart, plan.needs_restart);
    }
}
