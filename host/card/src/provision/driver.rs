//! Drivers for programmable cards: how each type is recognised, how its ADM is presented, and
//! where its keys go (REFERENCE.md "Programmable SIMs").
//!
//! A driver only describes; [`super::plan`] turns the description into the exact APDUs, so a
//! dry run and a real run cannot diverge.

use crate::sim::Dialect;
use simlab_applet::algo::Algorithm;
use simlab_applet::card::CardType;

/// A programmable card type as the host knows it: from the specifications and the vendors'
/// public documentation, never from the card model's internals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Driver {
    pub card_type: CardType,
}

/// Where and how a card type takes its keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyLoad {
    /// sysmoSIM-GR1: `80 D4 02 00 10 <Ki>`.
    Gr1Command,
    /// sysmoUSIM-SJS1: Ki in 7F20/00FF, 01 ‖ OPc in 7F20/00F7.
    Sjs1Files,
    /// sysmoISIM-SJA2 (and simlab's own type): algorithm ‖ Ki ‖ OPc in A515/6F20 and in
    /// ADF.USIM/AF20.
    Sja2Files,
}

/// The ATRs public tools recognise the cards by, and the types they mean.
const ATRS: [(&[u8], CardType); 5] = [
    (CardType::Simlab.atr(), CardType::Simlab),
    (CardType::SysmoSimGr1.atr(), CardType::SysmoSimGr1),
    (CardType::SysmoUsimSjs1.atr(), CardType::SysmoUsimSjs1),
    (CardType::SysmoIsimSja2.atr(), CardType::SysmoIsimSja2),
    (CardType::SysmoIsimSja5.atr(), CardType::SysmoIsimSja5),
];

impl Driver {
    /// Recognises a card by its ATR; `None` for a card no driver knows (provisioning an unknown
    /// card could spend ADM attempts on a card that uses another reference).
    pub fn detect(atr: &[u8]) -> Option<Driver> {
        ATRS.iter()
            .find(|(a, _)| *a == atr)
            .map(|&(_, card_type)| Driver { card_type })
    }

    /// Picks a driver by name (`--card-type`), for cards whose ATR is customised.
    pub fn by_name(name: &str) -> Option<Driver> {
        CardType::from_name(name).map(|card_type| Driver { card_type })
    }

    pub fn name(&self) -> &'static str {
        self.card_type.name()
    }

    /// The command set the card is provisioned through.
    pub fn dialect(&self) -> Dialect {
        if self.card_type.is_uicc() {
            Dialect::Uicc
        } else {
            Dialect::Gsm
        }
    }

    /// The VERIFY P2 that presents ADM1.
    pub fn adm_reference(&self) -> u8 {
        match self.card_type {
            CardType::SysmoSimGr1 => 0x05,
            _ => 0x0A,
        }
    }

    /// Whether the card reports ADM tries without spending one (TS 102 221 empty VERIFY).
    /// A TS 51.011-only card cannot, so the guard refuses it unless forced.
    pub fn can_query_adm(&self) -> bool {
        self.card_type.is_uicc()
    }

    pub fn key_load(&self) -> KeyLoad {
        match self.card_type {
            CardType::SysmoSimGr1 => KeyLoad::Gr1Command,
            CardType::SysmoUsimSjs1 => KeyLoad::Sjs1Files,
            CardType::SysmoIsimSja2 | CardType::SysmoIsimSja5 | CardType::Simlab => {
                KeyLoad::Sja2Files
            }
        }
    }

    /// Whether EF_ICCID can be written (the SJA2's is fixed at the factory).
    pub fn iccid_writable(&self) -> bool {
        !self.card_type.iccid_fixed()
    }

    /// Whether PIN1/PUK1 can be set by the issuer (simlab's A515/6F01); other types keep
    /// theirs, and the report says so.
    pub fn pins_writable(&self) -> bool {
        self.card_type == CardType::Simlab
    }

    /// Which algorithms the card can be set to; `None` means any.
    pub fn check_algorithm(&self, alg: Algorithm) -> Result<(), String> {
        let ok = match self.key_load() {
            KeyLoad::Gr1Command => matches!(alg, Algorithm::Comp128v1),
            KeyLoad::Sjs1Files => alg == Algorithm::Milenage,
            KeyLoad::Sja2Files => match self.card_type {
                CardType::SysmoIsimSja2 | CardType::SysmoIsimSja5 => matches!(
                    alg,
                    Algorithm::Comp128v1
                        | Algorithm::Comp128v2
                        | Algorithm::Comp128v3
                        | Algorithm::Milenage
                ),
                _ => true,
            },
        };
        if ok {
            Ok(())
        } else {
            Err(format!("a {} cannot run {}", self.name(), alg.name()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_recognised_by_its_atr() {
        for t in CardType::ALL {
            assert_eq!(Driver::detect(t.atr()).map(|d| d.card_type), Some(t));
        }
        assert_eq!(Driver::detect(&[0x3B, 0x00]), None);
        assert_eq!(
            Driver::by_name("sysmousim-sjs1").map(|d| d.card_type),
            Some(CardType::SysmoUsimSjs1)
        );
    }

    #[test]
    fn algorithms_per_type() {
        let sjs1 = Driver {
            card_type: CardType::SysmoUsimSjs1,
        };
        assert!(sjs1.check_algorithm(Algorithm::Milenage).is_ok());
        assert!(sjs1.check_algorithm(Algorithm::Comp128v1).is_err());
        let gr1 = Driver {
            card_type: CardType::SysmoSimGr1,
        };
        assert!(gr1.check_algorithm(Algorithm::Milenage).is_err());
    }
}
