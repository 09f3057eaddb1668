//! simlab-firmware on QEMU's lm3s6965evb (TI Stellaris LM3S6965, Cortex-M3, 256 KiB flash,
//! 64 KiB RAM). **TEST-ONLY**: it exists so CI can run the firmware; it has no button and no
//! true RNG, and says so in its INFO flags, its ATR and its banner.
//!
//! - APDU link: UART0, which QEMU connects to the host (`-serial tcp:…`).
//! - Card state: a host file through semihosting (`flash=PATH`), so it survives a restart.
//! - User presence: simulated — a button pressed shortly after each request, or never
//!   (`presence=never`, to test the refusal).
//! - Console: what a SIGN REQUEST signs is shown on the semihosting output (QEMU's stderr),
//!   one `simlab-token: <line>` per line, before the (simulated) button is waited for.
//! - RNG: xorshift seeded from a compiled-in constant, the host's time and `seed=HEX`; NOT
//!   random, never a real token's.
//! - Benchmarks: SysTick as QEMU virtual-clock nanoseconds = instructions under
//!   `-icount shift=0`.
//!
//! Arguments come from `-semihosting-config enable=on,target=native,arg=simlab,arg=flash=…`.
#![no_std]
#![no_main]

mod flash;
mod hw;
mod semihosting;

use cortex_m_rt::{entry, exception};
use cortex_m_semihosting::{debug, heprintln};
use simlab_applet::state::STATE_LEN;
use simlab_firmware::link::flags;
use simlab_firmware::store::Store;
use simlab_firmware::testkit::ScriptedButton;
use simlab_firmware::{BoardConfig, Console, Firmware, Lifecycle, Parts};

/// The region for two state slots in 1 KiB pages.
const REGION: usize = Store::<flash::BoardFlash<0>>::region_for(STATE_LEN);
type Flash = flash::BoardFlash<REGION>;
const _: () = assert!(REGION == Store::<Flash>::region_for(STATE_LEN));

/// The ATR says "simlab-v1-TEST": 3B, T0 = TA1 present + 14 historical bytes, TA1 = 96.
const ATR: &[u8] = &[
    0x3B, 0x1E, 0x96, b's', b'i', b'm', b'l', b'a', b'b', b'-', b'v', b'1', b'-', b'T', b'E', b'S',
    b'T',
];

const BOARD: BoardConfig = BoardConfig {
    name: "qemu-lm3s6965evb",
    atr: ATR,
    test_flags: flags::TEST_PRESENCE | flags::TEST_RNG,
    presence_timeout_ms: 3_000,
    button_active_low: false,
    led_active_low: false,
    stack_peak: Some(hw::stack_peak),
};

/// Mixed into the test RNG's seed; public, like everything about this generator.
const TEST_SEED: u64 = 0x5349_4D4C_4142_5445; // "SIMLABTE"

/// xorshift64*: deterministic, NOT cryptographic. It claims `TryCryptoRng` only because the
/// firmware demands one; this board is test-only.
struct TestRng(u64);

impl rand_core::TryRng for TestRng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        self.try_next_u64().map(|v| (v >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        Ok(x.wrapping_mul(0x2545_F491_4F6C_DD1D))
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        for chunk in dst.chunks_mut(8) {
            let v = self.try_next_u64()?.to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        Ok(())
    }
}

impl rand_core::TryCryptoRng for TestRng {}

/// The LED of a board without one: does nothing.
struct NoLed;

impl embedded_hal::digital::ErrorType for NoLed {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::OutputPin for NoLed {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The console of a board without a display: semihosting output, which QEMU writes to its
/// stderr.
struct SemihostingConsole;

impl Console for SemihostingConsole {
    fn show(&mut self, line: &str) {
        heprintln!("simlab-token: {}", line);
    }
}

fn parse_hex_u64(s: &str) -> Option<u64> {
    u64::from_str_radix(s, 16).ok()
}

#[entry]
fn main() -> ! {
    hw::paint_stack();
    let core = cortex_m::Peripherals::take().unwrap_or_else(|| halt("peripherals taken"));
    let clock = hw::Clock::new(core.SYST);

    let mut cmdline_buf = [0u8; 512];
    let cmdline = semihosting::cmdline(&mut cmdline_buf);
    let mut path = [0u8; 400];
    let flash = match semihosting::arg(cmdline, "flash") {
        Some(p) if p.len() < path.len() => {
            path[..p.len()].copy_from_slice(p.as_bytes());
            Flash::open(&path[..=p.len()]).unwrap_or_else(|| halt("cannot open the flash file"))
        }
        _ => halt("needs a flash=PATH argument (the card state's file)"),
    };
    let (secs, centis) = semihosting::time();
    let seed = TEST_SEED
        ^ semihosting::arg(cmdline, "seed")
            .and_then(parse_hex_u64)
            .unwrap_or(0)
        ^ ((secs as u64) << 20)
        ^ centis as u64
        | 1;
    let button = match semihosting::arg(cmdline, "presence") {
        Some("never") => ScriptedButton::untouched(),
        _ => ScriptedButton::presses(),
    };

    let parts = Parts {
        link: hw::Uart::new(),
        flash,
        flash_base: 0,
        flash_len: REGION as u32,
        rng: TestRng(seed),
        button,
        led: NoLed,
        delay: clock,
        counter: hw::VirtualNanos(clock),
        console: SemihostingConsole,
    };
    let mut fw = match Firmware::new(parts, BOARD) {
        Ok(fw) => fw,
        Err(e) => {
            heprintln!("simlab-token: boot failed: {:?}", e);
            halt("boot failed")
        }
    };
    heprintln!(
        "simlab-token: qemu-lm3s6965evb TEST-ONLY firmware (simulated button, seeded RNG); state {} bytes in {} KiB of flash; {}",
        STATE_LEN,
        REGION / 1024,
        match fw.lifecycle() {
            Lifecycle::Personalised => "personalised",
            Lifecycle::Factory => "not personalised yet",
            Lifecycle::Unreadable => "stored state unreadable (another layout): personalise again",
        }
    );
    fw.run()
}

#[exception]
fn SysTick() {
    hw::on_systick();
}

/// Stops QEMU with a failure status (a real board would reset).
fn halt(why: &str) -> ! {
    heprintln!("simlab-token: {}", why);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    heprintln!("simlab-token: panic: {}", info);
    debug::exit(debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}
