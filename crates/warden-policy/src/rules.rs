//! Policies as code (Cedar): who may call what, with which arguments, and what needs a
//! person. The model (`rules/schema.cedarschema`) types principals (`Key`, `Client`,
//! `Group`), tools and the request's context; each tool gets an action of its own,
//! `call_tool:<name>` under `call_tool`, whose context types the tool's arguments as its
//! input schema says, so that `context.arguments.path like "/srv/data/*"` is checked
//! against the real type. Without policy files, the built-in policies
//! (`rules/builtin.cedar`) say what Warden has always done: read keys see read tools,
//! write and admin keys every tool.
//!
//! Policies are compiled once; a decision names the policies that made it (their
//! `@id`), and permits carry effects as annotations: `@confirm("elicit" | "approve")`,
//! `@cost("5")`.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr as _;

use cedar_policy::{
    Authorizer, Context, Decision, Entities, EntityUid, PolicyId, PolicySet, Request, Schema,
    ValidationMode, Validator,
};
use serde_json::{Map, Value, json};

use crate::ToolKind;

/// The policy model.
pub const SCHEMA: &str = include_str!("rules/schema.cedarschema");
/// What applies without policy files.
pub const BUILTIN: &str = include_str!("rules/builtin.cedar");
/// The name the built-in policies are reported under.
const BUILTIN_FILE: &str = "builtin";

/// A tool as policies see it.
#[derive(Debug, Clone, Copy)]
pub struct ToolFacts<'a> {
    pub name: &'a str,
    pub upstream: &'a str,
    pub kind: ToolKind,
    /// Its results are untrusted text (another user's note, a web page).
    pub untrusted: bool,
    /// Its `inputSchema`.
    pub input_schema: &'a Value,
}

/// Who asks.
#[derive(Debug, Clone, Default)]
pub struct PrincipalFacts {
    /// `key_…`, or `oauth:<subject>` for an OAuth client.
    pub id: String,
    pub tenant: String,
    /// `read`, `write` or `admin`.
    pub scope: String,
    /// A key's name (empty for OAuth clients).
    pub name: String,
    /// A key's labels, or an OAuth client's claims (as text).
    pub tags: BTreeMap<String, String>,
    /// OAuth groups.
    pub groups: Vec<String>,
}

impl PrincipalFacts {
    fn is_oauth(&self) -> bool {
        self.id.starts_with("oauth:")
    }
}

/// What a session (or modern client instance) has met so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionFacts {
    pub untrusted_seen: bool,
    pub private_read: bool,
    pub calls: u64,
    pub tools_used: Vec<String>,
}

/// The request around a decision.
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub client_name: String,
    /// `legacy` or `modern`.
    pub era: &'static str,
    pub address: std::net::IpAddr,
    /// Unix seconds.
    pub time: i64,
    pub session: SessionFacts,
}

/// What the policies decided, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// The `@id` of each policy that decided (the permits that allowed, or the forbids
    /// that refused; none when nothing permitted).
    pub policies: Vec<String>,
    /// `@confirm` of a deciding permit: `elicit` or `approve`.
    pub confirm: Option<String>,
    /// `@cost` of the deciding permits, added up.
    pub cost: u64,
}

/// A problem in a policy file: where, and Cedar's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for PolicyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

/// The action of calling `tool`.
pub fn call_action(tool: &str) -> String {
    format!("call_tool:{tool}")
}

/// A string as a Cedar string literal.
fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The Cedar type of a JSON Schema property, when it has one.
fn cedar_type(property: &Value) -> Option<&'static str> {
    let scalar = |kind: &Value| match kind.as_str()? {
        "string" => Some("String"),
        "integer" => Some("Long"),
        "boolean" => Some("Bool"),
        _ => None,
    };
    match property.get("type")?.as_str()? {
        "array" => match scalar(property.get("items")?.get("type")?)? {
            "String" => Some("Set<String>"),
            "Long" => Some("Set<Long>"),
            _ => Some("Set<Bool>"),
        },
        _ => scalar(property.get("type")?),
    }
}

/// The record type of a tool's arguments: each property with a Cedar type (strings,
/// integers, booleans, and sets of them), required as the schema requires.
fn arguments_type(input_schema: &Value) -> String {
    let required: Vec<&str> = input_schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields = Vec::new();
    if let Some(properties) = input_schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            if let Some(kind) = cedar_type(property) {
                let optional = if required.contains(&name.as_str()) {
                    ""
                } else {
                    "?"
                };
                fields.push(format!("{}{optional}: {kind}", quoted(name)));
            }
        }
    }
    format!("{{ {} }}", fields.join(", "))
}

/// The model with one action per tool of `tools`.
pub fn schema_for(tools: &[ToolFacts<'_>]) -> Result<Schema, String> {
    let mut text = SCHEMA.to_owned();
    for tool in tools {
        text.push_str(&format!(
            "action {} in [call_tool] appliesTo {{ principal: [Key, Client], resource: [Tool], \
             context: {{ client_name: String, era: String, address: ipaddr, time: datetime, \
             session: Session, arguments: {} }} }};\n",
            quoted(&call_action(tool.name)),
            arguments_type(tool.input_schema)
        ));
    }
    Schema::from_cedarschema_str(&text)
        .map(|(schema, _warnings)| schema)
        .map_err(|error| error.to_string())
}

/// Line and column (from 1) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |at| before.len() - at - 1)
        + 1;
    (line, column)
}

/// A problem in `file` (holding `text`), at the first place a diagnostic points to.
fn problem(
    file: &str,
    text: &str,
    diagnostic: &dyn miette::Diagnostic,
    message: String,
) -> PolicyProblem {
    let offset = diagnostic
        .labels()
        .and_then(|mut labels| labels.next())
        .map_or(0, |label| label.offset());
    let (line, column) = position(text, offset);
    PolicyProblem {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

/// A compiled set of policies.
#[derive(Debug, Clone)]
pub struct Rules {
    policies: PolicySet,
    /// Each policy's `@id`, or its file and position when it has none.
    names: HashMap<PolicyId, String>,
    /// Each policy's file and text, for the positions of validation problems.
    sources: HashMap<PolicyId, (String, usize)>,
    files: Vec<(String, String)>,
}

impl Rules {
    /// The built-in policies.
    pub fn builtin() -> Result<Self, Vec<PolicyProblem>> {
        Self::parse(&[(BUILTIN_FILE.to_owned(), BUILTIN.to_owned())])
    }

    /// Parses policy files (name, text); each problem names its file, line and column.
    pub fn parse(files: &[(String, String)]) -> Result<Self, Vec<PolicyProblem>> {
        let mut policies = PolicySet::new();
        let mut names = HashMap::new();
        let mut sources = HashMap::new();
        let mut problems = Vec::new();
        for (index, (file, text)) in files.iter().enumerate() {
            let parsed = match PolicySet::from_str(text) {
                Ok(parsed) => parsed,
                Err(errors) => {
                    problems.extend(
                        errors
                            .iter()
                            .map(|error| problem(file, text, error, error.to_string())),
                    );
                    continue;
                }
            };
            for (n, policy) in parsed.policies().enumerate() {
                let id = PolicyId::new(format!("{index}.{n}"));
                let name = policy
                    .annotation("id")
                    .map_or_else(|| format!("{file}#{}", n + 1), str::to_owned);
                if names.values().any(|known| *known == name) {
                    problems.push(PolicyProblem {
                        file: file.clone(),
                        line: 1,
                        column: 1,
                        message: format!("two policies have the @id {name:?}"),
                    });
                    continue;
                }
                if let Err(error) = policies.add(policy.new_id(id.clone())) {
                    problems.push(PolicyProblem {
                        file: file.clone(),
                        line: 1,
                        column: 1,
                        message: error.to_string(),
                    });
                    continue;
                }
                names.insert(id.clone(), name);
                sources.insert(id, (file.clone(), index));
            }
        }
        if problems.is_empty() {
            Ok(Self {
                policies,
                names,
                sources,
                files: files.to_vec(),
            })
        } else {
            Err(problems)
        }
    }

    /// Checks every policy against `schema` (unknown actions, entity types and
    /// attributes; type errors).
    pub fn validate(&self, schema: &Schema) -> Result<(), Vec<PolicyProblem>> {
        let result =
            Validator::new(schema.clone()).validate(&self.policies, ValidationMode::Strict);
        let problems: Vec<PolicyProblem> = result
            .validation_errors()
            .map(|error| {
                let (file, text) = self
                    .sources
                    .get(error.policy_id())
                    .and_then(|(file, index)| {
                        Some((file.as_str(), self.files.get(*index)?.1.as_str()))
                    })
                    .unwrap_or(("?", ""));
                let name = self
                    .names
                    .get(error.policy_id())
                    .cloned()
                    .unwrap_or_default();
                let message = error
                    .to_string()
                    .replace(&format!("`{}`", error.policy_id()), &format!("{name:?}"));
                problem(file, text, error, message)
            })
            .collect();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The policies' names, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.values().map(String::as_str)
    }

    /// Decides whether `principal` may call `tool` with `arguments` (already valid
    /// against its schema); anything that keeps Cedar from deciding refuses.
    pub fn decide_call(
        &self,
        schema: &Schema,
        principal: &PrincipalFacts,
        tool: &ToolFacts<'_>,
        arguments: &Map<String, Value>,
        request: &RequestFacts,
    ) -> Verdict {
        let mut context = self.context(request);
        context.insert(
            "arguments".into(),
            Value::Object(typed_arguments(tool.input_schema, arguments)),
        );
        self.decide(schema, principal, &call_action(tool.name), tool, context)
    }

    /// Decides whether `principal` may see `tool` listed.
    pub fn decide_listing(
        &self,
        schema: &Schema,
        principal: &PrincipalFacts,
        tool: &ToolFacts<'_>,
        request: &RequestFacts,
    ) -> Verdict {
        let context = self.context(request);
        self.decide(schema, principal, "list_tools", tool, context)
    }

    fn context(&self, request: &RequestFacts) -> Map<String, Value> {
        let mut context = Map::new();
        context.insert("client_name".into(), json!(request.client_name));
        context.insert("era".into(), json!(request.era));
        context.insert(
            "address".into(),
            json!({"__extn": {"fn": "ip", "arg": request.address.to_string()}}),
        );
        context.insert(
            "time".into(),
            json!({"__extn": {"fn": "datetime", "arg": rfc3339(request.time)}}),
        );
        context.insert(
            "session".into(),
            json!({
                "untrusted_seen": request.session.untrusted_seen,
                "private_read": request.session.private_read,
                "calls": request.session.calls,
                "tools_used": request.session.tools_used,
            }),
        );
        context
    }

    fn decide(
        &self,
        schema: &Schema,
        principal: &PrincipalFacts,
        action: &str,
        tool: &ToolFacts<'_>,
        context: Map<String, Value>,
    ) -> Verdict {
        let refused = Verdict {
            allowed: false,
            policies: Vec::new(),
            confirm: None,
            cost: 0,
        };
        let Some((request, entities)) = build(schema, principal, action, tool, context) else {
            return refused;
        };
        let response = Authorizer::new().is_authorized(&request, &self.policies, &entities);
        if response.diagnostics().errors().next().is_some() {
            tracing::warn!(
                errors = ?response
                    .diagnostics()
                    .errors()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>(),
                "a policy failed to evaluate (it counts as not applying)"
            );
        }
        let deciding: Vec<&PolicyId> = response.diagnostics().reason().collect();
        let policies = deciding
            .iter()
            .filter_map(|id| self.names.get(*id).cloned())
            .collect();
        if response.decision() == Decision::Deny {
            return Verdict {
                policies,
                ..refused
            };
        }
        let annotation =
            |id: &PolicyId, key: &str| self.policies.annotation(id, key).map(str::to_owned);
        let confirm = deciding
            .iter()
            .filter_map(|id| annotation(id, "confirm"))
            // "approve" (an operator) is stronger than "elicit" (the user).
            .max_by_key(|kind| kind == "approve");
        let cost = deciding
            .iter()
            .filter_map(|id| annotation(id, "cost")?.parse::<u64>().ok())
            .sum();
        Verdict {
            allowed: true,
            policies,
            confirm,
            cost,
        }
    }
}

/// The arguments the tool's Cedar type has room for, converted (a value of another
/// shape is left out: the argument validation before this has refused it already).
fn typed_arguments(input_schema: &Value, arguments: &Map<String, Value>) -> Map<String, Value> {
    let properties = input_schema.get("properties").and_then(Value::as_object);
    arguments
        .iter()
        .filter(|(name, value)| {
            properties
                .and_then(|p| p.get(name.as_str()))
                .and_then(cedar_type)
                .is_some_and(|kind| matches_type(kind, value))
        })
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

fn matches_type(kind: &str, value: &Value) -> bool {
    let scalar = |kind: &str, value: &Value| match kind {
        "String" => value.is_string(),
        "Long" => value.as_i64().is_some(),
        _ => value.is_boolean(),
    };
    match kind.strip_prefix("Set<").and_then(|k| k.strip_suffix('>')) {
        Some(inner) => value
            .as_array()
            .is_some_and(|items| items.iter().all(|item| scalar(inner, item))),
        None => scalar(kind, value),
    }
}

/// Unix seconds as RFC 3339 (UTC), as Cedar's `datetime` takes it.
fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned())
}

/// The request and the entities it names, checked against `schema`.
fn build(
    schema: &Schema,
    principal: &PrincipalFacts,
    action: &str,
    tool: &ToolFacts<'_>,
    context: Map<String, Value>,
) -> Option<(Request, Entities)> {
    let kind = if principal.is_oauth() {
        "Client"
    } else {
        "Key"
    };
    let principal_uid = json!({"type": kind, "id": principal.id});
    let mut principal_attrs = json!({"tenant": principal.tenant, "scope": principal.scope});
    if !principal.is_oauth() {
        principal_attrs["name"] = json!(principal.name);
    }
    let groups: Vec<Value> = principal
        .groups
        .iter()
        .map(|group| json!({"type": "Group", "id": group}))
        .collect();
    let mut entities = vec![
        json!({"uid": principal_uid, "attrs": principal_attrs, "parents": groups, "tags": principal.tags}),
        json!({"uid": {"type": "Tool", "id": tool.name}, "attrs": {
            "upstream": tool.upstream, "kind": tool.kind.as_str(), "untrusted": tool.untrusted,
        }, "parents": []}),
    ];
    for group in &principal.groups {
        entities.push(json!({"uid": {"type": "Group", "id": group}, "attrs": {}, "parents": []}));
    }
    let entities = Entities::from_json_value(Value::Array(entities), Some(schema))
        .map_err(|error| tracing::warn!(%error, "the policy entities do not fit the model"))
        .ok()?;
    let uid = |kind: &str, id: &str| EntityUid::from_json(json!({"type": kind, "id": id})).ok();
    let action = uid("Action", action)?;
    let context = Context::from_json_value(Value::Object(context), Some((schema, &action)))
        .map_err(|error| tracing::warn!(%error, "the policy context does not fit the model"))
        .ok()?;
    let request = Request::new(
        uid(kind, &principal.id)?,
        action,
        uid("Tool", tool.name)?,
        context,
        Some(schema),
    )
    .map_err(|error| tracing::warn!(%error, "the policy request does not fit the model"))
    .ok()?;
    Some((request, entities))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn write_file_schema() -> Value {
        json!({"type": "object", "properties": {
            "path": {"type": "string"}, "content": {"type": "string"},
            "mode": {"type": "integer"}, "tags": {"type": "array", "items": {"type": "string"}},
            "options": {"type": "object"}
        }, "required": ["path", "content"]})
    }

    fn send_email_schema() -> Value {
        json!({"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]})
    }

    fn tools<'a>(write: &'a Value, send: &'a Value) -> Vec<ToolFacts<'a>> {
        vec![
            ToolFacts {
                name: "fs__write_file",
                upstream: "fs",
                kind: ToolKind::Write,
                untrusted: false,
                input_schema: write,
            },
            ToolFacts {
                name: "mail__send",
                upstream: "mail",
                kind: ToolKind::Destructive,
                untrusted: false,
                input_schema: send,
            },
        ]
    }

    fn key(scope: &str) -> PrincipalFacts {
        PrincipalFacts {
            id: "key_1".into(),
            tenant: "acme".into(),
            scope: scope.into(),
            name: "laptop".into(),
            ..PrincipalFacts::default()
        }
    }

    fn request() -> RequestFacts {
        RequestFacts {
            client_name: "claude".into(),
            era: "modern",
            address: "127.0.0.1".parse().unwrap(),
            time: 1_796_336_274,
            session: SessionFacts::default(),
        }
    }

    fn arguments(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn file(text: &str) -> Vec<(String, String)> {
        vec![("policies/acme.cedar".to_owned(), text.to_owned())]
    }

    #[test]
    fn the_built_in_policies_fit_the_model() {
        let (write, send) = (write_file_schema(), send_email_schema());
        let schema = schema_for(&tools(&write, &send)).unwrap();
        let rules = Rules::builtin().unwrap();
        rules.validate(&schema).unwrap();
        assert!(rules.names().any(|name| name == "builtin.write-scope"));
    }

    #[test]
    fn bad_policies_are_refused_with_cedars_words_and_their_line() {
        let (write, send) = (write_file_schema(), send_email_schema());
        let schema = schema_for(&tools(&write, &send)).unwrap();
        let syntax = Rules::parse(&file(
            "permit(principal, action, resource)\nwhen { principal.x == };",
        ))
        .unwrap_err();
        assert_eq!(
            (syntax[0].line, syntax[0].file.as_str()),
            (2, "policies/acme.cedar"),
            "{syntax:?}"
        );
        let typed = Rules::parse(&file(
            "// a comment\n@id(\"kinds\")\npermit(principal, action in Action::\"call_tool\", resource)\nwhen { resource.kind == 3 };",
        ))
        .unwrap()
        .validate(&schema)
        .unwrap_err();
        assert!(typed[0].message.contains("not compatible"), "{typed:?}");
        assert!(typed[0].line >= 3, "{typed:?}");
        let unknown = Rules::parse(&file(
            "permit(principal, action == Action::\"delete_everything\", resource);",
        ))
        .unwrap()
        .validate(&schema)
        .unwrap_err();
        assert!(
            unknown[0].message.contains("unrecognized action"),
            "{unknown:?}"
        );
        // An argument the tool does not take, read without `has`: refused.
        let unguarded = Rules::parse(&file(
            "permit(principal, action in Action::\"call_tool\", resource) when { context.arguments.path like \"/srv/*\" };",
        ))
        .unwrap()
        .validate(&schema)
        .unwrap_err();
        assert!(unguarded[0].message.contains("mail__send"), "{unguarded:?}");
    }

    #[test]
    fn argument_conditions_forbids_groups_and_effects_decide() {
        let (write, send) = (write_file_schema(), send_email_schema());
        let catalogue = tools(&write, &send);
        let schema = schema_for(&catalogue).unwrap();
        let rules = Rules::parse(&file(
            r#"
@id("data-dir-only")
permit (principal, action == Action::"call_tool:fs__write_file", resource)
when { context.arguments.path like "/srv/data/*" };

@id("mail-our-domain") @confirm("approve") @cost("5")
permit (principal in Group::"ops", action == Action::"call_tool:mail__send", resource)
when { context.arguments.to like "*@example.com" };

@id("no-intern-writes")
forbid (principal, action in Action::"call_tool", resource)
when { principal.hasTag("role") && principal.getTag("role") == "intern" };
"#,
        ))
        .unwrap();
        rules.validate(&schema).unwrap();
        let decide = |principal: &PrincipalFacts, tool: usize, args: Value| {
            rules.decide_call(
                &schema,
                principal,
                &catalogue[tool],
                &arguments(args),
                &request(),
            )
        };
        let writer = key("write");
        let inside = decide(&writer, 0, json!({"path": "/srv/data/a", "content": "x"}));
        assert!(inside.allowed);
        assert_eq!(inside.policies, ["data-dir-only"]);
        let outside = decide(&writer, 0, json!({"path": "/etc/passwd", "content": "x"}));
        assert!(!outside.allowed);
        assert!(outside.policies.is_empty(), "default deny names no policy");

        let mut intern = key("write");
        intern.tags.insert("role".into(), "intern".into());
        let refused = decide(&intern, 0, json!({"path": "/srv/data/a", "content": "x"}));
        assert!(!refused.allowed);
        assert_eq!(
            refused.policies,
            ["no-intern-writes"],
            "forbid wins and says so"
        );

        let mut ops = PrincipalFacts {
            id: "oauth:alice".into(),
            tenant: "acme".into(),
            scope: "write".into(),
            groups: vec!["ops".into()],
            ..PrincipalFacts::default()
        };
        let mail = decide(&ops, 1, json!({"to": "bob@example.com"}));
        assert!(mail.allowed);
        assert_eq!(mail.confirm.as_deref(), Some("approve"));
        assert_eq!(mail.cost, 5);
        assert!(!decide(&ops, 1, json!({"to": "eve@evil.example"})).allowed);
        ops.groups.clear();
        assert!(!decide(&ops, 1, json!({"to": "bob@example.com"})).allowed);
    }

    fn kind_of(n: u8) -> ToolKind {
        match n % 3 {
            0 => ToolKind::Read,
            1 => ToolKind::Write,
            _ => ToolKind::Destructive,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Without policy files nothing changes: the built-in policies decide exactly as
        /// the scope and kind rules always did (a read key reaches read tools; write and
        /// admin keys every tool), whatever the arguments.
        #[test]
        fn the_built_in_policies_decide_as_scopes_and_kinds_did(
            scope in 0u8..3,
            kind in 0u8..3,
            oauth in any::<bool>(),
            path in "[a-z/]{0,12}",
            mode in any::<i64>(),
        ) {
            let scope = ["read", "write", "admin"][usize::from(scope)];
            let kind = kind_of(kind);
            let input_schema = write_file_schema();
            let tool = ToolFacts { name: "fs__write_file", upstream: "fs", kind, untrusted: false, input_schema: &input_schema };
            let schema = schema_for(&[tool]).unwrap();
            let rules = Rules::builtin().unwrap();
            let mut principal = key(scope);
            if oauth {
                principal.id = "oauth:alice".into();
                principal.name.clear();
            }
            let ceiling = if scope == "read" { ToolKind::Read } else { ToolKind::Destructive };
            let args = arguments(json!({"path": path, "content": "x", "mode": mode}));
            let call = rules.decide_call(&schema, &principal, &tool, &args, &request());
            prop_assert_eq!(call.allowed, kind <= ceiling);
            prop_assert_eq!(call.confirm, None);
            let listed = rules.decide_listing(&schema, &principal, &tool, &request());
            prop_assert_eq!(listed.allowed, kind <= ceiling);
        }
    }
}
