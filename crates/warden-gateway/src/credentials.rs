//! Credentials belong in `Authorization: Bearer` and nowhere else. A key in a URL ends up
//! in proxy logs, browser history and `Referer` headers; a key in a body ends up in
//! upstream servers and tool results. Both are refused, and the refusal says where the
//! key goes instead.

use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};
use warden_proto::Message;
use warden_store::KEY_PREFIX;

use crate::error::GatewayError;

/// Query parameters that carry a credential in the usual conventions.
const QUERY_NAMES: [&str; 6] = ["api_key", "apikey", "key", "token", "access_token", "auth"];
/// Field names that carry a credential in a JSON body (compared with `-` as `_`,
/// case-insensitive), at any depth of the params, `_meta` and arguments included.
const BODY_NAMES: [&str; 9] = [
    "api_key",
    "apikey",
    "x_api_key",
    "access_token",
    "auth_token",
    "bearer",
    "bearer_token",
    "authorization",
    "id_token",
];
/// A Warden key is the prefix and 43 characters; shorter look-alikes are ordinary words.
const MIN_KEY_BODY: usize = 32;

/// Whether `name` is one of `names`, case-insensitive and with `-` as `_`, without
/// copying it (this runs on every key of every request body).
fn named_like(names: &[&str], name: &str) -> bool {
    let same = |a: u8, b: u8| {
        let fold = |c: u8| {
            if c == b'-' {
                b'_'
            } else {
                c.to_ascii_lowercase()
            }
        };
        fold(a) == fold(b)
    };
    names.iter().any(|known| {
        known.len() == name.len() && known.bytes().zip(name.bytes()).all(|(a, b)| same(a, b))
    })
}

/// Whether some word of `text` is shaped like a Warden key.
pub(crate) fn looks_like_key(text: &str) -> bool {
    // Most strings hold no prefix at all: one substring search rules them out before the
    // character-by-character split.
    text.contains(KEY_PREFIX)
        && text
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .any(|word| {
                word.strip_prefix(KEY_PREFIX)
                    .is_some_and(|rest| rest.len() >= MIN_KEY_BODY)
            })
}

fn in_query(query: &str) -> bool {
    form_urlencoded::parse(query.as_bytes())
        .any(|(name, value)| named_like(&QUERY_NAMES, &name) || looks_like_key(&value))
}

/// Whether any message a client sends carries a credential: a request's or a
/// notification's params, or an answer to an upstream's request (its result or error),
/// which would go on to that upstream.
pub(crate) fn in_message(message: &Message) -> bool {
    match message {
        Message::Request(request) => in_params(&request.params),
        Message::Notification { params, .. } => in_params(params),
        Message::Response(response) => match &response.outcome {
            Ok(value) | Err(value) => in_value(value),
        },
    }
}

/// Whether params carry a credential: a field named like one, or a value shaped like a
/// Warden key.
fn in_params(params: &Map<String, Value>) -> bool {
    params
        .iter()
        .any(|(name, value)| named_like(&BODY_NAMES, name) || in_value(value))
}

fn in_value(value: &Value) -> bool {
    match value {
        Value::String(text) => looks_like_key(text),
        Value::Array(items) => items.iter().any(in_value),
        Value::Object(object) => in_params(object),
        _ => false,
    }
}

/// Refuses any request whose URL carries a credential, before authentication looks at
/// anything (and before anything could log the URL).
/// A step of the front door: a credential in the query string is refused on every
/// path, before anything reads it (the refusal, if any).
pub(crate) fn refuse_in_url(request: &Request) -> Option<Response> {
    request
        .uri()
        .query()
        .is_some_and(in_query)
        .then(|| GatewayError::CredentialsInUrl.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const KEY: &str = "wdn_RaF-XK9e1I-4f3sdiUD2odt-HFjkHcKGQIzpn98v0iw";

    #[test]
    fn query_credentials_are_found_by_name_or_shape() {
        for query in [
            "api_key=x",
            "APIKEY=x",
            "key=",
            "a=1&token=abc",
            "access_token=abc",
            "auth=abc",
            &format!("q={KEY}"),
            &format!("q=Bearer%20{KEY}"),
        ] {
            assert!(in_query(query), "{query}");
        }
        for query in ["page=2", "q=wdn_short", "monkey=1"] {
            assert!(!in_query(query), "{query}");
        }
    }

    #[test]
    fn body_credentials_are_found_at_any_depth() {
        let found = |params: Value| in_params(params.as_object().unwrap());
        assert!(found(json!({"api_key": "x"})));
        assert!(found(json!({"_meta": {"Authorization": "x"}})));
        assert!(found(
            json!({"name": "t", "arguments": {"nested": [{"X-Api-Key": "x"}]}})
        ));
        assert!(found(
            json!({"name": "t", "arguments": {"text": format!("my key is {KEY}")}})
        ));
        assert!(!found(
            json!({"name": "t", "arguments": {"key": "a", "token_count": 3}})
        ));
        assert!(!found(json!({"_meta": {"progressToken": "p1"}})));
    }

    #[test]
    fn answers_and_notifications_are_checked_too() {
        let message = |value: Value| Message::from_value(value).unwrap();
        for carrying in [
            json!({"jsonrpc": "2.0", "id": "warden-1", "result": {"action": "accept", "content": {"name": KEY}}}),
            json!({"jsonrpc": "2.0", "id": "warden-1", "result": {"action": "accept", "content": {"api_key": "x"}}}),
            json!({"jsonrpc": "2.0", "id": "warden-1", "error": {"code": 1, "message": format!("use {KEY}")}}),
            json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": 1, "message": KEY}}),
        ] {
            assert!(in_message(&message(carrying.clone())), "{carrying}");
        }
        let clean = json!({"jsonrpc": "2.0", "id": "warden-1", "result": {"action": "accept", "content": {"name": "Ada"}}});
        assert!(!in_message(&message(clean)));
    }
}
