//! Finding and calling the Authority: the one place that knows where the running Authority is
//! ([`Target::locate`]) and how a capability is asked for ([`Target::issue`]). Shared by the
//! Sidecar, `firma token`, `firma run`, the supervisor and `doctor`.
//!
//! Transports: `http://` (plain, loopback only unless explicitly allowed) or `https://` verified
//! against a CA file, optionally presenting a client certificate (mutual TLS).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::signed::{Pinned, SnapshotDigest};
use super::store::fleet::{FleetReport, Sighting};
use crate::config::LoadedConfig;
use crate::config::schema::{AuthorityConfig, AuthorityMode};
use crate::error::Hinted;
use crate::proto::authority_client::AuthorityClient;
use crate::proto::{
    GetWitnessedCheckpointRequest, IssueCapabilityRequest, ListSidecarsRequest, PublishRequest,
    PublishResponse, RevokeRequest, WatchRevocationsRequest, WitnessedCheckpoint,
};
use crate::state_dir::StateDir;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// URL prefix of a Unix-socket target (`unix:/run/user/1000/firma/authority.sock`).
pub const UNIX_SCHEME: &str = "unix:";

/// A client certificate and its key (PEM files), presented to an Authority that asks for one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl ClientIdentity {
    /// The identity configured by a `client_cert` / `client_key` pair (config validation
    /// ensures both or neither).
    pub fn pair(cert: &Option<PathBuf>, key: &Option<PathBuf>) -> Option<Self> {
        Some(Self {
            cert: cert.clone()?,
            key: key.clone()?,
        })
    }
}

/// Where and how to reach an Authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `http://…` or `https://…`.
    pub url: String,
    /// CA that signed an `https://` Authority's certificate.
    pub ca_cert: Option<PathBuf>,
    /// Our client certificate, for an Authority that authenticates callers by certificate.
    pub identity: Option<ClientIdentity>,
    /// Allow plain `http://` to a non-loopback host (logged loudly).
    pub allow_insecure: bool,
    /// What told us the address (a file or firma.toml), for messages.
    pub from: String,
}

/// The URL of a local Authority bound to `addr`: `https://` when `[authority]` serves TLS, and a
/// wildcard address dialled over loopback.
pub fn local_url(authority: &AuthorityConfig, addr: SocketAddr) -> String {
    url_of(authority.tls_cert.is_some(), addr)
}

/// The URL of an Authority bound to `addr`, serving TLS or not (a wildcard address dialled over
/// loopback).
pub fn url_of(tls: bool, addr: SocketAddr) -> String {
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", crate::lifecycle::probes::dialable(addr))
}

impl Target {
    /// The running Authority of this project, as its operator: in local mode the operator
    /// socket `<state>/authority.sock` (the TCP port serves sidecars only), in remote mode
    /// `[authority] url` with the operator's client certificate (`[authority] client_cert`).
    pub fn locate(state: &StateDir, config: Option<&LoadedConfig>) -> Result<Self, Hinted> {
        match config {
            Some(loaded) if loaded.config.authority.mode == AuthorityMode::Remote => {
                let authority = &loaded.config.authority;
                let link = &loaded.config.sidecar.authority;
                let url = authority.url.clone().ok_or_else(|| {
                    Hinted::new(format!(
                        "{}: [authority] mode = \"remote\" needs url",
                        loaded.path.display()
                    ))
                    .hint("set [authority] url to the Authority's https:// address")
                })?;
                Ok(Self {
                    url,
                    ca_cert: link.ca_cert.clone(),
                    identity: ClientIdentity::pair(&authority.client_cert, &authority.client_key),
                    allow_insecure: link.allow_insecure,
                    from: loaded.path.display().to_string(),
                })
            }
            _ => {
                let socket = state.authority_socket();
                Ok(Self {
                    url: format!("{UNIX_SCHEME}{}", socket.display()),
                    ca_cert: None,
                    identity: None,
                    allow_insecure: false,
                    from: "the state directory".into(),
                })
            }
        }
    }

    /// The Authority a Sidecar watches: `url` (what `firma sidecar start` passes with
    /// `--authority-url`), else `[sidecar.authority] url`, with that section's CA.
    pub fn for_sidecar(loaded: &LoadedConfig, url: Option<String>) -> Self {
        let link = &loaded.config.sidecar.authority;
        let (url, from) = match url {
            Some(url) => (url, "--authority-url".to_string()),
            None => (link.url.clone(), loaded.path.display().to_string()),
        };
        Self {
            url,
            ca_cert: link.ca_cert.clone(),
            identity: ClientIdentity::pair(&link.client_cert, &link.client_key),
            allow_insecure: link.allow_insecure,
            from,
        }
    }

    /// The Authority replicas a Sidecar watches, in order of preference: `url` (what `firma
    /// sidecar start` passes with `--authority-url`) alone, else `[sidecar.authority] urls`,
    /// else `[sidecar.authority] url`.
    pub fn for_sidecar_replicas(loaded: &LoadedConfig, url: Option<String>) -> Vec<Self> {
        let urls = &loaded.config.sidecar.authority.urls;
        if url.is_some() || urls.is_empty() {
            return vec![Self::for_sidecar(loaded, url)];
        }
        urls.iter()
            .map(|url| Self {
                url: url.clone(),
                ..Self::for_sidecar(loaded, None)
            })
            .collect()
    }

    /// The configured (not yet connected) endpoint; checks scheme, loopback rule, CA and identity.
    pub fn endpoint(&self) -> Result<Endpoint, Hinted> {
        endpoint(
            &self.url,
            self.ca_cert.as_deref(),
            self.identity.as_ref(),
            self.allow_insecure,
        )
    }

    /// The endpoint of one address `addr` that the URL's host name resolved to: dialled at the
    /// address, verified (TLS) and addressed (`:authority`) by the name.
    pub fn endpoint_at(&self, addr: SocketAddr) -> Result<Endpoint, Hinted> {
        let uri: http::Uri = self
            .url
            .parse()
            .map_err(|_| Hinted::new(format!("{:?} is not a URL", self.url)))?;
        let scheme = uri.scheme_str().unwrap_or("http");
        let host = uri.host().unwrap_or_default().to_string();
        let dialled = format!("{scheme}://{addr}");
        let mut endpoint = build_endpoint(
            &dialled,
            self.ca_cert.as_deref(),
            self.identity.as_ref(),
            self.allow_insecure,
            Some(&host),
        )?;
        endpoint = endpoint.origin(uri);
        Ok(endpoint)
    }

    /// Connect now; the error names the address and where it came from.
    pub async fn connect(&self) -> Result<AuthorityClient<Channel>, Hinted> {
        let channel = self.endpoint()?.connect().await.map_err(|err| {
            Hinted::new(format!(
                "cannot reach the Authority at {} (address from {}): {}",
                self.url,
                self.from,
                crate::error::chain(&err)
            ))
            .hint(
                "start it (`firma sidecar start`, or `firma authority` in the foreground), or check \
                 the address, --state-dir and firma.toml",
            )
        })?;
        Ok(AuthorityClient::new(channel))
    }

    /// Ask for a capability. A policy denial is an error naming its reason code.
    pub async fn issue(&self, request: &CapabilityRequest) -> Result<Issued, Hinted> {
        let mut client = self.connect().await?;
        let response = client
            .issue_capability(IssueCapabilityRequest {
                agent_id: request.agent.clone(),
                actions: request.actions.clone(),
                resource_scope: request.scope.clone(),
                session_id: request.session_id.clone(),
                sandbox_id: request.sandbox_id.clone(),
                ttl_seconds: i64::try_from(request.ttl.as_secs()).unwrap_or(i64::MAX),
            })
            .await
            .map_err(|status| self.rpc_error(&status))?
            .into_inner();
        if !response.granted {
            return Err(Hinted::new(format!(
                "the Authority denied a capability for agent {:?} ({}): {}",
                request.agent, response.deny_reason, response.deny_message
            ))
            .hint(
                "issuance is decided by the Cedar policies in issuance-policies/ (see \
                 docs/authority.md); check the agent id and [project].actions",
            ));
        }
        let expires_at = response
            .expires_at
            .as_ref()
            .and_then(from_timestamp)
            .ok_or_else(|| {
                Hinted::new(format!(
                    "the Authority at {} granted token {} without a valid expiry",
                    self.url, response.token_id
                ))
                .hint("the Authority is not a compatible firma Authority")
            })?;
        Ok(Issued {
            token: response.token,
            token_id: response.token_id,
            expires_at,
        })
    }

    /// Revoke a token by id (`expires_at`: its `exp`, when known, so the revocation can be
    /// pruned once it has expired). Returns whether it was new and when it was (first) revoked.
    pub async fn revoke(
        &self,
        token_id: &str,
        reason: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Revoked, Hinted> {
        let mut client = self.connect().await?;
        let response = client
            .revoke(RevokeRequest {
                token_id: token_id.to_string(),
                reason: reason.to_string(),
                expires_at: expires_at.map(timestamp),
            })
            .await
            .map_err(|status| self.rpc_error(&status))?
            .into_inner();
        Ok(Revoked {
            newly_revoked: response.newly_revoked,
            revoked_at: response.revoked_at.as_ref().and_then(from_timestamp),
        })
    }

    /// Publish policy bundles (etcd store): every replica serves them. `runtime` and `issuance`
    /// were loaded and validated locally, so mistakes are named by file before anything is sent.
    pub async fn publish(
        &self,
        runtime: &super::policy::PolicyBundle,
        issuance: &super::policy::PolicyBundle,
    ) -> Result<PublishResponse, Hinted> {
        let names = |files: &[PathBuf]| {
            files
                .iter()
                .map(|f| {
                    f.file_name()
                        .map_or_else(|| f.display().to_string(), |n| n.to_string_lossy().into())
                })
                .collect()
        };
        let mut client = self.connect().await?;
        Ok(client
            .publish(PublishRequest {
                runtime_policies: runtime.policies.clone(),
                issuance_policies: issuance.policies.clone(),
                schema: runtime.schema_text.clone(),
                runtime_files: names(&runtime.files),
                issuance_files: names(&issuance.files),
            })
            .await
            .map_err(|status| self.rpc_error(&status))?
            .into_inner())
    }

    /// The Sidecars the Authority (with etcd: the fleet) has seen.
    pub async fn fleet(&self) -> Result<FleetReport, Hinted> {
        let mut client = self.connect().await?;
        let response = client
            .list_sidecars(ListSidecarsRequest {})
            .await
            .map_err(|status| self.rpc_error(&status))?
            .into_inner();
        let time = |ts: Option<prost_types::Timestamp>| ts.as_ref().and_then(from_timestamp);
        Ok(FleetReport {
            replica: response.replica,
            backend: response.backend,
            sidecars: response
                .sidecars
                .into_iter()
                .map(|s| Sighting {
                    sidecar_id: s.sidecar_id,
                    host: s.host,
                    address: s.address,
                    replica: s.replica,
                    bundle_revision: s.bundle_revision,
                    bundle_version: s.bundle_version,
                    checkpoint_seq: s.checkpoint_seq,
                    checkpoint_at: time(s.checkpoint_at),
                    last_seen: time(s.last_seen).unwrap_or_default(),
                    connected: s.connected,
                })
                .collect(),
        })
    }

    /// Whether `token_id` is revoked, from the Authority's revocation snapshot (verified with
    /// the pinned key): `Some((revoked_at, reason))` or `None`.
    pub async fn revocation_of(
        &self,
        token_id: &str,
        pinned: &Pinned,
    ) -> Result<Option<(DateTime<Utc>, String)>, Hinted> {
        let mut client = self.connect().await?;
        let mut stream = client
            .watch_revocations(WatchRevocationsRequest {
                since: None,
                ..Default::default()
            })
            .await
            .map_err(|status| self.rpc_error(&status))?
            .into_inner();
        let mut digest = SnapshotDigest::default();
        let mut found = None;
        loop {
            let event = stream
                .message()
                .await
                .map_err(|status| self.rpc_error(&status))?
                .ok_or_else(|| {
                    Hinted::new(format!(
                        "the Authority at {} ended the revocation stream before its snapshot",
                        self.url
                    ))
                    .hint("see authority.log in the state directory")
                })?;
            let refused = |err: super::signed::Refused| {
                Hinted::new(format!(
                    "the revocation snapshot from {} does not verify: {err}",
                    self.url
                ))
                .hint("this is not the Authority whose authority.pub the project pins")
            };
            if event.snapshot_complete {
                pinned.verify_snapshot(&event, &digest).map_err(refused)?;
                return Ok(found);
            }
            pinned.verify_revocation(&event).map_err(refused)?;
            digest.add(&event);
            if event.token_id == token_id {
                let at = event.revoked_at.as_ref().and_then(from_timestamp);
                found = at.map(|at| (at, event.reason.clone()));
            }
        }
    }

    /// The latest checkpoint the Authority witnessed for `sidecar_id`.
    pub async fn witnessed(&self, sidecar_id: &str) -> Result<WitnessedCheckpoint, Hinted> {
        let mut client = self.connect().await?;
        Ok(client
            .get_witnessed_checkpoint(GetWitnessedCheckpointRequest {
                sidecar_id: sidecar_id.to_string(),
            })
            .await
            .map_err(|status| self.rpc_error(&status))?
            .into_inner())
    }

    /// An RPC failure as an operator message naming the Authority.
    pub fn rpc_error(&self, status: &tonic::Status) -> Hinted {
        match status.code() {
            tonic::Code::InvalidArgument => Hinted::new(format!(
                "the Authority rejected the request: {}",
                status.message()
            ))
            .hint("see `firma token issue --help` for the accepted values"),
            tonic::Code::Unavailable if status.message().contains("etcd") => Hinted::new(format!(
                "the Authority at {} refused: {}",
                self.url,
                status.message()
            ))
            .hint(
                "its etcd store has no quorum or cannot be reached: bring a majority of the \
                     etcd members back (docs/fleet.md#failure-modes); nothing was changed",
            ),
            tonic::Code::Unavailable => Hinted::new(format!(
                "the Authority at {} is unavailable: {}",
                self.url,
                status.message()
            ))
            .hint("check that it is running (`firma sidecar status`)"),
            tonic::Code::FailedPrecondition | tonic::Code::Aborted => Hinted::new(format!(
                "the Authority at {} refused: {}",
                self.url,
                status.message()
            ))
            .hint("see docs/fleet.md"),
            _ => Hinted::new(format!(
                "the Authority at {} failed: {} ({:?})",
                self.url,
                status.message(),
                status.code()
            ))
            .hint("see authority.log in the state directory"),
        }
    }
}

/// What a capability is asked for; asked again (same session) to refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapabilityRequest {
    pub agent: String,
    pub actions: Vec<String>,
    /// Resource scope (`*`, a host, `*.domain`, `host/path`).
    pub scope: String,
    pub session_id: String,
    /// The sandbox the agent runs in (empty: none); the token carries it into audit records.
    pub sandbox_id: String,
    /// Requested lifetime (the Authority clamps it to its max_ttl).
    pub ttl: Duration,
}

/// A granted capability.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issued {
    pub token: String,
    pub token_id: String,
    pub expires_at: DateTime<Utc>,
}

/// The answer to a revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    /// False when the token was already revoked.
    pub newly_revoked: bool,
    /// When it was (first) revoked.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Wire timestamp → UTC time (`None` when out of range).
pub fn from_timestamp(ts: &prost_types::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(ts.seconds, u32::try_from(ts.nanos).ok()?)
}

/// UTC time → wire timestamp.
pub fn timestamp(time: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: time.timestamp(),
        nanos: i32::try_from(time.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// Connect to `url` (`http://ip:port` to loopback, or `https://host:port` with `ca_cert`).
pub async fn connect(
    url: &str,
    ca_cert: Option<&Path>,
) -> Result<AuthorityClient<Channel>, Hinted> {
    Target {
        url: url.to_string(),
        ca_cert: ca_cert.map(Path::to_path_buf),
        identity: None,
        allow_insecure: false,
        from: "the caller".into(),
    }
    .connect()
    .await
}

/// The configured (not yet connected) endpoint for `url`; checks scheme, loopback rule, CA and
/// client identity.
pub fn endpoint(
    url: &str,
    ca_cert: Option<&Path>,
    identity: Option<&ClientIdentity>,
    allow_insecure: bool,
) -> Result<Endpoint, Hinted> {
    build_endpoint(url, ca_cert, identity, allow_insecure, None)
}

/// [`endpoint`], verifying a TLS server as `tls_name` (default: the URL's host).
fn build_endpoint(
    url: &str,
    ca_cert: Option<&Path>,
    identity: Option<&ClientIdentity>,
    allow_insecure: bool,
    tls_name: Option<&str>,
) -> Result<Endpoint, Hinted> {
    if let Some(path) = url.strip_prefix(UNIX_SCHEME) {
        super::socket::check(Path::new(path))?;
        return Ok(Endpoint::from_shared(url.to_string())
            .map_err(|err| Hinted::new(format!("{url:?} is not a usable socket path: {err}")))?
            .connect_timeout(CONNECT_TIMEOUT));
    }
    let uri: http::Uri = url.parse().map_err(|_| {
        Hinted::new(format!("{url:?} is not a URL"))
            .hint("use http://127.0.0.1:50051 or https://authority.example:50051")
    })?;
    let host = uri.host().unwrap_or_default().to_string();
    let base = Endpoint::from_shared(url.to_string())
        .map_err(|err| Hinted::new(format!("{url:?} is not a usable gRPC URL: {err}")))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    match uri.scheme_str() {
        Some("http") => {
            if !is_loopback_host(&host) {
                if !allow_insecure {
                    return Err(Hinted::new(format!(
                        "refusing plain-text gRPC to {url}: {host} is not a loopback address"
                    ))
                    .hint(
                        "use https:// with a CA file ([sidecar.authority] ca_cert), or (not \
                         recommended) allow_insecure = true",
                    ));
                }
                tracing::warn!(
                    url,
                    "INSECURE: plain-text gRPC to a non-loopback Authority; tokens and policies travel unencrypted"
                );
            }
            Ok(base)
        }
        Some("https") => {
            let ca_cert = ca_cert.ok_or_else(|| {
                Hinted::new(format!("{url} uses TLS but no CA certificate is configured"))
                    .hint("set [sidecar.authority] ca_cert to the PEM file of the CA that signed the Authority's certificate")
            })?;
            let mut tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read_pem(
                    ca_cert,
                    "CA certificate",
                    "fix [sidecar.authority] ca_cert in firma.toml",
                )?))
                .domain_name(
                    tls_name
                        .unwrap_or(&host)
                        .trim_start_matches('[')
                        .trim_end_matches(']'),
                );
            if let Some(identity) = identity {
                let hint = "fix client_cert / client_key in firma.toml (`firma authority cert issue` makes a pair)";
                tls = tls.identity(Identity::from_pem(
                    read_pem(&identity.cert, "client certificate", hint)?,
                    read_pem(&identity.key, "client key", hint)?,
                ));
            }
            base.tls_config(tls).map_err(|err| {
                Hinted::new(format!(
                    "TLS setup for {url} with CA {} failed: {}",
                    ca_cert.display(),
                    crate::error::chain(&err)
                ))
                .hint("the CA file must hold PEM certificates")
            })
        }
        _ => Err(Hinted::new(format!(
            "{url:?}: the Authority URL must start with http:// or https://"
        ))
        .hint("e.g. http://127.0.0.1:50051")),
    }
}

fn read_pem(path: &Path, what: &str, hint: &str) -> Result<Vec<u8>, Hinted> {
    std::fs::read(path).map_err(|err| {
        Hinted::new(format!("cannot read {what} {}: {err}", path.display())).hint(hint)
    })
}

/// `localhost`, `127.0.0.0/8` and `::1`.
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(endpoint("http://127.0.0.1:1", None, None, false).is_ok());
        assert!(endpoint("http://[::1]:1", None, None, false).is_ok());
        assert!(endpoint("http://localhost:1", None, None, false).is_ok());
        let err = endpoint("http://10.0.0.1:1", None, None, false).unwrap_err();
        assert!(err.message().contains("10.0.0.1"), "{err}");
        assert!(endpoint("http://10.0.0.1:1", None, None, true).is_ok());
        assert!(endpoint("https://a.example:1", None, None, false).is_err());
        assert!(endpoint("ftp://a:1", None, None, false).is_err());
    }

    #[test]
    fn local_urls_follow_tls_and_dial_wildcards_over_loopback() {
        let mut authority: AuthorityConfig = toml::from_str("mode = \"local\"").unwrap();
        let addr: SocketAddr = "0.0.0.0:5".parse().unwrap();
        assert_eq!(local_url(&authority, addr), "http://127.0.0.1:5");
        authority.tls_cert = Some("tls.crt".into());
        assert_eq!(local_url(&authority, addr), "https://127.0.0.1:5");
        let v6: SocketAddr = "[::]:5".parse().unwrap();
        assert_eq!(local_url(&authority, v6), "https://[::1]:5");
    }
}
