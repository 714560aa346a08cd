//! Modern-era routing headers (`Mcp-Method`, `Mcp-Name`) must agree with the body: a
//! gateway that routes or applies policy by header would otherwise be lied to.

use base64::Engine as _;
use http::HeaderName;
use serde_json::{Map, Value};

/// The Streamable HTTP transport's headers, as a client sends them to Warden and Warden
/// sends them to an upstream.
pub const SESSION_ID: HeaderName = HeaderName::from_static("mcp-session-id");
pub const PROTOCOL_VERSION: HeaderName = HeaderName::from_static("mcp-protocol-version");
pub const METHOD: HeaderName = HeaderName::from_static("mcp-method");
pub const NAME: HeaderName = HeaderName::from_static("mcp-name");

const BASE64_PREFIX: &str = "=?base64?";
const BASE64_SUFFIX: &str = "?=";

/// Which header disagreed with the body. Never carries either value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderMismatch {
    #[error("the MCP-Protocol-Version header is missing")]
    MissingVersion,
    #[error("the MCP-Protocol-Version header does not match params._meta")]
    Version,
    #[error("the Mcp-Method header is missing")]
    MissingMethod,
    #[error("the Mcp-Method header does not match the body's method")]
    Method,
    #[error("the Mcp-Name header is missing")]
    MissingName,
    #[error("the Mcp-Name header does not match the body")]
    Name,
    #[error("the header value is not valid base64-encoded UTF-8")]
    Encoding,
}

/// Decodes a header value, unwrapping the `=?base64?…?=` sentinel.
pub fn decode_header_value(raw: &str) -> Result<String, HeaderMismatch> {
    match raw
        .strip_prefix(BASE64_PREFIX)
        .and_then(|rest| rest.strip_suffix(BASE64_SUFFIX))
    {
        Some(encoded) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .map_err(|_| HeaderMismatch::Encoding)?;
            String::from_utf8(bytes).map_err(|_| HeaderMismatch::Encoding)
        }
        None => Ok(raw.to_owned()),
    }
}

/// A value as a header carries it: itself when it is printable ASCII without leading or
/// trailing blanks, else in the `=?base64?…?=` sentinel.
pub fn encode_header_value(value: &str) -> String {
    let plain = !value.is_empty()
        && value.bytes().all(|b| (0x20..0x7f).contains(&b))
        && value.trim() == value;
    if plain {
        value.to_owned()
    } else {
        format!(
            "{BASE64_PREFIX}{}{BASE64_SUFFIX}",
            base64::engine::general_purpose::STANDARD.encode(value)
        )
    }
}

/// The body field `Mcp-Name` must mirror for `method`, if the method has one.
pub fn name_field(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" | "resources/subscribe" | "resources/unsubscribe" => Some("uri"),
        _ => None,
    }
}

/// Checks `Mcp-Method` and, where the method has one, `Mcp-Name` against the body.
pub fn check(
    method_header: Option<&str>,
    name_header: Option<&str>,
    method: &str,
    params: &Map<String, Value>,
) -> Result<(), HeaderMismatch> {
    let header_method = decode_header_value(method_header.ok_or(HeaderMismatch::MissingMethod)?)?;
    if header_method != method {
        return Err(HeaderMismatch::Method);
    }
    if let Some(field) = name_field(method) {
        let header_name = decode_header_value(name_header.ok_or(HeaderMismatch::MissingName)?)?;
        if params.get(field).and_then(Value::as_str) != Some(header_name.as_str()) {
            return Err(HeaderMismatch::Name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn encoded_values_decode_to_themselves() {
        for value in [
            "search_notes",
            "notes://n_1",
            " padded",
            "naïve",
            "a\nb",
            "",
        ] {
            assert_eq!(
                decode_header_value(&encode_header_value(value)).unwrap(),
                value
            );
        }
        assert_eq!(encode_header_value("search_notes"), "search_notes");
    }

    #[test]
    fn matching_headers_pass() {
        let p = params(json!({"name": "search_notes"}));
        assert_eq!(
            check(Some("tools/call"), Some("search_notes"), "tools/call", &p),
            Ok(())
        );
        assert_eq!(
            check(Some("tools/list"), None, "tools/list", &Map::new()),
            Ok(())
        );
        let p = params(json!({"uri": "notes://abc"}));
        assert_eq!(
            check(
                Some("resources/read"),
                Some("notes://abc"),
                "resources/read",
                &p
            ),
            Ok(())
        );
    }

    #[test]
    fn base64_sentinel_is_decoded() {
        let p = params(json!({"name": "naïve tool"}));
        let encoded = format!(
            "=?base64?{}?=",
            base64::engine::general_purpose::STANDARD.encode("naïve tool")
        );
        assert_eq!(
            check(Some("tools/call"), Some(&encoded), "tools/call", &p),
            Ok(())
        );
        assert_eq!(
            decode_header_value("=?base64?***?="),
            Err(HeaderMismatch::Encoding)
        );
    }

    #[test]
    fn mismatches_are_named() {
        let p = params(json!({"name": "delete_note"}));
        assert_eq!(
            check(None, None, "tools/call", &p),
            Err(HeaderMismatch::MissingMethod)
        );
        assert_eq!(
            check(Some("tools/list"), None, "tools/call", &p),
            Err(HeaderMismatch::Method)
        );
        assert_eq!(
            check(Some("tools/call"), None, "tools/call", &p),
            Err(HeaderMismatch::MissingName)
        );
        assert_eq!(
            check(Some("tools/call"), Some("get_note"), "tools/call", &p),
            Err(HeaderMismatch::Name)
        );
    }
}
