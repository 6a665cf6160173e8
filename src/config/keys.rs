//! Ed25519 key files: PKCS#8 v1 PEM private keys (RFC 8410 / RFC 5208: no embedded public key,
//! mode 0600) with SPKI PEM public halves beside them (mode 0644), so standard tools read them:
//! `openssl pkey -in authority.key -pubout` (OpenSSL 3.0) and python `cryptography`. PKCS#8 v2
//! keys (RFC 5958, public key embedded — what earlier firma versions wrote) are still read.
//! `authority.key` signs capability tokens; `audit.key` signs audit records.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::error::Hinted;
use crate::fsutil::{Durability, write_atomic};

pub const SECRET_MODE: u32 = 0o600;
pub const PUBLIC_MODE: u32 = 0o644;

/// A fresh key pair from the OS random source.
pub fn generate() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

/// The public-key file that sits beside `secret` (`authority.key` → `authority.pub`).
pub fn public_path(secret: &Path) -> PathBuf {
    secret.with_extension("pub")
}

/// PEM text of the private key: PKCS#8 v1. `SigningKey::to_pkcs8_pem` writes v2 (public key
/// embedded), which OpenSSL 3.0 and python `cryptography` refuse.
pub fn secret_pem(key: &SigningKey) -> String {
    KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    }
    .to_pkcs8_pem(LineEnding::LF)
    .expect("ed25519 keys always encode")
    .to_string()
}

/// PEM text of the public key (SPKI).
pub fn public_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(LineEnding::LF)
        .expect("ed25519 keys always encode")
}

/// Write both halves atomically with their modes.
pub fn write_pair(secret: &Path, key: &SigningKey) -> Result<(), Hinted> {
    write_atomic(
        secret,
        secret_pem(key).as_bytes(),
        SECRET_MODE,
        Durability::Durable,
    )?;
    write_atomic(
        &public_path(secret),
        public_pem(&key.verifying_key()).as_bytes(),
        PUBLIC_MODE,
        Durability::Durable,
    )
}

/// Read a private key, refusing one that others can read.
pub fn load_signing_key(path: &Path) -> Result<SigningKey, Hinted> {
    let meta = std::fs::metadata(path).map_err(|err| {
        Hinted::new(format!("cannot read key {}: {err}", path.display()))
            .hint("run `firma init` to generate the project's keys, or fix the path in firma.toml")
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Hinted::new(format!(
            "key {} is readable by others (mode {mode:04o})",
            path.display()
        ))
        .hint(format!("chmod 600 {}", path.display())));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|err| Hinted::new(format!("cannot read key {}: {err}", path.display())))?;
    SigningKey::from_pkcs8_pem(&text).map_err(|err| {
        Hinted::new(format!(
            "{} is not an Ed25519 PKCS#8 PEM private key: {err}",
            path.display()
        ))
        .hint("regenerate it with `firma init --force`")
    })
}

/// Read a public key (SPKI PEM).
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, Hinted> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        Hinted::new(format!("cannot read public key {}: {err}", path.display()))
            .hint("it is written beside the private key by `firma init`")
    })?;
    VerifyingKey::from_public_key_pem(&text).map_err(|err| {
        Hinted::new(format!(
            "{} is not an Ed25519 public key PEM: {err}",
            path.display()
        ))
        .hint("regenerate the pair with `firma init --force`")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_round_trips_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("audit.key");
        let key = generate();
        write_pair(&secret, &key).unwrap();
        assert_eq!(
            load_signing_key(&secret).unwrap().to_bytes(),
            key.to_bytes()
        );
        assert_eq!(
            load_verifying_key(&public_path(&secret)).unwrap(),
            key.verifying_key()
        );
        let mode = std::fs::metadata(&secret).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    /// RFC 8410 §10.3's example key: a v1 `PrivateKeyInfo` is exactly these bytes.
    #[test]
    fn secret_is_pkcs8_v1_as_in_rfc_8410() {
        use base64::Engine;
        let seed: [u8; 32] =
            hex::decode("d4ee72dbf913584ad5b6d8f1f769f8ad3afe7c28cbf1d4fbe097a88f44755842")
                .unwrap()
                .try_into()
                .unwrap();
        let pem = secret_pem(&SigningKey::from_bytes(&seed));
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(
            body,
            "MC4CAQAwBQYDK2VwBCIEINTuctv5E1hK1bbY8fdp+K06/nwoy/HU++CXqI9EdVhC"
        );
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap();
        assert_eq!(der[4], 0, "version field is v1 (0)");
    }

    #[test]
    fn v2_keys_written_by_earlier_versions_still_load() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("old.key");
        let key = generate();
        let v2 = key.to_pkcs8_pem(LineEnding::LF).unwrap();
        std::fs::write(&secret, v2.as_bytes()).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            load_signing_key(&secret).unwrap().to_bytes(),
            key.to_bytes()
        );
    }

    #[test]
    fn world_readable_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("k.key");
        write_pair(&secret, &generate()).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_signing_key(&secret).unwrap_err();
        assert!(err.hint_text().unwrap().starts_with("chmod 600"));
    }
}
