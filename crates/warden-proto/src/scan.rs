//! Caps checked on the raw bytes, before any JSON parser builds a tree: nesting depth,
//! string length, array length, object size, total values, and duplicate object keys.
//! One pass, no allocation beyond the key sets of the objects open at once, so a 10 MB
//! string or 100,000-deep nesting costs a scan of the bytes and nothing more.
//!
//! The scan checks the syntax it walks through; what it accepts, `serde_json` parses.

use std::borrow::Cow;
use std::collections::HashSet;
use std::ops::Range;

/// The caps, each a maximum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    pub max_depth: usize,
    /// Decoded UTF-8 bytes of one string (object keys included).
    pub max_string_bytes: usize,
    pub max_array_items: usize,
    pub max_object_keys: usize,
    /// Values of any kind in the whole document.
    pub max_total_nodes: usize,
}

/// Which cap a document broke; its name is the configuration setting's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Depth,
    StringBytes,
    ArrayItems,
    ObjectKeys,
    TotalNodes,
}

impl Limit {
    pub fn name(self) -> &'static str {
        match self {
            Self::Depth => "max_depth",
            Self::StringBytes => "max_string_bytes",
            Self::ArrayItems => "max_array_items",
            Self::ObjectKeys => "max_object_keys",
            Self::TotalNodes => "max_total_nodes",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanFault {
    /// Not JSON.
    Syntax,
    Limit {
        limit: Limit,
        max: usize,
    },
    DuplicateKey,
}

/// A refused document: what was wrong, whether it was inside the top-level `params`,
/// and where the top-level `id` value stands if it was read before the fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanError {
    pub fault: ScanFault,
    pub in_params: bool,
    pub id: Option<Range<usize>>,
}

impl std::fmt::Display for ScanFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Syntax => f.write_str("the body is not valid JSON"),
            Self::Limit { limit, max } => {
                write!(f, "{} exceeded (the limit is {max})", limit.name())
            }
            Self::DuplicateKey => f.write_str("an object has the same key twice"),
        }
    }
}

enum Frame<'a> {
    Array { items: usize },
    Object { keys: Keys<'a> },
}

/// Objects with at most this many keys are checked for duplicates by comparison; larger
/// ones move their keys into a set.
const FEW_KEYS: usize = 16;

/// An object's keys so far, to refuse a duplicate. Most objects have a few keys, which a
/// comparison each tells apart faster than hashing them into a set would; past
/// [`FEW_KEYS`] a set takes over, so a large object still costs linear time.
#[derive(Default)]
struct Keys<'a> {
    few: Vec<Cow<'a, [u8]>>,
    many: Option<HashSet<Cow<'a, [u8]>>>,
}

impl<'a> Keys<'a> {
    fn len(&self) -> usize {
        self.many.as_ref().map_or(self.few.len(), HashSet::len)
    }

    /// Adds `key`; false when the object already has it.
    fn insert(&mut self, key: Cow<'a, [u8]>) -> bool {
        if let Some(many) = &mut self.many {
            return many.insert(key);
        }
        if self.few.contains(&key) {
            return false;
        }
        if self.few.len() < FEW_KEYS {
            self.few.push(key);
        } else {
            let mut many: HashSet<_> = self.few.drain(..).collect();
            many.insert(key);
            self.many = Some(many);
        }
        true
    }
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
    limits: &'a JsonLimits,
    nodes: usize,
    stack: Vec<Frame<'a>>,
    /// Inside the value of the top-level `params` member.
    in_params: bool,
    id: Option<Range<usize>>,
}

/// Checks `bytes` against `limits`. Accepts exactly one JSON value with optional
/// surrounding whitespace.
pub fn scan(bytes: &[u8], limits: &JsonLimits) -> Result<(), ScanError> {
    let mut scanner = Scanner {
        bytes,
        at: 0,
        limits,
        nodes: 0,
        stack: Vec::new(),
        in_params: false,
        id: None,
    };
    scanner.document().map_err(|fault| ScanError {
        fault,
        in_params: scanner.in_params,
        id: scanner.id.clone(),
    })
}

impl<'a> Scanner<'a> {
    fn document(&mut self) -> Result<(), ScanFault> {
        self.value()?;
        self.whitespace();
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(ScanFault::Syntax)
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, byte: u8) -> Result<(), ScanFault> {
        self.whitespace();
        if self.peek() == Some(byte) {
            self.at += 1;
            Ok(())
        } else {
            Err(ScanFault::Syntax)
        }
    }

    fn limit(&self, limit: Limit, max: usize) -> ScanFault {
        ScanFault::Limit { limit, max }
    }

    /// One value, iteratively: containers push a frame instead of recursing, so depth
    /// costs no stack.
    fn value(&mut self) -> Result<(), ScanFault> {
        loop {
            self.whitespace();
            self.count_node()?;
            match self.peek().ok_or(ScanFault::Syntax)? {
                b'{' => {
                    self.at += 1;
                    self.open(Frame::Object {
                        keys: Keys::default(),
                    })?;
                    self.whitespace();
                    if self.peek() == Some(b'}') {
                        self.at += 1;
                        self.stack.pop();
                    } else {
                        self.key()?;
                        continue;
                    }
                }
                b'[' => {
                    self.at += 1;
                    self.open(Frame::Array { items: 0 })?;
                    self.whitespace();
                    if self.peek() == Some(b']') {
                        self.at += 1;
                        self.stack.pop();
                    } else {
                        self.array_item()?;
                        continue;
                    }
                }
                b'"' => {
                    self.string()?;
                }
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                b'-' | b'0'..=b'9' => self.number()?,
                _ => return Err(ScanFault::Syntax),
            }
            // A value ended: close containers until one expects another member.
            loop {
                if self.stack.len() == 1 {
                    self.end_of_top_member();
                }
                let Some(frame) = self.stack.last() else {
                    return Ok(());
                };
                let is_object = matches!(frame, Frame::Object { .. });
                self.whitespace();
                match (self.peek(), is_object) {
                    (Some(b','), true) => {
                        self.at += 1;
                        self.key()?;
                        break;
                    }
                    (Some(b','), false) => {
                        self.at += 1;
                        self.array_item()?;
                        break;
                    }
                    (Some(b'}'), true) | (Some(b']'), false) => {
                        self.at += 1;
                        self.stack.pop();
                    }
                    _ => return Err(ScanFault::Syntax),
                }
            }
        }
    }

    fn count_node(&mut self) -> Result<(), ScanFault> {
        self.nodes += 1;
        if self.nodes > self.limits.max_total_nodes {
            return Err(self.limit(Limit::TotalNodes, self.limits.max_total_nodes));
        }
        Ok(())
    }

    fn open(&mut self, frame: Frame<'a>) -> Result<(), ScanFault> {
        if self.stack.len() >= self.limits.max_depth {
            return Err(self.limit(Limit::Depth, self.limits.max_depth));
        }
        self.stack.push(frame);
        Ok(())
    }

    fn array_item(&mut self) -> Result<(), ScanFault> {
        let max = self.limits.max_array_items;
        if let Some(Frame::Array { items }) = self.stack.last_mut() {
            *items += 1;
            if *items > max {
                return Err(self.limit(Limit::ArrayItems, max));
            }
        }
        Ok(())
    }

    /// A member's key and its colon; the value follows.
    fn key(&mut self) -> Result<(), ScanFault> {
        self.whitespace();
        if self.peek() != Some(b'"') {
            return Err(ScanFault::Syntax);
        }
        let raw = self.string()?;
        self.expect(b':')?;
        let top = self.stack.len() == 1;
        let max = self.limits.max_object_keys;
        let Some(Frame::Object { keys }) = self.stack.last_mut() else {
            return Err(ScanFault::Syntax);
        };
        if keys.len() >= max {
            return Err(ScanFault::Limit {
                limit: Limit::ObjectKeys,
                max,
            });
        }
        let key = decoded(raw)?;
        if top {
            self.whitespace();
            if key.as_ref() == b"params" {
                self.in_params = true;
            } else if key.as_ref() == b"id" {
                self.id = Some(self.at..self.value_end_hint());
            }
        }
        let Some(Frame::Object { keys }) = self.stack.last_mut() else {
            return Err(ScanFault::Syntax);
        };
        if !keys.insert(key) {
            return Err(ScanFault::DuplicateKey);
        }
        Ok(())
    }

    /// Where a scalar starting here ends (for the top-level id; a container id is
    /// invalid anyway and yields a span the id decoder refuses).
    fn value_end_hint(&self) -> usize {
        let rest = &self.bytes[self.at..];
        let len = if rest.first() == Some(&b'"') {
            let mut escaped = false;
            rest.iter()
                .enumerate()
                .skip(1)
                .find(|&(_, &b)| {
                    let end = b == b'"' && !escaped;
                    escaped = b == b'\\' && !escaped;
                    end
                })
                .map_or(rest.len(), |(i, _)| i + 1)
        } else {
            rest.iter()
                .position(|b| matches!(b, b',' | b'}' | b' ' | b'\n' | b'\r' | b'\t'))
                .unwrap_or(rest.len())
        };
        self.at + len
    }

    fn end_of_top_member(&mut self) {
        self.in_params = false;
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), ScanFault> {
        if self.bytes[self.at..].starts_with(word) {
            self.at += word.len();
            Ok(())
        } else {
            Err(ScanFault::Syntax)
        }
    }

    fn number(&mut self) -> Result<(), ScanFault> {
        let start = self.at;
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        let digits = |s: &mut Self| {
            let from = s.at;
            while matches!(s.peek(), Some(b'0'..=b'9')) {
                s.at += 1;
            }
            s.at - from
        };
        let int_start = self.at;
        let int = digits(self);
        if int == 0 || (int > 1 && self.bytes[int_start] == b'0') {
            return Err(ScanFault::Syntax);
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            if digits(self) == 0 {
                return Err(ScanFault::Syntax);
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if digits(self) == 0 {
                return Err(ScanFault::Syntax);
            }
        }
        // A number is a value too; its text is bounded like a string's.
        if self.at - start > self.limits.max_string_bytes {
            return Err(self.limit(Limit::StringBytes, self.limits.max_string_bytes));
        }
        Ok(())
    }

    /// A string, checked for syntax and decoded length; returns its raw bytes between
    /// the quotes. A `\u` escape is four hex digits, surrogates come in pairs and the
    /// text is UTF-8, as the parser that reads the document next requires.
    fn string(&mut self) -> Result<&'a [u8], ScanFault> {
        let bytes = self.bytes;
        self.at += 1;
        let start = self.at;
        let max = self.limits.max_string_bytes;
        let mut decoded = 0usize;
        // After a high surrogate, only its low half may follow.
        let mut high_surrogate = false;
        let mut ascii = true;
        loop {
            if !high_surrogate {
                // A run of plain characters, the common case, in one pass (never past
                // the first byte over the limit).
                let room = max.saturating_sub(decoded).saturating_add(1);
                let window = &bytes[self.at..bytes.len().min(self.at.saturating_add(room))];
                let run = window
                    .iter()
                    .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                    .unwrap_or(window.len());
                ascii &= window[..run].is_ascii();
                decoded += run;
                self.at += run;
                if decoded > max {
                    return Err(ScanFault::Limit {
                        limit: Limit::StringBytes,
                        max,
                    });
                }
            }
            let byte = *bytes.get(self.at).ok_or(ScanFault::Syntax)?;
            let escape = bytes.get(self.at + 1).copied();
            if high_surrogate && (byte != b'\\' || escape != Some(b'u')) {
                return Err(ScanFault::Syntax);
            }
            match byte {
                b'"' => {
                    self.at += 1;
                    let raw = &bytes[start..self.at - 1];
                    if !ascii && std::str::from_utf8(raw).is_err() {
                        return Err(ScanFault::Syntax);
                    }
                    return Ok(raw);
                }
                b'\\' => {
                    let escape = escape.ok_or(ScanFault::Syntax)?;
                    if escape == b'u' {
                        let unit = bytes
                            .get(self.at + 2..self.at + 6)
                            .and_then(hex_unit)
                            .ok_or(ScanFault::Syntax)?;
                        let low = (0xdc00..=0xdfff).contains(&unit);
                        if low != high_surrogate {
                            return Err(ScanFault::Syntax);
                        }
                        high_surrogate = (0xd800..=0xdbff).contains(&unit);
                        decoded += match unit {
                            0..=0x7f => 1,
                            0x80..=0x7ff => 2,
                            // A surrogate pair encodes one 4-byte character: 2 + 2.
                            0xd800..=0xdfff => 2,
                            _ => 3,
                        };
                        self.at += 6;
                    } else if matches!(
                        escape,
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't'
                    ) {
                        decoded += 1;
                        self.at += 2;
                    } else {
                        return Err(ScanFault::Syntax);
                    }
                }
                0x00..=0x1f => return Err(ScanFault::Syntax),
                _ => {
                    ascii &= byte.is_ascii();
                    decoded += 1;
                    self.at += 1;
                }
            }
            if decoded > max {
                return Err(ScanFault::Limit {
                    limit: Limit::StringBytes,
                    max,
                });
            }
        }
    }
}

/// Four hex digits (no sign, no fewer), as a UTF-16 code unit.
fn hex_unit(digits: &[u8]) -> Option<u16> {
    if digits.len() != 4 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
}

/// A key as the parser will see it: escapes decoded, so `"a"` and `"\u0061"` collide.
fn decoded(raw: &[u8]) -> Result<Cow<'_, [u8]>, ScanFault> {
    if !raw.contains(&b'\\') {
        return Ok(Cow::Borrowed(raw));
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    let text: String = serde_json::from_slice(&quoted).map_err(|_| ScanFault::Syntax)?;
    Ok(Cow::Owned(text.into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: JsonLimits = JsonLimits {
        max_depth: 4,
        max_string_bytes: 8,
        max_array_items: 3,
        max_object_keys: 3,
        max_total_nodes: 20,
    };

    fn fault(text: &str) -> Option<ScanFault> {
        scan(text.as_bytes(), &LIMITS).err().map(|e| e.fault)
    }

    fn limit(text: &str) -> Option<Limit> {
        match fault(text) {
            Some(ScanFault::Limit { limit, .. }) => Some(limit),
            _ => None,
        }
    }

    #[test]
    fn documents_within_the_caps_pass() {
        for text in [
            "{}",
            "[]",
            " {\"a\": [1, -2.5e3, true], \"b\": {\"c\": null}} ",
            "\"12345678\"",
            "\"\\u00e9\\u00e9\\u00e9\\u00e9\"",
            "[[[[]]]]",
            "0",
        ] {
            assert_eq!(fault(text), None, "{text}");
        }
    }

    #[test]
    fn each_cap_is_named() {
        assert_eq!(limit("[[[[[]]]]]"), Some(Limit::Depth));
        assert_eq!(limit("\"123456789\""), Some(Limit::StringBytes));
        assert_eq!(limit("{\"123456789\": 1}"), Some(Limit::StringBytes));
        assert_eq!(
            limit("\"\\u00e9\\u00e9\\u00e9\\u00e9\\u00e9\""),
            Some(Limit::StringBytes)
        );
        assert_eq!(limit("1234567890"), Some(Limit::StringBytes));
        assert_eq!(limit("[1, 2, 3, 4]"), Some(Limit::ArrayItems));
        assert_eq!(
            limit("{\"a\":1,\"b\":2,\"c\":3,\"d\":4}"),
            Some(Limit::ObjectKeys)
        );
        assert_eq!(
            limit("[[1,2,3],[1,2,3],[1,2,3],[1,2]]"),
            Some(Limit::ArrayItems)
        );
        assert_eq!(limit("[[1,2,3],[1,2,3],[1,2,3]]"), None);
        assert_eq!(
            limit("[[1,2,3],[1,2,3],{\"a\":[1,2,3],\"b\":[1,2,3],\"c\":[1,2]}]"),
            Some(Limit::TotalNodes)
        );
    }

    #[test]
    fn duplicate_keys_are_refused_even_when_escaped() {
        assert_eq!(fault("{\"a\":1,\"a\":2}"), Some(ScanFault::DuplicateKey));
        assert_eq!(
            fault("{\"a\":1,\"\\u0061\":2}"),
            Some(ScanFault::DuplicateKey)
        );
        assert_eq!(fault("{\"a\":{\"a\":1},\"b\":{\"a\":1}}"), None);
    }

    #[test]
    fn a_limit_as_large_as_memory_is_no_limit() {
        let limits = JsonLimits {
            max_string_bytes: usize::MAX,
            ..LIMITS
        };
        let text = "{\"a\": \"plain text \\u00e9 \\n more\"}";
        assert!(scan(text.as_bytes(), &limits).is_ok());
    }

    #[test]
    fn duplicate_keys_are_refused_in_objects_of_any_size() {
        let limits = JsonLimits {
            max_object_keys: 100,
            max_total_nodes: 1000,
            ..LIMITS
        };
        let object = |keys: &[String]| {
            let members: Vec<String> = keys.iter().map(|key| format!("\"{key}\":0")).collect();
            format!("{{{}}}", members.join(","))
        };
        let fault = |text: String| scan(text.as_bytes(), &limits).err().map(|e| e.fault);
        // Past FEW_KEYS the keys move into a set; a duplicate is found on either side.
        let keys: Vec<String> = (0..40).map(|n| format!("k{n}")).collect();
        assert_eq!(fault(object(&keys)), None);
        for repeated in [0, FEW_KEYS - 1, FEW_KEYS, 39] {
            let mut with = keys.clone();
            with.push(keys[repeated].clone());
            assert_eq!(
                fault(object(&with)),
                Some(ScanFault::DuplicateKey),
                "{repeated}"
            );
            let mut early = keys[..=repeated].to_vec();
            early.push(format!("\\u006b{}", &keys[repeated][1..]));
            assert_eq!(
                fault(object(&early)),
                Some(ScanFault::DuplicateKey),
                "{repeated}"
            );
        }
    }

    #[test]
    fn strings_are_utf8() {
        let fault = |bytes: &[u8]| scan(bytes, &LIMITS).err().map(|e| e.fault);
        assert_eq!(fault(b"\"\xff\""), Some(ScanFault::Syntax));
        assert_eq!(fault(b"\"\xc3\""), Some(ScanFault::Syntax));
        assert_eq!(fault("\"é\"".as_bytes()), None);
    }

    #[test]
    fn surrogate_pairs_pass() {
        assert_eq!(fault("\"\\ud83d\\ude00 \\u00e9\""), None);
        let parsed: serde_json::Value = serde_json::from_str("\"\\ud83d\\ude00\"").unwrap();
        assert_eq!(parsed, "\u{1f600}");
    }

    #[test]
    fn broken_syntax_is_refused() {
        for text in [
            "",
            "{",
            "}",
            "[1,]",
            "{\"a\"}",
            "{\"a\":}",
            "{a:1}",
            "01",
            "1.",
            "-",
            "1e",
            "tru",
            "\"\\x\"",
            "\"\\u12\"",
            // What the parser refuses after the scan: signs, lone or unpaired surrogates.
            "\"\\u+fff\"",
            "\"\\ud800\"",
            "\"\\udc00\"",
            "\"\\ud800x\"",
            "\"\\ud800\\n\"",
            "\"\\ud800\\u0041\"",
            "\"a",
            "[1 2]",
            "{} {}",
            "\"\u{1}\"",
            "{\"a\":1,}",
        ] {
            assert_eq!(fault(text), Some(ScanFault::Syntax), "{text:?}");
        }
    }

    #[test]
    fn a_fault_inside_params_is_told_apart_and_the_id_is_kept() {
        let limits = JsonLimits {
            max_object_keys: 8,
            ..LIMITS
        };
        let text = r#"{"jsonrpc":"2.0","id":"x-1","method":"m","params":{"deep":[[[[1]]]]}}"#;
        let error = scan(text.as_bytes(), &limits).unwrap_err();
        assert_eq!(
            error.fault,
            ScanFault::Limit {
                limit: Limit::Depth,
                max: 4
            }
        );
        assert!(error.in_params);
        assert_eq!(&text[error.id.unwrap()], "\"x-1\"");
        let outside = r#"{"id":7,"params":{},"x":[[[[1]]]]}"#;
        let error = scan(outside.as_bytes(), &limits).unwrap_err();
        assert!(!error.in_params);
        assert_eq!(&outside[error.id.unwrap()], "7");
    }

    #[test]
    fn huge_inputs_cost_a_scan_and_fail_early() {
        let deep = "[".repeat(100_000);
        assert_eq!(limit(&deep), Some(Limit::Depth));
        let long = format!("\"{}\"", "a".repeat(10_000_000));
        assert_eq!(limit(&long), Some(Limit::StringBytes));
    }
}
