//! The properties the fuzz targets (`fuzz/`: request targets, audit lines, capability tokens)
//! check, as plain functions: each takes arbitrary bytes and panics when a property fails. The
//! fuzz targets are one-line wrappers, and `tests/bypass_fuzz_corpus.rs` replays the committed
//! corpus (and every former finding) through the same functions on the stable toolchain.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use http::HeaderMap;
use http::header::{HeaderValue, PROXY_AUTHORIZATION};

use crate::audit::{canonical, record};
use crate::authority::token::{self, CapabilityClaims, TrustedIssuer};
use crate::sidecar::identity::{Presented, presented_token};
use crate::sidecar::mapping::MappingTable;
use crate::sidecar::pipeline::{TokenRejection, TokenVerifier};
use crate::sidecar::target::{Target, canonical_host, canonical_path};
use crate::sidecar::token_cache::VerifiedTokens;

/// The request-target normaliser and the classifier: whatever the bytes, nothing panics, and a
/// target that is accepted is a fixed point of normalisation, holds no empty or dot segment,
/// survives the trip to the upstream (origin-form) unchanged, names its own authority, and is
/// classified the same as its canonical form.
pub fn request_target(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if let Ok(text) = std::str::from_utf8(rest) {
        if let Ok(path) = canonical_path(text) {
            assert_canonical_path(&path);
        }
        if let Ok(host) = canonical_host(text) {
            assert_eq!(canonical_host(&host).ok().as_deref(), Some(host.as_str()));
        }
    }
    let Ok(uri) = http::Uri::try_from(rest) else {
        return;
    };
    let target = if mode % 2 == 0 {
        Target::absolute(&uri)
    } else {
        Target::connect(&uri)
    };
    let Ok(target) = target else {
        return;
    };
    if mode % 2 == 0 {
        assert_canonical_path(&target.path);
        let sent = target.origin_form();
        assert_eq!(
            sent.path(),
            target.path,
            "the upstream gets the decided path"
        );
        assert_eq!(sent.query(), target.query.as_deref());
    } else {
        assert!(target.path.is_empty());
    }
    assert!(target.port != 0);
    assert!(
        target.same_authority(&target.authority()),
        "{} does not name itself",
        target.authority()
    );
    let rules = rules();
    let class = |path: &str| {
        rules
            .classify("GET", &target.host, target.port, path)
            .map(|r| r.line)
    };
    if let Ok(again) = canonical_path(&target.path) {
        assert_eq!(class(&again), class(&target.path));
    }
}

fn assert_canonical_path(path: &str) {
    assert_eq!(
        canonical_path(path).ok().as_deref(),
        Some(path),
        "not a fixed point"
    );
    assert!(path.starts_with('/'));
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        assert!(
            !segment.is_empty() || i + 1 == segments.len(),
            "empty segment in {path}"
        );
        assert!(*segment != "." && *segment != "..", "dot segment in {path}");
    }
    let upper = path.to_ascii_uppercase();
    for encoded in ["%2F", "%5C", "%2E", "%00"] {
        assert!(!upper.contains(encoded), "{encoded} in {path}");
    }
    assert!(!path.contains('\\'));
}

/// A small rule set with globs, ports and paths for the classifier.
fn rules() -> MappingTable {
    const RULES: &str = "[[rules]]\nhost = \"*\"\naction_class = \"code.read\"\n\n\
        [[rules]]\nhost = \"*.example.com\"\nports = [443, 8443]\naction_class = \"code.write\"\n\n\
        [[rules]]\nmethod = \"GET\"\nhost = \"127.0.0.1:8080\"\npath = \"/admin*\"\naction_class = \"repo.admin\"\n\n\
        [[rules]]\nhost = \"::1\"\npath = \"/a/*/c\"\naction_class = \"filesystem.read\"\n";
    MappingTable::parse(RULES, Path::new("fuzz-rules.toml")).expect("fixed rules parse")
}

/// The audit line verifier: whatever the bytes, nothing panics, and a line that parses is its
/// own canonical encoding whose signed message is exactly the domain tag plus the canonical
/// bytes of the record without its top-level `sig`.
pub fn audit_line(data: &[u8]) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key();
    let _ = record::parse_record(data);
    let Ok(parsed) = record::parse_line(data) else {
        return;
    };
    let value: serde_json::Value = serde_json::from_slice(data).expect("parsed once already");
    let map = value.as_object().expect("an object");
    assert_eq!(
        canonical::to_vec(&value).expect("canonical"),
        data,
        "accepted a non-canonical line"
    );
    let mut expected = record::record_domain(parsed.version)
        .expect("a parsed line has a readable version")
        .to_vec();
    canonical::write_object(map, |k| k != "sig", &mut expected).expect("canonical");
    assert!(
        parsed.message == expected,
        "the signed message is not the record without its sig"
    );
    let _ = parsed.verify(&key);
}

/// The capability token as an agent presents it in `Proxy-Authorization`. The first byte picks
/// what the rest is: (0) the whole header value; (1) edits to the one token the harness signed,
/// sent as `Bearer`; (2) the same edits, sent as Basic's password; (3) bytes inserted into that
/// token. Whatever the bytes, nothing panics; a token that is accepted grants exactly what the
/// signed token grants (no spelling or edit changes the claims — only the key can sign); and
/// the cache never changes a verdict: a fresh verifier, the same verifier again (now from its
/// cache), and one verifier shared by every input so far (whose cache other spellings filled)
/// agree.
pub fn capability_token(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fixture = TokenFixture::get();
    let value = match mode % 4 {
        0 => rest.to_vec(),
        1 => [b"Bearer ".as_slice(), &edited(&fixture.token, rest)].concat(),
        2 => {
            let credentials = [b"agent:".as_slice(), &edited(&fixture.token, rest)].concat();
            let encoded = base64::engine::general_purpose::STANDARD.encode(credentials);
            format!("Basic {encoded}").into_bytes()
        }
        _ => [b"Bearer ".as_slice(), &inserted(&fixture.token, rest)].concat(),
    };
    let Ok(value) = HeaderValue::from_bytes(&value) else {
        return;
    };
    let mut headers = HeaderMap::new();
    headers.insert(PROXY_AUTHORIZATION, value);
    let Presented::Token(raw) = presented_token(&headers) else {
        return;
    };
    let fresh = VerifiedTokens::new(fixture.trust.clone());
    let first = verdict(fresh.verify(&raw));
    assert_eq!(
        verdict(fresh.verify(&raw)),
        first,
        "the cache changed a verdict"
    );
    assert_eq!(
        verdict(fixture.shared.verify(&raw)),
        first,
        "a cache filled by other inputs changed a verdict"
    );
    if let Ok(claims) = &first {
        assert_eq!(
            claims, &fixture.claims,
            "an accepted token grants something else"
        );
    }
}

/// The one signed token, the issuer trusted to have signed it, and a verifier every input shares.
struct TokenFixture {
    token: String,
    claims: CapabilityClaims,
    trust: TrustedIssuer,
    shared: VerifiedTokens,
}

impl TokenFixture {
    fn get() -> &'static Self {
        static FIXTURE: OnceLock<TokenFixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let key = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]);
            let time = |text: &str| {
                chrono::DateTime::parse_from_rfc3339(text)
                    .expect("a fixed time")
                    .with_timezone(&chrono::Utc)
            };
            let claims = CapabilityClaims {
                token_id: "tok-fuzz".into(),
                issuer: token::key_id(&key.verifying_key()),
                audience: "fuzz-deployment".into(),
                agent_id: "agent-fuzz".into(),
                session_id: "session-fuzz".into(),
                actions: vec!["code.read".into()],
                resource_scope: "example.com/*".into(),
                issued_at: time("2026-01-01T00:00:00Z"),
                expires_at: time("2099-01-01T00:00:00Z"),
                sandbox_id: String::new(),
            };
            let token = token::sign_token(&key, &claims).expect("the fixture signs");
            let trust = TrustedIssuer::new(key.verifying_key(), "fuzz-deployment");
            Self {
                token,
                claims,
                shared: VerifiedTokens::new(trust.clone()),
                trust,
            }
        })
    }
}

/// `token` with `edits` applied: each three bytes are a position (two bytes, modulo the
/// length) and the byte to put there.
fn edited(token: &str, edits: &[u8]) -> Vec<u8> {
    let mut bytes = token.as_bytes().to_vec();
    for edit in edits.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([edit[0], edit[1]])) % bytes.len();
        bytes[at] = edit[2];
    }
    bytes
}

/// `token` with `data` after its first two bytes inserted at the position they name (modulo
/// the length + 1).
fn inserted(token: &str, data: &[u8]) -> Vec<u8> {
    let mut bytes = token.as_bytes().to_vec();
    let Some((at, insert)) = data.split_first_chunk::<2>() else {
        return bytes;
    };
    let at = usize::from(u16::from_le_bytes(*at)) % (bytes.len() + 1);
    bytes.splice(at..at, insert.iter().copied());
    bytes
}

/// A verifier's answer, comparable.
fn verdict(
    result: Result<Arc<CapabilityClaims>, TokenRejection>,
) -> Result<CapabilityClaims, TokenRejection> {
    result.map(|claims| (*claims).clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The property is not vacuous: the untouched token is accepted, in both schemes, and an
    /// edit to its signature is not.
    #[test]
    fn the_fixture_token_is_accepted_and_an_edited_one_is_not() {
        let fixture = TokenFixture::get();
        let trust = || VerifiedTokens::new(fixture.trust.clone());
        assert_eq!(
            verdict(trust().verify(&fixture.token)),
            Ok(fixture.claims.clone())
        );
        let last = u16::try_from(fixture.token.len() - 1)
            .unwrap()
            .to_le_bytes();
        let edited = String::from_utf8(edited(&fixture.token, &[last[0], last[1], b'A'])).unwrap();
        assert_ne!(edited, fixture.token);
        assert!(trust().verify(&edited).is_err());
        capability_token(&[1]);
        capability_token(&[2]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// The fuzz property on random edits, insertions and header values (the fuzzer's seeds
        /// in `fuzz/corpus/capability_token/` replay in `tests/bypass_fuzz_corpus.rs`).
        #[test]
        fn no_edit_of_a_token_changes_what_it_grants(
            mode in 0u8..4,
            rest in proptest::collection::vec(any::<u8>(), 0..24),
        ) {
            capability_token(&[&[mode][..], &rest].concat());
        }
    }
}
