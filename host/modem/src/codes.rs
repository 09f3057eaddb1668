//! Named error codes of the two AT error result codes.
//!
//! `+CME ERROR: <n>` (TS 27.007 9.2) reports mobile-equipment and SIM failures of any command;
//! `+CMS ERROR: <n>` (TS 27.005 3.2.5) reports failures of the SMS commands, where 0–127 are
//! network causes (TS 24.011 E-2) and 128–255 TP-Failure-Cause values (TS 23.040 9.2.3.22).
//!
//! Modems print either the number (`AT+CMEE=1`, which simlab asks for) or the text
//! (`AT+CMEE=2`, and some firmware regardless); both forms parse to the same code, so a retry
//! rule such as "SIM busy" is written once, against the named constant.

use std::fmt;

/// A `+CME ERROR` code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CmeError(pub u16);

/// A `+CMS ERROR` code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CmsError(pub u16);

impl CmeError {
    /// Phone (ME) failure.
    pub const PHONE_FAILURE: CmeError = CmeError(0);
    /// Operation not allowed.
    pub const NOT_ALLOWED: CmeError = CmeError(3);
    /// Operation not supported.
    pub const NOT_SUPPORTED: CmeError = CmeError(4);
    /// SIM not inserted.
    pub const SIM_NOT_INSERTED: CmeError = CmeError(10);
    /// SIM PIN required.
    pub const SIM_PIN_REQUIRED: CmeError = CmeError(11);
    /// SIM PUK required.
    pub const SIM_PUK_REQUIRED: CmeError = CmeError(12);
    /// SIM failure.
    pub const SIM_FAILURE: CmeError = CmeError(13);
    /// SIM busy: the SIM is still initialising (after power-up or a PIN entry); retry.
    pub const SIM_BUSY: CmeError = CmeError(14);
    /// SIM wrong.
    pub const SIM_WRONG: CmeError = CmeError(15);
    /// Incorrect password.
    pub const INCORRECT_PASSWORD: CmeError = CmeError(16);
    /// Memory full.
    pub const MEMORY_FULL: CmeError = CmeError(20);
    /// Invalid index.
    pub const INVALID_INDEX: CmeError = CmeError(21);
    /// Not found.
    pub const NOT_FOUND: CmeError = CmeError(22);
    /// No network service.
    pub const NO_NETWORK: CmeError = CmeError(30);
    /// Network timeout.
    pub const NETWORK_TIMEOUT: CmeError = CmeError(31);
    /// Incorrect parameters.
    pub const INCORRECT_PARAMETERS: CmeError = CmeError(50);
    /// Unknown.
    pub const UNKNOWN: CmeError = CmeError(100);
    /// Quectel and Huawei firmware: "please wait, initialisation or command processing in
    /// progress" — the vendor spelling of "busy"; retried like [`CmeError::SIM_BUSY`].
    pub const VENDOR_PLEASE_WAIT: CmeError = CmeError(515);

    /// TS 27.007's text for the code (the `AT+CMEE=2` form).
    pub fn description(self) -> &'static str {
        CME_TEXTS
            .iter()
            .find(|(code, _)| *code == self.0)
            .map_or("unknown or vendor-specific error", |(_, text)| text)
    }

    /// Parses the argument of `+CME ERROR:`: a number, or one of TS 27.007's texts.
    pub fn parse(arg: &str) -> Option<Self> {
        parse_code(arg, CME_TEXTS).map(CmeError)
    }

    /// Whether retrying later can succeed without anyone doing anything: the SIM or the
    /// firmware is still starting up.
    pub fn is_busy(self) -> bool {
        self == Self::SIM_BUSY || self == Self::VENDOR_PLEASE_WAIT
    }
}

impl CmsError {
    /// ME failure.
    pub const ME_FAILURE: CmsError = CmsError(300);
    /// SMS service of ME reserved.
    pub const SERVICE_RESERVED: CmsError = CmsError(301);
    /// Operation not allowed.
    pub const NOT_ALLOWED: CmsError = CmsError(302);
    /// Operation not supported (e.g. text mode on a PDU-only modem).
    pub const NOT_SUPPORTED: CmsError = CmsError(303);
    /// Invalid PDU mode parameter: the modem rejected the PDU or its length.
    pub const INVALID_PDU: CmsError = CmsError(304);
    /// Invalid text mode parameter.
    pub const INVALID_TEXT: CmsError = CmsError(305);
    /// (U)SIM not inserted.
    pub const SIM_NOT_INSERTED: CmsError = CmsError(310);
    /// SIM PIN required.
    pub const SIM_PIN_REQUIRED: CmsError = CmsError(311);
    /// SIM failure.
    pub const SIM_FAILURE: CmsError = CmsError(313);
    /// SIM busy; retry.
    pub const SIM_BUSY: CmsError = CmsError(314);
    /// SIM PUK required.
    pub const SIM_PUK_REQUIRED: CmsError = CmsError(316);
    /// Memory failure.
    pub const MEMORY_FAILURE: CmsError = CmsError(320);
    /// Invalid memory index.
    pub const INVALID_INDEX: CmsError = CmsError(321);
    /// Memory full.
    pub const MEMORY_FULL: CmsError = CmsError(322);
    /// SMSC address unknown: no `AT+CSCA` and none in the PDU.
    pub const SMSC_UNKNOWN: CmsError = CmsError(330);
    /// No network service.
    pub const NO_NETWORK: CmsError = CmsError(331);
    /// Network timeout.
    pub const NETWORK_TIMEOUT: CmsError = CmsError(332);
    /// No +CNMA acknowledgement expected.
    pub const NO_CNMA_EXPECTED: CmsError = CmsError(340);
    /// Unknown error.
    pub const UNKNOWN: CmsError = CmsError(500);

    /// The text TS 27.005 (300–500), TS 24.011 (network causes below 128) or TS 23.040
    /// (TP-FCS, 128–255) gives the code.
    pub fn description(self) -> &'static str {
        CMS_TEXTS.iter().find(|(code, _)| *code == self.0).map_or(
            match self.0 {
                0..=127 => "network cause",
                128..=255 => "TP failure cause",
                _ => "unknown or vendor-specific error",
            },
            |(_, text)| text,
        )
    }

    /// Parses the argument of `+CMS ERROR:`: a number, or one of the texts.
    pub fn parse(arg: &str) -> Option<Self> {
        parse_code(arg, CMS_TEXTS).map(CmsError)
    }

    /// Whether retrying later can succeed by itself (SIM still starting).
    pub fn is_busy(self) -> bool {
        self == Self::SIM_BUSY
    }
}

impl fmt::Display for CmeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+CME ERROR {} ({})", self.0, self.description())
    }
}

impl fmt::Display for CmsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+CMS ERROR {} ({})", self.0, self.description())
    }
}

fn parse_code(arg: &str, texts: &[(u16, &str)]) -> Option<u16> {
    let arg = arg.trim().trim_matches('"').trim();
    if let Ok(n) = arg.parse::<u16>() {
        return Some(n);
    }
    texts
        .iter()
        .find(|(_, text)| text.eq_ignore_ascii_case(arg))
        .map(|(code, _)| *code)
}

/// TS 27.007 9.2.1 and 9.2.2 (the codes modems actually send).
const CME_TEXTS: &[(u16, &str)] = &[
    (0, "phone failure"),
    (1, "no connection to phone"),
    (2, "phone-adaptor link reserved"),
    (3, "operation not allowed"),
    (4, "operation not supported"),
    (5, "PH-SIM PIN required"),
    (6, "PH-FSIM PIN required"),
    (7, "PH-FSIM PUK required"),
    (10, "SIM not inserted"),
    (11, "SIM PIN required"),
    (12, "SIM PUK required"),
    (13, "SIM failure"),
    (14, "SIM busy"),
    (15, "SIM wrong"),
    (16, "incorrect password"),
    (17, "SIM PIN2 required"),
    (18, "SIM PUK2 required"),
    (20, "memory full"),
    (21, "invalid index"),
    (22, "not found"),
    (23, "memory failure"),
    (24, "text string too long"),
    (25, "invalid characters in text string"),
    (26, "dial string too long"),
    (27, "invalid characters in dial string"),
    (30, "no network service"),
    (31, "network timeout"),
    (32, "network not allowed - emergency calls only"),
    (40, "network personalization PIN required"),
    (41, "network personalization PUK required"),
    (50, "incorrect parameters"),
    (100, "unknown"),
    (515, "please wait, init or command processing in progress"),
];

/// TS 27.005 3.2.5, the commonest TS 24.011 E-2 network causes, and TS 23.040 TP-FCS.
const CMS_TEXTS: &[(u16, &str)] = &[
    (1, "unassigned (unallocated) number"),
    (8, "operator determined barring"),
    (10, "call barred"),
    (21, "short message transfer rejected"),
    (27, "destination out of service"),
    (28, "unidentified subscriber"),
    (29, "facility rejected"),
    (30, "unknown subscriber"),
    (38, "network out of order"),
    (41, "temporary failure"),
    (42, "congestion"),
    (47, "resources unavailable, unspecified"),
    (50, "requested facility not subscribed"),
    (69, "requested facility not implemented"),
    (81, "invalid short message transfer reference value"),
    (95, "invalid message, unspecified"),
    (96, "invalid mandatory information"),
    (97, "message type non-existent or not implemented"),
    (
        98,
        "message not compatible with short message protocol state",
    ),
    (99, "information element non-existent or not implemented"),
    (111, "protocol error, unspecified"),
    (127, "interworking, unspecified"),
    (128, "telematic interworking not supported"),
    (129, "short message type 0 not supported"),
    (130, "cannot replace short message"),
    (143, "unspecified TP-PID error"),
    (144, "data coding scheme (alphabet) not supported"),
    (145, "message class not supported"),
    (159, "unspecified TP-DCS error"),
    (160, "command cannot be actioned"),
    (161, "command unsupported"),
    (175, "unspecified TP-Command error"),
    (176, "TPDU not supported"),
    (192, "SC busy"),
    (193, "no SC subscription"),
    (194, "SC system failure"),
    (195, "invalid SME address"),
    (196, "destination SME barred"),
    (197, "SM rejected-duplicate SM"),
    (198, "TP-VPF not supported"),
    (199, "TP-VP not supported"),
    (208, "(U)SIM SMS storage full"),
    (209, "no SMS storage capability in (U)SIM"),
    (210, "error in MS"),
    (211, "memory capacity exceeded"),
    (212, "(U)SIM application toolkit busy"),
    (213, "(U)SIM data download error"),
    (255, "unspecified error cause"),
    (300, "ME failure"),
    (301, "SMS service of ME reserved"),
    (302, "operation not allowed"),
    (303, "operation not supported"),
    (304, "invalid PDU mode parameter"),
    (305, "invalid text mode parameter"),
    (310, "(U)SIM not inserted"),
    (311, "(U)SIM PIN required"),
    (312, "PH-(U)SIM PIN required"),
    (313, "(U)SIM failure"),
    (314, "(U)SIM busy"),
    (315, "(U)SIM wrong"),
    (316, "(U)SIM PUK required"),
    (317, "(U)SIM PIN2 required"),
    (318, "(U)SIM PUK2 required"),
    (320, "memory failure"),
    (321, "invalid memory index"),
    (322, "memory full"),
    (330, "SMSC address unknown"),
    (331, "no network service"),
    (332, "network timeout"),
    (340, "no +CNMA acknowledgement expected"),
    (500, "unknown error"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_texts_parse_to_the_same_code() {
        assert_eq!(CmeError::parse("14"), Some(CmeError::SIM_BUSY));
        assert_eq!(CmeError::parse(" SIM busy"), Some(CmeError::SIM_BUSY));
        assert_eq!(CmeError::parse("\"sim BUSY\""), Some(CmeError::SIM_BUSY));
        assert_eq!(CmsError::parse("330"), Some(CmsError::SMSC_UNKNOWN));
        assert_eq!(
            CmsError::parse("SMSC address unknown"),
            Some(CmsError::SMSC_UNKNOWN)
        );
        assert_eq!(CmsError::parse("(U)SIM busy"), Some(CmsError::SIM_BUSY));
        assert_eq!(CmeError::parse("no idea"), None);
        assert_eq!(CmsError::parse(""), None);
        assert_eq!(CmsError::parse("99999999"), None);
    }

    #[test]
    fn descriptions_name_the_spec_text() {
        assert_eq!(CmeError::SIM_BUSY.to_string(), "+CME ERROR 14 (SIM busy)");
        assert_eq!(
            CmsError::UNKNOWN.to_string(),
            "+CMS ERROR 500 (unknown error)"
        );
        assert_eq!(CmsError(42).description(), "congestion");
        assert_eq!(CmsError(7).description(), "network cause");
        assert_eq!(CmsError(0xC5).description(), "SM rejected-duplicate SM");
        assert!(CmeError(14).is_busy() && CmsError(314).is_busy() && !CmsError(330).is_busy());
    }
}
