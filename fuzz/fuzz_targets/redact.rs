//! Redaction, on any text with a secret planted in it.
//!
//! Invariants: a secret of a shape Warden knows (its own keys, `sk-…`, GitHub tokens,
//! JWTs, AWS key ids), planted anywhere in any text, never survives `redact::text`, nor
//! a JSON document's redaction. (Redacting twice may take more than once: a value the
//! first pass cut at `&` can read as a named secret's the second time. That hides
//! more, never less, and is not asserted.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// A secret of each shape, built from the fuzzer's bytes so that it varies.
fn secrets(seed: &[u8]) -> Vec<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let body: String = (0..40)
        .map(|i| {
            let b = seed.get(i).copied().unwrap_or(i as u8);
            ALPHABET[usize::from(b) % ALPHABET.len()] as char
        })
        .collect();
    // Keys carry a digit and a letter (what tells a key from a word like `task-…`).
    let body = format!("{}7q", &body[..30]);
    vec![
        format!("wdn_{body}"),
        format!("sk-{body}"),
        format!("ghp_{body}"),
        format!("eyJ{}.eyJ{}.{}", &body[..10], &body[10..20], &body[20..]),
        format!("AKIA{}", body[..16].to_ascii_uppercase()),
    ]
}

fuzz_target!(|input: &[u8]| {
    let Some((&at, rest)) = input.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let cut = text
        .char_indices()
        .map(|(i, _)| i)
        .nth(usize::from(at))
        .unwrap_or(text.len());
    for secret in secrets(rest) {
        // The text may already hold the secret, glued to a word where no shape can tell
        // it from one; what is planted here stands on its own.
        if text.contains(&secret) {
            continue;
        }
        // Surrounded by spaces, as free text puts it; glued forms are the shapes' own
        // business (`\b` boundaries) and are checked by the unit tests.
        let planted = format!("{} {secret} {}", &text[..cut], &text[cut..]);
        let redacted = warden_redact::text(&planted);
        assert!(
            !redacted.contains(&secret),
            "{secret} survived in {redacted:?}"
        );
        let mut document = json!({ "note": planted, "nested": [{ "x": secret }] });
        warden_redact::json(&mut document);
        let written = document.to_string();
        assert!(!written.contains(&secret), "{secret} survived in {written}");
        if let Value::String(note) = &document["note"] {
            assert!(!note.contains(&secret));
        }
    }
});
