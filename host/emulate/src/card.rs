//! The card model as a virtual card: the simlab [`Card`], its state file and its transcript,
//! behind any front end that implements the card side of a reader protocol.

use super::VirtualCard;
use simlab_applet::Card;
use simlab_applet::card::RESPONSE_MAX;
use simlab_applet::state::STATE_LEN;
use simlab_card::error::{Error, Result};
use simlab_card::trace::Trace;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A card model with optional persistence (`--state`) and tracing (`--trace`).
pub struct EmulatedCard {
    card: Card,
    state: Option<PathBuf>,
    trace: Option<Trace>,
    /// The last persistence failure, reported once; the card keeps answering from memory.
    pub last_error: Option<String>,
    /// How long each command takes, as on a real card (zero: as fast as the model runs).
    latency: std::time::Duration,
}

impl EmulatedCard {
    /// Wraps a freshly personalised card. With a state file that exists, the file wins: it is
    /// the card's memory (counters, changed files, SQN), the profile only its factory image.
    pub fn new(mut card: Card, state: Option<&Path>, trace: Option<Trace>) -> Result<Self> {
        if let Some(path) = state {
            match std::fs::read(path) {
                Ok(bytes) => card.restore_state(&bytes).map_err(|e| Error::BadArgument {
                    arg: "--state".into(),
                    reason: format!("{}: {e}", path.display()),
                })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    save(&card, path)?;
                }
                Err(source) => {
                    return Err(Error::Io {
                        context: format!("reading state file {}", path.display()),
                        source,
                    });
                }
            }
        }
        Ok(EmulatedCard {
            card,
            state: state.map(Path::to_path_buf),
            trace,
            last_error: None,
            latency: std::time::Duration::ZERO,
        })
    }

    /// Makes every command take `latency`, as a real card's processing time does (SIMs take
    /// milliseconds per APDU): benchmarks of batch work then measure what real readers see.
    pub fn with_latency(mut self, latency: std::time::Duration) -> Self {
        self.latency = latency;
        self
    }

    /// The card model.
    pub fn card(&self) -> &Card {
        &self.card
    }
}

/// Writes the state atomically: a temporary file in the same directory, synced, then renamed
/// over the old one. A crash leaves the old or the new state, never half of each.
pub fn save(card: &Card, path: &Path) -> Result<()> {
    let mut bytes = vec![0u8; STATE_LEN];
    card.save_state(&mut bytes);
    let tmp = path.with_extension("tmp");
    let io = |source| Error::Io {
        context: format!("writing state file {}", path.display()),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(io)?;
    file.write_all(&bytes).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

impl VirtualCard for EmulatedCard {
    fn atr(&self) -> Vec<u8> {
        self.card.atr().to_vec()
    }

    fn reset(&mut self) {
        self.card.reset();
        if let Some(t) = &mut self.trace {
            t.note("reset");
        }
    }

    fn power_off(&mut self) {
        self.card.reset();
        if let Some(t) = &mut self.trace {
            t.note("power off");
        }
    }

    fn process(&mut self, capdu: &[u8]) -> Vec<u8> {
        if !self.latency.is_zero() {
            std::thread::sleep(self.latency);
        }
        let mut rapdu = [0u8; RESPONSE_MAX];
        let n = self.card.process(capdu, &mut rapdu);
        // Persist before answering: a counter that was spent must stay spent even if the
        // process dies right after the reply.
        if self.card.take_dirty()
            && let Some(path) = &self.state
            && let Err(e) = save(&self.card, path)
        {
            self.last_error = Some(e.to_string());
            // Refuse to answer as if the change had happened: a memory failure, as a real
            // card reports a failed EEPROM write.
            rapdu[..2].copy_from_slice(&simlab_applet::Status::MemoryFailure.to_bytes());
            if let Some(t) = &mut self.trace {
                t.exchange(capdu, &rapdu[..2]);
            }
            return rapdu[..2].to_vec();
        }
        if let Some(t) = &mut self.trace {
            t.exchange(capdu, &rapdu[..n]);
        }
        rapdu[..n].to_vec()
    }
}

/// The emulated card with a state file, as a host-side transport (for `--emulate P --state F`):
/// what changes the card's memory is saved before the answer returns, and a failed save is an
/// error rather than a silent loss.
pub struct PersistentCard {
    card: EmulatedCard,
    name: String,
}

impl PersistentCard {
    pub fn new(card: EmulatedCard, name: impl Into<String>) -> Self {
        PersistentCard {
            card,
            name: name.into(),
        }
    }
}

impl simlab_card::transport::Transport for PersistentCard {
    fn transmit_raw(
        &mut self,
        capdu: &[u8],
    ) -> std::result::Result<Vec<u8>, simlab_card::transport::TransportError> {
        let rapdu = self.card.process(capdu);
        match self.card.last_error.take() {
            Some(reason) => Err(simlab_card::transport::TransportError::Device { reason }),
            None => Ok(rapdu),
        }
    }

    fn reset(&mut self) -> std::result::Result<Vec<u8>, simlab_card::transport::TransportError> {
        VirtualCard::reset(&mut self.card);
        Ok(VirtualCard::atr(&self.card))
    }

    fn atr(&self) -> Vec<u8> {
        VirtualCard::atr(&self.card)
    }

    fn describe(&self) -> String {
        self.name.clone()
    }
}
