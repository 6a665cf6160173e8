//! RFC 8785 JSON Canonicalization Scheme (JCS): the exact bytes of every audit line.
//!
//! A small encoder over `serde_json::Value` instead of a crate: `serde_jcs` 0.1 sorts object keys
//! by their escaped UTF-8 bytes (RFC 8785 §3.2.3 sorts by UTF-16 code units) and panics on some
//! numbers. Rules implemented here:
//! - objects: members sorted by the UTF-16 code units of their names, no whitespace;
//! - strings: only `"`, `\` and U+0000..U+001F are escaped (`\b \t \n \f \r` short forms, else
//!   `\u00xx` lowercase); everything else is written as raw UTF-8;
//! - numbers: ECMAScript `Number.prototype.toString` of the IEEE-754 double (shortest digits
//!   that round-trip, `-0` → `0`); integers outside ±2^53 are refused (I-JSON), as are NaN/∞.

use std::cmp::Ordering;
use std::fmt::Write as _;

use serde_json::{Map, Number, Value};

/// A value that has no canonical form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error("number {0} is outside the I-JSON range (±2^53) and has no exact canonical form")]
    NumberOutOfRange(String),
    #[error("number {0} is not finite")]
    NotFinite(String),
}

/// Largest integer an IEEE-754 double represents exactly, and so the I-JSON limit.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Append a non-negative integer as its canonical number (refused above [`MAX_SAFE_INTEGER`]).
pub fn write_uint(n: u64, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    if n > MAX_SAFE_INTEGER {
        return Err(CanonicalError::NumberOutOfRange(n.to_string()));
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    Ok(())
}

/// The canonical bytes of `value`.
pub fn to_vec(value: &Value) -> Result<Vec<u8>, CanonicalError> {
    let mut out = Vec::with_capacity(512);
    write_value(value, &mut out)?;
    Ok(out)
}

/// Append the canonical bytes of `value` to `out`.
pub fn write_value(value: &Value, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(number) => write_number(number, out)?,
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(item, out)?;
            }
            out.push(b']');
        }
        Value::Object(map) => write_object(map, |_| true, out)?,
    }
    Ok(())
}

/// Append the canonical bytes of `map` restricted to the members `keep` accepts (used to drop
/// `sig` when computing the signed bytes).
pub fn write_object(
    map: &Map<String, Value>,
    keep: impl Fn(&str) -> bool,
    out: &mut Vec<u8>,
) -> Result<(), CanonicalError> {
    write_members(map, keep, None, out).map(drop)
}

/// Where a member left out by [`write_object_leaving_out`] belongs in the bytes written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberSlot {
    /// Byte offset in the output.
    at: usize,
    /// A member follows the slot (else the slot is just before the closing brace).
    before_member: bool,
    /// The object written has other members.
    non_empty: bool,
}

impl MemberSlot {
    /// The slot at byte `at`, right after a member and before the next one (or the closing
    /// brace): the member goes in as `,"name":value`.
    pub fn after_member(at: usize) -> Self {
        Self {
            at,
            before_member: false,
            non_empty: true,
        }
    }

    /// Append `without` (the canonical bytes of the object without the member) to `out` with the
    /// member `name: value` (already canonical bytes) at its place.
    pub fn write_joined(self, without: &[u8], name: &str, value: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&without[..self.at]);
        if !self.before_member && self.non_empty {
            out.push(b',');
        }
        write_string(name, out);
        out.push(b':');
        out.extend_from_slice(value);
        if self.before_member {
            out.push(b',');
        }
        out.extend_from_slice(&without[self.at..]);
    }
}

/// [`write_object`] without the member `name`, returning where it would go — so a signature
/// over the object without it can be added without encoding the object again.
pub fn write_object_leaving_out(
    map: &Map<String, Value>,
    name: &str,
    out: &mut Vec<u8>,
) -> Result<MemberSlot, CanonicalError> {
    let slot = write_members(map, |key| key != name, Some(name), out)?;
    Ok(slot.expect("a slot is found whenever one is asked for"))
}

/// The members `keep` accepts, sorted, as one object; with `slot_for`, also where a member of
/// that name would go.
fn write_members(
    map: &Map<String, Value>,
    keep: impl Fn(&str) -> bool,
    slot_for: Option<&str>,
    out: &mut Vec<u8>,
) -> Result<Option<MemberSlot>, CanonicalError> {
    let mut members: Vec<(&String, &Value)> = map.iter().filter(|(k, _)| keep(k)).collect();
    members.sort_by(|a, b| utf16_cmp(a.0, b.0));
    out.push(b'{');
    let mut slot = None;
    for (i, (key, value)) in members.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if slot.is_none() && slot_for.is_some_and(|name| utf16_cmp(key, name) == Ordering::Greater)
        {
            slot = Some(MemberSlot {
                at: out.len(),
                before_member: true,
                non_empty: true,
            });
        }
        write_string(key, out);
        out.push(b':');
        write_value(value, out)?;
    }
    if slot.is_none() && slot_for.is_some() {
        slot = Some(MemberSlot {
            at: out.len(),
            before_member: false,
            non_empty: !members.is_empty(),
        });
    }
    out.push(b'}');
    Ok(slot)
}

/// Order of two member names by UTF-16 code units (RFC 8785 §3.2.3).
pub fn utf16_cmp(a: &str, b: &str) -> Ordering {
    if a.is_ascii() && b.is_ascii() {
        return a.as_bytes().cmp(b.as_bytes());
    }
    a.encode_utf16().cmp(b.encode_utf16())
}

/// Append `text` as a canonical JSON string literal.
pub fn write_string(text: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut start = 0;
    for (i, &byte) in bytes.iter().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x09 => b"\\t",
            0x0a => b"\\n",
            0x0c => b"\\f",
            0x0d => b"\\r",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(byte >> 4)]);
            out.push(HEX[usize::from(byte & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

fn write_number(number: &Number, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    if let Some(n) = number.as_u64() {
        return write_uint(n, out);
    }
    if let Some(n) = number.as_i64() {
        if n.unsigned_abs() > MAX_SAFE_INTEGER {
            return Err(CanonicalError::NumberOutOfRange(n.to_string()));
        }
        out.extend_from_slice(n.to_string().as_bytes());
        return Ok(());
    }
    match number.as_f64() {
        Some(f) => write_f64(f, out),
        None => Err(CanonicalError::NotFinite(number.to_string())),
    }
}

/// ECMAScript `Number.prototype.toString(10)` for a finite double (ECMA-262 §6.1.6.1.20).
fn write_f64(value: f64, out: &mut Vec<u8>) -> Result<(), CanonicalError> {
    if !value.is_finite() {
        return Err(CanonicalError::NotFinite(value.to_string()));
    }
    if value == 0.0 {
        out.push(b'0');
        return Ok(());
    }
    if value < 0.0 {
        out.push(b'-');
    }
    // Rust's `{:e}` gives the shortest digits that round-trip (as ECMAScript requires):
    // `d[.ddd]e[-]x`. Split into the digit string s (k digits) and n, the decimal point position.
    let mut sci = String::with_capacity(32);
    write!(sci, "{:e}", value.abs()).expect("writing to a String cannot fail");
    let (mantissa, exponent) = sci.split_once('e').expect("{:e} always has an exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let exponent: i32 = exponent.parse().expect("{:e} exponent is an integer");
    let k = digits.len() as i32;
    let n = exponent + 1;
    let text = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let sign = if n - 1 < 0 { '-' } else { '+' };
        let (first, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        format!("{first}{fraction}e{sign}{}", (n - 1).abs())
    };
    out.extend_from_slice(text.as_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(json: &str) -> String {
        let value: Value = serde_json::from_str(json).unwrap();
        String::from_utf8(to_vec(&value).unwrap()).unwrap()
    }

    /// RFC 8785 §3.2.2 (the "sample input" / "canonical output" pair).
    #[test]
    fn rfc8785_sample() {
        let input = r#"{
          "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
          "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
          "literals": [null, true, false]
        }"#;
        assert_eq!(
            canon(input),
            r#"{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\u000f\nA'B\"\\\\\"/"}"#
        );
    }

    /// RFC 8785 §3.2.3: members sorted by UTF-16 code units, which differs from UTF-8 byte order
    /// for a supplementary-plane name (U+1F600) against one in U+E000..U+FFFF (U+FB33).
    #[test]
    fn rfc8785_sorting() {
        let input = r#"{
          "\u20ac": "Euro Sign",
          "\r": "Carriage Return",
          "\ufb33": "Hebrew Letter Dalet With Dagesh",
          "1": "One",
          "\ud83d\ude00": "Emoji: Grinning Face",
          "\u0080": "Control",
          "\u00f6": "Latin Small Letter O With Diaeresis"
        }"#;
        assert_eq!(
            canon(input),
            "{\"\\r\":\"Carriage Return\",\"1\":\"One\",\"\u{80}\":\"Control\",\
             \"ö\":\"Latin Small Letter O With Diaeresis\",\"€\":\"Euro Sign\",\
             \"😀\":\"Emoji: Grinning Face\",\"\u{fb33}\":\"Hebrew Letter Dalet With Dagesh\"}",
            "UTF-16 order"
        );
    }

    #[test]
    fn string_escaping_follows_json_stringify() {
        assert_eq!(
            canon(r#""\u0000\u0001\b\t\n\u000b\f\r\u001f \u007f\u2028\/\"\\é""#),
            "\"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001f \u{7f}\u{2028}/\\\"\\\\é\""
        );
    }

    #[test]
    fn integers_and_i_json_limits() {
        assert_eq!(
            canon("[0,-0,1,-1,9007199254740991,-9007199254740991]"),
            "[0,0,1,-1,9007199254740991,-9007199254740991]"
        );
        assert_eq!(canon("[1.0,1e2,-0.0,100E-2]"), "[1,100,0,1]");
        for big in [
            "9007199254740992",
            "-9007199254740992",
            "18446744073709551615",
        ] {
            let value: Value = serde_json::from_str(big).unwrap();
            assert!(
                matches!(to_vec(&value), Err(CanonicalError::NumberOutOfRange(_))),
                "{big}"
            );
        }
    }

    /// ECMAScript number formatting vectors (from the JCS reference test data).
    #[test]
    fn es_number_formatting() {
        let cases = [
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (123456789012345680000.0, "123456789012345680000"),
            (0.000001, "0.000001"),
            (0.0000001, "1e-7"),
            (1.5e-7, "1.5e-7"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (-1.2345, "-1.2345"),
            (0.1 + 0.2, "0.30000000000000004"),
            (295147905179352830000.0, "295147905179352830000"),
            (4.5, "4.5"),
        ];
        for (value, expected) in cases {
            let mut out = Vec::new();
            write_f64(value, &mut out).unwrap();
            assert_eq!(String::from_utf8(out).unwrap(), expected, "{value:e}");
        }
    }

    #[test]
    fn nested_objects_and_arrays() {
        assert_eq!(
            canon(r#"{ "b": [ {"z":1, "a":2} ], "a": {} , "c": []}"#),
            r#"{"a":{},"b":[{"a":2,"z":1}],"c":[]}"#
        );
    }

    proptest::proptest! {
        /// Splicing a member into the bytes written without it gives exactly the canonical bytes
        /// of the object with it — wherever it sorts, and for an empty object.
        #[test]
        fn a_spliced_member_lands_where_the_encoder_puts_it(
            keys in proptest::collection::btree_set("(sig|si|sih|sigz|s|[a-z]{0,4}|é|\\u{1F600}|\"|[A-Z])", 0..8),
            name in "(sig|a|zz|é)",
            value in "[ -~é]{0,6}",
        ) {
            let mut map = Map::new();
            for (i, key) in keys.iter().enumerate() {
                map.insert(key.clone(), Value::from(i as u64));
            }
            let mut without = Vec::new();
            let slot = write_object_leaving_out(&map, &name, &mut without).unwrap();
            let mut encoded_value = Vec::new();
            write_string(&value, &mut encoded_value);
            let mut spliced = Vec::new();
            slot.write_joined(&without, &name, &encoded_value, &mut spliced);
            map.insert(name.clone(), Value::String(value));
            proptest::prop_assert_eq!(
                String::from_utf8(spliced).unwrap(),
                String::from_utf8(to_vec(&Value::Object(map)).unwrap()).unwrap()
            );
        }
    }
}
