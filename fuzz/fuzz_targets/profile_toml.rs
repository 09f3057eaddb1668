//! A card profile from a user's file: a profile or an error naming what is wrong, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_card::profile::Profile;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = Profile::parse(Path::new("fuzz.toml"), text);
    }
});
