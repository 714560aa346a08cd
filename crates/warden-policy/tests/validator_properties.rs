//! Random arguments never panic the validator, and a refusal never repeats a value
//! that was sent.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::{Value, json};
use warden_policy::{Catalogue, Origin, ToolKind};

fn catalogue() -> Catalogue {
    let schemas = [
        json!({"type": "object", "properties": {
            "title": {"type": "string", "minLength": 1, "maxLength": 20},
            "n": {"type": "integer", "minimum": 0, "maximum": 9},
            "tags": {"type": "array", "items": {"type": "string", "pattern": "^[a-z]+$"}, "maxItems": 3},
            "mode": {"enum": ["r", "w"]},
            "when": {"type": "string", "format": "date-time"},
            "inner": {"type": "object", "properties": {"x": {"type": "number"}}},
            "path": {"type": "string", "format": "path"}
        }, "required": ["title"]}),
        json!({"type": "object", "properties": {"any": {}}, "anyOf": [
            {"properties": {"a": {"type": "string"}}},
            {"properties": {"b": {"type": "boolean"}}}
        ]}),
    ];
    let definitions = schemas
        .into_iter()
        .enumerate()
        .map(|(i, schema)| {
            let name = format!("t{i}");
            (
                json!({"name": name, "inputSchema": schema}),
                Origin { upstream: 0, name },
            )
        })
        .collect();
    Catalogue::build(
        definitions,
        |_, _| warden_config::ToolRules::default(),
        |_, _| ToolKind::Read,
    )
    .0
}

/// Values whose strings all start with `VAL`, so an echo is easy to spot.
fn argument() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i32>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-z./%]{0,10}".prop_map(|s| Value::String(format!("VAL{s}"))),
    ];
    leaf.prop_recursive(4, 32, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("title".to_owned()),
                    Just("n".to_owned()),
                    Just("tags".to_owned()),
                    Just("inner".to_owned()),
                    Just("path".to_owned()),
                    Just("a".to_owned()),
                    "[a-z]{1,4}",
                ],
                inner,
                0..5
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn validation_never_panics_nor_echoes_a_value(arguments in argument()) {
        let catalogue = catalogue();
        for name in ["t0", "t1"] {
            let tool = catalogue.lookup(name, ToolKind::Read).unwrap();
            if let Err(error) = tool.validate(&arguments) {
                prop_assert!(!error.to_string().contains("VAL"), "{}", error);
            }
        }
    }
}
