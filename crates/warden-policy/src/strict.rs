//! Closes the objects of an input schema, so a hallucinated or misspelled parameter is
//! refused at every level even when the upstream's schema forgot
//! `additionalProperties: false`.
//!
//! An object schema is closed when it declares `properties` (or is the schema's root)
//! and says nothing of other properties. Subschemas combined by `allOf`/`anyOf`/`oneOf`
//! or pulled in by `$ref` are not closed at their own level (that would refuse the
//! properties another branch declares); their parent gets `unevaluatedProperties: false`
//! instead, which sees through the combination. Drafts before 2019-09 lack that keyword:
//! there, such parents stay open. Objects that declare no properties (maps) stay open.

use serde_json::{Map, Value};

/// Keywords whose value is one subschema.
const ONE: [&str; 7] = [
    "additionalProperties",
    "items",
    "contains",
    "not",
    "if",
    "then",
    "else",
];
/// Keywords whose value maps names to subschemas.
const MANY_BY_NAME: [&str; 3] = ["properties", "patternProperties", "dependentSchemas"];
/// Definitions are used through `$ref`, perhaps as one branch of a combination: like
/// branches, they are not closed at their own level (the referring parent is).
const DEFINITIONS: [&str; 2] = ["$defs", "definitions"];
/// Keywords whose value is a list of subschemas.
const MANY_IN_LIST: [&str; 2] = ["prefixItems", "items"];
const COMBINATIONS: [&str; 3] = ["allOf", "anyOf", "oneOf"];

pub(crate) fn close_objects(schema: &mut Value) {
    let unevaluated = schema
        .get("$schema")
        .and_then(Value::as_str)
        .is_none_or(|uri| {
            !["draft-04", "draft-06", "draft-07"]
                .iter()
                .any(|d| uri.contains(d))
        });
    close(schema, true, false, unevaluated);
}

fn close(schema: &mut Value, root: bool, in_combination: bool, unevaluated: bool) {
    let Some(object) = schema.as_object_mut() else {
        return;
    };
    for keyword in ONE {
        if let Some(sub) = object.get_mut(keyword).filter(|s| s.is_object()) {
            close(sub, false, false, unevaluated);
        }
    }
    for keyword in MANY_BY_NAME {
        if let Some(Value::Object(subs)) = object.get_mut(keyword) {
            for sub in subs.values_mut() {
                close(sub, false, false, unevaluated);
            }
        }
    }
    for keyword in DEFINITIONS {
        if let Some(Value::Object(subs)) = object.get_mut(keyword) {
            for sub in subs.values_mut() {
                close(sub, false, true, unevaluated);
            }
        }
    }
    for keyword in MANY_IN_LIST {
        if let Some(Value::Array(subs)) = object.get_mut(keyword) {
            for sub in subs {
                close(sub, false, false, unevaluated);
            }
        }
    }
    let mut combined = object.contains_key("$ref");
    for keyword in COMBINATIONS {
        if let Some(Value::Array(branches)) = object.get_mut(keyword) {
            combined = true;
            for branch in branches {
                close(branch, false, true, unevaluated);
            }
        }
    }
    if in_combination || says_how_others_go(object) {
        return;
    }
    let declares = object.contains_key("properties");
    if combined {
        if unevaluated {
            object.insert("unevaluatedProperties".into(), Value::Bool(false));
        }
    } else if declares || (root && is_object_schema(object)) {
        object.insert("additionalProperties".into(), Value::Bool(false));
    }
}

fn says_how_others_go(object: &Map<String, Value>) -> bool {
    [
        "additionalProperties",
        "patternProperties",
        "unevaluatedProperties",
    ]
    .iter()
    .any(|k| object.contains_key(*k))
}

fn is_object_schema(object: &Map<String, Value>) -> bool {
    match object.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(types)) => types.iter().any(|t| t == "object"),
        None => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn closed(mut schema: Value) -> Value {
        close_objects(&mut schema);
        schema
    }

    #[test]
    fn every_declared_object_is_closed() {
        let schema = closed(json!({
            "type": "object",
            "properties": {
                "a": {"type": "object", "properties": {"b": {"type": "string"}}},
                "list": {"type": "array", "items": {"type": "object", "properties": {"c": {}}}},
                "map": {"type": "object"},
                "open": {"type": "object", "properties": {}, "additionalProperties": true}
            }
        }));
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(schema["properties"]["a"]["additionalProperties"], false);
        assert_eq!(
            schema["properties"]["list"]["items"]["additionalProperties"],
            false
        );
        assert!(
            schema["properties"]["map"]
                .get("additionalProperties")
                .is_none()
        );
        assert_eq!(schema["properties"]["open"]["additionalProperties"], true);
    }

    #[test]
    fn combinations_are_closed_at_the_parent_only() {
        let schema = closed(json!({
            "allOf": [
                {"type": "object", "properties": {"a": {}}},
                {"type": "object", "properties": {"b": {}}}
            ]
        }));
        assert_eq!(schema["unevaluatedProperties"], false);
        assert!(schema["allOf"][0].get("additionalProperties").is_none());
        let old = closed(json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "anyOf": [{"properties": {"a": {}}}]
        }));
        assert!(old.get("unevaluatedProperties").is_none());
        assert!(old.get("additionalProperties").is_none());
    }

    #[test]
    fn definitions_used_as_branches_stay_open_at_their_level() {
        let schema = closed(json!({
            "allOf": [{"$ref": "#/$defs/base"}, {"properties": {"b": {}}}],
            "$defs": {"base": {"properties": {"a": {}, "inner": {"properties": {"c": {}}}}}}
        }));
        assert_eq!(schema["unevaluatedProperties"], false);
        assert!(
            schema["$defs"]["base"]
                .get("additionalProperties")
                .is_none()
        );
        assert_eq!(
            schema["$defs"]["base"]["properties"]["inner"]["additionalProperties"],
            false
        );
    }

    #[test]
    fn a_root_without_properties_takes_no_arguments() {
        assert_eq!(
            closed(json!({"type": "object"}))["additionalProperties"],
            false
        );
    }
}
