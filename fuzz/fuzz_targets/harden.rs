//! Result hardening, on any text and any message an upstream may send.
//!
//! Invariants: cleaning is a fixed point (cleaning again changes nothing) and leaves no
//! hidden character; a hardened message holds no hidden character in any string, and
//! hardening it again changes none of its strings' cleanliness; from an untrusted
//! upstream, every prose string is wrapped once, and the data inside cannot close or
//! open a wrapper of its own.

#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use warden_policy::{Hardening, clean_text, harden_message, hides_characters};

const OPEN: &str = "<untrusted-data";
const CLOSE: &str = "</untrusted-data>";

/// Whether `data` holds a tag of the wrapper: `<`, blanks, an optional `/`, blanks,
/// `untrusted-data`, in any letter case.
fn names_the_wrapper(data: &str) -> bool {
    let lower = data.to_lowercase();
    lower.match_indices('<').any(|(at, _)| {
        let rest = lower[at + 1..].trim_start();
        let rest = rest.strip_prefix('/').unwrap_or(rest).trim_start();
        rest.starts_with("untrusted-data")
    })
}

/// Every string value in `value`, with whether `harden_message` treats it as prose.
fn strings<'a>(value: &'a Value, prose: bool, out: &mut Vec<(&'a str, bool)>) {
    match value {
        Value::String(text) => out.push((text, prose)),
        Value::Array(items) => items.iter().for_each(|item| strings(item, prose, out)),
        Value::Object(map) => {
            for (key, item) in map {
                if key == "structuredContent" {
                    // Data for programs: cleaned, never wrapped.
                    plain_strings(item, out);
                } else {
                    let prose = ["text", "description", "message", "title", "instructions"]
                        .contains(&key.as_str());
                    strings(item, prose, out);
                }
            }
        }
        _ => {}
    }
}

/// Every string in `value`, none of them prose.
fn plain_strings<'a>(value: &'a Value, out: &mut Vec<(&'a str, bool)>) {
    match value {
        Value::String(text) => out.push((text, false)),
        Value::Array(items) => items.iter().for_each(|item| plain_strings(item, out)),
        Value::Object(map) => map.values().for_each(|item| plain_strings(item, out)),
        _ => {}
    }
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let clean = clean_text(text);
    assert_eq!(clean_text(&clean), clean, "cleaning is a fixed point");
    assert!(!hides_characters(&clean), "{clean:?}");

    let Ok(mut message) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let hardening = Hardening {
        max_result_bytes: 512,
        untrusted_origin: Some("tool t of upstream u".into()),
    };
    harden_message(&mut message, &hardening);
    let mut found = Vec::new();
    strings(&message, false, &mut found);
    for (text, prose) in found {
        assert!(!hides_characters(text), "{text:?}");
        if prose {
            assert!(text.starts_with(OPEN) && text.ends_with(CLOSE), "{text:?}");
            let inside = &text[text.find('>').map_or(0, |at| at + 1)..text.len() - CLOSE.len()];
            assert!(
                !names_the_wrapper(inside),
                "the data opens or closes a wrapper: {text:?}"
            );
        }
    }
});
