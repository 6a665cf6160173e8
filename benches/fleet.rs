//! The fleet (issue #17), each figure next to a baseline measured in the same run, against a
//! real 3-member etcd cluster on loopback (Debian's `etcd`, started and stopped here):
//!
//! 1. `IssueCapability` over the operator socket of an Authority on the etcd store vs the same
//!    on the files store. Target: etcd p50 ≤ 2× files p50.
//! 2. Revocation fan-out: a revocation made through replica 1 reaching 500 `WatchRevocations`
//!    streams spread over two replicas (250 each; 50 connections of 10 streams, like 50
//!    sidecars' worth of streams) vs the same 500 streams on one Authority on the files store.
//!    Latency from the `Revoke` call to each stream's event. Target: p99 ≤ 1 s.
//!
//! `cargo bench --bench fleet` (set `FIRMA_BENCH_QUICK=1` for a shorter run).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bench::{self, authority_settings, percentile, quick};
use common::etcd::EtcdCluster;
use firma::authority::server::{self, Authority};
use firma::config::schema::{StoreBackend, StoreConfig};
use firma::proto::authority_client::AuthorityClient;
use firma::proto::{IssueCapabilityRequest, RevokeRequest, WatchRevocationsRequest};
use tokio::sync::mpsc;
use tonic::transport::Channel;

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn operator(authority: &Authority) -> AuthorityClient<Channel> {
    let socket = format!("unix:{}", authority.socket().display());
    AuthorityClient::new(
        tonic::transport::Endpoint::from_shared(socket)
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

/// p50 and p99 of `IssueCapability` on `authority`'s operator socket.
async fn issue_latency(name: &str, authority: &Authority, n: usize) -> (Duration, Duration) {
    let mut client = operator(authority).await;
    let request = IssueCapabilityRequest {
        agent_id: "codex".into(),
        actions: vec!["communication.internal.send".into()],
        resource_scope: "*".into(),
        session_id: "bench".into(),
        ttl_seconds: 900,
        sandbox_id: String::new(),
    };
    for _ in 0..n / 10 {
        client.issue_capability(request.clone()).await.unwrap();
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let response = client.issue_capability(request.clone()).await.unwrap();
        samples.push(start.elapsed());
        assert!(response.get_ref().granted);
    }
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "{name:<44} n={n:<5} p50 {:>7.3} ms  p99 {:>7.3} ms",
        millis(p50),
        millis(p99)
    );
    (p50, p99)
}

/// Open `streams` revocation streams (10 per connection) spread over `replicas`, revoke
/// `rounds` tokens through `via`, and return every (stream, revocation) latency, sorted.
async fn fan_out(
    replicas: &[&Authority],
    via: &Authority,
    streams: usize,
    rounds: usize,
) -> Vec<Duration> {
    const PER_CONNECTION: usize = 10;
    let (events, mut arrivals) = mpsc::unbounded_channel::<(String, Instant)>();
    let mut ready = Vec::new();
    for connection in 0..streams / PER_CONNECTION {
        let authority = replicas[connection % replicas.len()];
        let channel = tonic::transport::Endpoint::from_shared(authority.url())
            .unwrap()
            .connect()
            .await
            .unwrap();
        for _ in 0..PER_CONNECTION {
            let mut client = AuthorityClient::new(channel.clone());
            let mut stream = client
                .watch_revocations(WatchRevocationsRequest {
                    since: Some(firma::authority::client::timestamp(chrono::Utc::now())),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let events = events.clone();
            let (done, snapshot) = tokio::sync::oneshot::channel();
            tokio::spawn(async move {
                let mut done = Some(done);
                while let Ok(Some(event)) = stream.message().await {
                    if event.snapshot_complete {
                        if let Some(done) = done.take() {
                            let _ = done.send(());
                        }
                        continue;
                    }
                    let _ = events.send((event.token_id, Instant::now()));
                }
            });
            ready.push(snapshot);
        }
    }
    for snapshot in ready {
        snapshot.await.unwrap();
    }
    let mut client = operator(via).await;
    let mut latencies = Vec::with_capacity(streams * rounds);
    for _ in 0..rounds {
        let token_id = uuid::Uuid::now_v7().to_string();
        let started = Instant::now();
        client
            .revoke(RevokeRequest {
                token_id: token_id.clone(),
                reason: "bench".into(),
                expires_at: None,
            })
            .await
            .unwrap();
        let mut received = 0;
        while received < streams {
            let (id, at) = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
                .await
                .expect("every stream gets the revocation within 10 s")
                .unwrap();
            if id == token_id {
                latencies.push(at - started);
                received += 1;
            }
        }
    }
    latencies.sort();
    latencies
}

fn report(name: &str, latencies: &[Duration]) -> Duration {
    let p99 = percentile(latencies, 0.99);
    println!(
        "{name:<44} n={:<5} p50 {:>7.1} ms  p99 {:>7.1} ms  max {:>7.1} ms",
        latencies.len(),
        millis(percentile(latencies, 0.5)),
        millis(p99),
        millis(*latencies.last().unwrap())
    );
    p99
}

fn main() {
    let quick = quick();
    let runtime = bench::runtime();
    let dir = tempfile::tempdir().unwrap();
    let etcd = EtcdCluster::start(dir.path(), 3);
    let key = firma::config::keys::generate();
    let etcd_store = StoreConfig {
        backend: StoreBackend::Etcd,
        endpoints: etcd.endpoints(),
        ..StoreConfig::default()
    };
    let files = authority_settings(dir.path(), "files", &key, StoreConfig::default());
    let r1 = authority_settings(dir.path(), "replica-1", &key, etcd_store.clone());
    let r2 = authority_settings(dir.path(), "replica-2", &key, etcd_store);
    let (issues, streams, rounds) = if quick {
        (200, 100, 3)
    } else {
        (3000, 500, 20)
    };

    runtime.block_on(async move {
        let files = Arc::new(server::start(files).await.unwrap());
        let r1 = Arc::new(server::start(r1).await.unwrap());
        let r2 = Arc::new(server::start(r2).await.unwrap());

        println!("== IssueCapability over the operator socket ==");
        let (files_p50, _) = issue_latency("baseline: files store", &files, issues).await;
        let (etcd_p50, _) = issue_latency("etcd store (3 members)", &r1, issues).await;
        let ratio = etcd_p50.as_secs_f64() / files_p50.as_secs_f64();
        println!(
            "etcd p50 / files p50 = {ratio:.2}x  (target <= 2x: {})",
            if ratio <= 2.0 { "met" } else { "MISSED" }
        );

        println!("== revocation fan-out: Revoke -> {streams} WatchRevocations streams ==");
        let baseline = fan_out(&[&*files], &files, streams, rounds).await;
        let files_p99 = report("baseline: files store, one Authority", &baseline);
        let fleet = fan_out(&[&*r1, &*r2], &r1, streams, rounds).await;
        let etcd_p99 = report("etcd store, 2 replicas, revoked via replica 1", &fleet);
        println!(
            "etcd p99 / files p99 = {:.2}x  (target: p99 <= 1 s: {})",
            etcd_p99.as_secs_f64() / files_p99.as_secs_f64(),
            if etcd_p99 <= Duration::from_secs(1) {
                "met"
            } else {
                "MISSED"
            }
        );
    });
    runtime.shutdown_timeout(Duration::from_millis(200));
    drop(etcd);
}
