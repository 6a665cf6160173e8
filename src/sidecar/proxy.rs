//! The forward proxy (hyper, HTTP/1.1): absolute-form requests are decided and forwarded;
//! `CONNECT` is decided on host and tunnelled, or — for intercepted hosts — decrypted with the
//! generated CA so each inner request is decided on method and path.
//!
//! Every decision is recorded before the call is forwarded or refused. `Proxy-Authorization`
//! and the other hop-by-hop headers (RFC 9110 §7.6.1) never reach the upstream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ClientConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, mpsc, watch};
use tokio_rustls::TlsAcceptor;

use super::ca::CertificateAuthority;
use super::identity::{Presented, presented_token};
use super::mapping::glob_match;
use super::pipeline::{Call, Pipeline, Reason, Verdict};
use super::responses::{self, ProxyBody};
use super::upstream;

/// Largest request head (request line + headers) accepted; bigger ones get 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A response that ends a call early (boxed: responses are large).
type Refusal = Box<Response<ProxyBody>>;

pub struct Proxy {
    pub pipeline: Pipeline,
    pub tls: Arc<ClientConfig>,
    pub ca: Arc<CertificateAuthority>,
    /// Lower-case host globs decrypted with the CA.
    pub intercept_hosts: Vec<String>,
    pub upstream_timeout: Duration,
}

/// The plain-HTTP upstream connection a client connection used last: an agent's keep-alive
/// connection usually talks to one host, so its requests reuse one upstream connection without
/// a shared pool in between.
#[derive(Default)]
struct Affinity {
    upstream: Mutex<Option<(String, SendRequest<Incoming>)>>,
}

/// Requests inside one decrypted tunnel share what the `CONNECT` established.
struct Tunnel {
    host: String,
    port: u16,
    token: Presented,
    upstream: Mutex<Option<SendRequest<Incoming>>>,
}

impl Proxy {
    /// Accept connections until `shutdown` turns true, then let open connections finish their
    /// current request for at most `drain`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        mut shutdown: watch::Receiver<bool>,
        drain: Duration,
    ) {
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let proxy = self.clone();
                        let shutdown = shutdown.clone();
                        let alive = alive_tx.clone();
                        tokio::spawn(async move {
                            proxy.serve_connection(stream, peer, shutdown).await;
                            drop(alive);
                        });
                    }
                    Err(err) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = stopped(&mut shutdown) => break,
            }
        }
        drop(listener);
        drop(alive_tx);
        if tokio::time::timeout(drain, alive_rx.recv()).await.is_err() {
            tracing::warn!(
                drain_ms = drain.as_millis() as u64,
                "connections still open after the drain period; closing them"
            );
        }
    }

    async fn serve_connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let _ = stream.set_nodelay(true);
        let proxy = self.clone();
        let affinity = Arc::new(Affinity::default());
        let service = service_fn(move |req| proxy.clone().handle(req, affinity.clone()));
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES)
            // A client that shuts down its write side after the request still gets the answer.
            .half_close(true)
            .keep_alive(true)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "client connection ended with an error");
                }
            }
            _ = stopped(&mut shutdown) => {
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        }
    }

    async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        affinity: Arc<Affinity>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let started = Instant::now();
        if req.method() == Method::CONNECT {
            return Ok(self.connect(req, started).await);
        }
        Ok(self.forward_absolute(req, &affinity, started).await)
    }

    /// Decide, record, and return the verdict when the call may proceed — or the response that
    /// refuses it.
    async fn decide(&self, call: &Call<'_>, started: Instant) -> Result<Verdict, Refusal> {
        let verdict = self.pipeline.decide(call);
        self.record(&verdict, call, started).await?;
        if verdict.forwards() {
            Ok(verdict)
        } else {
            Err(Box::new(responses::denied(&verdict)))
        }
    }

    async fn record(
        &self,
        verdict: &Verdict,
        call: &Call<'_>,
        started: Instant,
    ) -> Result<(), Refusal> {
        let latency = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.pipeline
            .record(verdict, call, latency)
            .await
            .map_err(|err| {
                tracing::error!(error = %err, "cannot write the audit record; refusing the call");
                Box::new(responses::audit_unavailable(err.message()))
            })
    }

    /// Refuse a request the proxy cannot understand, with its own audit record.
    async fn malformed(&self, method: &str, detail: &str, started: Instant) -> Response<ProxyBody> {
        let verdict = Verdict::malformed(detail);
        let token = Presented::None;
        let call = Call {
            method,
            host: "",
            path: "",
            token: &token,
        };
        if let Err(response) = self.record(&verdict, &call, started).await {
            return *response;
        }
        responses::bad_request(detail)
    }

    /// Record the failure of an allowed call upstream and answer 502/504.
    /// Run an upstream exchange under `upstream_timeout`: relay the response, or answer
    /// 502/504 with its own audit record.
    async fn exchange_with_deadline(
        &self,
        exchange: impl std::future::Future<Output = Result<Response<Incoming>, String>>,
        host: &str,
        verdict: &Verdict,
        call: &Call<'_>,
        started: Instant,
    ) -> Response<ProxyBody> {
        match tokio::time::timeout(self.upstream_timeout, exchange).await {
            Ok(Ok(response)) => relay(response),
            Ok(Err(detail)) => {
                self.upstream_failed(verdict, call, started, false, detail)
                    .await
            }
            Err(_) => {
                let detail = format!(
                    "no response from {host} within {}",
                    humantime::format_duration(self.upstream_timeout)
                );
                self.upstream_failed(verdict, call, started, true, detail)
                    .await
            }
        }
    }

    async fn upstream_failed(
        &self,
        verdict: &Verdict,
        call: &Call<'_>,
        started: Instant,
        timeout: bool,
        detail: String,
    ) -> Response<ProxyBody> {
        let (reason, status) = if timeout {
            (Reason::UpstreamTimeout, StatusCode::GATEWAY_TIMEOUT)
        } else {
            (Reason::UpstreamError, StatusCode::BAD_GATEWAY)
        };
        tracing::warn!(host = %call.host, reason = reason.code(), %detail, "upstream failed after the call was allowed");
        let mut failed = verdict.clone();
        failed.reason = reason;
        failed.detail = detail;
        if let Err(response) = self.record(&failed, call, started).await {
            return *response;
        }
        responses::upstream_failure(status, reason.code(), &failed.detail, &verdict.action_class)
    }

    /// `GET http://host/path` and friends.
    async fn forward_absolute(
        &self,
        req: Request<Incoming>,
        affinity: &Affinity,
        started: Instant,
    ) -> Response<ProxyBody> {
        let method = req.method().as_str().to_ascii_uppercase();
        let uri = req.uri();
        if uri.scheme().is_none() {
            return self.malformed(
                &method,
                "not a proxy request: the request target must be an absolute URI (http://host/path)",
                started,
            ).await;
        }
        if uri.scheme_str() != Some("http") {
            return self
                .malformed(
                    &method,
                    "only http:// URIs are forwarded; use CONNECT for https",
                    started,
                )
                .await;
        }
        let Some(host) = uri.host().filter(|h| !h.is_empty()).map(normalize_host) else {
            return self
                .malformed(&method, "absolute URI without a host", started)
                .await;
        };
        let path = uri.path().to_string();
        let token = presented_token(req.headers());
        let call = Call {
            method: &method,
            host: &host,
            path: &path,
            token: &token,
        };
        let verdict = match self.decide(&call, started).await {
            Ok(verdict) => verdict,
            Err(response) => return *response,
        };
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.version = Version::HTTP_11;
        if !parts.headers.contains_key(header::HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(value) = HeaderValue::from_str(authority.as_str())
        {
            parts.headers.insert(header::HOST, value);
        }
        let port = parts.uri.port_u16().unwrap_or(80);
        parts.uri = origin_form(&parts.uri);
        let request = Request::from_parts(parts, body);
        let key = format!("{host}:{port}");
        let exchange = async {
            let mut slot = affinity.upstream.lock().await;
            let reusable = match slot.as_mut() {
                Some((known, sender)) if *known == key => sender.ready().await.is_ok(),
                _ => false,
            };
            if !reusable {
                *slot = Some((key.clone(), upstream::connect_http(&host, port).await?));
            }
            let (_, sender) = slot.as_mut().expect("connected above");
            sender
                .send_request(request)
                .await
                .map_err(|err| crate::error::chain(&err))
        };
        self.exchange_with_deadline(exchange, &host, &verdict, &call, started)
            .await
    }

    /// `CONNECT host:port`.
    async fn connect(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        started: Instant,
    ) -> Response<ProxyBody> {
        let Some(authority) = req.uri().authority().cloned() else {
            return self
                .malformed("CONNECT", "CONNECT target must be host:port", started)
                .await;
        };
        let host = normalize_host(authority.host());
        if host.is_empty() {
            return self
                .malformed("CONNECT", "CONNECT target without a host", started)
                .await;
        }
        let port = authority.port_u16().unwrap_or(443);
        let token = presented_token(req.headers());

        if self.intercept_hosts.iter().any(|p| glob_match(p, &host)) {
            // Decrypted: each inner request is decided (and recorded) on its own.
            let config = match self.ca.server_config(&host) {
                Ok(config) => config,
                Err(err) => {
                    tracing::error!(%host, error = %err, "cannot mint a certificate for an intercepted host");
                    return responses::upstream_failure(
                        StatusCode::BAD_GATEWAY,
                        "interception_failed",
                        &format!("cannot mint a certificate for {host}: {err}"),
                        "",
                    );
                }
            };
            let tunnel = Arc::new(Tunnel {
                host,
                port,
                token,
                upstream: Mutex::new(None),
            });
            let on_upgrade = hyper::upgrade::on(&mut req);
            let proxy = self.clone();
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => proxy.serve_decrypted(upgraded, config, tunnel).await,
                    Err(err) => tracing::debug!(error = %err, "CONNECT upgrade failed"),
                }
            });
            return Response::new(responses::empty());
        }

        let call = Call {
            method: "CONNECT",
            host: &host,
            path: "",
            token: &token,
        };
        let verdict = match self.decide(&call, started).await {
            Ok(verdict) => verdict,
            Err(response) => return *response,
        };
        // Connect before answering 200, so a dead upstream is a proper 502/504.
        let upstream = match tokio::time::timeout(
            self.upstream_timeout,
            TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(err)) => {
                return self
                    .upstream_failed(
                        &verdict,
                        &call,
                        started,
                        false,
                        format!("connect {host}:{port}: {err}"),
                    )
                    .await;
            }
            Err(_) => {
                return self
                    .upstream_failed(
                        &verdict,
                        &call,
                        started,
                        true,
                        format!("connect {host}:{port}: timed out"),
                    )
                    .await;
            }
        };
        let _ = upstream.set_nodelay(true);
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let mut client = TokioIo::new(upgraded);
                    let mut upstream = upstream;
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                }
                Err(err) => tracing::debug!(error = %err, "CONNECT upgrade failed"),
            }
        });
        Response::new(responses::empty())
    }

    async fn serve_decrypted(
        self: Arc<Self>,
        upgraded: hyper::upgrade::Upgraded,
        config: Arc<rustls::ServerConfig>,
        tunnel: Arc<Tunnel>,
    ) {
        let tls = match TlsAcceptor::from(config)
            .accept(TokioIo::new(upgraded))
            .await
        {
            Ok(tls) => tls,
            Err(err) => {
                tracing::info!(host = %tunnel.host, error = %err, "TLS handshake with the client failed (does it trust the firma CA?)");
                return;
            }
        };
        let proxy = self.clone();
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            let tunnel = tunnel.clone();
            async move { Ok::<_, Infallible>(proxy.forward_decrypted(req, tunnel).await) }
        });
        if let Err(err) = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(tls), service)
            .await
        {
            tracing::debug!(error = %err, "decrypted connection ended with an error");
        }
    }

    /// One request inside a decrypted tunnel (origin-form target).
    async fn forward_decrypted(
        &self,
        req: Request<Incoming>,
        tunnel: Arc<Tunnel>,
    ) -> Response<ProxyBody> {
        let started = Instant::now();
        let method = req.method().as_str().to_ascii_uppercase();
        if req.method() == Method::CONNECT {
            return self
                .malformed(&method, "CONNECT inside an intercepted tunnel", started)
                .await;
        }
        let path = req.uri().path().to_string();
        // The inner request may carry its own Proxy-Authorization; else the CONNECT's token.
        let inner = presented_token(req.headers());
        let token = if inner == Presented::None {
            &tunnel.token
        } else {
            &inner
        };
        let call = Call {
            method: &method,
            host: &tunnel.host,
            path: &path,
            token,
        };
        let verdict = match self.decide(&call, started).await {
            Ok(verdict) => verdict,
            Err(response) => return *response,
        };
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.version = Version::HTTP_11;
        parts.uri = origin_form(&parts.uri);
        if !parts.headers.contains_key(header::HOST) {
            let host = if tunnel.port == 443 {
                tunnel.host.clone()
            } else {
                format!("{}:{}", tunnel.host, tunnel.port)
            };
            if let Ok(value) = HeaderValue::from_str(&host) {
                parts.headers.insert(header::HOST, value);
            }
        }
        let request = Request::from_parts(parts, body);
        let exchange = async {
            let mut upstream = tunnel.upstream.lock().await;
            let reusable = match upstream.as_mut() {
                Some(sender) => sender.ready().await.is_ok(),
                None => false,
            };
            if !reusable {
                *upstream =
                    Some(upstream::connect_tls(self.tls.clone(), &tunnel.host, tunnel.port).await?);
            }
            let sender = upstream.as_mut().expect("connected above");
            sender
                .send_request(request)
                .await
                .map_err(|err| crate::error::chain(&err))
        };
        self.exchange_with_deadline(exchange, &tunnel.host, &verdict, &call, started)
            .await
    }
}

/// Resolves once shutdown was requested (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Pass an upstream response back, minus its hop-by-hop headers; the body streams.
fn relay(response: Response<Incoming>) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.boxed())
}

/// Lower-case, without IPv6 brackets or a trailing dot.
fn normalize_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// The request target as a server expects it: origin-form (`/path?query`), `/` when absent.
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .map_or("/", |pq| pq.as_str())
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"))
}

/// Remove the headers that describe one hop (RFC 9110 §7.6.1), including any the `Connection`
/// header names, and `Proxy-Authorization` (the agent's capability token).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_stripped() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        headers.insert("x-secret", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert(header::PROXY_AUTHORIZATION, "Basic abc".parse().unwrap());
        headers.insert("proxy-connection", "keep-alive".parse().unwrap());
        headers.insert(header::ACCEPT, "*/*".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key(header::ACCEPT));
    }

    #[test]
    fn hosts_are_normalized() {
        assert_eq!(normalize_host("[::1]"), "::1");
        assert_eq!(normalize_host("Example.COM."), "example.com");
    }
}
