//! The forward proxy (hyper, HTTP/1.1). Absolute-form requests and the requests inside an
//! intercepted (decrypted) tunnel take one path: canonical target (`target.rs`) → `Host` check
//! → decide (`pipeline.rs`) → resolve once and check the address (`destination.rs`) → record →
//! strip hop-by-hop headers → set `Host` → forward. A plain `CONNECT` is decided on host and
//! port and tunnelled until its authority ends (`tunnel.rs`).
//!
//! Every decision is recorded before the call is forwarded or refused. `Proxy-Authorization`
//! and the other hop-by-hop headers (RFC 9110 §7.6.1) never reach the upstream.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ClientConfig;
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc, watch};
use tokio_rustls::TlsAcceptor;

use super::ca::CertificateAuthority;
use super::destination::Destinations;
use super::identity::{Presented, presented_token};
use super::mapping::glob_match;
use super::pipeline::{Call, Pipeline, Reason, Verdict};
use super::responses::{self, ProxyBody};
use super::target::{Target, TargetError, canonical_host};
use super::{tunnel, upstream};
use crate::log_throttle::{self, Throttle};
use crate::metrics::sidecar::{TunnelKind, metrics};

/// Largest request head (request line + headers) accepted; bigger ones get 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepted connections handed to a request thread.
pub type Connections = mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>;

/// A response that ends a call early (boxed: responses are large).
type Refusal = Box<Response<ProxyBody>>;

pub struct Proxy {
    pub pipeline: Pipeline,
    pub destinations: Destinations,
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
    upstream: Mutex<Option<Kept>>,
}

/// An upstream connection kept between requests, with the address it was opened to.
struct Kept {
    host: String,
    port: u16,
    addr: SocketAddr,
    sender: SendRequest<Incoming>,
}

/// Requests inside one decrypted tunnel share what the `CONNECT` established.
struct Tunnel {
    target: Target,
    token: Presented,
    /// The TLS server name the client asked for matched the `CONNECT` target.
    sni_matches: bool,
    upstream: Mutex<Option<Kept>>,
}

/// What a plain tunnel was opened with: its `CONNECT`, the verdict that allowed it, and the
/// address connected to.
struct Opened {
    target: Target,
    token: Presented,
    verdict: Verdict,
    addr: SocketAddr,
    started: Instant,
}

/// Where a decided request is sent: a plain connection kept for the client connection, or the
/// TLS connection of a decrypted tunnel.
#[derive(Clone, Copy)]
enum Route<'a> {
    Plain(&'a Affinity),
    Decrypted(&'a Tunnel),
}

impl Route<'_> {
    fn slot(&self) -> &Mutex<Option<Kept>> {
        match self {
            Self::Plain(affinity) => &affinity.upstream,
            Self::Decrypted(tunnel) => &tunnel.upstream,
        }
    }

    /// The address of the kept connection to `target`, if there is one: a kept connection is
    /// reused without resolving again.
    async fn kept_addr(&self, target: &Target) -> Option<SocketAddr> {
        let slot = self.slot().lock().await;
        slot.as_ref()
            .filter(|kept| kept.host == target.host && kept.port == target.port)
            .map(|kept| kept.addr)
    }

    /// Send `request` to `addr`, on the kept connection when it is there and alive.
    async fn send(
        &self,
        tls: &Arc<ClientConfig>,
        target: &Target,
        addr: SocketAddr,
        request: Request<Incoming>,
    ) -> Result<Response<Incoming>, String> {
        let mut slot = self.slot().lock().await;
        let reusable = match slot.as_mut() {
            Some(kept) if kept.addr == addr && kept.host == target.host => {
                kept.sender.ready().await.is_ok()
            }
            _ => false,
        };
        if !reusable {
            let sender = match self {
                Self::Plain(_) => upstream::connect_http(&target.host, addr).await?,
                Self::Decrypted(_) => {
                    upstream::connect_tls(tls.clone(), &target.host, addr).await?
                }
            };
            *slot = Some(Kept {
                host: target.host.clone(),
                port: target.port,
                addr,
                sender,
            });
        }
        let kept = slot.as_mut().expect("connected above");
        kept.sender
            .send_request(request)
            .await
            .map_err(|err| crate::error::chain(&err))
    }
}

impl Proxy {
    /// Serve the connections `incoming` hands over (an acceptor distributes them among the
    /// request threads, `request_threads.rs`) until `shutdown` turns true, then let open
    /// connections finish their current request for at most `drain`.
    pub async fn serve(
        self: Arc<Self>,
        mut incoming: Connections,
        mut shutdown: watch::Receiver<bool>,
        drain: Duration,
    ) {
        let (alive_tx, mut alive_rx) = mpsc::channel::<()>(1);
        loop {
            tokio::select! {
                next = incoming.recv() => {
                    let Some((stream, peer)) = next else { break };
                    let stream = match TcpStream::from_std(stream) {
                        Ok(stream) => stream,
                        Err(err) => {
                            tracing::warn!(%peer, error = %err, "cannot take over a connection");
                            continue;
                        }
                    };
                    let proxy = self.clone();
                    let shutdown = shutdown.clone();
                    let alive = alive_tx.clone();
                    tokio::spawn(async move {
                        proxy.serve_connection(stream, peer, shutdown).await;
                        drop(alive);
                    });
                },
                _ = stopped(&mut shutdown) => break,
            }
        }
        drop(incoming);
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

    /// `GET http://host/path` and friends.
    async fn forward_absolute(
        &self,
        req: Request<Incoming>,
        affinity: &Affinity,
        started: Instant,
    ) -> Response<ProxyBody> {
        let method = req.method().as_str().to_ascii_uppercase();
        let target = match Target::absolute(req.uri()) {
            Ok(target) => target,
            Err(err) => return self.malformed(&method, &err, started).await,
        };
        let token = presented_token(req.headers());
        // RFC 9112 §3.2.2: the URI's authority is the one the upstream gets; a client Host
        // naming another is refused, not forwarded.
        if let Some(detail) = host_header_mismatch(req.headers(), &target) {
            let call = Call::new(&method, &target, &token);
            let verdict = Verdict::refused(Reason::HostMismatch, detail);
            return self
                .refuse(StatusCode::BAD_REQUEST, &verdict, &call, started)
                .await;
        }
        self.forward(
            req,
            &method,
            target,
            &token,
            Route::Plain(affinity),
            started,
        )
        .await
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
            let err = TargetError::Malformed("CONNECT inside an intercepted tunnel".into());
            return self.malformed(&method, &err, started).await;
        }
        let target = match Target::inside(&tunnel.target, req.uri()) {
            Ok(target) => target,
            Err(err) => return self.malformed(&method, &err, started).await,
        };
        // The inner request may carry its own Proxy-Authorization; else the CONNECT's token.
        let inner = presented_token(req.headers());
        let token = if inner == Presented::None {
            &tunnel.token
        } else {
            &inner
        };
        let mismatch = if !tunnel.sni_matches {
            Some(format!(
                "the TLS server name does not name the CONNECT target {}",
                tunnel.target.authority()
            ))
        } else if let Some(authority) = req.uri().authority()
            && !tunnel.target.same_authority(authority.as_str())
        {
            Some(format!(
                "request target {authority} inside the tunnel to {}",
                tunnel.target.authority()
            ))
        } else {
            host_header_mismatch(req.headers(), &tunnel.target)
        };
        if let Some(detail) = mismatch {
            let call = Call::new(&method, &target, token);
            let verdict = Verdict::refused(Reason::HostMismatch, detail);
            return self
                .refuse(StatusCode::FORBIDDEN, &verdict, &call, started)
                .await;
        }
        self.forward(
            req,
            &method,
            target,
            token,
            Route::Decrypted(&tunnel),
            started,
        )
        .await
    }

    /// The one forwarding path: decide, resolve and record, then strip the hop-by-hop headers,
    /// set `Host` and the canonical target, and exchange with the upstream.
    async fn forward(
        &self,
        req: Request<Incoming>,
        method: &str,
        target: Target,
        token: &Presented,
        route: Route<'_>,
        started: Instant,
    ) -> Response<ProxyBody> {
        let call = Call::new(method, &target, token);
        let kept = route.kept_addr(&target).await;
        let (verdict, addr) = match self.admit(&call, &target, kept, started).await {
            Ok(admitted) => admitted,
            Err(response) => return *response,
        };
        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.version = Version::HTTP_11;
        parts.uri = target.origin_form();
        if let Ok(host) = HeaderValue::from_str(&target.authority()) {
            parts.headers.insert(header::HOST, host);
        }
        let request = Request::from_parts(parts, body);
        let exchange = metrics().upstream(route.send(&self.tls, &target, addr, request));
        match tokio::time::timeout(self.upstream_timeout, exchange).await {
            // The Sidecar never asks for a protocol switch (it strips `Upgrade`), and a switch
            // would turn one decision into a raw channel: an upstream that switches anyway failed.
            Ok(Ok(response)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                let detail = format!(
                    "{} answered 101 Switching Protocols, which firma does not relay",
                    target.authority()
                );
                self.upstream_failed(&verdict, &call, Some(addr), started, false, detail)
                    .await
            }
            Ok(Ok(response)) => relay(response),
            Ok(Err(detail)) => {
                self.upstream_failed(&verdict, &call, Some(addr), started, false, detail)
                    .await
            }
            Err(_) => {
                let detail = format!(
                    "no response from {} within {}",
                    target.authority(),
                    humantime::format_duration(self.upstream_timeout)
                );
                self.upstream_failed(&verdict, &call, Some(addr), started, true, detail)
                    .await
            }
        }
    }

    /// Decide a call, resolve its host once and check the address, and record the outcome:
    /// the verdict and the address to connect to when the call may proceed, else the response
    /// that refuses it. `kept` is the address of a connection already open to the target.
    async fn admit(
        &self,
        call: &Call<'_>,
        target: &Target,
        kept: Option<SocketAddr>,
        started: Instant,
    ) -> Result<(Verdict, SocketAddr), Refusal> {
        if let Some(refused) = self.destinations.literal_self_target(target) {
            return Err(Box::new(
                self.refuse(StatusCode::FORBIDDEN, &refused, call, started)
                    .await,
            ));
        }
        let verdict = self.pipeline.decide(call);
        if !verdict.forwards() {
            return Err(Box::new(
                self.refuse(StatusCode::FORBIDDEN, &verdict, call, started)
                    .await,
            ));
        }
        let addr = match kept {
            Some(addr) => addr,
            None => {
                let resolved = tokio::time::timeout(
                    self.upstream_timeout,
                    self.destinations
                        .resolver
                        .resolve(&target.host, target.port),
                )
                .await
                .unwrap_or_else(|_| Err(format!("cannot resolve {}: timed out", target.host)));
                match resolved {
                    Ok(addr) => addr,
                    Err(detail) => {
                        self.record(&verdict, call, None, started).await?;
                        return Err(Box::new(
                            self.upstream_failed(&verdict, call, None, started, false, detail)
                                .await,
                        ));
                    }
                }
            }
        };
        match self.destinations.check(target, addr, &verdict) {
            Ok(addr) => {
                self.record(&verdict, call, Some(addr), started).await?;
                Ok((verdict, addr))
            }
            Err(refused) => {
                self.record(&refused, call, Some(addr), started).await?;
                Err(Box::new(responses::denied(&refused)))
            }
        }
    }

    async fn record(
        &self,
        verdict: &Verdict,
        call: &Call<'_>,
        addr: Option<SocketAddr>,
        started: Instant,
    ) -> Result<(), Refusal> {
        let latency = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.pipeline
            .record(verdict, call, addr, latency)
            .await
            .map_err(|err| {
                // The writer logs when the log becomes unavailable (once, not per call).
                tracing::debug!(error = %err, "cannot write the audit record; refusing the call");
                Box::new(responses::audit_unavailable(err.message()))
            })
    }

    /// Record a refusal and answer it with `status`.
    async fn refuse(
        &self,
        status: StatusCode,
        verdict: &Verdict,
        call: &Call<'_>,
        started: Instant,
    ) -> Response<ProxyBody> {
        match self.record(verdict, call, None, started).await {
            Ok(()) => responses::refused(status, verdict),
            Err(response) => *response,
        }
    }

    /// Refuse a request whose target the proxy will not read, with its own audit record.
    async fn malformed(
        &self,
        method: &str,
        err: &TargetError,
        started: Instant,
    ) -> Response<ProxyBody> {
        let reason = match err {
            TargetError::Malformed(_) => Reason::MalformedRequest,
            TargetError::Ambiguous(_) => Reason::MalformedTarget,
        };
        let verdict = Verdict::refused(reason, err.detail());
        let token = Presented::None;
        let call = Call::untargeted(method, &token);
        self.refuse(StatusCode::BAD_REQUEST, &verdict, &call, started)
            .await
    }

    /// Record the failure of an allowed call upstream and answer 502/504.
    async fn upstream_failed(
        &self,
        verdict: &Verdict,
        call: &Call<'_>,
        addr: Option<SocketAddr>,
        started: Instant,
        timeout: bool,
        detail: String,
    ) -> Response<ProxyBody> {
        let (reason, status) = if timeout {
            (Reason::UpstreamTimeout, StatusCode::GATEWAY_TIMEOUT)
        } else {
            (Reason::UpstreamError, StatusCode::BAD_GATEWAY)
        };
        static UPSTREAM_FAILED: Throttle = Throttle::new(log_throttle::WINDOW);
        if let Some(left_out) = UPSTREAM_FAILED.admit("") {
            tracing::warn!(host = %call.host, reason = reason.code(), %detail, left_out, "upstream failed after the call was allowed");
        }
        let mut failed = verdict.clone();
        failed.reason = reason;
        failed.detail = detail;
        if let Err(response) = self.record(&failed, call, addr, started).await {
            return *response;
        }
        responses::upstream_failure(status, reason.code(), &failed.detail, &verdict.action_class)
    }

    /// `CONNECT host:port`.
    async fn connect(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        started: Instant,
    ) -> Response<ProxyBody> {
        let target = match Target::connect(req.uri()) {
            Ok(target) => target,
            Err(err) => return self.malformed("CONNECT", &err, started).await,
        };
        let token = presented_token(req.headers());

        if self
            .intercept_hosts
            .iter()
            .any(|p| glob_match(p, &target.host))
        {
            // Decrypted: each inner request is decided (and recorded) on its own — but a tunnel
            // to one of firma's own listeners is not even opened.
            if let Some(refused) = self.destinations.literal_self_target(&target) {
                let call = Call::new("CONNECT", &target, &token);
                return self
                    .refuse(StatusCode::FORBIDDEN, &refused, &call, started)
                    .await;
            }
            let config = match self.ca.server_config(&target.host) {
                Ok(config) => config,
                Err(err) => {
                    tracing::error!(host = %target.host, error = %err, "cannot mint a certificate for an intercepted host");
                    return responses::upstream_failure(
                        StatusCode::BAD_GATEWAY,
                        "interception_failed",
                        &format!("cannot mint a certificate for {}: {err}", target.host),
                        "",
                    );
                }
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            let proxy = self.clone();
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => proxy.serve_decrypted(upgraded, config, target, token).await,
                    Err(err) => tracing::debug!(error = %err, "CONNECT upgrade failed"),
                }
            });
            return Response::new(responses::empty());
        }

        let call = Call::new("CONNECT", &target, &token);
        let (verdict, addr) = match self.admit(&call, &target, None, started).await {
            Ok(admitted) => admitted,
            Err(response) => return *response,
        };
        // Connect before answering 200, so a dead upstream is a proper 502/504.
        let upstream = match tokio::time::timeout(
            self.upstream_timeout,
            metrics().upstream(upstream::connect_tcp(&target.host, addr)),
        )
        .await
        {
            Ok(Ok(stream)) => stream,
            Ok(Err(detail)) => {
                return self
                    .upstream_failed(&verdict, &call, Some(addr), started, false, detail)
                    .await;
            }
            Err(_) => {
                let detail = format!("connect {} ({addr}): timed out", target.authority());
                return self
                    .upstream_failed(&verdict, &call, Some(addr), started, true, detail)
                    .await;
            }
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let proxy = self.clone();
        let opened = Opened {
            target,
            token,
            verdict,
            addr,
            started,
        };
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => proxy.run_tunnel(upgraded, upstream, opened).await,
                Err(err) => tracing::debug!(error = %err, "CONNECT upgrade failed"),
            }
        });
        Response::new(responses::empty())
    }

    /// Relay a plain tunnel until it closes or its authority ends, then record its end.
    async fn run_tunnel(
        &self,
        upgraded: hyper::upgrade::Upgraded,
        upstream: TcpStream,
        opened: Opened,
    ) {
        let _open = metrics().tunnel(TunnelKind::Plain);
        let Opened {
            target,
            token,
            verdict,
            addr,
            started,
        } = opened;
        let watch = tunnel::Watch {
            changes: self.pipeline.authority.changes(),
            token_expires_at: verdict.token_expires_at,
        };
        let recheck = || {
            let call = Call::new("CONNECT", &target, &token);
            Some(self.pipeline.decide(&call)).filter(|now| !now.forwards())
        };
        let closed = tunnel::relay(TokioIo::new(upgraded), upstream, watch, recheck).await;
        let bytes = format!(
            "{} bytes from the client, {} bytes to the client",
            closed.from_client, closed.to_client
        );
        let mut record = verdict.clone();
        record.reason = Reason::TunnelClosed;
        match &closed.revoked_by {
            Some(ended) => {
                record.decision = ended.decision;
                record.detail = format!("{}; {bytes}", ended.audit_reason());
                record.bundle.clone_from(&ended.bundle);
                record.determining.clone_from(&ended.determining);
                tracing::info!(host = %target.host, reason = ended.reason.code(), "closed a tunnel whose authority ended");
            }
            None => record.detail = format!("connection closed; {bytes}"),
        }
        let call = Call::new("CONNECT", &target, &token);
        let _ = self.record(&record, &call, Some(addr), started).await;
    }

    async fn serve_decrypted(
        self: Arc<Self>,
        upgraded: hyper::upgrade::Upgraded,
        config: Arc<rustls::ServerConfig>,
        target: Target,
        token: Presented,
    ) {
        let _open = metrics().tunnel(TunnelKind::Intercepted);
        let tls = match TlsAcceptor::from(config)
            .accept(TokioIo::new(upgraded))
            .await
        {
            Ok(tls) => tls,
            Err(err) => {
                static HANDSHAKE_FAILED: Throttle = Throttle::new(log_throttle::WINDOW);
                if let Some(left_out) = HANDSHAKE_FAILED.admit("") {
                    tracing::info!(host = %target.host, error = %err, left_out, "TLS handshake with the client failed (does it trust the firma CA?)");
                }
                return;
            }
        };
        // Clients send no server name for an address literal; for a name it must be this one.
        let sni_matches = match tls.get_ref().1.server_name() {
            None => target.is_ip_literal(),
            Some(name) => canonical_host(name).is_ok_and(|name| name == target.host),
        };
        let tunnel = Arc::new(Tunnel {
            target,
            token,
            sni_matches,
            upstream: Mutex::new(None),
        });
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
}

/// Why the request's `Host` header(s) do not name `target`, if they do not.
fn host_header_mismatch(headers: &HeaderMap, target: &Target) -> Option<String> {
    let mut hosts = headers.get_all(header::HOST).iter();
    let first = hosts.next()?;
    if hosts.next().is_some() {
        return Some("more than one Host header".into());
    }
    let value = first.to_str().unwrap_or_default();
    (!target.same_authority(value)).then(|| {
        format!(
            "Host {value:?} does not name the request target {}",
            target.authority()
        )
    })
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
    fn host_headers_must_name_the_target() {
        let target = Target::absolute(&"http://127.0.0.1:8080/x".parse().unwrap()).unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(host_header_mismatch(&headers, &target), None);
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(host_header_mismatch(&headers, &target), None);
        headers.insert(header::HOST, "evil.example".parse().unwrap());
        assert!(host_header_mismatch(&headers, &target).is_some());
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        headers.append(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(host_header_mismatch(&headers, &target).is_some());
    }
}
