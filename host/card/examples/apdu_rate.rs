//! APDU round trips per second through a simlab transport, for scripts/bench-apdu:
//! a SELECT + READ BINARY loop on EF_ICCID (2FE2), as pyscard's tests/py/apdu_rate.py does.
//!
//! Usage: apdu_rate (--reader NAME | --emulate PROFILE) N    → prints "<label> <rate>"

use simlab_applet::{Command, Status};
use simlab_card::profile::Profile;
use simlab_card::transport::inproc::InProcess;
use simlab_card::transport::pcsc::{PcscOptions, PcscTransport};
use simlab_card::transport::{Link, Transport};
use std::path::Path;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (kind, target, n) = match args.as_slice() {
        [_, kind, target, n] => (
            kind.as_str(),
            target.as_str(),
            n.parse::<usize>().expect("N"),
        ),
        _ => {
            eprintln!("usage: apdu_rate (--reader NAME | --emulate PROFILE) N");
            std::process::exit(2);
        }
    };
    let transport: Box<dyn Transport> = match kind {
        "--reader" => {
            Box::new(PcscTransport::connect(target, &PcscOptions::default()).expect("connect"))
        }
        "--emulate" => {
            let profile = Profile::load(Path::new(target)).expect("profile");
            Box::new(InProcess::new(profile.build_card().expect("card"), "bench"))
        }
        other => panic!("unknown transport {other}"),
    };
    let mut link = Link::new(transport);
    let select = Command::new(0x00, 0xA4, 0x00, 0x0C).with_data(&[0x2F, 0xE2]);
    let read = Command::new(0x00, 0xB0, 0x00, 0x00).with_ne(10);
    let start = Instant::now();
    for _ in 0..n {
        let r = link.transmit(&select).expect("SELECT");
        assert_eq!(r.status, Status::Success);
        let r = link.transmit(&read).expect("READ BINARY");
        assert_eq!((r.status, r.data.len()), (Status::Success, 10));
    }
    let rate = (2 * n) as f64 / start.elapsed().as_secs_f64();
    println!("{kind} {rate:.0}");
}
