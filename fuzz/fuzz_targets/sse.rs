//! The SSE parser, on any stream an upstream may send, cut anywhere.
//!
//! Invariants: the events do not depend on where the stream was cut into chunks; no
//! event's data exceeds the cap; an oversized stream is refused whichever the cut.

#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_proto::sse::{SseEvent, SseParser};

const MAX: usize = 256;

/// The events of `chunks` fed in turn, or `None` once the parser refuses.
fn events(chunks: &[&[u8]]) -> Option<Vec<SseEvent>> {
    let mut parser = SseParser::new(MAX);
    let mut all = Vec::new();
    for chunk in chunks {
        all.extend(parser.push(chunk).ok()?);
    }
    Some(all)
}

fuzz_target!(|input: &[u8]| {
    // The first byte chooses the cuts; the rest is the stream.
    let Some((&step, stream)) = input.split_first() else {
        return;
    };
    let whole = events(&[stream]);
    let step = usize::from(step % 17) + 1;
    let chunks: Vec<&[u8]> = stream.chunks(step).collect();
    let cut = events(&chunks);
    let bytewise: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(whole, cut, "cut every {step} bytes");
    assert_eq!(whole, events(&bytewise), "cut at every byte");
    for event in whole.iter().flatten() {
        assert!(event.data.len() <= MAX, "{} bytes", event.data.len());
        assert!(!event.name.is_empty(), "an event always has a name");
    }
});
