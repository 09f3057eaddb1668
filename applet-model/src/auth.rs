//! The subscriber side of authentication: the keys the card holds and the SQN window, and the
//! two procedures built on them — A3/A8 (2G) and AKA (TS 33.102 6.3.3).
//!
//! Both the SIM/USIM commands and the token applet's bootstrap use this one implementation, so
//! that Kc, CK and IK are derived where the keys are and never need to leave the card.

use crate::algo::{self, AkaVector, Algorithm};
use subtle::ConstantTimeEq;

/// The subscriber keys. They go in at personalisation and no command reads them back.
#[derive(Clone)]
pub struct Keys {
    pub algorithm: Algorithm,
    /// Ki (2G) or K (3G).
    pub ki: [u8; 16],
    /// OPc, required for Milenage.
    pub opc: Option<[u8; 16]>,
}

/// The USIM's record of accepted sequence numbers (TS 33.102 Annex C.2): one SEQ per IND slot
/// so that vectors used out of order in different VLRs/SGSNs are still accepted once each.
#[derive(Clone, Debug)]
pub struct SqnWindow {
    pub(crate) seq: [u64; SQN_SLOTS],
    pub(crate) highest: u64,
}

/// IND is the low 5 bits of SQN (TS 33.102 C.3.2 suggests a = 32 slots).
const IND_BITS: u32 = 5;
pub(crate) const SQN_SLOTS: usize = 1 << IND_BITS;
/// The largest jump ahead the card accepts (Δ in TS 33.102 C.2.1), so that a stolen vector far
/// in the future cannot be used to exhaust the sequence space.
const SQN_DELTA: u64 = 1 << 28;
const SQN_MASK: u64 = (1 << 48) - 1;

impl SqnWindow {
    pub(crate) fn new(highest: u64) -> Self {
        let highest = highest & SQN_MASK;
        let mut seq = [0; SQN_SLOTS];
        seq[(highest as usize) & (SQN_SLOTS - 1)] = highest >> IND_BITS;
        SqnWindow { seq, highest }
    }

    /// Accepts and records `sqn` when it is fresh; leaves the window unchanged otherwise.
    fn accept(&mut self, sqn: u64) -> bool {
        let slot = (sqn as usize) & (SQN_SLOTS - 1);
        let seq = sqn >> IND_BITS;
        let fresh = seq > self.seq[slot] && seq <= (self.highest >> IND_BITS) + SQN_DELTA;
        if fresh {
            self.seq[slot] = seq;
            if seq > self.highest >> IND_BITS {
                self.highest = sqn;
            }
        }
        fresh
    }

    /// SQN_MS, the highest sequence number accepted so far: what AUTS reports.
    pub fn highest(&self) -> u64 {
        self.highest
    }
}

/// A successful AKA: the card's answer and the session keys.
#[derive(Clone)]
pub struct AkaSuccess {
    /// RES with its real length ([`AkaVector::res`]).
    pub res: [u8; 16],
    pub res_len: usize,
    pub ck: [u8; 16],
    pub ik: [u8; 16],
    /// c3(CK, IK), for GSM access.
    pub kc: [u8; 8],
}

impl AkaSuccess {
    pub fn res(&self) -> &[u8] {
        &self.res[..self.res_len.min(16)]
    }
}

/// Why AKA did not succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AkaError {
    /// AUTN's MAC is wrong: the network is not genuine (9862).
    MacFailure,
    /// AUTN's SQN is not fresh; AUTS lets the network resynchronise.
    SyncFailure { auts: [u8; 14] },
    /// The card's algorithm is 2G only (9864).
    ContextNotSupported,
    /// Milenage without OPc: an incomplete personalisation.
    MissingKey,
}

/// The subscriber's keys and SQN state.
#[derive(Clone)]
pub struct Subscriber {
    pub keys: Keys,
    pub sqn: SqnWindow,
    /// Set when the SQN window changed and must be persisted.
    pub(crate) dirty: bool,
}

impl Subscriber {
    pub fn new(keys: Keys, sqn: u64) -> Self {
        Subscriber {
            keys,
            sqn: SqnWindow::new(sqn),
            dirty: false,
        }
    }

    /// A3/A8: SRES and Kc (3G algorithms through c2/c3). `None` when a key is missing.
    pub fn gsm(&self, rand: &[u8; 16]) -> Option<([u8; 4], [u8; 8])> {
        algo::run_2g(
            self.keys.algorithm,
            &self.keys.ki,
            self.keys.opc.as_ref(),
            rand,
        )
    }

    fn vector(&self, rand: &[u8; 16], sqn: &[u8; 6], amf: &[u8; 2]) -> Result<AkaVector, AkaError> {
        algo::run_3g(
            self.keys.algorithm,
            &self.keys.ki,
            self.keys.opc.as_ref(),
            rand,
            sqn,
            amf,
        )
        .ok_or(AkaError::MissingKey)
    }

    /// AKA (TS 33.102 6.3.3): check AUTN's MAC, then the freshness of its SQN; on success the
    /// SQN is recorded, so the same AUTN never succeeds twice.
    pub fn aka(&mut self, rand: &[u8; 16], autn: &[u8; 16]) -> Result<AkaSuccess, AkaError> {
        if !self.keys.algorithm.is_3g() {
            return Err(AkaError::ContextNotSupported);
        }
        let amf: [u8; 2] = [autn[6], autn[7]];
        // AK does not depend on SQN, so one run with a zero SQN yields it.
        let ak = self.vector(rand, &[0; 6], &amf)?.ak;
        let sqn: [u8; 6] = core::array::from_fn(|i| autn[i] ^ ak[i]);
        let v = self.vector(rand, &sqn, &amf)?;
        if !bool::from(v.mac_a.ct_eq(&autn[8..16])) {
            return Err(AkaError::MacFailure);
        }
        let sqn_value = u64::from_be_bytes([0, 0, sqn[0], sqn[1], sqn[2], sqn[3], sqn[4], sqn[5]]);
        if !self.sqn.accept(sqn_value) {
            // Resynchronisation: AUTS = (SQN_MS ⊕ AK*) ‖ MAC-S, with the dummy AMF 0000.
            let ms = self.sqn.highest().to_be_bytes();
            let sqn_ms: [u8; 6] = [ms[2], ms[3], ms[4], ms[5], ms[6], ms[7]];
            let resync = self.vector(rand, &sqn_ms, &[0, 0])?;
            return Err(AkaError::SyncFailure {
                auts: resync.auts(&sqn_ms),
            });
        }
        self.dirty = true;
        let (_, kc) = algo::conv::gsm_view(&v);
        let mut res = [0u8; 16];
        let len = v.res().len().min(16);
        res[..len].copy_from_slice(&v.res()[..len]);
        Ok(AkaSuccess {
            res,
            res_len: len,
            ck: v.ck,
            ik: v.ik,
            kc,
        })
    }
}
