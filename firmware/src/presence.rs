//! User presence: which commands need the button, and how a press is recognised.
//!
//! A signature spends the holder's authority, so the token must not produce one just because a
//! host (perhaps malware on it) asks with the right PIN: someone must touch the device. This is
//! the one place that decides which commands need that, and what the person is shown first.
//!
//! # What SIGN REQUEST shows
//!
//! Seed 002's SIGN REQUEST (INS 2A, P1P2 9E 9C, `docs/token-apdus.md`) carries a
//! simlab-sign-request-v1 that the token decodes before it signs. Before the firmware waits for
//! the button it shows the request's fields on the board's [`Console`], one line each:
//!
//! ```text
//! sign request from <server id>
//! amount:     42.50 EUR
//! summary:    <summary>
//! user:       <user id>
//! correlator: XXX-XXX
//! press the button to sign
//! ```
//!
//! The firmware sees a chained request one block at a time. Rather than keep a second copy of
//! the chain (which would have to follow the card's rules for abandoning chains, logical
//! channels, refusals and resets exactly, or show one thing while the card signs another), it
//! asks the card model: [`simlab_applet::Card::pending_sign_request`] gives, without changing
//! anything, the very bytes the token's own chain buffer holds followed by the last block's —
//! what the token will decode and sign if the command goes through. The applet's property test
//! checks that every SIGN REQUEST signature is over the bytes that look-ahead returned. Bytes
//! that do not decode (or a command the card will refuse before decoding: PIN not verified, no
//! key, token not selected) ask for no press: the card answers them itself (6A80, 6982 …) and
//! signs nothing.

use crate::Console;
use simlab_applet::token::{self, request::SignRequest};

/// The status word a command gets when nobody pressed the button in time: 6985, "conditions
/// of use not satisfied", as FIDO U2F answers a missing test of user presence. The card itself
/// never saw the command, so nothing changed on it.
pub const NO_PRESENCE_SW: [u8; 2] = [0x69, 0x85];

/// How often the button is sampled while waiting.
pub const POLL_MS: u32 = 10;

/// Consecutive pressed samples that make a press (debouncing: 20 ms).
pub const DEBOUNCE_POLLS: u32 = 2;

/// Whether `capdu` must wait for the button before the card sees it: the token's SIGN (PERFORM
/// SECURITY OPERATION, INS 2A) in the inter-industry (00) or proprietary (80) class, on any of
/// the logical channels 0–3 (the token can be selected on each: CLA 01–03, 81–83).
///
/// Deliberately broader than "SIGN while the token is selected": the firmware does not track
/// selection, and no SIM/USIM command uses INS 2A, so gating it everywhere can only ask for a
/// press that was not needed, never skip one that was. Of a command chain only the last
/// command (chaining bit clear) is gated: the signature is computed then, and one press
/// approves one signature. P1/P2 are not looked at, so a SIGN variant added later is gated
/// too.
pub fn requires_presence(capdu: &[u8]) -> bool {
    let [cla, ins, ..] = *capdu else {
        return false;
    };
    let class_ok = cla & !(token::cla::PROPRIETARY | token::cla::CHAINING | CHANNEL_BITS) == 0;
    let last_of_chain = cla & token::cla::CHAINING == 0;
    class_ok && last_of_chain && ins == token::ins::SIGN
}

/// The logical-channel bits of an inter-industry CLA (ISO 7816-4 5.4.1: channels 0–3).
const CHANNEL_BITS: u8 = 0x03;

/// Whether `capdu` is SIGN REQUEST (INS 2A, P1P2 9E 9C), in any class: the command whose
/// request is shown before the wait.
pub fn is_sign_request(capdu: &[u8]) -> bool {
    let [_, ins, p1, p2, ..] = *capdu else {
        return false;
    };
    ins == token::ins::SIGN && (p1, p2) == token::SIGN_REQUEST_P1P2
}

/// The longest line [`show_request`] writes: the summary's label and 640 bytes of summary.
const LINE_MAX: usize = 16 + token::request::SUMMARY_MAX_BYTES;

/// Shows a decoded request on `console`, one field per line (the format is in the module
/// documentation), ending with the prompt to press the button.
pub fn show_request<S: Console>(console: &mut S, req: &SignRequest<'_>) {
    let mut line = Line::new();
    let mut put = |args: core::fmt::Arguments<'_>| {
        line.clear();
        let _ = core::fmt::Write::write_fmt(&mut line, args);
        console.show(line.as_str());
    };
    put(format_args!("sign request from {}", req.server_id));
    put(format_args!("amount:     {}", req.amount_display()));
    put(format_args!("summary:    {}", req.summary));
    put(format_args!("user:       {}", req.user_id));
    put(format_args!("correlator: {}", req.correlator_str()));
    put(format_args!("press the button to sign"));
}

/// A fixed line buffer for `core::fmt`; what does not fit is dropped at a character boundary
/// (nothing is dropped for a request: [`LINE_MAX`] holds the longest field).
struct Line {
    buf: [u8; LINE_MAX],
    len: usize,
}

impl Line {
    const fn new() -> Self {
        Line {
            buf: [0; LINE_MAX],
            len: 0,
        }
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    fn as_str(&self) -> &str {
        let bytes = self.buf.get(..self.len).unwrap_or_default();
        core::str::from_utf8(bytes).unwrap_or("")
    }
}

impl core::fmt::Write for Line {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let room = LINE_MAX - self.len;
        let mut n = s.len().min(room);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        if let (Some(dst), Some(src)) = (
            self.buf.get_mut(self.len..self.len + n),
            s.as_bytes().get(..n),
        ) {
            dst.copy_from_slice(src);
            self.len += n;
        }
        Ok(())
    }
}

/// Recognises a *fresh* press from successive samples: the button must be seen released and
/// then pressed for [`DEBOUNCE_POLLS`] samples in a row. A button held down (or stuck, or
/// wedged with tape) before the request never approves anything.
#[derive(Clone, Copy, Debug, Default)]
pub struct PressDetector {
    seen_released: bool,
    pressed_run: u32,
}

impl PressDetector {
    pub const fn new() -> Self {
        PressDetector {
            seen_released: false,
            pressed_run: 0,
        }
    }

    /// Feeds one sample; true once a fresh, debounced press is complete.
    pub fn sample(&mut self, pressed: bool) -> bool {
        if !pressed {
            self.seen_released = true;
            self.pressed_run = 0;
            return false;
        }
        if self.seen_released {
            self.pressed_run += 1;
        }
        self.pressed_run >= DEBOUNCE_POLLS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_last_sign_of_a_chain_is_gated() {
        assert!(requires_presence(&[0x00, 0x2A, 0x9E, 0x9A, 0x01, 0x55]));
        assert!(requires_presence(&[0x80, 0x2A, 0x9E, 0x9A, 0x01, 0x55]));
        assert!(!requires_presence(&[0x10, 0x2A, 0x9E, 0x9A, 0x01, 0x55]));
        assert!(!requires_presence(&[0x90, 0x2A, 0x9E, 0x9A, 0x01, 0x55]));
        assert!(!requires_presence(&[0x00, 0x20, 0x00, 0x80]));
        assert!(!requires_presence(&[0xA0, 0x88, 0x00, 0x00, 0x10]));
        assert!(!requires_presence(&[0x00]));
        assert!(!requires_presence(&[]));
        // Logical channels 1-3: the token can be selected there, so SIGN waits there too.
        assert!(requires_presence(&[0x01, 0x2A, 0x9E, 0x9A, 0x01, 0x55]));
        assert!(requires_presence(&[0x83, 0x2A, 0x9E, 0x9A, 0x01, 0x55]));
        assert!(!requires_presence(&[0x13, 0x2A, 0x9E, 0x9A, 0x01, 0x55]));
        // Secure messaging and extended channels: the card refuses those itself (6E00 / 6881),
        // and gating them asks at most for a press that was not needed.
        assert!(!requires_presence(&[0x0C, 0x2A, 0x9E, 0x9A]));
        assert!(!requires_presence(&[0x40, 0x2A, 0x9E, 0x9A]));
        assert!(is_sign_request(&[0x00, 0x2A, 0x9E, 0x9C, 0x01, 0x55]));
        assert!(is_sign_request(&[0x91, 0x2A, 0x9E, 0x9C]));
        assert!(!is_sign_request(&[0x00, 0x2A, 0x9E, 0x9A, 0x01, 0x55]));
        assert!(!is_sign_request(&[0x00, 0x2A, 0x9E]));
    }

    #[test]
    fn a_line_keeps_whole_characters() {
        use core::fmt::Write;
        let mut l = Line::new();
        for _ in 0..LINE_MAX {
            let _ = l.write_str("é");
        }
        assert_eq!(l.len, LINE_MAX);
        assert!(l.as_str().chars().all(|c| c == 'é'));
        let _ = l.write_str("é");
        assert_eq!(l.len, LINE_MAX);
    }

    #[test]
    fn a_press_must_be_fresh_and_debounced() {
        let mut d = PressDetector::new();
        // Held from the start: never.
        assert!(!(0..100).any(|_| d.sample(true)));
        let mut d = PressDetector::new();
        assert!(!d.sample(false));
        assert!(!d.sample(true));
        assert!(d.sample(true));
        // A bounce resets the run.
        let mut d = PressDetector::new();
        assert!(!d.sample(false));
        assert!(!d.sample(true));
        assert!(!d.sample(false));
        assert!(!d.sample(true));
        assert!(d.sample(true));
    }
}
