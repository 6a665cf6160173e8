//! The environment `firma run` gives the agent: proxy variables pointing at the relay and CA
//! variables pointing at a bundle that trusts the Sidecar's generated CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::error::Hinted;
use crate::fsutil::{Durability, write_atomic};
use crate::state_dir::StateDir;

/// System trust stores tried, in order, for the combined bundle.
const SYSTEM_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// `(name, value)` pairs to set on the agent's process.
pub fn agent_env(proxy: SocketAddr, ca_bundle: &Path, ca_cert: &Path) -> Vec<(String, String)> {
    let proxy_url = format!("http://{proxy}");
    let mut vars = Vec::new();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        vars.push((name.to_string(), proxy_url.clone()));
        vars.push((name.to_ascii_lowercase(), proxy_url.clone()));
    }
    let bundle = ca_bundle.display().to_string();
    for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"] {
        vars.push((name.to_string(), bundle.clone()));
    }
    // Node adds these to its built-in roots, so the CA alone is right here.
    vars.push((
        "NODE_EXTRA_CA_CERTS".to_string(),
        ca_cert.display().to_string(),
    ));
    vars
}

/// Write the state dir's CA bundle: the system roots plus the firma CA, so tunnelled (not
/// intercepted) HTTPS keeps verifying against public roots while intercepted hosts verify
/// against the firma CA. Returns `(bundle, ca_cert)`.
pub fn write_ca_bundle(state: &StateDir) -> Result<(PathBuf, PathBuf), Hinted> {
    let ca_cert = state.ca_cert();
    let ca = std::fs::read(&ca_cert).map_err(|err| {
        Hinted::new(format!(
            "cannot read the sidecar CA {}: {err}",
            ca_cert.display()
        ))
        .hint("the Sidecar creates it at start-up; check `firma sidecar status`")
    })?;
    let mut bundle = SYSTEM_BUNDLES
        .iter()
        .find_map(|p| std::fs::read(p).ok())
        .unwrap_or_default();
    if !bundle.is_empty() && !bundle.ends_with(b"\n") {
        bundle.push(b'\n');
    }
    bundle.extend_from_slice(&ca);
    let path = state.ca_bundle();
    write_atomic(&path, &bundle, 0o644, Durability::Durable)?;
    Ok((path, ca_cert))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_proxy_variable_in_both_cases() {
        let vars = agent_env(
            "127.0.0.1:9".parse().unwrap(),
            Path::new("/b.pem"),
            Path::new("/c.crt"),
        );
        for name in ["HTTP_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
            assert!(
                vars.iter()
                    .any(|(k, v)| k == name && v == "http://127.0.0.1:9"),
                "{name}"
            );
        }
        assert!(vars.contains(&("NODE_EXTRA_CA_CERTS".into(), "/c.crt".into())));
        assert!(vars.contains(&("REQUESTS_CA_BUNDLE".into(), "/b.pem".into())));
    }
}
