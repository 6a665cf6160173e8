//! The environment `firma run` gives the agent: proxy variables pointing at the relay and CA
//! variables pointing at a bundle that trusts the Sidecar's generated CA.

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

/// Variables removed from the agent's inherited environment: `NO_PROXY` would let listed hosts
/// skip the Sidecar unrecorded, and stale proxy variables are replaced by the relay's.
const REMOVED: &[&str] = &[
    "NO_PROXY",
    "no_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// The agent's environment: firma run's own, without [`REMOVED`], plus the CA variables.
pub fn agent_env(
    inherited: impl IntoIterator<Item = (String, String)>,
    ca_bundle: &Path,
    ca_cert: &Path,
) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = inherited
        .into_iter()
        .filter(|(name, _)| !REMOVED.contains(&name.as_str()))
        .collect();
    let bundle = ca_bundle.display().to_string();
    for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"] {
        vars.retain(|(k, _)| k != name);
        vars.push((name.to_string(), bundle.clone()));
    }
    // Node adds these to its built-in roots, so the CA alone is right here.
    vars.retain(|(k, _)| k != "NODE_EXTRA_CA_CERTS");
    vars.push((
        "NODE_EXTRA_CA_CERTS".to_string(),
        ca_cert.display().to_string(),
    ));
    vars
}

/// The proxy variables, both cases, pointing at the relay (`proxy` carries its credentials).
pub fn proxy_env(proxy: &str) -> Vec<(String, String)> {
    let mut vars = Vec::new();
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        vars.push((name.to_string(), proxy.to_string()));
        vars.push((name.to_ascii_lowercase(), proxy.to_string()));
    }
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
        let vars = proxy_env("http://firma:s@127.0.0.1:9");
        for name in ["HTTP_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
            assert!(
                vars.iter()
                    .any(|(k, v)| k == name && v == "http://firma:s@127.0.0.1:9"),
                "{name}"
            );
        }
    }

    #[test]
    fn no_proxy_is_cleared_and_ca_variables_set() {
        let inherited = [
            ("NO_PROXY", "example.com"),
            ("no_proxy", "*"),
            ("http_proxy", "http://elsewhere:1"),
            ("PATH", "/bin"),
            ("SSL_CERT_FILE", "/old.pem"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let vars = agent_env(inherited, Path::new("/b.pem"), Path::new("/c.crt"));
        for gone in ["NO_PROXY", "no_proxy", "http_proxy"] {
            assert!(!vars.iter().any(|(k, _)| k == gone), "{gone}");
        }
        assert!(vars.contains(&("PATH".into(), "/bin".into())));
        assert!(vars.contains(&("NODE_EXTRA_CA_CERTS".into(), "/c.crt".into())));
        assert!(vars.contains(&("REQUESTS_CA_BUNDLE".into(), "/b.pem".into())));
        assert_eq!(vars.iter().filter(|(k, _)| k == "SSL_CERT_FILE").count(), 1);
    }
}
