//! `[limits]` caps on what a client sends, `[rate]` limits on how much it sends, and
//! `[tools."<name>"]` rules for one tool of the merged catalogue (named as clients see
//! it). A tool may tighten the caps, never loosen them: `[limits]` is the ceiling the
//! body scan enforces for everything.

use std::collections::BTreeMap;
use std::path::PathBuf;

pub use warden_proto::JsonLimits;

use crate::{bounded, raw};

pub const DEFAULT_MAX_DEPTH: usize = 32;
pub const DEFAULT_MAX_STRING_BYTES: usize = 64 * 1024;
pub const DEFAULT_MAX_ARRAY_ITEMS: usize = 1_000;
pub const DEFAULT_MAX_OBJECT_KEYS: usize = 256;
pub const DEFAULT_MAX_TOTAL_NODES: usize = 100_000;
pub const DEFAULT_PER_KEY_RPM: u32 = 60;
pub const DEFAULT_PER_IP_RPM: u32 = 300;
pub const DEFAULT_MAX_CONCURRENT_PER_KEY: usize = 20;
pub const DEFAULT_MAX_CONCURRENT_TOTAL: usize = 256;
pub const DEFAULT_QUEUE_DEPTH: usize = 32;
pub const DEFAULT_QUEUE_TIMEOUT_MS: u64 = 2_000;
pub const DEFAULT_PER_SESSION_CALLS: u64 = 10_000;
pub const DEFAULT_DAILY_COST_CAP: u64 = 100_000;
pub const DEFAULT_MAX_STREAMS_PER_KEY: usize = 8;
/// What a `tools/call` costs when its tool names no `cost`.
pub const DEFAULT_TOOL_COST: u64 = 1;

/// What a tool does to the world, as the operator classifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToolClass {
    Read,
    Write,
    Destructive,
}

/// Whether a person must confirm each call of a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    /// Warden asks the person through the client (elicitation) and runs the call only
    /// on an explicit accept.
    Elicit,
    /// The call is held until an operator approves it (`warden approvals approve`);
    /// the same call made again then runs, once.
    Approve,
    /// The tool is never run.
    Deny,
    /// No confirmation.
    Never,
}

/// What the gateway does when a tool's structured result does not match its
/// `outputSchema`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputCheck {
    /// The result is replaced by an error result.
    #[default]
    Block,
    /// The result passes; the mismatch is logged.
    Warn,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolRules {
    /// Tighter caps for this tool's arguments, if any.
    pub caps: Option<JsonLimits>,
    /// The operator accepts properties the schema does not declare (explicit opt-out of
    /// the strict default).
    pub allow_extra_properties: bool,
    /// Arguments (JSON pointers) that are file paths, confined to `root`.
    pub paths: Vec<String>,
    pub root: Option<PathBuf>,
    pub output_check: OutputCheck,
    /// Calls per minute of one key to this tool, besides the key's own limit.
    pub rpm: Option<u32>,
    /// What one call costs against its tenant's daily cap.
    pub cost: u64,
    /// The operator's classification; it beats the upstream's annotations.
    pub kind: Option<ToolClass>,
    /// Confirmation of each call; by default `elicit` for destructive tools, none for
    /// others.
    pub confirm: Option<Confirm>,
    /// What the tool's results carry, for the session's flow state.
    pub returns: Returns,
}

/// What a tool's results carry (`returns = "untrusted"`, `["untrusted", "private"]`):
/// text someone other than the caller wrote (another user's note, a web page), and the
/// tenant's private data. A session that received either is marked so, and policies
/// read it as `context.session.untrusted_seen` and `private_read`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Returns {
    pub untrusted: bool,
    pub private: bool,
}

impl Default for ToolRules {
    fn default() -> Self {
        Self {
            caps: None,
            allow_extra_properties: false,
            paths: Vec::new(),
            root: None,
            output_check: OutputCheck::Block,
            rpm: None,
            cost: DEFAULT_TOOL_COST,
            kind: None,
            confirm: None,
            returns: Returns::default(),
        }
    }
}

fn returns(written: Option<&raw::OneOrMany>) -> Result<Returns, String> {
    let words: Vec<&str> = match written {
        None => Vec::new(),
        Some(raw::OneOrMany::One(word)) => vec![word.as_str()],
        Some(raw::OneOrMany::Many(words)) => words.iter().map(String::as_str).collect(),
    };
    let mut returns = Returns::default();
    for word in words {
        match word {
            "untrusted" => returns.untrusted = true,
            "private" => returns.private = true,
            "trusted" => {}
            other => {
                return Err(format!(
                    "must be \"untrusted\", \"private\" or \"trusted\" (or a list of them), not {other:?}"
                ));
            }
        }
    }
    Ok(returns)
}

/// The rules for tool `name`: its own `[tools."<name>"]` entry, else the most specific
/// pattern that matches it (`[tools."fs.*"]`; `*` stands for any run of characters;
/// the pattern with the most characters besides `*` wins, then the first in order).
pub fn rules_for<'a>(rules: &'a BTreeMap<String, ToolRules>, name: &str) -> Option<&'a ToolRules> {
    if let Some(exact) = rules.get(name) {
        return Some(exact);
    }
    rules
        .iter()
        .filter(|(pattern, _)| pattern.contains('*') && glob_matches(pattern, name))
        .max_by_key(|(pattern, _)| {
            (
                pattern.chars().filter(|c| *c != '*').count(),
                std::cmp::Reverse(*pattern),
            )
        })
        .map(|(_, rules)| rules)
}

/// Whether `name` fits `pattern`, where `*` stands for any run of characters.
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

pub(crate) fn rate(
    raw: &raw::Rate,
    tenants: &BTreeMap<String, raw::Tenant>,
) -> Result<crate::Rate, (String, String)> {
    let field = |name: &str| format!("rate.{name}");
    let daily_cost_cap = bounded(raw.daily_cost_cap, DEFAULT_DAILY_COST_CAP, 1..=u64::MAX / 2)
        .map_err(|m| (field("daily_cost_cap"), m))?;
    let tenant_caps = tenants
        .iter()
        .map(|(tenant, settings)| {
            bounded(settings.daily_cost_cap, daily_cost_cap, 0..=u64::MAX / 2)
                .map(|cap| (tenant.clone(), cap))
                .map_err(|m| (format!("tenants.{tenant:?}.daily_cost_cap"), m))
        })
        .collect::<Result<_, _>>()?;
    Ok(crate::Rate {
        per_key_rpm: bounded(raw.per_key_rpm, DEFAULT_PER_KEY_RPM, 1..=1_000_000)
            .map_err(|m| (field("per_key_rpm"), m))?,
        per_ip_rpm: bounded(raw.per_ip_rpm, DEFAULT_PER_IP_RPM, 1..=10_000_000)
            .map_err(|m| (field("per_ip_rpm"), m))?,
        max_concurrent_per_key: bounded(
            raw.max_concurrent_per_key,
            DEFAULT_MAX_CONCURRENT_PER_KEY,
            1..=10_000,
        )
        .map_err(|m| (field("max_concurrent_per_key"), m))?,
        max_concurrent_total: bounded(
            raw.max_concurrent_total,
            DEFAULT_MAX_CONCURRENT_TOTAL,
            1..=100_000,
        )
        .map_err(|m| (field("max_concurrent_total"), m))?,
        queue_depth: bounded(raw.queue_depth, DEFAULT_QUEUE_DEPTH, 0..=100_000)
            .map_err(|m| (field("queue_depth"), m))?,
        queue_timeout: std::time::Duration::from_millis(
            bounded(raw.queue_timeout_ms, DEFAULT_QUEUE_TIMEOUT_MS, 0..=60_000)
                .map_err(|m| (field("queue_timeout_ms"), m))?,
        ),
        per_session_calls: bounded(
            raw.per_session_calls,
            DEFAULT_PER_SESSION_CALLS,
            1..=u64::MAX / 2,
        )
        .map_err(|m| (field("per_session_calls"), m))?,
        daily_cost_cap,
        tenant_caps,
        max_streams_per_key: bounded(
            raw.max_streams_per_key,
            DEFAULT_MAX_STREAMS_PER_KEY,
            1..=10_000,
        )
        .map_err(|m| (field("max_streams_per_key"), m))?,
        ipv4_prefix: bounded(raw.ipv4_prefix, 32, 8..=32).map_err(|m| (field("ipv4_prefix"), m))?,
        ipv6_prefix: bounded(raw.ipv6_prefix, 64, 16..=128)
            .map_err(|m| (field("ipv6_prefix"), m))?,
    })
}

pub(crate) fn body_caps(raw: &raw::Limits) -> Result<JsonLimits, (String, String)> {
    let field = |name: &str| format!("limits.{name}");
    Ok(JsonLimits {
        max_depth: bounded(raw.max_depth, DEFAULT_MAX_DEPTH, 2..=256)
            .map_err(|m| (field("max_depth"), m))?,
        max_string_bytes: bounded(
            raw.max_string_bytes,
            DEFAULT_MAX_STRING_BYTES,
            16..=64 * 1024 * 1024,
        )
        .map_err(|m| (field("max_string_bytes"), m))?,
        max_array_items: bounded(raw.max_array_items, DEFAULT_MAX_ARRAY_ITEMS, 1..=1_000_000)
            .map_err(|m| (field("max_array_items"), m))?,
        max_object_keys: bounded(raw.max_object_keys, DEFAULT_MAX_OBJECT_KEYS, 4..=100_000)
            .map_err(|m| (field("max_object_keys"), m))?,
        max_total_nodes: bounded(
            raw.max_total_nodes,
            DEFAULT_MAX_TOTAL_NODES,
            16..=10_000_000,
        )
        .map_err(|m| (field("max_total_nodes"), m))?,
    })
}

pub(crate) fn validate(
    raw: BTreeMap<String, raw::Tool>,
    ceiling: &JsonLimits,
) -> Result<BTreeMap<String, ToolRules>, (String, String)> {
    raw.into_iter()
        .map(|(name, tool)| {
            let field = |f: &str| format!("tools.{name:?}.{f}");
            let tighter = |value: Option<usize>, max: usize, f: &str| match value {
                None => Ok(max),
                Some(v) if (1..=max).contains(&v) => Ok(v),
                Some(_) => Err((
                    field(f),
                    format!("may only tighten [limits].{f} (at most {max})"),
                )),
            };
            let tightened = [
                tool.max_depth,
                tool.max_string_bytes,
                tool.max_array_items,
                tool.max_object_keys,
                tool.max_total_nodes,
            ]
            .iter()
            .any(Option::is_some);
            let caps = tightened
                .then(|| {
                    Ok::<_, (String, String)>(JsonLimits {
                        max_depth: tighter(tool.max_depth, ceiling.max_depth, "max_depth")?,
                        max_string_bytes: tighter(
                            tool.max_string_bytes,
                            ceiling.max_string_bytes,
                            "max_string_bytes",
                        )?,
                        max_array_items: tighter(
                            tool.max_array_items,
                            ceiling.max_array_items,
                            "max_array_items",
                        )?,
                        max_object_keys: tighter(
                            tool.max_object_keys,
                            ceiling.max_object_keys,
                            "max_object_keys",
                        )?,
                        max_total_nodes: tighter(
                            tool.max_total_nodes,
                            ceiling.max_total_nodes,
                            "max_total_nodes",
                        )?,
                    })
                })
                .transpose()?;
            if let Some(pointer) = tool.paths.iter().find(|p| !p.starts_with('/')) {
                return Err((
                    field("paths"),
                    format!("{pointer:?} is not a JSON pointer such as \"/path\""),
                ));
            }
            let root = tool.root.map(PathBuf::from);
            if root.as_ref().is_some_and(|r| !r.is_absolute()) {
                return Err((field("root"), "must be an absolute path".into()));
            }
            if !tool.paths.is_empty() && root.is_none() {
                return Err((field("root"), "is required with paths".into()));
            }
            let output_check = match tool.output_check.as_deref() {
                None | Some("block") => OutputCheck::Block,
                Some("warn") => OutputCheck::Warn,
                Some(_) => {
                    return Err((
                        field("output_check"),
                        "must be \"block\" or \"warn\"".into(),
                    ));
                }
            };
            Ok((
                name.clone(),
                ToolRules {
                    caps,
                    allow_extra_properties: tool.allow_extra_properties.unwrap_or(false),
                    paths: tool.paths,
                    root,
                    output_check,
                    rpm: tool
                        .rpm
                        .map(|rpm| bounded(Some(rpm), rpm, 1..=1_000_000))
                        .transpose()
                        .map_err(|m| (field("rpm"), m))?,
                    cost: bounded(tool.cost, DEFAULT_TOOL_COST, 0..=1_000_000)
                        .map_err(|m| (field("cost"), m))?,
                    confirm: match tool.confirm.as_deref() {
                        None => None,
                        Some("elicit") => Some(Confirm::Elicit),
                        Some("approve") => Some(Confirm::Approve),
                        Some("deny") => Some(Confirm::Deny),
                        Some("none") => Some(Confirm::Never),
                        Some(_) => {
                            return Err((
                                field("confirm"),
                                "must be \"elicit\", \"approve\", \"deny\" or \"none\"".into(),
                            ));
                        }
                    },
                    returns: returns(tool.returns.as_ref()).map_err(|m| (field("returns"), m))?,
                    kind: match tool.kind.as_deref() {
                        None => None,
                        Some("read") => Some(ToolClass::Read),
                        Some("write") => Some(ToolClass::Write),
                        Some("destructive") => Some(ToolClass::Destructive),
                        Some(_) => {
                            return Err((
                                field("kind"),
                                "must be \"read\", \"write\" or \"destructive\"".into(),
                            ));
                        }
                    },
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(JsonLimits, BTreeMap<String, ToolRules>), (String, String)> {
        let raw: crate::raw::Config = toml::from_str(text).unwrap();
        let caps = body_caps(&raw.limits)?;
        Ok((caps, validate(raw.tools, &caps)?))
    }

    #[test]
    fn tools_tighten_the_caps_and_never_loosen_them() {
        let (caps, tools) = parse(
            "[limits]\nmax_depth = 16\n[tools.\"fs.read\"]\nmax_string_bytes = 1024\npaths = [\"/path\"]\nroot = \"/srv\"\noutput_check = \"warn\"\n",
        )
        .unwrap();
        assert_eq!(caps.max_depth, 16);
        let rules = &tools["fs.read"];
        let tool_caps = rules.caps.unwrap();
        assert_eq!(
            (tool_caps.max_depth, tool_caps.max_string_bytes),
            (16, 1024)
        );
        assert_eq!(rules.output_check, OutputCheck::Warn);
        for (text, field) in [
            ("[tools.t]\nmax_depth = 33\n", "tools.\"t\".max_depth"),
            ("[tools.t]\npaths = [\"/p\"]\n", "tools.\"t\".root"),
            (
                "[tools.t]\npaths = [\"p\"]\nroot = \"/srv\"\n",
                "tools.\"t\".paths",
            ),
            ("[tools.t]\nroot = \"srv\"\n", "tools.\"t\".root"),
            (
                "[tools.t]\noutput_check = \"maybe\"\n",
                "tools.\"t\".output_check",
            ),
            ("[limits]\nmax_depth = 1000\n", "limits.max_depth"),
        ] {
            assert_eq!(parse(text).unwrap_err().0, field, "{text}");
        }
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let rule = |rpm| ToolRules {
            rpm: Some(rpm),
            ..ToolRules::default()
        };
        let rules = BTreeMap::from([
            ("fs.*".to_owned(), rule(1)),
            ("fs.write_*".to_owned(), rule(2)),
            ("fs.write_file".to_owned(), rule(3)),
            ("*".to_owned(), rule(4)),
        ]);
        let rpm = |name| rules_for(&rules, name).and_then(|r| r.rpm);
        assert_eq!(rpm("fs.write_file"), Some(3));
        assert_eq!(rpm("fs.write_note"), Some(2));
        assert_eq!(rpm("fs.read_file"), Some(1));
        assert_eq!(rpm("notes.get_note"), Some(4));
        for (pattern, name, fits) in [
            ("fs.*", "fs.", true),
            ("*_file", "fs.read_file", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
        ] {
            assert_eq!(glob_matches(pattern, name), fits, "{pattern} {name}");
        }
    }
}
