//! Beyond one machine: three hosts built as network namespaces joined by veth pairs (created and
//! removed by the test). The Authority runs on host A in TLS mode with client certificates;
//! Sidecars on hosts B and C authenticate with sidecar certificates minted by
//! `firma authority cert`. Asserted: tokens minted on A are enforced on B and C, a revocation on
//! A reaches both, a Sidecar without a client certificate is refused, a sidecar certificate
//! cannot mint, B's and C's checkpoints are witnessed on A, and a fake Authority (other key) on
//! A's address gets its bundle refused.
//!
//! Needs root (network namespaces), as CI has; where they cannot be created the test fails and
//! says why.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::authority::{DEADLINE, Daemon};
use common::http::{curl_in, in_netns};
use common::netns::{Netns, ip};
use common::upstream::FileUpstream;
use common::{FIRMA, World, assert_success, stderr, stdout};

/// The Authority's fixed port on host A (the namespaces are private, nothing else binds there).
const AUTHORITY_PORT: u16 = 50051;

/// Three namespaces A, B, C with veth links A–B (10.213.1.0/24) and A–C (10.213.2.0/24).
/// Dropping it deletes the namespaces, and with them the veth pairs.
struct Hosts {
    hosts: [Netns; 3],
}

impl Hosts {
    fn create() -> Self {
        let hosts = Self {
            hosts: ["a", "b", "c"].map(Netns::create),
        };
        let tag = std::process::id() % 100_000;
        if let Err(why) = hosts.link(tag) {
            panic!(
                "veth pairs cannot be created here: {why}. This test builds three hosts \
                 with `ip netns` and veth pairs and needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN), as CI has."
            );
        }
        hosts
    }

    fn link(&self, tag: u32) -> Result<(), String> {
        let (a, b, c) = (self.a(), self.b(), self.c());
        for (peer, subnet, letter) in [(b, 1, "b"), (c, 2, "c")] {
            let (near, far) = (format!("v{letter}{tag}a"), format!("v{letter}{tag}p"));
            ip(&["link", "add", &near, "type", "veth", "peer", "name", &far])?;
            ip(&["link", "set", &near, "netns", a])?;
            ip(&["link", "set", &far, "netns", peer])?;
            ip(&[
                "-n",
                a,
                "addr",
                "add",
                &format!("10.213.{subnet}.1/24"),
                "dev",
                &near,
            ])?;
            ip(&[
                "-n",
                peer,
                "addr",
                "add",
                &format!("10.213.{subnet}.2/24"),
                "dev",
                &far,
            ])?;
            ip(&["-n", a, "link", "set", &near, "up"])?;
            ip(&["-n", peer, "link", "set", &far, "up"])?;
        }
        Ok(())
    }

    fn a(&self) -> &str {
        self.hosts[0].name()
    }
    fn b(&self) -> &str {
        self.hosts[1].name()
    }
    fn c(&self) -> &str {
        self.hosts[2].name()
    }
}

/// `firma <args>` in `world`, run inside namespace `ns`.
fn firma_in(world: &World, ns: &str, args: &[&str]) -> Command {
    let mut cmd = in_netns(Some(ns), FIRMA);
    world.prepare(&mut cmd).args(args);
    cmd
}

fn run_in(world: &World, ns: &str, args: &[&str]) -> std::process::Output {
    common::run_with_timeout(&mut firma_in(world, ns, args), Duration::from_secs(60))
}

/// A Sidecar host's firma.toml: its own audit key and mapping rules, the Authority on A reached
/// over link `subnet` with the client certificate `client` (cert, key), if any.
fn sidecar_config(
    world: &World,
    authority: &World,
    subnet: u8,
    client: Option<(&Path, &Path)>,
) -> String {
    let project = world.project_dir();
    let pki = authority.project_dir();
    let url = format!("https://10.213.{subnet}.1:{AUTHORITY_PORT}");
    let identity = client.map_or_else(String::new, |(cert, key)| {
        format!(
            "client_cert = \"{}\"\nclient_key = \"{}\"\n",
            cert.display(),
            key.display()
        )
    });
    format!(
        "[project]\nagent = \"codex\"\nprovider = \"anthropic\"\ndeployment = \"fleet\"\n\n\
         [authority]\nmode = \"remote\"\nurl = \"{url}\"\n\n\
         [sidecar.proxy]\nlisten = \"127.0.0.1:0\"\n\n\
         [sidecar.mapping]\nrules = \"{}\"\n\n\
         [sidecar.audit]\nkey = \"{}\"\n\n\
         [sidecar.authority]\nurl = \"{url}\"\npublic_key = \"{}\"\nca_cert = \"{}\"\n{identity}",
        project.join("mapping-rules.toml").display(),
        project.join("audit.key").display(),
        pki.join("authority.pub").display(),
        pki.join("client-ca.crt").display(),
    )
}

fn host_world() -> World {
    let world = World::new();
    world.init(&[]);
    world
}

fn cert_pair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    )
}

fn wait_until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> (T, Duration) {
    let started = Instant::now();
    let value = common::wait_for(what, DEADLINE, &mut check);
    (value, started.elapsed())
}

#[test]
fn an_authority_on_host_a_serves_sidecars_on_hosts_b_and_c() {
    let hosts = Hosts::create();

    // Host A: the Authority, its CA, and the certificates of the deployment.
    let a = World::new();
    a.init(&[]);
    a.forbid_admin();
    let pki = a.project_dir().join("pki");
    let pki_dir = pki.display().to_string();
    a.edit_config(|text| {
        text.replacen("[project]\n", "[project]\ndeployment = \"fleet\"\n", 1)
            .replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"0.0.0.0:{AUTHORITY_PORT}\""),
                1,
            )
            .replacen(
                "bundle_ttl = \"30s\"\n",
                "bundle_ttl = \"30s\"\ntls_cert = \"pki/authority.crt\"\ntls_key = \"pki/authority.key\"\nclient_ca = \"client-ca.crt\"\n",
                1,
            )
    });
    assert_success(&a.run(&["authority", "cert", "init"]));
    for args in [
        vec![
            "--role",
            "server",
            "--name",
            "authority",
            "--ip",
            "10.213.1.1",
            "--ip",
            "10.213.2.1",
        ],
        vec!["--role", "sidecar", "--name", "host-b"],
        vec!["--role", "sidecar", "--name", "host-c"],
    ] {
        let mut full = vec!["authority", "cert", "issue", "--out", &pki_dir];
        full.extend(args);
        assert_success(&a.run(&full));
    }

    // Hosts B and C: their own projects (audit keys), pointed at A with their certificates.
    let b = host_world();
    let c = host_world();
    let witness_keys = a.project_dir().join("witness-keys");
    std::fs::create_dir_all(&witness_keys).unwrap();
    for (world, subnet, name) in [(&b, 1, "host-b"), (&c, 2, "host-c")] {
        let (cert, key) = cert_pair(&pki, name);
        std::fs::write(
            world.config_path(),
            sidecar_config(world, &a, subnet, Some((&cert, &key))),
        )
        .unwrap();
        // The operator registers each Sidecar's audit key with the witness.
        std::fs::copy(
            world.project_dir().join("audit.pub"),
            witness_keys.join(format!("{name}.pub")),
        )
        .unwrap();
    }

    let www_b = FileUpstream::serving_in(&b, Some(hosts.b()));
    let www_c = FileUpstream::serving_in(&c, Some(hosts.c()));
    let (port_b, port_c) = (www_b.port, www_c.port);

    let mut authority = Daemon::spawn_command(firma_in(&a, hosts.a(), &["authority"]));
    let sidecar_b = Daemon::spawn_command(firma_in(&b, hosts.b(), &["sidecar"]));
    let sidecar_c = Daemon::spawn_command(firma_in(&c, hosts.c(), &["sidecar"]));

    // A token minted on A is enforced on B and C, under A's policies.
    let out = run_in(
        &a,
        hosts.a(),
        &["token", "issue", "--action", "communication.internal.send"],
    );
    assert_success(&out);
    let token = stdout(&out).trim().to_string();
    let site = |ns: &str, sidecar: &Daemon, port: u16, path: &str| {
        curl_in(
            Some(ns),
            &format!("http://firma:{token}@{}", sidecar.addr),
            &format!("http://127.0.0.1:{port}{path}"),
            &[],
        )
    };
    for (ns, sidecar, port) in [
        (hosts.b(), &sidecar_b, port_b),
        (hosts.c(), &sidecar_c, port_c),
    ] {
        let (status, body) = site(ns, sidecar, port, "/hello.txt");
        assert_eq!(
            (status, body.as_str()),
            (200, "hello from upstream\n"),
            "{ns}"
        );
        let (status, body) = site(ns, sidecar, port, "/admin/secret.txt");
        assert_eq!(status, 403, "{ns}: {body}");
        assert!(body.contains("no-admin"), "{ns}: {body}");
    }

    // A sidecar certificate cannot mint (B's operator side misusing its sidecar certificate).
    let (cert, key) = cert_pair(&pki, "host-b");
    let misuse = b.project_dir().join("misuse.toml");
    std::fs::write(
        &misuse,
        sidecar_config(&b, &a, 1, Some((&cert, &key))).replacen(
            "[authority]\nmode = \"remote\"\n",
            &format!(
                "[authority]\nmode = \"remote\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
                cert.display(),
                key.display()
            ),
            1,
        ),
    )
    .unwrap();
    let out = run_in(
        &b,
        hosts.b(),
        &[
            "--config",
            &misuse.display().to_string(),
            "token",
            "issue",
            "--action",
            "communication.internal.send",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("IssueCapability is for operators"),
        "{}",
        stderr(&out)
    );

    // A Sidecar without a client certificate is refused (and never reports ready).
    let anonymous = host_world();
    std::fs::write(
        anonymous.config_path(),
        sidecar_config(&anonymous, &a, 1, None),
    )
    .unwrap();
    let stranger = Daemon::launch_command(firma_in(&anonymous, hosts.b(), &["sidecar"]));
    wait_until("A to refuse the certificate-less sidecar", || {
        authority
            .log()
            .lines()
            .any(|l| {
                l.contains("refused")
                    && l.contains("no client certificate")
                    && l.contains("10.213.1.2")
            })
            .then_some(())
    });
    assert!(
        !stranger.log().contains("\"message\":\"ready\""),
        "{}",
        stranger.log()
    );
    drop(stranger);

    // Checkpoints from B and C are witnessed on A (each Sidecar reports every second).
    for (world, ns, name) in [(&b, hosts.b(), "host-b"), (&c, hosts.c(), "host-c")] {
        let (report, took) = wait_until(&format!("{name}'s checkpoint witnessed"), || {
            let out = run_in(world, ns, &["audit", "verify", "--witness", "--json"]);
            let report: serde_json::Value = serde_json::from_str(&stdout(&out)).ok()?;
            (report["witness"]["verdict"]["status"] == "ok"
                && report["witness"]["witnessed"]["seq"].as_u64() >= Some(2))
            .then_some(report)
        });
        assert_eq!(report["witness"]["sidecar_id"], name, "{report}");
        eprintln!("{name}: checkpoint witnessed on A after {took:?}");
    }
    let witnessed =
        std::fs::read_to_string(a.data_dir().join("witnessed-checkpoints.jsonl")).unwrap();
    assert!(
        witnessed.contains("\"sidecar\":\"host-b\"")
            && witnessed.contains("\"sidecar\":\"host-c\"")
    );

    // A second token, kept: it shows the genuine policies stay in force once a fake appears.
    let out = run_in(
        &a,
        hosts.a(),
        &["token", "issue", "--action", "communication.internal.send"],
    );
    assert_success(&out);
    let kept = stdout(&out).trim().to_string();

    // A revocation on A reaches B and C (measured; the bound is checked by a wide deadline —
    // latency figures belong to benches).
    let out = run_in(
        &a,
        hosts.a(),
        &["token", "revoke", &token, "--reason", "fleet test"],
    );
    assert_success(&out);
    for (ns, sidecar, port) in [
        (hosts.b(), &sidecar_b, port_b),
        (hosts.c(), &sidecar_c, port_c),
    ] {
        let (body, took) = wait_until(&format!("the revocation to reach {ns}"), || {
            let (status, body) = site(ns, sidecar, port, "/hello.txt");
            (status == 403).then_some(body)
        });
        assert!(body.contains("token_revoked"), "{ns}: {body}");
        eprintln!("revocation on A enforced in {ns} after {took:?}");
    }

    // A fake Authority — another key, but A's address and TLS identity — gets its bundle refused.
    let _ = authority.guard.child_mut().kill();
    let _ = authority.guard.child_mut().wait();
    let fake = World::new();
    fake.init(&[]);
    let a_project = a.project_dir().display().to_string();
    fake.edit_config(|text| {
        text.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"0.0.0.0:{AUTHORITY_PORT}\""),
            1,
        )
        .replacen(
            "bundle_ttl = \"30s\"\n",
            &format!(
                "bundle_ttl = \"30s\"\ntls_cert = \"{a_project}/pki/authority.crt\"\ntls_key = \"{a_project}/pki/authority.key\"\nclient_ca = \"{a_project}/client-ca.crt\"\n"
            ),
            1,
        )
    });
    let _fake = Daemon::spawn_command(firma_in(&fake, hosts.a(), &["authority"]));
    for (ns, sidecar) in [(hosts.b(), &sidecar_b), (hosts.c(), &sidecar_c)] {
        wait_until(&format!("{ns} to refuse the fake's bundle"), || {
            let log = sidecar.log();
            log.lines()
                .any(|l| {
                    l.contains("policy bundle refused")
                        && l.contains("does not verify with the pinned key")
                })
                .then_some(())
        });
    }
    // The genuine bundle stays in force on B and C: the kept token passes, /admin stays denied.
    for (ns, sidecar, port) in [
        (hosts.b(), &sidecar_b, port_b),
        (hosts.c(), &sidecar_c, port_c),
    ] {
        let proxy = format!("http://firma:{kept}@{}", sidecar.addr);
        let (status, _) = curl_in(
            Some(ns),
            &proxy,
            &format!("http://127.0.0.1:{port}/hello.txt"),
            &[],
        );
        assert_eq!(status, 200, "{ns}");
        let (status, body) = curl_in(
            Some(ns),
            &proxy,
            &format!("http://127.0.0.1:{port}/admin/secret.txt"),
            &[],
        );
        assert_eq!(status, 403, "{ns}: {body}");
        assert!(body.contains("no-admin"), "{ns}: {body}");
    }
}
