//! simlab-firmware on Nordic's nRF52840-DK (PCA10056): a real secure token.
//!
//! | function | nRF52840 | on the DK |
//! |---|---|---|
//! | APDU link | UARTE0, 115200 8N1, RTS/CTS | TXD P0.06, RXD P0.08, RTS P0.05, CTS P0.07: the J-Link OB's virtual COM port (`/dev/ttyACM0`) |
//! | token seed | RNG peripheral (thermal-noise TRNG, bias correction on) | |
//! | card state | NVMC, the last 16 KiB of flash (4 KiB pages) | |
//! | user presence | P0.11, pull-up, active low | Button 1 |
//! | "press the button" | P0.13, active low | LED 1 |
//! | benchmark counter | DWT CYCCNT, 64 MHz core cycles | |
//!
//! `simlab --serial /dev/ttyACM0 …` then talks to it; personalise a new one with
//! `cargo run -p simlab-firmware --example personalise -- --profile P --serial /dev/ttyACM0`.
#![no_std]
#![no_main]

use core::ptr::{addr_of_mut, read_volatile, write_volatile};
use cortex_m_rt::entry;
use hal::gpio::{Level, p0};
use hal::uarte::{Baudrate, Parity, Pins, Uarte};
use nrf52840_hal as hal;
use simlab_applet::state::STATE_LEN;
use simlab_firmware::store::Store;
use simlab_firmware::{BoardConfig, Counter, DEFAULT_PRESENCE_TIMEOUT_MS, Firmware, Parts};

type Nvmc = hal::nvmc::Nvmc<hal::pac::NVMC>;

/// The flash the card state uses: two slots in 4 KiB pages.
const STATE_REGION: usize = Store::<Nvmc>::region_for(STATE_LEN);

unsafe extern "C" {
    /// The STATE region of memory.x.
    static mut _state_start: u8;
    static _state_len: u8;
    /// End of .bss/.uninit and top of RAM (cortex-m-rt), for the stack high-water mark.
    static mut __sheap: u32;
    static mut _stack_start: u32;
}

const BOARD: BoardConfig = BoardConfig {
    name: "nrf52840-dk",
    atr: simlab_applet::card::SIMLAB_ATR,
    test_flags: 0,
    presence_timeout_ms: DEFAULT_PRESENCE_TIMEOUT_MS,
    button_active_low: true,
    led_active_low: true,
    stack_peak: Some(stack_peak),
};

/// The nRF52840 TRNG through rand_core 0.10 (the HAL implements 0.9).
struct Trng(hal::Rng);

impl rand_core::TryRng for Trng {
    type Error = core::convert::Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        Ok(self.0.random_u32())
    }
    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        Ok(self.0.random_u64())
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
        self.0.random(dst);
        Ok(())
    }
}

/// A true RNG: the peripheral samples thermal noise, with the hardware bias corrector on.
impl rand_core::TryCryptoRng for Trng {}

/// UARTE0 as one embedded-io stream.
struct Link {
    tx: hal::uarte::UarteTx<hal::pac::UARTE0>,
    rx: hal::uarte::UarteRx<hal::pac::UARTE0>,
}

impl embedded_io::ErrorType for Link {
    type Error = hal::uarte::Error;
}

impl embedded_io::Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        self.rx.read(buf)
    }
}

impl embedded_io::Write for Link {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.tx.write(buf)
    }
    fn flush(&mut self) -> Result<(), Self::Error> {
        self.tx.flush()
    }
}

/// DWT CYCCNT, widened to 64 bits (it wraps every 67 s at 64 MHz; a command takes far less).
struct Cycles {
    last: u32,
    high: u64,
}

impl Counter for Cycles {
    const UNIT: Option<&'static str> = Some("cycles");
    fn now(&mut self) -> u64 {
        let now = cortex_m::peripheral::DWT::cycle_count();
        if now < self.last {
            self.high += 1 << 32;
        }
        self.last = now;
        self.high | now as u64
    }
}

const PAINT: u32 = 0x5AFE_C0DE;

fn paint_stack() {
    let top = cortex_m::register::msp::read() as usize - 64;
    let mut p = addr_of_mut!(__sheap) as usize;
    while p < top {
        // SAFETY: between the end of static RAM and below the live stack: unused memory.
        unsafe { write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

fn stack_peak() -> u32 {
    let top = addr_of_mut!(_stack_start) as usize;
    let mut p = addr_of_mut!(__sheap) as usize;
    // SAFETY: reads of RAM between the end of statics and the top of the stack.
    while p < top && unsafe { read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    (top - p) as u32
}

#[entry]
fn main() -> ! {
    paint_stack();
    let Some(mut core) = cortex_m::Peripherals::take() else {
        reset()
    };
    let Some(p) = hal::pac::Peripherals::take() else {
        reset()
    };
    // The crystal: the UART's baud rate needs better than the RC oscillator's 1 %.
    let _clocks = hal::clocks::Clocks::new(p.CLOCK).enable_ext_hfosc();
    core.DCB.enable_trace();
    core.DWT.enable_cycle_counter();

    let port0 = p0::Parts::new(p.P0);
    let uarte = Uarte::new(
        p.UARTE0,
        Pins {
            txd: port0.p0_06.into_push_pull_output(Level::High).degrade(),
            rxd: port0.p0_08.into_floating_input().degrade(),
            cts: Some(port0.p0_07.into_floating_input().degrade()),
            rts: Some(port0.p0_05.into_push_pull_output(Level::High).degrade()),
        },
        Parity::EXCLUDED,
        Baudrate::BAUD115200,
    );
    let Some(tx_buf) = cortex_m::singleton!(: [u8; 64] = [0; 64]) else {
        reset()
    };
    let Some(rx_buf) = cortex_m::singleton!(: [u8; 1] = [0; 1]) else {
        reset()
    };
    let Ok((tx, rx)) = uarte.split(tx_buf, rx_buf) else {
        reset()
    };

    // SAFETY: memory.x reserves STATE for this and nothing else; it is page-aligned, and this
    // is the only reference to it.
    let state = unsafe {
        let len = core::ptr::addr_of!(_state_len) as usize;
        core::slice::from_raw_parts_mut(addr_of_mut!(_state_start), len)
    };
    if state.len() < STATE_REGION {
        reset()
    }
    let flash = Nvmc::new(p.NVMC, state);

    let parts = Parts {
        link: Link { tx, rx },
        flash,
        flash_base: 0,
        flash_len: STATE_REGION as u32,
        rng: Trng(hal::Rng::new(p.RNG)),
        button: port0.p0_11.into_pullup_input(),
        led: port0.p0_13.into_push_pull_output(Level::High),
        delay: hal::Delay::new(core.SYST),
        counter: Cycles { last: 0, high: 0 },
        // No display on the DK: SIGN REQUEST waits for button 1 as SIGN does, and the person
        // relies on the host's screen for what it says.
        console: simlab_firmware::NoConsole,
    };
    match Firmware::new(parts, BOARD) {
        Ok(mut fw) => fw.run(),
        // No RNG or no storage: nothing safe to do but try again from a reset.
        Err(_) => reset(),
    }
}

fn reset() -> ! {
    cortex_m::peripheral::SCB::sys_reset()
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    // A token that panicked resets; its state is in flash, and RAM secrets are lost.
    reset()
}
