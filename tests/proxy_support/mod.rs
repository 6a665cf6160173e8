//! The Sidecar's black-box test world, shared by `tests/sidecar.rs` and `tests/bypass.rs`: the
//! real `firma authority` + `firma sidecar` on port 0, a local upstream that counts its hits and
//! echoes what it received, and real clients (curl, Python, raw sockets).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{ChildGuard, World};
use firma::proto::authority_client::AuthorityClient;
use firma::proto::{IssueCapabilityRequest, RevokeRequest};
use serde_json::Value;

pub const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// A local upstream: echoes method, path and the headers it received, as JSON.

pub struct Upstream {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

pub fn start_upstream(tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
    start_upstream_at("127.0.0.1", tls)
}

pub fn start_upstream_at(ip: &str, tls: Option<Arc<rustls::ServerConfig>>) -> Upstream {
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind((ip, 0)))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    runtime.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let headers: serde_json::Map<String, Value> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.as_str().to_string(),
                                    Value::from(v.to_str().unwrap_or("")),
                                )
                            })
                            .collect();
                        let method = req.method().to_string();
                        let path = req.uri().path().to_string();
                        let body = req.into_body().collect().await.map(|b| b.to_bytes());
                        let body = body.map(|b| b.len()).unwrap_or(0);
                        let json = serde_json::json!({
                            "upstream": true, "method": method, "path": path,
                            "headers": headers, "body_len": body,
                        });
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            bytes::Bytes::from(json.to_string()),
                        )))
                    }
                });
                let builder = hyper::server::conn::http1::Builder::new();
                match tls {
                    Some(config) => {
                        if let Ok(stream) =
                            tokio_rustls::TlsAcceptor::from(config).accept(stream).await
                        {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            });
        }
    });
    Upstream {
        addr,
        hits,
        _runtime: runtime,
    }
}

/// A test CA and a server config for `localhost` / `127.0.0.1` signed by it.
pub fn upstream_tls(dir: &Path) -> (PathBuf, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name = rcgen::DistinguishedName::new();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "test upstream CA");
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let mut leaf_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    leaf_params.distinguished_name = rcgen::DistinguishedName::new();
    leaf_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let leaf = leaf_params.signed_by(&leaf_key, &issuer).unwrap();
    let ca_path = dir.join("upstream-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![leaf.der().clone()], key)
    .unwrap();
    (ca_path, Arc::new(config))
}

// ---------------------------------------------------------------------------------------------
// The daemon pair.

pub struct Stack {
    pub world: World,
    pub authority_addr: SocketAddr,
    pub proxy: SocketAddr,
    pub authority: ChildGuard,
    pub sidecar: ChildGuard,
    pub runtime: tokio::runtime::Runtime,
}

/// Spawn `firma <args>` with a notify socket and wait for `READY=1`; returns the bound address.
pub fn spawn_ready(
    world: &World,
    args: &[&str],
    env: &[(&str, &str)],
    tag: &str,
) -> (ChildGuard, SocketAddr) {
    let socket_path = world.path().join(format!("{tag}.notify"));
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let log = std::fs::File::create(world.path().join(format!("{tag}.log"))).unwrap();
    let mut cmd = world.cmd();
    cmd.args(args)
        .env("NOTIFY_SOCKET", &socket_path)
        .stdout(Stdio::null())
        .stderr(log);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = ChildGuard::new(cmd.spawn().unwrap());
    let deadline = Instant::now() + DEADLINE;
    let mut buf = [0u8; 1024];
    loop {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if let Some(addr) = text.lines().find_map(|l| l.strip_prefix("X_FIRMA_LISTEN=")) {
                return (child, addr.parse().unwrap());
            }
        }
        if let Some(status) = child.child_mut().try_wait().unwrap() {
            let log = std::fs::read_to_string(world.path().join(format!("{tag}.log"))).unwrap();
            panic!("firma {args:?} exited with {status} before ready:\n{log}");
        }
        assert!(
            Instant::now() < deadline,
            "firma {args:?} not ready in time"
        );
    }
}

/// Start the pair with loopback mapped on every port (`LOOPBACK_RULES`) and `edit` applied to
/// firma.toml.
pub fn start_stack(edit: impl FnOnce(&mut String), env: &[(&str, &str)]) -> Stack {
    start_stack_with(
        |world| {
            write_rules(world, LOOPBACK_RULES);
            let mut config = std::fs::read_to_string(world.config_path()).unwrap();
            edit(&mut config);
            std::fs::write(world.config_path(), config).unwrap();
        },
        env,
    )
}

/// Start the pair after `setup` adjusted the freshly scaffolded project (firma.toml, mapping
/// rules, policies).
pub fn start_stack_with(setup: impl FnOnce(&World), env: &[(&str, &str)]) -> Stack {
    let world = World::new();
    world.init(&[]);
    setup(&world);
    let (authority, authority_addr) = spawn_ready(&world, &["authority"], &[], "authority");
    let url = format!("http://{authority_addr}");
    let (sidecar, proxy) = spawn_ready(
        &world,
        &["sidecar", "--authority-url", &url],
        env,
        "sidecar",
    );
    Stack {
        world,
        authority_addr,
        proxy,
        authority,
        sidecar,
        runtime: tokio::runtime::Runtime::new().unwrap(),
    }
}

/// Loopback hosts on any port: what the tests of other features run with (the scaffold itself
/// maps no local service).
pub const LOOPBACK_RULES: &str = "[[rules]]\nhost = \"localhost\"\naction_class = \"communication.internal.send\"\n\n[[rules]]\nhost = \"127.0.0.1\"\naction_class = \"communication.internal.send\"\n\n[[rules]]\nhost = \"::1\"\naction_class = \"communication.internal.send\"\n";

/// Replace the project's mapping rules.
pub fn write_rules(world: &World, rules: &str) {
    std::fs::write(world.project_dir().join("mapping-rules.toml"), rules).unwrap();
}

/// Add a runtime policy file.
pub fn add_policy(world: &World, name: &str, text: &str) {
    std::fs::write(world.project_dir().join("policies").join(name), text).unwrap();
}

/// Send `request` as is to `addr` and read the answer to the end: (status, body).
pub fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request).unwrap();
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    (status, body)
}

/// The reason code of an audit record (its `reason` up to the first `:`).
pub fn reason(record: &Value) -> String {
    record["reason"]
        .as_str()
        .unwrap_or_default()
        .split(':')
        .next()
        .unwrap_or_default()
        .to_string()
}

impl Stack {
    /// The operator's client (mint, revoke): the Authority's operator socket.
    pub fn client(&self) -> AuthorityClient<tonic::transport::Channel> {
        let socket = self.world.state_dir().join("authority.sock");
        self.runtime
            .block_on(firma::authority::client::connect(
                &format!("unix:{}", socket.display()),
                None,
            ))
            .expect("connect to the authority's operator socket")
    }

    pub fn issue(&self, actions: &[&str], scope: &str) -> (String, String) {
        let mut client = self.client();
        let response = self
            .runtime
            .block_on(client.issue_capability(IssueCapabilityRequest {
                agent_id: "codex".into(),
                actions: actions.iter().map(|a| a.to_string()).collect(),
                resource_scope: scope.into(),
                session_id: "sess-1".into(),
                ttl_seconds: 600,
                sandbox_id: String::new(),
            }))
            .expect("issue")
            .into_inner();
        assert!(response.granted, "{response:?}");
        (response.token, response.token_id)
    }

    /// Sign `claims` with the project's Authority key (tokens the Authority would never issue).
    pub fn sign(&self, claims: &firma::authority::token::CapabilityClaims) -> String {
        let key =
            firma::config::keys::load_signing_key(&self.world.project_dir().join("authority.key"))
                .unwrap();
        let claims = firma::authority::token::CapabilityClaims {
            issuer: firma::authority::token::key_id(&key.verifying_key()),
            ..claims.clone()
        };
        firma::authority::token::sign_token(&key, &claims).unwrap()
    }

    /// A token for `codex` that expires in `ttl_seconds`.
    pub fn short_token(&self, ttl_seconds: i64) -> (String, String) {
        let mut client = self.client();
        let response = self
            .runtime
            .block_on(client.issue_capability(IssueCapabilityRequest {
                agent_id: "codex".into(),
                actions: vec!["communication.internal.send".into()],
                resource_scope: "*".into(),
                session_id: "sess-1".into(),
                ttl_seconds,
                sandbox_id: String::new(),
            }))
            .expect("issue")
            .into_inner();
        assert!(response.granted, "{response:?}");
        (response.token, response.token_id)
    }

    pub fn token(&self) -> String {
        self.issue(&["communication.internal.send"], "*").0
    }

    pub fn revoke(&self, token_id: &str) {
        let mut client = self.client();
        self.runtime
            .block_on(client.revoke(RevokeRequest {
                token_id: token_id.into(),
                reason: "test".into(),
                ..Default::default()
            }))
            .expect("revoke");
    }

    pub fn audit(&self) -> Vec<Value> {
        let text =
            std::fs::read_to_string(self.world.state_dir().join("audit.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("decision").is_some())
            .collect()
    }

    pub fn last_audit(&self) -> Value {
        self.audit().pop().expect("an audit record")
    }

    pub fn proxy_url(&self, token: Option<&str>) -> String {
        match token {
            Some(t) => format!("http://firma:{t}@{}", self.proxy),
            None => format!("http://{}", self.proxy),
        }
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.world
            .state_dir()
            .join("generated-firma-ca/firma-ca.crt")
    }
}

/// Kill a daemon and reap it (its guard then has nothing left to do).
pub fn stop(child: &mut ChildGuard) {
    let _ = child.child_mut().kill();
    let _ = child.child_mut().wait();
}

/// `curl` through the proxy: (status, body).
pub fn curl(proxy: &str, url: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}"])
        .args(["--proxy", proxy])
        .args(extra)
        .arg(url)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .env_remove("ALL_PROXY")
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.trim().parse().unwrap_or(0);
    if code == 0 {
        eprintln!("curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (code, body.to_string())
}

pub fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|err| panic!("not JSON ({err}): {body}"))
}

/// Python `requests` through the proxy (HTTP_PROXY / HTTPS_PROXY, optional CA bundle).
pub fn python_get(proxy: &str, url: &str, ca_bundle: Option<&Path>) -> (u16, String) {
    let script = "import sys, requests\nr = requests.get(sys.argv[1], timeout=30)\nprint(r.status_code)\nsys.stdout.write(r.text)\n";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, url])
        .env("HTTP_PROXY", proxy)
        .env("HTTPS_PROXY", proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("http_proxy")
        .env_remove("https_proxy");
    if let Some(ca) = ca_bundle {
        cmd.env("REQUESTS_CA_BUNDLE", ca);
    }
    let out = cmd.output().expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, body) = text.split_once('\n').unwrap_or((&text, ""));
    assert!(
        !code.is_empty(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code.trim().parse().unwrap(), body.to_string())
}

// ---------------------------------------------------------------------------------------------
