//! Resource quantities (`k8s.io/apimachinery/pkg/api/resource`): the grammar
//!
//! ```text
//! quantity ::= signedNumber suffix
//! number   ::= digits | digits "." digits | digits "." | "." digits
//! suffix   ::= binarySI (Ki Mi Gi Ti Pi Ei) | decimalSI (m "" k M G T P E) | ("e"|"E") signedInt
//! ```
//!
//! [`parse_quantity`] returns the value in thousandths, rounded up to the milli scale as
//! upstream's `SetDefaults_ResourceList` does, so quantities compare with `<`.

/// Why a string is not a quantity. Not retryable: the user must fix the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// Upstream's `ErrFormatWrong`, the message kubectl users know.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )]
    Format,
    /// Upstream's `ErrSuffix`.
    #[error("unable to parse quantity's suffix")]
    Suffix,
}

/// Parses a Kubernetes quantity and returns its value in millis (`"100m"` → 100, `"1Gi"` →
/// 1073741824000), saturating at the `i128` range for absurd exponents.
pub fn parse_quantity(s: &str) -> Result<i128, QuantityError> {
    let (negative, rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let number_len = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let (number, suffix) = rest.split_at(number_len);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
        return Err(QuantityError::Format);
    }
    // value = digits × 10^exp10 × 2^exp2, then × 1000 for millis.
    let digits = format!("{whole}{fraction}");
    let mut exp10: i64 = 3 - fraction.len() as i64;
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        _ => {
            let exponent = suffix
                .strip_prefix(['e', 'E'])
                .ok_or_else(|| suffix_error(suffix))?;
            let digits_part = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
            if digits_part.is_empty() || !digits_part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(suffix_error(suffix));
            }
            let magnitude: i64 = digits_part
                .parse()
                .unwrap_or(i64::MAX / 2)
                .min(i64::MAX / 4);
            exp10 += if exponent.starts_with('-') {
                -magnitude
            } else {
                magnitude
            };
        }
    }
    let mut value: i128 = 0;
    let mut dropped_nonzero = false;
    for b in digits.bytes() {
        let digit = i128::from(b - b'0');
        match value.checked_mul(10).and_then(|v| v.checked_add(digit)) {
            Some(v) => value = v,
            None => {
                // Too many significant digits: keep the magnitude, note lost precision.
                exp10 += 1;
                dropped_nonzero |= digit != 0;
            }
        }
    }
    value = value
        .checked_shl(exp2)
        .filter(|v| v >> exp2 == value)
        .unwrap_or(i128::MAX);
    if exp10 >= 0 {
        for _ in 0..exp10.min(64) {
            value = value.saturating_mul(10);
        }
        if exp10 > 64 && value != 0 {
            value = i128::MAX;
        }
    } else {
        let mut remainder_nonzero = dropped_nonzero;
        for _ in 0..(-exp10).min(64) {
            remainder_nonzero |= value % 10 != 0;
            value /= 10;
        }
        if -exp10 > 64 {
            remainder_nonzero |= value != 0;
            value = 0;
        }
        // Round away from zero to the milli scale (RoundUp(-3)).
        if remainder_nonzero {
            value = value.saturating_add(1);
        }
    }
    Ok(if negative { -value } else { value })
}

fn suffix_error(suffix: &str) -> QuantityError {
    // Characters outside upstream's regex are a format error; known letters in a bad order
    // are a suffix error.
    if suffix
        .chars()
        .all(|c| "eEinumkKMGTP+-0123456789".contains(c))
    {
        QuantityError::Suffix
    } else {
        QuantityError::Format
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_grammar() {
        for (s, millis) in [
            ("100m", 100),
            ("1", 1000),
            ("0.5", 500),
            ("1e3", 1_000_000),
            ("1E3", 1_000_000),
            ("1k", 1_000_000),
            ("1Ki", 1_024_000),
            ("1Gi", 1_073_741_824_000),
            ("1.5Gi", 1_610_612_736_000),
            ("+2", 2000),
            ("-1", -1000),
            (".5", 500),
            ("5.", 5000),
            ("0.0001", 1),
            ("1e-3", 1),
            ("1M", 1_000_000_000),
            ("1Ei", 1_152_921_504_606_846_976_000),
        ] {
            assert_eq!(parse_quantity(s), Ok(millis), "{s}");
        }
        assert!(parse_quantity("1e400").is_ok_and(|v| v == i128::MAX));
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "", "abc", ".", "1..2", "1 Gi", "1Gb", "--1", "1e", "1ee3", "Gi",
        ] {
            assert!(parse_quantity(s).is_err(), "{s}");
        }
        assert_eq!(parse_quantity("1x"), Err(QuantityError::Format));
        assert_eq!(parse_quantity("1mi"), Err(QuantityError::Suffix));
    }
}
