//! The properties the fuzz targets (`fuzz/`) check, as plain functions: each takes arbitrary
//! bytes and panics when a property fails. The fuzz targets are one-line wrappers, and
//! `tests/bypass_fuzz_corpus.rs` replays the committed corpus (and every former finding)
//! through the same functions on the stable toolchain.

use std::path::Path;

use crate::audit::{canonical, record};
use crate::sidecar::mapping::MappingTable;
use crate::sidecar::target::{Target, canonical_host, canonical_path};

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
    let mut expected = record::RECORD_DOMAIN.to_vec();
    canonical::write_object(map, |k| k != "sig", &mut expected).expect("canonical");
    assert!(
        parsed.message == expected,
        "the signed message is not the record without its sig"
    );
    let _ = parsed.verify(&key);
}
