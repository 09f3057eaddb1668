//! Real card readers through the PC/SC service (pcsc-lite's `pcscd`), with the `pcsc` crate.
//!
//! [`list_readers`] reports every reader and whether it holds a card without connecting to any
//! of them; [`PcscTransport::connect`] picks a reader the way `--reader` is typed (an index or
//! a name, see [`select_reader`]) and opens the card in it.
//!
//! # Errors
//!
//! pcsc-lite's return codes become the [`TransportError`] a user can act on: the service not
//! running ([`TransportError::NoService`]), no reader at all, an unknown reader name, an empty
//! reader, a reader held exclusively by another process, a card pulled out in the middle of a
//! command. Everything else is [`TransportError::Pcsc`] with the pcsc-lite function and its
//! description and code.
//!
//! # Sharing and transactions
//!
//! In shared mode (the default) other processes may talk to the same card, and a multi-APDU
//! operation (SELECT, then READ BINARY; VERIFY, then UPDATE) must not be interleaved with
//! theirs. The transport therefore holds a PC/SC transaction (`SCardBeginTransaction`) for its
//! whole lifetime: from [`PcscTransport::connect`] until it is dropped. Meanwhile pcsc-lite
//! makes other processes wait inside `SCardConnect` (and `SCardBeginTransaction`) until the
//! transport is gone; listing readers is not affected. The same applies the other way round:
//! `connect` waits, without a time limit, while another process holds a transaction on the
//! card. In exclusive mode no transaction is needed: nobody else can even connect.
//!
//! Why for the whole lifetime and not per operation: the `pcsc` crate ends a transaction only
//! through its `Transaction<'_>` guard, which mutably borrows the `Card`, so a transaction that
//! spans several [`Transport`] calls would need a self-referential struct (that is, `unsafe`)
//! or a worker thread owning the card. The transport instead begins the transaction and
//! forgets the guard (`std::mem::forget`, safe: it only skips `SCardEndTransaction`), and
//! pcsc-lite releases the lock when the handle is disconnected (`SCardDisconnect` unlocks
//! whatever the handle holds, and so does pcscd when a client process dies). A simlab command
//! runs one operation per process, so "the lifetime of the transport" is exactly "the
//! operation"; long-running callers should drop the transport between operations.
//!
//! # Resets by someone else
//!
//! pcsc-lite checks for a reset by another handle before it sends a command, so
//! `SCARD_W_RESET_CARD` from `SCardTransmit` means the command did not reach the card, but
//! whatever state the card had (selected file, verified PIN) is gone. The transport then
//! reconnects once, and repeats the command only if it had not sent anything since it
//! connected or reset the card itself (the card's state is then what the caller expects
//! anyway); otherwise it reports [`TransportError::CardRemoved`], never resending a command
//! into a card whose state changed under it. While the transaction is held no other process
//! can even connect, so the path remains for the moment between `SCardConnect` and
//! `SCardBeginTransaction` (handled in `connect`) and for readers that reset a card by
//! themselves.
//!
//! # Disconnecting
//!
//! Dropping the transport disconnects with `SCARD_LEAVE_CARD` (the `pcsc` crate's own `Drop`
//! would reset the card): the card keeps its state, so a PIN verified by one simlab command is
//! still verified for the next one, as with other PC/SC tools. But pcsc-lite powers down a
//! card nobody is connected to after a grace period, which ends that state: with vpcd (a
//! driver pcscd polls every 400 ms) 0.4 to 0.8 s after the last disconnect; with readers that
//! report events (CCID), after pcsc-lite's compile-time `PCSCLITE_POWER_OFF_GRACE_PERIOD`.

use super::{Transport, TransportError};
use pcsc::{
    Card, Context, Disposition, Error as PcscError, Protocols, ReaderState, Scope, ShareMode, State,
};
use std::ffi::CString;
use std::time::{Duration, Instant};

/// The protocols asked for at connect and reset: whichever the card and reader agree on.
const PROTOCOLS: Protocols = Protocols::T0.union(Protocols::T1);

/// How long to wait for pcscd to notice a removal after a failed exchange, before calling the
/// failure a communication error rather than a removed card. pcscd polls presence every
/// 400 ms for readers that do not signal events (vpcd among them).
const REMOVAL_GRACE: Duration = Duration::from_millis(1500);

/// One reader as pcscd reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReaderInfo {
    /// The reader's name, as `--reader` matches it.
    pub name: String,
    /// Whether a card is in the reader (a mute card, one that gave no ATR, counts as present).
    pub card_present: bool,
    /// The card's answer to reset, when a card is present and answered.
    pub atr: Option<Vec<u8>>,
}

/// All readers with their state, in the order `--reader INDEX` counts them.
///
/// Uses `SCardGetStatusChange` with a zero timeout, not `SCardConnect`: listing neither powers
/// nor resets a card, and works while another process holds a reader exclusively.
///
/// Errors: [`TransportError::NoService`] when pcscd is not running,
/// [`TransportError::NoReaders`] when it runs without any reader (never an empty list).
pub fn list_readers() -> Result<Vec<ReaderInfo>, TransportError> {
    let ctx = establish()?;
    let readers = reader_names(&ctx)?;
    let mut states: Vec<ReaderState> = readers
        .iter()
        .map(|(c_name, _)| ReaderState::new(c_name.clone(), State::UNAWARE))
        .collect();
    // With every state UNAWARE, pcsc-lite answers at once with the current states.
    ctx.get_status_change(Duration::ZERO, &mut states)
        .map_err(|e| service_error("SCardGetStatusChange", e))?;
    Ok(readers
        .into_iter()
        .zip(&states)
        .map(|((_, name), state)| {
            let event = state.event_state();
            let card_present = event.contains(State::PRESENT);
            let atr = (card_present && !state.atr().is_empty()).then(|| state.atr().to_vec());
            ReaderInfo {
                name,
                card_present,
                atr,
            }
        })
        .collect())
}

/// Picks the reader `wanted` names among `readers` (in [`list_readers`] order) and returns its
/// index.
///
/// - All digits: an index (`"0"` is the first reader).
/// - Otherwise the reader with exactly that name; else the only one with that name ignoring
///   case; else the only one containing `wanted` ignoring case (`"00 01"` finds
///   `"Virtual PCD 00 01"`).
///
/// An index out of range, a name matching nothing, or a substring matching several readers
/// is [`TransportError::ReaderNotFound`], which lists all readers.
pub fn select_reader<S: AsRef<str>>(wanted: &str, readers: &[S]) -> Result<usize, TransportError> {
    let not_found = || TransportError::ReaderNotFound {
        wanted: wanted.to_string(),
        available: readers.iter().map(|r| r.as_ref().to_string()).collect(),
    };
    if !wanted.is_empty() && wanted.bytes().all(|b| b.is_ascii_digit()) {
        return match wanted.parse::<usize>() {
            Ok(index) if index < readers.len() => Ok(index),
            _ => Err(not_found()),
        };
    }
    if let Some(index) = readers.iter().position(|r| r.as_ref() == wanted) {
        return Ok(index);
    }
    let wanted_lower = wanted.to_lowercase();
    let only = |matches: &dyn Fn(&str) -> bool| {
        let mut found = readers
            .iter()
            .enumerate()
            .filter(|(_, r)| matches(&r.as_ref().to_lowercase()))
            .map(|(i, _)| i);
        match (found.next(), found.next()) {
            (Some(index), None) => Some(index),
            _ => None,
        }
    };
    only(&|name| name == wanted_lower)
        .or_else(|| only(&|name| name.contains(&wanted_lower)))
        .ok_or_else(not_found)
}

/// How [`PcscTransport::connect`] opens the card.
#[derive(Clone, Debug, Default)]
pub struct PcscOptions {
    /// Connect with `SCARD_SHARE_EXCLUSIVE`: no other process may connect meanwhile (and the
    /// connect fails with [`TransportError::ReaderBusy`] if one already is).
    pub exclusive: bool,
    /// Wait up to this long for a card to be inserted; without it an empty reader is
    /// [`TransportError::NoCard`] at once.
    pub wait: Option<Duration>,
}

/// A card in a PC/SC reader.
///
/// Holds a PC/SC transaction for its whole lifetime in shared mode, and leaves the card as it
/// is (no reset) when dropped; see the [module documentation](self).
pub struct PcscTransport {
    ctx: Context,
    /// Always `Some` until [`Drop`] takes it to disconnect with `SCARD_LEAVE_CARD`.
    card: Option<Card>,
    reader: String,
    c_reader: CString,
    share: ShareMode,
    atr: Vec<u8>,
    /// Whether a command may have changed the card's state since the card was connected or
    /// reset by us; decides whether a command refused because of a foreign reset may be
    /// repeated.
    touched: bool,
}

impl PcscTransport {
    /// Opens the card in the reader `reader` names, as typed after `--reader`: all digits =
    /// index into [`list_readers`] order; otherwise an exact name, else a unique
    /// case-insensitive substring (see [`select_reader`]).
    ///
    /// With `opts.wait`, waits (an `SCardGetStatusChange` loop) up to that long for a card and
    /// fails with [`TransportError::Timeout`]; without it an empty reader is
    /// [`TransportError::NoCard`]. Connects in shared mode unless `opts.exclusive`, with
    /// protocol T=0 or T=1. In shared mode it then begins a transaction, which waits while
    /// another process holds one on the same card.
    pub fn connect(reader: &str, opts: &PcscOptions) -> Result<Self, TransportError> {
        let ctx = establish()?;
        let readers = reader_names(&ctx)?;
        let names: Vec<&str> = readers.iter().map(|(_, name)| name.as_str()).collect();
        let index = select_reader(reader, &names)?;
        let (c_reader, name) = readers[index].clone();
        let gone = || TransportError::ReaderNotFound {
            wanted: reader.to_string(),
            available: names.iter().map(ToString::to_string).collect(),
        };

        if let Some(wait) = opts.wait {
            wait_for_card(&ctx, &c_reader, &name, wait, gone)?;
        }

        let share = if opts.exclusive {
            ShareMode::Exclusive
        } else {
            ShareMode::Shared
        };
        let card = ctx
            .connect(&c_reader, share, PROTOCOLS)
            .map_err(|e| match e {
                PcscError::NoSmartcard | PcscError::RemovedCard => TransportError::NoCard {
                    reader: name.clone(),
                },
                PcscError::SharingViolation => TransportError::ReaderBusy {
                    reader: name.clone(),
                },
                PcscError::UnknownReader | PcscError::ReaderUnavailable => gone(),
                e => service_error("SCardConnect", e),
            })?;

        let mut transport = PcscTransport {
            ctx,
            card: Some(card),
            reader: name,
            c_reader,
            share,
            atr: Vec::new(),
            touched: false,
        };
        if !opts.exclusive {
            transport.begin_transaction()?;
        }
        transport.atr = transport.read_atr()?;
        Ok(transport)
    }

    /// The reader's full name.
    pub fn reader_name(&self) -> &str {
        &self.reader
    }

    fn card(&mut self) -> &mut Card {
        self.card
            .as_mut()
            .expect("the card handle is only taken when the transport is dropped")
    }

    /// Begins the transaction this transport holds until it disconnects (see the module
    /// documentation for why it is never ended explicitly).
    fn begin_transaction(&mut self) -> Result<(), TransportError> {
        let mut reset_seen = false;
        loop {
            let result = match self.card().transaction() {
                Ok(guard) => {
                    // Keep the lock: SCardDisconnect releases it.
                    std::mem::forget(guard);
                    Ok(())
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => return Ok(()),
                // Someone reset the card between our connect and now: acknowledge and retry.
                // Nothing was sent yet, so nothing is lost.
                Err(PcscError::ResetCard) if !reset_seen => {
                    reset_seen = true;
                    let share = self.share;
                    self.card()
                        .reconnect(share, PROTOCOLS, Disposition::LeaveCard)
                        .map_err(|e| self.session_error("SCardReconnect", e))?;
                }
                Err(PcscError::NoSmartcard | PcscError::RemovedCard) => {
                    return Err(TransportError::NoCard {
                        reader: self.reader.clone(),
                    });
                }
                Err(e) => return Err(self.session_error("SCardBeginTransaction", e)),
            }
        }
    }

    /// The ATR of the card as pcscd has it now.
    fn read_atr(&mut self) -> Result<Vec<u8>, TransportError> {
        let status = self
            .card()
            .status2_owned()
            .map_err(|e| self.session_error("SCardStatus", e))?;
        Ok(status.atr().to_vec())
    }

    /// `SCardReconnect` with `init` (`ResetCard` for [`Transport::reset`], `LeaveCard` to
    /// acknowledge a foreign reset), then reads the new ATR. The transaction survives: pcsc-lite
    /// keeps a handle's lock across `SCardReconnect`.
    fn reconnect(&mut self, init: Disposition) -> Result<Vec<u8>, TransportError> {
        let share = self.share;
        let mut result = self.card().reconnect(share, PROTOCOLS, init);
        if result == Err(PcscError::ResetCard) {
            // A foreign reset still to be acknowledged; the first call acknowledged it.
            result = self.card().reconnect(share, PROTOCOLS, init);
        }
        result.map_err(|e| self.session_error("SCardReconnect", e))?;
        self.touched = false;
        let atr = self.read_atr()?;
        self.atr.clone_from(&atr);
        Ok(atr)
    }

    fn transmit_once(&mut self, capdu: &[u8]) -> Result<Vec<u8>, PcscError> {
        let mut buf = vec![0u8; pcsc::MAX_BUFFER_SIZE_EXTENDED];
        let n = self.card().transmit(capdu, &mut buf)?.len();
        buf.truncate(n);
        Ok(buf)
    }

    /// A "successful" answer without a status word. vpcd reports a virtual card that
    /// disconnects in the middle of a command this way (`SCardTransmit` succeeds with 0 bytes),
    /// before pcscd has noticed the removal; if another virtual card connects to vpcd within
    /// pcscd's 400 ms presence poll, pcscd never notices a removal at all.
    fn check_short(&self, rapdu: Vec<u8>) -> Result<Vec<u8>, TransportError> {
        if rapdu.len() >= 2 {
            return Ok(rapdu);
        }
        if self.card_gone() {
            return Err(TransportError::CardRemoved {
                reader: self.reader.clone(),
            });
        }
        Err(TransportError::BadResponse {
            reason: if rapdu.is_empty() {
                "the reader returned no bytes at all: the card may have been removed or \
                 replaced during the command"
                    .to_string()
            } else {
                format!(
                    "the reader returned {} byte(s), no status word",
                    rapdu.len()
                )
            },
        })
    }

    /// Maps a failure of an operation on the open card.
    fn session_error(&self, op: &'static str, e: PcscError) -> TransportError {
        match e {
            PcscError::RemovedCard | PcscError::NoSmartcard | PcscError::ResetCard => {
                TransportError::CardRemoved {
                    reader: self.reader.clone(),
                }
            }
            PcscError::SharingViolation => TransportError::ReaderBusy {
                reader: self.reader.clone(),
            },
            // Failures that a card leaving the reader also produces (vpcd answers a closed
            // connection with a communication error, before pcscd has polled the reader).
            PcscError::CommError
            | PcscError::NotTransacted
            | PcscError::UnknownError
            | PcscError::UnresponsiveCard
            | PcscError::UnpoweredCard
            | PcscError::ReaderUnavailable
                if self.card_gone() =>
            {
                TransportError::CardRemoved {
                    reader: self.reader.clone(),
                }
            }
            e => service_error(op, e),
        }
    }

    /// Whether the card has left the reader, waiting up to [`REMOVAL_GRACE`] for pcscd to
    /// notice.
    fn card_gone(&self) -> bool {
        let mut state = [ReaderState::new(self.c_reader.clone(), State::UNAWARE)];
        let deadline = Instant::now() + REMOVAL_GRACE;
        let mut timeout = Duration::ZERO;
        loop {
            if self.ctx.get_status_change(timeout, &mut state).is_err() {
                // Timeout: still present. Anything else: we cannot tell; report what failed.
                return false;
            }
            if !state[0].event_state().contains(State::PRESENT) {
                return true;
            }
            state[0].sync_current_state();
            timeout = deadline.saturating_duration_since(Instant::now());
            if timeout.is_zero() {
                return false;
            }
        }
    }
}

impl Transport for PcscTransport {
    fn transmit_raw(&mut self, capdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let untouched = !self.touched;
        self.touched = true;
        match self.transmit_once(capdu) {
            Ok(rapdu) => self.check_short(rapdu),
            Err(PcscError::ResetCard) => {
                // Reset by another handle; pcsc-lite refused before sending the command.
                self.reconnect(Disposition::LeaveCard)?;
                if !untouched {
                    // The card lost state our earlier commands built: the caller's operation
                    // cannot go on as if nothing happened.
                    return Err(TransportError::CardRemoved {
                        reader: self.reader.clone(),
                    });
                }
                self.touched = true;
                match self.transmit_once(capdu) {
                    Ok(rapdu) => self.check_short(rapdu),
                    Err(e) => Err(self.session_error("SCardTransmit", e)),
                }
            }
            Err(e) => Err(self.session_error("SCardTransmit", e)),
        }
    }

    fn reset(&mut self) -> Result<Vec<u8>, TransportError> {
        self.reconnect(Disposition::ResetCard)
    }

    fn atr(&self) -> Vec<u8> {
        self.atr.clone()
    }

    fn describe(&self) -> String {
        self.reader.clone()
    }
}

impl Drop for PcscTransport {
    fn drop(&mut self) {
        if let Some(card) = self.card.take()
            && let Err((card, _)) = card.disconnect(Disposition::LeaveCard)
        {
            // The handle is already dead (service gone, reader unplugged). Dropping `card`
            // would retry the disconnect with SCARD_RESET_CARD; never risk a reset on drop.
            std::mem::forget(card);
        }
    }
}

fn establish() -> Result<Context, TransportError> {
    Context::establish(Scope::User).map_err(|e| service_error("SCardEstablishContext", e))
}

/// The readers pcscd knows, as C names (to talk to pcscd) and as text (to show and match).
fn reader_names(ctx: &Context) -> Result<Vec<(CString, String)>, TransportError> {
    let names = ctx
        .list_readers_owned()
        .map_err(|e| service_error("SCardListReaders", e))?;
    if names.is_empty() {
        return Err(TransportError::NoReaders);
    }
    Ok(names
        .into_iter()
        .map(|c| {
            let text = c.to_string_lossy().into_owned();
            (c, text)
        })
        .collect())
}

/// Waits until `reader` holds a card (present, with or without an ATR: a mute card is
/// reported by the connect that follows).
fn wait_for_card(
    ctx: &Context,
    c_reader: &CString,
    reader: &str,
    wait: Duration,
    gone: impl Fn() -> TransportError,
) -> Result<(), TransportError> {
    let start = Instant::now();
    let mut state = [ReaderState::new(c_reader.clone(), State::UNAWARE)];
    let mut timeout = Duration::ZERO;
    loop {
        match ctx.get_status_change(timeout, &mut state) {
            Ok(()) => {}
            Err(PcscError::Timeout) => {
                return Err(TransportError::Timeout {
                    reader: reader.to_string(),
                    waited: wait,
                });
            }
            Err(PcscError::UnknownReader) => return Err(gone()),
            Err(e) => return Err(service_error("SCardGetStatusChange", e)),
        }
        let event = state[0].event_state();
        if event.contains(State::PRESENT) {
            return Ok(());
        }
        if event.contains(State::UNKNOWN) {
            return Err(gone());
        }
        state[0].sync_current_state();
        timeout = wait.saturating_sub(start.elapsed());
    }
}

/// Maps failures that mean the same whatever the operation, and wraps the rest.
fn service_error(op: &'static str, e: PcscError) -> TransportError {
    match e {
        PcscError::NoService | PcscError::ServiceStopped => TransportError::NoService,
        PcscError::NoReadersAvailable => TransportError::NoReaders,
        e => TransportError::Pcsc {
            op,
            reason: format!("{e} ({e:?}, 0x{:08X})", e as u32),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VPCD: [&str; 2] = ["Virtual PCD 00 00", "Virtual PCD 00 01"];

    fn not_found(result: Result<usize, TransportError>) -> (String, Vec<String>) {
        match result {
            Err(TransportError::ReaderNotFound { wanted, available }) => (wanted, available),
            other => panic!("expected ReaderNotFound, got {other:?}"),
        }
    }

    #[test]
    fn index_selects_in_list_order() {
        assert_eq!(select_reader("0", &VPCD).unwrap(), 0);
        assert_eq!(select_reader("1", &VPCD).unwrap(), 1);
        assert_eq!(select_reader("001", &VPCD).unwrap(), 1);
    }

    #[test]
    fn index_out_of_range_lists_all_readers() {
        let (wanted, available) = not_found(select_reader("2", &VPCD));
        assert_eq!(wanted, "2");
        assert_eq!(available, VPCD);
        not_found(select_reader("99999999999999999999999", &VPCD));
    }

    #[test]
    fn exact_name_wins() {
        assert_eq!(select_reader("Virtual PCD 00 01", &VPCD).unwrap(), 1);
        // An exact name that is also a substring of another reader's name.
        let readers = ["ACS ACR38U", "ACS ACR38U 01"];
        assert_eq!(select_reader("ACS ACR38U", &readers).unwrap(), 0);
    }

    #[test]
    fn case_insensitive_exact_beats_substring() {
        let readers = ["ACS ACR38U", "ACS ACR38U 01"];
        assert_eq!(select_reader("acs acr38u", &readers).unwrap(), 0);
    }

    #[test]
    fn unique_substring_ignoring_case() {
        assert_eq!(select_reader("00 01", &VPCD).unwrap(), 1);
        assert_eq!(select_reader("pcd 00 00", &VPCD).unwrap(), 0);
        let readers = ["Gemalto PC Twin Reader 00 00", "Virtual PCD 00 00"];
        assert_eq!(select_reader("gemalto", &readers).unwrap(), 0);
    }

    #[test]
    fn ambiguous_substring_is_not_found() {
        let (wanted, available) = not_found(select_reader("virtual", &VPCD));
        assert_eq!(wanted, "virtual");
        assert_eq!(available, VPCD);
        not_found(select_reader("reader", &["Reader A", "reader B"]));
    }

    #[test]
    fn no_match_is_not_found() {
        not_found(select_reader("Omnikey", &VPCD));
        not_found(select_reader("0 1", &VPCD));
        let none: [&str; 0] = [];
        let (_, available) = not_found(select_reader("0", &none));
        assert!(available.is_empty());
        not_found(select_reader("x", &none));
    }

    #[test]
    fn digits_are_always_an_index() {
        // "00" is all digits, so it is index 0, not a substring of both names.
        assert_eq!(select_reader("00", &VPCD).unwrap(), 0);
    }

    #[test]
    fn empty_name_matches_only_a_single_reader() {
        assert_eq!(select_reader("", &["Only Reader"]).unwrap(), 0);
        not_found(select_reader("", &VPCD));
    }

    #[test]
    fn pcsc_errors_map_to_what_users_can_act_on() {
        assert!(matches!(
            service_error("SCardEstablishContext", PcscError::NoService),
            TransportError::NoService
        ));
        assert!(matches!(
            service_error("SCardListReaders", PcscError::ServiceStopped),
            TransportError::NoService
        ));
        assert!(matches!(
            service_error("SCardListReaders", PcscError::NoReadersAvailable),
            TransportError::NoReaders
        ));
        let other = service_error("SCardConnect", PcscError::ProtoMismatch);
        let TransportError::Pcsc { op, reason } = &other else {
            panic!("expected Pcsc, got {other:?}");
        };
        assert_eq!(*op, "SCardConnect");
        assert!(reason.contains("ProtoMismatch"), "{reason}");
        assert!(reason.contains("0x8010000F"), "{reason}");
    }
}
