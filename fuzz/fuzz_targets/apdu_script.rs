//! An APDU script from a user's file (`simlab card script`): a script or an error naming its
//! line, never a panic; a script that parses replays against a card model without panicking,
//! whatever its placeholders and answers say.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_card::script::{self, Script};
use simlab_card::transport::TransportError;

/// A card that answers every command with the same status word: replay must stop or go on
/// cleanly, never panic.
struct Echo;

impl script::Card for Echo {
    fn transmit(&mut self, capdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        Ok(vec![capdu.first().copied().unwrap_or(0x90), 0x00])
    }
    fn reset(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Script::parse(text) {
        Ok(s) => {
            let secret = |n: &str| (n.len() % 2 == 0).then(|| vec![0x30; 8]);
            let _ = script::replay(&s, &mut Echo, &secret);
        }
        Err(e) => assert!(e.line >= 1 && e.line <= text.lines().count().max(1)),
    }
});
