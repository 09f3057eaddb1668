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
use simlab_modem::syntax::{fields, unquote};
use simlab_modem::{Modem, ModemError, OpenOptions};

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
        csim(&mut self.modem, capdu).map_err(|e| match e {
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

/// Runs one APDU on the SIM with `AT+CSIM` (TS 27.007 8.17) and returns the raw response
/// (data ‖ SW1 SW2).
fn csim(modem: &mut Modem, apdu: &[u8]) -> Result<Vec<u8>, ModemError> {
    let hex = crate::hex::encode(apdu).to_ascii_uppercase();
    let cmd = format!("AT+CSIM={},\"{hex}\"", hex.len());
    let r = modem.at().command(&cmd)?;
    let malformed = |reason: &str| ModemError::Malformed {
        command: "AT+CSIM".into(),
        reason: reason.to_string(),
    };
    let info = r.info("+CSIM").ok_or_else(|| malformed("no +CSIM: line"))?;
    let f = fields(info);
    let (Some(len), Some(data)) = (f.first(), f.get(1)) else {
        return Err(malformed("expected +CSIM: <length>,\"<response>\""));
    };
    let data = unquote(data);
    let bytes = crate::hex::decode("+CSIM", data).map_err(|_| malformed("response is not hex"))?;
    if len.parse::<usize>().ok() != Some(data.len()) {
        return Err(malformed("length does not match the response"));
    }
    if bytes.len() < 2 {
        return Err(malformed("response shorter than a status word"));
    }
    Ok(bytes)
}
