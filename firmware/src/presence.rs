//! User presence: which commands need the button, and how a press is recognised.
//!
//! A signature spends the holder's authority, so the token must not produce one just because a
//! host (perhaps malware on it) asks with the right PIN: someone must touch the device. This is
//! the one place that decides which commands need that.

use simlab_applet::token;

/// The status word a command gets when nobody pressed the button in time: 6985, "conditions
/// of use not satisfied", as FIDO U2F answers a missing test of user presence. The card itself
/// never saw the command, so nothing changed on it.
pub const NO_PRESENCE_SW: [u8; 2] = [0x69, 0x85];

/// How often the button is sampled while waiting.
pub const POLL_MS: u32 = 10;

/// Consecutive pressed samples that make a press (debouncing: 20 ms).
pub const DEBOUNCE_POLLS: u32 = 2;

/// Whether `capdu` must wait for the button before the card sees it: the token's SIGN (PERFORM
/// SECURITY OPERATION, INS 2A) in the inter-industry (00) or proprietary (80) class.
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
    let class_ok = cla & !(token::cla::PROPRIETARY | token::cla::CHAINING) == 0;
    let last_of_chain = cla & token::cla::CHAINING == 0;
    class_ok && last_of_chain && ins == token::ins::SIGN
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
        // Logical channels / secure messaging bits: the card refuses those itself, but the gate
        // must not be the one to let a signature through.
        assert!(!requires_presence(&[0x01, 0x2A, 0x9E, 0x9A]));
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
