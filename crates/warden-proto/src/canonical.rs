//! Canonical JSON: object keys in byte order, no whitespace. The same value written in
//! another key order hashes the same (argument bindings, pinned tool definitions).

use serde_json::{Map, Value};

/// An object's members, keys in order.
pub fn sorted(object: &Map<String, Value>) -> Vec<(&str, &Value)> {
    let mut entries: Vec<(&str, &Value)> = object.iter().map(|(k, v)| (k.as_str(), v)).collect();
    entries.sort_unstable_by_key(|(k, _)| *k);
    entries
}

pub fn write(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Object(object) => {
            out.push(b'{');
            for (index, (name, value)) in sorted(object).into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write(out, &Value::String(name.to_owned()));
                out.push(b':');
                write(out, value);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write(out, item);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn key_order_does_not_matter() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        write(&mut a, &json!({"b": [1, {"d": 2, "c": 3}], "a": "x"}));
        write(&mut b, &json!({"a": "x", "b": [1, {"c": 3, "d": 2}]}));
        assert_eq!(a, b);
        assert_eq!(
            String::from_utf8(a).unwrap(),
            r#"{"a":"x","b":[1,{"c":3,"d":2}]}"#
        );
    }
}
