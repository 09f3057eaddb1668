//! Times commands on a simlab-firmware token with BENCH frames: the MCU counts around the card
//! model's `process` only (not the link, the flash write or the button), in the unit the board
//! reports (QEMU: virtual-clock ns = instructions under `-icount shift=0`; nRF52840: cycles).
//!
//! ```text
//! cargo run -p simlab-firmware --example mcu-bench -- --serial tcp:127.0.0.1:PORT --label "COMP128-1" [--runs N] [--token]
//! ```
//!
//! Prints one tab-separated line per operation: label, operation, unit, median, min, max, runs;
//! then `stack_peak\t<bytes>` if the board measures it. `scripts/bench-firmware` makes the table.

use simlab_applet::token;
use simlab_card::transport::Transport;
use simlab_card::transport::serial::SerialTransport;
use std::process::ExitCode;

const USAGE: &str =
    "usage: mcu-bench --serial PATH|tcp:HOST:PORT --label TEXT [--runs N] [--token]";

fn sw(r: &[u8]) -> u16 {
    match r {
        [.., a, b] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    }
}

struct Bench {
    t: SerialTransport,
    label: String,
    unit: String,
}

impl Bench {
    /// Sends a command that must succeed (9000, 61xx or 9Fxx).
    fn send(&mut self, what: &str, capdu: &[u8]) -> Result<(), String> {
        let r = self.t.transmit_raw(capdu).map_err(|e| e.to_string())?;
        match sw(&r) {
            0x9000 => Ok(()),
            s if s >> 8 == 0x61 || s >> 8 == 0x9F => Ok(()),
            s => Err(format!("{what}: status {s:04x}")),
        }
    }

    /// Runs `capdu(i)` `runs` times as BENCH frames and prints the statistics.
    fn time(
        &mut self,
        op: &str,
        runs: usize,
        capdu: impl Fn(usize) -> Vec<u8>,
        expect: impl Fn(u16) -> bool,
    ) -> Result<(), String> {
        let mut counts = Vec::with_capacity(runs);
        for i in 0..runs {
            let (count, r) = self.t.bench(&capdu(i)).map_err(|e| e.to_string())?;
            if !expect(sw(&r)) {
                return Err(format!("{op}: status {:04x}", sw(&r)));
            }
            counts.push(count);
        }
        counts.sort_unstable();
        println!(
            "{}\t{op}\t{}\t{}\t{}\t{}\t{runs}",
            self.label,
            self.unit,
            counts[counts.len() / 2],
            counts[0],
            counts[counts.len() - 1]
        );
        Ok(())
    }
}

fn rand_for(i: usize) -> [u8; 16] {
    let mut r = [0u8; 16];
    for (k, b) in r.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(37).wrapping_add(k as u8 * 11) ^ 0x5A;
    }
    r
}

fn run(serial: &str, label: String, runs: usize, with_token: bool) -> Result<(), String> {
    let t = SerialTransport::open(serial).map_err(|e| e.to_string())?;
    let unit = t
        .info()
        .bench_unit
        .clone()
        .ok_or("this firmware does not support BENCH frames")?;
    let mut b = Bench { t, label, unit };

    // The floor: parsing and dispatching a command that does nothing.
    b.time(
        "STATUS (baseline)",
        runs,
        |_| vec![0xA0, 0xF2, 0x00, 0x00, 0x16],
        |s| s == 0x9000 || s >> 8 == 0x67,
    )?;
    // RUN GSM ALGORITHM in DF_GSM: the card's A3/A8 (COMP128 or Milenage's c2/c3).
    b.send("SELECT DF_GSM", &[0xA0, 0xA4, 0x00, 0x00, 0x02, 0x7F, 0x20])?;
    b.time(
        "RUN GSM ALGORITHM",
        runs,
        |i| {
            let mut c = vec![0xA0, 0x88, 0x00, 0x00, 0x10];
            c.extend_from_slice(&rand_for(i));
            c
        },
        |s| s == 0x9F0C,
    )?;

    if with_token {
        let mut select = vec![0x00, 0xA4, 0x04, 0x00, token::AID.len() as u8];
        select.extend_from_slice(&token::AID);
        b.send("SELECT token", &select)?;
        let mut verify = vec![0x00, token::ins::VERIFY_PIN, 0x00, token::PIN_REF, 0x08];
        verify.extend_from_slice(&token::DEFAULT_PIN);
        b.send("VERIFY PIN", &verify)?;
        b.time(
            "GENERATE KEY (P-256)",
            runs.clamp(1, 5),
            |_| vec![0x00, token::ins::GENERATE_KEY, token::KEYGEN_REPLACE, 0x00],
            |s| s == 0x9000 || s >> 8 == 0x61,
        )?;
        b.time(
            "SIGN (ECDSA P-256, SHA-256 of 32 bytes)",
            runs.clamp(1, 10),
            |i| {
                let mut c = vec![
                    0x00,
                    token::ins::SIGN,
                    token::SIGN_P1P2.0,
                    token::SIGN_P1P2.1,
                    32,
                ];
                c.extend_from_slice(&[i as u8; 32]);
                c.push(0x00);
                c
            },
            |s| s == 0x9000 || s >> 8 == 0x61,
        )?;
    }
    if let Ok(info) = b.t.refresh_info()
        && let Some(peak) = info.stack_peak
    {
        println!("stack_peak\t{peak}");
    }
    Ok(())
}

fn main() -> ExitCode {
    let (mut serial, mut label, mut runs, mut with_token) = (None, None, 20usize, false);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--serial" => serial = args.next(),
            "--label" => label = args.next(),
            "--runs" => match args.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => runs = n,
                _ => {
                    eprintln!("mcu-bench: --runs takes a positive number\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            "--token" => with_token = true,
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(serial), Some(label)) = (serial, label) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    match run(&serial, label, runs, with_token) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcu-bench: {e}");
            ExitCode::from(1)
        }
    }
}
