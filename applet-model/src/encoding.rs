//! The on-card encodings of identities (TS 31.102 / TS 51.011 / ITU-T E.118), shared by the card
//! model, the host that reads real cards and the provisioning code that writes them.
//!
//! All encoders write into caller buffers and report bad input as an [`EncodingError`].

/// Why a value cannot be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodingError {
    /// A character that is not a decimal digit.
    NotADigit,
    /// Too few or too many digits for the field.
    BadLength,
    /// A 19- or 20-digit ICCID whose last digit is not its Luhn check digit.
    BadLuhn,
    /// Bytes that do not decode (e.g. a length octet larger than the field).
    Malformed,
}

impl core::fmt::Display for EncodingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            EncodingError::NotADigit => "must contain decimal digits only",
            EncodingError::BadLength => "has the wrong number of digits",
            EncodingError::BadLuhn => "fails its Luhn check digit",
            EncodingError::Malformed => "is malformed",
        })
    }
}

/// A short decimal string, decoded without allocation (at most 20 digits for ICCID/MSISDN).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digits {
    buf: [u8; 24],
    len: usize,
}

impl Digits {
    const fn empty() -> Self {
        Digits {
            buf: [0; 24],
            len: 0,
        }
    }

    fn push(&mut self, d: u8) -> Result<(), EncodingError> {
        let slot = self.buf.get_mut(self.len).ok_or(EncodingError::BadLength)?;
        *slot = b'0' + d;
        self.len += 1;
        Ok(())
    }

    /// The digits as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever pushed.
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl core::fmt::Debug for Digits {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn digit(c: u8) -> Result<u8, EncodingError> {
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        _ => Err(EncodingError::NotADigit),
    }
}

/// The Luhn (mod 10) check digit for `digits`, as used by ICCIDs (E.118).
pub fn luhn_digit(digits: &str) -> Result<u8, EncodingError> {
    let mut sum = 0u32;
    for (i, c) in digits.bytes().rev().enumerate() {
        let mut d = digit(c)? as u32;
        if i % 2 == 0 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    Ok(((10 - sum % 10) % 10) as u8)
}

/// Writes digit pairs low nibble first ("swapped BCD"), padding with F.
fn swap_bcd(digits: &[u8], out: &mut [u8]) {
    for (i, byte) in out.iter_mut().enumerate() {
        let lo = digits.get(2 * i).copied().unwrap_or(0xF);
        let hi = digits.get(2 * i + 1).copied().unwrap_or(0xF);
        *byte = (hi << 4) | lo;
    }
}

/// Reads swapped BCD until the first F nibble.
fn unswap_bcd(bytes: &[u8], out: &mut Digits) -> Result<(), EncodingError> {
    for b in bytes {
        for nibble in [b & 0x0F, b >> 4] {
            match nibble {
                0xF => return Ok(()),
                0..=9 => out.push(nibble)?,
                _ => return Err(EncodingError::Malformed),
            }
        }
    }
    Ok(())
}

/// EF_ICCID content (10 bytes). An 18-digit ICCID gets its Luhn digit appended; a 19- or
/// 20-digit one must already carry a correct one.
pub fn encode_iccid(iccid: &str) -> Result<[u8; 10], EncodingError> {
    encode_iccid_checked(iccid, true)
}

/// As [`encode_iccid`], with the check of a 19- or 20-digit ICCID's last digit optional: some
/// test cards carry an ICCID whose last digit is not its Luhn digit, and a profile that copies
/// such a card must be able to say so.
pub fn encode_iccid_checked(iccid: &str, luhn: bool) -> Result<[u8; 10], EncodingError> {
    let mut digits = [0u8; 20];
    let n = iccid.len();
    if !(18..=20).contains(&n) {
        return Err(EncodingError::BadLength);
    }
    for (slot, c) in digits.iter_mut().zip(iccid.bytes()) {
        *slot = digit(c)?;
    }
    let total = if n == 18 {
        digits[18] = luhn_digit(iccid)?;
        19
    } else {
        let check = luhn_digit(&iccid[..n - 1])?;
        if luhn && check != digits[n - 1] {
            return Err(EncodingError::BadLuhn);
        }
        n
    };
    let mut out = [0xFF; 10];
    swap_bcd(&digits[..total], &mut out);
    Ok(out)
}

/// The ICCID as digits, from EF_ICCID content.
pub fn decode_iccid(bytes: &[u8]) -> Result<Digits, EncodingError> {
    let mut d = Digits::empty();
    unswap_bcd(bytes, &mut d)?;
    Ok(d)
}

/// EF_IMSI content (9 bytes): a length byte, then the parity nibble and the digits, swapped.
pub fn encode_imsi(imsi: &str) -> Result<[u8; 9], EncodingError> {
    let n = imsi.len();
    if !(6..=15).contains(&n) {
        return Err(EncodingError::BadLength);
    }
    // The first nibble is 1 (IMSI) with bit 4 set when the digit count is odd.
    let mut nibbles = [0xFu8; 16];
    nibbles[0] = if n % 2 == 1 { 0x9 } else { 0x1 };
    for (slot, c) in nibbles[1..].iter_mut().zip(imsi.bytes()) {
        *slot = digit(c)?;
    }
    let mut out = [0xFF; 9];
    out[0] = (n / 2 + 1) as u8;
    swap_bcd(&nibbles[..n + 1], &mut out[1..]);
    Ok(out)
}

/// The IMSI as digits, from EF_IMSI content.
pub fn decode_imsi(bytes: &[u8]) -> Result<Digits, EncodingError> {
    let (&len, rest) = bytes.split_first().ok_or(EncodingError::Malformed)?;
    let body = rest.get(..len as usize).ok_or(EncodingError::Malformed)?;
    let (&first, tail) = body.split_first().ok_or(EncodingError::Malformed)?;
    let mut d = Digits::empty();
    let lead = first >> 4;
    if lead > 9 {
        return Err(EncodingError::Malformed);
    }
    d.push(lead)?;
    unswap_bcd(tail, &mut d)?;
    Ok(d)
}

/// A PLMN (MCC + 2- or 3-digit MNC) in the 3-byte TS 24.008 layout: MCC 001 MNC 01 → 00 F1 10.
pub fn encode_plmn(mcc: &str, mnc: &str) -> Result<[u8; 3], EncodingError> {
    if mcc.len() != 3 || !(2..=3).contains(&mnc.len()) {
        return Err(EncodingError::BadLength);
    }
    let m: [u8; 3] = [
        digit(mcc.as_bytes()[0])?,
        digit(mcc.as_bytes()[1])?,
        digit(mcc.as_bytes()[2])?,
    ];
    let n1 = digit(mnc.as_bytes()[0])?;
    let n2 = digit(mnc.as_bytes()[1])?;
    let n3 = match mnc.as_bytes().get(2) {
        Some(&c) => digit(c)?,
        None => 0xF,
    };
    Ok([(m[1] << 4) | m[0], (n3 << 4) | m[2], (n2 << 4) | n1])
}

/// A dialling number's BCD digits (TS 31.102 EF_ADN/EF_MSISDN layout), returning the byte
/// count used and the TON/NPI byte (0x91 international for a leading '+', else 0x81).
pub fn encode_dialling_number(
    number: &str,
    out: &mut [u8; 10],
) -> Result<(usize, u8), EncodingError> {
    let (ton_npi, digits) = match number.strip_prefix('+') {
        Some(rest) => (0x91, rest),
        None => (0x81, number),
    };
    if digits.is_empty() || digits.len() > 20 {
        return Err(EncodingError::BadLength);
    }
    let mut nibbles = [0u8; 20];
    for (slot, c) in nibbles.iter_mut().zip(digits.bytes()) {
        *slot = digit(c)?;
    }
    *out = [0xFF; 10];
    swap_bcd(&nibbles[..digits.len()], out);
    Ok((digits.len().div_ceil(2), ton_npi))
}

/// A dialling number from its BCD bytes and TON/NPI byte; international numbers get a '+'
/// (written by the caller: the returned flag says whether one is due).
pub fn decode_dialling_number(bcd: &[u8], ton_npi: u8) -> Result<(bool, Digits), EncodingError> {
    let mut d = Digits::empty();
    unswap_bcd(bcd, &mut d)?;
    Ok((ton_npi & 0x70 == 0x10, d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_encodings() {
        assert_eq!(
            encode_imsi("001010000000001").unwrap(),
            [0x08, 0x09, 0x10, 0x10, 0x00, 0x00, 0x00, 0x00, 0x10]
        );
        assert_eq!(
            encode_iccid("8988211000000530108").unwrap(),
            [0x98, 0x88, 0x12, 0x01, 0x00, 0x00, 0x50, 0x03, 0x01, 0xF8]
        );
        assert_eq!(encode_plmn("001", "01").unwrap(), [0x00, 0xF1, 0x10]);
        assert_eq!(encode_plmn("310", "260").unwrap(), [0x13, 0x00, 0x62]);
    }

    #[test]
    fn iccid_luhn() {
        // 18 digits get the check digit: the 19-digit reference ICCID ends in its Luhn digit.
        let enc = encode_iccid("898821100000053010").unwrap();
        assert_eq!(decode_iccid(&enc).unwrap().as_str(), "8988211000000530108");
        assert_eq!(
            encode_iccid("8988211000000530107"),
            Err(EncodingError::BadLuhn)
        );
        assert_eq!(
            encode_iccid("89882110000005301"),
            Err(EncodingError::BadLength)
        );
        assert_eq!(
            encode_iccid("89882110000005301x"),
            Err(EncodingError::NotADigit)
        );
    }

    #[test]
    fn imsi_round_trips_odd_and_even() {
        for imsi in ["001010000000001", "26201123456789", "123456"] {
            assert_eq!(
                decode_imsi(&encode_imsi(imsi).unwrap()).unwrap().as_str(),
                imsi
            );
        }
        assert_eq!(decode_imsi(&[0x20, 0x09]), Err(EncodingError::Malformed));
    }

    #[test]
    fn dialling_numbers() {
        let mut bcd = [0; 10];
        let (n, ton) = encode_dialling_number("+4915123", &mut bcd).unwrap();
        assert_eq!((n, ton), (4, 0x91));
        assert_eq!(&bcd[..4], &[0x94, 0x51, 0x21, 0xF3]);
        let (intl, d) = decode_dialling_number(&bcd[..n], ton).unwrap();
        assert!(intl);
        assert_eq!(d.as_str(), "4915123");
        assert!(encode_dialling_number("+49abc", &mut bcd).is_err());
    }
}
