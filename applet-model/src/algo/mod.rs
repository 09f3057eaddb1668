//! A3/A8 and AKA algorithms, shared by the card (applet side) and the AuC (host side).
//!
//! One implementation serves both ends on purpose: the card model and `simlab algo` can then
//! never disagree, and the test suite checks that one implementation against published vectors
//! and against libosmocore (`osmo-auc-gen`).

pub mod comp128;
pub mod conv;
pub mod milenage;
pub mod xor;

/// The authentication algorithm a card (or a subscriber record in the AuC) is provisioned with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// COMP128-1 (the original A3/A8; the low 10 bits of Kc are zero).
    Comp128v1,
    /// COMP128-2 (the low 10 bits of Kc are zero).
    Comp128v2,
    /// COMP128-3 (as v2 but with a full 64-bit Kc).
    Comp128v3,
    /// The GSM test algorithm of TS 51.010-1 A.4.1.2.
    Xor2g,
    /// The 3G test algorithm of TS 34.108 8.1.2.
    Xor3g,
    /// Milenage (TS 35.205/35.206).
    Milenage,
}

impl Algorithm {
    /// Every algorithm, in the order the CLI lists them.
    pub const ALL: [Algorithm; 6] = [
        Algorithm::Comp128v1,
        Algorithm::Comp128v2,
        Algorithm::Comp128v3,
        Algorithm::Xor2g,
        Algorithm::Xor3g,
        Algorithm::Milenage,
    ];

    /// The name used in profiles and on the command line.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Comp128v1 => "comp128v1",
            Algorithm::Comp128v2 => "comp128v2",
            Algorithm::Comp128v3 => "comp128v3",
            Algorithm::Xor2g => "xor2g",
            Algorithm::Xor3g => "xor3g",
            Algorithm::Milenage => "milenage",
        }
    }

    /// Parses a profile / CLI name; `None` for anything else.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether the algorithm has a 3G (AKA) mode: only those can answer a 3G-context AUTHENTICATE.
    pub const fn is_3g(self) -> bool {
        matches!(self, Algorithm::Xor3g | Algorithm::Milenage)
    }
}

/// The outputs of one 3G (AKA) run, kept together so that the card answer, the AuC record and
/// the GSM view (c2/c3) are all derived from the same computation.
///
/// RES has a variable length: Milenage gives 8 bytes, XOR-3G (like libosmocore) the full
/// 16-byte XDOUT. The length travels with the value so that `AUTHENTICATE` answers with exactly
/// what the AuC expects; that is why RES is reached through [`AkaVector::res`] rather than a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AkaVector {
    /// MAC-A (f1), the network's proof in AUTN.
    pub mac_a: [u8; 8],
    /// MAC-S (f1*), the card's proof in AUTS (only meaningful with the AMF the caller passed).
    pub mac_s: [u8; 8],
    res: [u8; 16],
    res_len: u8,
    /// CK (f3).
    pub ck: [u8; 16],
    /// IK (f4).
    pub ik: [u8; 16],
    /// AK (f5), masks SQN in AUTN.
    pub ak: [u8; 6],
    /// AK* (f5*), masks SQN_MS in AUTS.
    pub ak_star: [u8; 6],
}

impl AkaVector {
    /// Builds a vector; `res` longer than 16 bytes is cut to 16 (the longest RES TS 33.102
    /// allows), so the constructor has no failure path.
    pub(crate) fn new(
        mac_a: [u8; 8],
        mac_s: [u8; 8],
        res: &[u8],
        ck: [u8; 16],
        ik: [u8; 16],
        ak: [u8; 6],
        ak_star: [u8; 6],
    ) -> Self {
        let mut buf = [0u8; 16];
        let mut len = 0u8;
        for (dst, src) in buf.iter_mut().zip(res.iter()) {
            *dst = *src;
            len += 1;
        }
        AkaVector {
            mac_a,
            mac_s,
            res: buf,
            res_len: len,
            ck,
            ik,
            ak,
            ak_star,
        }
    }

    /// RES (f2) with its real length (8 bytes for Milenage, 16 for XOR-3G).
    pub fn res(&self) -> &[u8] {
        let len = usize::from(self.res_len).min(self.res.len());
        self.res.get(..len).unwrap_or(&self.res)
    }

    /// AUTN = (SQN ⊕ AK) ‖ AMF ‖ MAC-A. SQN and AMF must be the ones the vector was computed
    /// with, otherwise the card rejects the MAC.
    pub fn autn(&self, sqn: &[u8; 6], amf: &[u8; 2]) -> [u8; 16] {
        let mut autn = [0u8; 16];
        for i in 0..6 {
            autn[i] = sqn[i] ^ self.ak[i];
        }
        autn[6] = amf[0];
        autn[7] = amf[1];
        autn[8..].copy_from_slice(&self.mac_a);
        autn
    }

    /// AUTS = (SQN_MS ⊕ AK*) ‖ MAC-S, the payload of a synchronisation failure. Only valid if the
    /// vector was computed with SQN = SQN_MS and AMF = 0000 (TS 33.102 6.3.3 uses a dummy AMF).
    pub fn auts(&self, sqn_ms: &[u8; 6]) -> [u8; 14] {
        let mut auts = [0u8; 14];
        for i in 0..6 {
            auts[i] = sqn_ms[i] ^ self.ak_star[i];
        }
        auts[6..].copy_from_slice(&self.mac_s);
        auts
    }
}

/// SRES and Kc for any algorithm, so a card can answer RUN GSM ALGORITHM (and a 2G-context
/// AUTHENTICATE) whatever it is provisioned with: the 3G algorithms go through c2/c3
/// (TS 33.102 6.8.1.2), which is also what libosmocore does.
///
/// `None` only when the algorithm needs an OPc that is missing (Milenage), so a card with an
/// incomplete profile fails the command instead of answering with a made-up key.
pub fn run_2g(
    alg: Algorithm,
    ki: &[u8; 16],
    opc: Option<&[u8; 16]>,
    rand: &[u8; 16],
) -> Option<([u8; 4], [u8; 8])> {
    match alg {
        Algorithm::Comp128v1 => Some(comp128::comp128v1(ki, rand)),
        Algorithm::Comp128v2 => Some(comp128::comp128v2(ki, rand)),
        Algorithm::Comp128v3 => Some(comp128::comp128v3(ki, rand)),
        Algorithm::Xor2g => Some(xor::xor2g(ki, rand)),
        Algorithm::Xor3g => {
            let (res, ck, ik, _) = xor::Xor3g::new(ki).f2345(rand);
            Some((conv::c2(&res), conv::c3(&ck, &ik)))
        }
        Algorithm::Milenage => {
            let (res, ck, ik, _) = milenage::Milenage::new(ki, opc?).f2345(rand);
            Some((conv::c2(&res), conv::c3(&ck, &ik)))
        }
    }
}

/// The full AKA vector, for the USIM side of AUTHENTICATE and for the AuC.
///
/// `None` for the 2G-only algorithms (they have no MAC, so a 3G context cannot be authenticated
/// with them) and for Milenage without an OPc.
pub fn run_3g(
    alg: Algorithm,
    k: &[u8; 16],
    opc: Option<&[u8; 16]>,
    rand: &[u8; 16],
    sqn: &[u8; 6],
    amf: &[u8; 2],
) -> Option<AkaVector> {
    match alg {
        Algorithm::Xor3g => Some(xor::Xor3g::new(k).compute(rand, sqn, amf)),
        Algorithm::Milenage => Some(milenage::Milenage::new(k, opc?).compute(rand, sqn, amf)),
        Algorithm::Comp128v1 | Algorithm::Comp128v2 | Algorithm::Comp128v3 | Algorithm::Xor2g => {
            None
        }
    }
}

/// Test-only helpers: the published vectors live in `fixtures/vectors/` as data, shared with the
/// host-side tools, and are read here with a parser small enough to need neither std nor alloc.
#[cfg(test)]
pub(crate) mod testdata {
    /// TS 35.208 Milenage test sets (with the TS 55.205 GSM view where published).
    pub const MILENAGE_TS35208: &str =
        include_str!("../../../fixtures/vectors/milenage-ts35208.toml");
    /// COMP128 v1/v2/v3 vectors (REFERENCE.md plus osmo-auc-gen output).
    pub const COMP128: &str = include_str!("../../../fixtures/vectors/comp128.txt");

    /// Decodes hex into a fixed array; panics (test failure) on malformed data.
    pub fn hex<const N: usize>(s: &str) -> [u8; N] {
        let s = s.trim();
        let b = s.as_bytes();
        assert_eq!(b.len(), 2 * N, "hex length of {s:?}");
        let mut out = [0u8; N];
        for (i, o) in out.iter_mut().enumerate() {
            let nib = |c: u8| match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => panic!("bad hex digit in {s:?}"),
            };
            *o = (nib(b[2 * i]) << 4) | nib(b[2 * i + 1]);
        }
        out
    }

    /// One `[[set]]` table of the TOML fixture: up to 32 `key = "value"` pairs.
    pub struct Record<'a> {
        pairs: [(&'a str, &'a str); 32],
        len: usize,
    }

    impl<'a> Record<'a> {
        /// The value of `key`, if present.
        pub fn get(&self, key: &str) -> Option<&'a str> {
            self.pairs[..self.len]
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| *v)
        }

        /// The value of `key`, which must be present.
        pub fn str(&self, key: &str) -> &'a str {
            self.get(key)
                .unwrap_or_else(|| panic!("fixture record lacks {key:?}"))
        }

        /// The hex value of `key`, which must be present.
        pub fn hex<const N: usize>(&self, key: &str) -> [u8; N] {
            hex(self.str(key))
        }
    }

    /// Calls `f` for every `[[set]]` of a TOML fixture restricted to `key = "string"` lines and
    /// `#` comments (the only TOML the fixtures use). Returns the number of records.
    pub fn for_each_set(src: &str, mut f: impl FnMut(&Record<'_>)) -> usize {
        let mut rec = Record {
            pairs: [("", ""); 32],
            len: 0,
        };
        let mut open = false;
        let mut count = 0;
        for line in src.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line == "[[set]]" {
                if open {
                    f(&rec);
                    count += 1;
                }
                rec.len = 0;
                open = true;
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("bad fixture line {line:?}"));
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or_else(|| panic!("fixture values are strings: {line:?}"));
            assert!(open, "key outside [[set]]: {line:?}");
            assert!(rec.len < rec.pairs.len(), "too many keys in a fixture set");
            rec.pairs[rec.len] = (k.trim(), v);
            rec.len += 1;
        }
        if open {
            f(&rec);
            count += 1;
        }
        count
    }
}
