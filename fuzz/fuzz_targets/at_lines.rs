//! Whatever a modem sends: split into lines, prompts and garbage, each line classified and
//! parsed as a URC, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_modem::line::{LineReader, Piece};
use simlab_modem::urc;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let mut reader = LineReader::new();
    reader.push(bytes);
    while let Some(piece) = reader.next(flags & 1 != 0) {
        if let Piece::Line(line) = piece {
            let _ = urc::classify(&line, Some("+CMGS"));
            let _ = urc::classify(&line, None);
            let parsed = urc::parse(&line);
            let _ = parsed.describe();
            let _ = urc::prefix(&line);
            let _ = urc::args(&line);
        }
    }
});
