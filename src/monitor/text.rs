//! Helpers formatters and sources share: making untrusted bytes safe for a terminal, values as
//! `key=value` text, and JSON strings.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};

/// `bytes` as text safe to print on a terminal: control characters (ESC included, so a hostile
/// path cannot recolour or rewrite the screen) become `\xNN`/`\u{NN}`, invalid UTF-8 bytes
/// become `\xNN`. Tabs are kept.
pub fn terminal_safe(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            push_char(&mut out, c);
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// [`terminal_safe`] for a `str`.
pub fn terminal_safe_str(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_char(&mut out, c);
    }
    out
}

fn push_char(out: &mut String, c: char) {
    if c == '\t' || !c.is_control() {
        out.push(c);
    } else if (c as u32) < 0x100 {
        let _ = write!(out, "\\x{:02x}", c as u32);
    } else {
        let _ = write!(out, "\\u{{{:x}}}", c as u32);
    }
}

/// A JSON value as `key=value` shows it: simple strings bare, anything else as JSON. (Not yet
/// terminal-safe.)
pub fn value_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) if !s.is_empty() && !s.contains([' ', '"', '=']) => s.clone(),
        other => other.to_string(),
    }
}

/// Append `time` as RFC 3339, UTC, nanoseconds (`2026-11-26T10:00:00.000000000Z`), exactly as
/// chrono's `to_rfc3339_opts(SecondsFormat::Nanos, true)` writes it, without allocating.
pub fn push_rfc3339_nanos(out: &mut Vec<u8>, time: &DateTime<Utc>) {
    let nanos = time.timestamp_subsec_nanos();
    if !(0..=9999).contains(&time.year()) || nanos >= 1_000_000_000 {
        // Years chrono writes with a sign, and leap seconds: rare, let chrono do it.
        out.extend_from_slice(time.to_rfc3339_opts(SecondsFormat::Nanos, true).as_bytes());
        return;
    }
    let mut text = *b"0000-00-00T00:00:00.000000000Z";
    let mut put = |at: usize, width: usize, mut value: u32| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0, 4, time.year() as u32);
    put(5, 2, time.month());
    put(8, 2, time.day());
    put(11, 2, time.hour());
    put(14, 2, time.minute());
    put(17, 2, time.second());
    put(20, 9, nanos);
    out.extend_from_slice(&text);
}

/// Append `value` in decimal, without formatting machinery.
pub fn push_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Append `text` as a JSON string.
pub fn push_json_str(out: &mut Vec<u8>, text: &str) {
    // Writing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn decimal_as_std_writes_it(value: u64) {
            let mut out = Vec::new();
            push_u64(&mut out, value);
            proptest::prop_assert_eq!(String::from_utf8(out).unwrap(), value.to_string());
        }

        #[test]
        fn rfc3339_as_chrono_writes_it(secs in -70_000_000_000i64..300_000_000_000, nanos in 0u32..2_000_000_000) {
            if let Some(time) = DateTime::from_timestamp(secs, nanos) {
                let mut out = Vec::new();
                push_rfc3339_nanos(&mut out, &time);
                proptest::prop_assert_eq!(
                    String::from_utf8(out).unwrap(),
                    time.to_rfc3339_opts(SecondsFormat::Nanos, true)
                );
            }
        }
    }

    #[test]
    fn escapes_controls_and_invalid_utf8() {
        assert_eq!(
            terminal_safe(b"a\x1b[31mb\tc\xffd\xc3\xa9"),
            "a\\x1b[31mb\tc\\xffdé"
        );
        assert_eq!(terminal_safe_str("x\u{9b}y\r"), "x\\x9by\\x0d");
    }
}
