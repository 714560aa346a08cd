//! The policy model as a Cedar schema: the fixed part (`schema.cedarschema`) and one
//! action per tool, `call_tool:<name>`, whose context types the tool's arguments as its
//! input schema says. Only validation uses the schema; decisions are built without it.

use cedar_policy::Schema;
use serde_json::Value;

use super::ToolFacts;

/// The fixed part of the model.
pub const SCHEMA: &str = include_str!("schema.cedarschema");

/// The action of calling `tool`.
pub fn call_action(tool: &str) -> String {
    format!("call_tool:{tool}")
}

/// A string as a Cedar string literal.
pub(super) fn quoted(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// The Cedar type a JSON Schema property maps to, when it has one: strings, integers,
/// booleans and arrays of one of them. Other arguments are not in `context.arguments`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ArgumentType {
    String,
    Long,
    Bool,
    Set(Scalar),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scalar {
    String,
    Long,
    Bool,
}

impl Scalar {
    fn of(kind: &Value) -> Option<Self> {
        match kind.as_str()? {
            "string" => Some(Self::String),
            "integer" => Some(Self::Long),
            "boolean" => Some(Self::Bool),
            _ => None,
        }
    }

    fn cedar(self) -> &'static str {
        match self {
            Self::String => "String",
            Self::Long => "Long",
            Self::Bool => "Bool",
        }
    }

    pub(super) fn fits(self, value: &Value) -> bool {
        match self {
            Self::String => value.is_string(),
            Self::Long => value.as_i64().is_some(),
            Self::Bool => value.is_boolean(),
        }
    }
}

impl ArgumentType {
    pub(super) fn of(property: &Value) -> Option<Self> {
        let kind = property.get("type")?;
        if kind.as_str()? == "array" {
            return Scalar::of(property.get("items")?.get("type")?).map(Self::Set);
        }
        Some(match Scalar::of(kind)? {
            Scalar::String => Self::String,
            Scalar::Long => Self::Long,
            Scalar::Bool => Self::Bool,
        })
    }

    fn cedar(self) -> String {
        match self {
            Self::String => "String".into(),
            Self::Long => "Long".into(),
            Self::Bool => "Bool".into(),
            Self::Set(inner) => format!("Set<{}>", inner.cedar()),
        }
    }

    pub(super) fn fits(self, value: &Value) -> bool {
        match self {
            Self::String => Scalar::String.fits(value),
            Self::Long => Scalar::Long.fits(value),
            Self::Bool => Scalar::Bool.fits(value),
            Self::Set(inner) => value
                .as_array()
                .is_some_and(|items| items.iter().all(|item| inner.fits(item))),
        }
    }
}

/// The record type of a tool's arguments: each property with a Cedar type, required as
/// the schema requires.
fn arguments_type(input_schema: &Value) -> String {
    let required: Vec<&str> = input_schema
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields = Vec::new();
    if let Some(properties) = input_schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            if let Some(kind) = ArgumentType::of(property) {
                let optional = if required.contains(&name.as_str()) {
                    ""
                } else {
                    "?"
                };
                fields.push(format!("{}{optional}: {}", quoted(name), kind.cedar()));
            }
        }
    }
    format!("{{ {} }}", fields.join(", "))
}

/// The model's text with one action per tool of `tools`, and one with untyped
/// arguments per name of `unknown` (tools a policy names that no upstream offers now).
pub fn schema_text(tools: &[ToolFacts<'_>], unknown: &[String]) -> String {
    let mut text = SCHEMA.to_owned();
    let action = |text: &mut String, name: &str, arguments: &str| {
        text.push_str(&format!(
            "action {} in [call_tool] appliesTo {{ principal: [Key, Client], resource: [Tool], \
             context: {{ client_name: String, era: String, address: ipaddr, time: datetime, \
             session: Session, arguments: {arguments} }} }};\n",
            quoted(&call_action(name)),
        ));
    };
    for tool in tools {
        action(&mut text, tool.name, &arguments_type(tool.input_schema));
    }
    for name in unknown {
        action(&mut text, name, "{}");
    }
    text
}

/// The model with one action per tool of `tools`.
pub fn schema_for(tools: &[ToolFacts<'_>]) -> Result<Schema, String> {
    parse_schema(&schema_text(tools, &[]))
}

pub(super) fn parse_schema(text: &str) -> Result<Schema, String> {
    Schema::from_cedarschema_str(text)
        .map(|(schema, _warnings)| schema)
        .map_err(|error| error.to_string())
}
