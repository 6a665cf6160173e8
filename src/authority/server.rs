//! Running the Authority: load keys and policies, bind, serve `firma.v1.Authority` plus
//! `grpc.health.v1.Health` and server reflection, hot-reload, and shut down within a bound.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use tokio::sync::watch;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;
use tonic::transport::server::{Router, TcpIncoming};
use tonic_health::pb::health_server::HealthServer;

use super::issuance::Issuer;
use super::revocations::RevocationStore;
use super::roles::Gate;
use super::service::{AuthorityService, describe_bundle};
use super::signed::StreamSigner;
use super::store::PolicyStores;
use super::tls::ServerTls;
use super::watch::{DirWatch, watch_dirs};
use super::witness::WitnessStore;
use crate::config::LoadedConfig;
use crate::config::schema::AuthorityMode;
use crate::error::Hinted;
use crate::proto::authority_server::AuthorityServer;
use crate::state_dir::StateDir;

/// How long shutdown waits for connections to close before dropping them.
pub const SHUTDOWN_GRACE: Duration = Duration::from_millis(700);
/// How often revocations of expired tokens are pruned (also once at start-up).
pub const PRUNE_EVERY: Duration = Duration::from_secs(600);

/// TLS certificate chain and key (PEM files), and the CA of client certificates.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With a client CA, TCP callers are authenticated by certificate (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Everything the Authority needs, resolved from `[authority]`.
#[derive(Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    /// The deployment id: the `aud` of every token.
    pub audience: String,
    /// The operator socket (`<state>/authority.sock`).
    pub socket: PathBuf,
    pub key: SigningKey,
    pub policies_dir: PathBuf,
    pub issuance_dir: PathBuf,
    pub revocations_file: PathBuf,
    /// The witnessed checkpoints (data dir).
    pub witness_file: PathBuf,
    /// `<sidecar-id>.pub` audit keys of witnessed Sidecars.
    pub witness_keys: PathBuf,
    /// The audit public key of this project's own Sidecar (witnessed as `local`).
    pub local_audit_key: Option<PathBuf>,
    pub max_ttl: Duration,
    pub bundle_ttl: Duration,
    pub tls: Option<TlsFiles>,
    pub allow_insecure_listen: bool,
}

impl Settings {
    /// From a loaded config (paths already absolute): `[authority]`, and the deployment id; the
    /// operator socket lives in the state dir, the revocations file in the user data dir.
    pub fn from_config(loaded: &LoadedConfig, state: &StateDir) -> Result<Self, Hinted> {
        let config = &loaded.config.authority;
        if config.mode == AuthorityMode::Remote {
            return Err(Hinted::new(
                "[authority] mode = \"remote\": this project uses a remote Authority, there is none to run here",
            )
            .hint("set mode = \"local\" and a listen address in firma.toml to run one"));
        }
        let listen = config.listen.ok_or_else(|| {
            Hinted::new("[authority] has no `listen` address")
                .hint("add listen = \"127.0.0.1:50051\" to firma.toml")
        })?;
        let key = crate::config::keys::load_signing_key(&config.key)?;
        let data = crate::config::dirs::resolve_data_dir()?;
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: config.client_ca.clone(),
            }),
            _ => None,
        };
        Ok(Self {
            listen,
            audience: loaded.deployment(),
            socket: state.authority_socket(),
            key,
            policies_dir: config.policies.clone(),
            issuance_dir: config.issuance_policies.clone(),
            revocations_file: data.revocations(),
            witness_file: data.witnessed_checkpoints(),
            witness_keys: config.witness_keys.clone(),
            local_audit_key: Some(crate::config::keys::public_path(
                &loaded.config.sidecar.audit.key,
            )),
            max_ttl: config.max_ttl,
            bundle_ttl: config.bundle_ttl,
            tls,
            allow_insecure_listen: config.allow_insecure_listen,
        })
    }
}

/// A running Authority. Call [`Authority::shutdown`] to stop it.
pub struct Authority {
    addr: SocketAddr,
    tls: bool,
    socket: PathBuf,
    shutdown: watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<Result<(), tonic::transport::Error>>>,
    health: tonic_health::server::HealthReporter,
    stores: Arc<PolicyStores>,
    revocations: Arc<RevocationStore>,
    _watches: Vec<DirWatch>,
}

impl Authority {
    /// The address actually bound (port 0 in the config becomes a real port).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The operator socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `http://ip:port` or `https://ip:port`.
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    pub fn stores(&self) -> &Arc<PolicyStores> {
        &self.stores
    }

    pub fn revocations(&self) -> &Arc<RevocationStore> {
        &self.revocations
    }

    /// End every stream, stop accepting, and wait (at most [`SHUTDOWN_GRACE`]) for connections
    /// to close; whatever is still open then is dropped.
    pub async fn shutdown(self) {
        self.health
            .set_not_serving::<AuthorityServer<AuthorityService>>()
            .await;
        let _ = self.shutdown.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for mut server in self.servers {
            match tokio::time::timeout_at(deadline, &mut server).await {
                Ok(Ok(Err(err))) => tracing::warn!("gRPC server ended with an error: {err}"),
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(
                        "connections still open after {}ms; closing them",
                        SHUTDOWN_GRACE.as_millis()
                    );
                    server.abort();
                }
            }
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Load everything, bind, and start serving. Errors here are start-up errors (exit 2).
pub async fn start(settings: Settings) -> Result<Authority, Hinted> {
    let stores = Arc::new(PolicyStores::load(
        &settings.policies_dir,
        &settings.issuance_dir,
    )?);
    let revocations = RevocationStore::open(&settings.revocations_file)?;
    prune(&revocations);

    let tls = match &settings.tls {
        Some(files) => Some(ServerTls::load(
            &files.cert,
            &files.key,
            files.client_ca.as_deref(),
        )?),
        None => {
            if !settings.listen.ip().is_loopback() {
                if !settings.allow_insecure_listen {
                    return Err(Hinted::new(format!(
                        "[authority] listen {} is not a loopback address and no TLS is configured",
                        settings.listen
                    ))
                    .hint(
                        "set tls_cert and tls_key, listen on 127.0.0.1, or (not recommended) \
                         allow_insecure_listen = true",
                    ));
                }
                tracing::warn!(
                    listen = %settings.listen,
                    "INSECURE: serving plain-text gRPC on a non-loopback address (allow_insecure_listen = true); \
                     tokens and policies travel unencrypted"
                );
            }
            None
        }
    };
    let tcp_gate = match &tls {
        Some(tls) if tls.mutual => Gate::MutualTls,
        _ => Gate::OpenTcp,
    };

    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|err| bind_error(settings.listen, &err))?;
    let addr = listener
        .local_addr()
        .map_err(|err| Hinted::new(format!("cannot read the bound address: {err}")))?;

    let operator_socket = super::socket::bind(&settings.socket)?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<AuthorityServer<AuthorityService>>()
        .await;

    let (shutdown, shutdown_rx) = watch::channel(false);
    let issuer = Arc::new(Issuer::new(
        settings.key.clone(),
        settings.audience.clone(),
        settings.max_ttl,
        stores.clone(),
    ));
    let witness = Arc::new(WitnessStore::open(
        &settings.witness_file,
        &settings.witness_keys,
        settings.local_audit_key.clone(),
    )?);
    let service = AuthorityService::new(
        issuer,
        Arc::new(StreamSigner::new(settings.key.clone())),
        witness,
        stores.clone(),
        revocations.clone(),
        settings.bundle_ttl,
        shutdown_rx.clone(),
    );

    let mut watches = Vec::new();
    let reload_stores = stores.clone();
    let mut dirs = vec![settings.policies_dir.clone()];
    if settings.issuance_dir != settings.policies_dir {
        dirs.push(settings.issuance_dir.clone());
    }
    watches.push(watch_dirs(&dirs, move |_| reload_stores.reload())?);
    let revocations_dir = settings
        .revocations_file
        .parent()
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    let reload_revocations = revocations.clone();
    let revocations_name = settings.revocations_file.file_name().map(ToOwned::to_owned);
    watches.push(watch_dirs(&[revocations_dir], move |paths| {
        // By name: editors save through temporary files renamed over the original.
        if paths
            .iter()
            .any(|p| p.file_name() == revocations_name.as_deref())
        {
            reload_revocations.reload();
        }
    })?);

    tokio::spawn(prune_periodically(revocations.clone(), shutdown_rx.clone()));

    let mut servers = Vec::new();
    let tcp_router = router(service.gated(tcp_gate), health_service.clone())?;
    let stop = shutdown_signal(shutdown_rx.clone());
    servers.push(match &tls {
        Some(tls) => {
            tokio::spawn(tcp_router.serve_with_incoming_shutdown(tls.incoming(listener), stop))
        }
        None => tokio::spawn(tcp_router.serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            stop,
        )),
    });
    let uid = nix::unistd::geteuid().as_raw();
    let socket_router = router(service.gated(Gate::OperatorSocket { uid }), health_service)?;
    servers.push(tokio::spawn(socket_router.serve_with_incoming_shutdown(
        UnixListenerStream::new(operator_socket),
        shutdown_signal(shutdown_rx),
    )));

    let runtime = stores.runtime();
    let issuance = stores.issuance();
    tracing::info!(
        addr = %addr,
        socket = %settings.socket.display(),
        tls = settings.tls.is_some(),
        callers = match tcp_gate {
            Gate::MutualTls => "mutual TLS: the client certificate names the role",
            _ => "sidecars (operators use the socket)",
        },
        runtime_bundle = %runtime.version,
        revocations = revocations.len(),
        "authority serving: runtime policies {}, issuance policies {}, {} revocations in {}",
        describe_bundle(&runtime),
        describe_bundle(&issuance),
        revocations.len(),
        settings.revocations_file.display()
    );
    Ok(Authority {
        addr,
        tls: settings.tls.is_some(),
        socket: settings.socket.clone(),
        shutdown,
        servers,
        health,
        stores,
        revocations,
        _watches: watches,
    })
}

/// One gRPC server: the Authority behind `gate`, health and reflection (open to every caller).
fn router(
    service: AuthorityService,
    health: HealthServer<impl tonic_health::pb::health_server::Health>,
) -> Result<Router, Hinted> {
    let reflection = |e: tonic_reflection::server::Error| {
        Hinted::new(format!("cannot build gRPC reflection: {e}"))
    };
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(reflection)?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(reflection)?;
    Ok(Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        .add_service(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(AuthorityServer::new(service)))
}

fn prune(revocations: &RevocationStore) {
    if let Err(err) = revocations.prune(chrono::Utc::now()) {
        tracing::warn!(
            hint = err.hint_text().unwrap_or_default(),
            "cannot prune revocations: {}",
            err.message()
        );
    }
}

async fn prune_periodically(revocations: Arc<RevocationStore>, stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PRUNE_EVERY, PRUNE_EVERY);
    let stopped = shutdown_signal(stop);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => break,
            _ = tick.tick() => {
                let store = revocations.clone();
                let _ = tokio::task::spawn_blocking(move || prune(&store)).await;
            }
        }
    }
}

async fn shutdown_signal(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn bind_error(addr: SocketAddr, err: &std::io::Error) -> Hinted {
    match err.kind() {
        std::io::ErrorKind::AddrInUse => {
            Hinted::new(format!("cannot listen on {addr}: address in use")).hint(
                "another Authority (often a previous run that was not reaped) holds it: run \
             `firma sidecar stop`, or change [authority] listen in firma.toml",
            )
        }
        std::io::ErrorKind::AddrNotAvailable => {
            Hinted::new(format!("cannot listen on {addr}: no such local address"))
                .hint("use an address of this machine, e.g. 127.0.0.1")
        }
        std::io::ErrorKind::PermissionDenied => {
            Hinted::new(format!("cannot listen on {addr}: permission denied"))
                .hint("ports below 1024 need privileges; choose a higher port")
        }
        _ => Hinted::new(format!("cannot listen on {addr}: {err}"))
            .hint("check [authority] listen in firma.toml"),
    }
}
