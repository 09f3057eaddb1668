//! Persistent card state on NOR flash, safe against power cuts: two slots, A and B.
//!
//! The card state (keys, PIN/PUK/ADM counters, SQN window, files, token keys) is one byte
//! string of a few KiB (`simlab_applet::state`). Rewriting it in place would leave a half-old,
//! half-new state after a power cut — or none at all, between the erase and the write. So each
//! save goes to the slot that does *not* hold the current state:
//!
//! 1. erase the other slot (a cut here leaves it invalid; the current slot is untouched);
//! 2. write the payload (a cut leaves it invalid: no header yet);
//! 3. write the header last — magic, sequence number (current + 1), length, CRC-32 over
//!    sequence number, length and payload (a cut leaves a header that fails its CRC);
//! 4. read the slot back and compare, so a flash that silently failed is reported, not trusted.
//!
//! Loading picks the valid slot with the higher sequence number (compared with wrap-around), so
//! the result is always the old or the new state, never a mixture — tested by cutting power at
//! every program and erase step of a simulated flash (`tests` below and [`crate::testkit`]).
//!
//! Slot layout (all integers little-endian, the MCU's order):
//!
//! ```text
//! offset 0            : magic "SLS1" (4) | seq (4) | len (4) | crc32 (4)   header
//! offset header_area  : payload (len bytes), then erased (FF) to the slot's end
//! ```
//!
//! `header_area` is 16 bytes rounded up to the flash's write size, so the header is one write.
//! The wear cost is one slot erase per save; `docs/persistence.md` has the arithmetic.

use crate::crc::Crc32;
use embedded_storage::nor_flash::{NorFlash, NorFlashError, NorFlashErrorKind};

/// Marks a slot header of this layout.
pub const MAGIC: [u8; 4] = *b"SLS1";
/// Magic, sequence number, payload length, CRC-32.
pub const HEADER_LEN: usize = 16;
/// The largest write granularity supported (RP2040 programs 256-byte pages).
pub const MAX_WRITE_SIZE: usize = 256;
/// Bytes compared per read when verifying a write, and read per step when checking a CRC.
const CHUNK: usize = 64;

/// Why the store failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The region cannot hold two slots of the requested payload size, or is not aligned to
    /// erase blocks.
    BadGeometry,
    /// The payload is larger than a slot, or the load buffer smaller than the stored payload.
    TooLarge,
    /// The flash driver failed.
    Flash(NorFlashErrorKind),
    /// Reading back after a write did not give what was written.
    VerifyFailed,
}

impl core::fmt::Display for StoreError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            StoreError::BadGeometry => f.write_str("flash region too small or misaligned"),
            StoreError::TooLarge => f.write_str("state larger than a slot"),
            StoreError::Flash(kind) => write!(f, "flash error: {kind}"),
            StoreError::VerifyFailed => {
                f.write_str("flash read-back differs from what was written")
            }
        }
    }
}

fn flash_err<E: NorFlashError>(e: E) -> StoreError {
    StoreError::Flash(e.kind())
}

/// The slot holding the current state and its sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Current {
    slot: usize,
    seq: u32,
}

/// Two-slot store over the flash region `[base, base + 2 · slot_size)`.
pub struct Store<F> {
    flash: F,
    base: u32,
    slot_size: u32,
    current: Option<Current>,
}

/// `n` rounded up to a multiple of `to` (a power of two or not).
const fn round_up(n: usize, to: usize) -> usize {
    n.div_ceil(to) * to
}

impl<F: NorFlash> Store<F> {
    /// Bytes before the payload in a slot.
    pub const HEADER_AREA: usize = round_up(HEADER_LEN, F::WRITE_SIZE);

    /// The smallest region, in bytes, that holds two slots for a payload of `max_payload` bytes.
    pub const fn region_for(max_payload: usize) -> usize {
        2 * round_up(Self::HEADER_AREA + max_payload, F::ERASE_SIZE)
    }

    /// A store over `len` bytes at `base`, for payloads up to `max_payload` bytes. Nothing is
    /// read or written until [`Store::load`].
    pub fn new(flash: F, base: u32, len: u32, max_payload: usize) -> Result<Self, StoreError> {
        let erase = F::ERASE_SIZE as u32;
        let slot_size = (len / 2) / erase * erase;
        let fits = (base as usize)
            .checked_add(len as usize)
            .is_some_and(|end| end <= flash.capacity());
        if F::WRITE_SIZE == 0
            || F::WRITE_SIZE > MAX_WRITE_SIZE
            || !CHUNK.is_multiple_of(F::READ_SIZE)
            || !base.is_multiple_of(erase)
            || !fits
            || (slot_size as usize) < Self::HEADER_AREA + max_payload
        {
            return Err(StoreError::BadGeometry);
        }
        Ok(Store {
            flash,
            base,
            slot_size,
            current: None,
        })
    }

    /// The flash underneath (tests inspect it; boards may share it).
    pub fn flash(&mut self) -> &mut F {
        &mut self.flash
    }

    /// The region this store uses: (base, length).
    pub fn region(&self) -> (u32, u32) {
        (self.base, 2 * self.slot_size)
    }

    /// Gives the flash back.
    pub fn into_inner(self) -> F {
        self.flash
    }

    /// The largest payload a slot holds.
    pub fn capacity(&self) -> usize {
        self.slot_size as usize - Self::HEADER_AREA
    }

    /// How many times the current state has been saved (its sequence number), 0 if none.
    pub fn saves(&self) -> u32 {
        self.current.map_or(0, |c| c.seq)
    }

    fn slot_base(&self, slot: usize) -> u32 {
        self.base + slot as u32 * self.slot_size
    }

    /// Reads a slot's header and checks its payload CRC; returns (seq, len) if the slot is
    /// valid. With `out`, the payload is copied there as it is read (it must hold `len` bytes,
    /// else the slot counts as invalid for this caller).
    fn check_slot(
        &mut self,
        slot: usize,
        mut out: Option<&mut [u8]>,
    ) -> Result<Option<(u32, usize)>, StoreError> {
        let at = self.slot_base(slot);
        let mut header = [0u8; CHUNK];
        let header = &mut header[..round_up(HEADER_LEN, F::READ_SIZE)];
        self.flash.read(at, header).map_err(flash_err)?;
        if header[..4] != MAGIC {
            return Ok(None);
        }
        let word =
            |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
        let (seq, len, crc) = (word(4), word(8) as usize, word(12));
        if len > self.capacity() || out.as_ref().is_some_and(|b| len > b.len()) {
            return Ok(None);
        }
        let mut c = Crc32::new();
        c.update(&header[4..12]);
        // Read whole READ_SIZE units; the padding after the payload is not part of the CRC.
        let payload_at = at + Self::HEADER_AREA as u32;
        let mut done = 0;
        while done < len {
            let mut chunk = [0u8; CHUNK];
            let n = (len - done).min(CHUNK);
            let padded = round_up(n, F::READ_SIZE);
            self.flash
                .read(payload_at + done as u32, &mut chunk[..padded])
                .map_err(flash_err)?;
            if let Some(out) = out.as_deref_mut() {
                out[done..done + n].copy_from_slice(&chunk[..n]);
            }
            c.update(&chunk[..n]);
            done += n;
        }
        Ok((c.finish() == crc).then_some((seq, len)))
    }

    /// Finds the current state: the valid slot with the newer sequence number. Its payload is
    /// copied into `buf` and its length returned; `None` when no slot is valid (a new or
    /// erased device).
    pub fn load(&mut self, buf: &mut [u8]) -> Result<Option<usize>, StoreError> {
        self.current = None;
        let a = self.check_slot(0, None)?;
        let b = self.check_slot(1, None)?;
        let newer = |x: u32, y: u32| (x.wrapping_sub(y) as i32) > 0;
        let (slot, found) = match (a, b) {
            (Some((sa, _)), Some((sb, _))) if newer(sb, sa) => (1, b),
            (Some(_), _) => (0, a),
            (None, b) => (1, b),
        };
        let Some((seq, len)) = found else {
            return Ok(None);
        };
        if len > buf.len() {
            return Err(StoreError::TooLarge);
        }
        // Read it again into `buf`, checking the CRC again: what is restored is exactly what
        // was checked.
        if self.check_slot(slot, Some(buf))? != Some((seq, len)) {
            return Err(StoreError::VerifyFailed);
        }
        self.current = Some(Current { slot, seq });
        Ok(Some(len))
    }

    /// Writes `data` as the new state (see the module documentation for the order of steps).
    /// On error the previous state is still the one [`Store::load`] finds.
    pub fn save(&mut self, data: &[u8]) -> Result<(), StoreError> {
        if data.len() > self.capacity() {
            return Err(StoreError::TooLarge);
        }
        let (slot, seq) = match self.current {
            Some(c) => (1 - c.slot, c.seq.wrapping_add(1)),
            None => (0, 1),
        };
        let at = self.slot_base(slot);
        self.flash
            .erase(at, at + self.slot_size)
            .map_err(flash_err)?;
        let payload_at = at + Self::HEADER_AREA as u32;
        let whole = data.len() / F::WRITE_SIZE * F::WRITE_SIZE;
        if whole > 0 {
            self.flash
                .write(payload_at, &data[..whole])
                .map_err(flash_err)?;
        }
        if whole < data.len() {
            let mut tail = [0xFFu8; MAX_WRITE_SIZE];
            let rest = data.len() - whole;
            tail[..rest].copy_from_slice(&data[whole..]);
            self.flash
                .write(payload_at + whole as u32, &tail[..F::WRITE_SIZE])
                .map_err(flash_err)?;
        }
        let len = (data.len() as u32).to_le_bytes();
        let seq_bytes = seq.to_le_bytes();
        let mut c = Crc32::new();
        c.update(&seq_bytes);
        c.update(&len);
        c.update(data);
        let mut header = [0xFFu8; MAX_WRITE_SIZE];
        header[..4].copy_from_slice(&MAGIC);
        header[4..8].copy_from_slice(&seq_bytes);
        header[8..12].copy_from_slice(&len);
        header[12..16].copy_from_slice(&c.finish().to_le_bytes());
        self.flash
            .write(at, &header[..Self::HEADER_AREA])
            .map_err(flash_err)?;
        // Verify: the header and the payload as written.
        self.verify(at, &header[..HEADER_LEN])?;
        self.verify(payload_at, data)?;
        self.current = Some(Current { slot, seq });
        Ok(())
    }

    fn verify(&mut self, at: u32, expected: &[u8]) -> Result<(), StoreError> {
        let mut done = 0;
        while done < expected.len() {
            let mut chunk = [0u8; CHUNK];
            let n = (expected.len() - done).min(CHUNK);
            let padded = round_up(n, F::READ_SIZE);
            self.flash
                .read(at + done as u32, &mut chunk[..padded])
                .map_err(flash_err)?;
            if chunk[..n] != expected[done..done + n] {
                return Err(StoreError::VerifyFailed);
            }
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use crate::testkit::{SimFlash, Tear};
    use std::vec::Vec;

    const REGION: usize = 4096;
    type Flash = SimFlash<REGION>;

    fn state(tag: u8, len: usize) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(31) ^ tag).collect()
    }

    fn load(store: &mut Store<Flash>) -> Option<Vec<u8>> {
        let mut buf = [0u8; REGION];
        store.load(&mut buf).unwrap().map(|n| buf[..n].to_vec())
    }

    fn remount(flash: Flash) -> Store<Flash> {
        Store::new(flash, 0, REGION as u32, 1000).unwrap()
    }

    #[test]
    fn geometry_is_checked() {
        assert_eq!(
            Store::new(Flash::new(), 0, REGION as u32, 2100).err(),
            Some(StoreError::BadGeometry)
        );
        assert_eq!(
            Store::new(Flash::new(), 100, 2048, 100).err(),
            Some(StoreError::BadGeometry)
        );
        assert_eq!(
            Store::new(Flash::new(), 2048, REGION as u32, 100).err(),
            Some(StoreError::BadGeometry)
        );
        assert_eq!(Store::<Flash>::region_for(1000), 2 * 1024);
    }

    #[test]
    fn save_load_alternates_slots_and_counts() {
        let mut store = remount(Flash::new());
        assert_eq!(load(&mut store), None);
        for i in 0..5u8 {
            let s = state(i, 900 + i as usize);
            store.save(&s).unwrap();
            assert_eq!(store.saves(), i as u32 + 1);
            let mut again = remount(store.into_inner());
            assert_eq!(load(&mut again).as_deref(), Some(s.as_slice()));
            store = again;
        }
        assert_eq!(store.save(&[0; 2033]), Err(StoreError::TooLarge));
        store.save(&[0; 2032]).unwrap();
    }

    #[test]
    fn a_corrupted_newest_slot_falls_back_to_the_older() {
        let mut store = remount(Flash::new());
        store.save(&state(1, 500)).unwrap();
        store.save(&state(2, 500)).unwrap();
        let mut flash = store.into_inner();
        // Slot 1 holds the newest; flip one payload bit.
        flash.corrupt(2048 + 16 + 100);
        let mut store = remount(flash);
        assert_eq!(load(&mut store), Some(state(1, 500)));
        // The next save goes to the corrupted slot, never over the good one.
        store.save(&state(3, 500)).unwrap();
        assert_eq!(load(&mut remount(store.into_inner())), Some(state(3, 500)));
    }

    #[test]
    fn a_flash_that_lies_is_caught_by_the_read_back() {
        let mut flash = Flash::new();
        flash.stuck_bit = Some(2048 + 16 + 7);
        let mut store = remount(flash);
        store.save(&state(1, 300)).unwrap();
        assert_eq!(store.save(&state(2, 300)), Err(StoreError::VerifyFailed));
        assert_eq!(load(&mut remount(store.into_inner())), Some(state(1, 300)));
    }

    /// Cuts power at every program/erase step of a save, with every way the interrupted step
    /// can leave its bits, and checks the survivor is the old or the new state — then that the
    /// store keeps working from there.
    #[test]
    fn a_power_cut_at_every_step_leaves_the_old_or_the_new_state() {
        for history in 0..3u8 {
            // `history` saves happened before; the save under test is number history + 1.
            let mut base = remount(Flash::new());
            for h in 0..history {
                base.save(&state(h, 700 + h as usize * 40)).unwrap();
            }
            let old = load(&mut base);
            let flash = base.into_inner();
            let new = state(0x80 | history, 760);
            // Count the steps of an uninterrupted save.
            let mut probe = remount(flash.clone());
            load(&mut probe);
            probe.flash().steps = 0;
            probe.save(&new).unwrap();
            let total = probe.flash().steps;
            assert!(total > 10, "a save takes {total} steps");
            for cut in 0..=total {
                for tear in Tear::ALL {
                    let mut f = flash.clone();
                    f.steps = 0;
                    f.cut_after = Some(cut);
                    f.tear = tear;
                    let mut store = remount(f);
                    load(&mut store);
                    let result = store.save(&new);
                    let mut f = store.into_inner();
                    assert_eq!(result.is_ok(), cut >= total, "cut {cut}/{total}");
                    f.cut_after = None;
                    let mut after = remount(f);
                    let got = load(&mut after);
                    assert!(
                        got == old || got.as_deref() == Some(new.as_slice()),
                        "history {history}, cut at step {cut}/{total} ({tear:?}): neither old nor new"
                    );
                    if cut >= total {
                        assert_eq!(got.as_deref(), Some(new.as_slice()));
                    }
                    // Power is back: the store must accept the next save and keep it.
                    let next = state(0x40 | history, 650);
                    after.save(&next).unwrap();
                    assert_eq!(load(&mut remount(after.into_inner())), Some(next));
                }
            }
        }
    }

    /// A cut during a save after an earlier cut (repeated brown-outs) still leaves a state
    /// that was once complete.
    #[test]
    fn repeated_power_cuts_never_mix_states() {
        let mut store = remount(Flash::new());
        store.save(&state(1, 800)).unwrap();
        let good: [Vec<u8>; 3] = [state(1, 800), state(2, 800), state(3, 800)];
        let mut f = store.into_inner();
        for (i, cut) in [(1usize, 5u32), (2, 17), (1, 3), (2, 40), (1, 9), (2, 1)] {
            f.steps = 0;
            f.cut_after = Some(cut);
            f.tear = Tear::ALL[cut as usize % Tear::ALL.len()];
            let mut s = remount(f);
            load(&mut s);
            let _ = s.save(&good[i]);
            f = s.into_inner();
            f.cut_after = None;
            let mut s = remount(f);
            let got = load(&mut s).expect("a state survives");
            assert!(good.contains(&got));
            f = s.into_inner();
        }
    }
}
