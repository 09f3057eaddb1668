//! Stand-ins for hardware, for host tests: a NOR flash that loses power on cue, and pins.
//!
//! They live in the library (not behind `cfg(test)`) so integration tests and the boards' own
//! host tests can use them; nothing here is linked into firmware that does not name it.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// How the step that the power cut interrupts is left.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tear {
    /// The step never started.
    Before,
    /// The step completed; the power went right after.
    After,
    /// The first half of the step's bytes were done.
    Half,
    /// Every byte of the step got some of its bits: an erase that left bits at 0, a program
    /// that cleared only some of the bits it should have.
    Bits,
}

impl Tear {
    pub const ALL: [Tear; 4] = [Tear::Before, Tear::After, Tear::Half, Tear::Bits];
}

/// Why a simulated flash operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SimError {
    /// The power was cut (this operation, or an earlier one).
    PowerLost,
    /// A write to bytes that were not erased: on real NOR flash that corrupts data, so the
    /// simulation refuses it (it would be a bug in the caller).
    NotErased,
    /// Outside the flash, or not aligned to READ/WRITE/ERASE_SIZE.
    Bounds,
}

impl NorFlashError for SimError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            SimError::PowerLost | SimError::NotErased => NorFlashErrorKind::Other,
            SimError::Bounds => NorFlashErrorKind::OutOfBounds,
        }
    }
}

/// A NOR flash of `N` bytes: 256-byte erase pages, 4-byte program words, erased = FF, a program
/// only clears bits. Every page erase and every word program is one *step*; with
/// [`SimFlash::cut_after`] set, the power fails at that step (left as [`SimFlash::tear`]
/// says) and every later operation fails until the field is cleared ("power back").
#[derive(Clone)]
pub struct SimFlash<const N: usize> {
    pub mem: [u8; N],
    /// Steps done so far.
    pub steps: u32,
    /// The 0-based step at which the power fails.
    pub cut_after: Option<u32>,
    pub tear: Tear,
    /// A bit (bit 0 of this byte) that always reads 0: a worn-out cell.
    pub stuck_bit: Option<usize>,
    /// Page erases done (wear).
    pub erases: u32,
}

impl<const N: usize> Default for SimFlash<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> SimFlash<N> {
    pub const PAGE: usize = 256;
    pub const WORD: usize = 4;

    /// A fully erased flash.
    pub const fn new() -> Self {
        SimFlash {
            mem: [0xFF; N],
            steps: 0,
            cut_after: None,
            tear: Tear::Before,
            stuck_bit: None,
            erases: 0,
        }
    }

    /// Flips bit 0 of one byte (corruption from outside: radiation, a bad cell).
    pub fn corrupt(&mut self, at: usize) {
        if let Some(b) = self.mem.get_mut(at) {
            *b ^= 1;
        }
    }

    fn powered(&self) -> bool {
        self.cut_after.is_none_or(|cut| self.steps <= cut)
    }

    /// Runs one step on `range`: `done` is what the step writes when it completes.
    fn step(
        &mut self,
        range: core::ops::Range<usize>,
        done: impl Fn(u8, usize) -> u8,
    ) -> Result<(), SimError> {
        if !self.powered() {
            return Err(SimError::PowerLost);
        }
        let cut_now = self.cut_after == Some(self.steps);
        self.steps += 1;
        if !cut_now {
            for i in range {
                self.mem[i] = done(self.mem[i], i);
            }
            return Ok(());
        }
        let half = range.start + range.len() / 2;
        match self.tear {
            Tear::Before => {}
            Tear::After => {
                for i in range {
                    self.mem[i] = done(self.mem[i], i);
                }
            }
            Tear::Half => {
                for i in range.start..half {
                    self.mem[i] = done(self.mem[i], i);
                }
            }
            Tear::Bits => {
                for i in range {
                    let (old, new) = (self.mem[i], done(self.mem[i], i));
                    // Bits that were moving change only where the mask allows.
                    let mask = 0xA5u8.rotate_left(i as u32 % 8);
                    self.mem[i] = (old & !mask) | (new & mask);
                }
            }
        }
        Err(SimError::PowerLost)
    }
}

impl<const N: usize> ErrorType for SimFlash<N> {
    type Error = SimError;
}

impl<const N: usize> ReadNorFlash for SimFlash<N> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
        if !self.powered() {
            return Err(SimError::PowerLost);
        }
        let start = offset as usize;
        let src = self
            .mem
            .get(start..start + bytes.len())
            .ok_or(SimError::Bounds)?;
        bytes.copy_from_slice(src);
        if let Some(at) = self.stuck_bit
            && (start..start + bytes.len()).contains(&at)
        {
            bytes[at - start] &= !1;
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        N
    }
}

impl<const N: usize> NorFlash for SimFlash<N> {
    const WRITE_SIZE: usize = Self::WORD;
    const ERASE_SIZE: usize = Self::PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        let (from, to) = (from as usize, to as usize);
        if from > to || to > N || !from.is_multiple_of(Self::PAGE) || !to.is_multiple_of(Self::PAGE)
        {
            return Err(SimError::Bounds);
        }
        for page in (from..to).step_by(Self::PAGE) {
            self.erases += 1;
            self.step(page..page + Self::PAGE, |_, _| 0xFF)?;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        let start = offset as usize;
        if !start.is_multiple_of(Self::WORD)
            || !bytes.len().is_multiple_of(Self::WORD)
            || start + bytes.len() > N
        {
            return Err(SimError::Bounds);
        }
        for (k, word) in bytes.chunks_exact(Self::WORD).enumerate() {
            let at = start + k * Self::WORD;
            if self.mem[at..at + Self::WORD].iter().any(|&b| b != 0xFF) {
                return Err(SimError::NotErased);
            }
            self.step(at..at + Self::WORD, |old, i| old & word[i - at])?;
        }
        Ok(())
    }
}

/// An input pin with a scripted level: pressed for `pressed_for` polls after `released_for`
/// polls, repeating; or fixed.
#[derive(Clone, Debug)]
pub struct ScriptedButton {
    pub released_for: u32,
    pub pressed_for: u32,
    /// Never pressed (overrides the script).
    pub never: bool,
    pub polls: u32,
}

impl ScriptedButton {
    /// A button someone presses shortly after each request.
    pub const fn presses() -> Self {
        ScriptedButton {
            released_for: 3,
            pressed_for: 3,
            never: false,
            polls: 0,
        }
    }

    /// A button nobody presses.
    pub const fn untouched() -> Self {
        ScriptedButton {
            released_for: 1,
            pressed_for: 0,
            never: true,
            polls: 0,
        }
    }

    /// A button stuck down (or held forever): never a fresh press.
    pub const fn stuck() -> Self {
        ScriptedButton {
            released_for: 0,
            pressed_for: 1,
            never: false,
            polls: 0,
        }
    }
}

impl embedded_hal::digital::ErrorType for ScriptedButton {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::InputPin for ScriptedButton {
    /// High = pressed (the core's default polarity).
    fn is_high(&mut self) -> Result<bool, Self::Error> {
        let period = self.released_for + self.pressed_for;
        let n = self.polls;
        self.polls = self.polls.wrapping_add(1);
        if self.never || period == 0 {
            return Ok(false);
        }
        Ok(n % period >= self.released_for)
    }

    fn is_low(&mut self) -> Result<bool, Self::Error> {
        self.is_high().map(|h| !h)
    }
}

/// An output pin that remembers its level and how often it was switched on.
#[derive(Clone, Debug, Default)]
pub struct RecordingLed {
    pub on: bool,
    pub times_on: u32,
}

impl embedded_hal::digital::ErrorType for RecordingLed {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::OutputPin for RecordingLed {
    fn set_high(&mut self) -> Result<(), Self::Error> {
        if !self.on {
            self.times_on += 1;
        }
        self.on = true;
        Ok(())
    }

    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.on = false;
        Ok(())
    }
}

/// A delay that only counts the time it was asked to wait (host tests run at full speed).
#[derive(Clone, Debug, Default)]
pub struct CountingDelay {
    pub waited_ns: u64,
}

impl embedded_hal::delay::DelayNs for CountingDelay {
    fn delay_ns(&mut self, ns: u32) {
        self.waited_ns += ns as u64;
    }
}

/// A deterministic generator for host tests (xorshift64*): NOT random. It claims
/// `TryCryptoRng` only because the firmware requires one.
#[derive(Clone, Debug)]
pub struct TestRng(pub u64);

impl rand_core::TryRng for TestRng {
    type Error = core::convert::Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
        self.try_next_u64().map(|v| (v >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
        let mut x = self.0 | 1;
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

/// A console that records what it was shown: the lines, each ended with `\n`, in a fixed
/// buffer (what does not fit is dropped and counted).
#[derive(Clone, Debug)]
pub struct RecordingConsole {
    buf: [u8; Self::CAPACITY],
    len: usize,
    /// Lines shown so far.
    pub lines: u32,
    /// Bytes that did not fit.
    pub dropped: usize,
}

impl Default for RecordingConsole {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordingConsole {
    pub const CAPACITY: usize = 4096;

    pub const fn new() -> Self {
        RecordingConsole {
            buf: [0; Self::CAPACITY],
            len: 0,
            lines: 0,
            dropped: 0,
        }
    }

    /// Everything shown, one line per `\n`.
    pub fn text(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<not UTF-8>")
    }

    /// Forgets what was shown.
    pub fn clear(&mut self) {
        self.len = 0;
        self.lines = 0;
        self.dropped = 0;
    }
}

impl crate::Console for RecordingConsole {
    fn show(&mut self, line: &str) {
        self.lines += 1;
        let need = line.len() + 1;
        if self.len + need > Self::CAPACITY {
            self.dropped += need;
            return;
        }
        self.buf[self.len..self.len + line.len()].copy_from_slice(line.as_bytes());
        self.buf[self.len + line.len()] = b'\n';
        self.len += need;
    }
}
