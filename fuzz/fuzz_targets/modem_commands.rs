//! Whatever a client types at `simlab emulate modem` (or a phone of `emulate smsc`): command
//! lines, prompts, PDUs after `AT+CMGS`, ESC and Ctrl-Z anywhere, in each modem family's
//! dialect — the virtual modem answers and never panics. The first byte picks the family and
//! whether the SIM asks for PIN1.
#![no_main]

use libfuzzer_sys::fuzz_target;
use simlab_card::profile::Profile as CardProfile;
use simlab_emulate::card::EmulatedCard;
use simlab_emulate::modem::{DEFAULT_SIM, Options, Profile, VirtualModem};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, bytes)) = data.split_first() else {
        return;
    };
    let profile = match flags & 3 {
        0 => Profile::Generic,
        1 => Profile::Huawei,
        2 => Profile::Quectel,
        _ => Profile::Simcom,
    };
    let sim = if flags & 4 != 0 {
        format!("{DEFAULT_SIM}pin1_enabled = true\n")
    } else {
        DEFAULT_SIM.to_string()
    };
    let Ok(card) = CardProfile::parse(Path::new("fuzz"), &sim) else {
        return;
    };
    let Ok(card) = EmulatedCard::new(card.build_card_seeded([0; 32]), None, None) else {
        return;
    };
    let mut modem = VirtualModem::new(
        card,
        Options {
            profile,
            ..Options::default()
        },
        None,
    );
    // In pieces, as a serial line delivers them.
    for chunk in bytes.chunks(1 + (flags as usize >> 3)) {
        let _ = modem.answer(chunk);
    }
});
