//! Beyond one machine (docs/fleet.md): Authority replicas sharing a real etcd cluster (three
//! Debian `etcd` members on loopback ports, started and stopped by the test), three Sidecars
//! spread over two replicas under mutual TLS, and every failure the fleet is built for:
//! a revocation through replica 1 reaching Sidecars on replica 2, replica 1 SIGKILLed (its
//! Sidecars move to replica 2 and never decide on a stale bundle), one etcd member lost
//! (nothing changes), quorum lost (writes refused with a clear error, Sidecars enforce until
//! `max_bundle_age`, then fail closed, recorded), everything restarted (no revocation lost),
//! and replica 1 cut off from etcd while the quorum holds (its Sidecars move to replica 2 and
//! never go stale). The same suite runs with the files store where it applies.
//!
//! Latencies are measured and printed; the assertions only bound hangs (benches hold figures).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::authority::Daemon;
use common::etcd::{EtcdCluster, free_port};
use common::http::curl;
use common::upstream::FileUpstream;
use common::{World, assert_success, run_with_timeout, stderr, stdout, wait_for};

/// Bounds hangs only: generous for a loaded 2-core machine.
const PATIENCE: Duration = Duration::from_secs(40);
/// The replicas' bundle TTL (refresh every half) and the Sidecars' max_bundle_age.
const BUNDLE_TTL: &str = "8s";
const MAX_BUNDLE_AGE: &str = "6s";

/// The fleet tests start many processes with timing margins of seconds: one at a time.
static ONE_FLEET: Mutex<()> = Mutex::new(());

/// The operator's project: the Authority key, policies, the CA and every certificate.
struct Operator {
    world: World,
}

impl Operator {
    /// A project for deployment `fleet` with a CA, a server certificate for 127.0.0.1 and
    /// sidecar certificates `side-1..=3`; `store` is the `[authority.store]` section.
    fn new(store: &str) -> Self {
        let world = World::new();
        world.init(&[]);
        let path = world.config_path();
        let text = std::fs::read_to_string(&path).unwrap();
        let text = text
            .replacen("[project]\n", "[project]\ndeployment = \"fleet\"\n", 1)
            .replacen(
                "bundle_ttl = \"30s\"\n",
                &format!(
                    "bundle_ttl = \"{BUNDLE_TTL}\"\ntls_cert = \"pki/authority.crt\"\ntls_key = \"pki/authority.key\"\nclient_ca = \"client-ca.crt\"\n"
                ),
                1,
            );
        std::fs::write(&path, format!("{text}\n{store}")).unwrap();
        let operator = Self { world };
        assert_success(&operator.world.run(&["authority", "cert", "init"]));
        let pki = operator.pki().display().to_string();
        let mut issue = vec![vec![
            "--role",
            "server",
            "--name",
            "authority",
            "--ip",
            "127.0.0.1",
        ]];
        for name in ["side-1", "side-2", "side-3"] {
            issue.push(vec!["--role", "sidecar", "--name", name]);
        }
        for args in issue {
            let mut full = vec!["authority", "cert", "issue", "--out", &pki];
            full.extend(args);
            assert_success(&operator.world.run(&full));
        }
        std::fs::create_dir_all(operator.world.project_dir().join("witness-keys")).unwrap();
        operator
    }

    fn pki(&self) -> PathBuf {
        self.world.project_dir().join("pki")
    }

    /// Replica `n`'s config (its own listen port) beside the project's, and its state dir.
    fn replica_files(&self, n: usize, port: u16) -> (PathBuf, PathBuf) {
        let text = std::fs::read_to_string(self.world.config_path()).unwrap();
        let config = self.world.project_dir().join(format!("replica-{n}.toml"));
        std::fs::write(
            &config,
            text.replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"127.0.0.1:{port}\""),
                1,
            ),
        )
        .unwrap();
        let state = self.world.path().join(format!("state-{n}"));
        std::fs::create_dir_all(&state).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        (config, state)
    }

    /// `firma --config <replica> <args> --state-dir <replica state>` as the operator.
    fn firma(&self, replica: &Replica, args: &[&str]) -> Output {
        let mut cmd = self.world.cmd();
        cmd.arg("--config").arg(&replica.config).args(args);
        cmd.arg("--state-dir").arg(&replica.state);
        run_with_timeout(&mut cmd, Duration::from_secs(60))
    }

    fn issue(&self, replica: &Replica) -> String {
        let out = self.firma(
            replica,
            &["token", "issue", "--action", "communication.internal.send"],
        );
        assert_success(&out);
        stdout(&out).trim().to_string()
    }

    /// The fleet view as `firma fleet status --json` prints it.
    fn fleet(&self, replica: &Replica) -> serde_json::Value {
        let out = self.firma(replica, &["fleet", "status", "--json"]);
        assert_success(&out);
        serde_json::from_str(&stdout(&out)).unwrap()
    }
}

/// One `firma authority` replica.
struct Replica {
    config: PathBuf,
    state: PathBuf,
    port: u16,
    daemon: Option<Daemon>,
}

impl Replica {
    fn new(operator: &Operator, n: usize) -> Self {
        let port = free_port();
        let (config, state) = operator.replica_files(n, port);
        Self {
            config,
            state,
            port,
            daemon: None,
        }
    }

    fn start(&mut self, operator: &Operator) {
        let mut cmd = operator.world.cmd();
        cmd.env("FIRMA_STATE_DIR", &self.state)
            .arg("--config")
            .arg(&self.config)
            .arg("authority");
        self.daemon = Some(Daemon::spawn_command(cmd));
    }

    /// Point this replica at one etcd member only (`all`: the endpoints the project lists).
    fn only_etcd(&self, endpoint: &str, all: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains(all), "{text}");
        std::fs::write(
            &self.config,
            text.replacen(all, &format!("[\"{endpoint}\"]"), 1),
        )
        .unwrap();
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn name_fragment(&self) -> String {
        format!(":{}", self.port)
    }

    /// SIGKILL: no goodbye to anyone.
    fn kill(&mut self) {
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.guard.child_mut().kill();
            let _ = daemon.guard.child_mut().wait();
        }
    }

    fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }
}

/// One Sidecar host: its own project (audit key, a rule for the test upstream on `port`), a
/// sidecar certificate, the replicas in order.
struct Sidecar {
    world: World,
    name: String,
    daemon: Option<Daemon>,
}

impl Sidecar {
    fn new(operator: &Operator, name: &str, urls: &[String], port: u16) -> Self {
        let world = World::new();
        world.init(&[]);
        world.map_local_port(port);
        let project = world.project_dir();
        let (pki, op) = (operator.pki(), operator.world.project_dir());
        let quoted: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
        std::fs::write(
            world.config_path(),
            format!(
                "[project]\nagent = \"codex\"\nprovider = \"anthropic\"\ndeployment = \"fleet\"\n\n\
                 [authority]\nmode = \"remote\"\nurl = \"{first}\"\n\n\
                 [sidecar.proxy]\nlisten = \"127.0.0.1:0\"\n\n\
                 [sidecar.mapping]\nrules = \"{rules}\"\n\n\
                 [sidecar.audit]\nkey = \"{audit}\"\n\n\
                 [sidecar.authority]\nurl = \"{first}\"\nurls = [{urls}]\nmax_bundle_age = \"{MAX_BUNDLE_AGE}\"\n\
                 public_key = \"{public}\"\nca_cert = \"{ca}\"\nclient_cert = \"{cert}\"\nclient_key = \"{key}\"\n",
                first = urls[0],
                urls = quoted.join(", "),
                rules = project.join("mapping-rules.toml").display(),
                audit = project.join("audit.key").display(),
                public = op.join("authority.pub").display(),
                ca = op.join("client-ca.crt").display(),
                cert = pki.join(format!("{name}.crt")).display(),
                key = pki.join(format!("{name}.key")).display(),
            ),
        )
        .unwrap();
        // The operator registers the Sidecar's audit key with the witness.
        std::fs::copy(
            project.join("audit.pub"),
            op.join("witness-keys").join(format!("{name}.pub")),
        )
        .unwrap();
        Self {
            world,
            name: name.to_string(),
            daemon: None,
        }
    }

    fn start(&mut self) {
        self.daemon = Some(Daemon::spawn(&self.world, &["sidecar"]));
    }

    fn stop(&mut self) {
        self.daemon = None;
    }

    /// GET `path` of the upstream through this Sidecar with `token`: (status, body).
    fn get(&self, token: &str, port: u16, path: &str) -> (u16, String) {
        let proxy = format!(
            "http://firma:{token}@{}",
            self.daemon.as_ref().expect("running").addr
        );
        curl(&proxy, &format!("http://127.0.0.1:{port}{path}"), &[])
    }

    fn audit_log(&self) -> String {
        std::fs::read_to_string(self.world.state().audit_log()).unwrap_or_default()
    }

    fn log(&self) -> String {
        self.daemon.as_ref().map(Daemon::log).unwrap_or_default()
    }
}

/// Wait until `check` holds; returns how long it took.
fn until(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    wait_for(what, PATIENCE, || check().then_some(()));
    started.elapsed()
}

/// The token's id (`jti`), from `firma token inspect --json`.
fn token_id(operator: &Operator, token: &str) -> String {
    let out = operator.world.run(&["token", "inspect", token, "--json"]);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    report["token_id"].as_str().unwrap().to_string()
}

fn sighting<'a>(fleet: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    fleet["sidecars"]
        .as_array()?
        .iter()
        .find(|s| s["sidecar_id"] == name)
}

/// Every Sidecar in `sidecars` is listed as connected to `replica`.
fn attached(fleet: &serde_json::Value, sidecars: &[&Sidecar], replica: &Replica) -> bool {
    sidecars.iter().all(|s| {
        sighting(fleet, &s.name).is_some_and(|seen| {
            seen["connected"] == true
                && seen["replica"]
                    .as_str()
                    .is_some_and(|r| r.ends_with(&replica.name_fragment()))
        })
    })
}

fn revoke(operator: &Operator, replica: &Replica, token: &str, reason: &str) -> Output {
    operator.firma(replica, &["token", "revoke", token, "--reason", reason])
}

fn assert_revoked_everywhere(sidecars: &[&Sidecar], token: &str, port: u16) {
    for sidecar in sidecars {
        let (status, body) = sidecar.get(token, port, "/hello.txt");
        assert_eq!(status, 403, "{}: {body}", sidecar.name);
        assert!(body.contains("token_revoked"), "{}: {body}", sidecar.name);
    }
}

fn assert_allowed_everywhere(sidecars: &[&Sidecar], token: &str, port: u16) {
    for sidecar in sidecars {
        let (status, body) = sidecar.get(token, port, "/hello.txt");
        assert_eq!(status, 200, "{}: {body}", sidecar.name);
    }
}

#[test]
fn replicas_on_etcd_serve_a_fleet_through_failures() {
    let _one = ONE_FLEET.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().unwrap();
    let mut etcd = EtcdCluster::start(scratch.path(), 3);
    let operator = Operator::new(&format!(
        "[authority.store]\nbackend = \"etcd\"\nendpoints = {}\n",
        etcd.toml_endpoints()
    ));
    let www = FileUpstream::start(&scratch.path().join("www"));
    let port = www.port;

    let mut r1 = Replica::new(&operator, 1);
    let mut r2 = Replica::new(&operator, 2);
    r1.start(&operator);
    r2.start(&operator);
    assert!(
        r1.log().contains("seeded the etcd store") || r2.log().contains("seeded the etcd store"),
        "the first replica seeds the prefix:\n{}\n{}",
        r1.log(),
        r2.log()
    );

    // Three Sidecars spread over the two replicas: side-2 prefers replica 2.
    let mut s1 = Sidecar::new(&operator, "side-1", &[r1.url(), r2.url()], port);
    let mut s2 = Sidecar::new(&operator, "side-2", &[r2.url(), r1.url()], port);
    let mut s3 = Sidecar::new(&operator, "side-3", &[r1.url(), r2.url()], port);
    for sidecar in [&mut s1, &mut s2, &mut s3] {
        sidecar.start();
    }

    // A token minted on replica 1 is enforced everywhere.
    let t1 = operator.issue(&r1);
    assert_allowed_everywhere(&[&s1, &s2, &s3], &t1, port);

    // Replica 2 answers for the whole fleet (what replica 1 saw reaches it through etcd).
    until("replica 2's fleet view to list every Sidecar", || {
        let fleet = operator.fleet(&r2);
        attached(&fleet, &[&s1, &s3], &r1) && attached(&fleet, &[&s2], &r2)
    });
    let fleet = operator.fleet(&r2);
    assert_eq!(fleet["backend"], "etcd", "{fleet}");
    for name in ["side-1", "side-2", "side-3"] {
        let seen = sighting(&fleet, name).unwrap();
        assert!(seen["bundle_revision"].as_u64() > Some(0), "{seen}");
        assert!(
            !seen["host"].as_str().unwrap_or_default().is_empty(),
            "{seen}"
        );
    }

    // A revocation through replica 1 reaches side-2 on replica 2.
    let started = Instant::now();
    assert_success(&revoke(&operator, &r1, &t1, "fleet test"));
    until("the revocation to reach side-2 on replica 2", || {
        s2.get(&t1, port, "/hello.txt").0 == 403
    });
    eprintln!(
        "revocation through replica 1 enforced on side-2 (replica 2) after {:?}",
        started.elapsed()
    );
    assert_revoked_everywhere(&[&s1, &s2, &s3], &t1, port);

    // Checkpoints are witnessed in etcd: side-2's through replica 2, verified by anyone.
    until("side-2's checkpoint witnessed", || {
        let out = s2.world.run(&["audit", "verify", "--witness", "--json"]);
        let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap_or_default();
        report["witness"]["verdict"]["status"] == "ok"
    });

    // Published policies reach every Sidecar under a new revision; local edits alone do not.
    let t2 = operator.issue(&r2);
    operator.world.forbid_admin();
    let out = operator.firma(&r2, &["authority", "publish", "--json"]);
    assert_success(&out);
    let published: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(published["changed"], true, "{published}");
    let revision = published["revision"].as_u64().unwrap();
    for sidecar in [&s1, &s2, &s3] {
        until(
            &format!("{} to enforce the published bundle", sidecar.name),
            || {
                let (status, body) = sidecar.get(&t2, port, "/admin/secret.txt");
                status == 403 && body.contains("no-admin")
            },
        );
    }
    until("the fleet view to show the published revision", || {
        let fleet = operator.fleet(&r1);
        ["side-1", "side-2", "side-3"].iter().all(|n| {
            sighting(&fleet, n).is_some_and(|s| s["bundle_revision"].as_u64() == Some(revision))
        })
    });
    let again = operator.firma(&r1, &["authority", "publish", "--json"]);
    assert_success(&again);
    assert!(
        stdout(&again).contains("\"changed\": false"),
        "{}",
        stdout(&again)
    );

    // Attack: a bundle planted in etcd without the Authority key is refused by every replica.
    let planted = serde_json::json!({
        "runtime": "permit (principal, action, resource);",
        "issuance": "permit (principal, action, resource);",
        "schema": "", "runtime_files": [], "issuance_files": [],
        "published_at": "2026-01-01T00:00:00Z", "published_by": "mallory",
        "signature": "00",
    });
    let out = etcd.etcdctl(&["put", "/firma/fleet/bundle", &planted.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    until("both replicas to refuse the planted bundle", || {
        [&r1, &r2]
            .iter()
            .all(|r| r.log().contains("refusing the policy bundle written to"))
    });
    let (status, body) = s3.get(&t2, port, "/admin/secret.txt");
    assert_eq!(status, 403, "the genuine bundle stays in force: {body}");
    // The operator puts the genuine bundle back: a publish replaces what was planted.
    let out = operator.firma(&r2, &["authority", "publish", "--json"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("\"changed\": true"),
        "{}",
        stdout(&out)
    );

    // SIGKILL replica 1: side-1 and side-3 move to replica 2, and never decide on a stale
    // bundle meanwhile (every call passes; no policy_bundle_stale record).
    let killed = Instant::now();
    r1.kill();
    let mut statuses = Vec::new();
    let moved = until("side-1 and side-3 to move to replica 2", || {
        statuses.push(s1.get(&t2, port, "/hello.txt").0);
        attached(&operator.fleet(&r2), &[&s1, &s3], &r2)
    });
    eprintln!(
        "after SIGKILL of replica 1, side-1 and side-3 were attached to replica 2 after {moved:?} \
         ({} calls through side-1 meanwhile)",
        statuses.len()
    );
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert!(killed.elapsed() < PATIENCE);
    for sidecar in [&s1, &s2, &s3] {
        assert!(
            !sidecar.audit_log().contains("policy_bundle_stale"),
            "{} decided on a stale bundle",
            sidecar.name
        );
    }
    assert!(
        s1.log()
            .contains("failing over to the next Authority replica")
    );
    // Resumed without a gap: a revocation through replica 2 reaches the moved Sidecars.
    assert_success(&revoke(&operator, &r2, &t2, "after failover"));
    until("the revocation to reach the moved Sidecars", || {
        s1.get(&t2, port, "/hello.txt").0 == 403 && s3.get(&t2, port, "/hello.txt").0 == 403
    });
    assert_revoked_everywhere(&[&s1, &s2, &s3], &t2, port);
    // No duplicate: each Sidecar logged each revocation once.
    for sidecar in [&s1, &s3] {
        let t2_id = token_id(&operator, &t2);
        let logged = sidecar
            .log()
            .lines()
            .filter(|l| l.contains("\"token revoked\"") && l.contains(&t2_id))
            .count();
        assert_eq!(logged, 1, "{}: {}", sidecar.name, sidecar.log());
    }

    // One etcd member lost: nothing changes.
    etcd.kill(0);
    let t3 = operator.issue(&r2);
    assert_allowed_everywhere(&[&s1, &s2, &s3], &t3, port);
    assert_success(&revoke(&operator, &r2, &t3, "one member down"));
    until(
        "the revocation to reach every Sidecar with one member down",
        || {
            [&s1, &s2, &s3]
                .iter()
                .all(|s| s.get(&t3, port, "/hello.txt").0 == 403)
        },
    );
    etcd.restart(0);
    etcd.wait_healthy();

    // Quorum lost: replica 2 refuses to mint and revoke, with a clear error; the Sidecars keep
    // enforcing, then fail closed at max_bundle_age (recorded), and recover with the quorum.
    let t4 = operator.issue(&r2);
    etcd.kill(1);
    etcd.kill(2);
    let lost = Instant::now();
    let (status, body) = s1.get(&t4, port, "/hello.txt");
    assert_eq!(
        status, 200,
        "still enforcing right after the quorum loss: {body}"
    );
    let refused = wait_for("replica 2 to refuse minting", PATIENCE, || {
        let out = operator.firma(
            &r2,
            &["token", "issue", "--action", "communication.internal.send"],
        );
        (out.status.code() == Some(2)).then_some(out)
    });
    let message = stderr(&refused);
    assert!(
        message.contains("etcd") && message.contains("majority"),
        "{message}"
    );
    let out = revoke(&operator, &r2, &t4, "no quorum");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("etcd"), "{}", stderr(&out));
    let out = operator.firma(&r2, &["authority", "publish"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("majority"), "{}", stderr(&out));
    let stale = until("side-1 to fail closed", || {
        let (status, body) = s1.get(&t4, port, "/hello.txt");
        status == 403 && body.contains("policy_bundle_stale")
    });
    eprintln!(
        "quorum lost: side-1 kept enforcing, then failed closed {:?} after the loss (max_bundle_age {MAX_BUNDLE_AGE})",
        lost.elapsed()
    );
    assert!(stale <= lost.elapsed());
    assert!(s1.audit_log().contains("policy_bundle_stale"));
    until("side-1 to log why it fails closed", || {
        s1.log().contains("no Authority replica refreshed")
    });
    etcd.restart(1);
    etcd.restart(2);
    etcd.wait_healthy();
    until("every Sidecar to recover with the quorum", || {
        [&s1, &s2, &s3]
            .iter()
            .all(|s| s.get(&t4, port, "/hello.txt").0 == 200)
    });
    // The refused revocation did not happen.
    assert_allowed_everywhere(&[&s1, &s2, &s3], &t4, port);

    // Restart everything: no revocation is lost.
    for sidecar in [&mut s1, &mut s2, &mut s3] {
        sidecar.stop();
    }
    r2.kill();
    etcd.kill_all();
    etcd.restart_all();
    // Replica 1 comes back knowing only member 0 (its way to be cut off below).
    r1.only_etcd(&etcd.endpoints()[0], &etcd.toml_endpoints());
    r1.start(&operator);
    r2.start(&operator);
    for sidecar in [&mut s1, &mut s2, &mut s3] {
        sidecar.start();
    }
    for token in [&t1, &t2, &t3] {
        assert_revoked_everywhere(&[&s1, &s2, &s3], token, port);
    }
    assert_allowed_everywhere(&[&s1, &s2, &s3], &t4, port);
    let (status, body) = s2.get(&t4, port, "/admin/secret.txt");
    assert!(status == 403 && body.contains("no-admin"), "{body}");

    // Replica 1 cut off from etcd (member 0, the only one it knows, dies) while the cluster
    // keeps its quorum: replica 1 refuses to mint, ends its Sidecars' streams, and they move to
    // replica 2 — which keeps their bundles fresh past max_bundle_age and still revokes.
    until("side-1 and side-3 to be attached to replica 1", || {
        attached(&operator.fleet(&r2), &[&s1, &s3], &r1)
    });
    let stale_records =
        |sidecar: &Sidecar| sidecar.audit_log().matches("policy_bundle_stale").count();
    let stale_before: Vec<usize> = [&s1, &s2, &s3].iter().map(|s| stale_records(s)).collect();
    etcd.kill(0);
    let cut_off = Instant::now();
    let refused = wait_for(
        "replica 1 to refuse minting without its store",
        PATIENCE,
        || {
            let out = operator.firma(
                &r1,
                &["token", "issue", "--action", "communication.internal.send"],
            );
            (out.status.code() == Some(2)).then_some(out)
        },
    );
    assert!(stderr(&refused).contains("etcd"), "{}", stderr(&refused));
    until("side-1 and side-3 to leave the cut-off replica 1", || {
        attached(&operator.fleet(&r2), &[&s1, &s3], &r2)
    });
    eprintln!(
        "replica 1 cut off from etcd: its Sidecars were attached to replica 2 {:?} after the cut",
        cut_off.elapsed()
    );
    for sidecar in [&s1, &s3] {
        assert!(
            sidecar
                .log()
                .contains("does not answer: use another replica"),
            "{} was not told why: {}",
            sidecar.name,
            sidecar.log()
        );
    }
    let t5 = operator.issue(&r2);
    // Past max_bundle_age since the cut: replica 2 refreshed the moved Sidecars meanwhile.
    let age = humantime::parse_duration(MAX_BUNDLE_AGE).unwrap();
    std::thread::sleep((age + Duration::from_secs(1)).saturating_sub(cut_off.elapsed()));
    assert_allowed_everywhere(&[&s1, &s2, &s3], &t5, port);
    let stale_after: Vec<usize> = [&s1, &s2, &s3].iter().map(|s| stale_records(s)).collect();
    assert_eq!(
        stale_before, stale_after,
        "no call was decided on a stale bundle"
    );
    assert_success(&revoke(&operator, &r2, &t5, "replica 1 cut off"));
    until("the revocation to reach the moved Sidecars", || {
        s1.get(&t5, port, "/hello.txt").0 == 403 && s3.get(&t5, port, "/hello.txt").0 == 403
    });
    assert_revoked_everywhere(&[&s1, &s2, &s3], &t5, port);
    // Member 0 back: replica 1 serves again.
    etcd.restart(0);
    until("replica 1 to mint again", || {
        operator
            .firma(
                &r1,
                &["token", "issue", "--action", "communication.internal.send"],
            )
            .status
            .success()
    });
}

#[test]
fn the_files_store_serves_the_same_fleet_where_it_applies() {
    let _one = ONE_FLEET.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = tempfile::tempdir().unwrap();
    let operator = Operator::new("");
    operator.world.forbid_admin();
    let www = FileUpstream::start(&scratch.path().join("www"));
    let port = www.port;
    let mut r1 = Replica::new(&operator, 1);
    r1.start(&operator);
    let mut sidecars: Vec<Sidecar> = ["side-1", "side-2", "side-3"]
        .iter()
        .map(|name| Sidecar::new(&operator, name, &[r1.url()], port))
        .collect();
    for sidecar in &mut sidecars {
        sidecar.start();
    }
    let all: Vec<&Sidecar> = sidecars.iter().collect();

    let t1 = operator.issue(&r1);
    assert_allowed_everywhere(&all, &t1, port);
    until("the fleet view to list every Sidecar", || {
        attached(&operator.fleet(&r1), &all, &r1)
    });
    assert_eq!(operator.fleet(&r1)["backend"], "files");

    let started = Instant::now();
    assert_success(&revoke(&operator, &r1, &t1, "fleet test"));
    until("the revocation to reach every Sidecar", || {
        all.iter().all(|s| s.get(&t1, port, "/hello.txt").0 == 403)
    });
    eprintln!(
        "files store: revocation enforced on 3 Sidecars after {:?}",
        started.elapsed()
    );

    // The files store reads its policy directories itself: publishing is refused, clearly.
    let out = operator.firma(&r1, &["authority", "publish"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("store backend \"files\""),
        "{}",
        stderr(&out)
    );

    // The Authority dies: Sidecars keep enforcing, then fail closed at max_bundle_age.
    let t2 = operator.issue(&r1);
    r1.kill();
    let lost = Instant::now();
    let (status, body) = all[0].get(&t2, port, "/hello.txt");
    assert_eq!(status, 200, "still enforcing right after the loss: {body}");
    until("side-1 to fail closed", || {
        let (status, body) = all[0].get(&t2, port, "/hello.txt");
        status == 403 && body.contains("policy_bundle_stale")
    });
    eprintln!(
        "files store: side-1 failed closed {:?} after its Authority died",
        lost.elapsed()
    );
    assert!(all[0].audit_log().contains("policy_bundle_stale"));

    // Back: the Sidecars recover and the revocation survived the restart.
    r1.start(&operator);
    until("side-1 to recover", || {
        all[0].get(&t2, port, "/hello.txt").0 == 200
    });
    assert_revoked_everywhere(&all, &t1, port);
}

/// Bad store settings are named with a hint, before anything starts.
#[test]
fn bad_store_settings_are_named_with_a_hint() {
    let world = World::new();
    world.init(&[]);
    let path: &Path = &world.config_path();
    let base = std::fs::read_to_string(path).unwrap();
    for (store, expected) in [
        (
            "[authority.store]\nbackend = \"etcd\"\n",
            "backend = \"etcd\" needs endpoints",
        ),
        (
            "[authority.store]\nbackend = \"etcd\"\nendpoints = [\"127.0.0.1:2379\"]\n",
            "must start with http:// or https://",
        ),
        (
            "[authority.store]\nbackend = \"etcd\"\nendpoints = [\"https://10.0.0.5:2379\"]\n",
            "no ca_cert",
        ),
        (
            "[authority.store]\nbackend = \"etcd\"\nendpoints = [\"http://10.0.0.5:2379\"]\n",
            "refusing plain-text etcd",
        ),
        (
            "[authority.store]\nbackend = \"files\"\nendpoints = [\"http://127.0.0.1:2379\"]\n",
            "backend is \"files\"",
        ),
    ] {
        std::fs::write(path, format!("{base}\n{store}")).unwrap();
        let out = world.run(&["authority"]);
        assert_eq!(out.status.code(), Some(2), "{store}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{store}: {}", stderr(&out));
        assert!(stderr(&out).contains("hint"), "{store}: {}", stderr(&out));
    }
    // An etcd nobody runs: start-up fails naming the endpoint, within the store timeout.
    std::fs::write(
        path,
        format!(
            "{base}\n[authority.store]\nbackend = \"etcd\"\nendpoints = [\"http://127.0.0.1:{}\"]\ntimeout = \"1s\"\n",
            free_port()
        ),
    )
    .unwrap();
    let out = world.run(&["authority"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot read the Authority's state from etcd"),
        "{}",
        stderr(&out)
    );
}
