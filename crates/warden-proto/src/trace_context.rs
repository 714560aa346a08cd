//! The W3C trace context as MCP carries it: `traceparent` and `tracestate` in
//! `params._meta`, the same names as the HTTP headers.

pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";
/// The W3C limit on a `tracestate` value.
const MAX_TRACESTATE_BYTES: usize = 512;

/// Whether `value` is a well-formed `traceparent` of version 00 (lowercase hex, ids not
/// all zero): what may be copied from a message into a header.
pub fn is_traceparent(value: &str) -> bool {
    let bytes = value.as_bytes();
    if bytes.len() != 55 || !value.starts_with("00-") || bytes[35] != b'-' || bytes[52] != b'-' {
        return false;
    }
    let hex = |range: std::ops::Range<usize>| {
        bytes[range.clone()]
            .iter()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
            && bytes[range].iter().any(|b| *b != b'0')
    };
    hex(3..35) && hex(36..52) && bytes[53..55].iter().all(u8::is_ascii_hexdigit)
}

/// Whether `value` can travel as a `tracestate` header as it is: visible ASCII and
/// inner spaces, at most 512 bytes.
pub fn is_tracestate(value: &str) -> bool {
    !value.is_empty()
        && value.trim() == value
        && value.len() <= MAX_TRACESTATE_BYTES
        && value.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const SPAN: &str = "00f067aa0ba902b7";

    #[test]
    fn traceparent_shapes() {
        assert!(is_traceparent(&format!("00-{TRACE}-{SPAN}-01")));
        for bad in [
            String::new(),
            format!("01-{TRACE}-{SPAN}-01"),
            format!("00-{}-{SPAN}-01", "0".repeat(32)),
            format!("00-{TRACE}-{}-01", "0".repeat(16)),
            format!("00-{}-{SPAN}-01", TRACE.to_uppercase()),
            format!("00-{TRACE}-{SPAN}-01\r\nx-injected: 1"),
            format!("00-{TRACE}-{SPAN}-0\u{e9}"),
            format!("00-{TRACE}-{SPAN}-0x"),
        ] {
            assert!(!is_traceparent(&bad), "{bad:?}");
        }
    }

    #[test]
    fn tracestate_shapes() {
        assert!(is_tracestate("vendor=abc,other=x y"));
        assert!(!is_tracestate(""));
        assert!(!is_tracestate("a=b\r\nx: y"));
        assert!(!is_tracestate(&"a".repeat(513)));
    }
}
