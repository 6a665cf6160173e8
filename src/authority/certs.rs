//! `firma authority cert`: an operator-held CA and the certificates it signs, so a deployment
//! over the network needs no openssl incantations.
//!
//! - the **CA** (`init`): a self-signed ECDSA P-256 CA certificate (10 years) and its key (0600).
//!   `[authority] client_ca` names it; Sidecars and operators trust it as `ca_cert` too when it
//!   also signs the Authority's server certificate.
//! - **client certificates** (`issue --role operator|sidecar`): `CN=<name>, OU=<role>` — the
//!   convention `roles::role_of_certificate` reads — with the `clientAuth` extended key usage.
//! - **server certificates** (`issue --role server`): for the Authority's `tls_cert`, with the
//!   `serverAuth` usage and the DNS names / IP addresses clients dial.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use chrono::{Datelike, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::roles::{OPERATOR_OU, SIDECAR_OU};
use crate::error::Hinted;
use crate::fsutil::{Durability, write_atomic};

/// How long a CA is valid.
pub const CA_DAYS: i64 = 3650;
/// Default lifetime of an issued certificate.
pub const DEFAULT_DAYS: u32 = 365;

/// What an issued certificate is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CertRole {
    /// A client that may mint and revoke.
    Operator,
    /// A Sidecar: watches bundles and revocations, reports checkpoints.
    Sidecar,
    /// The Authority's own TLS certificate (`[authority] tls_cert`).
    Server,
}

impl CertRole {
    pub fn name(self) -> &'static str {
        match self {
            Self::Operator => OPERATOR_OU,
            Self::Sidecar => SIDECAR_OU,
            Self::Server => "server",
        }
    }
}

/// One certificate to issue.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    pub role: CertRole,
    /// The common name: a Sidecar's id, an operator's name, the server's main DNS name.
    pub name: String,
    /// Extra DNS names (server certificates).
    pub dns: Vec<String>,
    /// IP addresses clients dial (server certificates).
    pub ips: Vec<IpAddr>,
    pub days: u32,
}

/// Files written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The CA key that sits beside a CA certificate (`client-ca.crt` → `client-ca.key`).
pub fn key_beside(cert: &Path) -> PathBuf {
    cert.with_extension("key")
}

/// Create a CA at `cert` (and its key at `key`). Refuses to replace existing files unless
/// `force`: every certificate it signed would stop verifying.
pub fn init_ca(cert: &Path, key: &Path, label: &str, force: bool) -> Result<Written, Hinted> {
    refuse_existing(&[cert, key], force)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("firma CA ({label})"));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, CA_DAYS);
    let key_pair = KeyPair::generate().map_err(rcgen_error)?;
    let certificate = params.self_signed(&key_pair).map_err(rcgen_error)?;
    write_pair(cert, &certificate.pem(), key, &key_pair.serialize_pem())
}

/// Sign a certificate for `request` with the CA (`ca_cert`, `ca_key`) into `<out>/<name>.crt`
/// and `<out>/<name>.key`.
pub fn issue(
    ca_cert: &Path,
    ca_key: &Path,
    request: &LeafRequest,
    out: &Path,
    force: bool,
) -> Result<Written, Hinted> {
    crate::config::load::validate_agent_id(&request.name).map_err(|why| {
        Hinted::new(format!("--name {:?} {why}", request.name))
            .hint("use letters, digits, '.', '_' or '-' (at most 64), e.g. --name host-b")
    })?;
    if request.days == 0 {
        return Err(
            Hinted::new("--days 0: a certificate must be valid for at least a day")
                .hint("e.g. --days 365"),
        );
    }
    let ca_pem = std::fs::read_to_string(ca_cert).map_err(|err| {
        Hinted::new(format!(
            "cannot read the CA certificate {}: {err}",
            ca_cert.display()
        ))
        .hint("create one with `firma authority cert init`, or pass --ca")
    })?;
    let ca_key_pem = std::fs::read_to_string(ca_key).map_err(|err| {
        Hinted::new(format!(
            "cannot read the CA key {}: {err}",
            ca_key.display()
        ))
        .hint("the CA key sits beside the CA certificate ([authority] client_ca_key overrides)")
    })?;
    let ca_key_pair = KeyPair::from_pem(&ca_key_pem).map_err(|err| {
        Hinted::new(format!(
            "{} is not a usable CA key: {err}",
            ca_key.display()
        ))
        .hint("it must be the PEM private key of the CA certificate")
    })?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key_pair).map_err(|err| {
        Hinted::new(format!(
            "{} is not a usable CA certificate: {err}",
            ca_cert.display()
        ))
        .hint("it must be a PEM certificate, e.g. from `firma authority cert init`")
    })?;

    let mut names: Vec<SanType> = Vec::new();
    if request.role == CertRole::Server || is_dns_name(&request.name) {
        names.push(SanType::DnsName(
            request.name.clone().try_into().map_err(rcgen_error)?,
        ));
    }
    for dns in &request.dns {
        names.push(SanType::DnsName(dns.clone().try_into().map_err(|_| {
            Hinted::new(format!("--dns {dns:?} is not a DNS name"))
                .hint("e.g. --dns authority.example")
        })?));
    }
    names.extend(request.ips.iter().map(|ip| SanType::IpAddress(*ip)));
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
    params.subject_alt_names = names;
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, request.name.clone());
    if request.role != CertRole::Server {
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, request.role.name());
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match request.role {
        CertRole::Server => ExtendedKeyUsagePurpose::ServerAuth,
        CertRole::Operator | CertRole::Sidecar => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, i64::from(request.days));
    let key_pair = KeyPair::generate().map_err(rcgen_error)?;
    let certificate = params.signed_by(&key_pair, &issuer).map_err(rcgen_error)?;
    let cert = out.join(format!("{}.crt", request.name));
    let key = out.join(format!("{}.key", request.name));
    refuse_existing(&[&cert, &key], force)?;
    write_pair(&cert, &certificate.pem(), &key, &key_pair.serialize_pem())
}

fn is_dns_name(name: &str) -> bool {
    name.parse::<IpAddr>().is_err()
        && name
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= 63 && !label.starts_with('-'))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'))
}

/// Valid from the start of today (UTC) for `days` days.
fn set_validity(params: &mut CertificateParams, days: i64) {
    let today = Utc::now().date_naive();
    let until = today + chrono::Duration::days(days);
    let at = |d: chrono::NaiveDate| {
        rcgen::date_time_ymd(
            d.year(),
            u8::try_from(d.month()).unwrap_or(1),
            u8::try_from(d.day()).unwrap_or(1),
        )
    };
    params.not_before = at(today);
    params.not_after = at(until);
}

fn refuse_existing(paths: &[&Path], force: bool) -> Result<(), Hinted> {
    if force {
        return Ok(());
    }
    match paths.iter().find(|p| p.exists()) {
        Some(path) => Err(
            Hinted::new(format!("{} already exists", path.display())).hint(
                "pass --force to replace it (certificates signed by a replaced CA stop verifying)",
            ),
        ),
        None => Ok(()),
    }
}

fn write_pair(cert: &Path, cert_pem: &str, key: &Path, key_pem: &str) -> Result<Written, Hinted> {
    for dir in [cert.parent(), key.parent()].into_iter().flatten() {
        std::fs::create_dir_all(dir).map_err(|err| {
            Hinted::new(format!("cannot create {}: {err}", dir.display()))
                .hint("choose another --out directory")
        })?;
    }
    // The key first: a certificate without its key is useless, a stray key is harmless.
    write_atomic(key, key_pem.as_bytes(), 0o600, Durability::Durable)?;
    write_atomic(cert, cert_pem.as_bytes(), 0o644, Durability::Durable)?;
    Ok(Written {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
    })
}

fn rcgen_error(err: rcgen::Error) -> Hinted {
    Hinted::new(format!("cannot make the certificate: {err}"))
}

#[cfg(test)]
mod tests {
    use super::super::roles::{Role, role_of_certificate};
    use super::*;
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;

    #[test]
    fn ca_signs_clients_whose_role_reads_back_and_servers_with_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, ca_key) = (dir.path().join("ca.crt"), dir.path().join("ca.key"));
        init_ca(&ca, &ca_key, "test", false).unwrap();
        assert!(
            init_ca(&ca, &ca_key, "test", false).is_err(),
            "never silently replaced"
        );
        let request = LeafRequest {
            role: CertRole::Sidecar,
            name: "host-b".into(),
            dns: vec![],
            ips: vec![],
            days: 30,
        };
        let out = dir.path().join("out");
        let written = issue(&ca, &ca_key, &request, &out, false).unwrap();
        let der = CertificateDer::from_pem_file(&written.cert).unwrap();
        assert_eq!(
            role_of_certificate(der.as_ref()).unwrap(),
            (Role::Sidecar, "host-b".to_string())
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&written.key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(issue(&ca, &ca_key, &request, &out, false).is_err());

        let server = LeafRequest {
            role: CertRole::Server,
            name: "authority.example".into(),
            dns: vec!["localhost".into()],
            ips: vec!["10.0.0.1".parse().unwrap()],
            days: 30,
        };
        let written = issue(&ca, &ca_key, &server, &out, false).unwrap();
        let der = CertificateDer::from_pem_file(&written.cert).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let sans = format!("{:?}", parsed.subject_alternative_name().unwrap().unwrap());
        assert!(
            sans.contains("authority.example") && sans.contains("localhost"),
            "{sans}"
        );
        assert!(
            role_of_certificate(der.as_ref()).is_err(),
            "a server certificate is no client"
        );

        let bad = LeafRequest {
            name: "no spaces".into(),
            ..request
        };
        assert!(
            issue(&ca, &ca_key, &bad, &out, false)
                .unwrap_err()
                .message()
                .contains("--name")
        );
    }
}
