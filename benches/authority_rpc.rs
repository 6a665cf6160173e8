//! Authority gRPC over loopback, each figure next to a baseline measured in the same run:
//!
//! 1. `IssueCapability` round trip (Cedar check of the issuance policy + PASETO signing) vs the
//!    `grpc.health.v1.Health/Check` round trip on the same channel (the cost of gRPC itself).
//! 2. A policy edit reaching 200 concurrent `WatchPolicyBundle` streams (each on its own
//!    connection, like 200 sidecars) vs the same edit reaching 1 stream. Both include the
//!    file-watch debounce; the ratio is the fan-out cost.
//!
//! `cargo bench --bench authority_rpc` (set `FIRMA_BENCH_QUICK=1` for a shorter run).

use std::path::Path;
use std::time::{Duration, Instant};

use firma::authority::server::{self, Settings};
use firma::proto::authority_client::AuthorityClient;
use firma::proto::{IssueCapabilityRequest, WatchPolicyBundleRequest};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const ISSUANCE: &str = "@id(\"codex\")\npermit (principal == Firma::Agent::\"codex\", action in [Firma::Action::\"communication.external.send\", Firma::Action::\"communication.internal.send\"], resource);\n";

fn settings(dir: &Path) -> Settings {
    let policies = dir.join("policies");
    let issuance = dir.join("issuance-policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::create_dir_all(&issuance).unwrap();
    std::fs::write(
        policies.join("schema.cedarschema"),
        firma::config::action_classes::cedar_schema(),
    )
    .unwrap();
    std::fs::write(policies.join("default.cedar"), ISSUANCE).unwrap();
    std::fs::write(issuance.join("issuance.cedar"), ISSUANCE).unwrap();
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        key: firma::config::keys::generate(),
        policies_dir: policies,
        issuance_dir: issuance,
        revocations_file: dir.join("data/revocations.txt"),
        max_ttl: Duration::from_secs(3600),
        bundle_ttl: Duration::from_secs(30),
        tls: None,
        allow_insecure_listen: false,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
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
        "{name:<40} n={iterations:<6} p50 {:>8.1} µs  p99 {:>8.1} µs",
        micros(p50),
        micros(p99)
    );
    (p50, p99)
}

async fn connect(url: &str) -> Channel {
    tonic::transport::Endpoint::from_shared(url.to_string())
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap()
}

/// Open `n` streams (one connection each), wait for their first bundle, edit the policy, and
/// return how long until every stream has the new version.
async fn fan_out(url: &str, policy_file: &Path, n: usize, round: usize) -> Duration {
    let mut streams = Vec::with_capacity(n);
    for _ in 0..n {
        let mut client = AuthorityClient::new(connect(url).await);
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
    std::fs::write(
        &tmp,
        format!("{ISSUANCE}// round {round} with {n} streams\n"),
    )
    .unwrap();
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

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep that quick.
    let quick = std::env::var_os("FIRMA_BENCH_QUICK").is_some()
        || !std::env::args().any(|a| a == "--bench");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(dir.path());
    let policy_file = settings.policies_dir.join("default.cedar");
    runtime.block_on(async move {
        let authority = server::start(settings).await.unwrap();
        let url = authority.url();
        let channel = connect(&url).await;
        let iterations = if quick { 200 } else { 5000 };

        println!("== unary round trips over loopback (one HTTP/2 connection) ==");
        let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
        let (health_p50, _) = round_trips("baseline: Health/Check", iterations, async || {
            health
                .check(tonic_health::pb::HealthCheckRequest::default())
                .await
                .unwrap();
        })
        .await;
        let mut client = AuthorityClient::new(channel.clone());
        let request = IssueCapabilityRequest {
            agent_id: "codex".into(),
            actions: vec!["communication.external.send".into()],
            resource_scope: "api.anthropic.com".into(),
            session_id: "bench".into(),
            ttl_seconds: 900,
            sandbox_id: String::new(),
        };
        let (issue_p50, _) = round_trips("IssueCapability (granted)", iterations, async || {
            let response = client.issue_capability(request.clone()).await.unwrap();
            assert!(response.get_ref().granted);
        })
        .await;
        println!(
            "IssueCapability p50 / Health p50 = {:.2}x  (target: IssueCapability p50 <= 1000 µs: {})",
            issue_p50.as_secs_f64() / health_p50.as_secs_f64(),
            if issue_p50 <= Duration::from_millis(1) { "met" } else { "MISSED" }
        );

        println!("== policy edit -> every WatchPolicyBundle stream has the new version ==");
        let rounds = if quick { 1 } else { 5 };
        let mut single = Vec::new();
        let mut many = Vec::new();
        for round in 0..rounds {
            single.push(fan_out(&url, &policy_file, 1, round * 2).await);
            many.push(fan_out(&url, &policy_file, 200, round * 2 + 1).await);
        }
        single.sort();
        many.sort();
        let (single_med, many_med) = (single[single.len() / 2], many[many.len() / 2]);
        let many_max = *many.last().unwrap();
        println!(
            "baseline: 1 stream       rounds={rounds} median {:>7.1} ms  max {:>7.1} ms",
            single_med.as_secs_f64() * 1e3,
            single.last().unwrap().as_secs_f64() * 1e3
        );
        println!(
            "200 streams (all)        rounds={rounds} median {:>7.1} ms  max {:>7.1} ms",
            many_med.as_secs_f64() * 1e3,
            many_max.as_secs_f64() * 1e3
        );
        println!(
            "200 streams / 1 stream (median) = {:.2}x  (target: all 200 within 1000 ms: {})",
            many_med.as_secs_f64() / single_med.as_secs_f64(),
            if many_max <= Duration::from_secs(1) { "met" } else { "MISSED" }
        );
        authority.shutdown().await;
    });
}
