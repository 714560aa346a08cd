//! The catalogue of tools a gateway offers, each with its input schema compiled once
//! (objects closed, patterns in a linear-time engine, no remote references) and the
//! operator's rules for it.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::Value;
use warden_config::{Confirm, JsonLimits, OutputCheck, Returns, ToolRules};

use crate::harden::hides_characters;
use crate::{PolicyError, paths, strict};

/// What a tool does to the world, ordered by how much it can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ToolKind {
    Read,
    Write,
    Destructive,
}

impl ToolKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Destructive => "destructive",
        }
    }

    /// Classifies a tool from its annotations. Only for servers whose annotations are
    /// trusted; anything not marked read-only is at least a write (fail closed).
    pub fn from_trusted_annotations(definition: &Value) -> Self {
        let hint = |name: &str| {
            definition
                .get("annotations")
                .and_then(|a| a.get(name))
                .and_then(Value::as_bool)
        };
        if hint("readOnlyHint") == Some(true) {
            Self::Read
        } else if hint("destructiveHint") == Some(false) {
            Self::Write
        } else {
            // The MCP default for destructiveHint is true.
            Self::Destructive
        }
    }
}

/// Where a catalogue tool comes from: which upstream, under which name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub upstream: usize,
    pub name: String,
}

pub struct CatalogueTool {
    definition: Value,
    kind: ToolKind,
    validator: jsonschema::Validator,
    output: Option<jsonschema::Validator>,
    output_check: OutputCheck,
    confirm: Confirm,
    returns: Returns,
    caps: Option<JsonLimits>,
    /// Pointers to the arguments that are paths, and the root they stay in.
    paths: Vec<String>,
    root: Option<PathBuf>,
    origin: Origin,
}

impl std::fmt::Debug for CatalogueTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogueTool")
            .field("name", &self.name())
            .field("kind", &self.kind)
            .finish()
    }
}

impl CatalogueTool {
    pub fn name(&self) -> &str {
        self.definition
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    pub fn kind(&self) -> ToolKind {
        self.kind
    }

    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The definition as clients see it in `tools/list`.
    pub fn definition(&self) -> &Value {
        &self.definition
    }

    /// Checks `arguments`: the tool's own caps, then the compiled input schema, then
    /// path confinement. The error names the first failing JSON path and rule; it never
    /// carries the offending value.
    pub fn validate(&self, arguments: &Value) -> Result<(), PolicyError> {
        if let Some(caps) = &self.caps {
            within_caps(arguments, caps)?;
        }
        if let Some(error) = self.validator.iter_errors(arguments).next() {
            let (path, rule) = describe(&error);
            return Err(PolicyError::InvalidArguments { path, rule });
        }
        for pattern in &self.paths {
            for (path, value) in paths::values_at(arguments, pattern) {
                let Some(text) = value.as_str() else {
                    continue;
                };
                paths::confine(text, self.root.as_deref()).map_err(|rule| {
                    PolicyError::ConfinedPath {
                        path: display_path(&path),
                        rule,
                    }
                })?;
            }
        }
        Ok(())
    }

    /// Whether a person must confirm each call: the operator's choice, else `elicit`
    /// for destructive tools.
    pub fn confirm(&self) -> Confirm {
        self.confirm
    }

    /// What its results carry (`[tools."…"] returns`).
    pub fn returns(&self) -> Returns {
        self.returns
    }

    /// What to do when [`CatalogueTool::check_output`] fails.
    pub fn output_check(&self) -> OutputCheck {
        self.output_check
    }

    /// Checks a `tools/call` result against the tool's `outputSchema`, if it declares
    /// one: a successful result must carry `structuredContent` that matches.
    pub fn check_output(&self, result: &Value) -> Result<(), PolicyError> {
        let Some(output) = &self.output else {
            return Ok(());
        };
        if result.get("isError").and_then(Value::as_bool) == Some(true) {
            return Ok(());
        }
        let Some(structured) = result.get("structuredContent") else {
            return Err(PolicyError::OutputMismatch {
                path: "/".into(),
                rule: "no structuredContent".into(),
            });
        };
        match output.iter_errors(structured).next() {
            None => Ok(()),
            Some(error) => {
                let (path, rule) = describe(&error);
                Err(PolicyError::OutputMismatch { path, rule })
            }
        }
    }
}

fn display_path(path: &str) -> String {
    if path.is_empty() {
        "/".into()
    } else {
        path.into()
    }
}

/// A tool's tighter caps, checked on the parsed arguments (the body scan already held
/// them to `[limits]`).
fn within_caps(arguments: &Value, caps: &JsonLimits) -> Result<(), PolicyError> {
    use warden_proto::Limit;
    let mut nodes = 0usize;
    let mut stack = vec![(arguments, 1usize, String::new())];
    while let Some((value, depth, at)) = stack.pop() {
        nodes += 1;
        let broken = if nodes > caps.max_total_nodes {
            Some(Limit::TotalNodes)
        } else {
            match value {
                Value::String(s) if s.len() > caps.max_string_bytes => Some(Limit::StringBytes),
                Value::Array(items) if items.len() > caps.max_array_items => {
                    Some(Limit::ArrayItems)
                }
                Value::Object(map) if map.len() > caps.max_object_keys => Some(Limit::ObjectKeys),
                Value::Object(map) if map.keys().any(|k| k.len() > caps.max_string_bytes) => {
                    Some(Limit::StringBytes)
                }
                Value::Array(_) | Value::Object(_) if depth > caps.max_depth => Some(Limit::Depth),
                _ => None,
            }
        };
        if let Some(limit) = broken {
            return Err(PolicyError::ArgumentCap {
                path: display_path(&at),
                limit: limit.name(),
            });
        }
        match value {
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    stack.push((item, depth + 1, format!("{at}/{i}")));
                }
            }
            Value::Object(map) => {
                for (key, item) in map {
                    let escaped = key.replace('~', "~0").replace('/', "~1");
                    stack.push((item, depth + 1, format!("{at}/{escaped}")));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn describe(error: &jsonschema::ValidationError<'_>) -> (String, String) {
    use jsonschema::error::ValidationErrorKind as Kind;
    let path = match error.instance_path().as_str() {
        "" => "/".to_owned(),
        path => path.to_owned(),
    };
    let rule = match error.kind() {
        Kind::AdditionalProperties { unexpected } => {
            let names: Vec<String> = unexpected.iter().map(|n| quote_name(n)).collect();
            format!("unexpected property {}", names.join(", "))
        }
        Kind::Required { property } => {
            format!(
                "missing required property {}",
                quote_name(property.as_str().unwrap_or_default())
            )
        }
        Kind::Type { kind } => format!("wrong type (expected {})", type_names(kind)),
        Kind::MaxLength { limit } => format!("string longer than {limit} characters"),
        Kind::MinLength { limit } => format!("string shorter than {limit} characters"),
        Kind::MaxItems { limit } => format!("more than {limit} items"),
        Kind::MinItems { limit } => format!("fewer than {limit} items"),
        Kind::Maximum { .. } | Kind::ExclusiveMaximum { .. } => {
            "number above the maximum".to_owned()
        }
        Kind::Minimum { .. } | Kind::ExclusiveMinimum { .. } => {
            "number below the minimum".to_owned()
        }
        Kind::Pattern { .. } => "string does not match the required pattern".to_owned(),
        Kind::Enum { .. } | Kind::Constant { .. } => {
            "value is not one of the allowed values".to_owned()
        }
        Kind::Format { format } => format!("string is not a valid {format}"),
        Kind::UnevaluatedProperties { unexpected } => {
            let names: Vec<String> = unexpected.iter().map(|n| quote_name(n)).collect();
            format!("unexpected property {}", names.join(", "))
        }
        other => format!("fails the \"{}\" rule", other.keyword()),
    };
    (path, rule)
}

/// Property names come from the client: quoted, and cut short so a hostile name cannot
/// fill an error message.
fn quote_name(name: &str) -> String {
    const MAX: usize = 64;
    let cut: String = name.chars().take(MAX).collect();
    let ellipsis = if cut.len() < name.len() { "…" } else { "" };
    format!("{:?}", format!("{cut}{ellipsis}"))
}

fn type_names(kind: &jsonschema::error::TypeKind) -> String {
    match kind {
        jsonschema::error::TypeKind::Single(t) => t.to_string(),
        jsonschema::error::TypeKind::Multiple(types) => types
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" or "),
    }
}

type Compiled = (
    jsonschema::Validator,
    Option<jsonschema::Validator>,
    Vec<String>,
);

fn compile(definition: &Value, rules: &ToolRules) -> Result<Compiled, String> {
    let mut input = definition
        .get("inputSchema")
        .cloned()
        .ok_or_else(|| "no inputSchema".to_owned())?;
    let declared_paths = paths::declared_paths(&input);
    if !rules.allow_extra_properties {
        strict::close_objects(&mut input);
    }
    let validator =
        compile_schema(&input).map_err(|e| format!("inputSchema does not compile: {e}"))?;
    let output = definition
        .get("outputSchema")
        .map(compile_schema)
        .transpose()
        .map_err(|e| format!("outputSchema does not compile: {e}"))?;
    Ok((validator, output, declared_paths))
}

/// Formats checked, regular expressions in the `regex` engine (linear time, no
/// backtracking to exploit), and no retrieval of any kind: this build of the crate has
/// neither HTTP nor file resolution, so a remote `$ref` fails to compile.
fn compile_schema(
    schema: &Value,
) -> Result<jsonschema::Validator, jsonschema::ValidationError<'static>> {
    jsonschema::options()
        .should_validate_formats(true)
        .with_pattern_options(jsonschema::PatternOptions::regex())
        .build(schema)
}

/// Why a tool was left out of the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withheld {
    pub name: String,
    pub reason: String,
}

/// The tools clients can see and call, in a stable order.
#[derive(Debug, Default)]
pub struct Catalogue {
    tools: Vec<CatalogueTool>,
    by_name: HashMap<String, usize>,
}

impl Catalogue {
    /// Compiles every definition with the operator's `rules` for it (by catalogue name).
    /// A tool whose input or output schema does not compile (or needs a remote `$ref`,
    /// which is never fetched) is withheld, never passed unvalidated.
    /// `rules_of` gives the operator's rules for a definition (the gateway resolves
    /// patterns and upstream-wide defaults).
    pub fn build(
        definitions: Vec<(Value, Origin)>,
        rules_of: impl Fn(&Value, &Origin) -> ToolRules,
        kind_of: impl Fn(&Value, &Origin) -> ToolKind,
    ) -> (Self, Vec<Withheld>) {
        let mut catalogue = Self::default();
        let mut withheld = Vec::new();
        for (definition, origin) in definitions {
            let name = definition
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let rules = rules_of(&definition, &origin);
            let rules = &rules;
            let compiled = compile(&definition, rules);
            match compiled {
                Ok(_) if name.is_empty() => withheld.push(Withheld {
                    name,
                    reason: "no name".into(),
                }),
                // A name a client could not type and a log could not show as one word.
                Ok(_)
                    if name.chars().any(|c| c.is_control() || c.is_whitespace())
                        || hides_characters(&name) =>
                {
                    withheld.push(Withheld {
                        name,
                        reason: "its name holds control, blank or invisible characters".into(),
                    });
                }
                Ok(_) if catalogue.by_name.contains_key(&name) => withheld.push(Withheld {
                    name,
                    reason: "duplicate name".into(),
                }),
                Ok((validator, output, declared_paths)) => {
                    let kind = kind_of(&definition, &origin);
                    let mut paths = declared_paths;
                    paths.extend(rules.paths.iter().cloned());
                    catalogue.by_name.insert(name, catalogue.tools.len());
                    catalogue.tools.push(CatalogueTool {
                        definition,
                        kind,
                        validator,
                        output,
                        output_check: rules.output_check,
                        confirm: rules.confirm.unwrap_or(match kind {
                            ToolKind::Destructive => Confirm::Elicit,
                            ToolKind::Read | ToolKind::Write => Confirm::Never,
                        }),
                        returns: rules.returns,
                        caps: rules.caps,
                        paths,
                        root: rules.root.clone(),
                        origin,
                    });
                }
                Err(reason) => withheld.push(Withheld { name, reason }),
            }
        }
        for tool in &withheld {
            tracing::warn!(tool = %tool.name, reason = %tool.reason, "tool withheld from the catalogue");
        }
        (catalogue, withheld)
    }

    /// Tools a caller allowed up to `ceiling` may see, in catalogue order.
    pub fn visible(&self, ceiling: ToolKind) -> impl Iterator<Item = &CatalogueTool> {
        self.tools.iter().filter(move |tool| tool.kind <= ceiling)
    }

    /// Finds a tool the caller may call. A tool above the caller's ceiling is as unknown
    /// as one that does not exist: its existence is not revealed.
    pub fn lookup(&self, name: &str, ceiling: ToolKind) -> Result<&CatalogueTool, PolicyError> {
        self.by_name
            .get(name)
            .map(|&index| &self.tools[index])
            .filter(|tool| tool.kind <= ceiling)
            .ok_or(PolicyError::UnknownTool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalogue() -> Catalogue {
        let defs = vec![
            json!({"name": "read_it", "inputSchema": {"type": "object", "properties": {"n": {"type": "integer", "maximum": 5}}, "required": ["n"], "additionalProperties": false}, "annotations": {"readOnlyHint": true}}),
            json!({"name": "write_it", "inputSchema": {"type": "object"}, "annotations": {"destructiveHint": false}}),
            json!({"name": "nuke_it", "inputSchema": {"type": "object"}}),
            json!({"name": "broken", "inputSchema": {"type": 17}}),
            json!({"name": "remote", "inputSchema": {"$ref": "https://example.com/schema.json"}}),
        ];
        let defs = defs
            .into_iter()
            .map(|d| {
                let origin = Origin {
                    upstream: 0,
                    name: d["name"].as_str().unwrap().to_owned(),
                };
                (d, origin)
            })
            .collect();
        let (catalogue, withheld) = Catalogue::build(
            defs,
            |_, _| ToolRules::default(),
            |d, _| ToolKind::from_trusted_annotations(d),
        );
        let names: Vec<_> = withheld.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["broken", "remote"]);
        catalogue
    }

    #[test]
    fn kinds_and_ceilings() {
        let c = catalogue();
        let names = |ceiling| {
            c.visible(ceiling)
                .map(|t| t.name().to_owned())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(ToolKind::Read), ["read_it"]);
        assert_eq!(
            names(ToolKind::Destructive),
            ["read_it", "write_it", "nuke_it"]
        );
        assert_eq!(
            c.lookup("write_it", ToolKind::Read).unwrap_err(),
            PolicyError::UnknownTool
        );
        assert_eq!(
            c.lookup("nope", ToolKind::Destructive).unwrap_err(),
            PolicyError::UnknownTool
        );
        assert_eq!(
            c.lookup("nuke_it", ToolKind::Destructive).unwrap().kind(),
            ToolKind::Destructive
        );
    }

    #[test]
    fn validation_names_path_and_rule_without_the_value() {
        let c = catalogue();
        let tool = c.lookup("read_it", ToolKind::Read).unwrap();
        assert_eq!(tool.validate(&json!({"n": 3})), Ok(()));
        let cases = [
            (json!({"n": "5"}), "wrong type (expected integer)"),
            (json!({"n": 1.5}), "wrong type (expected integer)"),
            (json!({"n": 9}), "number above the maximum"),
            (json!({}), "missing required property \"n\""),
            (
                json!({"n": 1, "sekrit_value_x": 1}),
                "unexpected property \"sekrit_value_x\"",
            ),
            (json!([1]), "wrong type (expected object)"),
        ];
        for (args, rule) in cases {
            let err = tool.validate(&args).unwrap_err();
            let PolicyError::InvalidArguments { rule: got, .. } = &err else {
                panic!()
            };
            assert_eq!(got, rule, "{args}");
        }
        let err = tool.validate(&json!({"n": "canary-123"})).unwrap_err();
        assert!(!err.to_string().contains("canary-123"));
        assert_eq!(
            err.to_string(),
            "invalid arguments at /n: wrong type (expected integer)"
        );
    }

    fn one(definition: Value, rules: ToolRules) -> (Catalogue, Vec<Withheld>) {
        let origin = Origin {
            upstream: 0,
            name: "t".into(),
        };
        Catalogue::build(
            vec![(definition, origin)],
            |_, _| rules.clone(),
            |_, _| ToolKind::Read,
        )
    }

    #[test]
    fn patterns_run_in_the_linear_engine() {
        // Look-around needs a backtracking engine: such a schema is withheld.
        let (_, withheld) = one(
            json!({"name": "t", "inputSchema": {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(?=a)a+$"}}}}),
            ToolRules::default(),
        );
        assert_eq!(withheld.len(), 1);
        // A pattern that backtracks catastrophically elsewhere is just a pattern here.
        let (catalogue, _) = one(
            json!({"name": "t", "inputSchema": {"type": "object", "properties": {"s": {"type": "string", "pattern": "^(a+)+$"}}}}),
            ToolRules::default(),
        );
        let tool = catalogue.lookup("t", ToolKind::Read).unwrap();
        let hostile = format!("{}!", "a".repeat(50_000));
        assert!(tool.validate(&json!({ "s": hostile })).is_err());
    }

    #[test]
    fn local_references_resolve_and_loose_schemas_are_closed() {
        let (catalogue, withheld) = one(
            json!({"name": "t", "inputSchema": {
                "type": "object",
                "properties": {"point": {"$ref": "#/$defs/point"}},
                "$defs": {"point": {"type": "object", "properties": {"x": {"type": "integer"}}}}
            }}),
            ToolRules::default(),
        );
        assert!(withheld.is_empty(), "{withheld:?}");
        let tool = catalogue.lookup("t", ToolKind::Read).unwrap();
        assert_eq!(tool.validate(&json!({"point": {"x": 1}})), Ok(()));
        assert!(tool.validate(&json!({"point": {"x": 1, "y": 2}})).is_err());
        assert!(tool.validate(&json!({"point": {"x": 1}, "z": 0})).is_err());
        let (opted_out, _) = one(
            json!({"name": "t", "inputSchema": {"type": "object", "properties": {"x": {}}}}),
            ToolRules {
                allow_extra_properties: true,
                ..ToolRules::default()
            },
        );
        let tool = opted_out.lookup("t", ToolKind::Read).unwrap();
        assert_eq!(tool.validate(&json!({"x": 1, "y": 2})), Ok(()));
    }

    #[test]
    fn a_tool_may_tighten_the_caps() {
        let caps = JsonLimits {
            max_depth: 2,
            max_string_bytes: 4,
            max_array_items: 2,
            max_object_keys: 3,
            max_total_nodes: 100,
        };
        let (catalogue, _) = one(
            json!({"name": "t", "inputSchema": {"type": "object", "additionalProperties": true}}),
            ToolRules {
                caps: Some(caps),
                ..ToolRules::default()
            },
        );
        let tool = catalogue.lookup("t", ToolKind::Read).unwrap();
        assert_eq!(tool.validate(&json!({"a": "abcd", "b": [1, 2]})), Ok(()));
        for (arguments, limit) in [
            (json!({"a": "abcde"}), "max_string_bytes"),
            (json!({"a": [1, 2, 3]}), "max_array_items"),
            (json!({"a": 1, "b": 2, "c": 3, "d": 4}), "max_object_keys"),
            (json!({"a": {"b": {}}}), "max_depth"),
        ] {
            let error = tool.validate(&arguments).unwrap_err();
            assert!(
                matches!(&error, PolicyError::ArgumentCap { limit: l, .. } if *l == limit),
                "{arguments}: {error}"
            );
        }
    }
}
