//! Exact decimals: unscaled integers and decimal strings into BSON Decimal128 (IEEE 754-2008
//! decimal128, binary integer decimal encoding), never rounding.

use bson::Decimal128;

/// Largest coefficient digits of a Decimal128.
const MAX_DIGITS: usize = 34;
/// Smallest and largest exponents of a Decimal128.
const EXP_MIN: i64 = -6176;
const EXP_MAX: i64 = 6111;
const EXP_BIAS: i64 = 6176;
/// Magnitudes longer than this (about 4900 decimal digits) are refused up front.
const MAX_MAGNITUDE_BYTES: usize = 2048;

/// A decimal that Decimal128 cannot hold exactly, or that is not a decimal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    /// More than 34 significant digits (after dropping trailing zeros).
    #[error("{digits} significant digits do not fit Decimal128 (34 at most) without rounding")]
    TooManyDigits {
        /// The number of significant digits.
        digits: usize,
    },
    /// The exponent is outside Decimal128's range.
    #[error("exponent {exponent} is outside Decimal128's range [-6176, 6111]")]
    ExponentOutOfRange {
        /// The exponent (`-scale`).
        exponent: i64,
    },
    /// The unscaled value is far too large.
    #[error("unscaled value of {bytes} bytes is too large for Decimal128")]
    TooLarge {
        /// Its length in bytes.
        bytes: usize,
    },
    /// Text that is not a decimal number.
    #[error("{0:?} is not a decimal number")]
    NotANumber(String),
}

/// Converts an unscaled big-endian two's-complement integer and a scale (value =
/// unscaled × 10^-scale, as in Kafka Connect's `Decimal` and Debezium's
/// `VariableScaleDecimal`) into a Decimal128, exactly.
///
/// ```
/// use sync_service::types::decimal128_from_unscaled;
///
/// // -123.45: unscaled -12345 = 0xCFC7, scale 2
/// assert_eq!(decimal128_from_unscaled(&[0xCF, 0xC7], 2).unwrap().to_string(), "-123.45");
/// // 35 significant digits do not fit
/// let big = 10u128.pow(34) + 1;
/// assert!(decimal128_from_unscaled(&big.to_be_bytes(), 0).is_err());
/// ```
pub fn decimal128_from_unscaled(bytes: &[u8], scale: i64) -> Result<Decimal128, DecimalError> {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut magnitude = bytes.to_vec();
    if negative {
        // two's complement negation: invert and add one
        for b in magnitude.iter_mut() {
            *b = !*b;
        }
        for b in magnitude.iter_mut().rev() {
            let (v, carry) = b.overflowing_add(1);
            *b = v;
            if !carry {
                break;
            }
        }
    }
    let start = magnitude
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(magnitude.len());
    let magnitude = &magnitude[start..];
    if magnitude.len() > MAX_MAGNITUDE_BYTES {
        return Err(DecimalError::TooLarge {
            bytes: magnitude.len(),
        });
    }
    let digits = to_decimal_digits(magnitude);
    encode(negative, digits, scale.checked_neg().unwrap_or(i64::MAX))
}

/// Parses decimal text (`-12.50`, `1E+3`, `NaN`, `Infinity`) into a Decimal128 exactly, as
/// for `decimal.handling.mode=string`.
///
/// ```
/// use sync_service::types::decimal128_from_str;
///
/// assert_eq!(decimal128_from_str("-0.000123").unwrap().to_string(), "-0.000123");
/// assert_eq!(decimal128_from_str("12345678901234567890.123456789012345").unwrap_err().to_string(),
///     "35 significant digits do not fit Decimal128 (34 at most) without rounding");
/// assert!(decimal128_from_str("12abc").is_err());
/// ```
pub fn decimal128_from_str(text: &str) -> Result<Decimal128, DecimalError> {
    let t = text.trim();
    match t {
        "NaN" | "nan" => return special(t),
        "Infinity" | "+Infinity" | "-Infinity" | "infinity" | "-infinity" => return special(t),
        _ => {}
    }
    let bad = || DecimalError::NotANumber(text.chars().take(60).collect());
    let (negative, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().map_err(|_| bad())?),
        None => (rest, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || !int_part
            .bytes()
            .chain(frac_part.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let mut digits: String = int_part.chars().chain(frac_part.chars()).collect();
    let trimmed = digits.trim_start_matches('0').len();
    digits.drain(..digits.len() - trimmed);
    if digits.is_empty() {
        digits.push('0');
    }
    let frac_len = i64::try_from(frac_part.len()).map_err(|_| bad())?;
    encode(negative, digits, exp.checked_sub(frac_len).ok_or_else(bad)?)
}

fn special(t: &str) -> Result<Decimal128, DecimalError> {
    let normalized = match t {
        "NaN" | "nan" => "NaN",
        "-Infinity" | "-infinity" => "-Infinity",
        _ => "Infinity",
    };
    normalized
        .parse::<Decimal128>()
        .map_err(|_| DecimalError::NotANumber(t.to_owned()))
}

/// Decimal digits (no leading zeros, "0" for zero) of a big-endian magnitude.
fn to_decimal_digits(magnitude: &[u8]) -> String {
    // Repeated division by 10^9 over big-endian base-2^32 limbs.
    let mut limbs: Vec<u32> = Vec::with_capacity(magnitude.len() / 4 + 1);
    let pad = (4 - magnitude.len() % 4) % 4;
    let mut padded = vec![0u8; pad];
    padded.extend_from_slice(magnitude);
    for chunk in padded.chunks(4) {
        limbs.push(u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
    }
    let mut groups: Vec<u32> = Vec::new();
    while limbs.iter().any(|l| *l != 0) {
        let mut rem: u64 = 0;
        for l in limbs.iter_mut() {
            let cur = (rem << 32) | u64::from(*l);
            *l = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        groups.push(rem as u32);
        let first = limbs.iter().position(|l| *l != 0).unwrap_or(limbs.len());
        limbs.drain(..first);
    }
    match groups.split_last() {
        None => "0".to_owned(),
        Some((most, rest)) => {
            let mut s = most.to_string();
            for g in rest.iter().rev() {
                s.push_str(&format!("{g:09}"));
            }
            s
        }
    }
}

/// Encodes sign, coefficient digits and exponent as BID Decimal128, exactly or not at all.
fn encode(
    negative: bool,
    mut digits: String,
    mut exponent: i64,
) -> Result<Decimal128, DecimalError> {
    let is_zero = digits.bytes().all(|b| b == b'0');
    if is_zero {
        digits = "0".to_owned();
        exponent = exponent.clamp(EXP_MIN, EXP_MAX);
    }
    // Dropping trailing zeros keeps the value exact.
    while (digits.len() > MAX_DIGITS || exponent < EXP_MIN)
        && digits.len() > 1
        && digits.ends_with('0')
    {
        digits.pop();
        exponent += 1;
    }
    if digits.len() > MAX_DIGITS {
        return Err(DecimalError::TooManyDigits {
            digits: digits.len(),
        });
    }
    // Appending zeros to the coefficient keeps it exact too.
    while exponent > EXP_MAX && digits.len() < MAX_DIGITS {
        digits.push('0');
        exponent -= 1;
    }
    if !(EXP_MIN..=EXP_MAX).contains(&exponent) {
        return Err(DecimalError::ExponentOutOfRange { exponent });
    }
    let coefficient: u128 = digits
        .parse()
        .map_err(|_| DecimalError::NotANumber(digits.clone()))?;
    let biased = u128::try_from(exponent + EXP_BIAS)
        .map_err(|_| DecimalError::ExponentOutOfRange { exponent })?;
    let bits = (u128::from(negative) << 127) | (biased << 113) | coefficient;
    Ok(Decimal128::from_bytes(bits.to_le_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unscaled(v: i128, scale: i64) -> String {
        decimal128_from_unscaled(&v.to_be_bytes(), scale)
            .unwrap()
            .to_string()
    }

    #[test]
    fn converts_unscaled_values() {
        assert_eq!(unscaled(12345, 2), "123.45");
        assert_eq!(unscaled(-12345, 2), "-123.45");
        assert_eq!(unscaled(0, 2), "0.00");
        assert_eq!(unscaled(-1, 0), "-1");
        assert_eq!(unscaled(5, -3), "5E+3");
        assert_eq!(unscaled(1, 20), "1E-20");
        let max = 10i128.pow(34) - 1;
        assert_eq!(unscaled(max, 0), "9999999999999999999999999999999999");
        assert_eq!(unscaled(-max, 4), "-999999999999999999999999999999.9999");
        // 36 digits ending in zeros: exact after dropping them
        assert_eq!(
            unscaled(10i128.pow(35), 5),
            "1000000000000000000000000000000.000"
        );
        assert!(matches!(
            decimal128_from_unscaled(&(10i128.pow(34) + 1).to_be_bytes(), 0),
            Err(DecimalError::TooManyDigits { digits: 35 })
        ));
        assert!(matches!(
            decimal128_from_unscaled(&[1], 7000),
            Err(DecimalError::ExponentOutOfRange { .. })
        ));
        assert!(decimal128_from_unscaled(&[], 0).is_ok());
    }

    #[test]
    fn digits_of_large_magnitudes() {
        let v: u128 = 123_456_789_012_345_678_901_234_567_890_123;
        assert_eq!(to_decimal_digits(&v.to_be_bytes()), v.to_string());
        assert_eq!(to_decimal_digits(&[]), "0");
        assert_eq!(to_decimal_digits(&[1, 0, 0, 0, 0]), "4294967296");
    }

    #[test]
    fn parses_decimal_text() {
        assert_eq!(decimal128_from_str("1.50").unwrap().to_string(), "1.50");
        assert_eq!(decimal128_from_str("-0").unwrap().to_string(), "-0");
        assert_eq!(decimal128_from_str("1e3").unwrap().to_string(), "1E+3");
        assert_eq!(decimal128_from_str(".5").unwrap().to_string(), "0.5");
        assert_eq!(decimal128_from_str("NaN").unwrap().to_string(), "NaN");
        assert_eq!(
            decimal128_from_str("-Infinity").unwrap().to_string(),
            "-Infinity"
        );
        assert!(decimal128_from_str("").is_err());
        assert!(decimal128_from_str("1.2.3").is_err());
    }
}
