//! The card's file system: one tree for both dialects (TS 51.011 and TS 102 221 / 31.102).
//!
//! The tree is a constant table, so its shape costs no RAM and needs no allocator; only file
//! contents live in RAM, in one arena. Files that TS 31.102 says mirror a GSM file (EF_IMSI,
//! EF_SPN, …) share the GSM file's bytes, the way real UICCs link them, so writing one through
//! either application changes both.

/// Who may perform an operation on a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Always allowed.
    Always,
    /// After PIN1 (CHV1) verification, or when PIN1 is disabled.
    Pin1,
    /// After ADM1 verification.
    Adm1,
    /// Never, through any command.
    Never,
}

/// The structure of a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The master file 3F00.
    Mf,
    /// A dedicated file.
    Df,
    /// An application DF, selected by its AID.
    Adf,
    /// A transparent EF of `size` bytes.
    Transparent { size: u16 },
    /// A linear fixed EF of `records` records of `len` bytes.
    LinearFixed { len: u8, records: u8 },
}

impl Kind {
    /// Bytes of content the file holds (0 for DFs).
    pub const fn size(self) -> usize {
        match self {
            Kind::Transparent { size } => size as usize,
            Kind::LinearFixed { len, records } => len as usize * records as usize,
            Kind::Mf | Kind::Df | Kind::Adf => 0,
        }
    }

    /// Whether this is the MF, a DF or an ADF.
    pub const fn is_dedicated(self) -> bool {
        matches!(self, Kind::Mf | Kind::Df | Kind::Adf)
    }
}

/// One entry of the file table.
#[derive(Clone, Copy, Debug)]
pub struct FileDef {
    /// The file identifier.
    pub fid: u16,
    /// The index of the parent DF in [`FILES`] (the MF is its own parent).
    pub parent: u8,
    pub kind: Kind,
    pub read: Access,
    pub update: Access,
    /// The index of another EF whose bytes this one shares, if it is a link.
    pub link: Option<u8>,
    /// Its TS 31.102 / 51.011 name, for traces and `simlab card read`.
    pub name: &'static str,
}

const fn df(fid: u16, parent: u8, kind: Kind, name: &'static str) -> FileDef {
    FileDef {
        fid,
        parent,
        kind,
        read: Access::Always,
        update: Access::Adm1,
        link: None,
        name,
    }
}

const fn ef(
    fid: u16,
    parent: u8,
    kind: Kind,
    read: Access,
    update: Access,
    name: &'static str,
) -> FileDef {
    FileDef {
        fid,
        parent,
        kind,
        read,
        update,
        link: None,
        name,
    }
}

const fn link(fid: u16, parent: u8, target: u8, name: &'static str) -> FileDef {
    let t = FILES_UNLINKED[target as usize];
    FileDef {
        fid,
        parent,
        kind: t.kind,
        read: t.read,
        update: t.update,
        link: Some(target),
        name,
    }
}

use Access::{Adm1, Always, Never, Pin1};

const fn t(size: u16) -> Kind {
    Kind::Transparent { size }
}

const fn lf(len: u8, records: u8) -> Kind {
    Kind::LinearFixed { len, records }
}

/// The AID of ADF.USIM on this card: the 3GPP RID + USIM application code, then a PIX tail.
/// SELECT by DF name matches on a prefix, so `A0000000871002` selects it.
pub const USIM_AID: [u8; 16] = [
    0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02, 0xFF, 0x49, 0xFF, 0x05, 0x89, 0x00, 0x00, 0x01, 0x00,
];

/// Indices into [`FILES`], for code that needs a particular file.
pub mod idx {
    pub const MF: u8 = 0;
    pub const EF_ICCID: u8 = 1;
    pub const EF_DIR: u8 = 2;
    pub const EF_ARR: u8 = 3;
    pub const DF_TELECOM: u8 = 4;
    pub const EF_MSISDN: u8 = 5;
    pub const EF_SMSP: u8 = 6;
    pub const EF_SMS: u8 = 7;
    pub const DF_GSM: u8 = 8;
    pub const EF_IMSI: u8 = 9;
    pub const EF_KC: u8 = 10;
    pub const EF_PLMNSEL: u8 = 11;
    pub const EF_HPPLMN: u8 = 12;
    pub const EF_SST: u8 = 13;
    pub const EF_SPN: u8 = 14;
    pub const EF_ACC: u8 = 15;
    pub const EF_FPLMN: u8 = 16;
    pub const EF_LOCI: u8 = 17;
    pub const EF_AD: u8 = 18;
    pub const ADF_USIM: u8 = 19;
    pub const EF_UST: u8 = 20;
    pub const EF_KEYS: u8 = 21;
    pub const EF_KEYSPS: u8 = 22;
    pub const EF_EST: u8 = 23;
    pub const EF_PSLOCI: u8 = 24;
    pub const EF_PLMNWACT: u8 = 25;
    pub const EF_LI: u8 = 26;
    /// Vendor key files of programmable cards (REFERENCE.md): write-only, ADM-protected.
    pub const EF_SJS1_KI: u8 = 27;
    pub const EF_SJS1_OPC: u8 = 28;
    pub const DF_SJA2: u8 = 29;
    pub const EF_SJA2_KEYS: u8 = 30;
    pub const EF_SJA2_USIM_KEYS: u8 = 31;
    pub const EF_SIMLAB_CHV: u8 = 32;
}

/// The table without links resolved; [`FILES`] is this plus the USIM's links to GSM files.
const FILES_UNLINKED: [FileDef; 33] = [
    df(0x3F00, idx::MF, Kind::Mf, "MF"),
    ef(0x2FE2, idx::MF, t(10), Always, Adm1, "EF_ICCID"),
    ef(0x2F00, idx::MF, lf(32, 2), Always, Adm1, "EF_DIR"),
    ef(0x2F06, idx::MF, lf(24, 6), Always, Adm1, "EF_ARR"),
    df(0x7F10, idx::MF, Kind::Df, "DF_TELECOM"),
    ef(0x6F40, idx::DF_TELECOM, lf(26, 2), Pin1, Pin1, "EF_MSISDN"),
    ef(0x6F42, idx::DF_TELECOM, lf(40, 2), Pin1, Pin1, "EF_SMSP"),
    ef(0x6F3C, idx::DF_TELECOM, lf(176, 5), Pin1, Pin1, "EF_SMS"),
    df(0x7F20, idx::MF, Kind::Df, "DF_GSM"),
    ef(0x6F07, idx::DF_GSM, t(9), Pin1, Adm1, "EF_IMSI"),
    ef(0x6F20, idx::DF_GSM, t(9), Pin1, Pin1, "EF_Kc"),
    ef(0x6F30, idx::DF_GSM, t(24), Pin1, Pin1, "EF_PLMNsel"),
    ef(0x6F31, idx::DF_GSM, t(1), Pin1, Adm1, "EF_HPPLMN"),
    ef(0x6F38, idx::DF_GSM, t(10), Pin1, Adm1, "EF_SST"),
    ef(0x6F46, idx::DF_GSM, t(17), Always, Adm1, "EF_SPN"),
    ef(0x6F78, idx::DF_GSM, t(2), Pin1, Adm1, "EF_ACC"),
    ef(0x6F7B, idx::DF_GSM, t(12), Pin1, Pin1, "EF_FPLMN"),
    ef(0x6F7E, idx::DF_GSM, t(11), Pin1, Pin1, "EF_LOCI"),
    ef(0x6FAD, idx::DF_GSM, t(4), Always, Adm1, "EF_AD"),
    df(0x7FF0, idx::MF, Kind::Adf, "ADF.USIM"),
    ef(0x6F38, idx::ADF_USIM, t(8), Pin1, Adm1, "EF_UST"),
    ef(0x6F08, idx::ADF_USIM, t(33), Pin1, Pin1, "EF_Keys"),
    ef(0x6F09, idx::ADF_USIM, t(33), Pin1, Pin1, "EF_KeysPS"),
    ef(0x6F56, idx::ADF_USIM, t(1), Pin1, Pin1, "EF_EST"),
    ef(0x6F73, idx::ADF_USIM, t(14), Pin1, Pin1, "EF_PSLOCI"),
    ef(0x6F60, idx::ADF_USIM, t(40), Pin1, Pin1, "EF_PLMNwAcT"),
    ef(0x6F05, idx::ADF_USIM, t(2), Always, Pin1, "EF_LI"),
    ef(0x00FF, idx::DF_GSM, t(16), Never, Adm1, "EF_KI"),
    ef(0x00F7, idx::DF_GSM, t(17), Never, Adm1, "EF_OPC"),
    df(0xA515, idx::MF, Kind::Df, "DF_SYSMO"),
    ef(0x6F20, idx::DF_SJA2, t(33), Never, Adm1, "EF_SIM_AUTH_KEY"),
    ef(
        0xAF20,
        idx::ADF_USIM,
        t(33),
        Never,
        Adm1,
        "EF_USIM_AUTH_KEY",
    ),
    ef(0x6F01, idx::DF_SJA2, t(16), Never, Adm1, "EF_CHV_CONFIG"),
];

/// Number of files in the tree.
pub const FILE_COUNT: usize = FILES_UNLINKED.len() + 9;

/// The whole tree. ADF.USIM's EF_IMSI, EF_SPN, … are links to the DF_GSM files.
pub static FILES: [FileDef; FILE_COUNT] = {
    let mut all = [FILES_UNLINKED[0]; FILE_COUNT];
    let mut i = 0;
    while i < FILES_UNLINKED.len() {
        all[i] = FILES_UNLINKED[i];
        i += 1;
    }
    let n = FILES_UNLINKED.len();
    all[n] = link(0x6F07, idx::ADF_USIM, idx::EF_IMSI, "EF_IMSI");
    all[n + 1] = link(0x6F46, idx::ADF_USIM, idx::EF_SPN, "EF_SPN");
    all[n + 2] = link(0x6F78, idx::ADF_USIM, idx::EF_ACC, "EF_ACC");
    all[n + 3] = link(0x6F7B, idx::ADF_USIM, idx::EF_FPLMN, "EF_FPLMN");
    all[n + 4] = link(0x6F7E, idx::ADF_USIM, idx::EF_LOCI, "EF_LOCI");
    all[n + 5] = link(0x6FAD, idx::ADF_USIM, idx::EF_AD, "EF_AD");
    all[n + 6] = link(0x6F40, idx::ADF_USIM, idx::EF_MSISDN, "EF_MSISDN");
    all[n + 7] = link(0x6F31, idx::ADF_USIM, idx::EF_HPPLMN, "EF_HPPLMN");
    all[n + 8] = link(0x6F06, idx::ADF_USIM, idx::EF_ARR, "EF_ARR");
    all
};

/// Where each file's bytes start in the arena (links point at their target's bytes).
static OFFSETS: [u16; FILE_COUNT] = {
    let mut off = [0u16; FILE_COUNT];
    let mut next = 0usize;
    let mut i = 0;
    while i < FILE_COUNT {
        match FILES[i].link {
            Some(target) => off[i] = off[target as usize],
            None => {
                off[i] = next as u16;
                next += FILES[i].kind.size();
            }
        }
        i += 1;
    }
    off
};

/// Bytes of file content the card stores.
pub const ARENA_SIZE: usize = {
    let mut total = 0;
    let mut i = 0;
    while i < FILE_COUNT {
        if FILES[i].link.is_none() {
            total += FILES[i].kind.size();
        }
        i += 1;
    }
    total
};

/// The content of every EF.
#[derive(Clone)]
pub struct Arena {
    bytes: [u8; ARENA_SIZE],
}

impl Default for Arena {
    fn default() -> Self {
        // Erased flash reads FF, and so do unused records and padding in every EF.
        Arena {
            bytes: [0xFF; ARENA_SIZE],
        }
    }
}

impl Arena {
    /// The bytes of file `index` (empty for DFs and out-of-range indices).
    pub fn content(&self, index: u8) -> &[u8] {
        let Some(def) = FILES.get(index as usize) else {
            return &[];
        };
        let start = OFFSETS[index as usize] as usize;
        self.bytes
            .get(start..start + def.kind.size())
            .unwrap_or(&[])
    }

    /// The bytes of file `index`, writable.
    pub fn content_mut(&mut self, index: u8) -> &mut [u8] {
        let Some(def) = FILES.get(index as usize) else {
            return &mut [];
        };
        let start = OFFSETS[index as usize] as usize;
        self.bytes
            .get_mut(start..start + def.kind.size())
            .unwrap_or(&mut [])
    }

    /// The raw arena, for persistence.
    pub fn as_bytes(&self) -> &[u8; ARENA_SIZE] {
        &self.bytes
    }

    /// The raw arena, for restoring persisted state.
    pub fn as_bytes_mut(&mut self) -> &mut [u8; ARENA_SIZE] {
        &mut self.bytes
    }
}

/// The table entry for `index`.
pub fn def(index: u8) -> Option<&'static FileDef> {
    FILES.get(index as usize)
}

/// The children of DF `parent` with identifier `fid`.
pub fn child(parent: u8, fid: u16) -> Option<u8> {
    FILES
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, f)| f.parent == parent && f.fid == fid)
        .map(|(i, _)| i as u8)
}

/// Resolves a path of FIDs from the MF (the MF's own 3F00 may lead). `7FFF` stands for
/// ADF.USIM, as in TS 102 221 paths.
pub fn resolve_path(path: &[u16]) -> Option<u8> {
    let path = match path.first() {
        Some(0x3F00) => &path[1..],
        _ => path,
    };
    let mut at = idx::MF;
    for &fid in path {
        if !def(at)?.kind.is_dedicated() {
            return None;
        }
        at = if fid == 0x7FFF {
            idx::ADF_USIM
        } else {
            child(at, fid)?
        };
    }
    Some(at)
}

/// Finds a file by its name in the table (`EF_IMSI`, `imsi`, `DF_GSM/EF_IMSI`, …), for the CLI.
/// Plain EF names resolve to the GSM copy first, since that one exists on every card.
pub fn by_name(name: &str) -> Option<u8> {
    let (dir, leaf) = match name.rsplit_once('/') {
        Some((d, l)) => (Some(d), l),
        None => (None, name),
    };
    let matches = |full: &str, wanted: &str| {
        full.eq_ignore_ascii_case(wanted)
            || full
                .split_once('_')
                .is_some_and(|(_, short)| short.eq_ignore_ascii_case(wanted))
            || full
                .split_once('.')
                .is_some_and(|(_, short)| short.eq_ignore_ascii_case(wanted))
    };
    FILES.iter().enumerate().find_map(|(i, f)| {
        let parent_ok = match dir {
            None => true,
            Some(d) => matches(FILES[f.parent as usize].name, d),
        };
        (parent_ok && matches(f.name, leaf)).then_some(i as u8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_share_bytes_with_their_target() {
        let mut arena = Arena::default();
        let usim_imsi = resolve_path(&[0x7FFF, 0x6F07]).unwrap();
        arena.content_mut(idx::EF_IMSI)[0] = 0x08;
        assert_eq!(arena.content(usim_imsi)[0], 0x08);
        assert_eq!(resolve_path(&[0x3F00, 0x7F20, 0x6F07]), Some(idx::EF_IMSI));
    }

    #[test]
    fn every_parent_is_a_dedicated_file_and_fids_are_unique_per_parent() {
        for (i, f) in FILES.iter().enumerate().skip(1) {
            assert!(def(f.parent).unwrap().kind.is_dedicated(), "{}", f.name);
            assert_eq!(child(f.parent, f.fid), Some(i as u8), "{}", f.name);
        }
    }

    #[test]
    fn names_resolve() {
        assert_eq!(by_name("imsi"), Some(idx::EF_IMSI));
        assert_eq!(by_name("EF_ICCID"), Some(idx::EF_ICCID));
        assert_eq!(by_name("USIM/EF_UST"), Some(idx::EF_UST));
        assert_eq!(by_name("nonsense"), None);
    }
}
