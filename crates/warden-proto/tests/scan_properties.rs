//! Random input never panics the body scan, and the scan never lets through what the
//! parser would refuse nor refuses a document within the caps.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use serde_json::Value;
use warden_proto::scan::{JsonLimits, ScanFault, scan};

const GENEROUS: JsonLimits = JsonLimits {
    max_depth: 64,
    max_string_bytes: 1 << 20,
    max_array_items: 10_000,
    max_object_keys: 10_000,
    max_total_nodes: 1_000_000,
};

const TIGHT: JsonLimits = JsonLimits {
    max_depth: 3,
    max_string_bytes: 5,
    max_array_items: 3,
    max_object_keys: 3,
    max_total_nodes: 12,
};

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(".{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn random_bytes_never_panic_and_accepted_bytes_parse(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        for limits in [GENEROUS, TIGHT] {
            if scan(&bytes, &limits).is_ok() {
                prop_assert!(serde_json::from_slice::<Value>(&bytes).is_ok());
            }
        }
    }

    #[test]
    fn near_json_never_panics(text in r#"[\[\]{}",:0-9a-z\\ .eE+-]{0,64}"#) {
        let accepted = scan(text.as_bytes(), &GENEROUS).is_ok();
        let parsed = serde_json::from_str::<Value>(&text).is_ok();
        // The scan refuses duplicate keys the parser would merge; otherwise they agree.
        if accepted {
            prop_assert!(parsed);
        } else if parsed {
            let fault = scan(text.as_bytes(), &GENEROUS).unwrap_err().fault;
            prop_assert_eq!(fault, ScanFault::DuplicateKey);
        }
    }

    #[test]
    fn documents_within_generous_caps_pass(value in json_value(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&value).unwrap()
        } else {
            value.to_string()
        };
        prop_assert_eq!(scan(text.as_bytes(), &GENEROUS), Ok(()));
        // Tight caps may refuse it, but never panic and never mistake it for bad JSON.
        if let Err(error) = scan(text.as_bytes(), &TIGHT) {
            let is_limit = matches!(error.fault, ScanFault::Limit { .. });
            prop_assert!(is_limit, "{:?}", error.fault);
        }
    }
}
