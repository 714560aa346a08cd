//! Just enough of Server-Sent Events to read MCP messages: `data:` lines joined into one
//! event per blank line, with the event's name (`event:`; the deprecated HTTP+SSE
//! transport announces its message endpoint in an `endpoint` event); other fields are
//! ignored. An event's data goes through a [`MessageCutter`] as it arrives, so it is
//! never held whole: it is capped, and with [`SseParser::cutting`] its prose is cut.

use crate::cut::{MessageCutter, MessageLimits};

/// An event larger than the cap.
#[derive(Debug, PartialEq, Eq)]
pub struct Oversized;

/// One event: its name (`message` when it gives none) and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    pub name: String,
    pub data: Vec<u8>,
}

#[derive(Debug)]
pub struct SseParser {
    /// The current line, up to its value when it is a `data:` line.
    line: Vec<u8>,
    /// In the value of a `data:` line: its bytes go to `data`. `Some(true)` until the
    /// first, which is dropped if it is a space.
    in_data: Option<bool>,
    name: Option<String>,
    /// The event's data so far: `Some` once it has a `data:` line.
    data: Option<MessageCutter>,
    limits: MessageLimits,
    /// The last byte seen was a CR, so a following LF ends nothing.
    after_cr: bool,
}

impl SseParser {
    /// Events of at most `max` bytes, kept whole.
    pub fn new(max: usize) -> Self {
        Self::cutting(MessageLimits::whole(max))
    }

    /// Events whose data is a message cut to `limits` (see [`crate::cut`]).
    pub fn cutting(limits: MessageLimits) -> Self {
        Self {
            line: Vec::new(),
            in_data: None,
            name: None,
            data: None,
            limits,
            after_cr: false,
        }
    }

    /// Takes the next bytes of the stream; returns the events they complete.
    pub fn push(&mut self, mut bytes: &[u8]) -> Result<Vec<SseEvent>, Oversized> {
        let mut events = Vec::new();
        while let Some(&byte) = bytes.first() {
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            if byte == b'\n' || byte == b'\r' {
                if !(byte == b'\n' && after_cr) {
                    events.extend(self.end_line()?);
                }
                bytes = &bytes[1..];
                continue;
            }
            if let Some(first) = self.in_data.as_mut() {
                if std::mem::take(first) && byte == b' ' {
                    bytes = &bytes[1..];
                    continue;
                }
                let end = bytes
                    .iter()
                    .position(|&b| b == b'\n' || b == b'\r')
                    .unwrap_or(bytes.len());
                let data = self.data.as_mut().ok_or(Oversized)?;
                data.push(&bytes[..end]);
                if data.is_over() {
                    return Err(Oversized);
                }
                bytes = &bytes[end..];
                continue;
            }
            if self.line.len() >= self.limits.max_bytes {
                return Err(Oversized);
            }
            self.line.push(byte);
            bytes = &bytes[1..];
            if byte == b':' && self.line == b"data:" {
                self.start_data_line();
            }
        }
        Ok(events)
    }

    /// A `data:` line begins: later lines of the same event join the first with a LF.
    fn start_data_line(&mut self) {
        self.in_data = Some(true);
        match self.data.as_mut() {
            Some(data) => data.push(b"\n"),
            None => self.data = Some(MessageCutter::new(self.limits)),
        }
    }

    fn end_line(&mut self) -> Result<Option<SseEvent>, Oversized> {
        let line = std::mem::take(&mut self.line);
        if self.in_data.take().is_some() {
            return Ok(None);
        }
        if line.is_empty() {
            let Some(data) = self.data.take() else {
                self.name = None;
                return Ok(None);
            };
            let data = data.finish().map_err(|_| Oversized)?;
            // An empty `event:` names no event: it is a `message`, as browsers read it.
            let name = self
                .name
                .take()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "message".to_owned());
            return Ok(Some(SseEvent { name, data }));
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(at) => (&line[..at], &line[at + 1..]),
            None => (&line[..], &[][..]),
        };
        if field == b"event" {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            self.name = Some(String::from_utf8_lossy(value).into_owned());
        } else if field == b"data" {
            // `data` with no colon: an empty line of data.
            self.start_data_line();
            self.in_data = None;
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_across_chunks_and_line_endings() {
        let mut parser = SseParser::new(1024);
        let mut events = parser.push(b": keep-alive\n\nid: 1\nevent: mess").unwrap();
        events.extend(
            parser
                .push(b"age\ndata: {\"a\":\r\ndata: 1}\r\n\r\n")
                .unwrap(),
        );
        events.extend(
            parser
                .push(b"data:x\r\rid: 2\n\nevent: endpoint\ndata: /messages?s=1\n\n")
                .unwrap(),
        );
        let data: Vec<&[u8]> = events.iter().map(|e| e.data.as_slice()).collect();
        assert_eq!(data, [&b"{\"a\":\n1}"[..], b"x", b"/messages?s=1"]);
        let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["message", "message", "endpoint"]);
    }

    #[test]
    fn an_empty_event_name_is_a_message() {
        let mut parser = SseParser::new(64);
        let events = parser
            .push(b"event:\ndata: 1\n\nevent: \ndata: 2\n\n")
            .unwrap();
        let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["message", "message"]);
    }

    #[test]
    fn the_cap_holds() {
        let mut parser = SseParser::new(8);
        assert_eq!(parser.push(b"data: 0123456789\n\n"), Err(Oversized));
        let mut parser = SseParser::new(8);
        assert_eq!(parser.push(b"id: 0123456789\n\n"), Err(Oversized));
        // Data lines count together, with the LF that joins them.
        let mut parser = SseParser::new(8);
        assert_eq!(parser.push(b"data: 01234\ndata: 567\n\n"), Err(Oversized));
    }

    #[test]
    fn a_huge_data_line_is_cut_as_it_streams() {
        let text = "z".repeat(100_000);
        let event = format!(
            "event: message\ndata: {{\"id\":1,\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\"{text}\"}}]}}}}\n\n"
        );
        let mut parser = SseParser::cutting(MessageLimits {
            max_bytes: 1000,
            prose_bytes: 100,
        });
        let mut events = Vec::new();
        for chunk in event.as_bytes().chunks(4096) {
            events.extend(parser.push(chunk).unwrap());
        }
        assert_eq!(events.len(), 1);
        let message: serde_json::Value = serde_json::from_slice(&events[0].data).unwrap();
        let kept = message["result"]["content"][0]["text"].as_str().unwrap();
        assert_eq!(
            crate::cut::split_cut_marker(kept),
            Some(("z".repeat(100).as_str(), 99_900))
        );
    }
}
