//! The vpcd byte stream from pcscd, in arbitrary pieces: frames or frame errors, never a
//! panic; every frame re-encodes to what was read for it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_emulate::vpcd::Framer;

fuzz_target!(|data: &[u8]| {
    // The first byte cuts the stream into pieces of that size, as TCP may deliver it.
    let Some((&cut, stream)) = data.split_first() else {
        return;
    };
    let mut framer = Framer::with_max_len(4096);
    for piece in stream.chunks(usize::from(cut).max(1)) {
        framer.push(piece);
        while let Some(frame) = framer.next_frame() {
            if let Ok(frame) = frame {
                let bytes = frame.encode().expect("a read frame fits again");
                let mut again = Framer::with_max_len(4096);
                again.push(&bytes);
                assert_eq!(again.next_frame().map(|f| f.ok()), Some(Some(frame)));
            }
        }
    }
});
