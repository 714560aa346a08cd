//! Just enough of Server-Sent Events to read MCP messages: `data:` lines joined into one
//! event per blank line, with the event's name (`event:`; the deprecated HTTP+SSE
//! transport announces its message endpoint in an `endpoint` event); other fields are
//! ignored. Events are capped in size.

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
    line: Vec<u8>,
    name: Option<String>,
    data: Vec<u8>,
    has_data: bool,
    max: usize,
    /// The last byte seen was a CR, so a following LF ends nothing.
    after_cr: bool,
}

impl SseParser {
    pub fn new(max: usize) -> Self {
        Self {
            line: Vec::new(),
            name: None,
            data: Vec::new(),
            has_data: false,
            max,
            after_cr: false,
        }
    }

    /// Takes the next bytes of the stream; returns the events they complete.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, Oversized> {
        let mut events = Vec::new();
        for &byte in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, byte == b'\r');
            match byte {
                b'\n' if after_cr => {}
                b'\n' | b'\r' => {
                    if let Some(event) = self.end_line() {
                        events.push(event);
                    }
                }
                _ => {
                    if self.line.len() + self.data.len() >= self.max {
                        return Err(Oversized);
                    }
                    self.line.push(byte);
                }
            }
        }
        Ok(events)
    }

    fn end_line(&mut self) -> Option<SseEvent> {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            let had = std::mem::replace(&mut self.has_data, false);
            let data = std::mem::take(&mut self.data);
            // An empty `event:` names no event: it is a `message`, as browsers read it.
            let name = self
                .name
                .take()
                .filter(|name| !name.is_empty())
                .unwrap_or_else(|| "message".to_owned());
            return had.then_some(SseEvent { name, data });
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(at) => (&line[..at], &line[at + 1..]),
            None => (&line[..], &[][..]),
        };
        if field == b"event" {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            self.name = Some(String::from_utf8_lossy(value).into_owned());
        } else if field == b"data" {
            let value = value.strip_prefix(b" ").unwrap_or(value);
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
        None
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
    }
}
