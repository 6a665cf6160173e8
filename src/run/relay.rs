//! The credential relay `firma run` puts between the agent and the Sidecar.
//!
//! The agent's `HTTP(S)_PROXY` points here (loopback, ephemeral port — inside the sandbox's own
//! network namespace when there is one); every request and every `CONNECT` is forwarded to the
//! Sidecar with `Proxy-Authorization: Bearer <current token>`. The token therefore never sits in
//! the agent's environment (nothing can leak it into logs or child processes), and `firma run`
//! can swap in a refreshed token while the agent keeps running.
//!
//! The relay serves only its agent: every request must carry the per-run proxy credentials
//! ([`ProxyCredentials`], in the agent's proxy URL). Anything else — another local user who found
//! the port — gets 407 and is reported through the `refused` callback.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use base64::Engine;
use rand_core::RngCore;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type RelayBody = BoxBody<Bytes, hyper::Error>;

/// The token the relay injects; `firma run`'s refresher replaces it before expiry.
#[derive(Clone, Default)]
pub struct CurrentToken(Arc<RwLock<String>>);

impl CurrentToken {
    pub fn new(token: String) -> Self {
        Self(Arc::new(RwLock::new(token)))
    }

    pub fn replace(&self, token: String) {
        *self
            .0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = token;
    }

    fn header(&self) -> Option<HeaderValue> {
        let token = self
            .0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        HeaderValue::from_str(&format!("Bearer {token}")).ok()
    }
}

/// The relay's address, published in the state dir so the Sidecar never forwards a call to it
/// (a call through the Sidecar to a relay would come back with the relay's token). Removed when
/// dropped.
pub struct Published(std::path::PathBuf);

/// Publish `addr` as this process's relay ([`crate::state_dir::StateDir::relay_listen_file`]).
pub fn publish(
    state: &crate::state_dir::StateDir,
    addr: SocketAddr,
) -> Result<Published, crate::error::Hinted> {
    crate::config::dirs::ensure_private_dir(&state.relay_listen_dir())?;
    let path = state.relay_listen_file(std::process::id());
    crate::fsutil::write_atomic(
        &path,
        format!("{addr}\n").as_bytes(),
        0o600,
        crate::fsutil::Durability::Volatile,
    )?;
    Ok(Published(path))
}

impl Drop for Published {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The proxy user name in the agent's proxy URL.
const PROXY_USER: &str = "firma";

/// The per-run proxy credentials the relay demands (`http://firma:<secret>@127.0.0.1:<port>`).
#[derive(Clone)]
pub struct ProxyCredentials {
    secret: String,
    /// The `Proxy-Authorization` value a client with these credentials sends.
    expected: Arc<str>,
}

impl ProxyCredentials {
    /// 128 random bits, fresh for every run.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        rand_core::OsRng.fill_bytes(&mut bytes);
        let secret = hex::encode(bytes);
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("{PROXY_USER}:{secret}"));
        Self {
            secret,
            expected: format!("Basic {basic}").into(),
        }
    }

    /// `user:password` for the proxy URL.
    pub fn userinfo(&self) -> String {
        format!("{PROXY_USER}:{}", self.secret)
    }

    /// The proxy URL the agent uses to reach a relay listening on `port` of its loopback.
    pub fn proxy_url(&self, port: u16) -> String {
        format!("http://{}@127.0.0.1:{port}", self.userinfo())
    }

    fn accepts(&self, value: Option<&HeaderValue>) -> bool {
        let given = value.map(HeaderValue::as_bytes).unwrap_or_default();
        let expected = self.expected.as_bytes();
        // Compared in constant time: the relay must not leak the secret byte by byte.
        given.len() == expected.len()
            && given
                .iter()
                .zip(expected)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

/// Called with the peer address of every refused request.
pub type OnRefused = Arc<dyn Fn(SocketAddr) + Send + Sync>;

/// Serve `listener` until the runtime shuts down.
pub fn serve(
    listener: TcpListener,
    sidecar: SocketAddr,
    token: CurrentToken,
    credentials: ProxyCredentials,
    refused: OnRefused,
) {
    tokio::spawn(async move {
        while let Ok((stream, peer)) = listener.accept().await {
            let token = token.clone();
            let credentials = credentials.clone();
            let refused = refused.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let admitted =
                        credentials.accepts(req.headers().get(header::PROXY_AUTHORIZATION));
                    let token = token.clone();
                    let refused = refused.clone();
                    async move {
                        if !admitted {
                            refused(peer);
                            return Ok(proxy_auth_required());
                        }
                        relay(req, sidecar, token).await
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .preserve_header_case(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
}

fn proxy_auth_required() -> Response<RelayBody> {
    let mut response = error(
        StatusCode::PROXY_AUTHENTICATION_REQUIRED,
        "this relay serves only the agent `firma run` started (proxy credentials missing or wrong)",
    );
    response.headers_mut().insert(
        header::PROXY_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"firma run\""),
    );
    response
}

async fn relay(
    mut req: Request<Incoming>,
    sidecar: SocketAddr,
    token: CurrentToken,
) -> Result<Response<RelayBody>, Infallible> {
    let Some(auth) = token.header() else {
        return Ok(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the capability token is not a valid header value",
        ));
    };
    req.headers_mut().insert(header::PROXY_AUTHORIZATION, auth);
    let stream = match TcpStream::connect(sidecar).await {
        Ok(stream) => stream,
        Err(err) => {
            return Ok(error(
                StatusCode::BAD_GATEWAY,
                &format!("cannot reach the firma sidecar at {sidecar}: {err}"),
            ));
        }
    };
    let _ = stream.set_nodelay(true);
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake::<_, RelayBody>(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(err) => {
                return Ok(error(
                    StatusCode::BAD_GATEWAY,
                    &format!("sidecar handshake failed: {err}"),
                ));
            }
        };
    tokio::spawn(connection.with_upgrades());

    if req.method() == Method::CONNECT {
        let client_upgrade = hyper::upgrade::on(&mut req);
        let (parts, _) = req.into_parts();
        let connect = Request::from_parts(parts, empty());
        let mut response = match sender.send_request(connect).await {
            Ok(response) => response,
            Err(err) => {
                return Ok(error(
                    StatusCode::BAD_GATEWAY,
                    &format!("sidecar refused the tunnel: {err}"),
                ));
            }
        };
        if response.status() != StatusCode::OK {
            return Ok(response.map(BodyExt::boxed));
        }
        let sidecar_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            if let (Ok(client), Ok(upstream)) = (client_upgrade.await, sidecar_upgrade.await) {
                let _ = tokio::io::copy_bidirectional(
                    &mut TokioIo::new(client),
                    &mut TokioIo::new(upstream),
                )
                .await;
            }
        });
        return Ok(Response::new(empty()));
    }

    match sender.send_request(req.map(BodyExt::boxed)).await {
        Ok(response) => Ok(response.map(BodyExt::boxed)),
        Err(err) => Ok(error(
            StatusCode::BAD_GATEWAY,
            &format!("sidecar request failed: {err}"),
        )),
    }
}

fn empty() -> RelayBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

fn error(status: StatusCode, detail: &str) -> Response<RelayBody> {
    let body = serde_json::json!({ "error": "firma-run-relay", "detail": detail }).to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_runs_own_credentials_are_accepted() {
        let creds = ProxyCredentials::generate();
        let other = ProxyCredentials::generate();
        assert_ne!(creds.userinfo(), other.userinfo());
        let header = |c: &ProxyCredentials| HeaderValue::from_str(&c.expected).unwrap();
        assert!(creds.accepts(Some(&header(&creds))));
        assert!(!creds.accepts(Some(&header(&other))));
        assert!(!creds.accepts(None));
        assert!(!creds.accepts(Some(&HeaderValue::from_static("Bearer x"))));
        assert!(creds.proxy_url(9).starts_with("http://firma:"));
        assert!(creds.proxy_url(9).ends_with("@127.0.0.1:9"));
    }
}
