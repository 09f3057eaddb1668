//! The GlobalPlatform card manager: the issuer security domain (ISD) and the GSMA access rule
//! application master (ARA-M), on the card types that have them (the ISIM cards).
//!
//! Behind the dispatcher it is an application like the others, but it does not hide the file
//! system: on this card the ISD sits at the MF, so every command that is not one of its own
//! GlobalPlatform commands reaches the file system beneath it, with the channel's cursor.

use crate::apdu::Command;
use crate::card::{App, CardState, FileSystem};
use crate::dispatch::{Application, Ctx, Dialect, Fail, Handled, Out};
use crate::fs::idx;
use crate::status::Status;
use crate::tlv::Writer;

/// The ISD's AID (GP 2.3 H.1).
pub(crate) const ISD_AID: [u8; 8] = [0xA0, 0x00, 0x00, 0x01, 0x51, 0x00, 0x00, 0x00];
/// ARA-M's AID (GP SE Access Control 1.1).
pub(crate) const ARAM_AID: [u8; 9] = [0xA0, 0x00, 0x00, 0x01, 0x51, 0x41, 0x43, 0x4C, 0x00];

/// The card manager as an [`Application`]; its state is the channel's cursor (`App::Isd` or
/// `App::AraM` while it is selected).
pub(crate) struct CardManager;

impl Application for CardManager {
    fn claims(&self, card: &CardState, aid: &[u8]) -> bool {
        card.gp_app(aid).is_some()
    }

    fn select(&mut self, ctx: &mut Ctx<'_>, cmd: &Command, out: &mut [u8; 256]) -> Handled {
        ctx.card.select_gp(cmd, out)
    }

    fn call(&mut self, ctx: &mut Ctx<'_>, cmd: &Command, out: &mut [u8; 256]) -> Handled {
        let proprietary = cmd.cla & 0x80 != 0;
        match (ctx.dialect, cmd.ins) {
            (Dialect::Uicc, 0xF2) if !matches!(cmd.p1, 0x00..=0x02) => ctx.card.gp_get_status(cmd),
            (Dialect::Uicc, 0xCA) if proprietary => ctx.card.gp_get_data(cmd, out),
            _ => FileSystem.call(ctx, cmd, out),
        }
    }
}

impl CardState {
    /// The GlobalPlatform application `aid` (a prefix, as SELECT allows) names, if the card
    /// type has it: the ISD, and ARA-M (GSMA SGP / GP SE Access Control) on the SJA cards.
    fn gp_app(&self, aid: &[u8]) -> Option<App> {
        if aid.len() < 5 || !self.card_type.has_isim() {
            return None;
        }
        if ISD_AID.starts_with(aid) {
            Some(App::Isd)
        } else if ARAM_AID.starts_with(aid) {
            Some(App::AraM)
        } else {
            None
        }
    }

    /// SELECT of the ISD or ARA-M: its FCI (6F ‖ 84 AID ‖ A5 proprietary data).
    fn select_gp(&mut self, cmd: &Command, scratch: &mut [u8; 256]) -> Handled {
        let app = self.gp_app(cmd.data).ok_or(Fail::NotFound)?;
        self.app = app;
        self.current_df = idx::MF;
        self.current_ef = None;
        if cmd.p2 & 0x0C == 0x0C {
            return Ok(Out::Done);
        }
        let aid: &[u8] = if app == App::Isd { &ISD_AID } else { &ARAM_AID };
        let mut w = Writer::new(scratch);
        let fci = w.open(0x6F);
        w.tlv(0x84, aid);
        let a5 = w.open(0xA5);
        // Maximum length of data field in command message (GP 2.3 11.1.3).
        w.bytes(&[0x9F, 0x65, 0x01, 0xFF]);
        w.close(a5);
        w.close(fci);
        Ok(Out::Pending(w.len()))
    }

    /// GP GET STATUS (80 F2 with a GP P1): the ISD answers it only inside a secure channel
    /// (SCP02/SCP03), which this model does not open, so 6982 as a real card without the
    /// issuer's keys; elsewhere P1 is not a STATUS P1.
    fn gp_get_status(&self, cmd: &Command) -> Handled {
        match (self.app, cmd.p1) {
            (App::Isd, 0x80 | 0x40 | 0x20 | 0x10) => Err(Fail::Security),
            _ => Err(Fail::BadP1P2),
        }
    }

    /// GP GET DATA (80 CA): what the ISD and ARA-M give without a secure channel — the card
    /// recognition data (0066) and an empty ARA-M rule set (FF40, "all rules").
    fn gp_get_data(&self, cmd: &Command, scratch: &mut [u8; 256]) -> Handled {
        let tag = u16::from_be_bytes([cmd.p1, cmd.p2]);
        let mut w = Writer::new(scratch);
        match (self.app, tag) {
            (App::Isd, 0x0066) => {
                let outer = w.open(0x66);
                let inner = w.open(0x73);
                // GP card recognition data: the GP OID and GP 2.2.1.
                w.tlv(0x06, &[0x2A, 0x86, 0x48, 0x86, 0xFC, 0x6B, 0x01]);
                let v = w.open(0x60);
                w.tlv(
                    0x06,
                    &[0x2A, 0x86, 0x48, 0x86, 0xFC, 0x6B, 0x02, 0x02, 0x02, 0x01],
                );
                w.close(v);
                w.close(inner);
                w.close(outer);
            }
            (App::AraM, 0xFF40) => w.bytes(&[0xFF, 0x40, 0x00]),
            (App::Isd | App::AraM, _) => return Err(Fail::Raw(Status::ReferenceNotFound)),
            _ => return Err(Fail::Raw(Status::InsNotSupported)),
        }
        let n = w.len();
        match cmd.ne {
            Some(ne) if ne == n => Ok(Out::Data(n)),
            Some(_) => Err(Fail::WrongLe(n)),
            None => Ok(Out::Pending(n)),
        }
    }
}
