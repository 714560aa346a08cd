//! The one redaction rule set for everything Warden writes: log lines, audit rows,
//! error messages, upstream stderr, anything exported. Two kinds of rule:
//!
//! - **by name**: a JSON field, query parameter, header or `name=value` pair whose name
//!   looks like a secret (`*_key`, `*_token`, `*_secret`, `password`, `authorization`,
//!   `cookie`, `credential`, `connection_string`, …) has its value replaced;
//! - **by shape**: a value that looks like a secret wherever it stands (Warden keys,
//!   JWTs, `sk-…`, GitHub and Slack tokens, AWS access key ids, PEM private key blocks,
//!   URLs with a password, `Bearer` credentials).
//!
//! What replaces a secret is [`REDACTED`]; nothing of the secret is kept, not even a
//! prefix.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

pub const REDACTED: &str = "[REDACTED]";

/// Whether a field, header or parameter name says its value is a secret.
pub fn is_secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase().replace('-', "_");
    const EXACT: [&str; 14] = [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "authorization",
        "auth",
        "api_key",
        "apikey",
        "cookie",
        "set_cookie",
        "credential",
        "credentials",
        "connection_string",
    ];
    const SUFFIXES: [&str; 6] = [
        "_key",
        "_token",
        "_secret",
        "_password",
        "_credential",
        "_pass",
    ];
    EXACT.contains(&name.as_str())
        || SUFFIXES.iter().any(|s| name.ends_with(s))
        || name.contains("private_key")
        || name.contains("connection_string")
        || name.starts_with("x_api_key")
}

/// Secret shapes, in one alternation so a line is scanned once.
static SHAPES: LazyLock<Regex> = LazyLock::new(|| {
    let shapes = [
        // PEM private keys, the whole block.
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----",
        // Warden keys.
        r"wdn_[A-Za-z0-9_\-]{16,}",
        // JWTs: three base64url parts, the first two JSON objects.
        r"eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*",
        // OpenAI / Anthropic style keys.
        r"\bsk-[A-Za-z0-9_\-]{16,}",
        // GitHub tokens.
        r"\b(?:ghp|gho|ghs|ghu|ghr)_[A-Za-z0-9]{20,}",
        r"\bgithub_pat_[A-Za-z0-9_]{20,}",
        // Slack tokens.
        r"\bxox[abposr]-[A-Za-z0-9\-]{10,}",
        // AWS access key ids.
        r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        // Bearer and Basic credentials in free text.
        r"(?i)\b(?:bearer|basic)\s+[A-Za-z0-9._~+/=\-]{8,}",
    ];
    Regex::new(&shapes.join("|")).expect("the shapes compile")
});

/// `scheme://user:password@host`: the password goes.
static URL_PASSWORD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)([^\s@/]+)(@)").expect("compiles")
});

/// `name=value`, `name: value`, `"name": "value"` where the name looks like a secret.
static NAMED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)(\\?["']?)([A-Za-z0-9_\-]*(?:password|passwd|secret|token|api[_\-]?key|apikey|authorization|cookie|credential|private[_\-]?key|connection[_\-]?string|access[_\-]?key)[A-Za-z0-9_\-]*)(\\?["']?\s*[:=]\s*\\?["']?)([^\s"'\\&,;}]+)"#,
    )
    .expect("compiles")
});

/// `text` with every secret-looking value replaced.
pub fn text(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    if SHAPES.is_match(&out) {
        out = Cow::Owned(SHAPES.replace_all(&out, REDACTED).into_owned());
    }
    if URL_PASSWORD.is_match(&out) {
        out = Cow::Owned(
            URL_PASSWORD
                .replace_all(&out, format!("${{1}}{REDACTED}${{3}}"))
                .into_owned(),
        );
    }
    if NAMED.is_match(&out) {
        out = Cow::Owned(
            NAMED
                .replace_all(&out, |c: &regex::Captures<'_>| {
                    format!("{}{}{}{REDACTED}", &c[1], &c[2], &c[3])
                })
                .into_owned(),
        );
    }
    out
}

/// Redacts a JSON value in place: secret-named fields lose their value, every string
/// is checked for secret shapes.
pub fn json(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(redacted) = text(s) {
                *s = redacted;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(json),
        Value::Object(map) => {
            for (name, item) in map.iter_mut() {
                if is_secret_name(name) && !item.is_null() {
                    *item = Value::String(REDACTED.to_owned());
                } else {
                    json(item);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secret_shapes_go_wherever_they_stand() {
        for secret in [
            "wdn_3kq9ZPL0aa81mDnq7Tq0pWlHcYv2L3sJvE5rT6yU",
            "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
            "sk-proj-abcdefghijklmnop1234",
            "ghp_abcdefghijklmnopqrstuvwxyz0123",
            "github_pat_11ABCDEFG0123456789_abcdef",
            "xoxb-1234567890-abcdefghij",
            "AKIAIOSFODNN7EXAMPLE",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
            "Bearer abcdefgh12345678",
        ] {
            let line = format!("before {secret} after");
            let redacted = text(&line);
            assert!(!redacted.contains(secret), "{secret}: {redacted}");
            assert!(
                redacted.starts_with("before ") && redacted.ends_with(" after"),
                "{redacted}"
            );
        }
        let url = text("connecting to postgres://app:hunter2-canary@db:5432/x");
        assert_eq!(url, "connecting to postgres://app:[REDACTED]@db:5432/x");
    }

    #[test]
    fn secret_names_take_their_values_with_them() {
        for line in [
            "password=hunter2 next",
            "db_password: hunter2 next",
            "\"api_key\": \"hunter2\" next",
            "GITHUB_TOKEN=hunter2 next",
            "client_secret=hunter2&next",
            "Authorization: hunter2 next",
            // As a JSON log line carries them: quotes escaped.
            "{\\\"api_key\\\":\\\"hunter2\\\"} next",
            "stderr=\"password=\\\"hunter2\\\" next\"",
        ] {
            let redacted = text(line);
            assert!(!redacted.contains("hunter2"), "{line}: {redacted}");
            assert!(redacted.contains("next"), "{redacted}");
        }
        assert_eq!(text("nothing to see here"), "nothing to see here");
        assert!(matches!(text("plain line"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_fields_by_name_and_strings_by_shape() {
        let mut value = json!({
            "query": "notes about AKIAIOSFODNN7EXAMPLE",
            "API_KEY": "anything",
            "nested": {"refresh_token": "x", "Private_Key": {"k": 1}, "title": "fine"},
            "list": ["wdn_3kq9ZPL0aa81mDnq7Tq0pWlHcYv2L3sJvE5rT6yU"],
            "password": null
        });
        json(&mut value);
        assert_eq!(value["query"], "notes about [REDACTED]");
        assert_eq!(value["API_KEY"], REDACTED);
        assert_eq!(value["nested"]["refresh_token"], REDACTED);
        assert_eq!(value["nested"]["Private_Key"], REDACTED);
        assert_eq!(value["nested"]["title"], "fine");
        assert_eq!(value["list"][0], REDACTED);
        assert!(value["password"].is_null());
        for name in ["x-api-key", "session_token", "connection_string", "cookie"] {
            assert!(is_secret_name(name), "{name}");
        }
        for name in ["title", "key_id", "monkey", "tokens_used"] {
            assert!(!is_secret_name(name), "{name}");
        }
    }
}
