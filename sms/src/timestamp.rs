//! Service-centre timestamps (TS 23.040 9.2.3.11): seven swapped decimal
//! octets — year, month, day, hour, minute, second, time zone.
//!
//! The time zone counts quarter hours from UTC; bit 3 of its octet (the
//! high bit of the tens digit, which never exceeds 7) is the sign.

use core::fmt;

use crate::Error;
use crate::semi_octet::{decode_decimal, encode_decimal};

/// Octets in a TP-SCTS, TP-DT or absolute TP-VP.
pub const TIMESTAMP_LEN: usize = 7;

const TZ_SIGN: u8 = 0x08;
const TZ_TENS_MASK: u8 = 0x07;
/// Largest time-zone offset the encoding holds: tens digit 7, units 9.
const MAX_QUARTERS: i8 = 79;
const MINUTES_PER_QUARTER: i16 = 15;

/// A TP-SCTS / TP-DT value as the service centre sent it.
///
/// Decoding does not range-check the date (a service centre with a broken
/// clock still delivers messages worth reading); [`Timestamp::new`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Timestamp {
    year: u8,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
    /// The time-zone octet as sent. Kept raw because service centres in
    /// the wild send a "negative zero" (0x08) that must survive re-encoding.
    zone: u8,
}

impl Timestamp {
    /// Builds a timestamp, checking every field. `year` is the two-digit
    /// year (the PDU has no century); `utc_offset_quarters` is the time zone
    /// in quarter hours, −79 to 79.
    pub fn new(
        year: u8,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        utc_offset_quarters: i8,
    ) -> Result<Self, Error> {
        let checks: [(&'static str, u8, u8, u8); 6] = [
            ("year", year, 0, 99),
            ("month", month, 1, 12),
            ("day", day, 1, 31),
            ("hour", hour, 0, 23),
            ("minute", minute, 0, 59),
            ("second", second, 0, 59),
        ];
        for (field, value, min, max) in checks {
            if !(min..=max).contains(&value) {
                return Err(Error::InvalidTimestamp {
                    field,
                    value: i16::from(value),
                });
            }
        }
        if !(-MAX_QUARTERS..=MAX_QUARTERS).contains(&utc_offset_quarters) {
            return Err(Error::InvalidTimestamp {
                field: "time zone",
                value: i16::from(utc_offset_quarters),
            });
        }
        Ok(Timestamp {
            year,
            month,
            day,
            hour,
            minute,
            second,
            zone: encode_zone(utc_offset_quarters),
        })
    }

    /// Two-digit year, 0–99.
    pub const fn year(&self) -> u8 {
        self.year
    }
    /// Month as sent (1–12 when the service centre is sane).
    pub const fn month(&self) -> u8 {
        self.month
    }
    /// Day of month.
    pub const fn day(&self) -> u8 {
        self.day
    }
    /// Hour.
    pub const fn hour(&self) -> u8 {
        self.hour
    }
    /// Minute.
    pub const fn minute(&self) -> u8 {
        self.minute
    }
    /// Second.
    pub const fn second(&self) -> u8 {
        self.second
    }
    /// Offset from UTC in quarter hours.
    pub const fn utc_offset_quarters(&self) -> i8 {
        // Both digits were checked on construction: at most 7 and 9.
        let magnitude = ((self.zone & TZ_TENS_MASK) * 10 + (self.zone >> 4)) as i8;
        if self.zone & TZ_SIGN != 0 {
            -magnitude
        } else {
            magnitude
        }
    }
    /// Offset from UTC in minutes.
    pub const fn utc_offset_minutes(&self) -> i16 {
        self.utc_offset_quarters() as i16 * MINUTES_PER_QUARTER
    }

    pub(crate) fn decode(octets: &[u8; TIMESTAMP_LEN], field: &'static str) -> Result<Self, Error> {
        let [year, month, day, hour, minute, second, tz] = *octets;
        let tz_units = tz >> 4;
        if tz_units > 9 {
            return Err(Error::InvalidSemiOctet {
                field,
                value: tz_units,
            });
        }
        Ok(Timestamp {
            year: decode_decimal(year, field)?,
            month: decode_decimal(month, field)?,
            day: decode_decimal(day, field)?,
            hour: decode_decimal(hour, field)?,
            minute: decode_decimal(minute, field)?,
            second: decode_decimal(second, field)?,
            zone: tz,
        })
    }

    pub(crate) fn encode(&self) -> [u8; TIMESTAMP_LEN] {
        [
            encode_decimal(self.year),
            encode_decimal(self.month),
            encode_decimal(self.day),
            encode_decimal(self.hour),
            encode_decimal(self.minute),
            encode_decimal(self.second),
            self.zone,
        ]
    }
}

/// The time-zone octet for an offset already checked to be within ±79.
const fn encode_zone(quarters: i8) -> u8 {
    let magnitude = quarters.unsigned_abs();
    let sign = if quarters < 0 { TZ_SIGN } else { 0 };
    ((magnitude % 10) << 4) | (magnitude / 10) | sign
}

impl fmt::Display for Timestamp {
    /// RFC 3339, assuming the 21st century: the PDU carries only two digits
    /// of year, and SMS did not exist in 1900–1990.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let offset = self.utc_offset_minutes();
        let sign = if offset < 0 { '-' } else { '+' };
        let offset = offset.unsigned_abs();
        write!(
            f,
            "20{:02}-{:02}-{:02}T{:02}:{:02}:{:02}{}{:02}:{:02}",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            sign,
            offset / 60,
            offset % 60
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_positive_and_negative_zones() {
        // 99/03/29 15:16:59 +02:00, from the well-known "hellohello" DELIVER.
        let t = Timestamp::decode(&[0x99, 0x30, 0x92, 0x51, 0x61, 0x95, 0x80], "scts").unwrap();
        assert_eq!(t.to_string(), "2099-03-29T15:16:59+02:00");
        assert_eq!(t.encode(), [0x99, 0x30, 0x92, 0x51, 0x61, 0x95, 0x80]);
        // −4 quarters: tens digit 0 with the sign bit, units 4.
        let t = Timestamp::new(24, 1, 2, 3, 4, 5, -4).unwrap();
        assert_eq!(t.encode()[6], 0x48);
        assert_eq!(t.to_string(), "2024-01-02T03:04:05-01:00");
        let back = Timestamp::decode(&t.encode(), "scts").unwrap();
        assert_eq!(back, t);
        assert_eq!(back.utc_offset_quarters(), -4);
        // Negative zero, as some service centres send it, survives.
        let t = Timestamp::decode(&[0x20, 0x80, 0x62, 0x91, 0x73, 0x14, 0x08], "scts").unwrap();
        assert_eq!(t.utc_offset_minutes(), 0);
        assert_eq!(t.encode()[6], 0x08);
        // India, +05:30 = 22 quarters.
        let t = Timestamp::new(10, 2, 8, 9, 21, 0, 22).unwrap();
        assert_eq!(t.encode()[6], 0x22);
        assert_eq!(t.to_string(), "2010-02-08T09:21:00+05:30");
    }

    #[test]
    fn bad_digits_and_ranges() {
        assert_eq!(
            Timestamp::decode(&[0x99, 0x3A, 0, 0, 0, 0, 0], "scts"),
            Err(Error::InvalidSemiOctet {
                field: "scts",
                value: 0xA
            })
        );
        assert!(Timestamp::decode(&[0, 0, 0, 0, 0, 0, 0xA0], "scts").is_err());
        assert_eq!(
            Timestamp::new(24, 13, 1, 0, 0, 0, 0),
            Err(Error::InvalidTimestamp {
                field: "month",
                value: 13
            })
        );
        assert!(Timestamp::new(24, 1, 1, 0, 0, 0, 80).is_err());
    }
}
