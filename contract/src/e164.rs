//! E.164 phone numbers, normalised on parse.
//!
//! Numbers arrive in many shapes (`+1 (415) 555-0100` from a dashboard, `4155550100` from an
//! operator, `0044 20 7946 0958` from a European CSV). Routing is a hash-map read, so every shape
//! must collapse to exactly one key, on the way into the database and on lookup alike. The number
//! is held as its digits in a `u64`: E.164 allows at most 15 digits and a country code never
//! starts with 0, so the value is unambiguous and costs 8 bytes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A phone number in E.164 form (`+` then 2..=15 digits, the first not 0).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164(u64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum E164Error {
    #[error("phone number is empty")]
    Empty,
    #[error("phone number contains a character that is not a digit or a separator")]
    InvalidCharacter,
    #[error("phone number has {0} digits; E.164 allows 2 to 15 after the country code's leading digit")]
    BadLength(usize),
    #[error("country code cannot start with 0")]
    LeadingZero,
    #[error("national number cannot be read without a default country calling code")]
    NoDefaultCountry,
}

/// Characters people and systems put between digits; they carry no meaning.
fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '.' | '(' | ')' | '/' | '\u{a0}' | '\t')
}

impl E164 {
    /// Parses a number that must already be international (`+…` or `00…`).
    pub fn parse(input: &str) -> Result<Self, E164Error> {
        Self::parse_with_default(input, None)
    }

    /// Parses a number, reading a national form (no `+`, no `00`) with `default_cc`
    /// (the country calling code, e.g. 1 for NANP, 44 for the UK).
    ///
    /// National rules: NANP (`1`) takes 10 digits, or 11 starting with the trunk prefix `1`;
    /// every other country drops one leading trunk `0`. This is deliberately not
    /// libphonenumber: it does not validate number plans, it only makes the same number always
    /// produce the same key.
    pub fn parse_with_default(input: &str, default_cc: Option<u16>) -> Result<Self, E164Error> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(E164Error::Empty);
        }
        let (international, rest) = match trimmed.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, trimmed),
        };
        let mut digits = String::with_capacity(16);
        for c in rest.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
            } else if !is_separator(c) {
                return Err(E164Error::InvalidCharacter);
            }
        }
        if digits.is_empty() {
            return Err(E164Error::Empty);
        }
        let full = if international {
            digits
        } else if let Some(intl) = digits.strip_prefix("00") {
            intl.to_owned()
        } else {
            let cc = default_cc.ok_or(E164Error::NoDefaultCountry)?;
            national_to_international(cc, &digits)
        };
        Self::from_digits(&full)
    }

    fn from_digits(digits: &str) -> Result<Self, E164Error> {
        if !(2..=15).contains(&digits.len()) {
            return Err(E164Error::BadLength(digits.len()));
        }
        if digits.starts_with('0') {
            return Err(E164Error::LeadingZero);
        }
        digits.parse::<u64>().map(E164).map_err(|_| E164Error::InvalidCharacter)
    }

    /// The number as its digits, for compact keys.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

fn national_to_international(cc: u16, digits: &str) -> String {
    if cc == 1 {
        // NANP: an 11-digit national number carries the trunk prefix 1 already.
        if digits.len() == 11 && digits.starts_with('1') {
            return digits.to_owned();
        }
        return format!("1{digits}");
    }
    let national = digits.strip_prefix('0').unwrap_or(digits);
    format!("{cc}{national}")
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.0)
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E164(+{})", self.0)
    }
}

impl FromStr for E164 {
    type Err = E164Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for E164 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for E164 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms_collapse_to_one_key() {
        let want = E164::parse("+14155550100").unwrap();
        for shape in ["+1 (415) 555-0100", "+1.415.555.0100", " +14155550100 ", "001 415 555 0100"] {
            assert_eq!(E164::parse(shape).unwrap(), want, "{shape}");
        }
        for national in ["(415) 555-0100", "4155550100", "1-415-555-0100"] {
            assert_eq!(E164::parse_with_default(national, Some(1)).unwrap(), want, "{national}");
        }
        assert_eq!(want.to_string(), "+14155550100");
    }

    #[test]
    fn national_numbers_outside_nanp_drop_the_trunk_zero() {
        assert_eq!(E164::parse_with_default("020 7946 0958", Some(44)).unwrap().to_string(), "+442079460958");
    }

    #[test]
    fn rejects_what_is_not_a_number() {
        assert_eq!(E164::parse(""), Err(E164Error::Empty));
        assert_eq!(E164::parse("+"), Err(E164Error::Empty));
        assert_eq!(E164::parse("anonymous"), Err(E164Error::InvalidCharacter));
        assert_eq!(E164::parse("sip:+14155550100@x"), Err(E164Error::InvalidCharacter));
        assert_eq!(E164::parse("+0123456"), Err(E164Error::LeadingZero));
        assert_eq!(E164::parse("+1234567890123456"), Err(E164Error::BadLength(16)));
        assert_eq!(E164::parse("4155550100"), Err(E164Error::NoDefaultCountry));
        assert_eq!(E164::parse("+1٤155550100"), Err(E164Error::InvalidCharacter));
    }

    #[test]
    fn serde_round_trip_normalises() {
        let n: E164 = serde_json::from_str("\"+1 415 555 0100\"").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"+14155550100\"");
    }
}
