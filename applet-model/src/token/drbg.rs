//! HMAC_DRBG with SHA-256 (NIST SP 800-90A Rev. 1, 10.1.2), the token's only source of
//! randomness.
//!
//! A card has no operating system to ask for entropy: the token is seeded once, at
//! personalisation, with 32 bytes that are unique per card (the host draws them from the OS
//! RNG, a microcontroller from its TRNG), and from then on the DRBG's working state (Key, V,
//! reseed counter) is part of the card's persistent state. Every request ends with the
//! generate function's own update step, so the state advances after every use and a restart
//! from the saved state never replays output that was already handed out.
//!
//! No allocation, no panics: the only failure is the reseed counter running out (after 2^48
//! requests, which a card cannot reach), reported as [`DrbgError::ReseedRequired`].

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Output length of the underlying hash (`outlen` in SP 800-90A).
pub const OUT_LEN: usize = 32;

/// Bytes of the serialised working state: Key, V and the reseed counter.
pub const STATE_LEN: usize = OUT_LEN + OUT_LEN + 8;

/// SP 800-90A Table 2: at most 2^48 generate requests between reseeds.
const RESEED_INTERVAL: u64 = 1 << 48;

/// SP 800-90A Table 2: at most 2^19 bits (64 KiB) per generate request.
pub const MAX_REQUEST: usize = 1 << 16;

/// Distinguishes this DRBG instance from any other use of the same seed.
const PERSONALIZATION: &[u8] = b"simlab token HMAC_DRBG v1";

/// Why the DRBG cannot produce output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrbgError {
    /// The reseed counter passed the reseed interval: fresh entropy is required.
    ReseedRequired,
    /// More than [`MAX_REQUEST`] bytes were asked for in one request.
    RequestTooLong,
}

impl core::fmt::Display for DrbgError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            DrbgError::ReseedRequired => "DRBG reseed required",
            DrbgError::RequestTooLong => "DRBG request too long",
        })
    }
}

impl core::error::Error for DrbgError {}

/// The DRBG's working state. Not `Copy`, so that randomness is never duplicated by accident.
#[derive(Clone)]
pub struct HmacDrbg {
    key: [u8; OUT_LEN],
    v: [u8; OUT_LEN],
    reseed_counter: u64,
}

impl core::fmt::Debug for HmacDrbg {
    /// The working state is as secret as the keys it produces.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("HmacDrbg")
            .field("reseed_counter", &self.reseed_counter)
            .finish_non_exhaustive()
    }
}

/// HMAC-SHA-256 keyed with `key` over the concatenation of `parts`.
fn hmac(key: &[u8; OUT_LEN], parts: &[&[u8]]) -> [u8; OUT_LEN] {
    // A 32-byte key is always accepted by HMAC: the fallback is unreachable.
    let Ok(mut mac) = HmacSha256::new_from_slice(key) else {
        return [0; OUT_LEN];
    };
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

impl HmacDrbg {
    /// Instantiate (10.1.2.3) from `entropy ‖ nonce ‖ personalization`, with simlab's own
    /// personalization string appended so the token's stream is specific to this use.
    pub fn new(entropy: &[u8], nonce: &[u8]) -> Self {
        Self::instantiate(entropy, nonce, PERSONALIZATION)
    }

    /// Instantiate exactly as SP 800-90A specifies (used directly by the CAVP test vectors).
    pub fn instantiate(entropy: &[u8], nonce: &[u8], personalization: &[u8]) -> Self {
        let mut drbg = HmacDrbg {
            key: [0x00; OUT_LEN],
            v: [0x01; OUT_LEN],
            reseed_counter: 1,
        };
        drbg.update(&[entropy, nonce, personalization]);
        drbg
    }

    /// Reseed (10.1.2.4): mixes fresh entropy in and restarts the counter.
    pub fn reseed(&mut self, entropy: &[u8], additional: &[u8]) {
        self.update(&[entropy, additional]);
        self.reseed_counter = 1;
    }

    /// The update function (10.1.2.2); `provided` is the concatenation of its parts.
    fn update(&mut self, provided: &[&[u8]]) {
        let empty = provided.iter().all(|p| p.is_empty());
        for round in [0x00u8, 0x01] {
            if round == 0x01 && empty {
                break;
            }
            let mut mac = match HmacSha256::new_from_slice(&self.key) {
                Ok(mac) => mac,
                Err(_) => return,
            };
            mac.update(&self.v);
            mac.update(&[round]);
            for part in provided {
                mac.update(part);
            }
            self.key = mac.finalize().into_bytes().into();
            self.v = hmac(&self.key, &[&self.v]);
        }
    }

    /// Generate (10.1.2.5): fills `out`, then updates the state with `additional` so the
    /// next request, and any restart from the saved state, continues from fresh values.
    pub fn generate(&mut self, out: &mut [u8], additional: &[u8]) -> Result<(), DrbgError> {
        if self.reseed_counter > RESEED_INTERVAL {
            return Err(DrbgError::ReseedRequired);
        }
        if out.len() > MAX_REQUEST {
            return Err(DrbgError::RequestTooLong);
        }
        if !additional.is_empty() {
            self.update(&[additional]);
        }
        for chunk in out.chunks_mut(OUT_LEN) {
            self.v = hmac(&self.key, &[&self.v]);
            let n = chunk.len();
            chunk.copy_from_slice(self.v.get(..n).unwrap_or_default());
        }
        self.update(&[additional]);
        self.reseed_counter = self.reseed_counter.saturating_add(1);
        Ok(())
    }

    /// The working state for the card's persistent memory.
    pub fn save(&self, out: &mut [u8; STATE_LEN]) {
        let (key, rest) = out.split_at_mut(OUT_LEN);
        let (v, counter) = rest.split_at_mut(OUT_LEN);
        key.copy_from_slice(&self.key);
        v.copy_from_slice(&self.v);
        counter.copy_from_slice(&self.reseed_counter.to_be_bytes());
    }

    /// A DRBG continuing from a saved working state; `None` for a counter no DRBG can have.
    pub fn restore(bytes: &[u8; STATE_LEN]) -> Option<Self> {
        let (key, rest) = bytes.split_first_chunk::<OUT_LEN>()?;
        let (v, counter) = rest.split_first_chunk::<OUT_LEN>()?;
        let counter = <[u8; 8]>::try_from(counter).ok()?;
        let reseed_counter = u64::from_be_bytes(counter);
        (1..=RESEED_INTERVAL.saturating_add(1))
            .contains(&reseed_counter)
            .then_some(HmacDrbg {
                key: *key,
                v: *v,
                reseed_counter,
            })
    }
}

/// `rand_core` access, so key generation APIs (`SigningKey::try_generate_from_rng`) draw from
/// the DRBG directly. Each call is one generate request, and so advances the state.
impl rand_core::TryRng for HmacDrbg {
    type Error = DrbgError;

    fn try_next_u32(&mut self) -> Result<u32, DrbgError> {
        let mut b = [0u8; 4];
        self.generate(&mut b, &[])?;
        Ok(u32::from_le_bytes(b))
    }

    fn try_next_u64(&mut self) -> Result<u64, DrbgError> {
        let mut b = [0u8; 8];
        self.generate(&mut b, &[])?;
        Ok(u64::from_le_bytes(b))
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), DrbgError> {
        for chunk in dst.chunks_mut(MAX_REQUEST) {
            self.generate(chunk, &[])?;
        }
        Ok(())
    }
}

/// HMAC_DRBG is a CSPRNG when seeded with enough entropy (SP 800-90A).
impl rand_core::TryCryptoRng for HmacDrbg {}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> [u8; 128] {
        let mut out = [0u8; 128];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    fn unhex_vec<const N: usize>(s: &str) -> [u8; N] {
        let mut out = [0u8; N];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    /// NIST CAVP HMAC_DRBG.rsp, [SHA-256], no prediction resistance, no personalization,
    /// no additional input, COUNT = 0: instantiate, generate 1024 bits twice, the second
    /// output is ReturnedBits.
    #[test]
    fn cavp_sha256_count0() {
        let entropy: [u8; 32] =
            unhex_vec("ca851911349384bffe89de1cbdc46e6831e44d34a4fb935ee285dd14b71a7488");
        let nonce: [u8; 16] = unhex_vec("659ba96c601dc69fc902940805ec0ca8");
        let expected = unhex(concat!(
            "e528e9abf2dece54d47c7e75e5fe302149f817ea9fb4bee6f4199697d04d5b89",
            "d54fbb978a15b5c443c9ec21036d2460b6f73ebad0dc2aba6e624abf07745bc1",
            "07694bb7547bb0995f70de25d6b29e2d3011bb19d27676c07162c8b5ccde0668",
            "961df86803482cb37ed6d5c0bb8d50cf1f50d476aa0458bdaba806f48be9dcb8",
        ));
        let mut drbg = HmacDrbg::instantiate(&entropy, &nonce, &[]);
        let mut out = [0u8; 128];
        drbg.generate(&mut out, &[]).unwrap();
        assert_ne!(out, expected);
        drbg.generate(&mut out, &[]).unwrap();
        assert_eq!(out, expected);
    }

    #[test]
    fn saved_state_continues_the_stream_and_never_replays() {
        let mut a = HmacDrbg::new(&[7; 32], &[]);
        let mut first = [0u8; 32];
        a.generate(&mut first, &[]).unwrap();
        let mut saved = [0u8; STATE_LEN];
        a.save(&mut saved);
        let mut b = HmacDrbg::restore(&saved).unwrap();
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        a.generate(&mut x, &[]).unwrap();
        b.generate(&mut y, &[]).unwrap();
        assert_eq!(x, y, "a restored DRBG continues where it was saved");
        assert_ne!(x, first, "and never hands out what came before");
    }

    #[test]
    fn an_exhausted_counter_refuses_and_a_reseed_revives() {
        let mut drbg = HmacDrbg::new(&[1; 32], &[]);
        drbg.reseed_counter = RESEED_INTERVAL + 1;
        let mut out = [0u8; 4];
        assert_eq!(drbg.generate(&mut out, &[]), Err(DrbgError::ReseedRequired));
        drbg.reseed(&[2; 32], b"more");
        assert_eq!(drbg.generate(&mut out, &[]), Ok(()));
        let mut saved = [0u8; STATE_LEN];
        drbg.save(&mut saved);
        saved[STATE_LEN - 8..].fill(0);
        assert!(HmacDrbg::restore(&saved).is_none(), "counter 0 is invalid");
    }

    #[test]
    fn requests_too_long_are_refused() {
        let mut drbg = HmacDrbg::new(&[1; 32], &[]);
        let mut big = [0u8; MAX_REQUEST + 1];
        assert_eq!(drbg.generate(&mut big, &[]), Err(DrbgError::RequestTooLong));
        use rand_core::TryRng;
        assert_eq!(drbg.try_fill_bytes(&mut big), Ok(()));
    }
}
