//! The card side of vsmartcard's vpcd protocol.
//!
//! vpcd is a pcscd reader driver that *listens* on TCP (reader slot `n` on port 35963 + n by
//! default); a virtual card *connects* to it, and pcscd sees a card in that reader for as long
//! as the connection lasts. Every message, both ways, is a 2-byte big-endian length followed
//! by that many bytes of payload:
//!
//! | payload from vpcd       | meaning                    | answer                 |
//! |-------------------------|----------------------------|------------------------|
//! | `00`                    | power off                  | none                   |
//! | `01`                    | power on                   | none                   |
//! | `02`                    | (warm) reset               | none                   |
//! | `04`                    | get ATR                    | the ATR                |
//! | two bytes or more       | a command APDU             | the response APDU      |
//! | any other single byte   | an application's 1-byte APDU, forwarded by vpcd | 67 00 |
//!
//! (vpcd passes whatever an application transmits, so a 1-byte APDU `00`/`01`/`02`/`04` is
//! indistinguishable from a control message: a limit of the protocol.)
//!
//! vpcd asks for the ATR as its presence check (pcscd polls about every 400 ms), and also
//! right after each power on and reset. Frames can arrive several to a TCP segment (power on
//! followed by get ATR) or split over segments (Debian's vpcd writes the length and the payload
//! with two `send` calls), so the input is parsed as a stream by [`Framer`].
//!
//! [`serve`] is the blocking client loop: connect, answer frames in order, reconnect with a
//! capped backoff when pcscd is not there yet or restarts, and stop promptly when asked;
//! [`install_ctrl_c`] wires SIGINT/SIGTERM to its stop flag.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::time::Duration;

use super::VirtualCard;

/// vpcd's port for reader slot 0 ("Virtual PCD 00 00"); slot `n` listens on `DEFAULT_PORT + n`.
pub const DEFAULT_PORT: u16 = 35963;

/// The longest payload one message can carry: the length prefix is 16 bits. (The longest
/// extended APDU, 65544 bytes, does not fit; vpcd itself refuses to send more than this.)
pub const MAX_PAYLOAD: usize = 0xFFFF;

/// pcsc-lite's `MAX_ATR_SIZE`: vpcd fails the power-up when the ATR is longer.
pub const MAX_ATR_LEN: usize = 33;

/// The status word sent in place of a response vpcd could not carry (see
/// [`Event::BadResponse`]): 6F 00, "no precise diagnosis".
pub const SW_NO_PRECISE_DIAGNOSIS: [u8; 2] = [0x6F, 0x00];

const CTRL_POWER_OFF: u8 = 0x00;
const CTRL_POWER_ON: u8 = 0x01;
const CTRL_RESET: u8 = 0x02;
const CTRL_GET_ATR: u8 = 0x04;

// ---------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------

/// One message from vpcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// `00`: the reader cut the power. No answer.
    PowerOff,
    /// `01`: the reader powered the card (a get ATR follows). No answer.
    PowerOn,
    /// `02`: warm reset (a get ATR follows). No answer.
    Reset,
    /// `04`: send the ATR. Also vpcd's presence poll.
    GetAtr,
    /// A command APDU (two bytes or more); answered with the response APDU.
    Apdu(Vec<u8>),
}

impl Frame {
    /// The wire form of this frame (length prefix and payload), as vpcd would send it.
    ///
    /// An `Apdu` of fewer than two bytes has no unambiguous wire form: it encodes like a
    /// control frame (or an empty frame) and decodes as one.
    pub fn encode(&self) -> Result<Vec<u8>, PayloadTooLong> {
        match self {
            Frame::PowerOff => encode(&[CTRL_POWER_OFF]),
            Frame::PowerOn => encode(&[CTRL_POWER_ON]),
            Frame::Reset => encode(&[CTRL_RESET]),
            Frame::GetAtr => encode(&[CTRL_GET_ATR]),
            Frame::Apdu(apdu) => encode(apdu),
        }
    }
}

/// A message that is not valid vpcd. In every case the length prefix was intact, so
/// [`Framer`] skips just that message and the stream stays in sync: the next call to
/// [`Framer::next_frame`] starts at the following message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A length prefix of 0 (`00 00`): the two prefix bytes are consumed, nothing else.
    /// (vpcd never sends one, and never expects an answer to one.)
    Empty,
    /// A 1-byte payload other than 00, 01, 02, 04: the three bytes are consumed.
    UnknownControl(u8),
    /// A length prefix above the framer's limit ([`Framer::with_max_len`]): the prefix is
    /// consumed and the `len` payload bytes are discarded as they arrive, never buffered.
    /// Cannot happen with the default limit, [`MAX_PAYLOAD`], which every prefix fits.
    TooLong { len: usize, max: usize },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::Empty => write!(f, "empty vpcd frame (length 0), skipped"),
            FrameError::UnknownControl(b) => {
                write!(f, "unknown vpcd control byte {b:02x}, skipped")
            }
            FrameError::TooLong { len, max } => {
                write!(f, "vpcd frame of {len} bytes is longer than {max}, skipped")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// A payload longer than a 16-bit length prefix can describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PayloadTooLong {
    /// The payload's length, above [`MAX_PAYLOAD`].
    pub len: usize,
}

impl fmt::Display for PayloadTooLong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "payload of {} bytes does not fit a vpcd frame (at most {MAX_PAYLOAD})",
            self.len
        )
    }
}

impl std::error::Error for PayloadTooLong {}

/// Frames one payload: its 2-byte big-endian length, then the payload.
pub fn encode(payload: &[u8]) -> Result<Vec<u8>, PayloadTooLong> {
    let len = u16::try_from(payload.len()).map_err(|_| PayloadTooLong { len: payload.len() })?;
    let mut out = Vec::with_capacity(2 + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    Ok(out)
}

/// A pure parser for the byte stream from vpcd: [`push`](Framer::push) bytes as they arrive,
/// in chunks of any size, then take complete messages with [`next_frame`](Framer::next_frame)
/// until it returns `None`. Never panics; bad messages come out as [`FrameError`]s and are
/// skipped without losing sync.
#[derive(Debug, Clone)]
pub struct Framer {
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    start: usize,
    /// Payload bytes of an oversized message still to discard. Whenever this is non-zero,
    /// nothing is buffered (`start == buf.len()`).
    skip: usize,
    max_len: usize,
}

impl Default for Framer {
    fn default() -> Self {
        Self::new()
    }
}

impl Framer {
    /// A framer accepting any payload a length prefix can describe ([`MAX_PAYLOAD`]).
    pub fn new() -> Self {
        Self::with_max_len(MAX_PAYLOAD)
    }

    /// A framer that rejects (and skips) payloads longer than `max_len` bytes, so at most
    /// `max_len + 2` bytes of an incomplete message are ever buffered.
    pub fn with_max_len(max_len: usize) -> Self {
        Framer {
            buf: Vec::new(),
            start: 0,
            skip: 0,
            max_len,
        }
    }

    /// Appends bytes received from vpcd.
    pub fn push(&mut self, mut bytes: &[u8]) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
            }
        } else if self.start >= self.buf.len() - self.start {
            // Compact once the consumed part outweighs the rest: amortised O(1) per byte.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes received but not yet returned as a frame (an incomplete message).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete message, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Result<Frame, FrameError>> {
        self.discard_skipped();
        let avail = &self.buf[self.start..];
        if self.skip > 0 || avail.len() < 2 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([avail[0], avail[1]]));
        if len == 0 {
            self.start += 2;
            return Some(Err(FrameError::Empty));
        }
        if len > self.max_len {
            self.start += 2;
            self.skip = len;
            self.discard_skipped();
            return Some(Err(FrameError::TooLong {
                len,
                max: self.max_len,
            }));
        }
        let payload = avail.get(2..2 + len)?;
        let frame = match *payload {
            [CTRL_POWER_OFF] => Ok(Frame::PowerOff),
            [CTRL_POWER_ON] => Ok(Frame::PowerOn),
            [CTRL_RESET] => Ok(Frame::Reset),
            [CTRL_GET_ATR] => Ok(Frame::GetAtr),
            [other] => Err(FrameError::UnknownControl(other)),
            _ => Ok(Frame::Apdu(payload.to_vec())),
        };
        self.start += 2 + len;
        Some(frame)
    }

    fn discard_skipped(&mut self) {
        let n = self.skip.min(self.buf.len() - self.start);
        self.start += n;
        self.skip -= n;
    }
}

// ---------------------------------------------------------------------------------------------
// The client loop
// ---------------------------------------------------------------------------------------------

/// How [`serve`] reaches vpcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcdOptions {
    /// vpcd's address, `host:port` (`[v6addr]:port` for IPv6), e.g. `127.0.0.1:35963`.
    pub addr: String,
    /// Keep trying to (re)connect — pcscd not started yet, restarted, card ejected — until
    /// stopped. Without it, the first failed connect or lost connection ends [`serve`].
    pub reconnect: bool,
    /// A fault for tests: after this many APDUs the card is pulled once — the connection closes
    /// without answering the next command — and then reinserted (with `reconnect`). It is how
    /// "card removed mid-command" is tested without a hand on the reader.
    pub pull_after: Option<u64>,
}

impl Default for VpcdOptions {
    fn default() -> Self {
        VpcdOptions {
            addr: format!("127.0.0.1:{DEFAULT_PORT}"),
            reconnect: true,
            pull_after: None,
        }
    }
}

/// What [`serve`] reports while it runs, for progress output and traces.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// Connected to vpcd at this address: the card is in the reader. (The kernel completes the
    /// connection before vpcd accepts it; vpcd accepts on its next presence poll.)
    Connected(SocketAddr),
    /// A connection attempt failed: vpcd not listening (pcscd not running), name not resolving.
    ConnectFailed { reason: String },
    /// The connection ended — closed by vpcd (pcscd stopped, or vpcd dropped the card after
    /// an error), an I/O error, or `stop` — and the card was powered off.
    Disconnected { reason: String },
    /// The next connection attempt comes after this delay.
    Retrying { delay: Duration },
    /// vpcd powered the card on; the card was reset.
    PowerOn,
    /// vpcd powered the card off.
    PowerOff,
    /// vpcd reset the card.
    Reset,
    /// vpcd asked for the ATR (its presence poll, and after power on / reset); it was sent.
    AtrRequested,
    /// One command and the response sent for it.
    Apdu { command: Vec<u8>, response: Vec<u8> },
    /// A message that is not valid vpcd; skipped, and the session goes on. For an unknown
    /// 1-byte payload (which can only be an application's 1-byte APDU, forwarded by vpcd,
    /// which waits for an answer) 67 00 (wrong length) was answered.
    BadFrame(FrameError),
    /// The card's response could not go to vpcd as is: empty (vpcd takes an empty answer as a
    /// failure and drops the card) or longer than [`MAX_PAYLOAD`]. 6F 00 was sent instead.
    BadResponse { len: usize },
}

/// The status word answered to an unknown 1-byte message: 67 00, wrong length.
const SW_WRONG_LENGTH: [u8; 2] = [0x67, 0x00];

/// How long one read waits before `stop` is checked again.
const READ_TIMEOUT: Duration = Duration::from_millis(200);
/// A peer that does not take a few bytes within this time is gone.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// One connection attempt to one address.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnect backoff: first delay, doubling up to the cap.
const BACKOFF_FIRST: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long a card pulled by the test fault stays out of the reader.
const PULLED_CARD_OUT: Duration = Duration::from_millis(1500);
/// Granularity of the backoff sleep's `stop` checks.
const STOP_POLL: Duration = Duration::from_millis(20);
const READ_BUF: usize = 64 * 1024;

/// Runs `card` as the virtual card behind vpcd at `opts.addr` until `stop` becomes true
/// (checked at least every 200 ms), then closes the connection and returns `Ok(())`.
///
/// Frames are answered in order, each response with a single write. Power on and reset call
/// [`VirtualCard::reset`], power off [`VirtualCard::power_off`]; the card is also powered off
/// whenever the connection ends (a removed card). Garbage from vpcd is reported as
/// [`Event::BadFrame`] and skipped; it never ends the session.
///
/// With `opts.reconnect`, failed connects and lost connections are retried (50 ms doubling to
/// 1 s) until `stop`. Without it the I/O error is returned — `ConnectionAborted` when vpcd
/// closed the connection. An `addr` that is not `host:port` is an `InvalidInput` error, always.
pub fn serve(
    card: &mut dyn VirtualCard,
    opts: &VpcdOptions,
    stop: &AtomicBool,
    events: &mut dyn FnMut(Event),
) -> io::Result<()> {
    check_addr(&opts.addr)?;
    let mut buf = vec![0u8; READ_BUF];
    let mut delay = BACKOFF_FIRST;
    let mut pull_after = opts.pull_after;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        match connect(&opts.addr) {
            Ok((stream, peer)) => {
                events(Event::Connected(peer));
                let mut session = Session {
                    card: &mut *card,
                    stream,
                    events: &mut *events,
                    talked: false,
                    pull_after: &mut pull_after,
                    pulled: false,
                };
                let end = session.run(stop, &mut buf);
                let talked = session.talked;
                let pulled = session.pulled;
                card.power_off();
                match end {
                    Ok(()) => {
                        events(Event::Disconnected {
                            reason: "stopped".into(),
                        });
                        return Ok(());
                    }
                    Err(e) => {
                        events(Event::Disconnected {
                            reason: e.to_string(),
                        });
                        if !opts.reconnect {
                            return Err(e);
                        }
                    }
                }
                // A connection vpcd used proves it is back: retry quickly. One it dropped
                // without a word keeps backing off.
                if talked {
                    delay = BACKOFF_FIRST;
                }
                // A pulled card stays out long enough for pcscd's 400 ms presence poll to see
                // it gone; back sooner, pcscd would take the reinserted card for the old one.
                if pulled {
                    delay = PULLED_CARD_OUT;
                }
            }
            Err(e) => {
                events(Event::ConnectFailed {
                    reason: e.to_string(),
                });
                if !opts.reconnect {
                    return Err(e);
                }
            }
        }
        events(Event::Retrying { delay });
        if sleep_unless_stopped(delay, stop) {
            return Ok(());
        }
        delay = (delay * 2).min(BACKOFF_MAX);
    }
}

fn check_addr(addr: &str) -> io::Result<()> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("vpcd address {addr:?} is not host:port"),
        ))
    }
}

/// Connects to the first address `addr` resolves to that accepts.
fn connect(addr: &str) -> io::Result<(TcpStream, SocketAddr)> {
    let mut last = io::Error::new(
        io::ErrorKind::NotFound,
        format!("{addr} resolves to no address"),
    );
    for sa in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&sa, CONNECT_TIMEOUT) {
            Ok(s) => return Ok((s, sa)),
            Err(e) => last = io::Error::new(e.kind(), format!("connect to {sa}: {e}")),
        }
    }
    Err(last)
}

/// Sleeps for `d`, returning early (with `true`) once `stop` is set.
fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let mut left = d;
    while !left.is_zero() {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        let step = left.min(STOP_POLL);
        std::thread::sleep(step);
        left -= step;
    }
    stop.load(Ordering::Relaxed)
}

/// Asks the kernel to acknowledge received data at once instead of delaying the ACK (up to
/// 40 ms) in the hope of piggybacking it on a reply. Linux leaves quick-ACK mode by itself, so
/// this is re-armed after every read. Without it, a vpcd that writes the length and the payload
/// separately (Nagle holding the payload until the length is acknowledged) costs each APDU a
/// delayed-ACK timeout. Best effort: failure only costs speed.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn quickack(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: a valid socket descriptor, and a pointer/length pair describing a live c_int.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_QUICKACK,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn quickack(_stream: &TcpStream) {}

/// One connection.
struct Session<'a> {
    card: &'a mut dyn VirtualCard,
    stream: TcpStream,
    events: &'a mut dyn FnMut(Event),
    /// Whether vpcd sent anything on this connection.
    talked: bool,
    /// APDUs left before the test fault pulls the card ([`VpcdOptions::pull_after`]).
    pull_after: &'a mut Option<u64>,
    /// Whether this session ended by the test fault.
    pulled: bool,
}

impl Session<'_> {
    /// Until `stop` (`Ok`, the connection shut down) or a lost connection (`Err`).
    fn run(&mut self, stop: &AtomicBool, buf: &mut [u8]) -> io::Result<()> {
        self.stream.set_nodelay(true)?;
        self.stream.set_read_timeout(Some(READ_TIMEOUT))?;
        self.stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
        quickack(&self.stream);
        let mut framer = Framer::new();
        loop {
            if stop.load(Ordering::Relaxed) {
                // Best effort: the peer may already be gone.
                let _ = self.stream.shutdown(Shutdown::Both);
                return Ok(());
            }
            let n = match self.stream.read(buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "vpcd closed the connection",
                    ));
                }
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            quickack(&self.stream);
            self.talked = true;
            framer.push(&buf[..n]);
            while let Some(frame) = framer.next_frame() {
                self.handle(frame)?;
            }
        }
    }

    fn handle(&mut self, frame: Result<Frame, FrameError>) -> io::Result<()> {
        match frame {
            Ok(Frame::PowerOff) => {
                self.card.power_off();
                (self.events)(Event::PowerOff);
            }
            Ok(Frame::PowerOn) => {
                self.card.reset();
                (self.events)(Event::PowerOn);
            }
            Ok(Frame::Reset) => {
                self.card.reset();
                (self.events)(Event::Reset);
            }
            Ok(Frame::GetAtr) => {
                let atr = self.card.atr();
                // An ATR is at most 33 bytes; cut anything absurd rather than fail.
                self.send(&atr[..atr.len().min(MAX_PAYLOAD)])?;
                (self.events)(Event::AtrRequested);
            }
            Ok(Frame::Apdu(command)) => {
                if let Some(left) = self.pull_after.as_mut() {
                    if *left == 0 {
                        *self.pull_after = None;
                        self.pulled = true;
                        let _ = self.stream.shutdown(Shutdown::Both);
                        return Err(io::Error::new(
                            io::ErrorKind::ConnectionAborted,
                            "card pulled mid-command (test fault)",
                        ));
                    }
                    *left -= 1;
                }
                let mut response = self.card.process(&command);
                if response.is_empty() || response.len() > MAX_PAYLOAD {
                    (self.events)(Event::BadResponse {
                        len: response.len(),
                    });
                    response = SW_NO_PRECISE_DIAGNOSIS.to_vec();
                }
                self.send(&response)?;
                (self.events)(Event::Apdu { command, response });
            }
            Err(e) => {
                if let FrameError::UnknownControl(_) = e {
                    // vpcd only sends 00/01/02/04 as controls; any other 1-byte payload is an
                    // application's 1-byte APDU, and vpcd blocks until it gets an answer.
                    self.send(&SW_WRONG_LENGTH)?;
                }
                (self.events)(Event::BadFrame(e));
            }
        }
        Ok(())
    }

    /// One write of length prefix and payload (`payload` is at most [`MAX_PAYLOAD`]).
    fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        let msg = encode(payload).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        self.stream.write_all(&msg)
    }
}

// ---------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------

/// The flag the signal handler sets; null until [`install_ctrl_c`].
static STOP_FLAG: AtomicPtr<AtomicBool> = AtomicPtr::new(std::ptr::null_mut());

extern "C" fn on_stop_signal(_signal: libc::c_int) {
    let flag = STOP_FLAG.load(Ordering::SeqCst);
    if !flag.is_null() {
        // SAFETY: the pointer came from a `&'static AtomicBool`. Atomic loads and stores are
        // lock-free, hence async-signal-safe; the handler does nothing else.
        unsafe { (*flag).store(true, Ordering::SeqCst) };
    }
}

/// Makes SIGINT (Ctrl-C) and SIGTERM set `flag` — [`serve`]'s `stop` — instead of killing the
/// process, so it can close the connection cleanly. The handler only stores to the atomic.
/// It is one-shot (`SA_RESETHAND`): a second Ctrl-C, when a clean stop hangs, kills the process
/// as usual. `SA_RESTART` keeps other blocking calls from failing with EINTR (socket reads
/// with a timeout, like [`serve`]'s, still return early). Calling it again re-arms the handlers
/// and replaces the flag.
#[cfg(unix)]
pub fn install_ctrl_c(flag: &'static AtomicBool) -> io::Result<()> {
    STOP_FLAG.store((flag as *const AtomicBool).cast_mut(), Ordering::SeqCst);
    let handler = on_stop_signal as extern "C" fn(libc::c_int);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is a valid starting value; the handler is an
        // `extern "C" fn(c_int)` that only touches atomics.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::thread;
    use std::time::Instant;

    // --- Framer -------------------------------------------------------------------------------

    fn drain(f: &mut Framer) -> Vec<Result<Frame, FrameError>> {
        std::iter::from_fn(|| f.next_frame()).collect()
    }

    fn parse_chunks(chunks: &[&[u8]], max: usize) -> Vec<Result<Frame, FrameError>> {
        let mut f = Framer::with_max_len(max);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            out.extend(drain(&mut f));
        }
        assert_eq!(f.buffered(), 0, "complete input leaves nothing buffered");
        out
    }

    /// Every kind of message, good and bad, back to back.
    fn mixed_stream() -> (Vec<u8>, Vec<Result<Frame, FrameError>>) {
        let mut bytes = Vec::new();
        let mut want = Vec::new();
        let mut add = |b: &[u8], f: Result<Frame, FrameError>| {
            bytes.extend_from_slice(b);
            want.push(f);
        };
        add(&[0, 1, 4], Ok(Frame::GetAtr));
        add(&[0, 1, 1], Ok(Frame::PowerOn));
        add(&[0, 1, 4], Ok(Frame::GetAtr));
        add(
            &[0, 7, 0x00, 0xA4, 0x00, 0x00, 0x02, 0x3F, 0x00],
            Ok(Frame::Apdu(vec![0x00, 0xA4, 0x00, 0x00, 0x02, 0x3F, 0x00])),
        );
        add(&[0, 0], Err(FrameError::Empty));
        add(&[0, 1, 3], Err(FrameError::UnknownControl(3)));
        add(&[0, 2, 0x01, 0x02], Ok(Frame::Apdu(vec![0x01, 0x02])));
        add(
            &[0, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            Err(FrameError::TooLong { len: 10, max: 8 }),
        );
        add(&[0, 1, 2], Ok(Frame::Reset));
        add(&[0, 1, 0xFF], Err(FrameError::UnknownControl(0xFF)));
        add(&[0, 1, 0], Ok(Frame::PowerOff));
        (bytes, want)
    }

    #[test]
    fn pipelined_frames_in_one_buffer() {
        let (bytes, want) = mixed_stream();
        assert_eq!(parse_chunks(&[&bytes], 8), want);
    }

    #[test]
    fn byte_by_byte() {
        let (bytes, want) = mixed_stream();
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_chunks(&chunks, 8), want);
    }

    #[test]
    fn every_two_way_split() {
        let (bytes, want) = mixed_stream();
        for i in 0..=bytes.len() {
            let (a, b) = bytes.split_at(i);
            assert_eq!(parse_chunks(&[a, b], 8), want, "split at {i}");
        }
    }

    #[test]
    fn every_three_way_split() {
        let (bytes, want) = mixed_stream();
        for i in 0..=bytes.len() {
            for j in i..=bytes.len() {
                let chunks = [&bytes[..i], &bytes[i..j], &bytes[j..]];
                assert_eq!(parse_chunks(&chunks, 8), want, "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn incomplete_frames_wait() {
        let mut f = Framer::new();
        assert_eq!(f.next_frame(), None);
        f.push(&[0]);
        assert_eq!(f.next_frame(), None);
        f.push(&[3, 0xAA]);
        assert_eq!(f.next_frame(), None);
        assert_eq!(f.buffered(), 3);
        f.push(&[0xBB, 0xCC, 0x00]);
        assert_eq!(
            f.next_frame(),
            Some(Ok(Frame::Apdu(vec![0xAA, 0xBB, 0xCC])))
        );
        assert_eq!(f.next_frame(), None);
        assert_eq!(f.buffered(), 1);
    }

    #[test]
    fn bad_frames_keep_sync() {
        let mut f = Framer::new();
        f.push(&[0, 0, 0, 0, 0, 1, 0x7F, 0, 1, 4]);
        assert_eq!(f.next_frame(), Some(Err(FrameError::Empty)));
        assert_eq!(f.next_frame(), Some(Err(FrameError::Empty)));
        assert_eq!(f.next_frame(), Some(Err(FrameError::UnknownControl(0x7F))));
        assert_eq!(f.next_frame(), Some(Ok(Frame::GetAtr)));
        assert_eq!(f.next_frame(), None);
    }

    #[test]
    fn too_long_is_discarded_without_buffering() {
        let mut f = Framer::with_max_len(261);
        f.push(&[0xFF, 0xFF, 1, 2, 3]);
        assert_eq!(
            f.next_frame(),
            Some(Err(FrameError::TooLong {
                len: 0xFFFF,
                max: 261
            }))
        );
        assert_eq!(f.next_frame(), None);
        let junk = vec![0xEE; 0xFFFF - 3];
        for chunk in junk.chunks(1000) {
            f.push(chunk);
            assert_eq!(f.buffered(), 0);
            assert_eq!(f.next_frame(), None);
        }
        f.push(&[0, 1, 4]);
        assert_eq!(f.next_frame(), Some(Ok(Frame::GetAtr)));
    }

    #[test]
    fn largest_payload_is_accepted() {
        let apdu = vec![0x5A; MAX_PAYLOAD];
        let wire = encode(&apdu).unwrap();
        let mut f = Framer::new();
        for chunk in wire.chunks(4096) {
            f.push(chunk);
        }
        assert_eq!(f.next_frame(), Some(Ok(Frame::Apdu(apdu))));
    }

    /// A tiny deterministic PRNG (xorshift64*), to avoid a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn random_input_never_panics_and_chunking_does_not_matter() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        for round in 0..300 {
            // Mostly short lengths so frames complete; some random bytes for garbage.
            let mut bytes = Vec::new();
            for _ in 0..rng.below(40) {
                if rng.below(4) == 0 {
                    bytes.push(rng.next() as u8);
                } else {
                    let len = rng.below(6);
                    bytes.extend_from_slice(&(len as u16).to_be_bytes());
                    bytes.extend((0..len).map(|_| rng.next() as u8));
                }
            }
            let max = [MAX_PAYLOAD, 3, 300][round % 3];
            let mut whole = Framer::with_max_len(max);
            whole.push(&bytes);
            let want = drain(&mut whole);
            let mut chunked = Framer::with_max_len(max);
            let mut got = Vec::new();
            let mut rest = &bytes[..];
            while !rest.is_empty() {
                let (a, b) = rest.split_at(rng.below(rest.len() + 1));
                chunked.push(a);
                got.extend(drain(&mut chunked));
                rest = b;
            }
            assert_eq!(got, want, "round {round}");
            assert_eq!(chunked.buffered(), whole.buffered());
        }
    }

    #[test]
    fn encode_frames_and_limits() {
        assert_eq!(encode(&[]).unwrap(), vec![0, 0]);
        assert_eq!(encode(&[0x90, 0x00]).unwrap(), vec![0, 2, 0x90, 0x00]);
        let big = vec![0; MAX_PAYLOAD];
        assert_eq!(&encode(&big).unwrap()[..2], &[0xFF, 0xFF]);
        let too_big = vec![0; MAX_PAYLOAD + 1];
        assert_eq!(
            encode(&too_big),
            Err(PayloadTooLong {
                len: MAX_PAYLOAD + 1
            })
        );
        for frame in [
            Frame::PowerOff,
            Frame::PowerOn,
            Frame::Reset,
            Frame::GetAtr,
            Frame::Apdu(vec![0x00, 0xB0, 0x00, 0x00, 0x00]),
        ] {
            let mut f = Framer::new();
            f.push(&frame.encode().unwrap());
            assert_eq!(f.next_frame(), Some(Ok(frame)));
        }
    }

    // --- serve against an in-process vpcd ----------------------------------------------------

    const ATR: [u8; 4] = [0x3B, 0x02, 0x14, 0x50];

    /// Answers every APDU with the APDU itself followed by 90 00, and counts what happened.
    #[derive(Default)]
    struct EchoCard {
        resets: usize,
        power_offs: usize,
        apdus: usize,
    }

    impl VirtualCard for EchoCard {
        fn atr(&self) -> Vec<u8> {
            ATR.to_vec()
        }
        fn reset(&mut self) {
            self.resets += 1;
        }
        fn power_off(&mut self) {
            self.power_offs += 1;
        }
        fn process(&mut self, capdu: &[u8]) -> Vec<u8> {
            self.apdus += 1;
            match capdu {
                // Scripted misbehaviour, to check the guard.
                [0xEE, 0xEE, ..] => Vec::new(),
                _ => [capdu, &[0x90, 0x00]].concat(),
            }
        }
    }

    fn echo(capdu: &[u8]) -> Vec<u8> {
        [capdu, &[0x90, 0x00]].concat()
    }

    /// The vpcd end: the test's side of the socket.
    struct FakeVpcd(TcpStream);

    impl FakeVpcd {
        fn accept(l: &TcpListener) -> FakeVpcd {
            let (s, _) = l.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            FakeVpcd(s)
        }
        /// Like Debian's vpcd: length and payload in two writes, Nagle on.
        fn send_split(&mut self, payload: &[u8]) {
            let len = u16::try_from(payload.len()).unwrap();
            self.0.write_all(&len.to_be_bytes()).unwrap();
            self.0.write_all(payload).unwrap();
        }
        fn send_raw(&mut self, bytes: &[u8]) {
            self.0.write_all(bytes).unwrap();
        }
        fn recv(&mut self) -> Vec<u8> {
            let mut len = [0u8; 2];
            self.0.read_exact(&mut len).unwrap();
            let mut payload = vec![0u8; usize::from(u16::from_be_bytes(len))];
            self.0.read_exact(&mut payload).unwrap();
            payload
        }
        fn transmit(&mut self, capdu: &[u8]) -> Vec<u8> {
            self.send_split(capdu);
            self.recv()
        }
    }

    struct Running {
        stop: Arc<AtomicBool>,
        events: mpsc::Receiver<Event>,
        handle: thread::JoinHandle<(io::Result<()>, EchoCard)>,
    }

    fn start(addr: String, reconnect: bool) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, events) = mpsc::channel();
        let stop2 = Arc::clone(&stop);
        let handle = thread::spawn(move || {
            let mut card = EchoCard::default();
            let opts = VpcdOptions {
                addr,
                reconnect,
                pull_after: None,
            };
            let r = serve(&mut card, &opts, &stop2, &mut |e| {
                let _ = tx.send(e);
            });
            (r, card)
        });
        Running {
            stop,
            events,
            handle,
        }
    }

    impl Running {
        fn finish(self) -> (io::Result<()>, EchoCard, Vec<Event>, Duration) {
            let t = Instant::now();
            self.stop.store(true, Ordering::SeqCst);
            let (r, card) = self.handle.join().unwrap();
            let took = t.elapsed();
            (r, card, self.events.try_iter().collect(), took)
        }
    }

    #[test]
    fn serves_controls_apdus_garbage_and_reconnects() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let run = start(l.local_addr().unwrap().to_string(), true);

        let mut v = FakeVpcd::accept(&l);
        // Presence poll, then the power-up sequence, pipelined in one write.
        v.send_split(&[CTRL_GET_ATR]);
        assert_eq!(v.recv(), ATR);
        v.send_raw(&[0, 1, CTRL_POWER_ON, 0, 1, CTRL_GET_ATR]);
        assert_eq!(v.recv(), ATR);

        // Two APDUs in one segment, answered in order.
        let a = [0x00, 0xA4, 0x00, 0x00, 0x02, 0x3F, 0x00];
        let b = [0x00, 0xB0, 0x00, 0x00, 0x10];
        let mut both = encode(&a).unwrap();
        both.extend(encode(&b).unwrap());
        v.send_raw(&both);
        assert_eq!(v.recv(), echo(&a));
        assert_eq!(v.recv(), echo(&b));

        // One APDU a byte at a time.
        v.0.set_nodelay(true).unwrap();
        for byte in encode(&a).unwrap() {
            v.send_raw(&[byte]);
            thread::sleep(Duration::from_millis(2));
        }
        v.0.set_nodelay(false).unwrap();
        assert_eq!(v.recv(), echo(&a));

        // Garbage: an empty frame (skipped, no answer), an unknown 1-byte frame (67 00), a
        // response the card got wrong (6F 00); the stream stays in sync.
        v.send_raw(&[0, 0]);
        v.send_split(&[0x03]);
        assert_eq!(v.recv(), SW_WRONG_LENGTH);
        assert_eq!(
            v.transmit(&[0xEE, 0xEE, 0x00, 0x00]),
            SW_NO_PRECISE_DIAGNOSIS
        );
        assert_eq!(v.transmit(&b), echo(&b));

        // Reset and power off need no answer.
        v.send_split(&[CTRL_RESET]);
        v.send_split(&[CTRL_GET_ATR]);
        assert_eq!(v.recv(), ATR);
        v.send_split(&[CTRL_POWER_OFF]);

        // vpcd drops the card (pcscd restart): the card comes back.
        drop(v);
        let mut v = FakeVpcd::accept(&l);
        v.send_split(&[CTRL_GET_ATR]);
        assert_eq!(v.recv(), ATR);
        v.send_split(&[CTRL_POWER_ON]);
        assert_eq!(v.transmit(&a), echo(&a));

        let (r, card, events, took) = run.finish();
        r.unwrap();
        eprintln!("stop took {took:?}");
        assert!(took < Duration::from_secs(2), "stop took {took:?}");
        // The fake vpcd sees the card go.
        let mut rest = Vec::new();
        assert_eq!(v.0.read_to_end(&mut rest).unwrap(), 0);

        assert_eq!(card.resets, 3, "two power ons and a reset");
        assert_eq!(card.apdus, 6);
        // Power off frame, the dropped connection, the stop.
        assert_eq!(card.power_offs, 3);

        let connected = events
            .iter()
            .filter(|e| matches!(e, Event::Connected(_)))
            .count();
        assert_eq!(connected, 2);
        let bad: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::BadFrame(f) => Some(f.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(bad, [FrameError::Empty, FrameError::UnknownControl(3)]);
        assert!(events.contains(&Event::BadResponse { len: 0 }));
        assert!(events.contains(&Event::Apdu {
            command: b.to_vec(),
            response: echo(&b)
        }));
        assert!(matches!(
            events.last(),
            Some(Event::Disconnected { reason }) if reason == "stopped"
        ));
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Retrying { delay } if *delay == BACKOFF_FIRST))
        );
    }

    #[test]
    fn waits_for_vpcd_to_appear() {
        // Reserve a port, free it: nothing listens there at first.
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let run = start(addr.to_string(), true);
        // Let it fail and back off three times before vpcd appears.
        let mut events = Vec::new();
        while events
            .iter()
            .filter(|e| matches!(e, Event::Retrying { .. }))
            .count()
            < 3
        {
            events.push(run.events.recv_timeout(Duration::from_secs(10)).unwrap());
        }
        let l = TcpListener::bind(addr).unwrap();
        let mut v = FakeVpcd::accept(&l);
        v.send_split(&[CTRL_GET_ATR]);
        assert_eq!(v.recv(), ATR);
        let (r, _card, rest, _) = run.finish();
        r.unwrap();
        events.extend(rest);
        assert!(
            matches!(events[0], Event::ConnectFailed { .. }),
            "{events:?}"
        );
        let delays: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                Event::Retrying { delay } => Some(*delay),
                _ => None,
            })
            .collect();
        assert!(delays.len() >= 3, "{delays:?}");
        assert!(
            delays
                .windows(2)
                .all(|w| w[1] == (w[0] * 2).min(BACKOFF_MAX))
        );
    }

    #[test]
    fn without_reconnect_errors_are_returned() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let stop = AtomicBool::new(false);
        let mut card = EchoCard::default();
        let opts = VpcdOptions {
            addr: addr.to_string(),
            reconnect: false,
            pull_after: None,
        };
        let err = serve(&mut card, &opts, &stop, &mut |_| {}).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);

        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let opts = VpcdOptions {
            addr: l.local_addr().unwrap().to_string(),
            reconnect: false,
            pull_after: None,
        };
        let t = thread::spawn(move || {
            let mut v = FakeVpcd::accept(&l);
            v.send_split(&[CTRL_GET_ATR]);
            assert_eq!(v.recv(), ATR);
        });
        let err = serve(&mut card, &opts, &stop, &mut |_| {}).unwrap_err();
        t.join().unwrap();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
        assert_eq!(card.power_offs, 1);
    }

    #[test]
    fn bad_address_is_invalid_input() {
        let stop = AtomicBool::new(false);
        for addr in ["localhost", "localhost:port", ":35963", "127.0.0.1:70000"] {
            let opts = VpcdOptions {
                addr: addr.into(),
                reconnect: true,
                pull_after: None,
            };
            let err = serve(&mut EchoCard::default(), &opts, &stop, &mut |_| {}).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{addr}");
        }
    }

    #[test]
    fn stop_while_waiting_for_vpcd_is_prompt() {
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let run = start(addr.to_string(), true);
        thread::sleep(Duration::from_millis(1500)); // backoff reaches its 1 s cap
        let (r, card, _, took) = run.finish();
        r.unwrap();
        assert_eq!(card.power_offs, 0);
        assert!(took < Duration::from_millis(500), "stop took {took:?}");
    }

    /// 1000 APDUs with Debian vpcd's write pattern (length, then payload, Nagle on). Without
    /// TCP_QUICKACK on the card side each one waits for a delayed ACK (~40 ms on Linux).
    #[test]
    fn split_write_round_trips_are_fast() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let run = start(l.local_addr().unwrap().to_string(), true);
        let mut v = FakeVpcd::accept(&l);
        v.send_split(&[CTRL_POWER_ON]);
        v.send_split(&[CTRL_GET_ATR]);
        assert_eq!(v.recv(), ATR);
        let n = 1000u32;
        let t = Instant::now();
        for i in 0..n {
            let capdu = [0x00, 0xB2, (i >> 8) as u8, i as u8, 0x00];
            assert_eq!(v.transmit(&capdu), echo(&capdu));
        }
        let took = t.elapsed();
        eprintln!(
            "{n} split-write round trips over loopback: {took:?}, {:?} each, {:.0}/s",
            took / n,
            f64::from(n) / took.as_secs_f64()
        );
        let (r, card, _, _) = run.finish();
        r.unwrap();
        assert_eq!(card.apdus, n as usize);
    }

    #[cfg(unix)]
    #[test]
    fn signals_set_the_stop_flag() {
        static FLAG: AtomicBool = AtomicBool::new(false);
        install_ctrl_c(&FLAG).unwrap();
        for signal in [libc::SIGINT, libc::SIGTERM] {
            FLAG.store(false, Ordering::SeqCst);
            // SAFETY: raising a signal whose handler was just installed. The handlers are
            // one-shot, so each signal is back to its default disposition afterwards.
            assert_eq!(unsafe { libc::raise(signal) }, 0);
            assert!(FLAG.load(Ordering::SeqCst), "signal {signal}");
        }
    }

    /// By hand, against real pcscd + vpcd: a card answering 90 00 to everything, for
    /// `SIMLAB_VPCD_SECS` seconds (default 60) on `SIMLAB_VPCD_ADDR` (default 127.0.0.1:35963).
    /// `cargo test -p simlab --lib vpcd::tests::real_vpcd -- --ignored --nocapture`
    #[test]
    #[ignore = "needs pcscd with vsmartcard-vpcd; run by hand"]
    fn real_vpcd() {
        struct Ok9000;
        impl VirtualCard for Ok9000 {
            fn atr(&self) -> Vec<u8> {
                vec![0x3B, 0x80, 0x80, 0x01, 0x01]
            }
            fn reset(&mut self) {}
            fn power_off(&mut self) {}
            fn process(&mut self, _capdu: &[u8]) -> Vec<u8> {
                vec![0x90, 0x00]
            }
        }
        let addr = std::env::var("SIMLAB_VPCD_ADDR")
            .unwrap_or_else(|_| format!("127.0.0.1:{DEFAULT_PORT}"));
        let secs: u64 = std::env::var("SIMLAB_VPCD_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let timer = thread::spawn(move || {
            thread::sleep(Duration::from_secs(secs));
            stop2.store(true, Ordering::SeqCst);
        });
        let start = Instant::now();
        let mut apdus = 0u64;
        let opts = VpcdOptions {
            addr,
            reconnect: true,
            pull_after: None,
        };
        serve(&mut Ok9000, &opts, &stop, &mut |e| {
            if let Event::Apdu { .. } = e {
                apdus += 1;
                if apdus > 3 {
                    return;
                }
            }
            eprintln!("{:>9.3} {e:?}", start.elapsed().as_secs_f64());
        })
        .unwrap();
        timer.join().unwrap();
        eprintln!("{apdus} APDUs");
    }
}
