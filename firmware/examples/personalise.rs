//! Personalises a factory-fresh simlab-firmware token from a card profile.
//!
//! ```text
//! cargo run -p simlab-firmware --example personalise -- --profile fixtures/cards/usim-milenage.toml --serial tcp:127.0.0.1:PORT
//! ```
//!
//! The host builds the card the profile describes (the same code as `--emulate`), saves its
//! state and sends that image over the link (PERSO WRITE / PERSO COMMIT). The token replaces the
//! image's token section with a fresh token seeded from its own RNG, stores it and from then on
//! refuses any other personalisation. The image holds Ki/OPc and the PINs: it travels only over
//! the link and is never printed or written to disk.
//!
//! Exit codes as simlab's: 0 done, 1 the token refused (e.g. already personalised), 2 bad usage.

use simlab_applet::state::STATE_LEN;
use simlab_card::profile::Profile;
use simlab_card::transport::serial::SerialTransport;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str =
    "usage: personalise --profile PROFILE.toml --serial PATH|tcp:HOST:PORT [--if-needed]
  --if-needed   a token that is already personalised is left as it is (exit 0)";

fn main() -> ExitCode {
    let mut profile = None;
    let mut serial = None;
    let mut if_needed = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--profile" => profile = args.next().map(PathBuf::from),
            "--serial" => serial = args.next(),
            "--if-needed" => if_needed = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("personalise: unexpected argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(profile), Some(serial)) = (profile, serial) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let profile = match Profile::load(&profile) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("personalise: {e}");
            return ExitCode::from(2);
        }
    };
    let mut token = match SerialTransport::open(&serial) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("personalise: {e}");
            return ExitCode::from(1);
        }
    };
    if token.info().personalised() && if_needed {
        eprintln!("personalise: the token at {serial} is already personalised; keeping its state");
        return ExitCode::SUCCESS;
    }
    if token.info().personalised() {
        eprintln!(
            "personalise: the token at {serial} is already personalised; it accepts no other (erase its flash to start over)"
        );
        return ExitCode::from(1);
    }
    // The token seed is irrelevant: the token replaces the whole token section with its own.
    let card = profile.build_card_seeded([0; 32]);
    let mut image = vec![0u8; STATE_LEN];
    card.save_state(&mut image);
    let result = token.personalise(&image);
    image.fill(0);
    match result {
        Ok(()) => {
            println!(
                "personalised {} ({}) as ICCID {}, IMSI {}",
                serial,
                token.info().board,
                profile.iccid,
                profile.imsi
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("personalise: {e}");
            ExitCode::from(1)
        }
    }
}
