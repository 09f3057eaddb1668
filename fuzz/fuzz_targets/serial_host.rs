//! The host's own link decoder (simlab-card's serial transport, an independent implementation
//! of docs/link-protocol.md) fed the token's byte stream in arbitrary pieces: frames or
//! corrupt-frame reports, never a panic; a frame it yields re-encodes to a frame that decodes
//! the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_card::transport::serial::{Deframer, Received, encode_frame};

fuzz_target!(|data: &[u8]| {
    // The first byte cuts the stream into pieces of that size, as a serial port may deliver it.
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let mut rx = Deframer::default();
    for piece in stream.chunks(usize::from(cut).max(1)) {
        rx.push(piece);
        while let Some(event) = rx.next_event() {
            if let Received::Frame { kind, seq, payload } = event {
                let bytes = encode_frame(kind, seq, &payload).expect("a received frame re-encodes");
                let mut again = Deframer::default();
                again.push(&bytes);
                assert_eq!(
                    again.next_event(),
                    Some(Received::Frame { kind, seq, payload })
                );
                assert_eq!(again.next_event(), None);
            }
        }
    }
});
