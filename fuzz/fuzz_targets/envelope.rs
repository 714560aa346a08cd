//! The caps scanner and the JSON-RPC envelope, on any bytes a client may send.
//!
//! Invariants: the scanner never accepts what `serde_json` refuses; a document it
//! accepts keeps every cap (depth, string bytes, array items, object keys, nodes); a
//! document it refuses for a cap breaks that cap; the envelope either reads a message
//! or names a JSON-RPC error code.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use warden_proto::{JsonLimits, Limit, Message, ScanFault};

const LIMITS: JsonLimits = JsonLimits {
    max_depth: 8,
    max_string_bytes: 64,
    max_array_items: 16,
    max_object_keys: 16,
    max_total_nodes: 256,
};

/// What the caps measure, read by a parser that keeps every duplicate key (a `Value`
/// keeps the last, hiding what the others held).
#[derive(Debug, Default, Clone, Copy)]
struct Sizes {
    /// Containers within containers.
    depth: usize,
    /// The longest string or key, in decoded bytes.
    string: usize,
    array: usize,
    object: usize,
    nodes: usize,
    /// The longest number, as `serde_json` writes it back (an exponent gains its `+`).
    number: usize,
}

impl Sizes {
    fn merge(&mut self, inner: Sizes) {
        self.depth = self.depth.max(inner.depth);
        self.string = self.string.max(inner.string);
        self.array = self.array.max(inner.array);
        self.object = self.object.max(inner.object);
        self.number = self.number.max(inner.number);
        self.nodes += inner.nodes;
    }
}

/// serde_json's name for a number kept as text (`arbitrary_precision`).
const NUMBER_TOKEN: &str = "$serde_json::private::Number";

impl<'de> Deserialize<'de> for Sizes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(Measure)
    }
}

struct Measure;

impl<'de> Visitor<'de> for Measure {
    type Value = Sizes;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Sizes, E> {
        Ok(Sizes {
            nodes: 1,
            ..Sizes::default()
        })
    }

    fn visit_unit<E>(self) -> Result<Sizes, E> {
        Ok(Sizes {
            nodes: 1,
            ..Sizes::default()
        })
    }

    fn visit_str<E>(self, text: &str) -> Result<Sizes, E> {
        Ok(Sizes {
            nodes: 1,
            string: text.len(),
            ..Sizes::default()
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Sizes, A::Error> {
        let mut sizes = Sizes {
            nodes: 1,
            depth: 1,
            ..Sizes::default()
        };
        let mut count = 0;
        while let Some(item) = items.next_element::<Sizes>()? {
            count += 1;
            sizes.merge(Sizes {
                depth: item.depth + 1,
                ..item
            });
        }
        sizes.array = sizes.array.max(count);
        Ok(sizes)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Sizes, A::Error> {
        let mut sizes = Sizes {
            nodes: 1,
            depth: 1,
            ..Sizes::default()
        };
        let mut count = 0;
        while let Some(key) = entries.next_key::<String>()? {
            if key == NUMBER_TOKEN {
                let text: String = entries.next_value()?;
                return Ok(Sizes {
                    nodes: 1,
                    number: text.len(),
                    ..Sizes::default()
                });
            }
            count += 1;
            sizes.string = sizes.string.max(key.len());
            let value = entries.next_value::<Sizes>()?;
            sizes.merge(Sizes {
                depth: value.depth + 1,
                ..value
            });
        }
        sizes.object = sizes.object.max(count);
        Ok(sizes)
    }
}

fuzz_target!(|bytes: &[u8]| {
    let scanned = warden_proto::scan::scan(bytes, &LIMITS);
    let parsed: Result<Value, _> = serde_json::from_slice(bytes);
    let sizes = serde_json::from_slice::<Sizes>(bytes);
    match (&scanned, &parsed, &sizes) {
        (Ok(()), Err(error), _) => panic!("the scanner accepted what serde_json refuses: {error}"),
        (Ok(()), Ok(value), Ok(sizes)) => {
            assert!(sizes.depth <= LIMITS.max_depth, "{sizes:?}");
            assert!(sizes.string <= LIMITS.max_string_bytes, "{sizes:?}");
            assert!(sizes.number <= LIMITS.max_string_bytes + 1, "{sizes:?}");
            assert!(sizes.array <= LIMITS.max_array_items, "{sizes:?}");
            assert!(sizes.object <= LIMITS.max_object_keys, "{sizes:?}");
            assert!(sizes.nodes <= LIMITS.max_total_nodes, "{sizes:?}");
            match Message::from_value(value.clone()) {
                Ok(_) => {}
                Err(error) => assert!(error.code() < 0, "{error:?}"),
            }
        }
        (Err(error), Ok(_), Ok(sizes)) => {
            // A cap it names is broken indeed.
            if let ScanFault::Limit { limit, .. } = error.fault {
                let broken = match limit {
                    Limit::Depth => sizes.depth > LIMITS.max_depth,
                    Limit::StringBytes => sizes.string.max(sizes.number) > LIMITS.max_string_bytes,
                    Limit::ArrayItems => sizes.array > LIMITS.max_array_items,
                    Limit::ObjectKeys => sizes.object > LIMITS.max_object_keys,
                    Limit::TotalNodes => sizes.nodes > LIMITS.max_total_nodes,
                };
                assert!(
                    broken,
                    "{limit:?} refused, but the document keeps it: {sizes:?}"
                );
            }
        }
        _ => {}
    }
});
