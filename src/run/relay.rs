//! The credential relay `firma run` puts between the agent and the Sidecar.
//!
//! The agent's `HTTP(S)_PROXY` points here (loopback, ephemeral port); every request and every
//! `CONNECT` is forwarded to the Sidecar with `Proxy-Authorization: Bearer <current token>`. The
//! token therefore never sits in the agent's environment (nothing can leak it into logs or child
//! processes), and `firma run` can swap in a refreshed token while the agent keeps running.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

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

/// Bind on loopback and serve until the runtime shuts down. Returns the bound address.
pub async fn start(sidecar: SocketAddr, token: CurrentToken) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let token = token.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| relay(req, sidecar, token.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .preserve_header_case(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok(addr)
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
