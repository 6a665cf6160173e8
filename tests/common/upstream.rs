//! Local upstreams for proxy tests, real servers on loopback port 0: an in-process HTTP(S) server
//! that counts its hits and echoes what it received, and `python3 -m http.server` serving files
//! (optionally inside a network namespace) with its request log.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use super::http::in_netns;
use super::{ChildGuard, World};

/// A local upstream: echoes method, path, headers and body length it received, as JSON.
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

/// `python3 -m http.server` on 127.0.0.1 (of network namespace `ns`, if given), serving a
/// directory with `hello.txt` and `admin/secret.txt`; its request log in a file beside it.
pub struct FileUpstream {
    pub port: u16,
    log: PathBuf,
    _child: ChildGuard,
}

impl FileUpstream {
    pub fn start(dir: &Path) -> Self {
        Self::start_in(dir, None)
    }

    /// Serving `<world>/www` (inside `ns`, if given), listed in the world's mapping rules.
    pub fn serving(world: &World) -> Self {
        Self::serving_in(world, None)
    }

    pub fn serving_in(world: &World, ns: Option<&str>) -> Self {
        let upstream = Self::start_in(&world.path().join("www"), ns);
        upstream.map_in(world);
        upstream
    }

    pub fn start_in(dir: &Path, ns: Option<&str>) -> Self {
        std::fs::create_dir_all(dir.join("admin")).unwrap();
        std::fs::write(dir.join("hello.txt"), "hello from upstream\n").unwrap();
        std::fs::write(dir.join("admin/secret.txt"), "secret\n").unwrap();
        let log = dir.with_extension("log");
        let mut child = in_netns(ns, "python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 http.server");
        let stdout = child.stdout.take().unwrap();
        let guard = ChildGuard::new(child);
        let mut first = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut first)
            .unwrap();
        // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
        let port = first
            .split_whitespace()
            .nth(5)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no port in {first:?}"));
        Self {
            port,
            log,
            _child: guard,
        }
    }

    /// List this upstream as a local service in the world's mapping rules (the scaffold maps
    /// none).
    pub fn map_in(&self, world: &World) {
        world.map_local_port(self.port);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Whether any request for `path` reached the upstream.
    pub fn saw(&self, path: &str) -> bool {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains(&format!(" {path} "))
    }
}
