//! The SIM inside a modem, reached with `AT+CSIM` (TS 27.007 8.17): the fourth way to a card.
//!
//! Each command APDU travels as hex in `AT+CSIM=<length>,"<apdu>"` and the response comes back
//! in `+CSIM: <length>,"<response>"`, status word included. The modem passes both through on
//! the SIM's basic channel; [`super::Link`] above does the T=0 work (GET RESPONSE after
//! 61xx/9Fxx), exactly as for a reader.
//!
//! Caveats of the path, not of simlab: the modem's own firmware talks to the SIM on the same
//! channel (it may change the selected file between two of our commands), and most modems
//! expose no ATR, so [`ModemTransport::atr`] is empty and [`ModemTransport::reset`] is refused
//! rather than power-cycling the whole modem.

use super::{Transport, TransportError};
use crate::modem::{Modem, ModemError, OpenOptions};

/// A SIM behind a modem's AT+CSIM.
pub struct ModemTransport {
    modem: Modem,
}

impl ModemTransport {
    /// Opens the modem's AT port and checks that it answers AT+CSIM.
    pub fn open(path: &std::path::Path) -> Result<Self, TransportError> {
        let modem = Modem::open(path, OpenOptions::default()).map_err(device)?;
        Self::over(modem)
    }

    /// Uses an already open modem (with its trace and stop flag); checks AT+CSIM with a
    /// harmless SELECT of the MF.
    pub fn over(mut modem: Modem) -> Result<Self, TransportError> {
        match modem.at().command("AT+CSIM=?") {
            Ok(_) => {}
            Err(ModemError::Vanished { .. } | ModemError::Interrupted) => {
                return Err(TransportError::Device {
                    reason: format!("the modem at {} went away", modem.port()),
                });
            }
            Err(e) => {
                return Err(TransportError::Device {
                    reason: format!(
                        "{} does not offer AT+CSIM ({e}): this modem cannot pass APDUs to its SIM",
                        modem.port()
                    ),
                });
            }
        }
        Ok(ModemTransport { modem })
    }
}

fn device(e: ModemError) -> TransportError {
    TransportError::Device {
        reason: e.to_string(),
    }
}

impl Transport for ModemTransport {
    fn transmit_raw(&mut self, capdu: &[u8]) -> Result<Vec<u8>, TransportError> {
        self.modem.csim(capdu).map_err(|e| match e {
            ModemError::Malformed { reason, .. } => TransportError::BadResponse { reason },
            other => device(other),
        })
    }

    fn reset(&mut self) -> Result<Vec<u8>, TransportError> {
        Err(TransportError::Device {
            reason: "a SIM behind AT+CSIM cannot be reset without restarting the modem".into(),
        })
    }

    fn atr(&self) -> Vec<u8> {
        Vec::new()
    }

    fn describe(&self) -> String {
        format!("SIM in the modem at {} (AT+CSIM)", self.modem.port())
    }
}
