//! The secure-token applet from the host: a client over any [`Link`] (emulated card, PC/SC
//! reader, serial token), and the public-key encodings the CLI prints.
//!
//! The APDUs are those of `docs/token-apdus.md`; the bootstrap (seed 000) is
//! `docs/bootstrap-protocol.md`, whose encodings and MACs are [`bootstrap`] — the very
//! functions the card runs, re-exported so the mobile station and gateway roles cannot drift
//! from it. Nothing here ever sees the private key, the PIN's stored value, Kc or K: the card
//! keeps them.

use crate::error::{Error, Result};
use crate::transport::{Link, Reply};
use simlab_applet::chv::PIN_LEN;
use simlab_applet::token::{self as applet, ins};
use simlab_applet::{Command, Status};

use bootstrap::{BeginRequest, BeginResponse, MAC_LEN, PK_LEN};
pub use simlab_applet::token::bootstrap;
/// Seed 002's signature request, with the decoder the token runs.
pub use simlab_applet::token::request;

/// The SubjectPublicKeyInfo DER of a P-256 key up to its BIT STRING contents: SEQUENCE {
/// SEQUENCE { id-ecPublicKey, prime256v1 }, BIT STRING (0 unused bits) } (RFC 5480).
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01, 0x06, 0x08, 0x2A,
    0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// The longest data one short APDU carries; longer data goes by chaining.
const SHORT_LC_MAX: usize = 255;

/// A token public key: the uncompressed SEC1 point the card returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(pub [u8; PK_LEN]);

impl PublicKey {
    /// Checks the shape the card promises (65 bytes, uncompressed point marker 04). The point
    /// itself is checked by whoever verifies with it (openssl, the gateway).
    pub fn from_sec1(bytes: &[u8]) -> Result<Self> {
        match <[u8; PK_LEN]>::try_from(bytes) {
            Ok(point) if point[0] == 0x04 => Ok(PublicKey(point)),
            _ => Err(Error::Malformed {
                what: "public key",
                reason: format!(
                    "expected a 65-byte uncompressed P-256 point, got {} bytes",
                    bytes.len()
                ),
            }),
        }
    }

    /// The DER SubjectPublicKeyInfo.
    pub fn spki_der(&self) -> Vec<u8> {
        [&P256_SPKI_PREFIX[..], &self.0].concat()
    }

    /// The PEM `PUBLIC KEY` that `openssl pkey -pubin` and `openssl dgst -verify` read.
    pub fn to_pem(&self) -> String {
        crate::pem::pem_encode("PUBLIC KEY", &self.spki_der())
    }
}

/// What GET INFO reports: the token's state, without spending a PIN try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenInfo {
    pub has_key: bool,
    /// The DRBG was seeded at personalisation (an unseeded token refuses GENERATE KEY).
    pub seeded: bool,
    pub certificate_len: usize,
    pub pin_verified: bool,
    pub pin_tries_left: u8,
    pub pin_max_tries: u8,
    /// A BOOTSTRAP BEGIN succeeded in this session and waits for FINISH.
    pub bootstrap_pending: bool,
}

/// The outcome of VERIFY PIN / CHANGE PIN: a wrong PIN is an answer, not a transport error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinOutcome {
    Verified,
    Wrong { tries_left: u8 },
    Blocked,
}

/// What BOOTSTRAP BEGIN answered: message 250's content, or an AKA resynchronisation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BootstrapOutcome {
    /// M1 was right. `responses` is SRES_1 ‖ … ‖ SRES_n (GSM) or RES (AKA).
    Accepted {
        responses: Vec<u8>,
        public_key: PublicKey,
        m2: [u8; MAC_LEN],
    },
    /// AKA only: AUTN's sequence number was stale; send AUTS to the AuC to resynchronise.
    SyncFailure { auts: [u8; bootstrap::AUTS_LEN] },
}

/// A session with the token applet: selected once by [`TokenSession::open`]; PIN
/// verification lasts until the session (the selection) ends.
pub struct TokenSession {
    link: Link,
}

impl TokenSession {
    /// Selects the token applet by its AID on the card behind `link`.
    pub fn open(mut link: Link) -> Result<Self> {
        let select = Command::new(0x00, 0xA4, 0x04, 0x00)
            .with_data(&applet::AID)
            .with_ne(256);
        let reply = link.transmit(&select)?;
        match reply.status {
            Status::Success => Ok(TokenSession { link }),
            Status::FileNotFound | Status::ClaNotSupported | Status::InsNotSupported => {
                Err(Error::Mismatch {
                    what: format!(
                        "this card has no simlab token applet (SELECT by AID answered {})",
                        reply.status
                    ),
                })
            }
            status => Err(Error::Card {
                command: "SELECT token",
                status,
            }),
        }
    }

    /// The link underneath (for raw APDUs and the transport's reset).
    pub fn link(&mut self) -> &mut Link {
        &mut self.link
    }

    fn send(&mut self, cmd: &Command) -> Result<Reply> {
        Ok(self.link.transmit(cmd)?)
    }

    fn expect_ok(&mut self, name: &'static str, cmd: &Command) -> Result<Vec<u8>> {
        let reply = self.send(cmd)?;
        if reply.status != Status::Success {
            return Err(refusal(name, reply.status));
        }
        Ok(reply.data)
    }

    /// Sends `data` to a chaining instruction: one short APDU when it fits, otherwise ISO
    /// 7816-4 command chaining in 255-byte blocks. A card whose routing does not pass the
    /// chaining class bit to the applet (it answers the first block 6E00/6884) gets one
    /// extended APDU instead.
    fn send_long(&mut self, ins: u8, p1: u8, p2: u8, data: &[u8]) -> Result<Reply> {
        let cmd = Command::new(0x00, ins, p1, p2).with_ne(256);
        if data.len() <= SHORT_LC_MAX {
            return self.send(&cmd.with_data(data));
        }
        let blocks: Vec<&[u8]> = data.chunks(SHORT_LC_MAX).collect();
        let (last, first) = blocks.split_last().unwrap_or((&data, &[]));
        for (i, block) in first.iter().enumerate() {
            let reply =
                self.send(&Command::new(applet::cla::CHAINING, ins, p1, p2).with_data(block))?;
            match reply.status {
                Status::Success => {}
                Status::ClaNotSupported | Status::Other(0x6884) if i == 0 => {
                    return self.send(&cmd.with_data(data));
                }
                _ => return Ok(reply),
            }
        }
        self.send(&cmd.with_data(last))
    }

    /// GET INFO.
    pub fn info(&mut self) -> Result<TokenInfo> {
        let data = self.expect_ok(
            "GET INFO",
            &Command::new(0x00, ins::GET_INFO, 0, 0).with_ne(256),
        )?;
        let [version, flags, tries, max, len_hi, len_lo] = data[..] else {
            return Err(Error::Malformed {
                what: "token information",
                reason: format!("{} bytes, expected {}", data.len(), applet::INFO_LEN),
            });
        };
        if version != applet::LAYOUT_VERSION {
            return Err(Error::Malformed {
                what: "token information",
                reason: format!("unknown layout version {version}"),
            });
        }
        Ok(TokenInfo {
            has_key: flags & 0x01 != 0,
            seeded: flags & 0x02 != 0,
            certificate_len: u16::from_be_bytes([len_hi, len_lo]) as usize,
            pin_verified: flags & 0x08 != 0,
            bootstrap_pending: flags & 0x10 != 0,
            pin_tries_left: tries,
            pin_max_tries: max,
        })
    }

    fn pin_outcome(&mut self, name: &'static str, cmd: &Command) -> Result<PinOutcome> {
        let reply = self.send(cmd)?;
        Ok(match reply.status {
            Status::Success => PinOutcome::Verified,
            Status::VerifyFailed { tries_left } => PinOutcome::Wrong { tries_left },
            Status::AuthMethodBlocked => PinOutcome::Blocked,
            status => return Err(refusal(name, status)),
        })
    }

    /// VERIFY PIN (spends a try when wrong).
    pub fn verify_pin(&mut self, pin: &[u8; PIN_LEN]) -> Result<PinOutcome> {
        let cmd = Command::new(0x00, ins::VERIFY_PIN, 0, applet::PIN_REF).with_data(pin);
        self.pin_outcome("VERIFY PIN", &cmd)
    }

    /// The PIN counter, without spending a try (an empty VERIFY).
    pub fn pin_status(&mut self) -> Result<PinOutcome> {
        let cmd = Command::new(0x00, ins::VERIFY_PIN, 0, applet::PIN_REF);
        self.pin_outcome("VERIFY PIN", &cmd)
    }

    /// CHANGE PIN: `old` must be right (a wrong one spends a try); `new` is 4-8 digits padded.
    pub fn change_pin(&mut self, old: &[u8; PIN_LEN], new: &[u8; PIN_LEN]) -> Result<PinOutcome> {
        let data = [&old[..], &new[..]].concat();
        let cmd = Command::new(0x00, ins::CHANGE_PIN, 0, applet::PIN_REF).with_data(&data);
        self.pin_outcome("CHANGE PIN", &cmd)
    }

    /// GENERATE KEY (the PIN must be verified). `replace` allows overwriting an existing key;
    /// the certificate of the old key is dropped with it.
    pub fn generate_key(&mut self, replace: bool) -> Result<PublicKey> {
        let p1 = if replace {
            applet::KEYGEN_REPLACE
        } else {
            applet::KEYGEN_CREATE
        };
        let cmd = Command::new(0x00, ins::GENERATE_KEY, p1, 0).with_ne(256);
        PublicKey::from_sec1(&self.expect_ok("GENERATE KEY", &cmd)?)
    }

    /// GET PUBLIC KEY; `None` when the token has no key yet.
    pub fn public_key(&mut self) -> Result<Option<PublicKey>> {
        let cmd = Command::new(0x00, ins::GET_PUBLIC_KEY, 0, 0).with_ne(256);
        let reply = self.send(&cmd)?;
        match reply.status {
            Status::Success => PublicKey::from_sec1(&reply.data).map(Some),
            Status::ReferenceNotFound => Ok(None),
            status => Err(refusal("GET PUBLIC KEY", status)),
        }
    }

    /// SIGN: ECDSA P-256 over SHA-256 of `data`, hashed on the card; the DER signature.
    pub fn sign(&mut self, data: &[u8]) -> Result<Vec<u8>> {
        if data.is_empty() {
            return Err(Error::arg("--data", "nothing to sign"));
        }
        let (p1, p2) = applet::SIGN_P1P2;
        let reply = self.send_long(ins::SIGN, p1, p2, data)?;
        if reply.status != Status::Success {
            return Err(refusal("SIGN", reply.status));
        }
        match reply.data.first() {
            Some(0x30) => Ok(reply.data),
            _ => Err(Error::Malformed {
                what: "signature",
                reason: "not a DER SEQUENCE".into(),
            }),
        }
    }

    /// SIGN REQUEST (`docs/token-apdus.md`): `request` must be a seed-002
    /// simlab-sign-request-v1 ([`request`]), which the card decodes itself before it signs —
    /// anything it cannot decode is refused (6A80) and nothing is signed. The signature is
    /// the DER ECDSA P-256 signature over SHA-256 of exactly `request`, the one [`Self::sign`]
    /// would give over the same bytes. Sent by command chaining beyond 255 bytes, with the
    /// same one-extended-APDU fallback as `sign`; the PIN must be verified.
    pub fn sign_request(&mut self, request: &[u8]) -> Result<Vec<u8>> {
        if request.is_empty() {
            return Err(Error::arg("--request", "nothing to sign"));
        }
        let (p1, p2) = applet::SIGN_REQUEST_P1P2;
        let reply = self.send_long(ins::SIGN, p1, p2, request)?;
        if reply.status != Status::Success {
            return Err(refusal("SIGN REQUEST", reply.status));
        }
        match reply.data.first() {
            Some(0x30) => Ok(reply.data),
            _ => Err(Error::Malformed {
                what: "signature",
                reason: "not a DER SEQUENCE".into(),
            }),
        }
    }

    /// BOOTSTRAP BEGIN (message 240 in, 250 out; the PIN must be verified). The card runs
    /// A3/A8 or AKA itself, checks M1 and only then releases SRES/RES, PK and M2. A wrong M1
    /// is an error (the gateway is not genuine) and the card released nothing.
    pub fn bootstrap_begin(&mut self, request: &BeginRequest) -> Result<BootstrapOutcome> {
        let mut buf = [0u8; 1024];
        let n = request.encode(&mut buf).map_err(|e| {
            Error::arg(
                "bootstrap request",
                format!(
                    "cannot be encoded ({e:?}): see the field limits in docs/bootstrap-protocol.md"
                ),
            )
        })?;
        let reply = self.send_long(ins::BOOTSTRAP_BEGIN, request.variant.p1(), 0, &buf[..n])?;
        if reply.status != Status::Success {
            return Err(refusal("BOOTSTRAP BEGIN", reply.status));
        }
        let malformed = || Error::Malformed {
            what: "BOOTSTRAP BEGIN response",
            reason: format!(
                "{} bytes starting {:02X?}",
                reply.data.len(),
                reply.data.first()
            ),
        };
        match BeginResponse::parse(&reply.data).ok_or_else(malformed)? {
            BeginResponse::Success {
                responses,
                public_key,
                m2,
            } => Ok(BootstrapOutcome::Accepted {
                responses: responses.to_vec(),
                public_key: PublicKey(*public_key),
                m2: *m2,
            }),
            BeginResponse::SyncFailure { auts } => {
                Ok(BootstrapOutcome::SyncFailure { auts: *auts })
            }
        }
    }

    /// BOOTSTRAP FINISH (message 260): the card stores `certificate` only if `m3` is right.
    pub fn bootstrap_finish(&mut self, certificate: &[u8], m3: &[u8; MAC_LEN]) -> Result<()> {
        if certificate.is_empty() || certificate.len() > applet::CERT_MAX {
            return Err(Error::arg(
                "certificate",
                format!(
                    "{} bytes; the token stores 1 to {} bytes",
                    certificate.len(),
                    applet::CERT_MAX
                ),
            ));
        }
        let data = [&m3[..], certificate].concat();
        let reply = self.send_long(ins::BOOTSTRAP_FINISH, 0, 0, &data)?;
        match reply.status {
            Status::Success => Ok(()),
            status => Err(refusal("BOOTSTRAP FINISH", status)),
        }
    }

    /// GET CERTIFICATE, read in 256-byte pieces; `None` when no bootstrap has stored one.
    pub fn certificate(&mut self) -> Result<Option<Vec<u8>>> {
        let len = self.info()?.certificate_len;
        if len == 0 {
            return Ok(None);
        }
        let mut cert = Vec::with_capacity(len);
        while cert.len() < len {
            let [p1, p2] = (cert.len() as u16).to_be_bytes();
            let want = (len - cert.len()).min(256);
            let cmd = Command::new(0x00, ins::GET_CERTIFICATE, p1, p2).with_ne(want);
            let piece = self.expect_ok("GET CERTIFICATE", &cmd)?;
            if piece.is_empty() || piece.len() > want {
                return Err(Error::Malformed {
                    what: "certificate",
                    reason: format!("{} bytes at offset {}", piece.len(), cert.len()),
                });
            }
            cert.extend_from_slice(&piece);
        }
        Ok(Some(cert))
    }
}

/// A refusal, said in the token's terms: the status words that carry a token-specific meaning
/// get an explanation, the rest the card's own description.
pub fn refusal(command: &'static str, status: Status) -> Error {
    let what = match status {
        Status::SecurityNotSatisfied => "the token PIN must be verified first (pass --pin)",
        Status::AuthMethodBlocked => "the token PIN is blocked",
        Status::ReferenceNotFound if command == "GET CERTIFICATE" => "no certificate stored",
        Status::ReferenceNotFound => "the token has no key yet (run `simlab token keygen`)",
        s if s == applet::sw::KEY_EXISTS => {
            "the token already has a key; --force replaces it (and drops its certificate)"
        }
        s if s == applet::sw::GATEWAY_AUTH_FAILED && command == "BOOTSTRAP BEGIN" => {
            "M1 is wrong: the gateway does not hold K (the card released nothing)"
        }
        s if s == applet::sw::GATEWAY_AUTH_FAILED => {
            "M3 is wrong: the certificate was refused and the bootstrap session ended"
        }
        s if s == applet::sw::NOT_ENOUGH_MEMORY => {
            "the certificate is longer than the token stores"
        }
        Status::IncorrectData if command == "SIGN REQUEST" => {
            "the token could not decode the request (not a simlab-sign-request-v1, or its \
             correlator is not the code of its content): nothing was signed"
        }
        Status::WrongLength if command == "SIGN REQUEST" => {
            "the request is longer than a simlab-sign-request-v1 can be (894 bytes): nothing \
             was signed"
        }
        Status::ConditionsNotSatisfied if command == "BOOTSTRAP FINISH" => {
            "no bootstrap session: BOOTSTRAP BEGIN must succeed first, in the same session"
        }
        Status::ConditionsNotSatisfied if command == "GENERATE KEY" => {
            "the token's random generator was never seeded"
        }
        _ => {
            return Error::Card { command, status };
        }
    };
    Error::Refused {
        command,
        status,
        reason: what,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_base64_matches_rfc4648() {
        let body = |s: &[u8]| {
            let p = crate::pem::pem_encode("X", s);
            p.lines().nth(1).unwrap_or_default().to_string()
        };
        assert_eq!(body(b"f"), "Zg==");
        assert_eq!(body(b"fo"), "Zm8=");
        assert_eq!(body(b"foo"), "Zm9v");
        assert_eq!(body(b"foobar"), "Zm9vYmFy");
        let long = crate::pem::pem_encode("PUBLIC KEY", &[0u8; 91]);
        let lines: Vec<&str> = long.lines().collect();
        assert_eq!(lines[0], "-----BEGIN PUBLIC KEY-----");
        assert_eq!(lines[1].len(), 64);
        assert_eq!(lines.last(), Some(&"-----END PUBLIC KEY-----"));
    }

    #[test]
    fn public_keys_must_be_uncompressed_points() {
        assert!(PublicKey::from_sec1(&[0x04; 65]).is_ok());
        assert!(PublicKey::from_sec1(&[0x02; 65]).is_err());
        assert!(PublicKey::from_sec1(&[0x04; 33]).is_err());
        assert_eq!(PublicKey([4; 65]).spki_der().len(), 91);
    }
}
