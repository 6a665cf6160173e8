//! One line on its own: sealing (canonical bytes + Ed25519 signature) and checking (parse,
//! canonical round trip, format version, signature). The chain between lines is `chain.rs`.
//!
//! Format versions (`v`): a record's signature covers the domain tag of its version followed by
//! its canonical bytes without `sig` (its *body*). What names a record in the chain — the next
//! record's `prev`, a checkpoint's `head`, a retention marker's `last_hash` — is its *chain
//! hash*: format 1, the SHA-256 of the whole line (signature included); format 2, the SHA-256 of
//! its body, so a record can be chained before it is signed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::canonical;
use super::event::{AUDIT_FORMAT_V1, AUDIT_FORMAT_VERSION, AuditRecord};
use super::event_bytes::Unsigned;

/// Domain tag signed before the body of a format-1 record (so an audit signature can never be
/// replayed as another kind of firma signature, and vice versa).
pub const RECORD_DOMAIN_V1: &[u8] = b"firma-audit-v1\n";
/// Domain tag of format-2 records: a format-1 verifier finds no valid signature in a format-2
/// log (it fails loudly instead of misreading the chain), and the reverse.
pub const RECORD_DOMAIN_V2: &[u8] = b"firma-audit-v2\n";

/// The domain tag of records of format `version`; `None` for a version this firma does not read.
pub fn record_domain(version: u64) -> Option<&'static [u8]> {
    match version {
        1 => Some(RECORD_DOMAIN_V1),
        2 => Some(RECORD_DOMAIN_V2),
        _ => None,
    }
}

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
    /// A record of a format version this firma does not read (written by a newer firma, or
    /// edited).
    UnsupportedVersion(u64),
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
            Self::UnsupportedVersion(v) => write!(
                f,
                "audit format version {v} is not one this firma reads (versions \
                 {AUDIT_FORMAT_V1} to {AUDIT_FORMAT_VERSION})"
            ),
            Self::BadSignatureEncoding(why) => write!(f, "unusable signature: {why}"),
            Self::BadSignature => f.write_str("signature does not verify"),
            Self::TooLong(n) => write!(
                f,
                "line of {n} bytes exceeds the {MAX_LINE_BYTES}-byte limit"
            ),
        }
    }
}

/// A line that parsed, is canonical, has a format version this firma reads and carries a
/// well-formed signature (not yet verified).
#[derive(Debug, Clone)]
pub struct ParsedLine {
    pub record: AuditRecord,
    /// The format version (`v`).
    pub version: u64,
    /// The signed message: the version's domain tag followed by the canonical bytes without
    /// `sig`.
    pub message: Vec<u8>,
    pub signature: Signature,
    /// What the next record's `prev` must name (see the module comment).
    pub chain_hash: [u8; 32],
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

/// The format version of a parsed record, if this firma reads it.
fn record_version(map: &Map<String, Value>) -> Result<(u64, &'static [u8]), LineProblem> {
    let version = map.get("v").and_then(Value::as_u64).ok_or_else(|| {
        LineProblem::Malformed("no format version: `v` is missing or not an integer".into())
    })?;
    let domain = record_domain(version).ok_or(LineProblem::UnsupportedVersion(version))?;
    Ok((version, domain))
}

/// Parse a line and check everything that needs no key: JSON, record shape, canonical form,
/// format version, signature encoding. The signature itself is checked by
/// [`ParsedLine::verify`] (or in a batch).
pub fn parse_line(line: &[u8]) -> Result<ParsedLine, LineProblem> {
    let mut version = 0;
    let (value, message, signature) = parse_signed_by(line, |map| {
        let (v, domain) = record_version(map)?;
        version = v;
        Ok(domain)
    })?;
    let record =
        AuditRecord::from_value(value).map_err(|err| LineProblem::Malformed(err.to_string()))?;
    let domain_len = record_domain(version).map_or(0, <[u8]>::len);
    let chain_hash = if version == u64::from(AUDIT_FORMAT_V1) {
        line_hash(line)
    } else {
        line_hash(&message[domain_len..])
    };
    Ok(ParsedLine {
        record,
        version,
        message,
        signature,
        chain_hash,
    })
}

/// The chain hash of a line (see the module comment); for a line that is not a record, the
/// SHA-256 of its bytes.
pub fn chain_hash(line: &[u8]) -> [u8; 32] {
    parse_line(line).map_or_else(|_| line_hash(line), |parsed| parsed.chain_hash)
}

/// The generic half of [`parse_line`]: a canonical JSON object with a `sig` member, returned as
/// the parsed value, the signed message (`domain` + canonical bytes without `sig`) and the
/// decoded signature.
pub fn parse_signed(
    line: &[u8],
    domain: &[u8],
) -> Result<(Value, Vec<u8>, Signature), LineProblem> {
    parse_signed_by(line, |_| Ok(domain))
}

/// [`parse_signed`] with the domain tag chosen from the parsed object.
fn parse_signed_by<'d>(
    line: &[u8],
    domain: impl FnOnce(&Map<String, Value>) -> Result<&'d [u8], LineProblem>,
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
    let domain = domain(map)?;
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
    let mut found = memchr::memmem::find_iter(line, KEY);
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

/// Decode a `sig` member: standard base64 with padding, exactly 64 bytes. The engine refuses
/// non-canonical encodings (stray trailing bits, missing padding), so each signature has one
/// text: a signature cannot be re-spelled without changing its bytes.
pub fn decode_signature(sig: Option<&Value>) -> Result<Signature, LineProblem> {
    let Some(sig) = sig else {
        return Err(LineProblem::BadSignatureEncoding("no `sig` member".into()));
    };
    let Some(text) = sig.as_str() else {
        return Err(LineProblem::BadSignatureEncoding(
            "`sig` is not a string".into(),
        ));
    };
    decode_signature_text(text)
}

/// [`decode_signature`] of the text of a `sig` member.
pub fn decode_signature_text(text: &str) -> Result<Signature, LineProblem> {
    // Room for what 88 base64 digits can hold (66 bytes), so a near miss is told by its length.
    let mut bytes = [0u8; 66];
    match BASE64.decode_slice(text, &mut bytes) {
        Ok(64) => Ok(Signature::from_bytes(
            bytes[..64].try_into().expect("64 bytes"),
        )),
        Ok(n) => Err(LineProblem::BadSignatureEncoding(format!(
            "`sig` is {n} bytes, not 64"
        ))),
        Err(base64::DecodeSliceError::OutputSliceTooSmall) => Err(
            LineProblem::BadSignatureEncoding("`sig` is longer than 64 bytes".into()),
        ),
        Err(base64::DecodeSliceError::DecodeError(err)) => Err(LineProblem::BadSignatureEncoding(
            format!("`sig` is not base64: {err}"),
        )),
    }
}

/// The audit key, ready to sign records. Signing is AWS-LC's Ed25519 (the Sidecar signs every
/// decision, and AWS-LC does it in about two thirds of ed25519-dalek's time); the signatures are
/// the same RFC 8032 bytes `SigningKey::sign` gives (a unit test holds the two together), and
/// everything that verifies stays on ed25519-dalek.
pub struct RecordSigner {
    pair: aws_lc_rs::signature::Ed25519KeyPair,
    public: VerifyingKey,
}

impl std::fmt::Debug for RecordSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordSigner")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl RecordSigner {
    pub fn new(key: &SigningKey) -> Self {
        let public = key.verifying_key();
        let pair = aws_lc_rs::signature::Ed25519KeyPair::from_seed_and_public_key(
            key.as_bytes(),
            public.as_bytes(),
        )
        .expect("an Ed25519 seed and the public key derived from it form a key pair");
        Self { pair, public }
    }

    /// The Ed25519 signature of `message` (RFC 8032: the same bytes `SigningKey::sign` gives).
    pub fn sign(&self, message: &[u8]) -> Signature {
        let sig = self.pair.sign(message);
        let bytes: &[u8; 64] = sig
            .as_ref()
            .try_into()
            .expect("an Ed25519 signature is 64 bytes");
        Signature::from_bytes(bytes)
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.public
    }
}

/// A signed line: its canonical bytes (no newline), the base64 signature inside them, and its
/// chain hash.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub line: Vec<u8>,
    pub sig: String,
    pub chain_hash: [u8; 32],
}

/// Sign a record given as a JSON object (its `sig`, if any, is replaced) under the domain tag of
/// its `v` (format 2 when it has none).
pub fn seal(record: Map<String, Value>, key: &SigningKey) -> Sealed {
    seal_by(record, &RecordSigner::new(key))
}

/// [`seal`] with a [`RecordSigner`].
pub fn seal_by(record: Map<String, Value>, signer: &RecordSigner) -> Sealed {
    let version = record
        .get("v")
        .and_then(Value::as_u64)
        .unwrap_or(u64::from(AUDIT_FORMAT_VERSION));
    let domain = record_domain(version).expect("records are sealed in a format this firma writes");
    let unsigned = unsigned(domain, &record);
    let chain_hash = if version == u64::from(AUDIT_FORMAT_V1) {
        None
    } else {
        Some(line_hash(unsigned.body()))
    };
    let (line, sig) = sign(&unsigned, signer, 0);
    Sealed {
        chain_hash: chain_hash.unwrap_or_else(|| line_hash(&line)),
        line,
        sig,
    }
}

/// [`seal`] under another domain tag (checkpoints); `chain_hash` is the line's SHA-256.
pub fn seal_with(domain: &[u8], record: Map<String, Value>, key: &SigningKey) -> Sealed {
    let unsigned = unsigned(domain, &record);
    let (line, sig) = sign(&unsigned, &RecordSigner::new(key), 0);
    Sealed {
        chain_hash: line_hash(&line),
        line,
        sig,
    }
}

/// A record given as a JSON object (without its `sig`), ready to be signed under `domain`.
pub fn unsigned(domain: &[u8], record: &Map<String, Value>) -> Unsigned {
    let mut message = Vec::with_capacity(domain.len() + 640);
    message.extend_from_slice(domain);
    let mut body = Vec::with_capacity(640);
    let slot = canonical::write_object_leaving_out(record, "sig", &mut body)
        .expect("records hold only strings, objects, arrays and small integers");
    message.extend_from_slice(&body);
    Unsigned {
        message,
        domain_len: domain.len(),
        sig_slot: slot,
    }
}

/// Sign `unsigned`: the line (the body with `sig` at its place, then `newlines` newline bytes
/// — 0 or 1) and the base64 signature.
pub fn sign(unsigned: &Unsigned, signer: &RecordSigner, newlines: usize) -> (Vec<u8>, String) {
    let sig = BASE64.encode(signer.sign(&unsigned.message).to_bytes());
    let mut value = Vec::with_capacity(sig.len() + 2);
    canonical::write_string(&sig, &mut value);
    let body = unsigned.body();
    let mut line = Vec::with_capacity(body.len() + value.len() + 8 + newlines);
    unsigned
        .sig_slot
        .write_joined(body, "sig", &value, &mut line);
    line.extend(std::iter::repeat_n(b'\n', newlines));
    (line, sig)
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
    use proptest::prelude::*;

    proptest! {
        /// The signer (AWS-LC) and ed25519-dalek give the same RFC 8032 signature, byte for
        /// byte, for any key and message.
        #[test]
        fn the_signer_signs_as_rfc_8032_says(
            seed in any::<[u8; 32]>(),
            message in proptest::collection::vec(any::<u8>(), 0..2048),
        ) {
            let key = SigningKey::from_bytes(&seed);
            let signer = RecordSigner::new(&key);
            use ed25519_dalek::Signer as _;
            prop_assert_eq!(signer.sign(&message), key.sign(&message));
        }
    }

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
        let (_, message, signature) = parse_signed(&sealed.line, RECORD_DOMAIN_V1).unwrap();
        assert!(message.starts_with(RECORD_DOMAIN_V1));
        key.verifying_key()
            .verify_strict(&message, &signature)
            .unwrap();
    }
}
