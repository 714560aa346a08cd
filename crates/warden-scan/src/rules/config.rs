//! A Warden configuration, audited without starting anything (`warden scan --config`):
//! the settings that undo a safe default.

use warden_config::{Config, Confirm, OutputCheck, SandboxMode, Source, ToolClass};

use crate::observe::Observations;
use crate::rule::{Category, Rule, Severity, Verdict};

const README: &str = "Warden README › Configuration";

/// Past these, a limit no longer protects anything.
const SANE_BODY_BYTES: usize = 16 << 20;
const SANE_STRING_BYTES: usize = 16 << 20;
const SANE_PER_KEY_RPM: u32 = 6_000;
const SANE_CONCURRENT_TOTAL: usize = 4_096;
/// An egress rule wider than this opens a whole private range.
const NARROWEST_WIDE_PREFIX_V4: u8 = 16;
const NARROWEST_WIDE_PREFIX_V6: u8 = 48;

/// Observations of a configuration: the rules of this family read `config`.
pub(crate) fn audit(config: Config) -> Observations {
    Observations {
        config: Some(config),
        ..Observations::default()
    }
}

pub(crate) const RULES: &[Rule] = &[
    Rule {
        id: "WS-CFG-001",
        category: Category::Configuration,
        severity: Severity::Critical,
        title: "No plain-HTTP listener beyond loopback",
        remediation: "Set tls_cert/tls_key, or keep listen on 127.0.0.1 behind a TLS-terminating proxy on the same host.",
        reference: README,
        check: |seen| {
            with_config(seen, |config| {
                let plain_public = !config.listen.ip().is_loopback() && config.tls.is_none();
                Verdict::from_check(!plain_public, || {
                    format!(
                        "listen = {} without TLS (allow_plaintext = true)",
                        config.listen
                    )
                })
            })
        },
    },
    Rule {
        id: "WS-CFG-002",
        category: Category::Configuration,
        severity: Severity::High,
        title: "A listener beyond loopback names its hosts (allowed_hosts)",
        remediation: "List the names clients use in [server] allowed_hosts.",
        reference: README,
        check: |seen| {
            with_config(seen, |config| {
                let open = !config.listen.ip().is_loopback() && config.allowed_hosts.is_empty();
                Verdict::from_check(!open, || {
                    format!("listen = {} answers any Host", config.listen)
                })
            })
        },
    },
    Rule {
        id: "WS-CFG-003",
        category: Category::Configuration,
        severity: Severity::Medium,
        title: "Allowed browser origins are https (or this machine)",
        remediation: "Allow only https:// origins beyond loopback.",
        reference: README,
        check: |seen| {
            with_config(seen, |config| {
                let plain: Vec<&str> = config
                    .allowed_origins
                    .iter()
                    .filter(|o| {
                        o.starts_with("http://")
                            && !["http://localhost", "http://127.0.0.1", "http://[::1]"]
                                .iter()
                                .any(|l| o.starts_with(l))
                    })
                    .map(String::as_str)
                    .collect();
                Verdict::from_check(plain.is_empty(), || {
                    format!("plain-HTTP origins allowed: {}", plain.join(", "))
                })
            })
        },
    },
    Rule {
        id: "WS-CFG-004",
        category: Category::Configuration,
        severity: Severity::High,
        title: "Every stdio upstream runs sandboxed",
        remediation: "Remove `sandbox = false` (or use \"best-effort\" on kernels without Landlock).",
        reference: "Warden README › Sandboxed stdio servers",
        check: |seen| {
            with_config(seen, |config| {
                let off = upstreams_where(config, |stdio| stdio.sandbox.mode == SandboxMode::Off);
                Verdict::from_check(off.is_empty(), || {
                    format!("sandbox off: {}", off.join(", "))
                })
            })
        },
    },
    Rule {
        id: "WS-CFG-005",
        category: Category::Configuration,
        severity: Severity::High,
        title: "Upstream commands pin what they run",
        remediation: "Pin npx/uvx packages to an exact version and images to a digest.",
        reference: "SLSA; OpenSSF Scorecard Pinned-Dependencies",
        check: |seen| {
            with_config(seen, |config| {
                let unpinned: Vec<String> = config
                    .upstreams
                    .iter()
                    .filter_map(|u| match &u.source {
                        Source::Stdio(stdio) => super::supply::unpinned(&stdio.command)
                            .map(|why| format!("{}: {why}", u.name)),
                        _ => None,
                    })
                    .collect();
                Verdict::from_check(unpinned.is_empty(), || unpinned.join("; "))
            })
        },
    },
    Rule {
        id: "WS-CFG-006",
        category: Category::Configuration,
        severity: Severity::Medium,
        title: "Remote upstreams' annotations are not trusted",
        remediation: "Classify a remote server's tools with [tools.\"…\"] kind instead of trust_annotations.",
        reference: "Warden README › Prompt-injection defences › Classification",
        check: |seen| {
            with_config(seen, |config| {
                let trusted: Vec<&str> = config
                    .upstreams
                    .iter()
                    .filter(|u| u.trust_annotations && matches!(u.source, Source::Http(_)))
                    .map(|u| u.name.as_str())
                    .collect();
                Verdict::from_check(trusted.is_empty(), || {
                    format!(
                        "trust_annotations on remote upstreams: {}",
                        trusted.join(", ")
                    )
                })
            })
        },
    },
    Rule {
        id: "WS-CFG-007",
        category: Category::Configuration,
        severity: Severity::Medium,
        title: "Limits stay within sane bounds",
        remediation: "Keep max_body_bytes and max_string_bytes ≤ 16 MiB, per_key_rpm ≤ 6000, max_concurrent_total ≤ 4096.",
        reference: README,
        check: |seen| {
            with_config(seen, |config| {
                let mut raised = Vec::new();
                if config.limits.max_body_bytes > SANE_BODY_BYTES {
                    raised.push(format!("max_body_bytes = {}", config.limits.max_body_bytes));
                }
                if config.limits.json.max_string_bytes > SANE_STRING_BYTES {
                    raised.push(format!(
                        "max_string_bytes = {}",
                        config.limits.json.max_string_bytes
                    ));
                }
                if config.rate.per_key_rpm > SANE_PER_KEY_RPM {
                    raised.push(format!("per_key_rpm = {}", config.rate.per_key_rpm));
                }
                if config.rate.max_concurrent_total > SANE_CONCURRENT_TOTAL {
                    raised.push(format!(
                        "max_concurrent_total = {}",
                        config.rate.max_concurrent_total
                    ));
                }
                Verdict::from_check(raised.is_empty(), || raised.join(", "))
            })
        },
    },
    Rule {
        id: "WS-CFG-008",
        category: Category::Configuration,
        severity: Severity::High,
        title: "No destructive tool runs without a confirmation (confirm = \"none\")",
        remediation: "Leave destructive tools on confirm = \"elicit\" (the default) or \"approve\".",
        reference: "Warden README › Prompt-injection defences › A person confirms destructive calls",
        check: |seen| {
            with_config(seen, |config| {
                let unconfirmed: Vec<&str> = config
                    .tools
                    .iter()
                    .filter(|(name, rules)| {
                        let destructive = rules.kind == Some(ToolClass::Destructive)
                            || ["delete", "remove", "drop", "destroy", "purge", "wipe"]
                                .iter()
                                .any(|w| name.contains(w));
                        destructive && rules.confirm == Some(Confirm::Never)
                    })
                    .map(|(name, _)| name.as_str())
                    .collect();
                Verdict::from_check(unconfirmed.is_empty(), || {
                    format!("confirm = \"none\" on {}", unconfirmed.join(", "))
                })
            })
        },
    },
    Rule {
        id: "WS-CFG-009",
        category: Category::Configuration,
        severity: Severity::Medium,
        title: "The audit trail is on",
        remediation: "Remove [audit] enabled = false, unless something else audits every call.",
        reference: "Warden README › Audit, logs and metrics",
        check: |seen| {
            with_config(seen, |config| {
                Verdict::from_check(config.audit.enabled, || "[audit] enabled = false".into())
            })
        },
    },
    Rule {
        id: "WS-CFG-010",
        category: Category::Configuration,
        severity: Severity::Medium,
        title: "What upstreams return is hardened",
        remediation: "Remove [results] harden = false.",
        reference: "Warden README › Prompt-injection defences › Hardened messages",
        check: |seen| {
            with_config(seen, |config| {
                Verdict::from_check(config.results.harden, || "[results] harden = false".into())
            })
        },
    },
    Rule {
        id: "WS-CFG-011",
        category: Category::Configuration,
        severity: Severity::Medium,
        title: "[egress] allow opens hosts and small networks, not whole ranges",
        remediation: "Open the one host or address an upstream needs, not 10.0.0.0/8 or 0.0.0.0/0.",
        reference: "Warden README › Outbound requests",
        check: |seen| {
            with_config(seen, |config| {
                let ranges: Vec<String> = config
                    .egress_allow
                    .iter()
                    .filter_map(|rule| match rule {
                        warden_config::EgressRule::Network(ip, prefix) => wide(*ip, *prefix),
                        warden_config::EgressRule::Host(_) => None,
                    })
                    .collect();
                Verdict::from_check(ranges.is_empty(), || {
                    format!("wide networks opened: {}", ranges.join(", "))
                })
            })
        },
    },
    Rule {
        id: "WS-CFG-012",
        category: Category::Configuration,
        severity: Severity::Medium,
        title: "No tool accepts arguments its schema does not declare (allow_extra_properties)",
        remediation: "Remove allow_extra_properties; fix the upstream's schema instead.",
        reference: "Warden README › Validation",
        check: |seen| {
            with_config(seen, |config| {
                let open = tools_where(config, |rules| rules.allow_extra_properties);
                Verdict::from_check(open.is_empty(), || {
                    format!("allow_extra_properties on {}", open.join(", "))
                })
            })
        },
    },
    Rule {
        id: "WS-CFG-013",
        category: Category::Configuration,
        severity: Severity::Low,
        title: "Results that break their output schema are blocked, not passed (output_check)",
        remediation: "Remove output_check = \"warn\" once the upstream's outputSchema is right.",
        reference: "Warden README › Validation",
        check: |seen| {
            with_config(seen, |config| {
                let warned = tools_where(config, |rules| rules.output_check == OutputCheck::Warn);
                Verdict::from_check(warned.is_empty(), || {
                    format!("output_check = \"warn\" on {}", warned.join(", "))
                })
            })
        },
    },
    Rule {
        id: "WS-CFG-014",
        category: Category::Configuration,
        severity: Severity::Low,
        title: "Sandboxes are enforced, not best-effort",
        remediation: "Use sandbox = true (enforced) where the kernel supports Landlock; best-effort runs unconfined where it does not.",
        reference: "Warden README › Sandboxed stdio servers",
        check: |seen| {
            with_config(seen, |config| {
                let partial = upstreams_where(config, |stdio| {
                    stdio.sandbox.mode == SandboxMode::BestEffort
                });
                Verdict::from_check(partial.is_empty(), || {
                    format!("sandbox = \"best-effort\": {}", partial.join(", "))
                })
            })
        },
    },
    Rule {
        id: "WS-CFG-015",
        category: Category::Configuration,
        severity: Severity::Low,
        title: "Sandboxed children get no UDP sockets (sandbox_udp)",
        remediation: "Remove sandbox_udp: children resolve names and reach the network through their egress proxy.",
        reference: "Warden README › Sandboxed stdio servers",
        check: |seen| {
            with_config(seen, |config| {
                let udp = upstreams_where(config, |stdio| stdio.sandbox.udp);
                Verdict::from_check(udp.is_empty(), || {
                    format!("sandbox_udp on {}", udp.join(", "))
                })
            })
        },
    },
    Rule {
        id: "WS-CFG-016",
        category: Category::Configuration,
        severity: Severity::Low,
        title: "Idle sessions end within a day",
        remediation: "Keep [sessions] idle_timeout_secs ≤ 86400; a forgotten session keeps its key's access open.",
        reference: "OWASP Session Management Cheat Sheet › Idle timeout",
        check: |seen| {
            with_config(seen, |config| {
                let idle = config.sessions.idle_timeout;
                Verdict::from_check(idle <= MAX_IDLE, || {
                    format!("idle_timeout_secs = {}", idle.as_secs())
                })
            })
        },
    },
    Rule {
        id: "WS-CFG-017",
        category: Category::Configuration,
        severity: Severity::High,
        title: "trusted_proxies names the proxies, not whole ranges",
        remediation: "List the reverse proxies' own addresses; anyone inside a trusted range can claim any client address.",
        reference: "Warden README › Client networks; OWASP, IP spoofing via X-Forwarded-For",
        check: |seen| {
            with_config(seen, |config| {
                let ranges: Vec<String> = config
                    .trusted_proxies
                    .iter()
                    .filter_map(|(ip, prefix)| wide(*ip, *prefix))
                    .collect();
                Verdict::from_check(ranges.is_empty(), || {
                    format!("trusted_proxies: {}", ranges.join(", "))
                })
            })
        },
    },
    Rule {
        id: "WS-CFG-018",
        category: Category::Configuration,
        severity: Severity::Medium,
        title: "Wrong keys are throttled early (max_failures_per_ip ≤ 100)",
        remediation: "Keep [auth] max_failures_per_ip small (the default is enough for typing mistakes).",
        reference: "OWASP Authentication Cheat Sheet › Protect against automated attacks",
        check: |seen| {
            with_config(seen, |config| {
                let failures = config.auth.max_failures_per_ip;
                Verdict::from_check(failures <= SANE_AUTH_FAILURES, || {
                    format!("max_failures_per_ip = {failures}")
                })
            })
        },
    },
];

/// `ip/prefix`, when it opens more than a small network (a whole private range).
fn wide(ip: std::net::IpAddr, prefix: u8) -> Option<String> {
    let narrowest = if ip.is_ipv4() {
        NARROWEST_WIDE_PREFIX_V4
    } else {
        NARROWEST_WIDE_PREFIX_V6
    };
    (prefix < narrowest).then(|| format!("{ip}/{prefix}"))
}

/// Past this, an idle session is a forgotten one.
const MAX_IDLE: std::time::Duration = std::time::Duration::from_secs(86_400);
/// Past this, guessing keys is barely slowed.
const SANE_AUTH_FAILURES: u32 = 100;

/// The `[tools]` entries whose rules `matches`.
fn tools_where(config: &Config, matches: impl Fn(&warden_config::ToolRules) -> bool) -> Vec<&str> {
    config
        .tools
        .iter()
        .filter(|(_, rules)| matches(rules))
        .map(|(name, _)| name.as_str())
        .collect()
}

/// The stdio upstreams whose settings `match`.
fn upstreams_where(config: &Config, matches: impl Fn(&warden_config::Stdio) -> bool) -> Vec<&str> {
    config
        .upstreams
        .iter()
        .filter(|u| matches!(&u.source, Source::Stdio(stdio) if matches(stdio)))
        .map(|u| u.name.as_str())
        .collect()
}

fn with_config(seen: &Observations, check: impl FnOnce(&Config) -> Verdict) -> Verdict {
    match &seen.config {
        Some(config) => check(config),
        None => Verdict::skip("not a configuration audit"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use warden_config::Config;

    use super::audit;
    use crate::rules::fixtures::assert_rule;

    fn config(text: &str) -> Config {
        Config::from_text(text, Path::new("t.toml"), |_| Some("set".into())).unwrap()
    }

    #[test]
    fn unsafe_settings_are_named() {
        let safe = audit(config(
            "[[upstream]]\nname = \"fs\"\ncommand = [\"npx\", \"-y\", \"@modelcontextprotocol/server-filesystem@2025.8.21\", \"/srv\"]\n\
             [[upstream]]\nname = \"remote\"\nurl = \"https://mcp.example.com/mcp\"\n",
        ));
        let cases = [
            (
                "WS-CFG-001",
                "[server]\nlisten = \"0.0.0.0:8080\"\nallow_plaintext = true\nallowed_hosts = [\"mcp.example.com\"]\n",
            ),
            (
                "WS-CFG-002",
                "[server]\nlisten = \"0.0.0.0:8080\"\nallow_plaintext = true\n",
            ),
            (
                "WS-CFG-003",
                "[server]\nallowed_origins = [\"http://app.example.com\"]\n",
            ),
            (
                "WS-CFG-004",
                "[[upstream]]\nname = \"fs\"\ncommand = [\"/usr/bin/fs-server\"]\nsandbox = false\n",
            ),
            (
                "WS-CFG-005",
                "[[upstream]]\nname = \"fs\"\ncommand = [\"npx\", \"-y\", \"@modelcontextprotocol/server-filesystem\"]\n",
            ),
            (
                "WS-CFG-006",
                "[[upstream]]\nname = \"remote\"\nurl = \"https://mcp.example.com/mcp\"\ntrust_annotations = true\n",
            ),
            ("WS-CFG-007", "[limits]\nmax_body_bytes = 67108864\n"),
            ("WS-CFG-008", "[tools.delete_note]\nconfirm = \"none\"\n"),
            ("WS-CFG-009", "[audit]\nenabled = false\n"),
            ("WS-CFG-010", "[results]\nharden = false\n"),
            ("WS-CFG-011", "[egress]\nallow = [\"10.0.0.0/8\"]\n"),
            (
                "WS-CFG-012",
                "[tools.search_notes]\nallow_extra_properties = true\n",
            ),
            (
                "WS-CFG-013",
                "[tools.search_notes]\noutput_check = \"warn\"\n",
            ),
            (
                "WS-CFG-014",
                "[[upstream]]\nname = \"fs\"\ncommand = [\"/usr/bin/fs-server\"]\nsandbox = \"best-effort\"\n",
            ),
            (
                "WS-CFG-015",
                "[[upstream]]\nname = \"fs\"\ncommand = [\"/usr/bin/fs-server\"]\nsandbox_udp = true\n",
            ),
            ("WS-CFG-016", "[sessions]\nidle_timeout_secs = 604800\n"),
            (
                "WS-CFG-017",
                "[server]\ntrusted_proxies = [\"0.0.0.0/0\"]\n",
            ),
            ("WS-CFG-018", "[auth]\nmax_failures_per_ip = 10000\n"),
        ];
        for (id, bad) in cases {
            assert_rule(id, &safe, &audit(config(bad)));
        }
    }
}
