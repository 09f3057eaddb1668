//! The QEMU board's "flash": QEMU does not save the lm3s6965's flash across runs, so this TEST
//! board keeps its state region in a host file through semihosting, with NOR semantics (erase
//! sets FF in 1 KiB pages, like the LM3S6965's; a program only clears bits). The file is
//! written through at every operation, so it survives QEMU being killed at any moment.

use crate::semihosting::File;
use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// The LM3S6965's flash page.
pub const PAGE: usize = 1024;
/// Bytes per program operation.
pub const WORD: usize = 4;
/// Bytes per semihosting transfer.
const CHUNK: usize = 256;

#[derive(Clone, Copy, Debug)]
pub enum FlashError {
    /// The host file could not be read or written.
    Host,
    /// Outside the region or misaligned.
    Bounds,
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            FlashError::Bounds => NorFlashErrorKind::OutOfBounds,
            FlashError::Host => NorFlashErrorKind::Other,
        }
    }
}

/// The state region, `N` bytes of a host file.
pub struct BoardFlash<const N: usize>(File);

impl<const N: usize> BoardFlash<N> {
    /// Opens (creating and erasing if new or short) the file at `path` (NUL-terminated).
    pub fn open(path: &[u8]) -> Option<Self> {
        let (file, created) = File::open_or_create(path)?;
        if created || file.len().is_none_or(|n| n < N) {
            let erased = [0xFFu8; CHUNK];
            for at in (0..N).step_by(CHUNK) {
                if !file.write_at(at, &erased[..CHUNK.min(N - at)]) {
                    return None;
                }
            }
        }
        Some(BoardFlash(file))
    }

    fn check(offset: u32, len: usize, align: usize) -> Result<usize, FlashError> {
        let at = offset as usize;
        if !at.is_multiple_of(align) || !len.is_multiple_of(align) || at + len > N {
            return Err(FlashError::Bounds);
        }
        Ok(at)
    }
}

impl<const N: usize> ErrorType for BoardFlash<N> {
    type Error = FlashError;
}

impl<const N: usize> ReadNorFlash for BoardFlash<N> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        let at = Self::check(offset, bytes.len(), 1)?;
        self.0
            .read_at(at, bytes)
            .then_some(())
            .ok_or(FlashError::Host)
    }

    fn capacity(&self) -> usize {
        N
    }
}

impl<const N: usize> NorFlash for BoardFlash<N> {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = PAGE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        let at = Self::check(from, (to as usize).saturating_sub(from as usize), PAGE)?;
        let erased = [0xFFu8; CHUNK];
        for p in (at..to as usize).step_by(CHUNK) {
            if !self.0.write_at(p, &erased) {
                return Err(FlashError::Host);
            }
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        let at = Self::check(offset, bytes.len(), WORD)?;
        // NOR programming only clears bits: AND with what is there.
        for (i, chunk) in bytes.chunks(CHUNK).enumerate() {
            let p = at + i * CHUNK;
            let mut cell = [0u8; CHUNK];
            let cell = &mut cell[..chunk.len()];
            if !self.0.read_at(p, cell) {
                return Err(FlashError::Host);
            }
            for (c, &b) in cell.iter_mut().zip(chunk) {
                *c &= b;
            }
            if !self.0.write_at(p, cell) {
                return Err(FlashError::Host);
            }
        }
        Ok(())
    }
}
