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

use regex::{Regex, RegexSet};
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
static SHAPES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&shapes()).expect("the shapes compile"));

fn shapes() -> String {
    let shapes = [
        // PEM private keys, the whole block (and a block's first line on its own: the
        // rest may follow on other lines, see `LineRedactor`).
        r"-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----(?:[\s\S]*?-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----)?",
        // Warden keys.
        r"wdn_[A-Za-z0-9_\-]{16,}",
        // JWTs: three base64url parts, the first two JSON objects.
        r"eyJ[A-Za-z0-9_\-]{5,}\.eyJ[A-Za-z0-9_\-]{5,}\.[A-Za-z0-9_\-]*",
        // OpenAI / Anthropic style keys, also glued to a word (see `looks_random`).
        r"sk-[A-Za-z0-9_\-]{16,}",
        // Stripe secret and restricted keys.
        r"(?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}",
        // Google API keys.
        r"AIza[0-9A-Za-z_\-]{35}",
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
    shapes.join("|")
}

/// A secret's name in prose, then its value: `password is hunter2`, `the API key was
/// abc123`.
static PROSE_NAMED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(PROSE_NAMED_PATTERN).expect("compiles"));
const PROSE_NAMED_PATTERN: &str = r"(?i)\b((?:password|passwd|passphrase|secret|api[ _\-]?key|access[ _\-]?key|token)\s+(?:is|was|of)\s+)([^\s\x22',;]+)";

/// Whether a `sk-` match is a key rather than a word that happens to contain `sk-`
/// (`task-management-…`): keys have a long run of letters and digits with a digit in it.
fn looks_random(found: &str) -> bool {
    found[3..].split(['-', '_']).any(|run| {
        run.len() >= 16
            && run.bytes().any(|b| b.is_ascii_digit())
            && run.bytes().any(|b| b.is_ascii_alphabetic())
    })
}

/// `scheme://user:password@host`: the password goes.
static URL_PASSWORD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(URL_PASSWORD_PATTERN).expect("compiles"));
const URL_PASSWORD_PATTERN: &str = r"([A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)([^\s@/]+)(@)";

/// `name=value`, `name: value`, `"name": "value"` where the name looks like a secret.
static NAMED: LazyLock<Regex> = LazyLock::new(|| Regex::new(NAMED_PATTERN).expect("compiles"));
const NAMED_PATTERN: &str = r#"(?i)(\\?["']?)([A-Za-z0-9_\-]*(?:password|passwd|secret|token|api[_\-]?key|apikey|authorization|cookie|credential|private[_\-]?key|connection[_\-]?string|access[_\-]?key)[A-Za-z0-9_\-]*)(\\?["']?\s*[:=]\s*\\?["']?)([^\s"'\\&,;}]+)"#;

/// Every rule above at once: most text has no secret, and one scan tells so where four
/// separate ones would each walk it.
static ANY: LazyLock<RegexSet> = LazyLock::new(|| {
    RegexSet::new([
        shapes().as_str(),
        PROSE_NAMED_PATTERN,
        URL_PASSWORD_PATTERN,
        NAMED_PATTERN,
    ])
    .expect("the rules compile")
});

/// `text` with every secret-looking value replaced.
pub fn text(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    if !ANY.is_match(text) {
        return out;
    }
    if SHAPES.is_match(&out) {
        out = Cow::Owned(
            SHAPES
                .replace_all(&out, |found: &regex::Captures<'_>| {
                    let found = &found[0];
                    if found.starts_with("sk-") && !looks_random(found) {
                        found.to_owned()
                    } else {
                        REDACTED.to_owned()
                    }
                })
                .into_owned(),
        );
    }
    if PROSE_NAMED.is_match(&out) {
        out = Cow::Owned(
            PROSE_NAMED
                .replace_all(&out, format!("${{1}}{REDACTED}"))
                .into_owned(),
        );
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

/// Redacts a stream of lines (a child's stderr), where a secret can span lines: a
/// private key block is dropped from its `BEGIN` line to its `END` line, whatever lies
/// between, and stands in the output as one redacted line.
#[derive(Debug, Default)]
pub struct LineRedactor {
    in_block: bool,
}

static BLOCK_BEGIN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----").expect("compiles")
});
static BLOCK_END: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----").expect("compiles"));

impl LineRedactor {
    /// The line as it may be written, or `None` when it is inside a secret block.
    pub fn line<'a>(&mut self, line: &'a str) -> Option<Cow<'a, str>> {
        if self.in_block {
            if BLOCK_END.is_match(line) {
                self.in_block = false;
            }
            return None;
        }
        if let Some(begin) = BLOCK_BEGIN.find(line)
            && !BLOCK_END.is_match(&line[begin.end()..])
        {
            // The block goes on past this line: what came before it is kept.
            self.in_block = true;
            let before = text(&line[..begin.start()]).into_owned();
            return Some(Cow::Owned(format!(
                "{before}{REDACTED} (private key block)"
            )));
        }
        Some(text(line))
    }
}

/// `text` with every character that could forge output written as an escape: control
/// characters (`\n`, `\r`, `\t`, `\x1b`, C1 controls), the Unicode line and paragraph
/// separators, and the bidirectional overrides that reorder what a terminal shows. One
/// field can then never become two lines, a terminal command or a reordered row.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    let forging = |c: char| {
        c.is_control()
            || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(forging) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if forging(c) && u32::from(c) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if forging(c) => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
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

    #[test]
    fn new_shapes_and_prose_go_and_words_stay() {
        for (line, secret) in [
            (
                "key=sk_live_4eC39HqLyjWDarjtT1zdp7dc next",
                "4eC39HqLyjWDarjtT1zdp7dc",
            ),
            ("rk_test_51HaBcDeFgHiJkLmNoP next", "51HaBcDeFgHiJkLmNoP"),
            (
                "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q next",
                "SyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q",
            ),
            (
                "mykeysk-proj-Ab12Cd34Ef56Gh78Ij90 next",
                "Ab12Cd34Ef56Gh78Ij90",
            ),
            ("the password is hunter2 next", "hunter2"),
            ("Your API key was abc123XYZ next", "abc123XYZ"),
        ] {
            let redacted = text(line);
            assert!(!redacted.contains(secret), "{line}: {redacted}");
            assert!(redacted.ends_with(" next"), "{redacted}");
        }
        for plain in [
            "ask-questions-and-get-answers-quickly",
            "a task-management-system-for-teams",
            "the password is",
        ] {
            assert_eq!(text(plain), plain);
        }
    }

    #[test]
    fn a_private_key_over_several_lines_is_dropped_whole() {
        let mut lines = LineRedactor::default();
        let stderr = "starting\nloaded -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nq83vEjW6Oe\n-----END RSA PRIVATE KEY-----\nready";
        let out: Vec<String> = stderr
            .lines()
            .filter_map(|line| lines.line(line).map(Cow::into_owned))
            .collect();
        assert_eq!(
            out,
            ["starting", "loaded [REDACTED] (private key block)", "ready"]
        );
    }

    #[test]
    fn controls_are_escaped_and_nothing_else_changes() {
        assert_eq!(
            escape_controls("a\nb\r\tc\u{1b}[2Jd\u{85}e\u{2028}f\u{202e}g"),
            "a\\nb\\r\\tc\\x1b[2Jd\\x85e\\u{2028}f\\u{202e}g"
        );
        assert!(matches!(escape_controls("plain é ✓"), Cow::Borrowed(_)));
    }
}
