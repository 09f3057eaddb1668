//! Emulators: the card model as a virtual card behind real pcscd (vpcd), and a virtual modem
//! on a pty that passes AT+CSIM to it, and the virtual SMS network between such modems.

pub mod card;
pub mod modem;
pub mod smsc;
pub mod vpcd;

/// What a virtual-card front end (vpcd, and later others) needs from the card behind it.
/// Implemented by [`card::EmulatedCard`] over the card model; a trait so the
/// protocol code can be tested with a scripted card.
pub trait VirtualCard {
    /// The answer to reset.
    fn atr(&self) -> Vec<u8>;
    /// Power on / warm reset / power off: all three lose volatile state (selection, PINs).
    fn reset(&mut self);
    /// Power off.
    fn power_off(&mut self);
    /// One command APDU in, one response APDU out (data ‖ SW1 SW2). Never fails: a card
    /// answers every input with a status word, and persists state before answering.
    fn process(&mut self, capdu: &[u8]) -> Vec<u8>;
}
