//! Resource quantities (`100m`, `1Gi`, `1e3`, `0.5`), parsed exactly.
//!
//! Requests and limits are compared, summed by the scheduler and printed back, so a
//! quantity keeps an exact decimal mantissa with decimal and binary exponents instead
//! of a float: `1Gi` and `1073741824` compare equal, `1000m` prints as `1`.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Significant decimal digits kept; more are rounded up, as they cannot matter at
/// the milli scale upstream rounds resources to.
const MAX_DIGITS: usize = 30;

/// Why a string is not a quantity. The messages are upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string does not have the shape `<number><suffix>`.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Format,
    /// The numeric part has the right characters but is not a number (e.g. `1.2.3`).
    #[error("unable to parse quantity's numeric value")]
    Numeric,
    /// The suffix is not one of the SI, binary or exponent suffixes.
    #[error("unable to parse quantity's suffix")]
    Suffix,
}

/// How a quantity prints: the family of its suffix, kept from parsing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `m`, `k`, `M`, ... or no suffix.
    DecimalSI,
    /// `Ki`, `Mi`, `Gi`, ...
    BinarySI,
    /// `e3`, `E-2`.
    DecimalExponent,
}

/// An exact quantity: `(-1)^negative × mantissa × 10^exp10 × 2^exp2`.
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    exp2: u32,
    format: Format,
}

impl Quantity {
    /// Parses upstream's quantity syntax.
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        s.parse()
    }

    /// A whole number in the decimal format.
    pub fn from_i64(n: i64) -> Quantity {
        Quantity {
            negative: n < 0,
            mantissa: u128::from(n.unsigned_abs()),
            exp10: 0,
            exp2: 0,
            format: Format::DecimalSI,
        }
    }

    /// The suffix family the quantity was written in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// Whether the quantity is exactly zero.
    pub fn is_zero(&self) -> bool {
        self.mantissa == 0
    }

    /// Whether the quantity is below zero.
    pub fn is_negative(&self) -> bool {
        self.negative && self.mantissa != 0
    }

    /// The value in units, rounded up (away from zero) to an integer; saturates at the
    /// `i64` range. `1500m` → 2, `1Ki` → 1024.
    pub fn value(&self) -> i64 {
        self.scaled(0)
    }

    /// The value in thousandths, rounded up (away from zero); saturates at the `i64`
    /// range. `100m` → 100, `1` → 1000, `1n` → 1.
    pub fn milli_value(&self) -> i64 {
        self.scaled(3)
    }

    /// The value × 10^`shift`, rounded away from zero, saturating.
    fn scaled(&self, shift: i32) -> i64 {
        let magnitude = self.integer_magnitude(shift).unwrap_or(u128::MAX);
        let clamped = i64::try_from(magnitude).unwrap_or(i64::MAX);
        if self.negative { -clamped } else { clamped }
    }

    /// `|value| × 10^shift` rounded up to an integer, or `None` on overflow.
    fn integer_magnitude(&self, shift: i32) -> Option<u128> {
        let base = self.mantissa.checked_mul(1u128.checked_shl(self.exp2)?)?;
        let e = self.exp10 + shift;
        if e >= 0 {
            base.checked_mul(pow10(e)?)
        } else {
            match pow10(-e) {
                Some(d) => Some(base.div_ceil(d)),
                None => Some(u128::from(base != 0)),
            }
        }
    }

    /// `(mantissa', exp10')` with the binary exponent folded into the mantissa, or
    /// `None` if that overflows.
    fn decimal_parts(&self) -> Option<(u128, i32)> {
        let m = self.mantissa.checked_mul(1u128.checked_shl(self.exp2)?)?;
        Some((m, self.exp10))
    }

    /// `|value|` when it is a whole number that fits.
    fn exact_integer(&self) -> Option<u128> {
        let (m, e) = self.decimal_parts()?;
        if e >= 0 {
            m.checked_mul(pow10(e)?)
        } else {
            let d = pow10(-e)?;
            (m % d == 0).then_some(m / d)
        }
    }

    fn approx(&self) -> f64 {
        let v = self.mantissa as f64 * 10f64.powi(self.exp10) * 2f64.powi(self.exp2 as i32);
        if self.negative { -v } else { v }
    }

    fn cmp_magnitude(&self, other: &Quantity) -> Ordering {
        let exact = (|| {
            let (ma, ea) = self.decimal_parts()?;
            let (mb, eb) = other.decimal_parts()?;
            let e = ea.min(eb);
            let a = ma.checked_mul(pow10(ea - e)?)?;
            let b = mb.checked_mul(pow10(eb - e)?)?;
            Some(a.cmp(&b))
        })();
        exact.unwrap_or_else(|| {
            self.approx()
                .abs()
                .partial_cmp(&other.approx().abs())
                .unwrap_or(Ordering::Equal)
        })
    }
}

fn pow10(e: i32) -> Option<u128> {
    10u128.checked_pow(u32::try_from(e).ok()?)
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Quantity {}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Quantity {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.is_negative(), other.is_negative()) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_magnitude(other),
            (true, true) => other.cmp_magnitude(self),
        }
    }
}

impl FromStr for Quantity {
    type Err = QuantityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_len = rest
            .bytes()
            .take_while(|c| c.is_ascii_digit() || *c == b'.')
            .count();
        if num_len == 0 {
            return Err(QuantityError::Format);
        }
        let (number, suffix) = rest.split_at(num_len);
        if !suffix
            .bytes()
            .all(|c| b"eEinumkKMGTP".contains(&c) || c.is_ascii_digit() || c == b'-' || c == b'+')
        {
            return Err(QuantityError::Format);
        }

        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        if frac_part.contains('.') || (int_part.is_empty() && frac_part.is_empty()) {
            return Err(QuantityError::Numeric);
        }

        let (suffix_exp10, exp2, format) = parse_suffix(suffix)?;

        let digits: String = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        let mut exp10 = suffix_exp10
            .checked_sub(i32::try_from(frac_part.len()).map_err(|_| QuantityError::Numeric)?)
            .ok_or(QuantityError::Numeric)?;
        let mut mantissa: u128 = 0;
        let (kept, dropped) = digits.split_at(digits.len().min(MAX_DIGITS));
        for c in kept.bytes() {
            mantissa = mantissa * 10 + u128::from(c - b'0');
        }
        if !dropped.is_empty() {
            exp10 = exp10
                .checked_add(i32::try_from(dropped.len()).map_err(|_| QuantityError::Numeric)?)
                .ok_or(QuantityError::Numeric)?;
            if dropped.bytes().any(|c| c != b'0') {
                mantissa += 1;
            }
        }
        Ok(Quantity {
            negative,
            mantissa,
            exp10,
            exp2,
            format,
        })
    }
}

fn parse_suffix(suffix: &str) -> Result<(i32, u32, Format), QuantityError> {
    let decimal = |e| Ok((e, 0, Format::DecimalSI));
    let binary = |e| Ok((0, e, Format::BinarySI));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(10),
        "Mi" => binary(20),
        "Gi" => binary(30),
        "Ti" => binary(40),
        "Pi" => binary(50),
        "Ei" => binary(60),
        _ => {
            let exp = suffix
                .strip_prefix(['e', 'E'])
                .ok_or(QuantityError::Suffix)?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return Err(QuantityError::Suffix);
            }
            let e: i32 = exp.parse().map_err(|_| QuantityError::Suffix)?;
            Ok((e, 0, Format::DecimalExponent))
        }
    }
}

impl fmt::Display for Quantity {
    /// Upstream's canonical form: the largest suffix of the quantity's family that
    /// keeps an integer mantissa (`1000m` → `1`, `1536Mi` stays, `0.5` → `500m`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.mantissa == 0 {
            return f.write_str("0");
        }
        let sign = if self.negative { "-" } else { "" };
        if self.format == Format::BinarySI
            && let Some(whole) = self.exact_integer()
            && whole >= 1024
        {
            const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
            let mut n = whole;
            let mut i = 0;
            while i < 6 && n % 1024 == 0 {
                n /= 1024;
                i += 1;
            }
            return write!(f, "{sign}{n}{}", SUFFIXES[i]);
        }
        let Some((mut m, mut e)) = self.decimal_parts() else {
            return write!(f, "{}", self.approx());
        };
        if e < -9 {
            // Round up to nano precision, the smallest suffix.
            m = pow10(-9 - e).map_or(1, |d| m.div_ceil(d));
            e = -9;
        }
        while m != 0 && m % 10 == 0 {
            m /= 10;
            e += 1;
        }
        let k = e.div_euclid(3) * 3;
        let mut mantissa = m;
        for _ in 0..(e - k) {
            mantissa *= 10;
        }
        if self.format == Format::DecimalExponent {
            if k == 0 {
                write!(f, "{sign}{mantissa}")
            } else {
                write!(f, "{sign}{mantissa}e{k}")
            }
        } else {
            let suffix = match k {
                -9 => "n",
                -6 => "u",
                -3 => "m",
                0 => "",
                3 => "k",
                6 => "M",
                9 => "G",
                12 => "T",
                15 => "P",
                18 => "E",
                _ => return write!(f, "{sign}{mantissa}e{k}"),
            };
            write!(f, "{sign}{mantissa}{suffix}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn parses_upstream_forms() {
        assert_eq!(q("100m").milli_value(), 100);
        assert_eq!(q("1").milli_value(), 1000);
        assert_eq!(q("0.5").milli_value(), 500);
        assert_eq!(q(".5").milli_value(), 500);
        assert_eq!(q("5.").value(), 5);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1E3").value(), 1000);
        assert_eq!(q("1e-3").milli_value(), 1);
        assert_eq!(q("1Ki").value(), 1024);
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("1.5Gi").value(), 3 << 29);
        assert_eq!(q("2k").value(), 2000);
        assert_eq!(q("1M").value(), 1_000_000);
        assert_eq!(q("-1").value(), -1);
        assert_eq!(q("+1").value(), 1);
        assert_eq!(q("1n").milli_value(), 1, "rounds up");
        assert_eq!(q("1500m").value(), 2, "rounds up");
        assert_eq!(q("8Ei").value(), i64::MAX, "saturates");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "", "abc", "1.2.3", "1Kb", "1 Gi", "--1", "Gi", "1e", "1e+", "1ki", ".",
        ] {
            assert!(bad.parse::<Quantity>().is_err(), "{bad}");
        }
        assert_eq!(
            "x".parse::<Quantity>().unwrap_err().to_string(),
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
        );
    }

    #[test]
    fn compares_numerically() {
        assert_eq!(q("1Gi"), q("1073741824"));
        assert_eq!(q("1000m"), q("1"));
        assert!(q("100m") < q("1"));
        assert!(q("1G") < q("1Gi"));
        assert!(q("-1") < q("0"));
        assert!(q("-2") < q("-1"));
        assert!(q("1e3") > q("999"));
        assert_eq!(q("0"), q("-0"));
    }

    #[test]
    fn prints_canonically() {
        assert_eq!(q("1000m").to_string(), "1");
        assert_eq!(q("0.5").to_string(), "500m");
        assert_eq!(q("1500").to_string(), "1500");
        assert_eq!(q("2000").to_string(), "2k");
        assert_eq!(q("1024Mi").to_string(), "1Gi");
        assert_eq!(q("1536Mi").to_string(), "1536Mi");
        assert_eq!(q("512").to_string(), "512");
        assert_eq!(q("1e3").to_string(), "1e3");
        assert_eq!(q("100m").to_string(), "100m");
        assert_eq!(q("0").to_string(), "0");
        assert_eq!(q("-250m").to_string(), "-250m");
    }
}
