//! A token or card behind the framed serial link (firmware) — placeholder; implemented with the firmware work.

use super::{Transport, TransportError};

/// A card behind the framed APDU link of simlab-firmware.
pub struct SerialTransport;

impl SerialTransport {
    /// Opens `PATH` (a serial device) or `tcp:HOST:PORT`.
    pub fn open(_spec: &str) -> Result<Self, TransportError> {
        Err(TransportError::Device {
            reason: "the serial transport is not implemented yet".into(),
        })
    }
}

impl Transport for SerialTransport {
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
