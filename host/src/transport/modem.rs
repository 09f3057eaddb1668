//! The SIM inside a modem, reached with AT+CSIM — placeholder; implemented with the modem work.

use super::{Transport, TransportError};

/// A SIM behind a modem's AT+CSIM.
pub struct ModemTransport;

impl ModemTransport {
    /// Opens the modem's AT port and checks that it answers AT+CSIM.
    pub fn open(_path: &std::path::Path) -> Result<Self, TransportError> {
        Err(TransportError::Device {
            reason: "the modem transport is not implemented yet".into(),
        })
    }
}

impl Transport for ModemTransport {
    fn transmit_raw(&mut self, _capdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        unreachable!("never constructed")
    }
    fn reset(&mut self) -> Result<Vec<u8>, TransportError> {
        unreachable!("never constructed")
    }
    fn atr(&self) -> Vec<u8> {
        Vec::new()
    }
    fn describe(&self) -> String {
        String::new()
    }
}
