//! The typed `firma.toml`: one sectioned file, `[project]`, `[authority]` and `[sidecar.*]`.
//!
//! Every struct rejects unknown keys so a typo is an error naming file, line and column rather
//! than a silently ignored setting. Paths are stored as written; [`super::load`] resolves relative
//! ones against the file's directory. `docs/configuration.md` documents every key.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The whole file.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FirmaConfig {
    pub project: ProjectConfig,
    pub authority: AuthorityConfig,
    #[serde(default)]
    pub sidecar: SidecarConfig,
    #[serde(default)]
    pub run: RunConfig,
}

/// `[project]`: who the agent is and which provider it talks to.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    /// Agent id: the Cedar principal and the `agent_id` in tokens and audit records.
    pub agent: String,
    /// Provider name from the built-in provider table (`anthropic`, `openai`, ...).
    pub provider: String,
    /// Action classes `firma run` asks the Authority for.
    #[serde(default = "default_run_actions")]
    pub actions: Vec<String>,
    /// Lifetime `firma run` requests for its token (refreshed before expiry).
    #[serde(default = "default_token_ttl", with = "duration_str")]
    pub token_ttl: Duration,
    /// Deployment id: the audience (`aud`) of the tokens the Authority signs and the Sidecar
    /// accepts. Default: the name of the workspace directory (see `LoadedConfig::deployment`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment: Option<String>,
}

/// `[authority]`: a local Authority the daemon boots, or a remote one it only uses.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuthorityConfig {
    pub mode: AuthorityMode,
    /// gRPC listen address of a local Authority (`mode = "local"`). Port 0 picks a free port.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// URL of a remote Authority (`mode = "remote"`).
    #[serde(default)]
    pub url: Option<String>,
    /// Ed25519 signing key (PKCS#8 PEM) for capability tokens.
    #[serde(default = "default_authority_key")]
    pub key: PathBuf,
    /// Directory of runtime Cedar policies (`*.cedar`) and `schema.cedarschema`.
    #[serde(default = "default_policies")]
    pub policies: PathBuf,
    /// Directory of issuance policies: who may obtain tokens for which action classes.
    #[serde(default = "default_issuance_policies")]
    pub issuance_policies: PathBuf,
    /// Upper bound on a token's lifetime; longer requests are clamped.
    #[serde(default = "default_max_ttl", with = "duration_str")]
    pub max_ttl: Duration,
    /// How long a sidecar may enforce with a policy bundle without a refresh.
    #[serde(default = "default_bundle_ttl", with = "duration_str")]
    pub bundle_ttl: Duration,
    /// TLS certificate chain (PEM) for the gRPC server; with `tls_key`, the Authority speaks TLS.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) matching `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Allow plain-text gRPC on a non-loopback address (logged loudly). Off by default.
    #[serde(default)]
    pub allow_insecure_listen: bool,
    /// CA certificate (PEM) that signs client certificates: with TLS, callers on the TCP port
    /// are authenticated by certificate and get the role it names (docs/authority.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca: Option<PathBuf>,
    /// The client CA's private key, used only by `firma authority cert issue` (the Authority
    /// never reads it). Default: `client_ca` with the extension `.key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_key: Option<PathBuf>,
    /// The operator's client certificate (PEM) for a remote Authority (`firma token`, `run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// The key (PEM) of `client_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// Directory of the audit public keys of the Sidecars whose checkpoints this Authority
    /// witnesses: `<sidecar-id>.pub` (the id `local` defaults to this project's audit.pub).
    #[serde(default = "default_witness_keys")]
    pub witness_keys: PathBuf,
    /// `[authority.metrics]`: Prometheus endpoint (off unless `listen` is set).
    #[serde(default, skip_serializing_if = "MetricsConfig::is_off")]
    pub metrics: MetricsConfig,
    /// Where the shared state lives: local files (default) or etcd, for replicas (docs/fleet.md).
    #[serde(default)]
    pub store: StoreConfig,
    /// This replica's name in the fleet view. Default: `<hostname>:<port>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_name: Option<String>,
}

/// Which store holds the Authority's shared state (revocations, witnessed checkpoints, the
/// policy bundles in force).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    /// Files in the data dir and the policy directories: one Authority, no extra service.
    #[default]
    Files,
    /// An etcd cluster shared by several Authority replicas.
    Etcd,
}

impl StoreBackend {
    pub fn name(self) -> &'static str {
        match self {
            Self::Files => "files",
            Self::Etcd => "etcd",
        }
    }
}

/// `[authority.store]`: the shared state of the Authority (docs/fleet.md).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default)]
    pub backend: StoreBackend,
    /// etcd client URLs (`http://10.0.0.5:2379`, `https://…`), tried in turn.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
    /// Key prefix of this deployment's state. Default: `/firma/<deployment>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// CA certificate (PEM) of the etcd cluster, for `https://` endpoints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) presented to etcd (its `--client-cert-auth`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// The key (PEM) of `client_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// How long one etcd request may take before the write is refused (no quorum, no member).
    #[serde(default = "default_store_timeout", with = "duration_str")]
    pub timeout: Duration,
    /// Allow plain `http://` to a non-loopback etcd endpoint (logged loudly). Off by default.
    #[serde(default)]
    pub allow_insecure: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: StoreBackend::Files,
            endpoints: Vec::new(),
            prefix: None,
            ca_cert: None,
            client_cert: None,
            client_key: None,
            timeout: default_store_timeout(),
            allow_insecure: false,
        }
    }
}

fn default_store_timeout() -> Duration {
    Duration::from_secs(2)
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AuthorityMode {
    Local,
    Remote,
}

/// `[sidecar.*]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SidecarConfig {
    #[serde(default)]
    pub proxy: ProxyConfig,
    #[serde(default)]
    pub mapping: MappingConfig,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub authority: SidecarAuthorityConfig,
    #[serde(default)]
    pub supervise: SuperviseConfig,
    /// `[sidecar.metrics]`: Prometheus endpoint (off unless `listen` is set).
    #[serde(default, skip_serializing_if = "MetricsConfig::is_off")]
    pub metrics: MetricsConfig,
}

/// `[sidecar.metrics]` / `[authority.metrics]`: a Prometheus endpoint (OpenMetrics text at
/// `/metrics`) on a listener of its own — never the proxy port (docs/metrics.md).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Where to serve; absent: no endpoint. Port 0 picks a free port (published in the state
    /// dir as `<role>.metrics.listen`). Loopback only unless `allow_remote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Allow a non-loopback `listen`: the endpoint has no authentication, and its numbers tell
    /// how much the agents do (expose it only on a network you trust, or behind a TLS proxy).
    #[serde(default)]
    pub allow_remote: bool,
}

impl MetricsConfig {
    pub fn is_off(&self) -> bool {
        self.listen.is_none() && !self.allow_remote
    }
}

/// What the supervisor does when a component dies on its own (systemd's `Restart=`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Tear the other component down and end (the guide's pair semantics).
    #[default]
    No,
    /// Restart it after a delay, unless it exited with status 0.
    OnFailure,
}

/// `[sidecar.supervise]`: self-healing of the daemon pair, modelled on systemd's `Restart=`,
/// `RestartSec=`, `StartLimitBurst=` and `StartLimitIntervalSec=`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SuperviseConfig {
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Delay before the first restart; doubled for each further restart in the window.
    #[serde(default = "default_restart_sec", with = "duration_str")]
    pub restart_sec: Duration,
    /// Upper bound of the doubled delay.
    #[serde(default = "default_restart_max_delay", with = "duration_str")]
    pub restart_max_delay: Duration,
    /// At most this many restarts of a component within `start_limit_interval`; one more
    /// failure and the supervisor gives up (tears the pair down and exits 2).
    #[serde(default = "default_start_limit_burst")]
    pub start_limit_burst: u32,
    #[serde(default = "default_start_limit_interval", with = "duration_str")]
    pub start_limit_interval: Duration,
}

impl Default for SuperviseConfig {
    fn default() -> Self {
        Self {
            restart: RestartPolicy::No,
            restart_sec: default_restart_sec(),
            restart_max_delay: default_restart_max_delay(),
            start_limit_burst: default_start_limit_burst(),
            start_limit_interval: default_start_limit_interval(),
        }
    }
}

/// `[sidecar.proxy]`: the forward proxy agents reach through `HTTP(S)_PROXY`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    #[serde(default = "default_sidecar_listen")]
    pub listen: SocketAddr,
    /// Hosts whose HTTPS traffic is decrypted with the generated CA so method and path can be
    /// classified (globs such as `*.example.com`). Other `CONNECT`s are decided on host and tunnelled.
    #[serde(default)]
    pub intercept_hosts: Vec<String>,
    /// Upstream connect + response-head timeout.
    #[serde(default = "default_upstream_timeout", with = "duration_str")]
    pub upstream_timeout: Duration,
}

/// What the Sidecar does with traffic no mapping rule classifies.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum UnmappedPolicy {
    #[default]
    Deny,
    Passthrough,
}

/// `[sidecar.mapping]`: how requests become action classes.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MappingConfig {
    #[serde(default = "default_mapping_rules")]
    pub rules: PathBuf,
    #[serde(default)]
    pub unmapped: UnmappedPolicy,
}

/// When the audit writer calls fsync.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// After every record, before the caller continues.
    Always,
    /// Group commit: at most every `fsync_interval`.
    #[default]
    Batched,
    /// Leave it to the OS.
    Never,
}

/// `[sidecar.audit]`: the signed, chained `audit.jsonl` (in the state dir unless `dir` is set).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Ed25519 signing key (PKCS#8 PEM) for audit records.
    #[serde(default = "default_audit_key")]
    pub key: PathBuf,
    #[serde(default)]
    pub fsync: FsyncPolicy,
    #[serde(default = "default_fsync_interval", with = "duration_str")]
    pub fsync_interval: Duration,
    /// Directory of the log (a persistent disk); unset: the state dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Rotate the live file when it reaches this size (`"0"`: never by size).
    #[serde(
        default = "default_rotate_size",
        skip_serializing_if = "Option::is_none"
    )]
    pub rotate_size: Option<ByteSize>,
    /// Rotate the live file when it is this old (and holds a record).
    #[serde(
        default,
        with = "optional_duration_str",
        skip_serializing_if = "Option::is_none"
    )]
    pub rotate_interval: Option<Duration>,
    /// Keep at most this many rotated files (the oldest are deleted, recorded in the log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<usize>,
    /// Keep the log's files under this size in all (deleting the oldest rotations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_total_size: Option<ByteSize>,
    /// Pin: `firma audit verify` fails with `wrong_key` unless the log verifies under the key
    /// with this fingerprint (hex SHA-256 of the 32-byte public key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
}

/// A size in bytes, written as an integer or a string with a unit: `"256MiB"`, `"1GiB"`,
/// `"500KB"`, `"4096"` (binary units KiB/MiB/GiB/TiB, decimal KB/MB/GB/TB, or B).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(u64);

impl ByteSize {
    pub const fn new(bytes: u64) -> Self {
        Self(bytes)
    }
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (unit, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let bad = || {
            format!(
                "invalid size {text:?} (use e.g. \"256MiB\", \"1GiB\", \"500MB\" or a number of bytes)"
            )
        };
        let number: u64 = number.parse().map_err(|_| bad())?;
        let multiplier: u64 = match unit.trim() {
            "" | "B" => 1,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            "TiB" => 1 << 40,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "TB" => 1_000_000_000_000,
            _ => return Err(bad()),
        };
        number
            .checked_mul(multiplier)
            .map(Self)
            .ok_or_else(|| format!("size {text:?} is too large"))
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            Text(String),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Bytes(bytes) => Ok(Self(bytes)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// `[sidecar.authority]`: how the Sidecar reaches the Authority and checks its tokens.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SidecarAuthorityConfig {
    /// gRPC URL; `firma sidecar start` overrides it with the local Authority's bound address.
    #[serde(default = "default_authority_url")]
    pub url: String,
    /// The Authority's public key (PEM) used to verify capability tokens offline.
    #[serde(default = "default_authority_pub")]
    pub public_key: PathBuf,
    /// CA certificate (PEM) to verify an `https://` Authority.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Allow plain `http://` to a non-loopback Authority (logged loudly). Off by default.
    #[serde(default)]
    pub allow_insecure: bool,
    /// The Sidecar's client certificate (PEM) for an Authority that authenticates callers
    /// (mutual TLS); its common name is the Sidecar's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// The key (PEM) of `client_cert`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// Several Authority replicas, in order of preference: a Sidecar whose streams drop moves
    /// to the next one (docs/fleet.md). Empty: `url` alone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    /// How long the Sidecar keeps enforcing a bundle no replica has refreshed; then it denies
    /// every call (`policy_bundle_stale`). Default and upper bound: the bundle's own TTL.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "optional_duration_str"
    )]
    pub max_bundle_age: Option<Duration>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            listen: default_sidecar_listen(),
            intercept_hosts: Vec::new(),
            upstream_timeout: default_upstream_timeout(),
        }
    }
}

impl Default for MappingConfig {
    fn default() -> Self {
        Self {
            rules: default_mapping_rules(),
            unmapped: UnmappedPolicy::Deny,
        }
    }
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            key: default_audit_key(),
            fsync: FsyncPolicy::Batched,
            fsync_interval: default_fsync_interval(),
            dir: None,
            rotate_size: default_rotate_size(),
            rotate_interval: None,
            keep: None,
            max_total_size: None,
            key_fingerprint: None,
        }
    }
}

impl Default for SidecarAuthorityConfig {
    fn default() -> Self {
        Self {
            url: default_authority_url(),
            public_key: default_authority_pub(),
            ca_cert: None,
            allow_insecure: false,
            client_cert: None,
            client_key: None,
            urls: Vec::new(),
            max_bundle_age: None,
        }
    }
}

/// `[run]`: how `firma run` confines the agent (docs/run.md).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// `auto` (sandbox with what the kernel offers, warn about the rest), `required`, `off`.
    #[serde(default)]
    pub sandbox: SandboxMode,
    /// Paths the agent must not see (`~/` is the home directory; relative paths are relative to
    /// the workspace). Replaces the default list when set.
    #[serde(default = "default_run_hide")]
    pub hide: Vec<String>,
    /// Paths the agent may write besides the workspace, a private `/tmp` and the agent's own
    /// defaults (same syntax as `hide`).
    #[serde(default)]
    pub writable: Vec<String>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            sandbox: SandboxMode::default(),
            hide: default_run_hide(),
            writable: Vec::new(),
        }
    }
}

/// `firma run --sandbox` / `[run] sandbox`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SandboxMode {
    /// Sandbox with every facility the kernel offers; one `warn:` line names what is missing.
    #[default]
    Auto,
    /// Refuse to start (exit 2) unless every facility is available.
    Required,
    /// No sandbox (the relay still serves only this agent).
    Off,
}

pub const DEFAULT_AUTHORITY_LISTEN: &str = "127.0.0.1:50051";
pub const DEFAULT_SIDECAR_LISTEN: &str = "127.0.0.1:8080";

fn default_run_actions() -> Vec<String> {
    vec![
        "communication.external.send".into(),
        "communication.internal.send".into(),
    ]
}
/// Home secrets and workspace files no agent needs to read.
pub const DEFAULT_RUN_HIDE: &[&str] = &[
    "~/.ssh",
    "~/.aws",
    "~/.gnupg",
    "~/.config/gcloud",
    "~/.azure",
    "~/.kube",
    "~/.docker",
    "~/.netrc",
    "~/.git-credentials",
    ".env",
];
fn default_run_hide() -> Vec<String> {
    DEFAULT_RUN_HIDE.iter().map(|s| (*s).to_string()).collect()
}
fn default_token_ttl() -> Duration {
    Duration::from_secs(15 * 60)
}
fn default_authority_key() -> PathBuf {
    "authority.key".into()
}
fn default_authority_pub() -> PathBuf {
    "authority.pub".into()
}
fn default_audit_key() -> PathBuf {
    "audit.key".into()
}
fn default_witness_keys() -> PathBuf {
    "witness-keys".into()
}
fn default_policies() -> PathBuf {
    "policies".into()
}
fn default_issuance_policies() -> PathBuf {
    "issuance-policies".into()
}
fn default_mapping_rules() -> PathBuf {
    "mapping-rules.toml".into()
}
fn default_max_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_bundle_ttl() -> Duration {
    Duration::from_secs(30)
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(30)
}
/// The default `rotate_size`: 256 MiB.
pub const DEFAULT_ROTATE_SIZE: ByteSize = ByteSize(256 << 20);
fn default_rotate_size() -> Option<ByteSize> {
    Some(DEFAULT_ROTATE_SIZE)
}
fn default_fsync_interval() -> Duration {
    Duration::from_millis(50)
}
fn default_restart_sec() -> Duration {
    Duration::from_secs(1)
}
fn default_restart_max_delay() -> Duration {
    Duration::from_secs(30)
}
fn default_start_limit_burst() -> u32 {
    5
}
fn default_start_limit_interval() -> Duration {
    Duration::from_secs(300)
}
fn default_sidecar_listen() -> SocketAddr {
    DEFAULT_SIDECAR_LISTEN.parse().expect("constant address")
}
fn default_authority_url() -> String {
    format!("http://{DEFAULT_AUTHORITY_LISTEN}")
}

/// [`duration_str`] for an optional key.
pub mod optional_duration_str {
    use std::time::Duration;

    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(value) => super::duration_str::serialize(value, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        super::duration_str::deserialize(deserializer).map(Some)
    }
}

/// Durations as humantime strings (`"30s"`, `"15m"`, `"1h"`); zero is rejected.
pub mod duration_str {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        let value = humantime::parse_duration(&text).map_err(|err| {
            D::Error::custom(format!(
                "invalid duration {text:?}: {err} (use e.g. \"30s\", \"15m\", \"1h\")"
            ))
        })?;
        if value.is_zero() {
            return Err(D::Error::custom(format!(
                "duration {text:?} must be greater than zero"
            )));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::ByteSize;
    use proptest::prelude::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_the_rest() {
        let parse = |text: &str| text.parse::<ByteSize>().map(ByteSize::bytes);
        assert_eq!(parse("256MiB"), Ok(256 << 20));
        assert_eq!(parse("1GiB"), Ok(1 << 30));
        assert_eq!(parse("500KB"), Ok(500_000));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse(" 2 MiB "), Ok(2 << 20));
        for bad in [
            "",
            "MiB",
            "1.5GiB",
            "-1",
            "10 parsecs",
            "99999999999999999999TiB",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        let toml: super::AuditConfig =
            toml::from_str("rotate_size = 1024\nmax_total_size = \"1GiB\"").unwrap();
        assert_eq!(toml.rotate_size, Some(ByteSize::new(1024)));
        assert_eq!(toml.max_total_size, Some(ByteSize::new(1 << 30)));
        let err = toml::from_str::<super::AuditConfig>("rotate_size = \"lots\"").unwrap_err();
        assert!(err.to_string().contains("invalid size"), "{err}");
    }

    proptest! {
        /// What is printed parses back to the same size.
        #[test]
        fn display_round_trips(bytes in any::<u64>()) {
            let size = ByteSize::new(bytes);
            prop_assert_eq!(size.to_string().parse::<ByteSize>(), Ok(size));
        }

        /// No input panics the parser.
        #[test]
        fn parsing_never_panics(text in ".{0,24}") {
            let _ = text.parse::<ByteSize>();
        }
    }
}
