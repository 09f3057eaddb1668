//! Any byte string either parses into a command that re-serialises to the same bytes, or is
//! rejected; it never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_applet::Command;

fuzz_target!(|data: &[u8]| {
    if let Ok(cmd) = Command::parse(data) {
        let mut out = vec![0u8; data.len() + 3];
        let n = cmd
            .serialize(&mut out)
            .expect("a parsed command serialises");
        assert_eq!(&out[..n], data);
    }
});
