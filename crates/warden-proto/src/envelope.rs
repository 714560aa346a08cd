//! The JSON-RPC 2.0 envelope as MCP uses it: one message per HTTP body, no batches.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::codes;
use crate::scan::{ScanError, ScanFault};

/// A request id exactly as the client sent it: a string or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum RequestId {
    Number(i64),
    String(String),
}

/// A call that expects an answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: RequestId,
    pub method: String,
    pub params: Map<String, Value>,
}

/// A reply from the client to a server-initiated request (elicitation, sampling, ping).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: RequestId,
    /// The `result`, or the `error` object.
    pub outcome: Result<Value, Value>,
}

/// One decoded JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request(Request),
    Notification {
        method: String,
        params: Map<String, Value>,
    },
    Response(Response),
}

/// Why a body is not an acceptable JSON-RPC message. Each variant names the rule that
/// failed; none carries the offending value, which may be a secret or megabytes long.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the body is not valid JSON")]
    Parse,
    #[error("JSON-RPC batches are not supported; send one message per request")]
    Batch,
    #[error("invalid JSON-RPC message: {0}")]
    Invalid(&'static str),
    #[error("invalid params: {0}")]
    InvalidParams(&'static str),
    /// Refused by the caps on the raw body, before parsing.
    #[error("{fault}")]
    Caps { fault: ScanFault, in_params: bool },
}

impl EnvelopeError {
    pub fn code(&self) -> i64 {
        match self {
            Self::Parse => codes::PARSE_ERROR,
            Self::Batch | Self::Invalid(_) => codes::INVALID_REQUEST,
            Self::InvalidParams(_) => codes::INVALID_PARAMS,
            Self::Caps {
                fault: ScanFault::Syntax,
                ..
            } => codes::PARSE_ERROR,
            Self::Caps {
                in_params: true, ..
            } => codes::INVALID_PARAMS,
            Self::Caps { .. } => codes::INVALID_REQUEST,
        }
    }

    /// The id of a message the caps refused, from the span the scan found it at.
    pub fn scanned_id(body: &[u8], error: &ScanError) -> Option<RequestId> {
        let span = error.id.clone()?;
        let value: Value = serde_json::from_slice(body.get(span)?).ok()?;
        request_id(&value)
    }

    /// The id to answer with, when one could be recovered from the broken message.
    pub fn answer_id(body: &Value) -> Option<RequestId> {
        body.get("id").and_then(request_id)
    }
}

fn request_id(value: &Value) -> Option<RequestId> {
    match value {
        Value::String(s) => Some(RequestId::String(s.clone())),
        Value::Number(n) => n.as_i64().map(RequestId::Number),
        _ => None,
    }
}

impl RequestId {
    /// The id as JSON text: `1` and `"1"` stay apart.
    pub fn key(&self) -> String {
        match self {
            Self::Number(n) => n.to_string(),
            Self::String(s) => Value::String(s.clone()).to_string(),
        }
    }
}

impl Message {
    /// Decodes one message from a parsed body.
    pub fn from_value(body: Value) -> Result<Self, EnvelopeError> {
        let mut object = match body {
            Value::Object(object) => object,
            Value::Array(_) => return Err(EnvelopeError::Batch),
            _ => return Err(EnvelopeError::Invalid("the message must be a JSON object")),
        };
        if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(EnvelopeError::Invalid("\"jsonrpc\" must be \"2.0\""));
        }
        let id = match object.remove("id") {
            None => None,
            Some(raw) => Some(request_id(&raw).ok_or(EnvelopeError::Invalid(
                "\"id\" must be a string or an integer",
            ))?),
        };
        match object.remove("method") {
            Some(Value::String(method)) => {
                let params = match object.remove("params") {
                    None => Map::new(),
                    Some(Value::Object(params)) => params,
                    Some(_) => {
                        return Err(EnvelopeError::InvalidParams("\"params\" must be an object"));
                    }
                };
                Ok(match id {
                    Some(id) => Self::Request(Request { id, method, params }),
                    None => Self::Notification { method, params },
                })
            }
            Some(_) => Err(EnvelopeError::Invalid("\"method\" must be a string")),
            None => match id {
                Some(id) if object.contains_key("result") || object.contains_key("error") => {
                    let outcome = match object.remove("result") {
                        Some(result) => Ok(result),
                        None => Err(object.remove("error").unwrap_or_default()),
                    };
                    Ok(Self::Response(Response { id, outcome }))
                }
                _ => Err(EnvelopeError::Invalid(
                    "a message needs a \"method\", or an \"id\" with a \"result\" or \"error\"",
                )),
            },
        }
    }
}

// The bodies below are built field by field: `json!` would copy a `Value` it is given
// (params, a result) by serialising it.

/// A JSON-RPC request body, or a notification's when `id` is `None`.
pub fn request_body(id: Option<Value>, method: &str, params: Value) -> Value {
    let mut body = serde_json::Map::with_capacity(4);
    body.insert("jsonrpc".into(), "2.0".into());
    if let Some(id) = id {
        body.insert("id".into(), id);
    }
    body.insert("method".into(), method.into());
    body.insert("params".into(), params);
    Value::Object(body)
}

/// A JSON-RPC success body.
pub fn result_body(id: &RequestId, result: Value) -> Value {
    let mut body = serde_json::Map::with_capacity(3);
    body.insert("jsonrpc".into(), "2.0".into());
    body.insert("id".into(), serde_json::json!(id));
    body.insert("result".into(), result);
    Value::Object(body)
}

/// A JSON-RPC error body. `id` is `null` when the request's id could not be read.
pub fn error_body(id: Option<&RequestId>, code: i64, message: &str, data: Option<Value>) -> Value {
    let mut error = serde_json::json!({ "code": code, "message": message });
    if let Some(data) = data {
        error["data"] = data;
    }
    serde_json::json!({ "jsonrpc": "2.0", "id": id, "error": error })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(value: Value) -> Result<Message, EnvelopeError> {
        Message::from_value(value)
    }

    #[test]
    fn request_keeps_id_as_sent() {
        let Message::Request(req) =
            decode(json!({"jsonrpc":"2.0","id":"abc","method":"ping"})).unwrap()
        else {
            panic!("not a request")
        };
        assert_eq!(req.id, RequestId::String("abc".into()));
        let Message::Request(req) =
            decode(json!({"jsonrpc":"2.0","id":7,"method":"ping","params":{}})).unwrap()
        else {
            panic!("not a request")
        };
        assert_eq!(req.id, RequestId::Number(7));
    }

    #[test]
    fn bodies_built_field_by_field_are_what_json_would_write() {
        let params = json!({"name": "echo", "arguments": {"n": 1.50}});
        let request = request_body(Some(json!(7)), "tools/call", params.clone());
        assert_eq!(
            request.to_string(),
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": params})
                .to_string()
        );
        let notification = request_body(None, "notifications/cancelled", json!({}));
        assert_eq!(
            notification.to_string(),
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}"#
        );
        let result = result_body(&RequestId::String("a".into()), json!({"ok": true}));
        assert_eq!(
            result.to_string(),
            r#"{"jsonrpc":"2.0","id":"a","result":{"ok":true}}"#
        );
    }

    #[test]
    fn notification_and_response() {
        assert!(matches!(
            decode(json!({"jsonrpc":"2.0","method":"notifications/initialized"})),
            Ok(Message::Notification { .. })
        ));
        assert!(matches!(
            decode(json!({"jsonrpc":"2.0","id":1,"result":{}})),
            Ok(Message::Response(_))
        ));
    }

    #[test]
    fn refusals_name_the_rule() {
        assert_eq!(decode(json!([])), Err(EnvelopeError::Batch));
        assert_eq!(
            decode(json!("x")).unwrap_err().code(),
            codes::INVALID_REQUEST
        );
        assert_eq!(
            decode(json!({"jsonrpc":"1.0","id":1,"method":"ping"}))
                .unwrap_err()
                .code(),
            codes::INVALID_REQUEST
        );
        for bad_id in [json!(null), json!(1.5), json!({}), json!([1])] {
            assert_eq!(
                decode(json!({"jsonrpc":"2.0","id":bad_id,"method":"ping"}))
                    .unwrap_err()
                    .code(),
                codes::INVALID_REQUEST
            );
        }
        assert_eq!(
            decode(json!({"jsonrpc":"2.0","id":1,"method":5}))
                .unwrap_err()
                .code(),
            codes::INVALID_REQUEST
        );
        assert_eq!(
            decode(json!({"jsonrpc":"2.0","id":1,"method":"ping","params":[1]}))
                .unwrap_err()
                .code(),
            codes::INVALID_PARAMS
        );
        assert_eq!(
            decode(json!({"jsonrpc":"2.0"})).unwrap_err().code(),
            codes::INVALID_REQUEST
        );
    }
}
