//! A card behind simlab-firmware's framed APDU link: a token on a serial port (USB-CDC, a UART
//! adapter, a pty) or the QEMU board's UART on a TCP socket (`tcp:HOST:PORT`).
//!
//! The protocol is specified in `docs/link-protocol.md` and implemented for the MCU in
//! `simlab_firmware::link`; this is an independent host implementation of the same document
//! (the host does not link firmware code), and the firmware's tests run the two against each
//! other. In short: every message is a frame `A5 5A | type | seq | len(2) | CRC-8 | payload |
//! CRC-32`; a reply carries the request's sequence number; the card sends `WAIT` frames while
//! its user-presence button is pending.
//!
//! What this side does about a bad link:
//! - on open, [`PREAMBLE_LEN`] zero bytes finish any frame a previous host left half-sent, then
//!   an INFO request synchronises (everything before its reply is discarded);
//! - a reply that does not arrive within [`REPLY_TIMEOUT`] (extended by each `WAIT`), or that
//!   fails its CRC, or a `BAD CRC` error from the card, makes it send the *same* frame again
//!   (same sequence number): the firmware recognises the retransmission and repeats its answer
//!   without running the command twice, so a lost answer never spends a second PIN try;
//! - after [`ATTEMPTS`] tries the command fails with a clear error.
//!
//! Opening resets the card: each `simlab` process gets a fresh session, as a PC/SC card gets
//! after its idle power-down. A PIN verified by one process is not verified for the next.

use super::{Transport, TransportError};
use simlab_applet::checksum::{crc8, crc32};
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Line speed for serial devices: what the boards' UARTs are set to (USB-CDC ignores it).
pub const BAUD: u32 = 115_200;
/// How long a reply may take before the frame is sent again. A P-256 signature on a Cortex-M
/// takes well under a second; the button wait sends `WAIT` frames that restart this clock.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);
/// Sends of one request before giving up.
pub const ATTEMPTS: usize = 3;
/// How long connecting to `tcp:HOST:PORT` may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

const SYNC: [u8; 2] = [0xA5, 0x5A];
const HEADER_LEN: usize = 7;
const TRAILER_LEN: usize = 4;
/// The largest payload the link carries (`MAX_PAYLOAD` in the firmware).
pub const MAX_PAYLOAD: usize = 272;
const MAX_FRAME: usize = HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN;
/// Zero bytes that complete any partial frame the card may be waiting on.
pub const PREAMBLE_LEN: usize = MAX_FRAME;
/// Personalisation image bytes per PERSO WRITE frame.
pub const PERSO_CHUNK: usize = 256;

/// Frame types (requests; a reply is the request | 0x80).
mod kind {
    pub const APDU: u8 = 0x01;
    pub const RESET: u8 = 0x02;
    pub const GET_ATR: u8 = 0x03;
    pub const INFO: u8 = 0x04;
    pub const PERSO_WRITE: u8 = 0x05;
    pub const PERSO_COMMIT: u8 = 0x06;
    pub const BENCH: u8 = 0x07;
    pub const WAIT: u8 = 0xF0;
    pub const ERROR: u8 = 0xFF;
    pub const REPLY: u8 = 0x80;
}

/// Error codes in an ERROR frame.
mod code {
    pub const BAD_CRC: u8 = 0x01;
    pub const NOT_PERSONALISED: u8 = 0x05;
}

fn error_text(code: u8) -> &'static str {
    match code {
        0x01 => "frame failed its CRC",
        0x02 => "frame longer than the link allows",
        0x03 => "unknown frame type",
        0x04 => "malformed payload",
        0x05 => "the token is not personalised (see docs/link-protocol.md, Personalisation)",
        0x06 => "the token is already personalised",
        0x07 => "personalisation image refused",
        0x08 => "the token's persistent storage failed",
        _ => "unknown error",
    }
}

/// INFO flag bits.
pub mod flags {
    pub const TEST_PRESENCE: u16 = 1 << 0;
    pub const TEST_RNG: u16 = 1 << 1;
    pub const PERSONALISED: u16 = 1 << 2;
    pub const STATE_UNREADABLE: u16 = 1 << 3;
    pub const BENCH: u16 = 1 << 4;
}

/// What the firmware says about itself (the INFO reply).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenInfo {
    pub protocol: u8,
    pub flags: u16,
    pub board: String,
    pub version: String,
    pub max_payload: u16,
    pub state_len: u16,
    /// How many times the card state was saved.
    pub saves: u32,
    /// Deepest stack use in bytes, when the board measures it.
    pub stack_peak: Option<u32>,
    /// What a BENCH count counts, when supported.
    pub bench_unit: Option<String>,
    pub presence_timeout_ms: Option<u32>,
}

impl TokenInfo {
    /// Parses the INFO TLVs; unknown tags are skipped.
    pub fn parse(tlvs: &[u8]) -> Self {
        let mut info = TokenInfo::default();
        let mut rest = tlvs;
        while let [tag, len, tail @ ..] = rest {
            let Some(value) = tail.get(..*len as usize) else {
                break;
            };
            let be = |n: usize| {
                value
                    .get(..n)
                    .map(|b| b.iter().fold(0u32, |acc, &x| (acc << 8) | x as u32))
            };
            let text = || String::from_utf8_lossy(value).into_owned();
            match tag {
                0x01 => info.protocol = value.first().copied().unwrap_or(0),
                0x02 => info.flags = be(2).unwrap_or(0) as u16,
                0x03 => info.board = text(),
                0x04 => info.version = text(),
                0x05 => info.max_payload = be(2).unwrap_or(0) as u16,
                0x06 => info.state_len = be(2).unwrap_or(0) as u16,
                0x07 => info.saves = be(4).unwrap_or(0),
                0x08 => info.stack_peak = be(4),
                0x09 => info.bench_unit = Some(text()),
                0x0A => info.presence_timeout_ms = be(4),
                _ => {}
            }
            rest = &tail[*len as usize..];
        }
        info
    }

    pub fn personalised(&self) -> bool {
        self.flags & flags::PERSONALISED != 0
    }

    /// Whether the board simulates its button or RNG: test-only firmware.
    pub fn test_only(&self) -> bool {
        self.flags & (flags::TEST_PRESENCE | flags::TEST_RNG) != 0
    }
}

/// A byte stream to the token that can time out its reads.
pub trait Port: Read + Write + Send {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()>;
}

impl Port for TcpStream {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        TcpStream::set_read_timeout(self, Some(timeout))
    }
}

impl Port for std::os::unix::net::UnixStream {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, Some(timeout))
    }
}

impl Port for Box<dyn serialport::SerialPort> {
    fn set_read_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        self.set_timeout(timeout).map_err(io::Error::other)
    }
}

/// One frame, encoded.
pub fn encode_frame(kind: u8, seq: u8, payload: &[u8]) -> Result<Vec<u8>, TransportError> {
    if payload.len() > MAX_PAYLOAD {
        return Err(TransportError::BadCommand {
            reason: format!(
                "{} bytes do not fit the token's link (at most {MAX_PAYLOAD})",
                payload.len()
            ),
        });
    }
    let len = (payload.len() as u16).to_be_bytes();
    let mut f = vec![SYNC[0], SYNC[1], kind, seq, len[0], len[1]];
    f.push(crc8(&f));
    f.extend_from_slice(payload);
    let crc = crc32(&f);
    f.extend_from_slice(&crc.to_be_bytes());
    Ok(f)
}

/// What the receiver found in the byte stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received {
    Frame {
        kind: u8,
        seq: u8,
        payload: Vec<u8>,
    },
    /// A frame with a valid header failed its CRC (or was too long).
    Corrupt {
        seq: u8,
    },
}

/// The receiving half, as in the firmware: skip to a sync, check the header's CRC-8 before
/// believing its length, check the CRC-32, and after a failure search again from the byte after
/// the rejected sync.
#[derive(Default)]
pub struct Deframer {
    buf: Vec<u8>,
}

impl Deframer {
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub fn next_event(&mut self) -> Option<Received> {
        loop {
            let skip = self
                .buf
                .iter()
                .position(|&b| b == SYNC[0])
                .unwrap_or(self.buf.len());
            self.buf.drain(..skip);
            if self.buf.len() >= 2 && self.buf[1] != SYNC[1] {
                self.buf.remove(0);
                continue;
            }
            if self.buf.len() < HEADER_LEN {
                return None;
            }
            if crc8(&self.buf[..6]) != self.buf[6] {
                self.buf.remove(0);
                continue;
            }
            let seq = self.buf[3];
            let len = u16::from_be_bytes([self.buf[4], self.buf[5]]) as usize;
            if len > MAX_PAYLOAD {
                self.buf.remove(0);
                return Some(Received::Corrupt { seq });
            }
            let total = HEADER_LEN + len + TRAILER_LEN;
            if self.buf.len() < total {
                return None;
            }
            let body = HEADER_LEN + len;
            let crc = u32::from_be_bytes([
                self.buf[body],
                self.buf[body + 1],
                self.buf[body + 2],
                self.buf[body + 3],
            ]);
            if crc32(&self.buf[..body]) != crc {
                self.buf.remove(0);
                return Some(Received::Corrupt { seq });
            }
            let frame: Vec<u8> = self.buf.drain(..total).collect();
            return Some(Received::Frame {
                kind: frame[2],
                seq,
                payload: frame[HEADER_LEN..body].to_vec(),
            });
        }
    }
}

/// A card behind the framed APDU link of simlab-firmware.
pub struct SerialTransport {
    port: Box<dyn Port>,
    name: String,
    rx: Deframer,
    seq: u8,
    atr: Vec<u8>,
    info: TokenInfo,
    /// The last command waited for the button (for the message after a refusal).
    pub waited_for_presence: bool,
}

impl SerialTransport {
    /// Opens `PATH` (a serial device, 115200 8N1) or `tcp:HOST:PORT`, synchronises with the
    /// firmware, reads its INFO and resets the card.
    pub fn open(spec: &str) -> Result<Self, TransportError> {
        let (port, name): (Box<dyn Port>, String) = if let Some(addr) = spec.strip_prefix("tcp:") {
            let dev = |reason: String| TransportError::Device {
                reason: format!("token at tcp:{addr}: {reason}"),
            };
            let addrs: Vec<_> = addr
                .to_socket_addrs()
                .map_err(|e| dev(format!("expected tcp:HOST:PORT ({e})")))?
                .collect();
            let mut last = None;
            let mut stream = None;
            for a in addrs {
                match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                    Ok(s) => {
                        stream = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let stream = stream.ok_or_else(|| {
                dev(last.map_or("no address".into(), |e| {
                    format!("cannot connect: {e} (is scripts/qemu-token running?)")
                }))
            })?;
            let _ = stream.set_nodelay(true);
            (Box::new(stream), format!("simlab-firmware at tcp:{addr}"))
        } else {
            let port = serialport::new(spec, BAUD)
                .timeout(REPLY_TIMEOUT)
                .open()
                .map_err(|e| TransportError::Device {
                    reason: format!("serial port {spec}: {e}"),
                })?;
            (Box::new(port), format!("simlab-firmware on {spec}"))
        };
        Self::over(port, name)
    }

    /// A transport over any byte stream to the firmware (tests use socket pairs).
    pub fn over(port: Box<dyn Port>, name: String) -> Result<Self, TransportError> {
        // A sequence number per session that differs from the last session's, so a stale
        // reply cannot match (the firmware's cache is keyed on number and CRC anyway).
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| (d.subsec_nanos() >> 8) as u8);
        let mut t = SerialTransport {
            port,
            name,
            rx: Deframer::default(),
            seq,
            atr: Vec::new(),
            info: TokenInfo::default(),
            waited_for_presence: false,
        };
        t.resync()?;
        let info = t.request(kind::INFO, &[])?;
        t.info = TokenInfo::parse(&info);
        t.atr = t.request(kind::RESET, &[])?;
        Ok(t)
    }

    /// What the firmware reported at open (flags, board, …); [`SerialTransport::refresh_info`]
    /// asks again.
    pub fn info(&self) -> &TokenInfo {
        &self.info
    }

    pub fn refresh_info(&mut self) -> Result<&TokenInfo, TransportError> {
        let info = self.request(kind::INFO, &[])?;
        self.info = TokenInfo::parse(&info);
        Ok(&self.info)
    }

    /// The ATR without resetting.
    pub fn get_atr(&mut self) -> Result<Vec<u8>, TransportError> {
        self.request(kind::GET_ATR, &[])
    }

    /// Personalises a factory-fresh token with a card state image (`Card::save_state` of the
    /// card a profile describes). The image holds the card's keys: it only travels this link.
    pub fn personalise(&mut self, image: &[u8]) -> Result<(), TransportError> {
        if image.len() > u16::MAX as usize {
            return Err(TransportError::BadCommand {
                reason: "personalisation image too long".into(),
            });
        }
        for (i, chunk) in image.chunks(PERSO_CHUNK).enumerate() {
            let mut payload = ((i * PERSO_CHUNK) as u16).to_be_bytes().to_vec();
            payload.extend_from_slice(chunk);
            self.request(kind::PERSO_WRITE, &payload)?;
        }
        let mut commit = (image.len() as u16).to_be_bytes().to_vec();
        commit.extend_from_slice(&crc32(image).to_be_bytes());
        self.request(kind::PERSO_COMMIT, &commit)?;
        self.refresh_info()?;
        Ok(())
    }

    /// Runs one C-APDU timed by the MCU: (count in [`TokenInfo::bench_unit`], R-APDU).
    pub fn bench(&mut self, capdu: &[u8]) -> Result<(u64, Vec<u8>), TransportError> {
        let reply = self.request(kind::BENCH, capdu)?;
        if reply.len() < 10 {
            return Err(TransportError::BadResponse {
                reason: format!("BENCH reply of {} bytes", reply.len()),
            });
        }
        let mut count = [0u8; 8];
        count.copy_from_slice(&reply[..8]);
        Ok((u64::from_be_bytes(count), reply[8..].to_vec()))
    }

    fn io_error(&self, e: io::Error) -> TransportError {
        TransportError::Device {
            reason: format!("{}: {e}", self.name),
        }
    }

    /// Sends the preamble that completes any half-received frame in the firmware.
    fn resync(&mut self) -> Result<(), TransportError> {
        self.rx = Deframer::default();
        self.port
            .write_all(&[0u8; PREAMBLE_LEN])
            .and_then(|()| self.port.flush())
            .map_err(|e| self.io_error(e))
    }

    /// Sends a request and returns the reply's payload, retrying as the module documentation
    /// describes.
    fn request(&mut self, kind: u8, payload: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let frame = encode_frame(kind, seq, payload)?;
        self.waited_for_presence = false;
        let mut why = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                // Whatever the card was parsing, finish it before the retransmission.
                self.resync()?;
            }
            self.port
                .write_all(&frame)
                .and_then(|()| self.port.flush())
                .map_err(|e| self.io_error(e))?;
            match self.await_reply(kind, seq)? {
                Ok(reply) => return Ok(reply),
                Err(reason) => why = reason,
            }
        }
        Err(TransportError::Device {
            reason: format!(
                "{}: no valid answer after {ATTEMPTS} tries ({why})",
                self.name
            ),
        })
    }

    /// Reads until the reply to `seq` arrives. `Ok(Err(reason))` means "send it again".
    fn await_reply(
        &mut self,
        kind: u8,
        seq: u8,
    ) -> Result<Result<Vec<u8>, String>, TransportError> {
        let mut deadline = Instant::now() + REPLY_TIMEOUT;
        let mut buf = [0u8; 512];
        loop {
            while let Some(event) = self.rx.next_event() {
                match event {
                    Received::Frame {
                        kind: k,
                        seq: s,
                        payload,
                    } if s == seq => match k {
                        k if k == kind | kind::REPLY => return Ok(Ok(payload)),
                        kind::WAIT => {
                            if !self.waited_for_presence {
                                eprintln!(
                                    "{}: press the token's button to approve (the LED is on)",
                                    self.name
                                );
                            }
                            self.waited_for_presence = true;
                            deadline = Instant::now() + REPLY_TIMEOUT;
                        }
                        kind::ERROR => {
                            let code = payload.first().copied().unwrap_or(0);
                            if code == code::BAD_CRC {
                                return Ok(Err("the token received a corrupted frame".into()));
                            }
                            let mut reason = format!("{}: {}", self.name, error_text(code));
                            if code == code::NOT_PERSONALISED {
                                reason.push_str(
                                    "; personalise it first (cargo run -p simlab-firmware --example personalise)",
                                );
                            }
                            return Err(TransportError::Device { reason });
                        }
                        other => {
                            return Err(TransportError::BadResponse {
                                reason: format!("frame type {other:02x} in reply to {kind:02x}"),
                            });
                        }
                    },
                    // Other sequence numbers: stale replies, or errors about garbage.
                    Received::Frame { .. } => {}
                    Received::Corrupt { seq: s } if s == seq => {
                        return Ok(Err("the reply was corrupted".into()));
                    }
                    Received::Corrupt { .. } => {}
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Err(format!(
                    "no reply within {} s",
                    REPLY_TIMEOUT.as_secs()
                )));
            }
            self.port
                .set_read_timeout(deadline - now)
                .map_err(|e| self.io_error(e))?;
            match self.port.read(&mut buf) {
                Ok(0) => {
                    return Err(TransportError::Device {
                        reason: format!("{}: the connection was closed", self.name),
                    });
                }
                Ok(n) => self.rx.push(&buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }
}

impl Transport for SerialTransport {
    fn transmit_raw(&mut self, capdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let reply = self.request(kind::APDU, capdu)?;
        if reply.len() < 2 {
            return Err(TransportError::BadResponse {
                reason: format!("{} byte(s), shorter than a status word", reply.len()),
            });
        }
        if self.waited_for_presence && reply[reply.len() - 2..] == [0x69, 0x85] {
            eprintln!(
                "{}: nobody pressed the button within {} s; the token refused (6985)",
                self.name,
                self.info.presence_timeout_ms.unwrap_or(0) / 1000
            );
        }
        Ok(reply)
    }

    fn reset(&mut self) -> Result<Vec<u8>, TransportError> {
        self.atr = self.request(kind::RESET, &[])?;
        Ok(self.atr.clone())
    }

    fn atr(&self) -> Vec<u8> {
        self.atr.clone()
    }

    fn describe(&self) -> String {
        let mut d = format!("{} ({}", self.name, self.info.board);
        if self.info.test_only() {
            d.push_str(", TEST-ONLY firmware: simulated button and RNG");
        }
        d.push(')');
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_through_garbage() {
        let a = encode_frame(kind::APDU, 7, &[0x00, 0xA4, 0x04, 0x00]).unwrap();
        let b = encode_frame(kind::RESET, 8, &[]).unwrap();
        let mut d = Deframer::default();
        d.push(&[0xA5, 0x00, 0xA5, 0xA5, 0x5A, 0x13]);
        d.push(&a[..5]);
        d.push(&[0u8; PREAMBLE_LEN]);
        d.push(&a);
        d.push(&b);
        let mut got = Vec::new();
        while let Some(e) = d.next_event() {
            got.push(e);
        }
        let frames: Vec<_> = got
            .iter()
            .filter(|e| matches!(e, Received::Frame { .. }))
            .collect();
        assert_eq!(
            frames,
            [
                &Received::Frame {
                    kind: kind::APDU,
                    seq: 7,
                    payload: vec![0x00, 0xA4, 0x04, 0x00]
                },
                &Received::Frame {
                    kind: kind::RESET,
                    seq: 8,
                    payload: vec![]
                }
            ]
        );
        assert!(encode_frame(kind::APDU, 0, &[0; MAX_PAYLOAD + 1]).is_err());
    }

    #[test]
    fn info_tlvs_parse_and_skip_unknown_tags() {
        let tlvs = [
            0x01, 1, 1, 0x02, 2, 0x00, 0x07, 0x03, 4, b'q', b'e', b'm', b'u', 0x7E, 1, 0, 0x07, 4,
            0, 0, 0, 9, 0x09, 5, b'i', b'n', b's', b'n', b's', 0x08, 9,
        ];
        let info = TokenInfo::parse(&tlvs);
        assert_eq!(info.protocol, 1);
        assert!(info.personalised() && info.test_only());
        assert_eq!(info.board, "qemu");
        assert_eq!(info.saves, 9);
        assert_eq!(info.bench_unit.as_deref(), Some("insns"));
        assert_eq!(info.stack_peak, None, "a truncated TLV is ignored");
    }

    #[test]
    fn a_bad_spec_is_a_clear_error() {
        let e = SerialTransport::open("tcp:127.0.0.1:port")
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("tcp:127.0.0.1:port") && e.contains("HOST:PORT"),
            "{e}"
        );
        // Port 1 on loopback: nothing listens there.
        let e = SerialTransport::open("tcp:127.0.0.1:1")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("cannot connect"), "{e}");
        let e = SerialTransport::open("/dev/simlab-no-such-port")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/dev/simlab-no-such-port"), "{e}");
    }
}
