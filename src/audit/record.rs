//! One line on its own: sealing (canonical bytes + Ed25519 signature) and checking (parse,
//! canonical round trip, signature). The chain between lines is `chain.rs`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::canonical;
use super::event::AuditRecord;

/// Domain tag signed before the canonical bytes of a record (so an audit signature can never be
/// replayed as another kind of firma signature, and vice versa).
pub const RECORD_DOMAIN: &[u8] = b"firma-audit-v1\n";

/// `prev` of the first record of a log.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Longest line the writer produces or the reader buffers; longer lines are reported, not read.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// SHA-256 of a line's bytes (without its newline): the next record's `prev`.
pub fn line_hash(line: &[u8]) -> [u8; 32] {
    Sha256::digest(line).into()
}

/// Hex SHA-256 fingerprint of a public key's 32 raw bytes, as printed by `firma audit verify`.
pub fn key_fingerprint(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// What is wrong with one line, judged on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineProblem {
    /// Not JSON, not an object, or not a record (missing or mistyped member).
    Malformed(String),
    /// Valid JSON, but not the RFC 8785 bytes of what it parses to.
    NonCanonical,
    /// No `sig`, or one that is not a base64 Ed25519 signature.
    BadSignatureEncoding(String),
    /// The signature does not verify with the key.
    BadSignature,
    /// Longer than [`MAX_LINE_BYTES`].
    TooLong(u64),
}

impl std::fmt::Display for LineProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Malformed(why) => write!(f, "not an audit record: {why}"),
            Self::NonCanonical => f.write_str("not in RFC 8785 canonical form"),
            Self::BadSignatureEncoding(why) => write!(f, "unusable signature: {why}"),
            Self::BadSignature => f.write_str("signature does not verify"),
            Self::TooLong(n) => write!(
                f,
                "line of {n} bytes exceeds the {MAX_LINE_BYTES}-byte limit"
            ),
        }
    }
}

/// A line that parsed, is canonical and carries a well-formed signature (not yet verified).
#[derive(Debug, Clone)]
pub struct ParsedLine {
    pub record: AuditRecord,
    /// The signed message: [`RECORD_DOMAIN`] followed by the canonical bytes without `sig`.
    pub message: Vec<u8>,
    pub signature: Signature,
    /// SHA-256 of the line's bytes.
    pub hash: [u8; 32],
}

impl ParsedLine {
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), LineProblem> {
        key.verify_strict(&self.message, &self.signature)
            .map_err(|_| LineProblem::BadSignature)
    }
}

/// Parse only: the record of a line, without checking its form or signature (cheap; for
/// readers that display lines, such as `firma monitor`).
pub fn parse_record(line: &[u8]) -> Result<AuditRecord, LineProblem> {
    let value: Value =
        serde_json::from_slice(line).map_err(|err| LineProblem::Malformed(err.to_string()))?;
    AuditRecord::from_value(value).map_err(|err| LineProblem::Malformed(err.to_string()))
}

/// Parse a line and check everything that needs no key: JSON, record shape, canonical form,
/// signature encoding. The signature itself is checked by [`ParsedLine::verify`] (or in a batch).
pub fn parse_line(line: &[u8]) -> Result<ParsedLine, LineProblem> {
    let (value, message, signature) = parse_signed(line, RECORD_DOMAIN)?;
    let record =
        AuditRecord::from_value(value).map_err(|err| LineProblem::Malformed(err.to_string()))?;
    Ok(ParsedLine {
        record,
        message,
        signature,
        hash: line_hash(line),
    })
}

/// The generic half of [`parse_line`]: a canonical JSON object with a `sig` member, returned as
/// the parsed value, the signed message (`domain` + canonical bytes without `sig`) and the
/// decoded signature.
pub fn parse_signed(
    line: &[u8],
    domain: &[u8],
) -> Result<(Value, Vec<u8>, Signature), LineProblem> {
    if line.len() > MAX_LINE_BYTES {
        return Err(LineProblem::TooLong(line.len() as u64));
    }
    let value: Value =
        serde_json::from_slice(line).map_err(|err| LineProblem::Malformed(err.to_string()))?;
    let Value::Object(map) = &value else {
        return Err(LineProblem::Malformed("not a JSON object".into()));
    };
    let mut canonical = Vec::with_capacity(line.len());
    canonical::write_object(map, |_| true, &mut canonical)
        .map_err(|err| LineProblem::Malformed(err.to_string()))?;
    if canonical != line {
        return Err(LineProblem::NonCanonical);
    }
    let signature = decode_signature(map.get("sig"))?;
    let mut message = Vec::with_capacity(domain.len() + line.len());
    message.extend_from_slice(domain);
    match sig_member(line, map) {
        // The line is canonical, so without its `sig` member it is the canonical encoding of
        // the rest: cut the member out instead of encoding again.
        Some((start, end)) => {
            message.extend_from_slice(&line[..start]);
            message.extend_from_slice(&line[end..]);
        }
        None => canonical::write_object(map, |k| k != "sig", &mut message)
            .map_err(|err| LineProblem::Malformed(err.to_string()))?,
    }
    Ok((value, message, signature))
}

/// Parse, check and verify one line with `key`.
pub fn check_line(line: &[u8], key: &VerifyingKey) -> Result<ParsedLine, LineProblem> {
    let parsed = parse_line(line)?;
    parsed.verify(key)?;
    Ok(parsed)
}

/// Byte range of `,"sig":"…"` in a canonical line (`None` if `sig` is the first member, or if a
/// nested object has a `sig` member too: then the caller encodes instead of cutting). Inside a
/// JSON string every `"` is escaped, so `,"sig":"` can only be a member.
fn sig_member(line: &[u8], map: &Map<String, Value>) -> Option<(usize, usize)> {
    let sig = map.get("sig")?.as_str()?;
    const KEY: &[u8] = b",\"sig\":\"";
    let mut found = line
        .windows(KEY.len())
        .enumerate()
        .filter(|(_, w)| *w == KEY)
        .map(|(at, _)| at);
    let start = found.next()?;
    if found.next().is_some() {
        // Found by the fuzzer (fuzz/regressions/audit_line/nested-sig): the first `sig` member
        // may be a nested one.
        return None;
    }
    let end = start + KEY.len() + sig.len() + 1;
    (line.get(start + KEY.len()..end - 1)? == sig.as_bytes() && line.get(end - 1) == Some(&b'"'))
        .then_some((start, end))
}

fn decode_signature(sig: Option<&Value>) -> Result<Signature, LineProblem> {
    let Some(sig) = sig else {
        return Err(LineProblem::BadSignatureEncoding("no `sig` member".into()));
    };
    let Some(text) = sig.as_str() else {
        return Err(LineProblem::BadSignatureEncoding(
            "`sig` is not a string".into(),
        ));
    };
    let bytes = BASE64
        .decode(text)
        .map_err(|err| LineProblem::BadSignatureEncoding(format!("`sig` is not base64: {err}")))?;
    let bytes: [u8; 64] = bytes.try_into().map_err(|b: Vec<u8>| {
        LineProblem::BadSignatureEncoding(format!("`sig` is {} bytes, not 64", b.len()))
    })?;
    Ok(Signature::from_bytes(&bytes))
}

/// A signed line: its canonical bytes (no newline) and the base64 signature inside them.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub line: Vec<u8>,
    pub sig: String,
}

/// Sign a record given as a JSON object (its `sig`, if any, is replaced).
pub fn seal(record: Map<String, Value>, key: &SigningKey) -> Sealed {
    seal_with(RECORD_DOMAIN, record, key)
}

/// [`seal`] under another domain tag.
pub fn seal_with(domain: &[u8], record: Map<String, Value>, key: &SigningKey) -> Sealed {
    let mut line = Vec::with_capacity(640);
    let slot = canonical::write_object_leaving_out(&record, "sig", &mut line)
        .expect("records hold only strings, objects, arrays and small integers");
    let mut message = Vec::with_capacity(domain.len() + line.len());
    message.extend_from_slice(domain);
    message.extend_from_slice(&line);
    let sig = BASE64.encode(key.sign(&message).to_bytes());
    // The line is the signed bytes without the domain tag, with `sig` spliced in at its place.
    let mut value = Vec::with_capacity(sig.len() + 2);
    canonical::write_string(&sig, &mut value);
    slot.insert("sig", &value, &mut line);
    Sealed { line, sig }
}

/// A serialisable record as a JSON object, ready for [`seal`].
pub fn to_object<T: serde::Serialize>(record: &T) -> Map<String, Value> {
    match serde_json::to_value(record).expect("records always serialise") {
        Value::Object(map) => map,
        _ => unreachable!("records serialise to objects"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spliced line is exactly the canonical encoding of the record with its `sig`, and the
    /// signature covers the domain tag plus the record without it.
    #[test]
    fn a_sealed_line_is_canonical_and_verifies() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let record: Value = serde_json::json!({
            "v": 1, "seq": 3, "token_id": "t", "session_id": "s", "prev": "ab",
            "intent": {"path": "/x", "host": "h"}, "sig": "stale",
        });
        let Value::Object(map) = record else {
            unreachable!()
        };
        let sealed = seal(map.clone(), &key);
        let mut with_sig = map;
        with_sig.insert("sig".into(), Value::String(sealed.sig.clone()));
        assert_eq!(
            sealed.line,
            canonical::to_vec(&Value::Object(with_sig)).unwrap()
        );
        let (_, message, signature) = parse_signed(&sealed.line, RECORD_DOMAIN).unwrap();
        assert!(message.starts_with(RECORD_DOMAIN));
        key.verifying_key()
            .verify_strict(&message, &signature)
            .unwrap();
    }
}
