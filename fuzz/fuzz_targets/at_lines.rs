//! Whatever a modem sends: split into lines, prompts and garbage; each line tried as a final
//! result code, a URC, a reply's information line and its comma-separated fields, never a
//! panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_modem::at::{Response, final_result};
use simlab_modem::codes::{CmeError, CmsError};
use simlab_modem::line::{LineReader, Piece};
use simlab_modem::{syntax, urc};

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let mut reader = LineReader::new();
    reader.push(bytes);
    while let Some(piece) = reader.next(flags & 1 != 0) {
        if let Piece::Line(line) = piece {
            let _ = final_result(&line);
            let _ = urc::classify(&line, Some("+CMGS"));
            let _ = urc::classify(&line, None);
            let _ = urc::parse(&line).describe();
            let _ = urc::prefix(&line);
            let args = urc::args(&line);
            let _ = CmeError::parse(args);
            let _ = CmsError::parse(args);
            for field in syntax::fields(args) {
                let _ = syntax::decode_ucs2_hex(syntax::unquote(field));
            }
            let reply = Response {
                lines: vec![line.clone()],
            };
            let _ = reply.info("+CSQ");
            let _ = reply.info("+CMGL");
            let _ = reply.bare();
        }
    }
});
