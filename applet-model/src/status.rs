//! Status words (SW1 SW2), named.
//!
//! A SIM speaks two dialects: TS 51.011 (CLA A0, the `Gsm*` variants) and ISO 7816-4 / TS 102 221
//! (CLA 00). Several values mean different things in each, so the variant names say which
//! dialect they belong to instead of hiding the difference behind one number.

/// A status word, as the card returns it after every command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// 9000: normal ending.
    Success,
    /// 61xx: T=0 case 4 — xx response bytes wait for GET RESPONSE (00 means 256).
    BytesAvailable(u8),
    /// 9Fxx: the TS 51.011 spelling of [`Status::BytesAvailable`].
    GsmBytesAvailable(u8),
    /// 6Cxx: wrong Le; resend the command with Le = xx.
    WrongLe(u8),
    /// 67xx (TS 51.011 "incorrect parameter P3"): xx is the correct length, 00 if unknown.
    GsmWrongP3(u8),
    /// 63Cx: verification failed (or tries queried); x tries remain.
    VerifyFailed { tries_left: u8 },
    /// 6700: wrong length (Lc or Le inconsistent with the command).
    WrongLength,
    /// 6581: memory failure.
    MemoryFailure,
    /// 6982: security status not satisfied (PIN or ADM not verified).
    SecurityNotSatisfied,
    /// 6983: authentication method blocked (the PIN or ADM is blocked).
    AuthMethodBlocked,
    /// 6984: referenced data invalidated (e.g. a PIN that is disabled).
    ReferenceDataInvalidated,
    /// 6985: conditions of use not satisfied.
    ConditionsNotSatisfied,
    /// 6986: command not allowed (no current EF).
    NoCurrentEf,
    /// 6981: command incompatible with the file structure.
    IncompatibleFileStructure,
    /// 6881: logical channel not supported (only the basic channel 0 exists).
    LogicalChannelNotSupported,
    /// 6884: command chaining not supported (here: outside the token applet).
    ChainingNotSupported,
    /// 6A80: incorrect parameters in the data field.
    IncorrectData,
    /// 6A81: function not supported.
    FunctionNotSupported,
    /// 6A82: file or application not found.
    FileNotFound,
    /// 6A83: record not found.
    RecordNotFound,
    /// 6A86: incorrect P1 or P2.
    IncorrectP1P2,
    /// 6A88: referenced data (a key or PIN reference) not found.
    ReferenceNotFound,
    /// 6B00: wrong parameters P1-P2 (for READ/UPDATE: offset outside the file).
    WrongP1P2,
    /// 6D00: instruction not supported.
    InsNotSupported,
    /// 6E00: class not supported.
    ClaNotSupported,
    /// 6F00: technical problem, no precise diagnosis.
    NoPreciseDiagnosis,
    /// 9400: TS 51.011 — no EF selected.
    GsmNoEfSelected,
    /// 9402: TS 51.011 — out of range (invalid address or record number).
    GsmOutOfRange,
    /// 9404: TS 51.011 — file ID not found.
    GsmFileNotFound,
    /// 9408: TS 51.011 — file inconsistent with the command.
    GsmFileInconsistent,
    /// 9802: TS 51.011 — no CHV initialised.
    GsmNoChvInitialised,
    /// 9804: TS 51.011 — access condition not fulfilled, or a wrong CHV with tries left.
    GsmAccessDenied,
    /// 9808: TS 51.011 — in contradiction with CHV status (e.g. disabling a disabled CHV).
    GsmChvContradiction,
    /// 9840: TS 51.011 — wrong CHV and no try left, or the CHV is blocked.
    GsmChvBlocked,
    /// 9862: TS 31.102 — authentication error, incorrect MAC.
    AuthMacFailure,
    /// 9864: TS 31.102 — authentication error, security context not supported.
    AuthContextNotSupported,
    /// 6282: warning — end of file or record reached; for SEARCH RECORD, no record matched.
    SearchUnsuccessful,
    /// 9810: TS 51.011 — in contradiction with the file's invalidation status.
    GsmInvalidated,
    /// 9850: INCREASE cannot be performed, the maximum value is reached.
    IncreaseMaxReached,
    /// Any other value the card model does not name.
    Other(u16),
}

impl Status {
    /// The two-byte value.
    pub const fn to_u16(self) -> u16 {
        match self {
            Status::Success => 0x9000,
            Status::BytesAvailable(n) => 0x6100 | n as u16,
            Status::GsmBytesAvailable(n) => 0x9F00 | n as u16,
            Status::WrongLe(n) => 0x6C00 | n as u16,
            Status::GsmWrongP3(n) => 0x6700 | n as u16,
            Status::VerifyFailed { tries_left } => 0x63C0 | (tries_left & 0x0F) as u16,
            Status::WrongLength => 0x6700,
            Status::MemoryFailure => 0x6581,
            Status::SecurityNotSatisfied => 0x6982,
            Status::AuthMethodBlocked => 0x6983,
            Status::ReferenceDataInvalidated => 0x6984,
            Status::ConditionsNotSatisfied => 0x6985,
            Status::NoCurrentEf => 0x6986,
            Status::IncompatibleFileStructure => 0x6981,
            Status::LogicalChannelNotSupported => 0x6881,
            Status::ChainingNotSupported => 0x6884,
            Status::IncorrectData => 0x6A80,
            Status::FunctionNotSupported => 0x6A81,
            Status::FileNotFound => 0x6A82,
            Status::RecordNotFound => 0x6A83,
            Status::IncorrectP1P2 => 0x6A86,
            Status::ReferenceNotFound => 0x6A88,
            Status::WrongP1P2 => 0x6B00,
            Status::InsNotSupported => 0x6D00,
            Status::ClaNotSupported => 0x6E00,
            Status::NoPreciseDiagnosis => 0x6F00,
            Status::GsmNoEfSelected => 0x9400,
            Status::GsmOutOfRange => 0x9402,
            Status::GsmFileNotFound => 0x9404,
            Status::GsmFileInconsistent => 0x9408,
            Status::GsmNoChvInitialised => 0x9802,
            Status::GsmAccessDenied => 0x9804,
            Status::GsmChvContradiction => 0x9808,
            Status::GsmChvBlocked => 0x9840,
            Status::AuthMacFailure => 0x9862,
            Status::AuthContextNotSupported => 0x9864,
            Status::SearchUnsuccessful => 0x6282,
            Status::GsmInvalidated => 0x9810,
            Status::IncreaseMaxReached => 0x9850,
            Status::Other(sw) => sw,
        }
    }

    /// Names a raw status word. Where TS 51.011 and ISO 7816-4 share a value, the ISO name wins
    /// unless the value only exists in TS 51.011.
    pub const fn from_u16(sw: u16) -> Status {
        let sw2 = (sw & 0xFF) as u8;
        match sw {
            0x9000 => Status::Success,
            0x6700 => Status::WrongLength,
            0x6581 => Status::MemoryFailure,
            0x6982 => Status::SecurityNotSatisfied,
            0x6983 => Status::AuthMethodBlocked,
            0x6984 => Status::ReferenceDataInvalidated,
            0x6985 => Status::ConditionsNotSatisfied,
            0x6986 => Status::NoCurrentEf,
            0x6981 => Status::IncompatibleFileStructure,
            0x6881 => Status::LogicalChannelNotSupported,
            0x6884 => Status::ChainingNotSupported,
            0x6A80 => Status::IncorrectData,
            0x6A81 => Status::FunctionNotSupported,
            0x6A82 => Status::FileNotFound,
            0x6A83 => Status::RecordNotFound,
            0x6A86 => Status::IncorrectP1P2,
            0x6A88 => Status::ReferenceNotFound,
            0x6B00 => Status::WrongP1P2,
            0x6D00 => Status::InsNotSupported,
            0x6E00 => Status::ClaNotSupported,
            0x6F00 => Status::NoPreciseDiagnosis,
            0x9400 => Status::GsmNoEfSelected,
            0x9402 => Status::GsmOutOfRange,
            0x9404 => Status::GsmFileNotFound,
            0x9408 => Status::GsmFileInconsistent,
            0x9802 => Status::GsmNoChvInitialised,
            0x9804 => Status::GsmAccessDenied,
            0x9808 => Status::GsmChvContradiction,
            0x9840 => Status::GsmChvBlocked,
            0x9862 => Status::AuthMacFailure,
            0x6282 => Status::SearchUnsuccessful,
            0x9810 => Status::GsmInvalidated,
            0x9850 => Status::IncreaseMaxReached,
            0x9864 => Status::AuthContextNotSupported,
            _ => match sw >> 8 {
                0x61 => Status::BytesAvailable(sw2),
                0x9F => Status::GsmBytesAvailable(sw2),
                0x6C => Status::WrongLe(sw2),
                0x67 => Status::GsmWrongP3(sw2),
                0x63 if sw2 & 0xF0 == 0xC0 => Status::VerifyFailed {
                    tries_left: sw2 & 0x0F,
                },
                _ => Status::Other(sw),
            },
        }
    }

    /// SW1 and SW2 as they go on the wire.
    pub const fn to_bytes(self) -> [u8; 2] {
        self.to_u16().to_be_bytes()
    }

    /// True for 9000 and for the "more data waiting" words, which are not errors.
    pub const fn is_success(self) -> bool {
        matches!(
            self,
            Status::Success | Status::BytesAvailable(_) | Status::GsmBytesAvailable(_)
        )
    }

    /// A short English description, for traces and error messages.
    pub const fn description(self) -> &'static str {
        match self {
            Status::Success => "success",
            Status::BytesAvailable(_) | Status::GsmBytesAvailable(_) => "response bytes available",
            Status::WrongLe(_) => "wrong Le",
            Status::GsmWrongP3(_) | Status::WrongLength => "wrong length",
            Status::VerifyFailed { .. } => "verification failed",
            Status::MemoryFailure => "memory failure",
            Status::SecurityNotSatisfied => "security status not satisfied",
            Status::AuthMethodBlocked => "authentication method blocked",
            Status::ReferenceDataInvalidated => "reference data invalidated",
            Status::ConditionsNotSatisfied => "conditions of use not satisfied",
            Status::NoCurrentEf => "no current EF",
            Status::IncompatibleFileStructure => "incompatible with file structure",
            Status::LogicalChannelNotSupported => "logical channel not supported",
            Status::ChainingNotSupported => "command chaining not supported",
            Status::IncorrectData => "incorrect data",
            Status::FunctionNotSupported => "function not supported",
            Status::FileNotFound | Status::GsmFileNotFound => "file not found",
            Status::RecordNotFound => "record not found",
            Status::IncorrectP1P2 | Status::WrongP1P2 => "incorrect P1/P2",
            Status::ReferenceNotFound => "referenced data not found",
            Status::InsNotSupported => "instruction not supported",
            Status::ClaNotSupported => "class not supported",
            Status::NoPreciseDiagnosis => "technical problem",
            Status::GsmNoEfSelected => "no EF selected",
            Status::GsmOutOfRange => "out of range",
            Status::GsmFileInconsistent => "file inconsistent with command",
            Status::GsmNoChvInitialised => "no CHV initialised",
            Status::GsmAccessDenied => "access condition not fulfilled / wrong CHV",
            Status::GsmChvContradiction => "in contradiction with CHV status",
            Status::GsmChvBlocked => "CHV blocked",
            Status::AuthMacFailure => "authentication error, incorrect MAC",
            Status::AuthContextNotSupported => "security context not supported",
            Status::SearchUnsuccessful => "end of record reached / no match",
            Status::GsmInvalidated => "in contradiction with invalidation status",
            Status::IncreaseMaxReached => "maximum value reached",
            Status::Other(_) => "unknown status",
        }
    }
}

impl core::fmt::Display for Status {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:04X} ({})", self.to_u16(), self.description())
    }
}

#[cfg(test)]
mod tests {
    use super::Status;

    #[test]
    fn every_value_round_trips() {
        for sw in 0..=u16::MAX {
            assert_eq!(Status::from_u16(sw).to_u16(), sw, "{sw:04X}");
        }
    }
}
