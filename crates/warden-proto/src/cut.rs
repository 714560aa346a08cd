//! Upstream messages read as a stream and cut as they arrive, so that a 50 MB tool
//! result costs a bounded amount of memory instead of 50 MB and more.
//!
//! A [`MessageCutter`] is given a message's bytes in pieces, as they come off a pipe or
//! a socket, and keeps:
//! - everything outside prose strings, as it came, up to `max_bytes` in all;
//! - the strings under prose keys (`text`, `description`, `message`, `title`,
//!   `instructions`, outside `structuredContent`), up to `prose_bytes` of them in all.
//!   A prose string that does not fit is cut at a character boundary and ends with the
//!   same visible marker hardening uses, counting the bytes left out.
//!
//! The cut is the memory guard only. Hardening still cleans and cuts what is kept, at
//! `max_result_bytes` after cleaning; the stream keeps several times that much so that
//! what hardening shows is the same as before for any text whose hidden markup is not
//! larger than the margin. A message whose kept bytes exceed `max_bytes` anyway (a huge
//! `structuredContent` or image) is refused; its top-level numeric `id` is still found,
//! so that only the call it answers fails.
//!
//! The cutter tracks JSON structure, not validity: what it keeps is parsed afterwards,
//! and malformed input stays malformed.

/// Keys whose string values are prose a model reads (the same keys hardening cuts).
pub const PROSE_KEYS: [&str; 5] = ["text", "description", "message", "title", "instructions"];

/// The key whose value is structured data: its strings are never cut.
const STRUCTURED: &[u8] = b"structuredContent";

/// Keys longer than this are none of the above and are not remembered in full.
const MAX_KEY: usize = 32;

/// Nesting deeper than any parser downstream accepts (serde_json stops at 128).
const MAX_DEPTH: usize = 256;

/// The marker put where text was cut: `omitted` bytes follow in the original.
pub fn cut_marker(omitted: usize) -> String {
    format!("\n[truncated by Warden: {omitted} more bytes not shown]")
}

/// Splits a text that ends with a cut marker into the text before it and the count it
/// gives.
pub fn split_cut_marker(text: &str) -> Option<(&str, usize)> {
    let rest = text.strip_suffix(" more bytes not shown]")?;
    let at = rest.rfind("\n[truncated by Warden: ")?;
    let count = rest[at + "\n[truncated by Warden: ".len()..].parse().ok()?;
    Some((&text[..at], count))
}

/// How much of one message is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Kept bytes in all; a message over it is refused.
    pub max_bytes: usize,
    /// Kept bytes of prose strings in all; beyond it prose is cut.
    pub prose_bytes: usize,
}

impl MessageLimits {
    /// Messages kept whole up to `max_bytes`: nothing is cut.
    pub fn whole(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            prose_bytes: usize::MAX,
        }
    }
}

/// Why a message could not be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutError {
    /// Over `max_bytes` even with its prose cut. `id` is its top-level numeric id when
    /// it is an answer (no top-level `method`): the call it answers can be failed alone.
    Oversized { id: Option<u64> },
    /// Nested deeper than anything downstream parses.
    TooDeep,
}

#[derive(Debug, Clone, Copy)]
struct Frame {
    object: bool,
    /// In an object: the next string is a key.
    expect_key: bool,
    /// In an array: whether its strings are prose (it is the value of a prose key).
    prose_items: bool,
    /// Inside `structuredContent`.
    structured: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InString {
    /// Not in a string.
    No,
    /// In a key: its bytes are remembered (up to [`MAX_KEY`]).
    Key,
    /// In a value: `prose` ones count against the prose budget.
    Value { prose: bool },
}

/// The top-level `id`, read digit by digit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TopId {
    Waiting,
    /// The value of the top-level `id` is starting.
    Next,
    Digits(u64),
    Done(Option<u64>),
}

/// The size past which a message's buffer is given room up to the cap at once.
const WHOLE_ROOM_PAST: usize = 1 << 20;

#[derive(Debug)]
pub struct MessageCutter {
    limits: MessageLimits,
    out: Vec<u8>,
    /// Over `max_bytes`: nothing more is kept, the id is still looked for.
    over: bool,
    too_deep: bool,
    prose_left: usize,
    stack: Vec<Frame>,
    in_string: InString,
    /// The escape sequence being read (a `\` and what follows), written as one unit.
    escape: Vec<u8>,
    /// A high surrogate escape waiting for its low half, to be kept or cut together.
    high_surrogate: Option<[u8; 6]>,
    /// The current prose string was cut: its bytes are counted, not kept.
    omitted: Option<usize>,
    key: Vec<u8>,
    /// The last byte of the key was a `\\`: the next one is escaped.
    key_escape: bool,
    /// The message has a top-level `method`: a request or notification, whose `id` (if
    /// any) is the sender's own and answers nothing of ours.
    top_method: bool,
    /// The last key read in the innermost object.
    last_key: Vec<u8>,
    top_id: TopId,
}

impl MessageCutter {
    pub fn new(limits: MessageLimits) -> Self {
        Self {
            limits,
            out: Vec::new(),
            over: false,
            too_deep: false,
            prose_left: limits.prose_bytes,
            stack: Vec::new(),
            in_string: InString::No,
            escape: Vec::new(),
            high_surrogate: None,
            omitted: None,
            key: Vec::new(),
            key_escape: false,
            top_method: false,
            last_key: Vec::new(),
            top_id: TopId::Waiting,
        }
    }

    /// Whether the message is already over `max_bytes`: it will be refused.
    pub fn is_over(&self) -> bool {
        self.over
    }

    /// Takes the next bytes of the message.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if !self.over {
            // Room for the piece at once (a message usually comes in one), never past
            // the cap. Past a mebibyte a message may well run to the cap: room for all
            // of it then, once (the kernel backs it only as it fills), rather than
            // doubling copies whose freed blocks the allocator may keep resident a
            // while, up to twice the message at the peak.
            let room = self.limits.max_bytes.saturating_sub(self.out.len());
            let wanted = bytes.len().min(room);
            self.out
                .reserve(if self.out.len() + wanted > WHOLE_ROOM_PAST {
                    room
                } else {
                    wanted
                });
        }
        while !bytes.is_empty() {
            let used = match self.in_string {
                InString::No => self.structure(bytes[0]),
                InString::Key => self.key_bytes(bytes),
                InString::Value { prose } => self.value_bytes(bytes, prose),
            };
            bytes = &bytes[used..];
        }
    }

    /// The kept message, or why there is none.
    pub fn finish(mut self) -> Result<Vec<u8>, CutError> {
        if self.too_deep {
            return Err(CutError::TooDeep);
        }
        if let Some(high) = self.high_surrogate.take() {
            self.keep(&high);
        }
        if self.over {
            let id = match self.top_id {
                TopId::Digits(id) | TopId::Done(Some(id)) if !self.top_method => Some(id),
                _ => None,
            };
            return Err(CutError::Oversized { id });
        }
        Ok(self.out)
    }

    /// Appends to what is kept, unless that would pass `max_bytes`.
    fn keep(&mut self, bytes: &[u8]) {
        if self.over {
            return;
        }
        if self.out.len() + bytes.len() > self.limits.max_bytes {
            self.over = true;
            self.out = Vec::new();
            return;
        }
        self.out.extend_from_slice(bytes);
    }

    /// One byte outside any string.
    fn structure(&mut self, byte: u8) -> usize {
        self.note_top_id(byte);
        match byte {
            b'{' | b'[' => {
                let (prose_items, structured) = self.value_context();
                if self.stack.len() == MAX_DEPTH {
                    self.too_deep = true;
                } else {
                    self.stack.push(Frame {
                        object: byte == b'{',
                        expect_key: byte == b'{',
                        prose_items: byte == b'[' && prose_items,
                        structured,
                    });
                }
            }
            b'}' | b']' => {
                self.stack.pop();
            }
            b':' => {
                if let Some(frame) = self.stack.last_mut().filter(|f| f.object) {
                    frame.expect_key = false;
                }
            }
            b',' => {
                if let Some(frame) = self.stack.last_mut().filter(|f| f.object) {
                    frame.expect_key = true;
                }
            }
            b'"' => {
                self.in_string = match self.stack.last() {
                    Some(frame) if frame.object && frame.expect_key => {
                        self.key.clear();
                        InString::Key
                    }
                    _ => InString::Value {
                        prose: self.value_context().0,
                    },
                };
            }
            _ => {}
        }
        self.keep(&[byte]);
        1
    }

    /// For a value starting here: whether its strings are prose, and whether it is
    /// structured content.
    fn value_context(&self) -> (bool, bool) {
        match self.stack.last() {
            None => (false, false),
            Some(frame) if frame.object => {
                let structured = frame.structured || self.last_key == STRUCTURED;
                let prose = !structured
                    && PROSE_KEYS
                        .iter()
                        .any(|key| key.as_bytes() == self.last_key.as_slice());
                (prose, structured)
            }
            Some(frame) => (frame.prose_items && !frame.structured, frame.structured),
        }
    }

    /// The top-level `id`'s digits, to fail the call it answers if the message is
    /// refused.
    fn note_top_id(&mut self, byte: u8) {
        self.top_id = match self.top_id {
            TopId::Next if byte.is_ascii_digit() => TopId::Digits(u64::from(byte - b'0')),
            TopId::Next if byte.is_ascii_whitespace() || byte == b':' => TopId::Next,
            TopId::Next => TopId::Done(None),
            TopId::Digits(id) if byte.is_ascii_digit() => id
                .checked_mul(10)
                .and_then(|id| id.checked_add(u64::from(byte - b'0')))
                .map_or(TopId::Done(None), TopId::Digits),
            TopId::Digits(id) => TopId::Done(Some(id)),
            other => other,
        };
    }

    fn key_bytes(&mut self, bytes: &[u8]) -> usize {
        if std::mem::take(&mut self.key_escape) {
            // An escaped key is none of the plain ones looked for.
            self.key.push(0);
            self.keep(&bytes[..1]);
            return 1;
        }
        let end = bytes
            .iter()
            .position(|&b| b == b'"' || b == b'\\')
            .unwrap_or(bytes.len());
        if end > 0 {
            // Longer than any key looked for is as good as any length.
            let room = (MAX_KEY + 1).saturating_sub(self.key.len());
            self.key.extend_from_slice(&bytes[..end.min(room)]);
            self.keep(&bytes[..end]);
            return end;
        }
        self.keep(&bytes[..1]);
        if bytes[0] == b'\\' {
            self.key_escape = true;
            return 1;
        }
        self.in_string = InString::No;
        // The buffers trade places: `key` is cleared when the next key starts.
        std::mem::swap(&mut self.last_key, &mut self.key);
        if self.stack.len() == 1 {
            if self.last_key == b"id" && self.top_id == TopId::Waiting {
                self.top_id = TopId::Next;
            }
            self.top_method |= self.last_key == b"method";
        }
        1
    }

    fn value_bytes(&mut self, bytes: &[u8], prose: bool) -> usize {
        if !self.escape.is_empty() {
            return self.escape_byte(bytes[0], prose);
        }
        let end = bytes
            .iter()
            .position(|&b| b == b'"' || b == b'\\')
            .unwrap_or(bytes.len());
        if end > 0 {
            self.plain(&bytes[..end], prose);
            return end;
        }
        if bytes[0] == b'\\' {
            self.escape.push(b'\\');
            return 1;
        }
        self.close_string();
        1
    }

    /// Unescaped string bytes.
    fn plain(&mut self, bytes: &[u8], prose: bool) {
        self.flush_high_surrogate(prose);
        if let Some(omitted) = self.omitted.as_mut() {
            *omitted += bytes.len();
            return;
        }
        if !prose {
            self.keep(bytes);
            return;
        }
        if bytes.len() <= self.prose_left {
            self.prose_left -= bytes.len();
            self.keep(bytes);
            return;
        }
        // Cut before the first byte that does not fit, at a character's start.
        let mut cut = self.prose_left;
        while cut > 0 && is_continuation(bytes[cut]) {
            cut -= 1;
        }
        let mut omitted = bytes.len() - cut;
        if cut == 0 && is_continuation(bytes[0]) && !self.over {
            // The character began in an earlier piece: what was kept of it goes too.
            while let Some(last) = self.out.pop() {
                omitted += 1;
                if !is_continuation(last) {
                    break;
                }
            }
        }
        self.keep(&bytes[..cut]);
        self.prose_left = 0;
        self.omitted = Some(omitted);
    }

    /// One byte of an escape sequence; the sequence is kept or cut whole.
    fn escape_byte(&mut self, byte: u8, prose: bool) -> usize {
        self.escape.push(byte);
        let complete = match self.escape[1] {
            b'u' => self.escape.len() == 6,
            _ => true,
        };
        if !complete {
            return 1;
        }
        // At most six bytes (`\uXXXX`): copied out so the buffer is kept for the next.
        let mut read = [0u8; 6];
        let escape = &mut read[..self.escape.len()];
        escape.copy_from_slice(&self.escape);
        self.escape.clear();
        if let (Ok(unit), None) = (<[u8; 6]>::try_from(&*escape), self.omitted) {
            if is_high_surrogate(&unit) && self.high_surrogate.is_none() {
                self.high_surrogate = Some(unit);
                return 1;
            }
            if let Some(high) = self.high_surrogate.take() {
                let mut pair = [0u8; 12];
                pair[..6].copy_from_slice(&high);
                pair[6..].copy_from_slice(&unit);
                self.unit(&pair, prose);
                return 1;
            }
        }
        self.flush_high_surrogate(prose);
        self.unit(escape, prose);
        1
    }

    fn flush_high_surrogate(&mut self, prose: bool) {
        if let Some(high) = self.high_surrogate.take() {
            self.unit(&high, prose);
        }
    }

    /// A unit that is kept whole or not at all (an escape, a surrogate pair).
    fn unit(&mut self, unit: &[u8], prose: bool) {
        if let Some(omitted) = self.omitted.as_mut() {
            *omitted += unit.len();
        } else if !prose {
            self.keep(unit);
        } else if unit.len() <= self.prose_left {
            self.prose_left -= unit.len();
            self.keep(unit);
        } else {
            self.prose_left = 0;
            self.omitted = Some(unit.len());
        }
    }

    fn close_string(&mut self) {
        let prose = matches!(self.in_string, InString::Value { prose: true });
        self.flush_high_surrogate(prose);
        if let Some(omitted) = self.omitted.take() {
            let marker = cut_marker(omitted).replace('\n', "\\n");
            self.keep(marker.as_bytes());
        }
        self.keep(b"\"");
        self.in_string = InString::No;
    }
}

fn is_continuation(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

/// `\uD800` to `\uDBFF`, in any letter case.
fn is_high_surrogate(unit: &[u8; 6]) -> bool {
    unit[1] == b'u'
        && unit[2].eq_ignore_ascii_case(&b'd')
        && matches!(unit[3].to_ascii_lowercase(), b'8' | b'9' | b'a' | b'b')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::{Value, json};

    fn cut_in_pieces(
        message: &[u8],
        limits: MessageLimits,
        piece: usize,
    ) -> Result<Vec<u8>, CutError> {
        let mut cutter = MessageCutter::new(limits);
        for chunk in message.chunks(piece.max(1)) {
            cutter.push(chunk);
        }
        cutter.finish()
    }

    fn cut(message: &Value, limits: MessageLimits) -> Value {
        let bytes = serde_json::to_vec(message).unwrap();
        let kept = cut_in_pieces(&bytes, limits, 7).unwrap();
        serde_json::from_slice(&kept).unwrap()
    }

    fn limits(max_bytes: usize, prose_bytes: usize) -> MessageLimits {
        MessageLimits {
            max_bytes,
            prose_bytes,
        }
    }

    #[test]
    fn a_message_that_fits_is_kept_byte_for_byte() {
        let raw = br#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"caf\u00e9 \"q\" \\ \ud83d\ude00 1.50"}],"structuredContent":{"n":1.50e3}}}"#;
        for piece in [1, 2, 3, 5, 64] {
            assert_eq!(
                cut_in_pieces(raw, limits(1 << 20, 1 << 20), piece).unwrap(),
                raw
            );
        }
    }

    #[test]
    fn long_prose_is_cut_with_a_marker_counting_what_was_left_out() {
        let text = "a".repeat(1000);
        let message = json!({"jsonrpc": "2.0", "id": 1, "result": {"content": [
            {"type": "text", "text": text},
            {"type": "text", "text": "second"},
        ]}});
        let kept = cut(&message, limits(1 << 20, 100));
        let first = kept["result"]["content"][0]["text"].as_str().unwrap();
        assert_eq!(first, format!("{}{}", "a".repeat(100), cut_marker(900)));
        assert_eq!(
            split_cut_marker(first),
            Some(("a".repeat(100).as_str(), 900))
        );
        // The budget is spent: the next prose string keeps nothing but the marker.
        assert_eq!(kept["result"]["content"][1]["text"], cut_marker(6));
        assert_eq!(kept["id"], 1);
    }

    #[test]
    fn structured_content_ids_and_other_keys_are_never_cut() {
        let long = "b".repeat(500);
        let message = json!({"id": 2, "result": {
            "structuredContent": {"text": long, "items": [{"description": long}]},
            "content": [{"type": "resource", "resource": {"uri": long, "blob": long}}],
        }});
        assert_eq!(cut(&message, limits(1 << 20, 10)), message);
    }

    #[test]
    fn prose_in_arrays_under_a_prose_key_is_cut() {
        let message = json!({"message": ["0123456789", "abc"], "data": {"text": "xyz"}});
        let kept = cut(&message, limits(1 << 20, 12));
        assert_eq!(kept["message"][0], "0123456789");
        assert_eq!(kept["message"][1], format!("ab{}", cut_marker(1)));
        assert_eq!(kept["data"]["text"], cut_marker(3));
    }

    #[test]
    fn cuts_fall_between_characters_escapes_and_surrogate_pairs() {
        for text in [
            "ééééé",
            "\u{1F600}\u{1F600}\u{1F600}",
            "\"\"\"\"\"",
            "\u{0}\u{1}\u{2}",
        ] {
            for budget in 0..24 {
                let message = json!({"text": text});
                let bytes = serde_json::to_vec(&message).unwrap();
                // An escaped surrogate pair, as some servers write non-BMP text.
                let escaped = String::from_utf8(bytes.clone())
                    .unwrap()
                    .replace('\u{1F600}', "\\ud83d\\ude00");
                for raw in [bytes, escaped.into_bytes()] {
                    for piece in [1, 3, 100] {
                        let kept = cut_in_pieces(&raw, limits(1 << 20, budget), piece).unwrap();
                        let kept: Value = serde_json::from_slice(&kept)
                            .unwrap_or_else(|e| panic!("{text:?} at {budget}: {e}"));
                        let kept = kept["text"].as_str().unwrap();
                        let shown = split_cut_marker(kept).map_or(kept, |(shown, _)| shown);
                        assert!(text.starts_with(shown), "{text:?} at {budget}: {kept:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn an_oversized_message_is_refused_with_the_id_of_its_call() {
        let image = "x".repeat(5000);
        let message = json!({"jsonrpc": "2.0", "result": {"content": [{"type": "image", "data": image}]}, "id": 42});
        let bytes = serde_json::to_vec(&message).unwrap();
        assert_eq!(
            cut_in_pieces(&bytes, limits(1000, 100), 10),
            Err(CutError::Oversized { id: Some(42) })
        );
        let notification = br#"{"method":"notifications/message","params":{"data":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#;
        assert_eq!(
            cut_in_pieces(notification, limits(40, 100), 4),
            Err(CutError::Oversized { id: None })
        );
        // A request's id is its sender's: it answers no call of ours.
        let request = br#"{"jsonrpc":"2.0","id":42,"method":"sampling/createMessage","params":{"data":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#;
        assert_eq!(
            cut_in_pieces(request, limits(40, 100), 4),
            Err(CutError::Oversized { id: None })
        );
        // An `id` inside the params is not the message's.
        let nested = br#"{"params":{"id":5,"data":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#;
        assert_eq!(
            cut_in_pieces(nested, limits(40, 100), 4),
            Err(CutError::Oversized { id: None })
        );
    }

    #[test]
    fn escaped_keys_match_nothing_and_deep_nesting_is_refused() {
        // `te\u0078t` is `text` once parsed, but the stream does not cut it: kept whole,
        // it counts against `max_bytes` like any other byte.
        let raw = br#"{"te\u0078t":"0123456789","a\"b":"x"}"#;
        assert_eq!(cut_in_pieces(raw, limits(1 << 20, 2), 3).unwrap(), raw);
        let deep = "[".repeat(MAX_DEPTH + 1);
        assert_eq!(
            cut_in_pieces(deep.as_bytes(), limits(1 << 20, 2), 8),
            Err(CutError::TooDeep)
        );
    }

    proptest! {
        /// Whatever the pieces and the budget, what is kept parses, and each prose text
        /// is a prefix of the original (plus a marker when cut).
        #[test]
        fn what_is_kept_always_parses(
            texts in proptest::collection::vec(".{0,40}", 1..6),
            budget in 0usize..120,
            piece in 1usize..17,
        ) {
            let content: Vec<Value> = texts.iter().map(|t| json!({"type": "text", "text": t})).collect();
            let message = json!({"jsonrpc": "2.0", "id": 3, "result": {"content": content}});
            let bytes = serde_json::to_vec(&message).unwrap();
            let kept = cut_in_pieces(&bytes, limits(1 << 20, budget), piece).unwrap();
            let kept: Value = serde_json::from_slice(&kept).unwrap();
            for (original, kept) in texts.iter().zip(kept["result"]["content"].as_array().unwrap()) {
                let kept = kept["text"].as_str().unwrap();
                let shown = split_cut_marker(kept).map_or(kept, |(shown, _)| shown);
                prop_assert!(original.starts_with(shown));
            }
        }
    }
}
