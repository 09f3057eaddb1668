//! The kinds of card the model can be: simlab's own and the programmable cards labs buy.
//!
//! Each has the ATR by which tools recognise it, its ADM reference, its own file system
//! (`fs`: which files exist, their sizes and record lengths, factory contents) and its vendor
//! key files (REFERENCE.md), so a provisioning tool written for the real card is exercised end
//! to end against the model.

/// The ATR of simlab's own virtual card type: T=0 only (so no TCK), TA1 = 96, and "simlab-v1"
/// as proprietary historical bytes.
pub const SIMLAB_ATR: &[u8] = &[
    0x3B, 0x19, 0x96, b's', b'i', b'm', b'l', b'a', b'b', b'-', b'v', b'1',
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CardType {
    /// simlab's own: a Release 15 UICC (USIM with DF.5GS, ISIM) with ADM1 (0A), key files
    /// A515/6F20 and ADF.USIM/AF20 (algorithm ‖ Ki ‖ OPc), PIN1/PUK1 settable through A515/6F01.
    Simlab,
    /// sysmoSIM-GR1: a TS 51.011 SIM only; ADM is CHV 5; Ki by `80 D4 02 00 10 <Ki>`.
    SysmoSimGr1,
    /// sysmoUSIM-SJS1: ADM1 (0A); Ki in 7F20/00FF, OPc in 7F20/00F7 as 01 ‖ OPc.
    SysmoUsimSjs1,
    /// sysmoISIM-SJA2: ADM1 (0A); ICCID not writable; algorithm ‖ Ki ‖ OPc in A515/6F20,
    /// ADF.USIM/AF20 and ADF.ISIM/AF20, written whole or as Ki at offset 1 and OPc at 17.
    SysmoIsimSja2,
    /// sysmoISIM-SJA5: the SJA2's successor with the Release 15+ USIM files (DF_5GS, SUCI,
    /// DF_MCS) and an ISIM; the same key files, ADM1 and fixed ICCID.
    SysmoIsimSja5,
}

/// How many card types the file-system tables describe (their masks have one bit each).
pub const TYPE_COUNT: usize = 5;

impl CardType {
    pub const ALL: [CardType; 5] = [
        CardType::Simlab,
        CardType::SysmoSimGr1,
        CardType::SysmoUsimSjs1,
        CardType::SysmoIsimSja2,
        CardType::SysmoIsimSja5,
    ];

    /// The position of this type in the file-system tables.
    pub const fn index(self) -> usize {
        match self {
            CardType::Simlab => 0,
            CardType::SysmoSimGr1 => 1,
            CardType::SysmoUsimSjs1 => 2,
            CardType::SysmoIsimSja2 => 3,
            CardType::SysmoIsimSja5 => 4,
        }
    }

    /// This type's bit in the file-system tables' presence masks.
    pub const fn mask(self) -> u8 {
        1 << self.index()
    }

    /// The name used in profiles (`card_type`) and reports.
    pub const fn name(self) -> &'static str {
        match self {
            CardType::Simlab => "simlab",
            CardType::SysmoSimGr1 => "sysmoSIM-GR1",
            CardType::SysmoUsimSjs1 => "sysmoUSIM-SJS1",
            CardType::SysmoIsimSja2 => "sysmoISIM-SJA2",
            CardType::SysmoIsimSja5 => "sysmoISIM-SJA5",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// The ATR the real card sends, as public tools match it.
    pub const fn atr(self) -> &'static [u8] {
        match self {
            CardType::Simlab => SIMLAB_ATR,
            CardType::SysmoSimGr1 => &[
                0x3B, 0x99, 0x18, 0x00, 0x11, 0x88, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x60,
            ],
            CardType::SysmoUsimSjs1 => &[
                0x3B, 0x9F, 0x96, 0x80, 0x1F, 0xC7, 0x80, 0x31, 0xA0, 0x73, 0xBE, 0x21, 0x13, 0x67,
                0x43, 0x20, 0x07, 0x18, 0x00, 0x00, 0x01, 0xA5,
            ],
            CardType::SysmoIsimSja2 => &[
                0x3B, 0x9F, 0x96, 0x80, 0x1F, 0x87, 0x80, 0x31, 0xE0, 0x73, 0xFE, 0x21, 0x1B, 0x67,
                0x4A, 0x4C, 0x75, 0x30, 0x34, 0x05, 0x4B, 0xA9,
            ],
            CardType::SysmoIsimSja5 => &[
                0x3B, 0x9F, 0x96, 0x80, 0x1F, 0x87, 0x80, 0x31, 0xE0, 0x73, 0xFE, 0x21, 0x1B, 0x67,
                0x4A, 0x35, 0x75, 0x30, 0x35, 0x02, 0x51, 0xCC,
            ],
        }
    }

    /// Whether the card answers the TS 102 221 (CLA 00) dialect.
    pub const fn is_uicc(self) -> bool {
        !matches!(self, CardType::SysmoSimGr1)
    }

    /// Whether the card has an ISIM application (TS 31.103).
    pub const fn has_isim(self) -> bool {
        matches!(
            self,
            CardType::Simlab | CardType::SysmoIsimSja2 | CardType::SysmoIsimSja5
        )
    }

    /// The VERIFY reference (P2) of the issuer's ADM code: CHV 5 on the GR1 (a Grcard SIM),
    /// ADM1 = 0A (TS 102 221 9.5.1) on the others.
    pub const fn adm_reference(self) -> u8 {
        match self {
            CardType::SysmoSimGr1 => 0x05,
            _ => 0x0A,
        }
    }

    /// Whether the card keeps its factory ICCID whatever ADM says (the SJA2's licence check
    /// depends on it).
    pub const fn iccid_fixed(self) -> bool {
        matches!(self, CardType::SysmoIsimSja2 | CardType::SysmoIsimSja5)
    }

    /// The type stored under `index` in a saved state.
    pub fn from_index(index: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.index() == index as usize)
    }
}
