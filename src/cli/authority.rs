//! `firma authority`: run the Authority (gRPC) in the foreground; `firma authority cert` mints
//! the certificates of a deployment over the network; `firma authority publish` puts the
//! project's policies in force on every replica (etcd store).

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::flags::{JsonFlag, StateDirArg};
use super::json::{self, Document};
use super::{CommandResult, Outcome, output};
use crate::authority::certs::{self, CertRole, LeafRequest};
use crate::authority::policy;
use crate::authority::run::{RunOptions, run as run_authority};
use crate::authority::store::short;
use crate::config::{Discovery, LoadedConfig};
use crate::error::Hinted;

const AFTER_HELP: &str = "\
Serves firma.v1.Authority, the standard grpc.health.v1.Health service and gRPC server reflection
on [authority].listen (port 0 picks a free port; the bound address is logged as `ready` with
field `addr`) for sidecars, and the operator socket <state_dir>/authority.sock (mint, revoke)
for its own user; it publishes its health in the state directory too (degraded while an older
policy bundle is in force). With tls_cert, tls_key and client_ca, callers on the port are
authenticated by their client certificate (`firma authority cert`). With the files store
(default) edits of policies/ and issuance-policies/ are hot-reloaded and revocations live in
$XDG_DATA_HOME/firma/revocations.txt; with [authority.store] backend = \"etcd\" several replicas
share them in etcd and policies are published with `firma authority publish` (docs/fleet.md).
SIGTERM or SIGINT stops it within a second, open streams included. Logs are JSON lines when
stderr is not a terminal (FIRMA_LOG sets the filter, default info). See docs/authority.md.";

#[derive(Debug, Args)]
#[command(after_help = AFTER_HELP, args_conflicts_with_subcommands = true)]
pub struct AuthorityArgs {
    #[command(subcommand)]
    pub command: Option<AuthorityCommand>,
    #[command(flatten)]
    pub state_dir: StateDirArg,
}

#[derive(Debug, Subcommand)]
pub enum AuthorityCommand {
    /// Certificates for mutual TLS: a CA, and the operator, sidecar and server certificates it signs.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Publish this project's policies to every replica (etcd store; docs/fleet.md).
    #[command(after_help = PUBLISH_HELP)]
    Publish(PublishArgs),
}

const PUBLISH_HELP: &str = "\
Examples:
  firma authority publish
  firma authority publish --json

Loads policies/ and issuance-policies/ as the Authority does (a policy that does not parse or
validate is named by file:line:column and nothing is sent), then asks the running Authority (the
operator socket, or [authority] url with the operator certificate) to store them in etcd: every
replica puts them in force and streams the runtime bundle to its Sidecars, under a new store
revision. Unchanged content writes nothing. With the files store the Authority reloads the
files itself and refuses to publish. See docs/fleet.md.";

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub json: JsonFlag,
    #[command(flatten)]
    pub state_dir: StateDirArg,
}

const CERT_EXAMPLES: &str = "\
Examples:
  firma authority cert init
  firma authority cert issue --role server --name authority.example --ip 10.0.0.1
  firma authority cert issue --role sidecar --name host-b --out ./host-b
  firma authority cert issue --role operator --name alice

Client certificates carry the role in the subject's OU and the name in its CN (docs/authority.md).";

#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create the CA ([authority] client_ca, default .firma/client-ca.crt, key beside it).
    #[command(after_help = CERT_EXAMPLES)]
    Init(CertInitArgs),
    /// Sign a certificate and key for an operator, a Sidecar or the Authority itself.
    #[command(after_help = CERT_EXAMPLES)]
    Issue(CertIssueArgs),
}

#[derive(Debug, Args)]
pub struct CertInitArgs {
    /// Where to write the CA certificate [default: [authority] client_ca, else .firma/client-ca.crt].
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Replace an existing CA (everything it signed stops verifying).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct CertIssueArgs {
    /// What the certificate is for.
    #[arg(long, value_enum)]
    pub role: CertRole,
    /// Common name: the Sidecar's id, the operator's name, or the server's DNS name.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Another DNS name clients dial (server certificates; repeatable).
    #[arg(long, value_name = "NAME")]
    pub dns: Vec<String>,
    /// An IP address clients dial (server certificates; repeatable).
    #[arg(long, value_name = "IP")]
    pub ip: Vec<IpAddr>,
    /// Validity in days.
    #[arg(long, default_value_t = certs::DEFAULT_DAYS)]
    pub days: u32,
    /// The CA certificate [default: [authority] client_ca]; its key sits beside it.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Directory for <name>.crt and <name>.key [default: the current directory].
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: AuthorityArgs, config: Option<PathBuf>) -> CommandResult {
    match args.command {
        Some(AuthorityCommand::Cert(CertCommand::Init(init))) => cert_init(init, config),
        Some(AuthorityCommand::Cert(CertCommand::Issue(issue))) => cert_issue(issue, config),
        Some(AuthorityCommand::Publish(publish_args)) => publish(publish_args, config),
        None => {
            super::logging::init_daemon_logging();
            run_authority(RunOptions {
                config,
                state_dir: args.state_dir.into_flag(),
            })?;
            Ok(Outcome::Success)
        }
    }
}

#[derive(serde::Serialize)]
struct PublishedJson {
    revision: u64,
    runtime_version: String,
    issuance_version: String,
    changed: bool,
}

fn publish(args: PublishArgs, config: Option<PathBuf>) -> CommandResult {
    let loaded = Discovery::new(config).load()?;
    let authority = &loaded.config.authority;
    let runtime = policy::load_dir(&authority.policies, &authority.policies)?;
    let issuance = policy::load_dir(&authority.issuance_policies, &authority.policies)?;
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Hinted::new(format!("cannot start the async runtime: {err}")))?;
    let response = tokio.block_on(async {
        let target = super::token::locate(args.state_dir.as_deref(), Some(&loaded))?;
        target.publish(&runtime, &issuance).await
    })?;
    if args.json.enabled() {
        let published = PublishedJson {
            revision: response.revision,
            runtime_version: response.runtime_version,
            issuance_version: response.issuance_version,
            changed: response.changed,
        };
        json::print(Document::AuthorityPublish, &published)?;
    } else if response.changed {
        output::ok(format!(
            "published revision {}: runtime policies {} ({} files), issuance policies {} ({} files)",
            response.revision,
            short(&response.runtime_version),
            runtime.files.len(),
            short(&response.issuance_version),
            issuance.files.len()
        ));
    } else {
        output::ok(format!(
            "nothing to publish: revision {} already holds these policies",
            response.revision
        ));
    }
    Ok(Outcome::Success)
}

fn cert_init(args: CertInitArgs, config: Option<PathBuf>) -> CommandResult {
    let loaded = Discovery::new(config).load_optional()?;
    let configured = loaded
        .as_ref()
        .and_then(|l| l.config.authority.client_ca.clone());
    let cert = match (args.ca, &configured, &loaded) {
        (Some(path), _, _) => path,
        (None, Some(path), _) => path.clone(),
        (None, None, Some(l)) => l.dir().join("client-ca.crt"),
        (None, None, None) => PathBuf::from("client-ca.crt"),
    };
    let key = ca_key(&cert, loaded.as_ref());
    let label = loaded
        .as_ref()
        .map_or_else(|| "firma".into(), LoadedConfig::deployment);
    let written = certs::init_ca(&cert, &key, &label, args.force)?;
    output::ok(format!(
        "CA {} (key {}, 0600: keep it with the operator)",
        written.cert.display(),
        written.key.display()
    ));
    if configured.as_ref() != Some(&written.cert) {
        output::info(format!(
            "to authenticate callers by certificate, set under [authority]: client_ca = \"{}\"",
            written.cert.display()
        ));
    }
    Ok(Outcome::Success)
}

fn cert_issue(args: CertIssueArgs, config: Option<PathBuf>) -> CommandResult {
    let loaded = Discovery::new(config).load_optional()?;
    let cert = match (args.ca, loaded.as_ref()) {
        (Some(path), _) => path,
        (None, Some(l)) => l.config.authority.client_ca.clone().ok_or_else(|| {
            Hinted::new(format!(
                "{}: [authority] has no client_ca to sign with",
                l.path.display()
            ))
            .hint("create a CA with `firma authority cert init`, or pass --ca")
        })?,
        (None, None) => {
            return Err(Hinted::new("no CA to sign with: no firma.toml and no --ca")
                .hint("pass --ca <client-ca.crt>, or run inside a project"));
        }
    };
    let key = ca_key(&cert, loaded.as_ref());
    let request = LeafRequest {
        role: args.role,
        name: args.name,
        dns: args.dns,
        ips: args.ip,
        days: args.days,
    };
    let written = certs::issue(&cert, &key, &request, &args.out, args.force)?;
    output::ok(format!(
        "{} certificate {} and key {} (signed by {}, valid {} days)",
        request.role.name(),
        written.cert.display(),
        written.key.display(),
        cert.display(),
        request.days
    ));
    let (section, cert_key, key_key) = match request.role {
        CertRole::Operator => ("[authority]", "client_cert", "client_key"),
        CertRole::Sidecar => ("[sidecar.authority]", "client_cert", "client_key"),
        CertRole::Server => ("[authority]", "tls_cert", "tls_key"),
    };
    output::info(format!(
        "use it under {section}: {cert_key} = \"{}\", {key_key} = \"{}\"",
        written.cert.display(),
        written.key.display()
    ));
    Ok(Outcome::Success)
}

/// `[authority] client_ca_key` when it belongs to `cert`, else the key beside the certificate.
fn ca_key(cert: &std::path::Path, loaded: Option<&LoadedConfig>) -> PathBuf {
    loaded
        .map(|l| &l.config.authority)
        .filter(|a| a.client_ca.as_deref() == Some(cert))
        .and_then(|a| a.client_ca_key.clone())
        .unwrap_or_else(|| certs::key_beside(cert))
}
