//! Bits of the first TPDU octet (TS 23.040 9.2.3.1–9.2.3.26).
//!
//! The same bit means different things per message type (bit 2 is TP-RD in
//! a SUBMIT but TP-MMS in a DELIVER), so each constant is named for its
//! message type.

/// TP-MTI, bits 1–0.
pub(crate) const MTI_MASK: u8 = 0x03;
/// TP-MTI of SMS-DELIVER (and SMS-DELIVER-REPORT, MS to SC).
pub(crate) const MTI_DELIVER: u8 = 0b00;
/// TP-MTI of SMS-SUBMIT (and SMS-SUBMIT-REPORT, SC to MS).
pub(crate) const MTI_SUBMIT: u8 = 0b01;
/// TP-MTI of SMS-STATUS-REPORT (and SMS-COMMAND, MS to SC).
pub(crate) const MTI_STATUS_REPORT: u8 = 0b10;

/// SUBMIT: TP-Reject-Duplicates.
pub(crate) const RD: u8 = 0x04;
/// SUBMIT: TP-Validity-Period-Format, bits 4–3.
pub(crate) const VPF_SHIFT: u8 = 3;
pub(crate) const VPF_MASK: u8 = 0x03;
/// SUBMIT: TP-Status-Report-Request.
pub(crate) const SRR: u8 = 0x20;

/// DELIVER, STATUS-REPORT: TP-More-Messages-to-Send, set when *no* more
/// messages are waiting.
pub(crate) const MMS: u8 = 0x04;
/// DELIVER, STATUS-REPORT: TP-Loop-Prevention.
pub(crate) const LP: u8 = 0x08;
/// DELIVER: TP-Status-Report-Indication.
pub(crate) const SRI: u8 = 0x20;
/// STATUS-REPORT: TP-Status-Report-Qualifier (set: the report is about an
/// SMS-COMMAND).
pub(crate) const SRQ: u8 = 0x20;

/// All types: TP-User-Data-Header-Indicator.
pub(crate) const UDHI: u8 = 0x40;
/// SUBMIT, DELIVER: TP-Reply-Path.
pub(crate) const RP: u8 = 0x80;

/// `bit` if `on`, else 0.
pub(crate) const fn flag(on: bool, bit: u8) -> u8 {
    if on { bit } else { 0 }
}
