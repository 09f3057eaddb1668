//! A provisioning batch CSV as spreadsheets write it: targets or an error naming the row,
//! never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_card::provision::csv;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = csv::parse(Path::new("fuzz.csv"), text);
    }
});
