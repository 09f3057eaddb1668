//! Bootstrapping a certificate from the subscriber's own authentication keys (seed 000,
//! messages 210–260), the card's half: the integrity key K, the MACs M1/M2/M3, and the
//! BOOTSTRAP BEGIN encodings. `docs/bootstrap-protocol.md` is the normative description; the
//! functions here are public so the host (mobile station, gateway, tests) uses the very same
//! encodings instead of a second implementation that could drift.
//!
//! Two ways to K, both ending in a 256-bit key used only for these MACs:
//!
//! - **GSM (A3/A8)**: one Kc has at most 64 bits of entropy (COMP128-1 only 54), so K comes
//!   from 2–4 triplets: `K = HMAC-SHA-256(Kc_1 ‖ … ‖ Kc_n, enc("simlab-boot-v1 K-gsm",
//!   RAND_1 ‖ … ‖ RAND_n))`.
//! - **USIM (AKA)**: exactly GBA_ME's Ks_NAF (TS 33.220 Annex B.3): `Ks = CK ‖ IK`,
//!   `K = KDF(Ks, "gba-me", RAND, IMPI, NAF_Id)` with the Annex B.2 KDF.
//!
//! `enc(f_1, …, f_n)` is the length-prefixed encoding `u16be(len f_1) ‖ f_1 ‖ … ‖ u16be(len
//! f_n) ‖ f_n`; the first field is always an ASCII label naming the value, so no MAC input of
//! one kind can be read as another.
//!
//! Every MAC is the full 32-byte HMAC-SHA-256 (no truncation): the messages are short and the
//! margin costs nothing.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Length of K and of every MAC.
pub const MAC_LEN: usize = 32;
/// RAND, as in A3/A8 and AKA.
pub const RAND_LEN: usize = 16;
/// AUTN (AKA).
pub const AUTN_LEN: usize = 16;
/// AUTS, returned on an AKA synchronisation failure.
pub const AUTS_LEN: usize = 14;
/// SRES (A3).
pub const SRES_LEN: usize = 4;
/// Kc (A8).
pub const KC_LEN: usize = 8;
/// RES is 4 to 16 bytes (TS 33.102 6.3.3).
pub const RES_MAX: usize = 16;
/// An uncompressed SEC1 P-256 point.
pub const PK_LEN: usize = 65;

/// The fewest GSM triplets K may come from: two Kc give at most 128 bits.
pub const MIN_RANDS: usize = 2;
/// The most GSM triplets one BOOTSTRAP BEGIN accepts.
pub const MAX_RANDS: usize = 4;
/// Longest restrictions field (opaque to the card: the gateway defines its encoding).
pub const RESTRICTIONS_MAX: usize = 127;
/// Longest alias (opaque to the card; the gateway expects UTF-8).
pub const ALIAS_MAX: usize = 64;
/// Longest IMPI (TS 23.003 NAI, UTF-8).
pub const IMPI_MAX: usize = 127;
/// Longest NAF_Id (FQDN ‖ 5-octet Ua security protocol identifier, TS 33.220 Annex H).
pub const NAF_ID_MAX: usize = 127;

/// The labels that open every length-prefixed MAC input.
pub mod label {
    /// First field of the GSM-path K derivation.
    pub const K_GSM: &[u8] = b"simlab-boot-v1 K-gsm";
    /// First field of M1's input.
    pub const M1: &[u8] = b"simlab-boot-v1 M1";
    /// First field of M2's input.
    pub const M2: &[u8] = b"simlab-boot-v1 M2";
    /// First field of M3's input.
    pub const M3: &[u8] = b"simlab-boot-v1 M3";
}

/// TS 33.220 Annex B.3: the function code and P0 of the GBA_ME NAF key derivation.
const GBA_FC: u8 = 0x01;
const GBA_ME: &[u8] = b"gba-me";

/// BER-TLV tags of the BOOTSTRAP BEGIN data field.
pub mod tag {
    /// RAND: 16 bytes; 2–4 times (GSM) or once (AKA), in order.
    pub const RAND: u8 = 0x80;
    /// AUTN: 16 bytes, AKA only.
    pub const AUTN: u8 = 0x81;
    /// M1: 32 bytes.
    pub const M1: u8 = 0x82;
    /// Restrictions: 0–127 bytes, optional (absent = empty).
    pub const RESTRICTIONS: u8 = 0x83;
    /// Alias: 0–64 bytes, optional (absent = empty).
    pub const ALIAS: u8 = 0x84;
    /// IMPI: 1–127 bytes, AKA only.
    pub const IMPI: u8 = 0x85;
    /// NAF_Id: 1–127 bytes, AKA only.
    pub const NAF_ID: u8 = 0x86;
    /// First byte of a successful BOOTSTRAP BEGIN response (as TS 31.102 AUTHENTICATE).
    pub const SUCCESS: u8 = 0xDB;
    /// First byte of an AKA synchronisation failure response, followed by LV(AUTS).
    pub const SYNC_FAILURE: u8 = 0xDC;
}

/// A MAC over the length-prefixed encoding of `fields`, keyed with `key`. `None` when a field
/// is longer than a two-byte length can say (never for the bounded fields of this protocol).
fn mac_fields(key: &[u8], fields: &[&[u8]]) -> Option<[u8; MAC_LEN]> {
    let mut mac = HmacSha256::new_from_slice(key).ok()?;
    for field in fields {
        let len = u16::try_from(field.len()).ok()?;
        mac.update(&len.to_be_bytes());
        mac.update(field);
    }
    Some(mac.finalize().into_bytes().into())
}

/// Concatenates up to [`MAX_RANDS`] fixed-size items into `buf`; `None` if there are more.
fn concat<'b, const N: usize>(items: &[[u8; N]], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    let total = items.len().checked_mul(N)?;
    let dst = buf.get_mut(..total)?;
    for (chunk, item) in dst.chunks_exact_mut(N).zip(items) {
        chunk.copy_from_slice(item);
    }
    Some(dst)
}

/// K on the GSM path, from `n` = 2–4 triplets' Kc and RAND (same order as sent in M1).
/// `None` for a count outside 2–4 or mismatched lengths.
pub fn k_gsm(kcs: &[[u8; KC_LEN]], rands: &[[u8; RAND_LEN]]) -> Option<[u8; MAC_LEN]> {
    if kcs.len() != rands.len() || !(MIN_RANDS..=MAX_RANDS).contains(&rands.len()) {
        return None;
    }
    let mut key_buf = [0u8; MAX_RANDS * KC_LEN];
    let mut rand_buf = [0u8; MAX_RANDS * RAND_LEN];
    let key = concat(kcs, &mut key_buf)?;
    let rands = concat(rands, &mut rand_buf)?;
    let k = mac_fields(key, &[label::K_GSM, rands]);
    key_buf.fill(0);
    core::hint::black_box(&key_buf);
    k
}

/// K on the USIM path: Ks_NAF of TS 33.220 Annex B.3, `KDF(CK ‖ IK, "gba-me", RAND, IMPI,
/// NAF_Id)` with `S = FC ‖ P0 ‖ L0 ‖ P1 ‖ L1 ‖ P2 ‖ L2 ‖ P3 ‖ L3` (lengths after values, as
/// 3GPP writes them). `None` when IMPI or NAF_Id exceed 65535 bytes.
pub fn k_gba(
    ck: &[u8; 16],
    ik: &[u8; 16],
    rand: &[u8; RAND_LEN],
    impi: &[u8],
    naf_id: &[u8],
) -> Option<[u8; MAC_LEN]> {
    let mut ks = [0u8; 32];
    ks[..16].copy_from_slice(ck);
    ks[16..].copy_from_slice(ik);
    let mut mac = HmacSha256::new_from_slice(&ks).ok()?;
    ks.fill(0);
    core::hint::black_box(&ks);
    mac.update(&[GBA_FC]);
    for p in [GBA_ME, &rand[..], impi, naf_id] {
        let len = u16::try_from(p.len()).ok()?;
        mac.update(p);
        mac.update(&len.to_be_bytes());
    }
    Some(mac.finalize().into_bytes().into())
}

/// M1 = MAC(K, {RAND}): the gateway's proof that it holds K (message 240).
pub fn m1(k: &[u8; MAC_LEN], rands: &[[u8; RAND_LEN]]) -> Option<[u8; MAC_LEN]> {
    let mut buf = [0u8; MAX_RANDS * RAND_LEN];
    mac_fields(k, &[label::M1, concat(rands, &mut buf)?])
}

/// M2 = MAC(K, {SRES}, PK, restrictions, alias): the mobile station's proof (message 250).
/// `responses` is SRES_1 ‖ … ‖ SRES_n on the GSM path and RES on the USIM path; absent
/// restrictions or alias are empty fields.
pub fn m2(
    k: &[u8; MAC_LEN],
    responses: &[u8],
    pk: &[u8; PK_LEN],
    restrictions: &[u8],
    alias: &[u8],
) -> Option<[u8; MAC_LEN]> {
    mac_fields(k, &[label::M2, responses, pk, restrictions, alias])
}

/// M3 = MAC(K, C): the gateway's proof that it issued certificate C (message 260).
pub fn m3(k: &[u8; MAC_LEN], certificate: &[u8]) -> Option<[u8; MAC_LEN]> {
    mac_fields(k, &[label::M3, certificate])
}

/// Constant-time comparison of a received MAC with the expected one.
pub fn mac_matches(expected: &[u8; MAC_LEN], received: &[u8]) -> bool {
    received.len() == MAC_LEN && bool::from(expected.ct_eq(received))
}

/// Which authentication K comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// A3/A8 with 2–4 RANDs (P1 = 01).
    Gsm,
    /// AKA with one RAND and AUTN, K as GBA Ks_NAF (P1 = 02).
    Aka,
}

impl Variant {
    /// The P1 of BOOTSTRAP BEGIN.
    pub const fn p1(self) -> u8 {
        match self {
            Variant::Gsm => 0x01,
            Variant::Aka => 0x02,
        }
    }

    /// The variant a P1 names.
    pub const fn from_p1(p1: u8) -> Option<Self> {
        match p1 {
            0x01 => Some(Variant::Gsm),
            0x02 => Some(Variant::Aka),
            _ => None,
        }
    }
}

/// Why a BOOTSTRAP BEGIN data field is not acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestError {
    /// A TLV runs past the end, uses a long-form length, or has an unknown tag.
    Malformed,
    /// A field has the wrong length or appears more often than allowed.
    BadField(u8),
    /// A required field (RAND, AUTN, M1, IMPI, NAF_Id) is missing, or the RAND count is wrong.
    Missing(u8),
    /// A field that belongs to the other variant.
    WrongVariant(u8),
    /// The same RAND twice: its Kc would add no entropy.
    RepeatedRand,
    /// The output buffer is too small (encoding only).
    BufferTooSmall,
}

/// The parameters of BOOTSTRAP BEGIN (message 240 plus the user's choices for 250).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BeginRequest<'a> {
    pub variant: Variant,
    rands: [[u8; RAND_LEN]; MAX_RANDS],
    rand_count: usize,
    /// AUTN, for [`Variant::Aka`].
    pub autn: Option<[u8; AUTN_LEN]>,
    pub m1: [u8; MAC_LEN],
    pub restrictions: &'a [u8],
    pub alias: &'a [u8],
    /// IMPI, for [`Variant::Aka`] (empty otherwise).
    pub impi: &'a [u8],
    /// NAF_Id, for [`Variant::Aka`] (empty otherwise).
    pub naf_id: &'a [u8],
}

impl<'a> BeginRequest<'a> {
    /// A GSM-path request; `None` unless 2–4 RANDs are given.
    pub fn gsm(
        rands: &[[u8; RAND_LEN]],
        m1: [u8; MAC_LEN],
        restrictions: &'a [u8],
        alias: &'a [u8],
    ) -> Option<Self> {
        if !(MIN_RANDS..=MAX_RANDS).contains(&rands.len()) {
            return None;
        }
        let mut all = [[0u8; RAND_LEN]; MAX_RANDS];
        all.get_mut(..rands.len())?.copy_from_slice(rands);
        Some(BeginRequest {
            variant: Variant::Gsm,
            rands: all,
            rand_count: rands.len(),
            autn: None,
            m1,
            restrictions,
            alias,
            impi: &[],
            naf_id: &[],
        })
    }

    /// A USIM-path (AKA / GBA) request.
    #[allow(clippy::too_many_arguments)]
    pub fn aka(
        rand: [u8; RAND_LEN],
        autn: [u8; AUTN_LEN],
        impi: &'a [u8],
        naf_id: &'a [u8],
        m1: [u8; MAC_LEN],
        restrictions: &'a [u8],
        alias: &'a [u8],
    ) -> Self {
        let mut rands = [[0u8; RAND_LEN]; MAX_RANDS];
        rands[0] = rand;
        BeginRequest {
            variant: Variant::Aka,
            rands,
            rand_count: 1,
            autn: Some(autn),
            m1,
            restrictions,
            alias,
            impi,
            naf_id,
        }
    }

    /// The RANDs, in the order they were sent.
    pub fn rands(&self) -> &[[u8; RAND_LEN]] {
        self.rands.get(..self.rand_count).unwrap_or_default()
    }

    /// Parses the data field of BOOTSTRAP BEGIN for `variant`.
    pub fn parse(variant: Variant, data: &'a [u8]) -> Result<Self, RequestError> {
        let mut req = BeginRequest {
            variant,
            rands: [[0; RAND_LEN]; MAX_RANDS],
            rand_count: 0,
            autn: None,
            m1: [0; MAC_LEN],
            restrictions: &[],
            alias: &[],
            impi: &[],
            naf_id: &[],
        };
        let (mut seen_m1, mut seen) = (false, 0u8);
        let mut rest = data;
        while let [t, len, body @ ..] = rest {
            let len = *len as usize;
            if len >= 0x80 {
                return Err(RequestError::Malformed);
            }
            let (value, next) = body.split_at_checked(len).ok_or(RequestError::Malformed)?;
            rest = next;
            // Every tag but RAND appears at most once.
            let bit = match *t {
                tag::RAND => 0,
                tag::AUTN..=tag::NAF_ID => 1u8 << (*t - tag::RAND),
                _ => return Err(RequestError::Malformed),
            };
            if seen & bit != 0 {
                return Err(RequestError::BadField(*t));
            }
            seen |= bit;
            let aka_only = matches!(*t, tag::AUTN | tag::IMPI | tag::NAF_ID);
            if aka_only && variant == Variant::Gsm {
                return Err(RequestError::WrongVariant(*t));
            }
            match *t {
                tag::RAND => {
                    let max = if variant == Variant::Gsm {
                        MAX_RANDS
                    } else {
                        1
                    };
                    let slot = req
                        .rands
                        .get_mut(req.rand_count)
                        .filter(|_| req.rand_count < max)
                        .ok_or(RequestError::BadField(tag::RAND))?;
                    *slot = value.try_into().map_err(|_| RequestError::BadField(*t))?;
                    req.rand_count += 1;
                }
                tag::AUTN => {
                    req.autn = Some(value.try_into().map_err(|_| RequestError::BadField(*t))?);
                }
                tag::M1 => {
                    req.m1 = value.try_into().map_err(|_| RequestError::BadField(*t))?;
                    seen_m1 = true;
                }
                tag::RESTRICTIONS => req.restrictions = value,
                tag::ALIAS if value.len() <= ALIAS_MAX => req.alias = value,
                tag::IMPI if !value.is_empty() && value.len() <= IMPI_MAX => req.impi = value,
                tag::NAF_ID if !value.is_empty() && value.len() <= NAF_ID_MAX => req.naf_id = value,
                other => return Err(RequestError::BadField(other)),
            }
        }
        if !rest.is_empty() {
            return Err(RequestError::Malformed);
        }
        let (min_rands, needs) = match variant {
            Variant::Gsm => (MIN_RANDS, [tag::M1].as_slice()),
            Variant::Aka => (1, [tag::AUTN, tag::M1, tag::IMPI, tag::NAF_ID].as_slice()),
        };
        if req.rand_count < min_rands {
            return Err(RequestError::Missing(tag::RAND));
        }
        if !seen_m1 {
            return Err(RequestError::Missing(tag::M1));
        }
        for &t in needs {
            if t != tag::M1 && seen & (1u8 << (t - tag::RAND)) == 0 {
                return Err(RequestError::Missing(t));
            }
        }
        let rands = req.rands();
        for (i, a) in rands.iter().enumerate() {
            if rands.iter().skip(i + 1).any(|b| a == b) {
                return Err(RequestError::RepeatedRand);
            }
        }
        Ok(req)
    }

    /// Writes the data field of BOOTSTRAP BEGIN into `out`, returning its length. Fields
    /// longer than the protocol allows are refused rather than truncated.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, RequestError> {
        let mut at = 0usize;
        let mut put = |t: u8, value: &[u8]| -> Result<(), RequestError> {
            let len = u8::try_from(value.len())
                .ok()
                .filter(|&l| l < 0x80)
                .ok_or(RequestError::BadField(t))?;
            let end = at
                .checked_add(2 + value.len())
                .ok_or(RequestError::BufferTooSmall)?;
            let dst = out.get_mut(at..end).ok_or(RequestError::BufferTooSmall)?;
            let (head, body) = dst.split_at_mut(2);
            head.copy_from_slice(&[t, len]);
            body.copy_from_slice(value);
            at = end;
            Ok(())
        };
        for rand in self.rands() {
            put(tag::RAND, rand)?;
        }
        if let Some(autn) = &self.autn {
            put(tag::AUTN, autn)?;
        }
        put(tag::M1, &self.m1)?;
        if !self.restrictions.is_empty() {
            put(tag::RESTRICTIONS, self.restrictions)?;
        }
        if !self.alias.is_empty() {
            if self.alias.len() > ALIAS_MAX {
                return Err(RequestError::BadField(tag::ALIAS));
            }
            put(tag::ALIAS, self.alias)?;
        }
        if self.variant == Variant::Aka {
            put(tag::IMPI, self.impi)?;
            put(tag::NAF_ID, self.naf_id)?;
        }
        Ok(at)
    }
}

/// What BOOTSTRAP BEGIN answered (message 250's content, or the AUTS for a resync).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BeginResponse<'a> {
    /// M1 was right: SRES_1 ‖ … ‖ SRES_n (GSM) or RES (AKA), the public key and M2.
    Success {
        responses: &'a [u8],
        public_key: &'a [u8; PK_LEN],
        m2: &'a [u8; MAC_LEN],
    },
    /// AKA only: AUTN's sequence number was not fresh; AUTS lets the AuC resynchronise.
    SyncFailure { auts: &'a [u8; AUTS_LEN] },
}

impl<'a> BeginResponse<'a> {
    /// Parses the response data of BOOTSTRAP BEGIN; `None` when it is malformed.
    pub fn parse(data: &'a [u8]) -> Option<Self> {
        match data {
            [tag::SUCCESS, n, rest @ ..] => {
                let (responses, rest) = rest.split_at_checked(*n as usize)?;
                let (public_key, rest) = rest.split_first_chunk::<PK_LEN>()?;
                let m2: &[u8; MAC_LEN] = rest.try_into().ok()?;
                (!responses.is_empty()).then_some(BeginResponse::Success {
                    responses,
                    public_key,
                    m2,
                })
            }
            [tag::SYNC_FAILURE, 14, auts @ ..] => Some(BeginResponse::SyncFailure {
                auts: auts.try_into().ok()?,
            }),
            _ => None,
        }
    }
}
