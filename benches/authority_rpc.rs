//! Authority gRPC, each figure next to a baseline measured in the same run:
//!
//! 1. `IssueCapability` over the operator socket (Cedar check of the issuance policy + PASETO
//!    signing) vs `grpc.health.v1.Health/Check` on the same socket (the cost of gRPC itself).
//!    Target: p50 ≤ 1 ms.
//! 2. Verifying a signed policy bundle's signature (what a Sidecar adds per bundle) vs parsing
//!    and validating the same bundle with Cedar (what it already did). Target: ≤ 100 µs.
//! 3. A policy edit reaching 200 concurrent `WatchPolicyBundle` streams over mutual TLS (each on
//!    its own connection with a sidecar certificate, like 200 sidecars) vs the same over
//!    plain-text loopback. Both include the file-watch debounce. Target: all 200 within 1 s.
//!
//! `cargo bench --bench authority_rpc` (set `FIRMA_BENCH_QUICK=1` for a shorter run).

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::bench::{self, POLICY, authority_settings, percentile, quick};
use firma::authority::certs::{self, CertRole, LeafRequest};
use firma::authority::client::{ClientIdentity, Target};
use firma::authority::server::{self, Settings, TlsFiles};
use firma::authority::signed::{Pinned, StreamSigner};
use firma::config::schema::StoreConfig;
use firma::proto::authority_client::AuthorityClient;
use firma::proto::{IssueCapabilityRequest, WatchPolicyBundleRequest};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

fn settings(dir: &Path, tls: Option<TlsFiles>) -> Settings {
    let key = firma::config::keys::generate();
    Settings {
        tls,
        ..authority_settings(dir, "bench", &key, StoreConfig::default())
    }
}

/// A CA, the Authority's server certificate (127.0.0.1) and one sidecar certificate.
fn pki(dir: &Path) -> (TlsFiles, ClientIdentity) {
    let (ca, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    certs::init_ca(&ca, &ca_key, "bench", false).unwrap();
    let leaf = |role, name: &str, ips: Vec<std::net::IpAddr>| {
        let request = LeafRequest {
            role,
            name: name.into(),
            dns: vec![],
            ips,
            days: 1,
        };
        certs::issue(&ca, &ca_key, &request, dir, false).unwrap()
    };
    let server = leaf(
        CertRole::Server,
        "localhost",
        vec!["127.0.0.1".parse().unwrap()],
    );
    let sidecar = leaf(CertRole::Sidecar, "bench-sidecar", vec![]);
    (
        TlsFiles {
            cert: server.cert,
            key: server.key,
            client_ca: Some(ca),
        },
        ClientIdentity {
            cert: sidecar.cert,
            key: sidecar.key,
        },
    )
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn round_trips(
    name: &str,
    iterations: usize,
    mut call: impl AsyncFnMut(),
) -> (Duration, Duration) {
    for _ in 0..iterations / 10 {
        call().await;
    }
    let mut samples = Vec::with_capacity(iterations);
    for _ in 0..iterations {
        let start = Instant::now();
        call().await;
        samples.push(start.elapsed());
    }
    samples.sort();
    let (p50, p99) = (percentile(&samples, 0.5), percentile(&samples, 0.99));
    println!(
        "{name:<44} n={iterations:<6} p50 {:>8.1} µs  p99 {:>8.1} µs",
        micros(p50),
        micros(p99)
    );
    (p50, p99)
}

/// Open `n` streams (one connection each) to `target`, wait for their first bundle, edit the
/// policy, and return how long until every stream has the new version.
async fn fan_out(target: &Target, policy_file: &Path, n: usize, round: usize) -> Duration {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut client = target.connect().await.unwrap();
        let mut stream = client
            .watch_policy_bundle(WatchPolicyBundleRequest::default())
            .await
            .unwrap()
            .into_inner();
        stream.next().await.unwrap().unwrap();
        streams.push((client, stream));
    }
    let edited = Instant::now();
    // Saved the way editors do (temporary file + rename): one complete change per round.
    let tmp = policy_file.with_extension("tmp");
    std::fs::write(&tmp, format!("{POLICY}// round {round} with {n} streams\n")).unwrap();
    std::fs::rename(&tmp, policy_file).unwrap();
    let waits = streams.into_iter().map(|(_client, mut stream)| {
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("bundle within 10 s")
                .unwrap()
                .unwrap();
            edited.elapsed()
        })
    });
    let mut slowest = Duration::ZERO;
    for wait in waits.collect::<Vec<_>>() {
        slowest = slowest.max(wait.await.unwrap());
    }
    slowest
}

fn median(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (samples[samples.len() / 2], *samples.last().unwrap())
}

/// What a Sidecar receives: the scaffold's runtime policies, signed.
fn signed_bundle(dir: &Path) -> (firma::proto::PolicyBundle, Pinned) {
    let policies = dir.join("bundle-policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("default.cedar"), POLICY).unwrap();
    let bundle = firma::authority::policy::load_dir(&policies, &policies).unwrap();
    let mut wire = firma::proto::PolicyBundle {
        version: bundle.version.clone(),
        policies: bundle.policies.clone(),
        schema: bundle.schema_text.clone(),
        ttl_seconds: 30,
        sent_at: Some(firma::authority::client::timestamp(chrono::Utc::now())),
        ..Default::default()
    };
    let key = firma::config::keys::generate();
    StreamSigner::new(key.clone()).sign_bundle(&mut wire);
    (wire, Pinned::new(key.verifying_key()))
}

fn main() {
    let quick = quick();
    let runtime = bench::runtime();
    let plain_dir = tempfile::tempdir().unwrap();
    let mtls_dir = tempfile::tempdir().unwrap();
    let (tls, identity) = pki(mtls_dir.path());
    let plain = settings(plain_dir.path(), None);
    let mtls = settings(mtls_dir.path(), Some(tls.clone()));
    let plain_policy = plain.store.policies_dir.join("default.cedar");
    let mtls_policy = mtls.store.policies_dir.join("default.cedar");
    let iterations = if quick { 200 } else { 5000 };

    println!("== bundle signature verification (per bundle received by a Sidecar) ==");
    let (wire, pinned) = signed_bundle(plain_dir.path());
    let time = |iterations: u32, mut f: Box<dyn FnMut()>| {
        let start = Instant::now();
        for _ in 0..iterations {
            f();
        }
        start.elapsed() / iterations
    };
    let n = if quick { 50 } else { 2000 };
    let (w, p) = (wire.clone(), pinned.clone());
    let verify = time(
        n,
        Box::new(move || {
            p.verify_bundle(&w).unwrap();
        }),
    );
    let w = wire.clone();
    let parse = time(
        n,
        Box::new(move || {
            firma::sidecar::cedar::PolicyBundle::parse(
                &w.version,
                &w.policies,
                &w.schema,
                Duration::from_secs(30),
            )
            .unwrap();
        }),
    );
    let key = firma::config::keys::generate();
    let message = [7u8; 64];
    let signature = ed25519_dalek::Signer::sign(&key, &message);
    let public = key.verifying_key();
    let bare = time(
        n,
        Box::new(move || {
            public.verify_strict(&message, &signature).unwrap();
        }),
    );
    println!(
        "baseline: Cedar parse + validate of the bundle     {:>8.1} µs  ({} bytes of policies + schema)",
        micros(parse),
        wire.policies.len() + wire.schema.len()
    );
    println!(
        "reference: one Ed25519 verification (64 bytes)     {:>8.1} µs",
        micros(bare)
    );
    println!(
        "signature verification of the bundle               {:>8.1} µs",
        micros(verify)
    );
    println!(
        "verify / parse = {:.3}x, verify / one Ed25519 verification = {:.2}x  (target: verification <= 100 µs per bundle: {})",
        verify.as_secs_f64() / parse.as_secs_f64(),
        verify.as_secs_f64() / bare.as_secs_f64(),
        if verify <= Duration::from_micros(100) {
            "met"
        } else {
            "MISSED"
        }
    );

    runtime.block_on(async move {
        let plain_authority = server::start(plain).await.unwrap();
        let mtls_authority = server::start(mtls).await.unwrap();

        println!("== unary round trips over the operator socket (one HTTP/2 connection) ==");
        let socket = format!("unix:{}", plain_authority.socket().display());
        let channel: Channel = tonic::transport::Endpoint::from_shared(socket)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let (health_p50, _) = round_trips("baseline: Health/Check (socket)", iterations, async || {
            health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .unwrap();
        })
        .await;
        let mut client = AuthorityClient::new(channel);
        let request = IssueCapabilityRequest {
            agent_id: "codex".into(),
            actions: vec!["communication.external.send".into()],
            resource_scope: "api.anthropic.com".into(),
            session_id: "bench".into(),
            ttl_seconds: 900,
            sandbox_id: String::new(),
        };
        let (issue_p50, _) = round_trips("IssueCapability (granted, socket)", iterations, async || {
            let response = client.issue_capability(request.clone()).await.unwrap();
            assert!(response.get_ref().granted);
        })
        .await;
        println!(
            "IssueCapability p50 / Health p50 = {:.2}x  (target: IssueCapability p50 <= 1000 µs: {})",
            issue_p50.as_secs_f64() / health_p50.as_secs_f64(),
            if issue_p50 <= Duration::from_millis(1) { "met" } else { "MISSED" }
        );

        println!("== policy edit -> 200 WatchPolicyBundle streams have the new version ==");
        let plain_target = Target {
            url: plain_authority.url(),
            ca_cert: None,
            identity: None,
            allow_insecure: false,
            from: "bench".into(),
        };
        let port = mtls_authority.local_addr().port();
        let mtls_target = Target {
            url: format!("https://127.0.0.1:{port}"),
            ca_cert: tls.client_ca.clone(),
            identity: Some(identity),
            allow_insecure: false,
            from: "bench".into(),
        };
        let rounds = if quick { 1 } else { 5 };
        let (mut plain_rounds, mut mtls_rounds) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            plain_rounds.push(fan_out(&plain_target, &plain_policy, 200, round).await);
            mtls_rounds.push(fan_out(&mtls_target, &mtls_policy, 200, round).await);
        }
        let (plain_med, plain_max) = median(plain_rounds);
        let (mtls_med, mtls_max) = median(mtls_rounds);
        println!(
            "baseline: 200 streams, plain text   rounds={rounds} median {:>7.1} ms  max {:>7.1} ms",
            plain_med.as_secs_f64() * 1e3,
            plain_max.as_secs_f64() * 1e3
        );
        println!(
            "200 streams, mutual TLS             rounds={rounds} median {:>7.1} ms  max {:>7.1} ms",
            mtls_med.as_secs_f64() * 1e3,
            mtls_max.as_secs_f64() * 1e3
        );
        println!(
            "mTLS / plain text (median) = {:.2}x  (target: all 200 within 1000 ms over mTLS: {})",
            mtls_med.as_secs_f64() / plain_med.as_secs_f64(),
            if mtls_max <= Duration::from_secs(1) { "met" } else { "MISSED" }
        );
        plain_authority.shutdown().await;
        mtls_authority.shutdown().await;
    });
}
