//! A fast, conservative check of one JSON object on one line, for sources whose lines are
//! compact JSON (no whitespace): it hands out the object's top-level members as raw bytes
//! without building anything. "Yes" means the text is certainly JSON that serde_json accepts;
//! "no" means "not certainly" — the caller then asks serde_json, which decides and explains.
//! So it may refuse anything unusual (whitespace, floats, escaped keys, deep nesting,
//! surrogate escapes) and stays simple; a proptest holds it to serde_json.

/// What a member's value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    String,
    Integer,
    Object,
    Array,
    Bool,
    Null,
}

/// One top-level member.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    /// The key, without its quotes (it has no escapes: keys with escapes are refused).
    pub key: &'a [u8],
    pub value_type: Type,
    /// The value's text; for a string, without its quotes and still escaped.
    pub value: &'a [u8],
    /// A string value that contains escapes.
    pub escaped: bool,
}

/// Deeper than this is refused (serde_json's own limit is 128).
const MAX_DEPTH: usize = 32;
/// Longest integer accepted (anything longer is left to serde_json).
const MAX_DIGITS: usize = 19;

/// Call `visit` for each top-level member of the object that is all of `line`; `visit` may
/// refuse one (returns false). True when `line` is certainly a JSON object and every member
/// was accepted.
pub fn object_members<'a>(line: &'a [u8], visit: &mut dyn FnMut(Member<'a>) -> bool) -> bool {
    // Two reductions the compiler vectorises: control bytes (refused anywhere: compact JSON
    // has no whitespace, strings escape them) and non-ASCII (then UTF-8 is checked).
    let (lowest, highest) = line
        .iter()
        .fold((u8::MAX, 0u8), |(lo, hi), b| (lo.min(*b), hi.max(*b)));
    if lowest < 0x20 || (highest >= 0x80 && std::str::from_utf8(line).is_err()) {
        return false;
    }
    let mut at = 0;
    scan_object(line, &mut at, 0, Some(visit)) && at == line.len()
}

/// An object starting at `line[*at]`; on success `*at` is just past it.
fn scan_object<'a>(
    line: &'a [u8],
    at: &mut usize,
    depth: usize,
    mut visit: Option<&mut dyn FnMut(Member<'a>) -> bool>,
) -> bool {
    if depth > MAX_DEPTH || line.get(*at) != Some(&b'{') {
        return false;
    }
    *at += 1;
    if line.get(*at) == Some(&b'}') {
        *at += 1;
        return true;
    }
    loop {
        let Some((key, escaped)) = scan_string(line, at) else {
            return false;
        };
        if escaped || line.get(*at) != Some(&b':') {
            return false;
        }
        *at += 1;
        let start = *at;
        let Some((value_type, escaped)) = scan_value(line, at, depth) else {
            return false;
        };
        if let Some(visit) = visit.as_deref_mut() {
            let value = match value_type {
                Type::String => &line[start + 1..*at - 1],
                _ => &line[start..*at],
            };
            let member = Member {
                key,
                value_type,
                value,
                escaped,
            };
            if !visit(member) {
                return false;
            }
        }
        match line.get(*at) {
            Some(b',') => *at += 1,
            Some(b'}') => {
                *at += 1;
                return true;
            }
            _ => return false,
        }
    }
}

fn scan_value(line: &[u8], at: &mut usize, depth: usize) -> Option<(Type, bool)> {
    match *line.get(*at)? {
        b'"' => scan_string(line, at).map(|(_, escaped)| (Type::String, escaped)),
        b'{' => scan_object(line, at, depth + 1, None).then_some((Type::Object, false)),
        b'[' => scan_array(line, at, depth + 1).then_some((Type::Array, false)),
        b't' => literal(line, at, b"true").then_some((Type::Bool, false)),
        b'f' => literal(line, at, b"false").then_some((Type::Bool, false)),
        b'n' => literal(line, at, b"null").then_some((Type::Null, false)),
        b'-' | b'0'..=b'9' => scan_integer(line, at).then_some((Type::Integer, false)),
        _ => None,
    }
}

fn scan_array(line: &[u8], at: &mut usize, depth: usize) -> bool {
    if depth > MAX_DEPTH {
        return false;
    }
    *at += 1;
    if line.get(*at) == Some(&b']') {
        *at += 1;
        return true;
    }
    loop {
        if scan_value(line, at, depth).is_none() {
            return false;
        }
        match line.get(*at) {
            Some(b',') => *at += 1,
            Some(b']') => {
                *at += 1;
                return true;
            }
            _ => return false,
        }
    }
}

fn literal(line: &[u8], at: &mut usize, word: &[u8]) -> bool {
    if line[*at..].starts_with(word) {
        *at += word.len();
        true
    } else {
        false
    }
}

/// `-?(0|[1-9][0-9]*)`, at most [`MAX_DIGITS`] digits, not followed by a fraction or exponent.
fn scan_integer(line: &[u8], at: &mut usize) -> bool {
    let start = *at;
    if line[*at] == b'-' {
        *at += 1;
    }
    let digits = line[*at..]
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .count();
    if digits == 0 || digits > MAX_DIGITS || (digits > 1 && line[*at] == b'0') {
        *at = start;
        return false;
    }
    *at += digits;
    !matches!(line.get(*at), Some(b'.' | b'e' | b'E'))
}

/// A string starting at the quote at `line[*at]`: its content (still escaped) and whether it
/// has escapes; `*at` just past the closing quote. (Control bytes were refused for the whole
/// line already; UTF-8 was checked for the whole line.)
fn scan_string<'a>(line: &'a [u8], at: &mut usize) -> Option<(&'a [u8], bool)> {
    if line.get(*at) != Some(&b'"') {
        return None;
    }
    let start = *at + 1;
    let mut pos = start;
    let mut escaped = false;
    loop {
        pos += quote_or_backslash(&line[pos..])?;
        if line[pos] == b'"' {
            *at = pos + 1;
            return Some((&line[start..pos], escaped));
        }
        escaped = true;
        match *line.get(pos + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => pos += 2,
            b'u' => {
                let hex = line.get(pos + 2..pos + 6)?;
                let text = std::str::from_utf8(hex).ok()?;
                let unit = u16::from_str_radix(text, 16).ok()?;
                // Surrogates (paired or not) are left to serde_json.
                if !hex.iter().all(u8::is_ascii_hexdigit) || (0xD800..=0xDFFF).contains(&unit) {
                    return None;
                }
                pos += 6;
            }
            _ => return None,
        }
    }
}

/// The first `"` or `\` in `bytes`, eight bytes at a time (strings here are mostly short ids
/// and hashes: cheaper than a vectorised search's set-up per string).
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    while let Some(chunk) = bytes.get(at..at + 8) {
        let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        let quote = word ^ (ONES * u64::from(b'"'));
        let backslash = word ^ (ONES * u64::from(b'\\'));
        // A byte of `quote` or `backslash` is zero where the word has that byte; the lowest
        // flagged byte is exact.
        let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS;
        let found = zero(quote) | zero(backslash);
        if found != 0 {
            return Some(at + (found.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    bytes[at..]
        .iter()
        .position(|b| *b == b'"' || *b == b'\\')
        .map(|p| at + p)
}

/// A non-negative integer member value that fits `u64`.
pub fn as_u64(member: &Member<'_>) -> Option<u64> {
    if member.value_type != Type::Integer {
        return None;
    }
    std::str::from_utf8(member.value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::de::IgnoredAny;

    fn accepted(line: &[u8]) -> bool {
        object_members(line, &mut |_| true)
    }

    proptest! {
        #[test]
        fn finds_the_first_quote_or_backslash(bytes in proptest::collection::vec(prop_oneof![Just(b'"'), Just(b'\\'), Just(b'a'), any::<u8>()], 0..40)) {
            prop_assert_eq!(
                quote_or_backslash(&bytes),
                bytes.iter().position(|b| *b == b'"' || *b == b'\\')
            );
        }
    }

    #[test]
    fn objects_it_accepts() {
        for line in [
            &br#"{}"#[..],
            br#"{"a":1,"b":"x\"y\u00e9","c":{"d":[1,-2,true,false,null,{},[]]},"e":"\u00ff"}"#,
            "{\"k\":\"é 😀\"}".as_bytes(),
        ] {
            assert!(accepted(line), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn what_it_leaves_to_serde() {
        for line in [
            &br#"{"a": 1}"#[..],
            br#"{"a":1.5}"#,
            br#"{"a":1e3}"#,
            br#"{"a":01}"#,
            br#"{"a":"\ud800"}"#,
            br#"{"\u0061":1}"#,
            br#"{"a":1,}"#,
            br#"{"a":1}x"#,
            br#"{"a":"x"#,
            br#"[1]"#,
            br#"{"a":"tab	in"}"#,
            br#"{"a":tru}"#,
            b"{\"a\":\"\xff\"}",
        ] {
            assert!(!accepted(line), "{}", String::from_utf8_lossy(line));
        }
    }

    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            "[a-z0-9\"\\\\{}\\[\\]:,. \\-eE+tfnul/]{0,6}",
            Just("\\u00".to_string()),
            Just("\\ud83d\\ude00".to_string()),
            Just("\u{1}".to_string()),
        ]
    }

    proptest! {
        /// "Accepted" implies serde_json accepts it too — for lines close to real records,
        /// mutated anywhere.
        #[test]
        fn never_accepts_what_serde_refuses(
            cut in 0usize..200,
            insert in fragment(),
            remove in 0usize..4,
        ) {
            let base = r#"{"agent_id":"codex","decision":"deny","intent":{"action_class":"a.b","host":"h"},"latency_us":12,"policy":{"determining":["p1","p2"]},"reason":"x\"y","seq":7,"ts":"2026-11-26T10:00:00Z","v":1}"#;
            let cut = cut.min(base.len());
            let mut line = base.as_bytes()[..cut].to_vec();
            line.extend_from_slice(insert.as_bytes());
            let rest = &base.as_bytes()[cut..];
            line.extend_from_slice(&rest[remove.min(rest.len())..]);
            if accepted(&line) {
                prop_assert!(
                    serde_json::from_slice::<IgnoredAny>(&line).is_ok(),
                    "accepted, but serde refuses: {}", String::from_utf8_lossy(&line)
                );
            }
        }

        #[test]
        fn any_bytes_never_panic(line in proptest::collection::vec(any::<u8>(), 0..64)) {
            if accepted(&line) {
                prop_assert!(serde_json::from_slice::<IgnoredAny>(&line).is_ok());
            }
        }
    }
}
