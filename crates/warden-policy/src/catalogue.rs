//! The catalogue of tools a gateway offers, each with its input schema compiled once.

use std::collections::HashMap;

use serde_json::Value;

use crate::PolicyError;

/// What a tool does to the world, ordered by how much it can break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ToolKind {
    Read,
    Write,
    Destructive,
}

impl ToolKind {
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

    /// Checks `arguments` against the compiled input schema. The error names the first
    /// failing JSON path and rule; it never carries the offending value.
    pub fn validate(&self, arguments: &Value) -> Result<(), PolicyError> {
        match self.validator.iter_errors(arguments).next() {
            None => Ok(()),
            Some(error) => Err(describe(&error)),
        }
    }
}

fn describe(error: &jsonschema::ValidationError<'_>) -> PolicyError {
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
        other => format!("fails the \"{}\" rule", other.keyword()),
    };
    PolicyError::InvalidArguments { path, rule }
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
    /// Compiles every definition. A tool whose schema does not compile (or needs a
    /// remote `$ref`, which is never fetched) is withheld, never passed unvalidated.
    pub fn build(
        definitions: Vec<(Value, Origin)>,
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
            let compiled = definition
                .get("inputSchema")
                .ok_or_else(|| "no inputSchema".to_owned())
                .and_then(|schema| {
                    jsonschema::options()
                        .should_validate_formats(true)
                        .build(schema)
                        .map_err(|e| format!("inputSchema does not compile: {e}"))
                });
            match compiled {
                Ok(_) if name.is_empty() => withheld.push(Withheld {
                    name,
                    reason: "no name".into(),
                }),
                Ok(_) if catalogue.by_name.contains_key(&name) => withheld.push(Withheld {
                    name,
                    reason: "duplicate name".into(),
                }),
                Ok(validator) => {
                    let kind = kind_of(&definition, &origin);
                    catalogue.by_name.insert(name, catalogue.tools.len());
                    catalogue.tools.push(CatalogueTool {
                        definition,
                        kind,
                        validator,
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
        let (catalogue, withheld) =
            Catalogue::build(defs, |d, _| ToolKind::from_trusted_annotations(d));
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
}
