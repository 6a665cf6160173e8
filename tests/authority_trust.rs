//! Only the operator mints: the Authority's callers and what they may do, attacked from the
//! outside — another local user on the operator socket, clients without, with expired, foreign
//! or wrong-role certificates on a mutual-TLS port.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::authority::{AuthorityProcess, DEADLINE, issue_request};
use common::{World, assert_success, stderr, stdout};
use firma::authority::client::{ClientIdentity, Target};
use firma::proto::WatchPolicyBundleRequest;
use tokio_stream::StreamExt;

/// The certificates of a mutual-TLS deployment, minted with `firma authority cert`.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(world: &World) -> Self {
        let dir = world.project_dir();
        let out = world.run(&["authority", "cert", "init"]);
        assert_success(&out);
        assert!(
            stdout(&out).contains("client_ca = "),
            "init says how to use it: {}",
            stdout(&out)
        );
        let pki = Self {
            dir: dir.join("pki"),
        };
        world.edit_config(|text| {
            text.replacen(
                "bundle_ttl = \"30s\"\n",
                "bundle_ttl = \"30s\"\ntls_cert = \"pki/localhost.crt\"\ntls_key = \"pki/localhost.key\"\nclient_ca = \"client-ca.crt\"\n",
                1,
            )
        });
        pki.issue(
            world,
            &[
                "--role",
                "server",
                "--name",
                "localhost",
                "--ip",
                "127.0.0.1",
            ],
        );
        pki
    }

    fn issue(&self, world: &World, args: &[&str]) {
        let mut full = vec!["authority", "cert", "issue", "--out"];
        let out_dir = self.dir.display().to_string();
        full.push(&out_dir);
        full.extend_from_slice(args);
        let out = world.run(&full);
        assert_success(&out);
    }

    fn ca(&self) -> PathBuf {
        self.dir.parent().unwrap().join("client-ca.crt")
    }

    fn identity(&self, name: &str) -> ClientIdentity {
        ClientIdentity {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        }
    }
}

fn target(authority: &AuthorityProcess, pki: &Pki, identity: Option<ClientIdentity>) -> Target {
    let port = authority.addr.rsplit(':').next().unwrap();
    Target {
        url: format!("https://localhost:{port}"),
        ca_cert: Some(pki.ca()),
        identity,
        allow_insecure: false,
        from: "test".into(),
    }
}

/// Certificates signed by the deployment's CA but expired or with an OU that names no role, and
/// one of another CA.
fn forged_identities(pki: &Pki) -> [ClientIdentity; 3] {
    use rcgen::{CertificateParams, DnType, Issuer, KeyPair};
    let leaf = |cn: &str, ou: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, ou);
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        params
    };
    let write = |name: &str, cert: String, key: String| {
        let identity = ClientIdentity {
            cert: pki.dir.join(format!("{name}.crt")),
            key: pki.dir.join(format!("{name}.key")),
        };
        std::fs::write(&identity.cert, cert).unwrap();
        std::fs::write(&identity.key, key).unwrap();
        identity
    };
    let ca_key = KeyPair::from_pem(
        &std::fs::read_to_string(pki.dir.parent().unwrap().join("client-ca.key")).unwrap(),
    )
    .unwrap();
    let issuer =
        Issuer::from_ca_cert_pem(&std::fs::read_to_string(pki.ca()).unwrap(), ca_key).unwrap();
    let mut expired = leaf("old-host", "sidecar");
    expired.not_before = rcgen::date_time_ymd(2020, 1, 1);
    expired.not_after = rcgen::date_time_ymd(2021, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = expired.signed_by(&key, &issuer).unwrap();
    let expired = write("expired", cert.pem(), key.serialize_pem());

    let other_ca_key = KeyPair::generate().unwrap();
    let mut other_ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    other_ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let other_issuer = Issuer::new(other_ca, other_ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = leaf("rogue", "sidecar")
        .signed_by(&key, &other_issuer)
        .unwrap();
    let foreign = write("foreign", cert.pem(), key.serialize_pem());
    let key = KeyPair::generate().unwrap();
    let cert = leaf("intern", "admins").signed_by(&key, &issuer).unwrap();
    let roleless = write("roleless", cert.pem(), key.serialize_pem());
    [expired, foreign, roleless]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_names_the_role_and_refuses_everyone_else() {
    let world = World::new();
    world.init(&[]);
    let pki = Pki::new(&world);
    pki.issue(&world, &["--role", "sidecar", "--name", "host-b"]);
    pki.issue(&world, &["--role", "operator", "--name", "alice"]);
    let [expired, foreign, roleless] = forged_identities(&pki);
    let authority = AuthorityProcess::start(&world);

    // A sidecar certificate watches, but cannot mint.
    let mut sidecar = target(&authority, &pki, Some(pki.identity("host-b")))
        .connect()
        .await
        .unwrap();
    let mut bundles = sidecar
        .watch_policy_bundle(WatchPolicyBundleRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(DEADLINE, bundles.next())
        .await
        .unwrap();
    assert!(matches!(first, Some(Ok(_))), "{first:?}");
    let status = sidecar
        .issue_capability(issue_request("codex", "communication.external.send"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("sidecar \"host-b\""),
        "{status:?}"
    );

    // An operator certificate mints.
    let mut operator = target(&authority, &pki, Some(pki.identity("alice")))
        .connect()
        .await
        .unwrap();
    let granted = operator
        .issue_capability(issue_request("codex", "communication.external.send"))
        .await
        .unwrap()
        .into_inner();
    assert!(granted.granted, "{granted:?}");

    // No certificate: health stays open, the Authority's methods do not.
    let mut anonymous = target(&authority, &pki, None).connect().await.unwrap();
    let status = anonymous
        .watch_policy_bundle(WatchPolicyBundleRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let channel = target(&authority, &pki, None)
        .endpoint()
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1, "SERVING");

    // A certificate of the right CA whose OU names no firma role.
    let status = target(&authority, &pki, Some(roleless))
        .connect()
        .await
        .unwrap()
        .watch_policy_bundle(WatchPolicyBundleRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("names no firma role"),
        "{status:?}"
    );

    // Expired, and signed by another CA: refused in the handshake, logged with the peer.
    for (identity, why) in [(expired, "expired"), (foreign, "UnknownIssuer")] {
        let refused = match target(&authority, &pki, Some(identity)).connect().await {
            Err(_) => true,
            Ok(mut client) => client
                .watch_policy_bundle(WatchPolicyBundleRequest::default())
                .await
                .is_err(),
        };
        assert!(refused, "{why}");
        let log = common::wait_for("the refusal in the log", DEADLINE, || {
            let log = authority.log();
            log.lines()
                .any(|l| {
                    l.contains("refused a TLS connection")
                        && l.to_lowercase().contains(&why.to_lowercase())
                })
                .then_some(log)
        });
        let line = log
            .lines()
            .find(|l| l.to_lowercase().contains(&why.to_lowercase()))
            .unwrap();
        assert!(line.contains("127.0.0.1:"), "the peer is named: {line}");
    }
    let log = authority.log();
    assert!(
        log.lines().any(|l| l.contains("refused")
            && l.contains("IssueCapability")
            && l.contains("host-b")),
        "{log}"
    );
}

/// `firma token` against a remote Authority authenticates with `[authority] client_cert`: an
/// operator certificate mints, a sidecar certificate is refused with the reason.
#[test]
fn remote_operators_mint_with_their_certificate() {
    let world = World::new();
    world.init(&[]);
    let pki = Pki::new(&world);
    pki.issue(&world, &["--role", "sidecar", "--name", "host-b"]);
    pki.issue(&world, &["--role", "operator", "--name", "alice"]);
    let authority = AuthorityProcess::start(&world);
    let port = authority.addr.rsplit(':').next().unwrap();
    let remote = |who: &str| -> PathBuf {
        let path = world.project_dir().join(format!("remote-{who}.toml"));
        std::fs::write(
            &path,
            format!(
                "[project]\nagent = \"codex\"\nprovider = \"anthropic\"\n\n[authority]\nmode = \"remote\"\n\
                 url = \"https://localhost:{port}\"\nclient_cert = \"pki/{who}.crt\"\nclient_key = \"pki/{who}.key\"\n\n\
                 [sidecar.authority]\nca_cert = \"client-ca.crt\"\n"
            ),
        )
        .unwrap();
        path
    };
    let issue = |config: &Path| {
        world.run(&[
            "--config",
            &config.display().to_string(),
            "token",
            "issue",
            "--agent",
            "codex",
            "--action",
            "communication.external.send",
        ])
    };
    let out = issue(&remote("alice"));
    assert_success(&out);
    assert!(stdout(&out).starts_with("v4.public."), "{}", stdout(&out));
    let out = issue(&remote("host-b"));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("IssueCapability is for operators"),
        "{}",
        stderr(&out)
    );
    assert!(stdout(&out).is_empty());
}

/// Another local user who reaches the operator socket (here: permissions opened on purpose) is
/// refused by the peer-uid check, and `firma token` refuses a socket it does not own.
#[test]
fn the_operator_socket_admits_only_the_authoritys_own_user() {
    use std::os::unix::fs::PermissionsExt;
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs a client as another user (setpriv) and needs root, as CI has"
    );
    let world = World::new();
    world.init(&[]);
    let authority = AuthorityProcess::start(&world);
    let socket = world.state_dir().join("authority.sock");
    for dir in [world.path(), &world.state_dir()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    // A raw gRPC call with curl (an empty message): the gate answers before the request is read.
    let empty = world.path().join("empty.grpc");
    std::fs::write(&empty, [0u8; 5]).unwrap();
    std::fs::set_permissions(&empty, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = common::run_with_timeout(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .args(["curl", "-sS", "--http2-prior-knowledge", "--unix-socket"])
            .arg(&socket)
            .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
            .arg("--data-binary")
            .arg(format!("@{}", empty.display()))
            .args(["-D", "-", "-o", "/dev/null"])
            .arg("http://localhost/firma.v1.Authority/IssueCapability"),
        Duration::from_secs(60),
    );
    assert_success(&out);
    let answer = stdout(&out);
    assert!(
        answer.contains("grpc-status: 7"),
        "PERMISSION_DENIED: {answer}"
    );
    assert!(answer.contains("peer%20uid%2065534"), "{answer}");
    let log = authority.log();
    assert!(
        log.lines()
            .any(|l| l.contains("refused") && l.contains("uid 65534")),
        "{log}"
    );

    // As the Authority's user, the CLI refuses a socket others can connect to...
    let out = world.run(&[
        "token",
        "issue",
        "--agent",
        "codex",
        "--action",
        "code.read",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("lets other users connect"),
        "{}",
        stderr(&out)
    );
    // ...and one that belongs to someone else.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    nix::unistd::chown(&socket, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let out = world.run(&[
        "token",
        "issue",
        "--agent",
        "codex",
        "--action",
        "code.read",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("belongs to uid 65534"),
        "{}",
        stderr(&out)
    );
}

/// `firma token issue` in `world` (over its operator socket): the token.
fn mint(world: &World) -> String {
    let out = world.run(&[
        "token",
        "issue",
        "--agent",
        "codex",
        "--action",
        "communication.internal.send",
        "--action",
        "communication.external.send",
    ]);
    assert_success(&out);
    stdout(&out).trim().to_string()
}

/// The Authority goes down and another process — with its own key and a permit-all bundle —
/// takes its address: the running Sidecar refuses its bundle and revocation snapshot (logged),
/// keeps enforcing the genuine bundle, and a Sidecar starting against it never becomes ready.
#[test]
fn a_fake_authority_on_the_address_gets_no_sidecar_to_enforce_its_bundle() {
    use common::http::curl;
    use common::upstream::FileUpstream;
    let world = World::new();
    world.init(&[]);
    world.forbid_admin();
    let upstream = FileUpstream::serving(&world);
    let port = upstream.port;
    let mut authority = AuthorityProcess::start(&world);
    let url = authority.url();
    let sidecar = common::authority::Daemon::spawn(&world, &["sidecar", "--authority-url", &url]);
    let token = mint(&world);
    let proxy = format!("http://firma:{token}@{}", sidecar.addr);
    let admin = format!("http://127.0.0.1:{port}/admin/secret.txt");
    let hello = format!("http://127.0.0.1:{port}/hello.txt");
    assert_eq!(curl(&proxy, &hello, &[]).0, 200);
    assert_eq!(curl(&proxy, &admin, &[]).0, 403);

    // The fake: another project (other keys, no forbid policy) on the genuine address.
    let _ = authority.guard.child_mut().kill();
    let _ = authority.guard.child_mut().wait();
    let fake_world = World::new();
    fake_world.init(&[]);
    let addr = authority.addr.clone();
    let config = fake_world.config_path();
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{addr}\""),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let fake = AuthorityProcess::start(&fake_world);
    let refused = common::wait_for("the sidecar to refuse the fake", DEADLINE, || {
        let log = sidecar.log();
        (log.contains("policy bundle refused") && log.contains("revocation snapshot refused"))
            .then_some(log)
    });
    let line = refused
        .lines()
        .find(|l| l.contains("policy bundle refused"))
        .unwrap();
    assert!(line.contains("\"level\":\"ERROR\""), "{line}");
    assert!(
        line.contains("does not verify with the pinned key k4.pid."),
        "{line}"
    );
    // The genuine bundle stays in force; the fake's tokens are worthless.
    assert_eq!(curl(&proxy, &admin, &[]).0, 403);
    let fake_token = mint(&fake_world);
    let (status, body) = curl(
        &format!("http://firma:{fake_token}@{}", sidecar.addr),
        &hello,
        &[],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("signature"), "{body}");

    // A Sidecar that starts while only the fake answers never reports ready.
    let late_state = world.path().join("late-state");
    let late = common::authority::Daemon::launch(
        &world,
        &[
            "sidecar",
            "--authority-url",
            &url,
            "--state-dir",
            &late_state.display().to_string(),
        ],
    );
    common::wait_for("the new sidecar to refuse the fake", DEADLINE, || {
        let log = late.log();
        (log.contains("policy bundle refused") && log.contains("revocation snapshot refused"))
            .then_some(())
    });
    assert!(
        !late.log().contains("\"message\":\"ready\""),
        "{}",
        late.log()
    );
    drop(fake);
}

/// A third-party PASETO library verifies firma's tokens with nothing but `authority.pub`:
/// Python `pyseto` checks the signature, `exp` and the audience, and computes the same PASERK id
/// the token names as its issuer.
#[test]
fn pyseto_verifies_tokens_their_audience_and_issuer() {
    common::require_python("pyseto", "pyseto");
    let world = World::new();
    world.init(&[]);
    world.edit_config(|text| {
        text.replacen("[project]\n", "[project]\ndeployment = \"staging\"\n", 1)
    });
    let _authority = AuthorityProcess::start(&world);
    let token = mint(&world);
    let script = r#"
import json, sys, pyseto
from pyseto import Key, Paseto
public = Key.new(version=4, purpose="public", key=open(sys.argv[1], "rb").read())
decoded = Paseto.new(leeway=5).decode(public, sys.argv[2], deserializer=json, aud="staging")
claims = decoded.payload
assert claims["iss"] == public.to_paserk_id(), (claims["iss"], public.to_paserk_id())
print("VERIFIED", claims["sub"], claims["aud"], claims["iss"])
try:
    Paseto.new(leeway=5).decode(public, sys.argv[2], deserializer=json, aud="production")
    raise SystemExit("another audience must not verify")
except pyseto.VerifyError as err:
    print("WRONG AUDIENCE REFUSED", err)
"#;
    let out = common::run_with_timeout(
        Command::new("python3")
            .args(["-c", script])
            .arg(world.project_dir().join("authority.pub"))
            .arg(&token),
        Duration::from_secs(60),
    );
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.contains("VERIFIED codex staging k4.pid."), "{text}");
    assert!(text.contains("WRONG AUDIENCE REFUSED"), "{text}");
}

/// A genuine token minted for one deployment is refused by a Sidecar of another (same Authority
/// key): 403 `token_invalid`, and the record says which deployments.
#[test]
fn a_sidecar_refuses_tokens_for_another_deployment() {
    use common::http::curl;
    use common::upstream::FileUpstream;
    let world = World::new();
    world.init(&[]);
    let upstream = FileUpstream::serving(&world);
    let port = upstream.port;
    let authority = AuthorityProcess::start(&world);
    let other = world.project_dir().join("prod.toml");
    let text = std::fs::read_to_string(world.config_path())
        .unwrap()
        .replacen("[project]\n", "[project]\ndeployment = \"prod\"\n", 1);
    std::fs::write(&other, text).unwrap();
    let sidecar = common::authority::Daemon::spawn(
        &world,
        &[
            "--config",
            &other.display().to_string(),
            "sidecar",
            "--authority-url",
            &authority.url(),
        ],
    );
    let token = mint(&world);
    let (status, body) = curl(
        &format!("http://firma:{token}@{}", sidecar.addr),
        &format!("http://127.0.0.1:{port}/hello.txt"),
        &[],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("token_invalid"), "{body}");
    let audit = std::fs::read_to_string(world.state_dir().join("audit.jsonl")).unwrap();
    let record = audit.lines().last().unwrap();
    assert!(
        record.contains("is for deployment \\\"ws\\\"; this Sidecar serves \\\"prod\\\""),
        "{record}"
    );
}

/// The Sidecar reports its checkpoints; the Authority keeps the latest. Removing the log's tail
/// together with its checkpoint — even re-signing a checkpoint with the audit key, which the
/// plain verifier then accepts — is `truncated` against the witness. Bogus reports are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn witnessed_checkpoints_catch_a_tail_removed_with_its_checkpoint() {
    use common::http::curl;
    use common::upstream::FileUpstream;
    let world = World::new();
    world.init(&[]);
    let upstream = FileUpstream::serving(&world);
    let port = upstream.port;
    let authority = AuthorityProcess::start(&world);
    let mut sidecar =
        common::authority::Daemon::spawn(&world, &["sidecar", "--authority-url", &authority.url()]);
    let token = mint(&world);
    let proxy = format!("http://firma:{token}@{}", sidecar.addr);
    for _ in 0..5 {
        assert_eq!(
            curl(&proxy, &format!("http://127.0.0.1:{port}/hello.txt"), &[]).0,
            200
        );
    }
    // A clean stop writes the final checkpoint and reports it.
    sidecar.signal(nix::sys::signal::Signal::SIGTERM);
    common::wait_for("the sidecar to stop", DEADLINE, || {
        sidecar.guard.child_mut().try_wait().unwrap()
    });
    let log = world.state_dir().join("audit.jsonl");
    let lines = std::fs::read_to_string(&log).unwrap();
    let last_seq = lines.lines().count() as u64;
    let out = world.run(&["audit", "verify", "--witness", "--json"]);
    assert_success(&out);
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["witness"]["verdict"]["status"], "ok", "{report}");
    assert_eq!(report["witness"]["witnessed"]["seq"], last_seq, "{report}");
    assert_eq!(report["witness"]["sidecar_id"], "local");

    // A rogue caller on the TCP port (sidecar role) cannot plant a checkpoint: not one signed by
    // another key, not one going backwards.
    let mut rogue = authority.client().await;
    let other_key = firma::config::keys::generate();
    let head = firma::audit::chain::ChainHead::advance(last_seq + 100, [9; 32]);
    let forged = firma::audit::checkpoint::Checkpoint::new(&log, head).to_line(&other_key);
    let status = rogue
        .report_checkpoint(firma::proto::ReportCheckpointRequest {
            sidecar_id: String::new(),
            checkpoint: forged,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let audit_key =
        firma::config::keys::load_signing_key(&world.project_dir().join("audit.key")).unwrap();
    let behind = firma::audit::checkpoint::Checkpoint::new(
        &log,
        firma::audit::chain::ChainHead::advance(1, [1; 32]),
    )
    .to_line(&audit_key);
    let status = rogue
        .report_checkpoint(firma::proto::ReportCheckpointRequest {
            sidecar_id: String::new(),
            checkpoint: behind,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("behind"), "{status:?}");

    // Cut the last two records and re-sign a checkpoint for the shortened log with the audit key.
    let kept: Vec<&str> = lines.lines().take(lines.lines().count() - 2).collect();
    std::fs::write(&log, format!("{}\n", kept.join("\n"))).unwrap();
    let tail = kept.last().unwrap();
    let hash = firma::audit::record::chain_hash(tail.as_bytes());
    let head = firma::audit::chain::ChainHead::advance(last_seq - 2, hash);
    firma::audit::checkpoint::Checkpoint::new(&log, head)
        .write(&world.state_dir().join("audit.checkpoint"), &audit_key)
        .unwrap();
    let out = world.run(&["audit", "verify"]);
    assert_success(&out);
    let out = world.run(&["audit", "verify", "--witness"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let said = stderr(&out);
    assert!(
        said.contains(&format!(
            "truncated: the Authority (unix:{}) witnessed seq {last_seq}",
            world.state_dir().join("authority.sock").display()
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("ends at seq {}", last_seq - 2)),
        "{said}"
    );
}

/// Bad trust configuration is an error naming the file, line and key, with a hint — never a
/// silently open port.
#[test]
fn bad_trust_settings_are_named_with_a_hint() {
    let world = World::new();
    world.init(&[]);
    // No CA to sign with yet.
    let out = world.run(&[
        "authority",
        "cert",
        "issue",
        "--role",
        "sidecar",
        "--name",
        "host-b",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("has no client_ca"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("firma authority cert init"),
        "{}",
        stderr(&out)
    );
    assert_success(&world.run(&["authority", "cert", "init"]));
    let out = world.run(&["authority", "cert", "init"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a CA is never replaced silently"
    );
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    let out = world.run(&[
        "authority",
        "cert",
        "issue",
        "--ca",
        "client-ca.crt",
        "--role",
        "sidecar",
        "--name",
        "bad name",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--name \"bad name\""),
        "{}",
        stderr(&out)
    );

    let cases = [
        (
            "bundle_ttl = \"30s\"\n",
            "bundle_ttl = \"30s\"\nclient_ca = \"client-ca.crt\"\n",
            "client_ca needs tls_cert",
        ),
        (
            "public_key = \"authority.pub\"\n",
            "public_key = \"authority.pub\"\nclient_cert = \"x.crt\"\n",
            "client_cert and client_key go together (client_key is missing)",
        ),
        (
            "[project]\n",
            "[project]\ndeployment = \"has space\"\n",
            "[project].deployment contains characters",
        ),
    ];
    let original = std::fs::read_to_string(world.config_path()).unwrap();
    for (anchor, replacement, expected) in cases {
        std::fs::write(
            world.config_path(),
            original.replacen(anchor, replacement, 1),
        )
        .unwrap();
        let out = world.run(&["config", "check"]);
        assert_eq!(out.status.code(), Some(2), "{expected}");
        let err = stderr(&out);
        assert!(err.contains(expected), "{expected}: {err}");
        assert!(
            err.contains("firma.toml:"),
            "names the file and line: {err}"
        );
        assert!(err.contains("hint:"), "{err}");
    }
}
