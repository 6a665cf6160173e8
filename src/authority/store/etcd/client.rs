//! A small etcd v3 client over the generated KV and Watch stubs: several endpoints tried in
//! turn (a member that is down or cut off costs one attempt, then the next is used), every
//! request bounded by `[authority.store] timeout`, TLS and client certificates as configured.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RangeResponse, RequestOp, TxnRequest,
    TxnResponse, compare, kv_client::KvClient, request_op, watch_client::WatchClient,
};
use super::proto::mvccpb::KeyValue;
use crate::authority::store::StoreError;
use crate::config::schema::StoreConfig;
use crate::error::Hinted;

/// Whether `endpoint` is a usable etcd client URL (`tls`: a CA is configured).
pub fn endpoint_url(endpoint: &str, tls: bool) -> Result<http::Uri, String> {
    let uri: http::Uri = endpoint.parse().map_err(|_| "is not a URL".to_string())?;
    match uri.scheme_str() {
        Some("http") => Ok(uri),
        Some("https") if tls => Ok(uri),
        Some("https") => Err("uses https but [authority.store] has no ca_cert".into()),
        _ => Err("must start with http:// or https://".into()),
    }
    .and_then(|uri| {
        if uri.host().is_none_or(str::is_empty) || uri.port_u16().is_none() {
            Err("needs a host and a port (etcd clients use 2379)".into())
        } else {
            Ok(uri)
        }
    })
}

/// The end of the key range that holds every key starting with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The pause after every member failed once in a row.
const ROUND_PAUSE: Duration = Duration::from_millis(100);

/// How long one attempt may take: a quarter of the request's time, at least 250 ms.
fn attempt_budget(timeout: Duration) -> Duration {
    (timeout / 4).max(Duration::from_millis(250))
}

/// One member's channel and the URL it came from.
struct Member {
    url: String,
    channel: Channel,
}

pub struct EtcdClient {
    members: Vec<Member>,
    /// The member that answered last: tried first.
    current: AtomicUsize,
    timeout: Duration,
}

impl EtcdClient {
    /// Channels to every endpoint (connected lazily). Errors name the key to fix.
    pub fn new(config: &StoreConfig) -> Result<Self, Hinted> {
        let tls = match &config.ca_cert {
            Some(ca) => {
                let hint = "fix [authority.store] ca_cert / client_cert / client_key in firma.toml";
                let mut tls =
                    ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca, hint)?));
                if let (Some(cert), Some(key)) = (&config.client_cert, &config.client_key) {
                    tls = tls.identity(Identity::from_pem(read(cert, hint)?, read(key, hint)?));
                }
                Some(tls)
            }
            None => None,
        };
        let mut members = Vec::new();
        for url in &config.endpoints {
            let uri = endpoint_url(url, tls.is_some()).map_err(|why| {
                Hinted::new(format!("[authority.store] endpoint {url:?} {why}"))
                    .hint("endpoints are etcd client URLs such as http://10.0.0.5:2379")
            })?;
            let host = uri.host().unwrap_or_default();
            if uri.scheme_str() == Some("http") && !crate::authority::client::is_loopback_host(host)
            {
                if !config.allow_insecure {
                    return Err(Hinted::new(format!(
                        "refusing plain-text etcd at {url}: {host} is not a loopback address"
                    ))
                    .hint(
                        "use https:// endpoints with [authority.store] ca_cert (and a client \
                         certificate), or (not recommended) allow_insecure = true",
                    ));
                }
                tracing::warn!(
                    url,
                    "INSECURE: plain-text etcd on a non-loopback address; revocations and policies travel unencrypted"
                );
            }
            let mut endpoint = Endpoint::from_shared(url.clone())
                .map_err(|err| Hinted::new(format!("{url:?} is not a usable etcd URL: {err}")))?
                .connect_timeout(config.timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            if let Some(tls) = &tls {
                endpoint = endpoint
                    .tls_config(tls.clone().domain_name(host))
                    .map_err(|err| {
                        Hinted::new(format!(
                            "TLS setup for etcd at {url} failed: {}",
                            crate::error::chain(&err)
                        ))
                        .hint("the CA and client files must hold PEM certificates and keys")
                    })?;
            }
            members.push(Member {
                url: url.clone(),
                channel: endpoint.connect_lazy(),
            });
        }
        Ok(Self {
            members,
            current: AtomicUsize::new(0),
            timeout: config.timeout,
        })
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn endpoints(&self) -> Vec<&str> {
        self.members.iter().map(|m| m.url.as_str()).collect()
    }

    /// The member to use next and its index.
    pub fn member(&self) -> (usize, Channel, &str) {
        let index = self.current.load(Ordering::Relaxed) % self.members.len();
        let member = &self.members[index];
        (index, member.channel.clone(), &member.url)
    }

    /// Move past member `index` (it failed), unless someone already did.
    pub fn skip(&self, index: usize) {
        let next = (index + 1) % self.members.len();
        let _ = self
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    pub fn watch_client(&self, channel: Channel) -> WatchClient<Channel> {
        WatchClient::new(channel)
    }

    /// Run one KV call, moving to the next member while the time allows. One attempt gets a
    /// share of the time only ([`attempt_budget`]): a member whose leader just died holds a
    /// write it forwarded into the void until etcd's own request timeout, and must not use up
    /// the whole budget — the next attempt, after the election, goes through. Callers' writes
    /// are compare-and-swaps, so an attempt that timed out but committed is found, not doubled.
    async fn call<T, F, Fut>(&self, what: &str, mut call: F) -> Result<T, StoreError>
    where
        F: FnMut(KvClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let attempt = attempt_budget(self.timeout);
        let mut last = String::from("no attempt");
        let mut failures = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let (index, channel, url) = self.member();
            match tokio::time::timeout(left.min(attempt), call(KvClient::new(channel))).await {
                Ok(Ok(response)) => return Ok(response.into_inner()),
                Ok(Err(status)) if !retryable(&status) => {
                    return Err(StoreError::Failed(format!(
                        "etcd at {url} refused {what}: {}",
                        status.message()
                    )));
                }
                Ok(Err(status)) => last = format!("{url}: {}", describe(&status)),
                Err(_) => last = format!("{url}: no answer"),
            }
            self.skip(index);
            failures += 1;
            // Every member failed in a row: give an election a moment before the next round.
            if failures % self.members.len().max(1) == 0 {
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(left.min(ROUND_PAUSE)).await;
            }
        }
        Err(StoreError::Unavailable(format!(
            "etcd did not acknowledge {what} within {} (last: {last}); the cluster may have lost \
             quorum or be unreachable",
            humantime::format_duration(self.timeout)
        )))
    }

    /// Every key under `prefix` at one (linearizable) revision.
    pub async fn range_prefix(&self, prefix: &[u8]) -> Result<RangeResponse, StoreError> {
        let request = RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            ..Default::default()
        };
        self.call("a read", |mut kv| {
            let request = request.clone();
            async move { kv.range(request).await }
        })
        .await
    }

    /// A quorum read of nothing: whether the cluster can answer now.
    pub async fn probe(&self, key: &[u8]) -> Result<i64, StoreError> {
        let request = RangeRequest {
            key: key.to_vec(),
            count_only: true,
            ..Default::default()
        };
        let response = self
            .call("a health read", |mut kv| {
                let request = request.clone();
                async move { kv.range(request).await }
            })
            .await?;
        Ok(response.header.map_or(0, |h| h.revision))
    }

    /// Put `value` at `key` if the key's mod revision is `mod_revision` (0: the key is absent).
    /// Returns the transaction (succeeded or not; on failure it holds the key's current value).
    pub async fn put_if(
        &self,
        what: &str,
        key: &[u8],
        mod_revision: i64,
        value: Vec<u8>,
    ) -> Result<TxnResponse, StoreError> {
        let request = TxnRequest {
            compare: vec![Compare {
                result: compare::CompareResult::Equal as i32,
                target: compare::CompareTarget::Mod as i32,
                key: key.to_vec(),
                target_union: Some(compare::TargetUnion::ModRevision(mod_revision)),
                ..Default::default()
            }],
            success: vec![RequestOp {
                request: Some(request_op::Request::RequestPut(PutRequest {
                    key: key.to_vec(),
                    value,
                    ..Default::default()
                })),
            }],
            failure: vec![RequestOp {
                request: Some(request_op::Request::RequestRange(RangeRequest {
                    key: key.to_vec(),
                    ..Default::default()
                })),
            }],
        };
        self.call(what, |mut kv| {
            let request = request.clone();
            async move { kv.txn(request).await }
        })
        .await
    }

    pub async fn put(&self, what: &str, key: &[u8], value: Vec<u8>) -> Result<i64, StoreError> {
        let request = PutRequest {
            key: key.to_vec(),
            value,
            ..Default::default()
        };
        let response = self
            .call(what, |mut kv| {
                let request = request.clone();
                async move { kv.put(request).await }
            })
            .await?;
        Ok(response.header.map_or(0, |h| h.revision))
    }

    pub async fn delete(&self, what: &str, key: &[u8]) -> Result<i64, StoreError> {
        let request = DeleteRangeRequest {
            key: key.to_vec(),
            ..Default::default()
        };
        let response = self
            .call(what, |mut kv| {
                let request = request.clone();
                async move { kv.delete_range(request).await }
            })
            .await?;
        Ok(response.deleted)
    }
}

/// The failed transaction's view of the key (its `failure` range).
pub fn txn_current(response: &TxnResponse) -> Option<KeyValue> {
    use super::proto::etcdserverpb::response_op::Response;
    response.responses.iter().find_map(|op| match &op.response {
        Some(Response::ResponseRange(range)) => range.kvs.first().cloned(),
        _ => None,
    })
}

/// Worth another member: the transport failed, or this member cannot serve (no leader,
/// stopping, timed out inside etcd).
fn retryable(status: &tonic::Status) -> bool {
    use tonic::Code;
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled
    )
}

fn describe(status: &tonic::Status) -> String {
    let message = status.message();
    if message.is_empty() {
        format!("{:?}", status.code())
    } else {
        message.to_string()
    }
}

fn read(path: &Path, hint: &str) -> Result<Vec<u8>, Hinted> {
    std::fs::read(path)
        .map_err(|err| Hinted::new(format!("cannot read {}: {err}", path.display())).hint(hint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_cover_the_prefix() {
        assert_eq!(prefix_end(b"/firma/x/"), b"/firma/x0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn one_attempt_leaves_time_for_the_next() {
        assert_eq!(
            attempt_budget(Duration::from_secs(2)),
            Duration::from_millis(500)
        );
        assert_eq!(
            attempt_budget(Duration::from_millis(400)),
            Duration::from_millis(250)
        );
    }

    #[test]
    fn endpoints_are_checked() {
        assert!(endpoint_url("http://127.0.0.1:2379", false).is_ok());
        assert!(endpoint_url("https://etcd.example:2379", true).is_ok());
        assert!(
            endpoint_url("https://etcd.example:2379", false)
                .unwrap_err()
                .contains("ca_cert")
        );
        assert!(endpoint_url("127.0.0.1:2379", false).is_err());
        assert!(endpoint_url("http://127.0.0.1", false).is_err());
        assert!(endpoint_url("etcd://x:1", false).is_err());
    }
}
