//! Schema closing and argument validation, with any schema an upstream may declare and
//! any arguments a client may send.
//!
//! Invariants: building the catalogue and validating never panic; a schema that does
//! not compile withholds the tool; and where the root schema declares its properties
//! and says nothing else about objects, validated arguments hold no other property
//! (the strict default: hallucinated parameters are refused).

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};
use warden_config::ToolRules;
use warden_policy::{Catalogue, Origin, ToolKind};

/// Root keywords that leave the closing to nothing but `properties`.
const PLAIN: [&str; 5] = ["type", "properties", "required", "title", "description"];

fuzz_target!(|input: &[u8]| {
    // A NUL separates the schema from the arguments.
    let Some(split) = input.iter().position(|&b| b == 0) else {
        return;
    };
    let (Ok(schema), Ok(arguments)) = (
        serde_json::from_slice::<Value>(&input[..split]),
        serde_json::from_slice::<Value>(&input[split + 1..]),
    ) else {
        return;
    };
    let definition = json!({ "name": "t", "inputSchema": schema.clone() });
    let origin = Origin {
        upstream: 0,
        name: "t".into(),
    };
    let (catalogue, withheld) = Catalogue::build(
        vec![(definition, origin)],
        |_, _| ToolRules::default(),
        |_, _| ToolKind::Write,
    );
    let Ok(tool) = catalogue.lookup("t", ToolKind::Destructive) else {
        assert_eq!(
            withheld.len(),
            1,
            "a tool is either in the catalogue or withheld"
        );
        return;
    };
    if tool.validate(&arguments).is_err() {
        return;
    }
    let plain = schema
        .as_object()
        .filter(|root| root.keys().all(|k| PLAIN.contains(&k.as_str())));
    if let (Some(root), Some(given)) = (plain, arguments.as_object()) {
        let declared = root.get("properties").and_then(Value::as_object);
        for name in given.keys() {
            assert!(
                declared.is_some_and(|declared| declared.contains_key(name)),
                "an undeclared property {name:?} passed {schema}"
            );
        }
    }
});
