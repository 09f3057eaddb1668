//! The lm3s6965evb's hardware as QEMU models it: UART0 (the APDU link), SysTick (time and the
//! benchmark counter), and a stack high-water mark.

use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::interrupt::InterruptNumber;
use cortex_m::peripheral::NVIC;

/// UART0 of the LM3S6965 (a PL011).
const UART0: usize = 0x4000_C000;
const DR: usize = 0x000;
const FR: usize = 0x018;
const LCRH: usize = 0x02C;
const CTL: usize = 0x030;
const IM: usize = 0x038;
const FR_RXFE: u32 = 1 << 4;
const FR_TXFF: u32 = 1 << 5;
/// 8 data bits, FIFOs off: a byte raises the receive interrupt at once.
const LCRH_WLEN8: u32 = 0b11 << 5;
const CTL_UARTEN: u32 = 1 << 0;
const CTL_TXE: u32 = 1 << 8;
const CTL_RXE: u32 = 1 << 9;
const IM_RX: u32 = 1 << 4;

/// UART0's interrupt on the LM3S6965.
#[derive(Clone, Copy)]
struct Uart0Irq;

// SAFETY: 5 is UART0's position in the LM3S6965 vector table.
unsafe impl InterruptNumber for Uart0Irq {
    fn number(self) -> u16 {
        5
    }
}

fn reg(offset: usize) -> *mut u32 {
    (UART0 + offset) as *mut u32
}

/// UART0 as an embedded-io byte stream. Reads sleep (WFI) until a byte arrives, so an idle
/// token costs the host no CPU.
pub struct Uart(());

impl Uart {
    /// Takes UART0 (once, from `main`).
    pub fn new() -> Self {
        // SAFETY: UART0's registers, configured once before use; QEMU needs no baud rate.
        unsafe {
            write_volatile(reg(CTL), 0);
            write_volatile(reg(LCRH), LCRH_WLEN8);
            write_volatile(reg(IM), 0);
            write_volatile(reg(CTL), CTL_UARTEN | CTL_TXE | CTL_RXE);
            // The interrupt only wakes WFI inside a critical section and is unpended before
            // the section ends: it is never taken.
            NVIC::unmask(Uart0Irq);
        }
        Uart(())
    }

    fn rx_empty() -> bool {
        // SAFETY: reading FR has no side effects.
        unsafe { read_volatile(reg(FR)) & FR_RXFE != 0 }
    }

    /// Sleeps until the receive FIFO holds a byte.
    fn wait_for_byte() {
        cortex_m::interrupt::free(|_| {
            // SAFETY: UART0 registers; the NVIC pending bit of our own interrupt.
            unsafe {
                write_volatile(reg(IM), IM_RX);
                if Self::rx_empty() {
                    // With interrupts masked WFI still wakes on a pending interrupt.
                    cortex_m::asm::wfi();
                }
                write_volatile(reg(IM), 0);
            }
            NVIC::unpend(Uart0Irq);
        });
    }
}

impl embedded_io::ErrorType for Uart {
    type Error = core::convert::Infallible;
}

impl embedded_io::Read for Uart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        if buf.is_empty() {
            return Ok(0);
        }
        while Self::rx_empty() {
            Self::wait_for_byte();
        }
        let mut n = 0;
        while n < buf.len() && !Self::rx_empty() {
            // SAFETY: reading DR pops one byte; bits 8-11 are error flags, dropped here (the
            // deframer rejects whatever a line error garbled).
            buf[n] = unsafe { read_volatile(reg(DR)) } as u8;
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        for &b in buf {
            // SAFETY: FR is read-only status; writing DR queues one byte.
            unsafe {
                while read_volatile(reg(FR)) & FR_TXFF != 0 {}
                write_volatile(reg(DR), b as u32);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// SysTick wraps (24-bit counter), counted by the SysTick exception.
static WRAPS: AtomicU32 = AtomicU32::new(0);
const RELOAD: u32 = 0x00FF_FFFF;

/// The SysTick exception: one more wrap.
pub fn on_systick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// Nanoseconds of QEMU virtual time per SysTick tick (CLKSOURCE = core) on QEMU 7.2's
/// lm3s6965evb. Measured, not taken from the datasheet: a loop of exactly 20,000,001
/// instructions under `-icount shift=0` (1 instruction = 1 ns) spans 250,000 ticks; QEMU
/// programs its 12 MHz system clock as a whole number of nanoseconds per tick.
pub const TICK_NS: u64 = 80;

/// Time since boot, from SysTick (a handle: copies share the one SysTick).
#[derive(Clone, Copy)]
pub struct Clock(());

impl Clock {
    /// Starts SysTick free-running with its wrap interrupt.
    pub fn new(mut syst: cortex_m::peripheral::SYST) -> Self {
        use cortex_m::peripheral::syst::SystClkSource;
        syst.set_clock_source(SystClkSource::Core);
        syst.set_reload(RELOAD);
        syst.clear_current();
        syst.enable_interrupt();
        syst.enable_counter();
        Clock(())
    }

    /// SysTick ticks since boot.
    pub fn ticks(&self) -> u64 {
        loop {
            let before = WRAPS.load(Ordering::Relaxed);
            let current = cortex_m::peripheral::SYST::get_current();
            if WRAPS.load(Ordering::Relaxed) == before {
                return ((before as u64) << 24) | (RELOAD - current) as u64;
            }
        }
    }

    /// Nanoseconds of (QEMU virtual) time since boot.
    pub fn nanos(&self) -> u64 {
        self.ticks() * TICK_NS
    }
}

impl embedded_hal::delay::DelayNs for Clock {
    fn delay_ns(&mut self, ns: u32) {
        let end = self.nanos() + ns as u64;
        while self.nanos() < end {}
    }
}

/// The benchmark counter: nanoseconds of QEMU's virtual clock, which `-icount shift=0` makes
/// advance by exactly 1 ns per instruction — so under icount this counts instructions.
pub struct VirtualNanos(pub Clock);

impl simlab_firmware::Counter for VirtualNanos {
    const UNIT: Option<&'static str> = Some("qemu-virtual-ns");
    fn now(&mut self) -> u64 {
        self.0.nanos()
    }
}

unsafe extern "C" {
    /// End of .bss/.uninit: the lowest address the stack may reach (cortex-m-rt).
    static mut __sheap: u32;
    /// Top of RAM, where the stack starts (cortex-m-rt).
    static mut _stack_start: u32;
}

const PAINT: u32 = 0x5AFE_C0DE;

/// Fills the unused stack with a pattern, so [`stack_peak`] can tell how deep it went.
pub fn paint_stack() {
    let sp = cortex_m::register::msp::read() as usize;
    let bottom = core::ptr::addr_of_mut!(__sheap) as usize;
    // Leave what `main` already uses (and a margin for this function's own frame).
    let top = sp.saturating_sub(64);
    let mut p = bottom;
    while p < top {
        // SAFETY: between the end of static RAM and below the live stack: unused memory.
        unsafe { write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// The deepest the stack has been since [`paint_stack`], in bytes.
pub fn stack_peak() -> u32 {
    let bottom = core::ptr::addr_of_mut!(__sheap) as usize;
    let top = core::ptr::addr_of_mut!(_stack_start) as usize;
    let mut p = bottom;
    // SAFETY: reads of RAM between the end of statics and the top of the stack.
    while p < top && unsafe { read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    (top - p) as u32
}
