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
use super::roles::Gate;
use super::service::{AuthorityService, describe_bundle};
use super::signed::StreamSigner;
use super::store::{PolicyStores, SharedState, StoreSettings};
use super::tls::ServerTls;
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
    /// Where the shared state lives (policies, revocations, witnessed checkpoints).
    pub store: StoreSettings,
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
        let deployment = loaded.deployment();
        let store = StoreSettings {
            config: config.store.clone(),
            prefix: config
                .store
                .prefix
                .clone()
                .map(|p| if p.ends_with('/') { p } else { format!("{p}/") })
                .unwrap_or_else(|| StoreSettings::default_prefix(&deployment)),
            policies_dir: config.policies.clone(),
            issuance_dir: config.issuance_policies.clone(),
            revocations_file: data.revocations(),
            witness_file: data.witnessed_checkpoints(),
            witness_keys: config.witness_keys.clone(),
            local_audit_key: Some(crate::config::keys::public_path(
                &loaded.config.sidecar.audit.key,
            )),
            max_ttl: config.max_ttl,
            replica: config.replica_name.clone().unwrap_or_else(|| {
                format!("{}:{}", super::store::fleet::this_host(), listen.port())
            }),
        };
        Ok(Self {
            listen,
            audience: deployment,
            socket: state.authority_socket(),
            key,
            store,
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
    store: Arc<dyn SharedState>,
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
        self.store.policies()
    }

    /// The shared state (files or etcd).
    pub fn store(&self) -> &Arc<dyn SharedState> {
        &self.store
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
        self.store.close().await;
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Load everything, bind, and start serving. Errors here are start-up errors (exit 2).
pub async fn start(settings: Settings) -> Result<Authority, Hinted> {
    let signer = Arc::new(StreamSigner::new(settings.key.clone()));
    let store = super::store::open(&settings.store, signer.clone()).await?;
    prune(store.as_ref()).await;

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
        store.policies().clone(),
    ));
    let service = AuthorityService::new(
        issuer,
        signer,
        store.clone(),
        settings.bundle_ttl,
        shutdown_rx.clone(),
    );

    tokio::spawn(prune_periodically(store.clone(), shutdown_rx.clone()));

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

    let runtime = store.policies().runtime();
    let issuance = store.policies().issuance();
    tracing::info!(
        addr = %addr,
        socket = %settings.socket.display(),
        tls = settings.tls.is_some(),
        callers = match tcp_gate {
            Gate::MutualTls => "mutual TLS: the client certificate names the role",
            _ => "sidecars (operators use the socket)",
        },
        runtime_bundle = %runtime.version,
        revocations = store.revocation_count(),
        store = store.backend().name(),
        replica = store.fleet().replica(),
        "authority serving: runtime policies {}, issuance policies {}, state in {}",
        describe_bundle(&runtime),
        describe_bundle(&issuance),
        store.describe()
    );
    Ok(Authority {
        addr,
        tls: settings.tls.is_some(),
        socket: settings.socket.clone(),
        shutdown,
        servers,
        health,
        store,
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

async fn prune(store: &dyn SharedState) {
    if let Err(err) = store.prune(chrono::Utc::now()).await {
        tracing::warn!("cannot prune revocations: {err}");
    }
}

async fn prune_periodically(store: Arc<dyn SharedState>, stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + PRUNE_EVERY, PRUNE_EVERY);
    let stopped = shutdown_signal(stop);
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => break,
            _ = tick.tick() => prune(store.as_ref()).await,
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
