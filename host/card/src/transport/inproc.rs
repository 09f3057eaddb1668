//! The card model linked into the host: the transport of `--emulate PROFILE` and of most tests.

use super::{Transport, TransportError};
use simlab_applet::Card;
use simlab_applet::card::RESPONSE_MAX;

/// A [`Card`] answering in-process.
pub struct InProcess {
    card: Card,
    name: String,
}

impl InProcess {
    pub fn new(card: Card, name: impl Into<String>) -> Self {
        InProcess {
            card,
            name: name.into(),
        }
    }

    /// The card model, e.g. to inspect its state in tests.
    pub fn card(&self) -> &Card {
        &self.card
    }
}

impl Transport for InProcess {
    fn transmit_raw(&mut self, capdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        let mut rapdu = [0u8; RESPONSE_MAX];
        let n = self.card.process(capdu, &mut rapdu);
        Ok(rapdu[..n].to_vec())
    }

    fn reset(&mut self) -> Result<Vec<u8>, TransportError> {
        self.card.reset();
        Ok(self.card.atr().to_vec())
    }

    fn atr(&self) -> Vec<u8> {
        self.card.atr().to_vec()
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}
