//! The card's file system: one table of every file any card type has (TS 51.011, TS 31.102,
//! TS 31.103 and the vendors' own), and per card type which of them exist, with which size or
//! record length, and the service tables that advertise them.
//!
//! The tables are constants, so the tree's shape costs no RAM and needs no allocator; only
//! file contents live in RAM, in one arena laid out per card type. Files that TS 31.102 says
//! mirror a GSM file (EF_IMSI, EF_SPN, …) share the GSM file's bytes, the way real UICCs link
//! them, so writing one through either application changes both.
//!
//! Consistency is part of the data: each file names the service (EF.SST, EF.UST or EF.IST
//! number) that makes it available, and each card type's factory service tables are here too.
//! The tests check both ways, on every type, that a file exists exactly when its service is on
//! — what the field's tools check before they trust a card.

use crate::card_type::{CardType, TYPE_COUNT};

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
    /// A cyclic EF (EF_ACM): record 1 is always the one written last.
    Cyclic { len: u8, records: u8 },
}

impl Kind {
    /// Bytes of content the file holds (0 for DFs).
    pub const fn size(self) -> usize {
        match self {
            Kind::Transparent { size } => size as usize,
            Kind::LinearFixed { len, records } | Kind::Cyclic { len, records } => {
                len as usize * records as usize
            }
            Kind::Mf | Kind::Df | Kind::Adf => 0,
        }
    }

    /// Whether this is the MF, a DF or an ADF.
    pub const fn is_dedicated(self) -> bool {
        matches!(self, Kind::Mf | Kind::Df | Kind::Adf)
    }

    /// Record length and count of a record-structured EF.
    pub const fn records(self) -> Option<(u8, u8)> {
        match self {
            Kind::LinearFixed { len, records } | Kind::Cyclic { len, records } => {
                Some((len, records))
            }
            _ => None,
        }
    }
}

/// The service that makes a file available (TS 51.011 10.3.7, TS 31.102 4.2.8, TS 31.103
/// 4.2.7), or none for files every card of the application has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Always,
    /// EF.SST service n (DF_GSM).
    Sst(u8),
    /// EF.UST service n (ADF.USIM).
    Ust(u8),
    /// EF.IST service n (ADF.ISIM).
    Ist(u8),
}

/// One entry of the file table.
#[derive(Clone, Copy, Debug)]
pub struct FileDef {
    /// The file identifier.
    pub fid: u16,
    /// The index of the parent DF in [`FILES`] (the MF is its own parent).
    pub parent: u8,
    /// The structure on most card types; [`FileDef::alt`] names the exceptions.
    pub kind: Kind,
    pub read: Access,
    pub update: Access,
    /// The index of another EF whose bytes this one shares, if it is a link.
    pub link: Option<u8>,
    /// Its TS 31.102 / 51.011 name, for traces and `simlab card read`.
    pub name: &'static str,
    /// Which card types have the file ([`CardType::mask`] bits).
    pub types: u8,
    /// The service that must be on for the file to exist.
    pub service: Service,
    /// Card types on which the file has another size or record length, and that structure.
    pub alt: Option<(u8, Kind)>,
    /// A vendor key file: its content is the card's keys, kept outside the arena (never
    /// readable as ordinary bytes, written through the key logic).
    pub key_file: bool,
    /// Link target as (parent, fid), resolved into `link` when the table is built.
    target: Option<(u8, u16)>,
}

impl FileDef {
    const fn on(mut self, types: u8) -> Self {
        self.types = types;
        self
    }

    const fn svc(mut self, service: Service) -> Self {
        self.service = service;
        self
    }

    const fn alt(mut self, types: u8, kind: Kind) -> Self {
        self.alt = Some((types, kind));
        self
    }

    const fn keys(mut self) -> Self {
        self.key_file = true;
        self
    }

    /// The structure on card type `t`.
    pub const fn kind_on(&self, t: CardType) -> Kind {
        match self.alt {
            Some((mask, kind)) if mask & t.mask() != 0 => kind,
            _ => self.kind,
        }
    }
}

use Access::{Adm1, Always, Never, Pin1};
use Service::{Ist, Sst, Ust};

// Card-type masks (bit = CardType::index).
const S: u8 = 1;
const G: u8 = 2;
const J: u8 = 4;
const A: u8 = 8;
const F: u8 = 16;
const ALL: u8 = S | G | J | A | F;
const UICC: u8 = S | J | A | F;
const SYSMO: u8 = G | J | A | F;
const ISIM: u8 = S | A | F;

const fn base(
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
        types: ALL,
        service: Service::Always,
        alt: None,
        key_file: false,
        target: None,
    }
}

const fn df(fid: u16, parent: u8, kind: Kind, name: &'static str) -> FileDef {
    base(fid, parent, kind, Always, Adm1, name)
}

const fn ef(
    fid: u16,
    parent: u8,
    kind: Kind,
    read: Access,
    update: Access,
    name: &'static str,
) -> FileDef {
    base(fid, parent, kind, read, update, name)
}

/// An EF sharing the bytes of `(parent, fid)`; its structure and access are the target's.
const fn link(fid: u16, parent: u8, to: (u8, u16), name: &'static str) -> FileDef {
    let mut f = base(
        fid,
        parent,
        Kind::Transparent { size: 0 },
        Always,
        Always,
        name,
    );
    f.target = Some(to);
    f
}

const fn t(size: u16) -> Kind {
    Kind::Transparent { size }
}

const fn lf(len: u8, records: u8) -> Kind {
    Kind::LinearFixed { len, records }
}

const fn cy(len: u8, records: u8) -> Kind {
    Kind::Cyclic { len, records }
}

/// The AID of ADF.USIM on this card: the 3GPP RID + USIM application code, then a PIX tail.
/// SELECT by DF name matches on a prefix, so `A0000000871002` selects it.
pub const USIM_AID: [u8; 16] = [
    0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x02, 0xFF, 0x49, 0xFF, 0x05, 0x89, 0x00, 0x00, 0x01, 0x00,
];

/// The AID of ADF.ISIM (application code 1004, TS 31.103), same PIX tail as the USIM's.
pub const ISIM_AID: [u8; 16] = [
    0xA0, 0x00, 0x00, 0x00, 0x87, 0x10, 0x04, 0xFF, 0x49, 0xFF, 0x05, 0x89, 0x00, 0x00, 0x01, 0x00,
];

/// Indices into [`FILES`], for code that needs a particular file. The dedicated files come
/// first at fixed positions; EF indices are looked up in the table at compile time.
pub mod idx {
    use super::find;
    pub const MF: u8 = 0;
    pub const DF_TELECOM: u8 = 1;
    pub const DF_GSM: u8 = 2;
    pub const ADF_USIM: u8 = 3;
    pub const ADF_ISIM: u8 = 4;
    /// DF.SYSTEM of the sysmocom SJA cards (and simlab's own): the key files.
    pub const DF_SJA2: u8 = 5;
    pub const DF_5GS: u8 = 6;
    pub const DF_GSM_ACCESS: u8 = 7;
    pub const DF_MCS: u8 = 8;
    pub const EF_ICCID: u8 = find(MF, 0x2FE2);
    pub const EF_DIR: u8 = find(MF, 0x2F00);
    pub const EF_ARR: u8 = find(MF, 0x2F06);
    pub const EF_MSISDN: u8 = find(DF_TELECOM, 0x6F40);
    pub const EF_SMSP: u8 = find(DF_TELECOM, 0x6F42);
    pub const EF_SMS: u8 = find(DF_TELECOM, 0x6F3C);
    pub const EF_ADN: u8 = find(DF_TELECOM, 0x6F3A);
    pub const EF_IMSI: u8 = find(DF_GSM, 0x6F07);
    pub const EF_KC: u8 = find(DF_GSM, 0x6F20);
    pub const EF_PLMNSEL: u8 = find(DF_GSM, 0x6F30);
    pub const EF_HPPLMN: u8 = find(DF_GSM, 0x6F31);
    pub const EF_SST: u8 = find(DF_GSM, 0x6F38);
    pub const EF_SPN: u8 = find(DF_GSM, 0x6F46);
    pub const EF_ACC: u8 = find(DF_GSM, 0x6F78);
    pub const EF_FPLMN: u8 = find(DF_GSM, 0x6F7B);
    pub const EF_LOCI: u8 = find(DF_GSM, 0x6F7E);
    pub const EF_AD: u8 = find(DF_GSM, 0x6FAD);
    pub const EF_ACM: u8 = find(DF_GSM, 0x6F39);
    pub const EF_ACMMAX: u8 = find(DF_GSM, 0x6F37);
    pub const EF_GSM_PLMNWACT: u8 = find(DF_GSM, 0x6F60);
    pub const EF_OPLMNWACT: u8 = find(DF_GSM, 0x6F61);
    pub const EF_HPLMNWACT: u8 = find(DF_GSM, 0x6F62);
    pub const EF_UST: u8 = find(ADF_USIM, 0x6F38);
    pub const EF_KEYS: u8 = find(ADF_USIM, 0x6F08);
    pub const EF_KEYSPS: u8 = find(ADF_USIM, 0x6F09);
    pub const EF_EST: u8 = find(ADF_USIM, 0x6F56);
    pub const EF_PSLOCI: u8 = find(ADF_USIM, 0x6F73);
    /// ADF.USIM's EF_PLMNwAcT, a link to DF_GSM's.
    pub const EF_PLMNWACT: u8 = find(ADF_USIM, 0x6F60);
    pub const EF_LI: u8 = find(ADF_USIM, 0x6F05);
    pub const EF_EHPLMN: u8 = find(ADF_USIM, 0x6FD9);
    pub const EF_IMPI: u8 = find(ADF_ISIM, 0x6F02);
    pub const EF_DOMAIN: u8 = find(ADF_ISIM, 0x6F03);
    pub const EF_IMPU: u8 = find(ADF_ISIM, 0x6F04);
    pub const EF_IST: u8 = find(ADF_ISIM, 0x6F07);
    pub const EF_ISIM_AD: u8 = find(ADF_ISIM, 0x6FAD);
    /// Vendor key files of programmable cards (REFERENCE.md).
    pub const EF_SJS1_KI: u8 = find(DF_GSM, 0x00FF);
    pub const EF_SJS1_OPC: u8 = find(DF_GSM, 0x00F7);
    pub const EF_SJA2_KEYS: u8 = find(DF_SJA2, 0x6F20);
    pub const EF_SJA2_USIM_KEYS: u8 = find(ADF_USIM, 0xAF20);
    pub const EF_SJA2_ISIM_KEYS: u8 = find(ADF_ISIM, 0xAF20);
    pub const EF_SIMLAB_CHV: u8 = find(DF_SJA2, 0x6F01);
}

use idx::{ADF_ISIM, ADF_USIM, DF_5GS, DF_GSM, DF_GSM_ACCESS, DF_MCS, DF_SJA2, DF_TELECOM, MF};

/// Every file of every card type, before links are resolved.
const TABLE: [FileDef; 116] = [
    // The dedicated files, at the positions `idx` names.
    df(0x3F00, MF, Kind::Mf, "MF"),
    df(0x7F10, MF, Kind::Df, "DF_TELECOM"),
    df(0x7F20, MF, Kind::Df, "DF_GSM"),
    df(0x7FF0, MF, Kind::Adf, "ADF.USIM").on(UICC),
    df(0x7FF1, MF, Kind::Adf, "ADF.ISIM").on(ISIM),
    df(0xA515, MF, Kind::Df, "DF_SYSTEM").on(S | A | F),
    df(0x5FC0, ADF_USIM, Kind::Df, "DF_5GS")
        .on(S | A | F)
        .svc(Ust(122)),
    df(0x5F3B, ADF_USIM, Kind::Df, "DF_GSM-ACCESS")
        .on(UICC)
        .svc(Ust(27)),
    df(0x5F3D, DF_TELECOM, Kind::Df, "DF_MCS")
        .on(S | F)
        .svc(Ust(109)),
    // MF (TS 102 221 13).
    ef(0x2FE2, MF, t(10), Always, Adm1, "EF_ICCID"),
    ef(0x2F00, MF, lf(32, 3), Always, Adm1, "EF_DIR").on(UICC),
    ef(0x2F06, MF, lf(24, 6), Always, Adm1, "EF_ARR").on(UICC),
    ef(0x2F05, MF, t(4), Always, Pin1, "EF_PL").on(SYSMO & UICC),
    // DF_TELECOM (TS 51.011 10.5): the GSM phonebook and messages.
    ef(0x6F3A, DF_TELECOM, lf(30, 10), Pin1, Pin1, "EF_ADN").svc(Sst(2)),
    ef(0x6F3B, DF_TELECOM, lf(30, 5), Pin1, Pin1, "EF_FDN").svc(Sst(3)),
    ef(0x6F3C, DF_TELECOM, lf(176, 5), Pin1, Pin1, "EF_SMS").svc(Sst(4)),
    ef(0x6F3D, DF_TELECOM, lf(14, 2), Pin1, Pin1, "EF_CCP").svc(Sst(6)),
    ef(0x6F40, DF_TELECOM, lf(26, 2), Pin1, Pin1, "EF_MSISDN")
        .svc(Sst(9))
        .alt(SYSMO, lf(34, 2)),
    ef(0x6F42, DF_TELECOM, lf(40, 2), Pin1, Pin1, "EF_SMSP")
        .svc(Sst(12))
        .alt(SYSMO, lf(52, 2)),
    ef(0x6F43, DF_TELECOM, t(2), Pin1, Pin1, "EF_SMSS").svc(Sst(4)),
    ef(0x6F49, DF_TELECOM, lf(30, 3), Pin1, Adm1, "EF_SDN").svc(Sst(18)),
    ef(0x6F4A, DF_TELECOM, lf(13, 4), Pin1, Pin1, "EF_EXT1").svc(Sst(10)),
    ef(0x6F4B, DF_TELECOM, lf(13, 4), Pin1, Pin1, "EF_EXT2").svc(Sst(11)),
    ef(0x6F4C, DF_TELECOM, lf(13, 2), Pin1, Adm1, "EF_EXT3").svc(Sst(19)),
    ef(0x6F4D, DF_TELECOM, lf(31, 3), Pin1, Pin1, "EF_BDN")
        .on(S | A | F)
        .svc(Sst(31)),
    ef(0x6F4E, DF_TELECOM, lf(13, 2), Pin1, Pin1, "EF_EXT4")
        .on(S | A | F)
        .svc(Sst(32)),
    // DF_MCS (TS 31.102 4.4.10, mission-critical services).
    ef(0x4F01, DF_MCS, t(2), Pin1, Adm1, "EF_MST").on(S | F),
    ef(0x4F02, DF_MCS, t(32), Pin1, Adm1, "EF_MCS_CONFIG").on(S | F),
    // DF_GSM (TS 51.011 10.3).
    ef(0x6F05, DF_GSM, t(4), Always, Pin1, "EF_LP"),
    ef(0x6F07, DF_GSM, t(9), Pin1, Adm1, "EF_IMSI"),
    ef(0x6F20, DF_GSM, t(9), Pin1, Pin1, "EF_Kc"),
    ef(0x6F30, DF_GSM, t(24), Pin1, Pin1, "EF_PLMNsel")
        .svc(Sst(7))
        .alt(G, t(64)),
    ef(0x6F31, DF_GSM, t(1), Pin1, Adm1, "EF_HPPLMN"),
    ef(0x6F37, DF_GSM, t(3), Pin1, Pin1, "EF_ACMmax").svc(Sst(5)),
    ef(0x6F38, DF_GSM, t(13), Pin1, Adm1, "EF_SST").alt(G, t(10)),
    ef(0x6F39, DF_GSM, cy(3, 5), Pin1, Pin1, "EF_ACM").svc(Sst(5)),
    ef(0x6F3E, DF_GSM, t(8), Pin1, Adm1, "EF_GID1").svc(Sst(15)),
    ef(0x6F3F, DF_GSM, t(8), Pin1, Adm1, "EF_GID2").svc(Sst(16)),
    ef(0x6F41, DF_GSM, t(5), Pin1, Pin1, "EF_PUCT").svc(Sst(5)),
    ef(0x6F45, DF_GSM, t(10), Pin1, Pin1, "EF_CBMI").svc(Sst(14)),
    ef(0x6F46, DF_GSM, t(17), Always, Adm1, "EF_SPN").svc(Sst(17)),
    ef(0x6F52, DF_GSM, t(9), Pin1, Pin1, "EF_KcGPRS")
        .on(UICC)
        .svc(Sst(38)),
    ef(0x6F53, DF_GSM, t(14), Pin1, Pin1, "EF_LOCIGPRS")
        .on(UICC)
        .svc(Sst(38)),
    ef(0x6F60, DF_GSM, t(40), Pin1, Pin1, "EF_PLMNwAcT")
        .on(UICC)
        .svc(Sst(43)),
    ef(0x6F61, DF_GSM, t(40), Pin1, Adm1, "EF_OPLMNwAcT")
        .on(UICC)
        .svc(Sst(44)),
    ef(0x6F62, DF_GSM, t(10), Pin1, Adm1, "EF_HPLMNwAcT")
        .on(UICC)
        .svc(Sst(45)),
    ef(0x6F74, DF_GSM, t(16), Pin1, Pin1, "EF_BCCH"),
    ef(0x6F78, DF_GSM, t(2), Pin1, Adm1, "EF_ACC"),
    ef(0x6F7B, DF_GSM, t(12), Pin1, Pin1, "EF_FPLMN"),
    ef(0x6F7E, DF_GSM, t(11), Pin1, Pin1, "EF_LOCI"),
    ef(0x6FAD, DF_GSM, t(4), Always, Adm1, "EF_AD").alt(G, t(3)),
    ef(0x6FAE, DF_GSM, t(1), Always, Adm1, "EF_Phase"),
    ef(0x6FB7, DF_GSM, t(15), Always, Adm1, "EF_ECC"),
    ef(0x00FF, DF_GSM, t(16), Never, Adm1, "EF_KI").on(J).keys(),
    ef(0x00F7, DF_GSM, t(17), Never, Adm1, "EF_OPC")
        .on(J)
        .keys(),
    // ADF.USIM (TS 31.102 4.2).
    ef(0x6F05, ADF_USIM, t(2), Always, Pin1, "EF_LI").on(UICC),
    ef(0x6F08, ADF_USIM, t(33), Pin1, Pin1, "EF_Keys").on(UICC),
    ef(0x6F09, ADF_USIM, t(33), Pin1, Pin1, "EF_KeysPS").on(UICC),
    ef(0x6F38, ADF_USIM, t(20), Pin1, Adm1, "EF_UST").on(UICC),
    ef(0x6F56, ADF_USIM, t(1), Pin1, Pin1, "EF_EST")
        .on(UICC)
        .svc(Ust(34)),
    ef(0x6F5B, ADF_USIM, t(6), Pin1, Pin1, "EF_START-HFN").on(UICC),
    ef(0x6F5C, ADF_USIM, t(3), Pin1, Adm1, "EF_THRESHOLD").on(UICC),
    ef(0x6F73, ADF_USIM, t(14), Pin1, Pin1, "EF_PSLOCI").on(UICC),
    ef(0x6FB7, ADF_USIM, lf(20, 3), Always, Adm1, "EF_ECC").on(UICC),
    ef(0x6FC4, ADF_USIM, t(16), Pin1, Adm1, "EF_NETPAR").on(UICC),
    ef(0x6FD9, ADF_USIM, t(15), Pin1, Adm1, "EF_EHPLMN")
        .on(UICC)
        .svc(Ust(71)),
    ef(0x6FDB, ADF_USIM, t(1), Pin1, Adm1, "EF_EHPLMNPI")
        .on(UICC)
        .svc(Ust(73)),
    ef(0x6FE3, ADF_USIM, t(18), Pin1, Pin1, "EF_EPSLOCI")
        .on(UICC)
        .svc(Ust(85)),
    ef(0x6FE4, ADF_USIM, lf(54, 1), Pin1, Pin1, "EF_EPSNSC")
        .on(UICC)
        .svc(Ust(85)),
    ef(0x6F3B, ADF_USIM, lf(30, 5), Pin1, Pin1, "EF_FDN")
        .on(UICC)
        .svc(Ust(2)),
    ef(0x6F4B, ADF_USIM, lf(13, 4), Pin1, Pin1, "EF_EXT2")
        .on(UICC)
        .svc(Ust(3)),
    ef(0x6F49, ADF_USIM, lf(30, 3), Pin1, Adm1, "EF_SDN")
        .on(UICC)
        .svc(Ust(4)),
    ef(0x6F4C, ADF_USIM, lf(13, 2), Pin1, Adm1, "EF_EXT3")
        .on(UICC)
        .svc(Ust(5)),
    ef(0x6F4D, ADF_USIM, lf(31, 3), Pin1, Pin1, "EF_BDN")
        .on(S | A | F)
        .svc(Ust(6)),
    ef(0x6F55, ADF_USIM, lf(13, 2), Pin1, Pin1, "EF_EXT4")
        .on(S | A | F)
        .svc(Ust(7)),
    ef(0xAF20, ADF_USIM, t(33), Adm1, Adm1, "EF_USIM_AUTH_KEY")
        .on(S | A | F)
        .keys(),
    // DF_GSM-ACCESS (TS 31.102 4.4.3).
    ef(0x4F20, DF_GSM_ACCESS, t(9), Pin1, Pin1, "EF_Kc").on(UICC),
    ef(0x4F52, DF_GSM_ACCESS, t(9), Pin1, Pin1, "EF_KcGPRS").on(UICC),
    // DF_5GS (TS 31.102 4.4.11).
    ef(0x4F01, DF_5GS, t(20), Pin1, Pin1, "EF_5GS3GPPLOCI")
        .on(S | A | F)
        .svc(Ust(122)),
    ef(0x4F02, DF_5GS, t(20), Pin1, Pin1, "EF_5GSN3GPPLOCI")
        .on(S | A | F)
        .svc(Ust(122)),
    ef(0x4F03, DF_5GS, lf(57, 1), Pin1, Pin1, "EF_5GS3GPPNSC")
        .on(S | A | F)
        .svc(Ust(123)),
    ef(0x4F04, DF_5GS, lf(57, 1), Pin1, Pin1, "EF_5GSN3GPPNSC")
        .on(S | A | F)
        .svc(Ust(123)),
    ef(0x4F05, DF_5GS, t(68), Pin1, Pin1, "EF_5GAUTHKEYS")
        .on(S | A | F)
        .svc(Ust(123)),
    ef(0x4F06, DF_5GS, t(4), Pin1, Adm1, "EF_UAC_AIC")
        .on(S | A | F)
        .svc(Ust(126)),
    ef(0x4F07, DF_5GS, t(32), Pin1, Adm1, "EF_SUCI_Calc_Info")
        .on(S | A | F)
        .svc(Ust(124)),
    ef(0x4F0A, DF_5GS, t(4), Pin1, Adm1, "EF_Routing_Indicator")
        .on(S | A | F)
        .svc(Ust(124)),
    // ADF.ISIM (TS 31.103 4.2).
    ef(0x6F02, ADF_ISIM, t(64), Pin1, Adm1, "EF_IMPI").on(ISIM),
    ef(0x6F03, ADF_ISIM, t(64), Pin1, Adm1, "EF_DOMAIN").on(ISIM),
    ef(0x6F04, ADF_ISIM, lf(64, 3), Pin1, Adm1, "EF_IMPU").on(ISIM),
    ef(0x6F07, ADF_ISIM, t(3), Pin1, Adm1, "EF_IST").on(ISIM),
    ef(0x6F09, ADF_ISIM, lf(64, 2), Pin1, Adm1, "EF_P-CSCF")
        .on(ISIM)
        .svc(Ist(1)),
    ef(0x6FAD, ADF_ISIM, t(3), Always, Adm1, "EF_AD").on(ISIM),
    ef(0xAF20, ADF_ISIM, t(33), Adm1, Adm1, "EF_ISIM_AUTH_KEY")
        .on(S | A | F)
        .keys(),
    // DF.SYSTEM (A515) of the SJA cards: 2G/3G keys; simlab's PIN configuration.
    ef(0x6F20, DF_SJA2, t(33), Adm1, Adm1, "EF_SIM_AUTH_KEY")
        .on(S | A | F)
        .keys(),
    ef(0x6F01, DF_SJA2, t(16), Never, Adm1, "EF_CHV_CONFIG")
        .on(S)
        .keys(),
    // ADF.USIM's links to the GSM files it mirrors.
    link(0x6F07, ADF_USIM, (DF_GSM, 0x6F07), "EF_IMSI").on(UICC),
    link(0x6F31, ADF_USIM, (DF_GSM, 0x6F31), "EF_HPPLMN").on(UICC),
    link(0x6F78, ADF_USIM, (DF_GSM, 0x6F78), "EF_ACC").on(UICC),
    link(0x6F7B, ADF_USIM, (DF_GSM, 0x6F7B), "EF_FPLMN").on(UICC),
    link(0x6F7E, ADF_USIM, (DF_GSM, 0x6F7E), "EF_LOCI").on(UICC),
    link(0x6FAD, ADF_USIM, (DF_GSM, 0x6FAD), "EF_AD").on(UICC),
    link(0x6F06, ADF_USIM, (MF, 0x2F06), "EF_ARR").on(UICC),
    link(0x6F46, ADF_USIM, (DF_GSM, 0x6F46), "EF_SPN")
        .on(UICC)
        .svc(Ust(19)),
    link(0x6F60, ADF_USIM, (DF_GSM, 0x6F60), "EF_PLMNwAcT")
        .on(UICC)
        .svc(Ust(20)),
    link(0x6F61, ADF_USIM, (DF_GSM, 0x6F61), "EF_OPLMNwAcT")
        .on(UICC)
        .svc(Ust(42)),
    link(0x6F62, ADF_USIM, (DF_GSM, 0x6F62), "EF_HPLMNwAcT")
        .on(UICC)
        .svc(Ust(43)),
    link(0x6F3E, ADF_USIM, (DF_GSM, 0x6F3E), "EF_GID1")
        .on(UICC)
        .svc(Ust(17)),
    link(0x6F3F, ADF_USIM, (DF_GSM, 0x6F3F), "EF_GID2")
        .on(UICC)
        .svc(Ust(18)),
    link(0x6F40, ADF_USIM, (DF_TELECOM, 0x6F40), "EF_MSISDN")
        .on(UICC)
        .svc(Ust(21)),
    link(0x6F42, ADF_USIM, (DF_TELECOM, 0x6F42), "EF_SMSP")
        .on(UICC)
        .svc(Ust(12)),
    link(0x6F3C, ADF_USIM, (DF_TELECOM, 0x6F3C), "EF_SMS")
        .on(UICC)
        .svc(Ust(10)),
    link(0x6F43, ADF_USIM, (DF_TELECOM, 0x6F43), "EF_SMSS")
        .on(UICC)
        .svc(Ust(10)),
    link(0x6F39, ADF_USIM, (DF_GSM, 0x6F39), "EF_ACM")
        .on(UICC)
        .svc(Ust(13)),
    link(0x6F37, ADF_USIM, (DF_GSM, 0x6F37), "EF_ACMmax")
        .on(UICC)
        .svc(Ust(13)),
    link(0x6F41, ADF_USIM, (DF_GSM, 0x6F41), "EF_PUCT")
        .on(UICC)
        .svc(Ust(13)),
    link(0x6F06, ADF_ISIM, (MF, 0x2F06), "EF_ARR").on(ISIM),
];

/// Number of files in the tree.
pub const FILE_COUNT: usize = TABLE.len();

/// The index of `(parent, fid)` in the table; a compile error if it is not there.
pub(crate) const fn find(parent: u8, fid: u16) -> u8 {
    let mut i = 1;
    while i < TABLE.len() {
        if TABLE[i].parent == parent && TABLE[i].fid == fid {
            return i as u8;
        }
        i += 1;
    }
    panic!("file not in the table")
}

/// The whole tree, links resolved: a link takes its target's structure and access.
pub static FILES: [FileDef; FILE_COUNT] = {
    let mut all = TABLE;
    let mut i = 0;
    while i < FILE_COUNT {
        if let Some((parent, fid)) = TABLE[i].target {
            let to = find(parent, fid);
            let target = TABLE[to as usize];
            all[i].link = Some(to);
            all[i].kind = target.kind;
            all[i].alt = target.alt;
            all[i].read = target.read;
            all[i].update = target.update;
        }
        i += 1;
    }
    all
};

/// Per card type: where each file's bytes start in the arena (links point at their
/// target's bytes), and the bytes the type stores in all.
const LAYOUT: ([[u16; FILE_COUNT]; TYPE_COUNT], [usize; TYPE_COUNT]) = {
    let mut off = [[0u16; FILE_COUNT]; TYPE_COUNT];
    let mut total = [0usize; TYPE_COUNT];
    let mut ty = 0;
    while ty < TYPE_COUNT {
        let mut next = 0usize;
        let mut i = 0;
        while i < FILE_COUNT {
            let f = FILES[i];
            if f.types & (1 << ty) != 0 && !f.key_file {
                match f.link {
                    Some(target) => off[ty][i] = off[ty][target as usize],
                    None => {
                        off[ty][i] = next as u16;
                        let kind = match f.alt {
                            Some((mask, kind)) if mask & (1 << ty) != 0 => kind,
                            _ => f.kind,
                        };
                        next += kind.size();
                    }
                }
            }
            i += 1;
        }
        total[ty] = next;
        ty += 1;
    }
    (off, total)
};

static OFFSETS: [[u16; FILE_COUNT]; TYPE_COUNT] = LAYOUT.0;

/// Bytes of file content the card stores: the most any card type needs.
pub const ARENA_SIZE: usize = {
    let mut max = 0;
    let mut ty = 0;
    while ty < TYPE_COUNT {
        if LAYOUT.1[ty] > max {
            max = LAYOUT.1[ty];
        }
        ty += 1;
    }
    max
};

/// Whether file `index` exists on card type `t`.
pub fn present(t: CardType, index: u8) -> bool {
    FILES
        .get(index as usize)
        .is_some_and(|f| f.types & t.mask() != 0)
}

/// The structure of file `index` on card type `t` (None if it does not exist there).
pub fn kind(t: CardType, index: u8) -> Option<Kind> {
    present(t, index).then(|| FILES[index as usize].kind_on(t))
}

/// The content of every EF of one card type.
#[derive(Clone)]
pub struct Arena {
    card_type: CardType,
    bytes: [u8; ARENA_SIZE],
}

impl Arena {
    /// An arena of erased flash: FF, as unused records and padding read in every EF.
    pub fn new(card_type: CardType) -> Self {
        Arena {
            card_type,
            bytes: [0xFF; ARENA_SIZE],
        }
    }

    fn range(&self, index: u8) -> Option<core::ops::Range<usize>> {
        let def = FILES.get(index as usize)?;
        if def.key_file {
            return None;
        }
        let size = kind(self.card_type, index)?.size();
        let start = OFFSETS[self.card_type.index()][index as usize] as usize;
        Some(start..start + size)
    }

    /// The bytes of file `index` (empty for DFs, key files, files the type lacks).
    pub fn content(&self, index: u8) -> &[u8] {
        self.range(index)
            .and_then(|r| self.bytes.get(r))
            .unwrap_or(&[])
    }

    /// The bytes of file `index`, writable.
    pub fn content_mut(&mut self, index: u8) -> &mut [u8] {
        match self.range(index) {
            Some(r) => self.bytes.get_mut(r).unwrap_or(&mut []),
            None => &mut [],
        }
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

/// The child of DF `parent` with identifier `fid`, on any card type.
pub fn child(parent: u8, fid: u16) -> Option<u8> {
    FILES
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, f)| f.parent == parent && f.fid == fid)
        .map(|(i, _)| i as u8)
}

/// The child of DF `parent` with identifier `fid` that card type `t` has.
pub fn child_on(t: CardType, parent: u8, fid: u16) -> Option<u8> {
    FILES
        .iter()
        .enumerate()
        .skip(1)
        .find(|(i, f)| f.parent == parent && f.fid == fid && present(t, *i as u8))
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

// ----- service tables ---------------------------------------------------------------------

/// EF.SST services (TS 51.011 10.3.7) allocated and activated at the factory, per type.
const SST_ON: [&[u8]; TYPE_COUNT] = [
    // simlab
    &[
        1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 18, 19, 31, 32, 38, 43, 44, 45,
    ],
    // sysmoSIM-GR1: a phase 2 SIM
    &[1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 18, 19],
    // sysmoUSIM-SJS1
    &[
        1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 18, 19, 38, 43, 44, 45,
    ],
    // sysmoISIM-SJA2
    &[
        1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 18, 19, 31, 32, 38, 43, 44, 45,
    ],
    // sysmoISIM-SJA5
    &[
        1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17, 18, 19, 31, 32, 38, 43, 44, 45,
    ],
];

/// EF.UST services (TS 31.102 4.2.8) available at the factory, per type (none on a SIM).
const UST_ON: [&[u8]; TYPE_COUNT] = [
    &[
        2, 3, 4, 5, 6, 7, 10, 12, 13, 17, 18, 19, 20, 21, 27, 33, 34, 38, 42, 43, 71, 73, 85, 109,
        122, 123, 124, 126,
    ],
    &[],
    &[
        2, 3, 4, 5, 10, 12, 13, 17, 18, 19, 20, 21, 27, 33, 34, 38, 42, 43, 71, 73, 85,
    ],
    &[
        2, 3, 4, 5, 6, 7, 10, 12, 13, 17, 18, 19, 20, 21, 27, 33, 34, 38, 42, 43, 71, 73, 85, 122,
        123, 124, 126,
    ],
    &[
        2, 3, 4, 5, 6, 7, 10, 12, 13, 17, 18, 19, 20, 21, 27, 33, 34, 38, 42, 43, 71, 73, 85, 109,
        122, 123, 124, 126,
    ],
];

/// EF.IST services (TS 31.103 4.2.7) available at the factory, per type with an ISIM.
const IST_ON: [&[u8]; TYPE_COUNT] = [&[1], &[], &[], &[1], &[1]];

/// Writes a table of `services` into `out`: one bit per service (UST, IST) or, with `pairs`,
/// two (SST: allocated and activated).
fn service_table(services: &[u8], pairs: bool, out: &mut [u8]) {
    out.fill(0);
    for &n in services {
        let n = n as usize - 1;
        let (byte, bits) = if pairs {
            (n / 4, 0b11 << ((n % 4) * 2))
        } else {
            (n / 8, 1 << (n % 8))
        };
        if let Some(b) = out.get_mut(byte) {
            *b |= bits;
        }
    }
}

/// Whether service `service` is on in the table bytes `table`.
pub fn service_on(service: Service, sst: &[u8], ust: &[u8], ist: &[u8]) -> bool {
    let bit = |table: &[u8], n: u8, pairs: bool| {
        let n = n as usize - 1;
        if pairs {
            table
                .get(n / 4)
                .is_some_and(|b| (b >> ((n % 4) * 2)) & 0b11 == 0b11)
        } else {
            table.get(n / 8).is_some_and(|b| b & (1 << (n % 8)) != 0)
        }
    };
    match service {
        Service::Always => true,
        Service::Sst(n) => bit(sst, n, true),
        Service::Ust(n) => bit(ust, n, false),
        Service::Ist(n) => bit(ist, n, false),
    }
}

/// The factory's contents for card type `t` beyond all-FF: the service tables, the fixed
/// values the vendor ships, EF_DIR's application templates and EF_ARR's rules. `put` gets
/// (file, byte offset, bytes) for each; the identity (ICCID, IMSI, …) comes from a profile.
pub fn factory(t: CardType, mut put: impl FnMut(u8, usize, &[u8])) {
    let ty = t.index();
    let mut buf = [0u8; 32];
    let sst_len = kind(t, idx::EF_SST).map_or(0, |k| k.size());
    service_table(SST_ON[ty], true, &mut buf[..sst_len]);
    put(idx::EF_SST, 0, &buf[..sst_len]);
    if t.is_uicc() {
        let ust_len = kind(t, idx::EF_UST).map_or(0, |k| k.size());
        service_table(UST_ON[ty], false, &mut buf[..ust_len]);
        put(idx::EF_UST, 0, &buf[..ust_len]);
        put(idx::EF_LI, 0, b"en");
        put(idx::EF_EST, 0, &[0x00]);
        let mut rec = [0xFF; 32];
        let n = dir_record(&USIM_AID, b"USIM", &mut rec);
        put(idx::EF_DIR, 0, &rec[..n.max(32)]);
        if t.has_isim() {
            let mut rec = [0xFF; 32];
            dir_record(&ISIM_AID, b"ISIM", &mut rec);
            put(idx::EF_DIR, 32, &rec);
        }
        for (i, rule) in crate::card::ARR_RECORDS.iter().enumerate() {
            put(idx::EF_ARR, i * 24, rule);
        }
    }
    if t.has_isim() {
        let ist_len = kind(t, idx::EF_IST).map_or(0, |k| k.size());
        service_table(IST_ON[ty], false, &mut buf[..ist_len]);
        put(idx::EF_IST, 0, &buf[..ist_len]);
        put(idx::EF_ISIM_AD, 0, &[0x00, 0x00, 0x00]);
    }
    // EF_LP: English (TS 51.011 10.3.1), EF_Phase: phase 2 and later profile download.
    put(find(idx::DF_GSM, 0x6F05), 0, &[0x01]);
    put(find(idx::DF_GSM, 0x6FAE), 0, &[0x03]);
    match t {
        CardType::SysmoSimGr1 => {
            // As shipped: the SPN shown without regard to the registered PLMN (display
            // condition 01), access class 3 (0008), and a phase-1-length EF_AD.
            put(idx::EF_SPN, 0, &[0x01]);
            put(idx::EF_ACC, 0, &[0x00, 0x08]);
            put(idx::EF_AD, 0, &[0x00, 0x00, 0x00]);
        }
        _ => {
            put(idx::EF_AD, 0, &[0x00, 0x00, 0x00, 0x02]);
        }
    }
}

/// An EF_DIR record (TS 102 221 13.1): the application template of `aid` with `label`.
fn dir_record(aid: &[u8; 16], label: &[u8], rec: &mut [u8; 32]) -> usize {
    let n = 2 + 2 + aid.len() + 2 + label.len();
    rec[0] = 0x61;
    rec[1] = (n - 2) as u8;
    rec[2] = 0x4F;
    rec[3] = aid.len() as u8;
    rec[4..20].copy_from_slice(aid);
    rec[20] = 0x50;
    rec[21] = label.len() as u8;
    rec[22..22 + label.len()].copy_from_slice(label);
    n
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::format;
    use std::vec::Vec;

    /// Every card type the tables describe, the SJA5 included through its mask bit.
    fn types() -> impl Iterator<Item = CardType> {
        CardType::ALL.into_iter()
    }

    #[test]
    fn links_share_bytes_with_their_target() {
        for ty in types().filter(|t| t.is_uicc()) {
            let mut arena = Arena::new(ty);
            let usim_imsi = resolve_path(&[0x7FFF, 0x6F07]).unwrap();
            arena.content_mut(idx::EF_IMSI)[0] = 0x08;
            assert_eq!(arena.content(usim_imsi)[0], 0x08);
            assert_eq!(resolve_path(&[0x3F00, 0x7F20, 0x6F07]), Some(idx::EF_IMSI));
        }
    }

    #[test]
    fn every_parent_is_a_dedicated_file_and_fids_are_unique_per_parent() {
        for (i, f) in FILES.iter().enumerate().skip(1) {
            assert!(def(f.parent).unwrap().kind.is_dedicated(), "{}", f.name);
            assert_eq!(child(f.parent, f.fid), Some(i as u8), "{}", f.name);
            // A file exists only where its parent does.
            assert_eq!(f.types & !FILES[f.parent as usize].types, 0, "{}", f.name);
            if let Some(target) = f.link {
                assert_eq!(f.types & !FILES[target as usize].types, 0, "{}", f.name);
            }
        }
    }

    #[test]
    fn names_resolve() {
        assert_eq!(by_name("imsi"), Some(idx::EF_IMSI));
        assert_eq!(by_name("EF_ICCID"), Some(idx::EF_ICCID));
        assert_eq!(by_name("USIM/EF_UST"), Some(idx::EF_UST));
        assert_eq!(by_name("nonsense"), None);
    }

    #[test]
    fn each_type_has_its_files_at_their_real_sizes() {
        let rec = |t, i| kind(t, i).and_then(Kind::records);
        for t in [
            CardType::SysmoSimGr1,
            CardType::SysmoUsimSjs1,
            CardType::SysmoIsimSja2,
        ] {
            assert_eq!(rec(t, idx::EF_SMSP), Some((52, 2)), "{t:?}");
            assert_eq!(rec(t, idx::EF_MSISDN), Some((34, 2)), "{t:?}");
        }
        let size = |t, i| kind(t, i).map(|k| k.size());
        assert_eq!(size(CardType::SysmoSimGr1, idx::EF_PLMNSEL), Some(64));
        assert_eq!(size(CardType::SysmoSimGr1, idx::EF_AD), Some(3));
        assert!(!present(CardType::SysmoSimGr1, idx::ADF_USIM));
        assert!(!present(CardType::SysmoSimGr1, idx::EF_GSM_PLMNWACT));
        for t in [CardType::SysmoUsimSjs1, CardType::SysmoIsimSja2] {
            for i in [
                idx::EF_GSM_PLMNWACT,
                idx::EF_OPLMNWACT,
                idx::EF_HPLMNWACT,
                idx::EF_EHPLMN,
                find(idx::DF_GSM, 0x6F3E),
                find(idx::DF_GSM, 0x6F3F),
            ] {
                assert!(present(t, i), "{t:?}: {}", FILES[i as usize].name);
            }
        }
        assert!(present(CardType::SysmoIsimSja2, idx::ADF_ISIM));
        let sja5 = CardType::SysmoIsimSja5;
        for i in [
            idx::ADF_ISIM,
            idx::DF_5GS,
            idx::DF_MCS,
            find(idx::DF_5GS, 0x4F07),
        ] {
            assert!(present(sja5, i), "SJA5: {}", FILES[i as usize].name);
        }
        assert_eq!(rec(sja5, idx::EF_SMSP), Some((52, 2)));
        assert!(present(CardType::SysmoIsimSja2, idx::DF_5GS));
        assert!(!present(CardType::SysmoUsimSjs1, idx::ADF_ISIM));
    }

    /// The check the field's tools make: a file exists exactly when the service that makes it
    /// available is on in the factory's EF.SST / EF.UST / EF.IST, both ways, for every type;
    /// and the mandatory "shall be set to 1" UST service 33 is on on every USIM.
    #[test]
    fn service_tables_agree_with_the_file_system_both_ways() {
        for t in types() {
            let mut arena = Arena::new(t);
            factory(t, |i, off, bytes| {
                arena.content_mut(i)[off..off + bytes.len()].copy_from_slice(bytes);
            });
            let sst = arena.content(idx::EF_SST).to_vec();
            let ust = arena.content(idx::EF_UST).to_vec();
            let ist = arena.content(idx::EF_IST).to_vec();
            let mut wrong = Vec::new();
            for (i, f) in FILES.iter().enumerate() {
                if f.service == Service::Always {
                    continue;
                }
                // A file can only depend on a service of a table the card has.
                let table_there = match f.service {
                    Service::Sst(_) => true,
                    Service::Ust(_) => t.is_uicc(),
                    Service::Ist(_) => t.has_isim(),
                    Service::Always => true,
                };
                let on = table_there && service_on(f.service, &sst, &ust, &ist);
                let parent_there = present(t, f.parent);
                if parent_there && on != present(t, i as u8) {
                    wrong.push(format!(
                        "{}/{} ({:?}): service {} but file {}",
                        FILES[f.parent as usize].name,
                        f.name,
                        f.service,
                        if on { "on" } else { "off" },
                        if present(t, i as u8) {
                            "present"
                        } else {
                            "absent"
                        }
                    ));
                }
            }
            // The other way round: every service on has at least the files the table names.
            for (table, services) in [("SST", SST_ON[t.index()]), ("UST", UST_ON[t.index()])] {
                for &n in services {
                    let service = if table == "SST" { Sst(n) } else { Ust(n) };
                    for (i, f) in FILES.iter().enumerate() {
                        if f.service == service && present(t, f.parent) && !present(t, i as u8) {
                            wrong.push(format!("{table} {n} on but {} absent", f.name));
                        }
                    }
                }
            }
            assert!(wrong.is_empty(), "{t:?}:\n  {}", wrong.join("\n  "));
            if t.is_uicc() {
                assert!(service_on(Ust(33), &sst, &ust, &ist), "{t:?}: UST 33");
                assert_eq!(ust.len(), 20, "{t:?}");
            }
        }
    }
}
