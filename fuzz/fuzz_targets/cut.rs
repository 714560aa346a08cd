//! The message cutter (`warden_proto::cut`), on any bytes an upstream may send, cut into
//! pieces anywhere, with any prose budget.
//!
//! Invariants: nothing over `max_bytes` is kept; what is kept does not depend on where
//! the message was cut into pieces (whenever both readings keep it: a character split
//! across pieces may be held for a moment, so a message within three bytes of the cap
//! may be refused in one reading and kept in the other); JSON in, JSON out.

#![no_main]

use libfuzzer_sys::fuzz_target;
use warden_proto::cut::{CutError, MessageCutter, MessageLimits};

const MAX: usize = 4096;

fn cut(pieces: &[&[u8]], prose_bytes: usize) -> Result<Vec<u8>, CutError> {
    let mut cutter = MessageCutter::new(MessageLimits {
        max_bytes: MAX,
        prose_bytes,
    });
    for piece in pieces {
        cutter.push(piece);
    }
    cutter.finish()
}

fuzz_target!(|input: &[u8]| {
    // The first byte chooses the prose budget, the second the pieces; the rest is the
    // message.
    let [budget, step, message @ ..] = input else {
        return;
    };
    let prose_bytes = usize::from(*budget);
    let whole = cut(&[message], prose_bytes);
    let step = usize::from(step % 17) + 1;
    let pieces: Vec<&[u8]> = message.chunks(step).collect();
    let bytewise: Vec<&[u8]> = message.chunks(1).collect();
    for other in [cut(&pieces, prose_bytes), cut(&bytewise, prose_bytes)] {
        if let (Ok(whole), Ok(other)) = (&whole, &other) {
            assert_eq!(whole, other, "cut every {step} bytes");
        }
    }
    if let Ok(kept) = &whole {
        assert!(kept.len() <= MAX, "{} bytes kept", kept.len());
        if serde_json::from_slice::<serde_json::Value>(message).is_ok() {
            assert!(
                serde_json::from_slice::<serde_json::Value>(kept).is_ok(),
                "JSON in, not JSON out: {:?}",
                String::from_utf8_lossy(kept)
            );
        }
    }
});
