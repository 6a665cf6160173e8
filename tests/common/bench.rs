//! What the benches share with each other (they include `tests/common` with `#[path]`): quick
//! mode, percentiles, and the settings of an Authority run in the bench's own process.

use std::path::Path;
use std::time::Duration;

use firma::authority::server::Settings;
use firma::authority::store::StoreSettings;
use firma::config::schema::StoreConfig;

/// The policy of the benches' Authorities, runtime and issuance: `codex` may send.
pub const POLICY: &str = "@id(\"codex\")\npermit (principal == Firma::Agent::\"codex\", action in [Firma::Action::\"communication.external.send\", Firma::Action::\"communication.internal.send\"], resource);\n";

/// A short run: `FIRMA_BENCH_QUICK` is set, or the bench runs without `--bench` (`cargo test
/// --benches` runs it too; `cargo bench` passes `--bench`).
pub fn quick() -> bool {
    std::env::var_os("FIRMA_BENCH_QUICK").is_some() || !std::env::args().any(|a| a == "--bench")
}

/// A two-worker tokio runtime (the machine the figures are measured on has two cores).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The `p` quantile (0.0 ..= 1.0) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[index]
}

/// Authority `name` in `dir`, signing with `key`, on `store`, without TLS: [`POLICY`] as its
/// runtime and its issuance policy (shared by every Authority in `dir`), its operator socket
/// `<name>.sock`, its data in `<name>-data/`.
pub fn authority_settings(
    dir: &Path,
    name: &str,
    key: &ed25519_dalek::SigningKey,
    store: StoreConfig,
) -> Settings {
    let policies = dir.join("policies");
    let issuance = dir.join("issuance-policies");
    for d in [&policies, &issuance] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(
        policies.join("schema.cedarschema"),
        firma::config::action_classes::cedar_schema(),
    )
    .unwrap();
    std::fs::write(policies.join("default.cedar"), POLICY).unwrap();
    std::fs::write(issuance.join("issuance.cedar"), POLICY).unwrap();
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        socket: dir.join(format!("{name}.sock")),
        audience: "bench".into(),
        key: key.clone(),
        store: StoreSettings {
            config: store,
            prefix: StoreSettings::default_prefix("bench"),
            policies_dir: policies,
            issuance_dir: issuance,
            revocations_file: dir.join(format!("{name}-data/revocations.txt")),
            witness_file: dir.join(format!("{name}-data/witnessed-checkpoints.jsonl")),
            witness_keys: dir.join("witness-keys"),
            local_audit_key: None,
            max_ttl: Duration::from_secs(3600),
            replica: name.into(),
        },
        max_ttl: Duration::from_secs(3600),
        bundle_ttl: Duration::from_secs(30),
        tls: None,
        allow_insecure_listen: false,
    }
}
