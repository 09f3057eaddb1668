//! The dispatcher: logical channels, command chaining and GET RESPONSE, with the card's
//! applications behind one trait, shaped as Trussed's apdu-dispatch shapes a card.
//!
//! ISO 7816-4 5.4.1 makes a logical channel an independent session: its own selected
//! application, its own current file, its own response waiting for GET RESPONSE. So all of that
//! lives here, per channel, and an [`Application`] never sees a channel: it gets a command as if
//! on the basic channel, the shared card state in a [`Ctx`], and the card's response buffer,
//! and says what it produced ([`Out`]) or what went wrong ([`Fail`]). Spelling the status word
//! in the command's dialect, keeping a response for GET RESPONSE and announcing it (`61xx` /
//! `9Fxx`) is the dispatcher's, so every application gets T=0 case 4 right the same way.
//!
//! The applications, numbered by [`AppId`]: the file system (`card::FileSystem`: MF, DF.GSM,
//! ADF.USIM, ADF.ISIM; the default, since every SELECT no other application claims and every
//! GSM-class command is its), the token applet (`token::Token`), and the GlobalPlatform card
//! manager (`card_manager::CardManager`: ISD and ARA-M). Security state (PIN1, ADM) belongs to
//! the card, not to a channel or an application: it is in the shared [`CardState`].

use crate::apdu::Command;
use crate::card::{App, CHANNELS, CardState};
use crate::chv::ChvError;
use crate::fs::idx;
use crate::status::Status;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// TS 51.011, CLA A0.
    Gsm,
    /// TS 102 221, CLA 00 / 80.
    Uicc,
}

/// What went wrong, before it is spelled in one dialect or the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fail {
    NotFound,
    NoEf,
    Security,
    OutOfRange,
    RecordNotFound,
    WrongLe(usize),
    WrongLc,
    Structure,
    BadP1P2,
    BadData,
    UnknownReference,
    Blocked,
    WrongCode(u8),
    Contradiction,
    NoResponse,
    Invalidated,
    Raw(Status),
}

impl Fail {
    pub(crate) fn status(self, d: Dialect) -> Status {
        let gsm = d == Dialect::Gsm;
        match self {
            Fail::NotFound if gsm => Status::GsmFileNotFound,
            Fail::NotFound => Status::FileNotFound,
            Fail::NoEf if gsm => Status::GsmNoEfSelected,
            Fail::NoEf => Status::NoCurrentEf,
            Fail::Security if gsm => Status::GsmAccessDenied,
            Fail::Security => Status::SecurityNotSatisfied,
            Fail::OutOfRange if gsm => Status::GsmOutOfRange,
            Fail::OutOfRange => Status::WrongP1P2,
            Fail::RecordNotFound if gsm => Status::GsmOutOfRange,
            Fail::RecordNotFound => Status::RecordNotFound,
            Fail::WrongLe(n) if gsm => Status::GsmWrongP3(n as u8),
            Fail::WrongLe(n) => Status::WrongLe(n as u8),
            Fail::WrongLc => Status::WrongLength,
            Fail::Structure if gsm => Status::GsmFileInconsistent,
            Fail::Structure => Status::IncompatibleFileStructure,
            Fail::BadP1P2 if gsm => Status::WrongP1P2,
            Fail::BadP1P2 => Status::IncorrectP1P2,
            Fail::BadData if gsm => Status::WrongP1P2,
            Fail::BadData => Status::IncorrectData,
            Fail::UnknownReference if gsm => Status::WrongP1P2,
            Fail::UnknownReference => Status::ReferenceNotFound,
            Fail::Blocked if gsm => Status::GsmChvBlocked,
            Fail::Blocked => Status::AuthMethodBlocked,
            Fail::WrongCode(_) if gsm => Status::GsmAccessDenied,
            Fail::WrongCode(n) => Status::VerifyFailed { tries_left: n },
            Fail::Contradiction if gsm => Status::GsmChvContradiction,
            Fail::Contradiction => Status::ConditionsNotSatisfied,
            Fail::NoResponse if gsm => Status::NoPreciseDiagnosis,
            Fail::NoResponse => Status::ConditionsNotSatisfied,
            Fail::Invalidated if gsm => Status::GsmInvalidated,
            Fail::Invalidated => Status::ReferenceDataInvalidated,
            Fail::Raw(s) => s,
        }
    }
}

impl From<ChvError> for Fail {
    fn from(e: ChvError) -> Self {
        match e {
            ChvError::Wrong { tries_left } => Fail::WrongCode(tries_left),
            ChvError::Blocked => Fail::Blocked,
            ChvError::BadFormat => Fail::BadData,
        }
    }
}

/// What a command handler produced.
pub(crate) enum Out {
    /// Nothing but 9000.
    Done,
    /// `n` bytes of the scratch buffer, returned now.
    Data(usize),
    /// `n` bytes of the scratch buffer, kept for GET RESPONSE (T=0 case 4).
    Pending(usize),
    /// `n` bytes of the scratch buffer returned now, more still pending (61xx). Only GET
    /// RESPONSE, which is the dispatcher's, produces it.
    Partial(usize),
}

pub(crate) type Handled = Result<Out, Fail>;

/// What an application may use of the card while it runs a command: the card's one file
/// system, codes and subscriber keys, with the command's channel's current DF, EF, record and
/// ADF swapped in. It owns no I/O: the response goes to the buffer it is given.
pub(crate) struct Ctx<'a> {
    pub dialect: Dialect,
    pub card: &'a mut CardState,
}

/// An application behind the dispatcher. None of it panics on any input; the response buffer
/// is the card's 256-byte scratch buffer, and a handler returns how much of it is the answer.
pub(crate) trait Application {
    /// Whether a SELECT by DF name (P1 04) with this AID, or a prefix of it as SELECT allows,
    /// chooses this application. The file system claims nothing: it is the default.
    fn claims(&self, _card: &CardState, _aid: &[u8]) -> bool {
        false
    }

    /// Whether commands may reach it with the chaining bit (CLA bit 10): only the token has
    /// data longer than a short APDU; everything else answers 6884 to a chained command.
    fn takes_chaining(&self) -> bool {
        false
    }

    /// A SELECT that chose this application on the channel.
    fn select(&mut self, ctx: &mut Ctx<'_>, cmd: &Command, out: &mut [u8; 256]) -> Handled;

    /// Any other command on a channel where it is selected, GET RESPONSE and MANAGE CHANNEL
    /// aside (those are the dispatcher's).
    fn call(&mut self, ctx: &mut Ctx<'_>, cmd: &Command, out: &mut [u8; 256]) -> Handled;

    /// No open channel has it selected any more: session state (a verified PIN, a chain, a
    /// key agreed for one session) must not outlive the session.
    fn deselect(&mut self) {}
}

/// Which application a channel has selected: an index into the dispatcher's `apps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AppId {
    Files = 0,
    Token = 1,
    CardManager = 2,
}

/// How many applications the card has; [`AppId`] numbers them.
pub(crate) const APPS: usize = 3;

/// The applications in [`AppId`] order, lent to the dispatcher for one command.
pub(crate) type Apps<'a> = [&'a mut dyn Application; APPS];

/// Applications a SELECT by AID may choose, in the order they are asked.
const BY_AID: [AppId; 2] = [AppId::Token, AppId::CardManager];

/// Where the file system is on one channel; the dispatcher keeps one per channel and swaps it
/// into [`CardState`] for the command's duration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub df: u8,
    pub ef: Option<u8>,
    pub record: u8,
    pub app: App,
}

impl Cursor {
    pub(crate) const MF: Cursor = Cursor {
        df: idx::MF,
        ef: None,
        record: 0,
        app: App::None,
    };
}

/// What one logical channel remembers between its commands.
#[derive(Clone)]
struct Channel {
    open: bool,
    app: AppId,
    cursor: Cursor,
    /// The response waiting for this channel's GET RESPONSE: one buffer per channel, so a
    /// command on another channel cannot take it away (4 × 256 bytes of RAM).
    pending: [u8; 256],
    pending_len: usize,
}

impl Channel {
    const CLOSED: Channel = Channel {
        open: false,
        app: AppId::Files,
        cursor: Cursor::MF,
        pending: [0; 256],
        pending_len: 0,
    };
}

/// The dialect and logical channel of a CLA (ISO 7816-4 5.4.1, TS 102 221 10.1.1): A0 is the
/// GSM SIM on the basic channel; 0X/8X/9X carry channels 0–3 in b2b1; 4X–7X and CX–FX the
/// extended channels 4–19, which this card does not open.
fn classify(cla: u8) -> Result<(Dialect, u8), Status> {
    match cla {
        0xA0 => Ok((Dialect::Gsm, 0)),
        c if c & 0x40 == 0 => {
            if c & 0x20 != 0 || c & 0x0C != 0 {
                // RFU, or secure messaging, which no application here speaks.
                return Err(Status::ClaNotSupported);
            }
            Ok((Dialect::Uicc, c & 0x03))
        }
        c if c & 0x20 != 0 => Err(Status::ClaNotSupported),
        c => Ok((Dialect::Uicc, 4 + (c & 0x0F))),
    }
}

/// Logical channels 0–3 and what each has selected and left waiting.
#[derive(Clone)]
pub(crate) struct Dispatcher {
    channels: [Channel; CHANNELS],
}

impl Dispatcher {
    pub(crate) fn new() -> Self {
        let mut d = Dispatcher {
            channels: [Channel::CLOSED; CHANNELS],
        };
        d.reset();
        d
    }

    /// Power-on: only the basic channel is open, at the MF, with nothing waiting.
    pub(crate) fn reset(&mut self) {
        for c in self.channels.iter_mut() {
            c.open = false;
            c.app = AppId::Files;
            c.cursor = Cursor::MF;
            c.pending_len = 0;
        }
        self.channels[0].open = true;
    }

    /// The channel's selected application and file-system cursor, if it is open.
    pub(crate) fn view(&self, channel: usize) -> Option<(AppId, Cursor)> {
        let c = self.channels.get(channel).filter(|c| c.open)?;
        Some((c.app, c.cursor))
    }

    /// Bit n set = channel n open.
    pub(crate) fn open_channels(&self) -> u8 {
        self.channels
            .iter()
            .enumerate()
            .filter(|(_, c)| c.open)
            .fold(0, |m, (i, _)| m | 1 << i)
    }

    /// The application [`Dispatcher::route`] would hand `cmd` to as an ordinary command (not
    /// a vendor command, MANAGE CHANNEL, SELECT or GET RESPONSE), with `cmd`'s class as that
    /// application sees it (channel bits cleared); `None` when `route` would answer it itself.
    /// Changes nothing: it is for looking ahead ([`crate::Card::pending_sign_request`]).
    pub(crate) fn ordinary_target(&self, card: &CardState, cmd: &Command) -> Option<(AppId, u8)> {
        if matches!(cmd.ins, 0x70 | 0xA4 | 0xC0) || card.is_vendor_command(cmd) {
            return None;
        }
        let (dialect, channel) = classify(cmd.cla).ok()?;
        if dialect == Dialect::Uicc && !card.card_type.is_uicc() {
            return None;
        }
        let c = self.channels.get(channel as usize).filter(|c| c.open)?;
        let app = match dialect {
            Dialect::Gsm => AppId::Files,
            Dialect::Uicc => c.app,
        };
        if dialect == Dialect::Uicc && cmd.cla & 0x10 != 0 && !matches!(app, AppId::Token) {
            return None;
        }
        let cla = match dialect {
            Dialect::Uicc => cmd.cla & !0x03,
            Dialect::Gsm => cmd.cla,
        };
        Some((app, cla))
    }

    /// Decodes class and logical channel, owns MANAGE CHANNEL and GET RESPONSE, and runs every
    /// other command on the channel's own application and cursor, so whatever a command does
    /// stays on its channel. A command for a channel that is not open gets 6881 and touches
    /// nothing.
    pub(crate) fn route(
        &mut self,
        card: &mut CardState,
        apps: &mut Apps<'_>,
        cmd: &Command,
        scratch: &mut [u8; 256],
    ) -> (Out, Status) {
        if let Some(status) = card.vendor_command(cmd) {
            return (Out::Done, status);
        }
        let (dialect, channel) = match classify(cmd.cla) {
            Ok(c) => c,
            Err(status) => return (Out::Done, status),
        };
        if dialect == Dialect::Uicc && !card.card_type.is_uicc() {
            return (Out::Done, Status::ClaNotSupported);
        }
        let ch = channel as usize;
        if ch >= CHANNELS || !self.channels[ch].open {
            return (Out::Done, Status::LogicalChannelNotSupported);
        }
        if dialect == Dialect::Uicc && cmd.ins == 0x70 {
            return match self.manage_channel(channel, cmd, apps, scratch) {
                Ok(out) => (out, Status::Success),
                Err(fail) => (Out::Done, fail.status(dialect)),
            };
        }
        card.enter(self.channels[ch].cursor);
        let result = self.dispatch(card, apps, dialect, ch, cmd, scratch);
        self.channels[ch].cursor = card.cursor();
        result
    }

    /// MANAGE CHANNEL (TS 102 221 11.1.17, ISO 7816-4 7.1.2): open (P1 00; P2 00 lets the card
    /// choose and answers the number) or close (P1 80) logical channels 1–3. A channel opened
    /// from the basic channel starts at the MF with no application; one opened from another
    /// channel starts where that channel is, with nothing waiting.
    fn manage_channel(
        &mut self,
        from: u8,
        cmd: &Command,
        apps: &mut Apps<'_>,
        scratch: &mut [u8; 256],
    ) -> Handled {
        if !cmd.data.is_empty() {
            return Err(Fail::WrongLc);
        }
        match cmd.p1 {
            0x00 => {
                let wanted = match cmd.p2 {
                    0 => (1..CHANNELS)
                        .find(|&c| !self.channels[c].open)
                        .ok_or(Fail::Raw(Status::FunctionNotSupported))?,
                    n if (n as usize) < CHANNELS => n as usize,
                    4..=19 => return Err(Fail::Raw(Status::LogicalChannelNotSupported)),
                    _ => return Err(Fail::BadP1P2),
                };
                if cmd.p2 == 0 && cmd.ne != Some(1) {
                    return Err(Fail::WrongLe(1));
                }
                if cmd.p2 != 0 && cmd.ne.is_some() {
                    return Err(Fail::WrongLc);
                }
                if self.channels[wanted].open {
                    return Err(Fail::Raw(Status::ConditionsNotSatisfied));
                }
                let (app, cursor) = match from {
                    0 => (AppId::Files, Cursor::MF),
                    other => {
                        let c = &self.channels[other as usize];
                        (c.app, c.cursor)
                    }
                };
                let c = &mut self.channels[wanted];
                c.open = true;
                c.app = app;
                c.cursor = cursor;
                c.pending_len = 0;
                if cmd.p2 == 0 {
                    scratch[0] = wanted as u8;
                    return Ok(Out::Data(1));
                }
                Ok(Out::Done)
            }
            0x80 => {
                let which = match cmd.p2 {
                    0 => from as usize,
                    n => n as usize,
                };
                if which == 0 {
                    return Err(Fail::BadP1P2);
                }
                if which >= CHANNELS || !self.channels[which].open {
                    return Err(Fail::Raw(Status::LogicalChannelNotSupported));
                }
                let had = self.channels[which].app;
                let c = &mut self.channels[which];
                c.open = false;
                c.app = AppId::Files;
                c.cursor = Cursor::MF;
                c.pending_len = 0;
                self.release(had, apps);
                Ok(Out::Done)
            }
            _ => Err(Fail::BadP1P2),
        }
    }

    /// Tells `app` it is deselected once no open channel has it selected any more.
    fn release(&self, app: AppId, apps: &mut Apps<'_>) {
        if !self.channels.iter().any(|c| c.open && c.app == app) {
            apps[app as usize].deselect();
        }
    }

    fn dispatch(
        &mut self,
        card: &mut CardState,
        apps: &mut Apps<'_>,
        dialect: Dialect,
        ch: usize,
        cmd: &Command,
        scratch: &mut [u8; 256],
    ) -> (Out, Status) {
        let selected = self.channels[ch].app;
        // ISO 7816-4 command chaining (CLA bit 10) is for the token applet's long data only.
        if dialect == Dialect::Uicc
            && cmd.cla & 0x10 != 0
            && (!apps[selected as usize].takes_chaining() || matches!(cmd.ins, 0xA4 | 0xC0))
        {
            return (Out::Done, Status::ChainingNotSupported);
        }
        if cmd.ins == 0xC0 {
            let result = self.get_response(dialect, ch, cmd, scratch);
            return self.finish(dialect, ch, result, scratch);
        }
        // A new command on this channel drops a response it left waiting; commands on other
        // channels leave it for its own GET RESPONSE.
        self.channels[ch].pending_len = 0;
        // The application sees its command as on the basic channel: the channel is ours.
        let mut cmd = *cmd;
        if dialect == Dialect::Uicc {
            cmd.cla &= !0x03;
        }
        let mut ctx = Ctx {
            dialect,
            card: &mut *card,
        };
        let result = if cmd.ins == 0xA4 {
            let by_aid = (dialect == Dialect::Uicc && cmd.p1 == 0x04)
                .then(|| {
                    BY_AID
                        .into_iter()
                        .find(|&id| apps[id as usize].claims(ctx.card, cmd.data))
                })
                .flatten();
            let chosen = by_aid.unwrap_or(AppId::Files);
            let result = apps[chosen as usize].select(&mut ctx, &cmd, scratch);
            let now = match by_aid {
                Some(id) => id,
                // A file selected beneath the ISD stays beneath it: on this card the card
                // manager does not hide the MF, and it stays selected until an ADF is.
                None if matches!(ctx.card.app, App::Isd | App::AraM) => AppId::CardManager,
                None => AppId::Files,
            };
            self.channels[ch].app = now;
            if now != selected {
                self.release(selected, apps);
            }
            result
        } else {
            // The GSM SIM of TS 51.011 has no applications: class A0 is the file system's.
            let target = match dialect {
                Dialect::Gsm => AppId::Files,
                Dialect::Uicc => selected,
            };
            apps[target as usize].call(&mut ctx, &cmd, scratch)
        };
        self.finish(dialect, ch, result, scratch)
    }

    /// Spells the outcome: a pending response is kept on its channel and announced.
    fn finish(
        &mut self,
        dialect: Dialect,
        ch: usize,
        result: Handled,
        scratch: &[u8; 256],
    ) -> (Out, Status) {
        let c = &mut self.channels[ch];
        match result {
            Ok(Out::Pending(n)) => {
                let n = n.min(c.pending.len());
                c.pending[..n].copy_from_slice(&scratch[..n]);
                c.pending_len = n;
                let announced = (n & 0xFF) as u8;
                let sw = match dialect {
                    Dialect::Gsm => Status::GsmBytesAvailable(announced),
                    Dialect::Uicc => Status::BytesAvailable(announced),
                };
                (Out::Done, sw)
            }
            Ok(Out::Partial(n)) => (
                Out::Data(n),
                Status::BytesAvailable((c.pending_len & 0xFF) as u8),
            ),
            Ok(out) => (out, Status::Success),
            Err(fail) => (Out::Done, fail.status(dialect)),
        }
    }

    fn get_response(
        &mut self,
        dialect: Dialect,
        ch: usize,
        cmd: &Command,
        scratch: &mut [u8; 256],
    ) -> Handled {
        if (cmd.p1, cmd.p2) != (0, 0) {
            return Err(Fail::BadP1P2);
        }
        let c = &mut self.channels[ch];
        if c.pending_len == 0 {
            return Err(Fail::NoResponse);
        }
        let available = c.pending_len;
        let ne = cmd.ne.unwrap_or(available);
        if ne > available {
            return Err(Fail::WrongLe(available));
        }
        scratch[..ne].copy_from_slice(&c.pending[..ne]);
        // Whatever is not fetched stays for a further GET RESPONSE (ISO 7816-4 chaining); a
        // TS 51.011 SIM simply drops it.
        c.pending.copy_within(ne..available, 0);
        c.pending_len = available - ne;
        if dialect == Dialect::Uicc && c.pending_len > 0 {
            return Ok(Out::Partial(ne));
        }
        c.pending_len = 0;
        Ok(Out::Data(ne))
    }
}
