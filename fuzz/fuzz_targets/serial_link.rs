//! The firmware's link decoder fed arbitrary bytes: frames that pass both checks, rejections,
//! never a panic, never a push that takes nothing (a livelock on the MCU); a frame it yields
//! re-encodes to a frame that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_firmware::link::{Deframer, Event, encode};

fuzz_target!(|data: &[u8]| {
    let mut rx = Deframer::default();
    let mut rest = data;
    while !rest.is_empty() {
        // Every push follows a poll that returned None (or a fresh decoder), so it takes at
        // least one byte: a full buffer with nothing to poll would be a livelock on the MCU.
        let taken = rx.push(rest);
        assert!(taken > 0, "push took nothing after poll returned None");
        rest = &rest[taken..];
        while let Some(event) = rx.poll() {
            if let Event::Frame(frame) = event {
                let mut out = vec![0u8; frame.payload.len() + 64];
                let n = encode(frame.kind, frame.seq, frame.payload, &mut out)
                    .expect("a received frame re-encodes");
                let mut again = Deframer::default();
                again.push(&out[..n]);
                match again.poll() {
                    Some(Event::Frame(f)) => {
                        assert_eq!(
                            (f.kind, f.seq, f.payload),
                            (frame.kind, frame.seq, frame.payload)
                        )
                    }
                    other => panic!("re-encoded frame read back as {other:?}"),
                }
            }
        }
    }
});
