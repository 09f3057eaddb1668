//! TP-Validity-Period (TS 23.040 9.2.3.12): how long the service centre
//! keeps trying to deliver a SUBMIT. One-time passwords must not outlive
//! their code, so the relative format's mapping is exact in both directions.

use core::time::Duration;

use crate::Error;
use crate::cursor::Reader;
use crate::semi_octet::decode_decimal;
use crate::timestamp::{TIMESTAMP_LEN, Timestamp};

const MINUTE: u64 = 60;
const FIVE_MINUTES: u64 = 5 * MINUTE;
const HALF_HOUR: u64 = 30 * MINUTE;
const TWELVE_HOURS: u64 = 12 * 60 * MINUTE;
const DAY: u64 = 24 * 60 * MINUTE;
const WEEK: u64 = 7 * DAY;

/// Boundaries of the steps of the relative scale (9.2.3.12.1).
const LAST_FIVE_MINUTE_STEP: u8 = 143;
const FIRST_HALF_HOUR_STEP: u8 = LAST_FIVE_MINUTE_STEP + 1;
const LAST_HALF_HOUR_STEP: u8 = 167;
const FIRST_DAY_STEP: u8 = LAST_HALF_HOUR_STEP + 1;
const LAST_DAY_STEP: u8 = 196;
const FIRST_WEEK_STEP: u8 = LAST_DAY_STEP + 1;
/// Offsets in the formulas of 9.2.3.12.1.
const DAY_OFFSET: u64 = 166;
const WEEK_OFFSET: u64 = 192;

/// A relative validity period: one octet on a piecewise scale of
/// 5 minutes up to 12 h, 30 minutes up to 24 h, days up to 30 days and
/// weeks up to 63 weeks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelativeValidity(u8);

impl RelativeValidity {
    /// The longest period the format holds: 63 weeks.
    pub const MAX: RelativeValidity = RelativeValidity(u8::MAX);

    /// Wraps a TP-VP octet.
    pub const fn from_octet(octet: u8) -> Self {
        RelativeValidity(octet)
    }

    /// The TP-VP octet.
    pub const fn octet(self) -> u8 {
        self.0
    }

    /// The period this octet stands for.
    pub const fn duration(self) -> Duration {
        let vp = self.0 as u64;
        let secs = match self.0 {
            0..=LAST_FIVE_MINUTE_STEP => (vp + 1) * FIVE_MINUTES,
            FIRST_HALF_HOUR_STEP..=LAST_HALF_HOUR_STEP => {
                TWELVE_HOURS + (vp - LAST_FIVE_MINUTE_STEP as u64) * HALF_HOUR
            }
            FIRST_DAY_STEP..=LAST_DAY_STEP => (vp - DAY_OFFSET) * DAY,
            FIRST_WEEK_STEP..=u8::MAX => (vp - WEEK_OFFSET) * WEEK,
        };
        Duration::from_secs(secs)
    }

    /// The smallest period that is at least `duration`, so that a message
    /// never expires before the caller asked. Fails beyond 63 weeks.
    pub fn at_least(duration: Duration) -> Result<Self, Error> {
        let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
        let vp = if secs <= TWELVE_HOURS {
            secs.div_ceil(FIVE_MINUTES).max(1) - 1
        } else if secs <= DAY {
            u64::from(LAST_FIVE_MINUTE_STEP) + (secs - TWELVE_HOURS).div_ceil(HALF_HOUR)
        } else if secs <= 30 * DAY {
            DAY_OFFSET + secs.div_ceil(DAY).max(2)
        } else if secs <= 63 * WEEK {
            WEEK_OFFSET + secs.div_ceil(WEEK).max(5)
        } else {
            return Err(Error::ValidityPeriodTooLong { seconds: secs });
        };
        u8::try_from(vp)
            .map(RelativeValidity)
            .map_err(|_| Error::ValidityPeriodTooLong { seconds: secs })
    }
}

/// The enhanced format (9.2.3.12.3), kept as its seven octets so that
/// re-encoding is exact; accessors interpret it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedValidity([u8; TIMESTAMP_LEN]);

/// What an enhanced validity period says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EnhancedFormat {
    /// No validity period specified.
    NotPresent,
    /// The relative scale, as [`RelativeValidity`].
    Relative(RelativeValidity),
    /// 0–255 seconds.
    Seconds(u8),
    /// Hours, minutes, seconds in semi-octets.
    HoursMinutesSeconds {
        /// Hours.
        hours: u8,
        /// Minutes.
        minutes: u8,
        /// Seconds.
        seconds: u8,
    },
    /// A reserved or undecodable format; the raw indicator octet.
    Reserved(u8),
}

const EVP_EXTENSION: u8 = 0x80;
const EVP_SINGLE_SHOT: u8 = 0x40;
const EVP_FORMAT_MASK: u8 = 0x07;

impl EnhancedValidity {
    /// Wraps the seven TP-VP octets.
    pub const fn from_octets(octets: [u8; TIMESTAMP_LEN]) -> Self {
        EnhancedValidity(octets)
    }

    /// The seven TP-VP octets.
    pub const fn octets(&self) -> [u8; TIMESTAMP_LEN] {
        self.0
    }

    /// Single-shot: the service centre makes one delivery attempt only.
    pub const fn single_shot(&self) -> bool {
        self.0[0] & EVP_SINGLE_SHOT != 0
    }

    /// The period, skipping any functionality-indicator extension octets.
    pub fn format(&self) -> EnhancedFormat {
        let indicator = self.0[0];
        // Extension octets (bit 7 set) precede the period itself.
        let mut start = 1;
        let mut octet = indicator;
        while octet & EVP_EXTENSION != 0 {
            match self.0.get(start) {
                Some(&next) => octet = next,
                None => return EnhancedFormat::Reserved(indicator),
            }
            start += 1;
        }
        let body = self.0.get(start..).unwrap_or(&[]);
        match (indicator & EVP_FORMAT_MASK, body) {
            (0, _) => EnhancedFormat::NotPresent,
            (1, [vp, ..]) => EnhancedFormat::Relative(RelativeValidity(*vp)),
            (2, [s, ..]) => EnhancedFormat::Seconds(*s),
            (3, [h, m, s, ..]) => match (
                decode_decimal(*h, "validity period"),
                decode_decimal(*m, "validity period"),
                decode_decimal(*s, "validity period"),
            ) {
                (Ok(hours), Ok(minutes), Ok(seconds)) => EnhancedFormat::HoursMinutesSeconds {
                    hours,
                    minutes,
                    seconds,
                },
                _ => EnhancedFormat::Reserved(indicator),
            },
            _ => EnhancedFormat::Reserved(indicator),
        }
    }
}

/// A TP-VP in any of its three formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValidityPeriod {
    /// One octet, relative to receipt by the service centre.
    Relative(RelativeValidity),
    /// An absolute expiry time.
    Absolute(Timestamp),
    /// The enhanced format.
    Enhanced(EnhancedValidity),
}

/// TP-VPF values (first octet bits 4–3).
pub(crate) const VPF_NONE: u8 = 0b00;
pub(crate) const VPF_ENHANCED: u8 = 0b01;
pub(crate) const VPF_RELATIVE: u8 = 0b10;
pub(crate) const VPF_ABSOLUTE: u8 = 0b11;

impl ValidityPeriod {
    /// The smallest relative period of at least `duration`.
    pub fn at_least(duration: Duration) -> Result<Self, Error> {
        RelativeValidity::at_least(duration).map(ValidityPeriod::Relative)
    }

    /// The period as a duration, where the format gives one.
    pub fn duration(&self) -> Option<Duration> {
        match self {
            ValidityPeriod::Relative(r) => Some(r.duration()),
            ValidityPeriod::Absolute(_) => None,
            ValidityPeriod::Enhanced(e) => match e.format() {
                EnhancedFormat::Relative(r) => Some(r.duration()),
                EnhancedFormat::Seconds(s) => Some(Duration::from_secs(u64::from(s))),
                EnhancedFormat::HoursMinutesSeconds {
                    hours,
                    minutes,
                    seconds,
                } => Some(Duration::from_secs(
                    u64::from(hours) * 3600 + u64::from(minutes) * 60 + u64::from(seconds),
                )),
                EnhancedFormat::NotPresent | EnhancedFormat::Reserved(_) => None,
            },
        }
    }

    /// The TP-VPF bits for this format.
    pub(crate) fn format_bits(vp: Option<&ValidityPeriod>) -> u8 {
        match vp {
            None => VPF_NONE,
            Some(ValidityPeriod::Relative(_)) => VPF_RELATIVE,
            Some(ValidityPeriod::Absolute(_)) => VPF_ABSOLUTE,
            Some(ValidityPeriod::Enhanced(_)) => VPF_ENHANCED,
        }
    }

    pub(crate) fn decode(vpf: u8, r: &mut Reader<'_>) -> Result<Option<Self>, Error> {
        const FIELD: &str = "validity period";
        Ok(match vpf {
            VPF_RELATIVE => Some(ValidityPeriod::Relative(RelativeValidity(r.u8(FIELD)?))),
            VPF_ABSOLUTE => Some(ValidityPeriod::Absolute(Timestamp::decode(
                r.array::<TIMESTAMP_LEN>(FIELD)?,
                FIELD,
            )?)),
            VPF_ENHANCED => Some(ValidityPeriod::Enhanced(EnhancedValidity(
                *r.array::<TIMESTAMP_LEN>(FIELD)?,
            ))),
            _ => None,
        })
    }

    pub(crate) fn encode(&self, out: &mut crate::cursor::PduBuf) -> Result<(), Error> {
        match self {
            ValidityPeriod::Relative(r) => out.push(r.0),
            ValidityPeriod::Absolute(t) => out.extend(&t.encode()),
            ValidityPeriod::Enhanced(e) => out.extend(&e.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mins(m: u64) -> Duration {
        Duration::from_secs(m * 60)
    }

    #[test]
    fn table_of_9_2_3_12_1() {
        let d = |vp| RelativeValidity::from_octet(vp).duration();
        assert_eq!(d(0), mins(5));
        assert_eq!(d(143), mins(12 * 60));
        assert_eq!(d(144), mins(12 * 60 + 30));
        assert_eq!(d(167), mins(24 * 60));
        assert_eq!(d(168), Duration::from_secs(2 * DAY));
        assert_eq!(d(196), Duration::from_secs(30 * DAY));
        assert_eq!(d(197), Duration::from_secs(5 * WEEK));
        assert_eq!(d(255), Duration::from_secs(63 * WEEK));
        assert_eq!(d(0xAA), Duration::from_secs(4 * DAY));
    }

    #[test]
    fn at_least_is_exact_on_every_step() {
        for vp in 0..=u8::MAX {
            let r = RelativeValidity::from_octet(vp);
            assert_eq!(RelativeValidity::at_least(r.duration()), Ok(r), "vp {vp}");
            let just_over = r.duration() + Duration::from_nanos(1);
            let next = RelativeValidity::at_least(just_over);
            if vp == u8::MAX {
                assert!(next.is_err());
            } else {
                assert_eq!(next, Ok(RelativeValidity::from_octet(vp + 1)), "vp {vp}+");
            }
        }
        assert_eq!(
            RelativeValidity::at_least(Duration::ZERO).unwrap().octet(),
            0
        );
        // An OTP valid for ten minutes: VP 1.
        assert_eq!(RelativeValidity::at_least(mins(10)).unwrap().octet(), 1);
        assert_eq!(RelativeValidity::at_least(mins(7)).unwrap().octet(), 1);
    }

    #[test]
    fn enhanced_formats() {
        let e = EnhancedValidity::from_octets([0x42, 0x3C, 0, 0, 0, 0, 0]);
        assert!(e.single_shot());
        assert_eq!(e.format(), EnhancedFormat::Seconds(60));
        let e = EnhancedValidity::from_octets([0x03, 0x10, 0x03, 0x00, 0, 0, 0]);
        assert_eq!(
            ValidityPeriod::Enhanced(e).duration(),
            Some(Duration::from_secs(3600 + 30 * 60))
        );
        let e = EnhancedValidity::from_octets([0x81, 0x00, 0x0B, 0, 0, 0, 0]);
        assert_eq!(e.format(), EnhancedFormat::Relative(RelativeValidity(0x0B)));
        let e = EnhancedValidity::from_octets([0xFF; 7]);
        assert_eq!(e.format(), EnhancedFormat::Reserved(0xFF));
    }
}
