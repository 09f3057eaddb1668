//! The secure-token applet — placeholder until the token work lands. The card routes commands
//! here while the token's AID is selected.

use crate::apdu::Command;
use crate::auth::Subscriber;
use crate::state::StateError;
use crate::status::Status;

/// The token's application identifier: a proprietary RID (F0) and "simlab" "TK".
pub const AID: [u8; 9] = [0xF0, b's', b'i', b'm', b'l', b'a', b'b', b'T', b'K'];

/// Bytes of persistent token state inside the card state.
pub const STATE_LEN: usize = 0;

/// The token applet.
#[derive(Clone)]
pub struct Token {
    dirty: bool,
}

impl Token {
    /// A token with no key yet; `seed` seeds its DRBG and must be unique per card.
    pub fn new(_seed: &[u8; 32]) -> Self {
        Token { dirty: false }
    }

    /// Power-on / reset: volatile state (PIN verification) is lost.
    pub fn reset(&mut self) {}

    /// One command while the token is selected. Response data goes to `out`; the length is
    /// returned. `sub` gives the card's own A3/A8 and AKA, so bootstrap keys never leave it.
    pub fn process(
        &mut self,
        _cmd: &Command,
        _sub: &mut Subscriber,
        _out: &mut [u8; 256],
    ) -> Result<usize, Status> {
        Err(Status::InsNotSupported)
    }

    /// Whether persistent token state changed since the last call.
    pub fn take_dirty(&mut self) -> bool {
        core::mem::take(&mut self.dirty)
    }

    /// Writes [`STATE_LEN`] bytes of state.
    pub fn save_state(&self, _out: &mut [u8]) -> usize {
        0
    }

    /// Restores state written by [`Token::save_state`].
    pub fn restore_state(&mut self, _bytes: &[u8]) -> Result<(), StateError> {
        Ok(())
    }
}
