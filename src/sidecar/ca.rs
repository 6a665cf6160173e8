//! The generated CA that decrypts HTTPS for intercepted hosts.
//!
//! `<state_dir>/generated-firma-ca/firma-ca.crt` (PEM, the file agents trust) and `firma-ca.key`
//! (PKCS#8 PEM, mode 0600). Generated once, before the proxy port opens, and never regenerated
//! while both files exist: a CA someone already trusts must keep working. Per-host leaf
//! certificates are minted on first use and cached.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::Datelike;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, date_time_ymd,
};
use rustls::ServerConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::cache::{BoundedCache, CacheKind};
use crate::config::dirs::ensure_private_dir;
use crate::error::Hinted;
use crate::fsutil::{Durability, write_atomic};
use crate::state_dir::StateDir;

const CA_COMMON_NAME: &str = "firma Sidecar local CA";
const CA_ORGANIZATION: &str = "firma";
/// What one cached leaf config holds besides its host name: the leaf and CA certificates, the
/// leaf's key and rustls' state around them (measured order of magnitude, rounded up).
const LEAF_CONFIG_BYTES: usize = 4096;

/// What happened to the CA at startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaOrigin {
    Generated,
    Loaded,
}

/// The CA and its cache of per-host TLS server configs.
pub struct CertificateAuthority {
    pub cert_path: PathBuf,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    leaves: BoundedCache<String, Arc<ServerConfig>>,
}

impl CertificateAuthority {
    /// Load the CA from `<state_dir>/generated-firma-ca/`, generating it when absent.
    pub fn load_or_generate(state: &StateDir) -> Result<(Self, CaOrigin), Hinted> {
        ensure_private_dir(&state.ca_dir())?;
        let cert_path = state.ca_cert();
        let key_path = state.ca_key();
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => Self::load(cert_path, &key_path).map(|ca| (ca, CaOrigin::Loaded)),
            (true, false) => Err(Hinted::new(format!(
                "{} exists but its key {} is missing",
                cert_path.display(),
                key_path.display()
            ))
            .hint(format!(
                "restore the key, or delete {} so a new CA is generated (agents must then trust the new certificate)",
                state.ca_dir().display()
            ))),
            // No certificate was ever handed out (the key is written first): generating is safe.
            (false, _) => Self::generate(cert_path, &key_path).map(|ca| (ca, CaOrigin::Generated)),
        }
    }

    fn generate(cert_path: PathBuf, key_path: &Path) -> Result<Self, Hinted> {
        let key = KeyPair::generate().map_err(|err| Hinted::new(format!("CA key: {err}")))?;
        let params = ca_params(&ca_name(CA_COMMON_NAME, CA_ORGANIZATION));
        let cert = params
            .self_signed(&key)
            .map_err(|err| Hinted::new(format!("CA certificate: {err}")))?;
        write_atomic(
            key_path,
            key.serialize_pem().as_bytes(),
            0o600,
            Durability::Durable,
        )?;
        write_atomic(
            &cert_path,
            cert.pem().as_bytes(),
            0o644,
            Durability::Durable,
        )?;
        Ok(Self {
            cert_path,
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
            leaves: BoundedCache::of(CacheKind::LeafCertificates),
        })
    }

    fn load(cert_path: PathBuf, key_path: &Path) -> Result<Self, Hinted> {
        let mode = std::fs::metadata(key_path)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        if mode & 0o077 != 0 {
            return Err(Hinted::new(format!(
                "CA key {} is readable by others (mode {mode:04o})",
                key_path.display()
            ))
            .hint(format!("chmod 600 {}", key_path.display())));
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path)
                .map_err(|err| Hinted::new(format!("cannot read {}: {err}", path.display())))
        };
        let key = KeyPair::from_pem(&read(key_path)?).map_err(|err| {
            Hinted::new(format!(
                "{} is not a PEM private key: {err}",
                key_path.display()
            ))
            .hint("delete the generated-firma-ca directory to generate a new CA")
        })?;
        let cert_pem = read(&cert_path)?;
        let der = rustls_pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map(|der: CertificateDer<'_>| der.into_owned())
            .map_err(|err| {
                Hinted::new(format!(
                    "{} is not a PEM certificate: {err}",
                    cert_path.display()
                ))
                .hint("delete the generated-firma-ca directory to generate a new CA")
            })?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).map_err(|err| {
            Hinted::new(format!(
                "{} is not an X.509 certificate: {err}",
                cert_path.display()
            ))
        })?;
        if parsed.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(Hinted::new(format!(
                "{} and {} do not belong together",
                cert_path.display(),
                key_path.display()
            ))
            .hint("restore the matching pair, or delete the directory to generate a new CA"));
        }
        let subject = parsed.subject();
        let common = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .unwrap_or(CA_COMMON_NAME)
            .to_string();
        let organization = subject
            .iter_organization()
            .next()
            .and_then(|o| o.as_str().ok())
            .unwrap_or(CA_ORGANIZATION)
            .to_string();
        let params = ca_params(&ca_name(&common, &organization));
        Ok(Self {
            cert_path,
            cert_der: der,
            issuer: Issuer::new(params, key),
            leaves: BoundedCache::of(CacheKind::LeafCertificates),
        })
    }

    /// A TLS server config presenting a leaf certificate for `host`, minted on first use.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, String> {
        let host = host.to_ascii_lowercase();
        if let Some(config) = self.leaves.get(&host) {
            return Ok(config);
        }
        let config = Arc::new(self.mint(&host)?);
        let bytes = host.len() + LEAF_CONFIG_BYTES + self.cert_der.len();
        self.leaves.insert(host, config.clone(), bytes);
        Ok(config)
    }

    fn mint(&self, host: &str) -> Result<ServerConfig, String> {
        let key = KeyPair::generate().map_err(|err| err.to_string())?;
        let san = match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(host.try_into().map_err(|err| format!("{err}"))?),
        };
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![san];
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, host);
        params.distinguished_name = name;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let year = chrono::Utc::now().year();
        params.not_before = date_time_ymd(year - 1, 1, 1);
        params.not_after = date_time_ymd(year + 1, 12, 31);
        let leaf = params
            .signed_by(&key, &self.issuer)
            .map_err(|err| err.to_string())?;
        let chain = vec![leaf.der().clone(), self.cert_der.clone()];
        let private = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(|err| err.to_string())?
                .with_no_client_auth()
                .with_single_cert(chain, private)
                .map_err(|err| err.to_string())?;
        // The decrypted side is served as HTTP/1.1.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }

    /// DER of the CA certificate (for tests and clients built in-process).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }
}

fn ca_name(common: &str, organization: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common);
    name.push(DnType::OrganizationName, organization);
    name
}

fn ca_params(name: &DistinguishedName) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = name.clone();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let year = chrono::Utc::now().year();
    params.not_before = date_time_ymd(year - 1, 1, 1);
    params.not_after = date_time_ymd(year + 10, 12, 31);
    params
}

/// The CA certificate on disk, as `doctor` sees it (without loading the key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaStatus {
    /// Not generated yet (the Sidecar creates it on its first start).
    Missing { path: PathBuf },
    /// Present but not a PEM X.509 certificate.
    Unreadable { path: PathBuf, error: String },
    /// A certificate valid until `not_after` (Unix seconds).
    Present { path: PathBuf, not_after: i64 },
}

/// Look at `<state_dir>/generated-firma-ca/firma-ca.crt`.
pub fn inspect(state: &StateDir) -> CaStatus {
    let path = state.ca_cert();
    let Ok(pem) = std::fs::read(&path) else {
        return CaStatus::Missing { path };
    };
    let parsed = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|err| err.to_string())
        .and_then(|(_, pem)| {
            pem.parse_x509()
                .map(|cert| cert.validity().not_after.timestamp())
                .map_err(|err| err.to_string())
        });
    match parsed {
        Ok(not_after) => CaStatus::Present { path, not_after },
        Err(error) => CaStatus::Unreadable { path, error },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_loaded_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (first, origin) =
            CertificateAuthority::load_or_generate(&StateDir::new(dir.path())).unwrap();
        assert_eq!(origin, CaOrigin::Generated);
        let key = StateDir::new(dir.path()).ca_key();
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let pem = std::fs::read(&first.cert_path).unwrap();
        let (second, origin) =
            CertificateAuthority::load_or_generate(&StateDir::new(dir.path())).unwrap();
        assert_eq!(origin, CaOrigin::Loaded);
        assert_eq!(std::fs::read(&second.cert_path).unwrap(), pem);
        assert_eq!(first.cert_der(), second.cert_der());
    }

    #[test]
    fn leaf_chains_to_the_ca_and_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        CertificateAuthority::load_or_generate(&StateDir::new(dir.path())).unwrap();
        // Load (not generate) so the issuer is rebuilt from the files.
        let (ca, _) = CertificateAuthority::load_or_generate(&StateDir::new(dir.path())).unwrap();
        let a = ca.server_config("Example.com").unwrap();
        let b = ca.server_config("example.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        ca.server_config("127.0.0.1").unwrap();
    }

    #[test]
    fn cert_without_key_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        CertificateAuthority::load_or_generate(&StateDir::new(dir.path())).unwrap();
        std::fs::remove_file(StateDir::new(dir.path()).ca_key()).unwrap();
        let err = CertificateAuthority::load_or_generate(&StateDir::new(dir.path()))
            .err()
            .unwrap();
        assert!(err.to_string().contains("is missing"), "{err}");
    }
}
