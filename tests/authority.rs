//! Black-box tests of `firma authority` and `firma token`: the built binary in a throwaway world,
//! listening on port 0, driven over real gRPC on loopback (Rust and Python clients).

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::authority::{AuthorityProcess, DEADLINE, issue_request};
use common::{World, assert_success, stderr, stdout, wait_for};
use firma::authority::token::verify_token;
use firma::proto::{RevokeRequest, WatchPolicyBundleRequest, WatchRevocationsRequest};
use tokio_stream::StreamExt;

fn public_key(world: &World) -> ed25519_dalek::VerifyingKey {
    firma::config::keys::load_verifying_key(&world.project_dir().join("authority.pub")).unwrap()
}

/// Save like a careful editor: a temporary file renamed over the target, so the watcher never
/// sees a half-written policy.
fn save(path: &std::path::Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Give the project's Authority a self-signed TLS certificate (localhost, 127.0.0.1) and make
/// its clients trust it.
fn serve_tls(world: &World) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let dir = world.project_dir();
    std::fs::write(dir.join("tls.crt"), cert.cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), cert.signing_key.serialize_pem()).unwrap();
    world.edit_config(|text| {
        text.replacen(
            "bundle_ttl = \"30s\"\n",
            "bundle_ttl = \"30s\"\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\n",
            1,
        )
        .replacen(
            "public_key = \"authority.pub\"\n",
            "public_key = \"authority.pub\"\nca_cert = \"tls.crt\"\n",
            1,
        )
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_verify_offline_revoke_and_watch_the_revocation() {
    let world = World::new();
    world.init(&[]);
    let authority = AuthorityProcess::start(&world);
    let mut client = authority.operator(&world).await;

    let mut revocations = client
        .watch_revocations(WatchRevocationsRequest {
            since: None,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = tokio::time::timeout(DEADLINE, revocations.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(first.snapshot_complete, "{first:?}");

    // Over gRPC, and verified offline with nothing but the public key.
    let response = client
        .issue_capability(issue_request("codex", "communication.external.send"))
        .await
        .unwrap()
        .into_inner();
    assert!(response.granted, "{response:?}");
    let claims = verify_token(&response.token, &public_key(&world), chrono::Utc::now()).unwrap();
    assert_eq!(claims.token_id, response.token_id);
    assert_eq!(claims.agent_id, "codex");
    assert_eq!(claims.session_id, "test-session");
    assert_eq!(claims.actions, vec!["communication.external.send"]);
    assert_eq!((claims.expires_at - claims.issued_at).num_seconds(), 600);

    // Through the CLI, which finds the Authority via <state_dir>/authority.listen.
    let out = world.run(&[
        "token",
        "issue",
        "--agent",
        "codex",
        "--action",
        "communication.internal.send",
        "--ttl",
        "5h",
        "--json",
    ]);
    assert_success(&out);
    let issued: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let mut shape = issued.clone();
    for (field, placeholder) in [
        ("token", "[token]"),
        ("token_id", "[token id]"),
        ("expires_at", "[expiry]"),
        ("session_id", "[session]"),
    ] {
        shape[field] = placeholder.into();
    }
    insta::assert_json_snapshot!("token_issue_json", shape);
    let token = issued["token"].as_str().unwrap();
    let token_id = issued["token_id"].as_str().unwrap();
    let claims = verify_token(token, &public_key(&world), chrono::Utc::now()).unwrap();
    assert_eq!(claims.token_id, token_id);
    // Clamped to max_ttl (1h in the scaffold).
    assert_eq!((claims.expires_at - claims.issued_at).num_seconds(), 3600);
    assert_eq!(
        issued["expires_at"].as_str().unwrap(),
        claims
            .expires_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );

    let out = world.run(&["token", "revoke", token_id, "--reason", "leaked"]);
    assert_success(&out);
    assert!(stdout(&out).contains(token_id), "{}", stdout(&out));
    let event = tokio::time::timeout(DEADLINE, revocations.next())
        .await
        .expect("revocation event")
        .unwrap()
        .unwrap();
    assert_eq!(
        (event.token_id.as_str(), event.reason.as_str()),
        (token_id, "leaked")
    );
    let file = std::fs::read_to_string(world.data_dir().join("revocations.txt")).unwrap();
    assert!(file.starts_with(&format!("{token_id}\t")), "{file}");
    assert!(file.trim_end().ends_with("\tleaked"), "{file}");

    // Revoking again is idempotent.
    let again = client
        .revoke(RevokeRequest {
            token_id: token_id.into(),
            reason: "again".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.newly_revoked);

    // A hand edit of the file is picked up and streamed.
    let mut text = file.clone();
    text.push_str("hand-revoked-id\n");
    std::fs::write(world.data_dir().join("revocations.txt"), text).unwrap();
    let event = tokio::time::timeout(DEADLINE, revocations.next())
        .await
        .expect("hand-edit event")
        .unwrap()
        .unwrap();
    assert_eq!(event.token_id, "hand-revoked-id");

    // A late watcher gets the replay (only what is newer than `since`), then the marker.
    let since =
        firma::authority::client::timestamp(chrono::Utc::now() - chrono::Duration::hours(1));
    let mut late = client
        .watch_revocations(WatchRevocationsRequest {
            since: Some(since),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let mut replayed = Vec::new();
    loop {
        let event = tokio::time::timeout(DEADLINE, late.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if event.snapshot_complete {
            break;
        }
        replayed.push(event.token_id);
    }
    assert_eq!(
        replayed,
        vec![token_id.to_string(), "hand-revoked-id".into()]
    );
    let future =
        firma::authority::client::timestamp(chrono::Utc::now() + chrono::Duration::hours(1));
    let mut none = client
        .watch_revocations(WatchRevocationsRequest {
            since: Some(future),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let event = none.next().await.unwrap().unwrap();
    assert!(
        event.snapshot_complete && event.token_id.is_empty(),
        "{event:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_is_a_response_with_a_reason_and_bad_requests_are_invalid_argument() {
    let world = World::new();
    world.init(&[]);
    let authority = AuthorityProcess::start(&world);
    let mut client = authority.operator(&world).await;

    let response = client
        .issue_capability(issue_request("intruder", "communication.external.send"))
        .await
        .unwrap()
        .into_inner();
    assert!(!response.granted);
    assert!(response.token.is_empty());
    assert_eq!(response.deny_reason, "POLICY_DENIED");
    assert!(
        response.deny_message.contains("\"intruder\""),
        "{}",
        response.deny_message
    );

    // Registered but not permitted by the scaffold's issuance policy.
    let response = client
        .issue_capability(issue_request("codex", "payment.transfer"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.deny_reason, "POLICY_DENIED");

    let mut bad = vec![
        issue_request("", "communication.external.send"),
        issue_request("codex", "no.such.class"),
        issue_request("codex", "communication.external.send"),
    ];
    bad[2].ttl_seconds = 0;
    for request in bad {
        let status = client.issue_capability(request.clone()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{request:?}");
        assert!(!status.message().is_empty());
    }

    let out = world.run(&[
        "token",
        "issue",
        "--agent",
        "intruder",
        "--action",
        "communication.external.send",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("POLICY_DENIED"), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
}

/// Next bundle from the stream, or `None` if none arrives within `wait`.
async fn next_bundle(
    stream: &mut tonic::Streaming<firma::proto::PolicyBundle>,
    wait: Duration,
) -> Option<firma::proto::PolicyBundle> {
    match tokio::time::timeout(wait, stream.next()).await {
        Ok(Some(Ok(bundle))) => Some(bundle),
        Ok(other) => panic!("stream ended: {other:?}"),
        Err(_) => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_edits_reach_watchers_and_broken_edits_keep_the_old_bundle() {
    let world = World::new();
    world.init(&[]);
    let authority = AuthorityProcess::start(&world);
    let mut client = authority.client().await;
    let mut stream = client
        .watch_policy_bundle(WatchPolicyBundleRequest {
            current_version: String::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let first = next_bundle(&mut stream, DEADLINE)
        .await
        .expect("initial bundle");
    assert_eq!(first.version.len(), 64);
    assert!(
        first.policies.contains("allow-loopback"),
        "{}",
        first.policies
    );
    assert!(first.schema.contains("namespace Firma"));
    assert_eq!(first.ttl_seconds, 30);

    // A client that already holds the version gets nothing at once.
    let mut current = client
        .watch_policy_bundle(WatchPolicyBundleRequest {
            current_version: first.version.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        next_bundle(&mut current, Duration::from_millis(300))
            .await
            .is_none()
    );

    let policy = world.project_dir().join("policies/extra.cedar");
    let saved = Instant::now();
    save(
        &policy,
        "@id(\"extra\")\npermit (principal, action == Firma::Action::\"code.read\", resource);\n",
    );
    let second = next_bundle(&mut stream, DEADLINE)
        .await
        .expect("edited bundle");
    let latency = saved.elapsed();
    assert_ne!(second.version, first.version);
    assert!(second.policies.contains("@id(\"extra\")"));
    eprintln!("policy edit reached the watcher after {latency:?}");
    let also = next_bundle(&mut current, DEADLINE)
        .await
        .expect("second watcher");
    assert_eq!(also.version, second.version);

    // A broken edit: logged with file:line:column, no new bundle, issuance keeps working.
    save(
        &policy,
        "@id(\"extra\")\npermit (principal, action, resource)\nwhen { ;\n",
    );
    let location = format!("{}:3:", policy.display());
    wait_for("the reload error in the log", DEADLINE, || {
        authority.log().contains(&location).then_some(())
    });
    assert!(
        next_bundle(&mut stream, Duration::from_millis(500))
            .await
            .is_none()
    );
    let response = authority
        .operator(&world)
        .await
        .issue_capability(issue_request("codex", "communication.external.send"))
        .await
        .unwrap()
        .into_inner();
    assert!(response.granted);
    let error_line = authority
        .log()
        .lines()
        .find(|l| l.contains(&location))
        .unwrap()
        .to_string();
    let error: serde_json::Value = serde_json::from_str(&error_line).unwrap();
    assert_eq!(error["level"], "ERROR", "{error_line}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains(&second.version[..12]),
        "{error_line}"
    );

    // Fixing it publishes again.
    save(
        &policy,
        "@id(\"extra\")\npermit (principal, action == Firma::Action::\"code.write\", resource);\n",
    );
    let third = next_bundle(&mut stream, DEADLINE)
        .await
        .expect("fixed bundle");
    assert_ne!(third.version, second.version);
    assert!(third.policies.contains("code.write"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_open_streams_shuts_down_promptly() {
    let world = World::new();
    world.init(&[]);
    let mut authority = AuthorityProcess::start(&world);
    let mut client = authority.client().await;
    let mut bundles = client
        .watch_policy_bundle(WatchPolicyBundleRequest::default())
        .await
        .unwrap()
        .into_inner();
    next_bundle(&mut bundles, DEADLINE).await.expect("bundle");
    let mut revocations = client
        .watch_revocations(WatchRevocationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(revocations.next().await.unwrap().unwrap().snapshot_complete);

    let sent = Instant::now();
    authority.signal(nix::sys::signal::Signal::SIGTERM);
    let status = wait_for("the authority to exit", DEADLINE, || {
        authority.guard.child_mut().try_wait().unwrap()
    });
    let took = sent.elapsed();
    eprintln!("shutdown with two open streams took {took:?}");
    assert!(status.success(), "{status}\n{}", authority.log());
    // Generous bound (the target is 1 s; the benchmark-free check here only catches a hang on
    // the streams, which would take tonic's full keepalive time).
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // The streams were ended by the server, not left dangling.
    let end = tokio::time::timeout(DEADLINE, bundles.next())
        .await
        .unwrap();
    assert!(!matches!(end, Some(Ok(_))), "{end:?}");
    assert!(authority.log().contains("\"message\":\"stopped\""));
}

#[test]
fn startup_errors_exit_2_naming_the_address_or_file() {
    let world = World::new();
    world.init(&[]);

    // Address in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    world.edit_config(|text| {
        text.replacen(
            "listen = \"127.0.0.1:0\"",
            &format!("listen = \"{addr}\""),
            1,
        )
    });
    let out = world.run(&["authority"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&addr) && err.contains("address in use"),
        "{err}"
    );
    assert!(err.contains("hint:"), "{err}");
    drop(taken);
    world.edit_config(|text| {
        text.replacen(
            &format!("listen = \"{addr}\""),
            "listen = \"127.0.0.1:0\"",
            1,
        )
    });

    // A policy that does not validate.
    let policy = world.project_dir().join("policies/bad.cedar");
    std::fs::write(
        &policy,
        "\n\npermit (principal, action == Firma::Action::\"no.such.class\", resource);\n",
    )
    .unwrap();
    let out = world.run(&["authority"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{}:3:", policy.display())),
        "{}",
        stderr(&out)
    );
    // `firma config check` reports the same problem.
    let out = world.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("bad.cedar:3:"), "{}", stderr(&out));
    std::fs::remove_file(&policy).unwrap();
    let out = world.run(&["config", "check"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("issuance policies"),
        "{}",
        stdout(&out)
    );

    // Plain text on a non-loopback address needs an explicit opt-in.
    world
        .edit_config(|text| text.replacen("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"", 1));
    let out = world.run(&["authority"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("0.0.0.0:0"), "{}", stderr(&out));
    assert!(stderr(&out).contains("tls_cert"), "{}", stderr(&out));
}

#[test]
fn token_commands_name_an_unreachable_authority() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new();
    world.init(&[]);
    let socket = world.state_dir().join("authority.sock");
    let commands = [
        vec![
            "token",
            "issue",
            "--agent",
            "codex",
            "--action",
            "code.read",
        ],
        vec!["token", "revoke", "0193b7a2-5c1e-7d33-9a4e-6f0e2b8c1d42"],
    ];
    let refused = |why: &str| {
        for args in &commands {
            let out = world.run(args);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
            let err = stderr(&out);
            assert!(
                err.contains(&socket.display().to_string()),
                "{args:?}: {err}"
            );
            assert!(err.contains(why), "{args:?}: {err}");
            assert!(err.contains("hint:"), "{args:?}: {err}");
        }
    };
    // No Authority has run: no operator socket.
    refused("cannot find the running Authority");
    // One ran and died: its socket file is left, nobody answers.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600)).unwrap();
    refused("cannot reach the Authority");
    // A socket other users can connect to is not trusted.
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    refused("lets other users connect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    let world = World::new();
    world.init(&[]);
    let authority = AuthorityProcess::start(&world);
    let channel = tonic::transport::Endpoint::from_shared(authority.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    for service in ["", "firma.v1.Authority"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32
        );
    }

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel);
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.next().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response {response:?}");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"firma.v1.Authority"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
}

/// Any local process can reach the TCP port: refusing it twenty times must not write twenty log
/// lines (firma does not rotate the daemon log), while every call is still refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_refusals_are_logged_once_a_window() {
    let world = World::new();
    world.init(&[]);
    let authority = AuthorityProcess::start(&world);
    let mut client = authority.client().await;
    let calls = 20;
    for _ in 0..calls {
        let status = client
            .issue_capability(issue_request("codex", "communication.external.send"))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }
    let refusals = |log: &str| {
        log.lines()
            .filter(|l| l.contains("refused") && l.contains("IssueCapability"))
            .count()
    };
    wait_for("the refusal in the log", DEADLINE, || {
        (refusals(&authority.log()) > 0).then_some(())
    });
    // The log is read by another thread: give any late line the time to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = authority.log();
    // One a 10-second window (a slow machine may cross into a second one).
    assert!(
        (1..=2).contains(&refusals(&log)),
        "{} lines for {calls} refusals:\n{log}",
        refusals(&log)
    );
}

/// A client generated only from `proto/` in another language: Python grpcio.
#[test]
fn python_client_generated_from_the_proto_calls_issue_and_health() {
    common::require_python("grpc, grpc_tools", "grpcio grpcio-tools");
    let world = World::new();
    world.init(&[]);
    let authority = AuthorityProcess::start(&world);
    let out_dir = world.path().join("py");
    std::fs::create_dir_all(&out_dir).unwrap();
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
    let status = Command::new("python3")
        .args(["-m", "grpc_tools.protoc", "-I", proto_dir])
        .arg(format!("--python_out={}", out_dir.display()))
        .arg(format!("--grpc_python_out={}", out_dir.display()))
        .arg(format!("{proto_dir}/firma/v1/authority.proto"))
        .status()
        .unwrap();
    assert!(status.success());
    let script = r#"
import sys, grpc
sys.path.insert(0, sys.argv[1])
from firma.v1 import authority_pb2 as pb, authority_pb2_grpc as rpc
channel = grpc.insecure_channel(sys.argv[2])
# Minting is for operators: over the TCP port the caller is a sidecar.
try:
    rpc.AuthorityStub(channel).IssueCapability(pb.IssueCapabilityRequest(
        agent_id="codex", actions=["communication.external.send"], resource_scope="*",
        ttl_seconds=60), timeout=10)
    raise SystemExit("expected PERMISSION_DENIED over TCP")
except grpc.RpcError as err:
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED, err
    print("TCP REFUSED", err.details())
# grpc-core would send the socket path as :authority, which HTTP/2 servers reject.
stub = rpc.AuthorityStub(grpc.insecure_channel("unix:" + sys.argv[3],
    options=[("grpc.default_authority", "localhost")]))
ok = stub.IssueCapability(pb.IssueCapabilityRequest(
    agent_id="codex", actions=["communication.external.send"], resource_scope="api.anthropic.com",
    session_id="py-session", ttl_seconds=120), timeout=10)
assert ok.granted, ok
assert ok.token.startswith("v4.public."), ok.token
print("TOKEN", ok.token)
denied = stub.IssueCapability(pb.IssueCapabilityRequest(
    agent_id="nobody", actions=["communication.external.send"], resource_scope="*",
    ttl_seconds=60), timeout=10)
assert not denied.granted and denied.deny_reason == "POLICY_DENIED", denied
try:
    stub.IssueCapability(pb.IssueCapabilityRequest(agent_id="codex", actions=["nope"],
        resource_scope="*", ttl_seconds=60), timeout=10)
    raise SystemExit("expected INVALID_ARGUMENT")
except grpc.RpcError as err:
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err
# grpc.health.v1.Health/Check with hand-encoded messages: {} in, {status: SERVING(1)} out.
check = channel.unary_unary("/grpc.health.v1.Health/Check",
    request_serializer=lambda b: b, response_deserializer=lambda b: b)
assert check(b"", timeout=10) == b"\x08\x01"
print("HEALTH SERVING")
"#;
    let out = common::run_with_timeout(
        Command::new("python3")
            .args(["-c", script])
            .arg(&out_dir)
            .arg(&authority.addr)
            .arg(world.state_dir().join("authority.sock")),
        Duration::from_secs(60),
    );
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.contains("HEALTH SERVING"), "{text}");
    assert!(
        text.contains("TCP REFUSED IssueCapability is for operators"),
        "{text}"
    );
    let refusal = authority
        .log()
        .lines()
        .find(|l| l.contains("refused") && l.contains("IssueCapability"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no refusal logged:\n{}", authority.log()));
    assert!(
        refusal.contains("127.0.0.1:"),
        "the peer is named: {refusal}"
    );
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("TOKEN "))
        .unwrap()
        .trim();
    let claims = verify_token(token, &public_key(&world), chrono::Utc::now()).unwrap();
    assert_eq!(claims.resource_scope, "api.anthropic.com");
    assert_eq!(claims.session_id, "py-session");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_authority_is_reached_with_the_ca_file() {
    let world = World::new();
    world.init(&[]);
    serve_tls(&world);
    let dir = world.project_dir();
    let authority = AuthorityProcess::start(&world);
    let port = authority.addr.rsplit(':').next().unwrap();
    let url = format!("https://localhost:{port}");
    let mut client = firma::authority::client::connect(&url, Some(&dir.join("tls.crt")))
        .await
        .unwrap();
    let mut bundles = client
        .watch_policy_bundle(WatchPolicyBundleRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(next_bundle(&mut bundles, DEADLINE).await.is_some());
    // Without the CA the connection is refused before any request.
    assert!(firma::authority::client::connect(&url, None).await.is_err());
    // Plain text to the TLS port fails.
    let mut plain = firma::authority::client::connect(&format!("http://127.0.0.1:{port}"), None)
        .await
        .map(Some)
        .unwrap_or(None);
    if let Some(plain) = plain.as_mut() {
        assert!(
            plain
                .watch_policy_bundle(WatchPolicyBundleRequest::default())
                .await
                .is_err()
        );
    }
    // The CLI mints over the operator socket, whatever the TCP port speaks.
    let out = world.run(&[
        "token",
        "issue",
        "--agent",
        "codex",
        "--action",
        "communication.external.send",
    ]);
    assert_success(&out);
    assert!(stdout(&out).starts_with("v4.public."), "{}", stdout(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_are_refreshed_before_their_ttl_runs_out() {
    let world = World::new();
    world.init(&[]);
    world.edit_config(|text| text.replacen("bundle_ttl = \"30s\"", "bundle_ttl = \"1s\"", 1));
    let authority = AuthorityProcess::start(&world);
    let mut client = authority.client().await;
    let mut stream = client
        .watch_policy_bundle(WatchPolicyBundleRequest::default())
        .await
        .unwrap()
        .into_inner();
    let first = next_bundle(&mut stream, DEADLINE).await.expect("bundle");
    assert_eq!(first.ttl_seconds, 1);
    // Unchanged policies: the same version is re-sent (at half the TTL) with a newer sent_at.
    for _ in 0..2 {
        let refresh = next_bundle(&mut stream, DEADLINE).await.expect("refresh");
        assert_eq!(refresh.version, first.version);
        let (a, b) = (first.sent_at.unwrap(), refresh.sent_at.unwrap());
        assert!((b.seconds, b.nanos) > (a.seconds, a.nanos));
    }
}

/// `firma run` finds the Authority the way every other client does: a TLS Authority is reached
/// over TLS with the configured CA (it used to be dialled with plain http:// and fail).
#[test]
fn firma_run_gets_its_capability_from_a_tls_authority() {
    let world = World::new();
    world.init(&[]);
    serve_tls(&world);
    let _daemon = common::stack::DaemonGuard(&world);
    let out = world.run(&["run", "codex", "--", "true"]);
    assert_success(&out);
    // firma's own lines go to stderr: stdout belongs to the command (#15).
    assert!(stderr(&out).contains("capability "), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
}

/// `firma token` as an operator uses it: `issue` defaults the agent to `[project].agent`,
/// `inspect` verifies and reports (exit 1 once the token is not usable), `revoke` takes a whole
/// token or a UUID and refuses anything else without storing it.
#[test]
fn operators_inspect_tokens_and_revoke_them_whole_or_by_id() {
    let world = World::new();
    world.init(&[]);
    let _authority = AuthorityProcess::start(&world);
    let revocations = world.data_dir().join("revocations.txt");

    let out = world.run(&["token", "issue", "--action", "communication.internal.send"]);
    assert_success(&out);
    assert!(stderr(&out).contains("for agent codex"), "{}", stderr(&out));
    let token = stdout(&out).trim().to_string();
    let claims = verify_token(&token, &public_key(&world), chrono::Utc::now()).unwrap();
    assert_eq!(claims.agent_id, "codex");

    let out = world.run(&["token", "inspect", &token]);
    assert_success(&out);
    let redact = |text: &str| {
        text.replace(&claims.token_id, "[token id]")
            .replace(&claims.session_id, "[session]")
            .replace(&claims.issuer, "[issuer]")
            .replace(&world.project_dir().display().to_string(), "[project]")
            .lines()
            .map(|l| match l.split_once(' ') {
                Some((label @ ("issued" | "expires"), _)) => format!("{label:<11} [time]"),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    insta::assert_snapshot!("token_inspect", redact(&stdout(&out)));

    // Bad ids are refused before anything is stored.
    for bad in ["not-a-uuid", "v4.public.garbage"] {
        let out = world.run(&["token", "revoke", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", stderr(&out));
        assert!(stderr(&out).contains("hint:"), "{}", stderr(&out));
    }
    let out = world.run(&["token", "revoke", "not-a-uuid"]);
    assert!(
        stderr(&out).contains("\"not-a-uuid\" is not a token id"),
        "{}",
        stderr(&out)
    );
    let stored = std::fs::read_to_string(&revocations).unwrap_or_default();
    assert!(
        !stored.contains("not-a-uuid") && !stored.contains("garbage"),
        "{stored}"
    );

    // A whole token: verified, its id revoked with its expiry (so it can be pruned).
    let out = world.run(&["token", "revoke", &token, "--reason", "pasted in chat"]);
    assert_success(&out);
    assert!(stdout(&out).contains(&claims.token_id), "{}", stdout(&out));
    let stored = std::fs::read_to_string(&revocations).unwrap();
    let line = stored
        .lines()
        .find(|l| l.starts_with(&claims.token_id))
        .unwrap();
    let expiry = claims
        .expires_at
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(
        line.contains(&format!("\t{expiry}\tpasted in chat")),
        "{line}"
    );

    let out = world.run(&["token", "inspect", &token, "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["token_id"], claims.token_id.as_str());
    assert_eq!(report["validity"], "valid");
    assert_eq!(report["audience_matches"], true);
    assert_eq!(report["revocation"]["state"], "revoked");
    assert_eq!(report["revocation"]["reason"], "pasted in chat");
    let out = world.run(&["token", "inspect", &token]);
    assert!(
        stdout(&out).contains("NOT usable: revoked"),
        "{}",
        stdout(&out)
    );

    // By id: a UUID is accepted (idempotent here).
    let out = world.run(&["token", "revoke", &claims.token_id]);
    assert_success(&out);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(said.contains("already revoked"), "{said}");

    // A token of another Authority cannot be inspected or revoked as one.
    let other = World::new();
    other.init(&[]);
    let _other_authority = AuthorityProcess::start(&other);
    let out = other.run(&["token", "issue", "--action", "communication.internal.send"]);
    assert_success(&out);
    let foreign = stdout(&out).trim().to_string();
    for args in [
        vec!["token", "inspect", &foreign],
        vec!["token", "revoke", &foreign],
    ] {
        let out = world.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("signature does not verify")
                && stderr(&out).contains("authority.pub"),
            "{}",
            stderr(&out)
        );
    }
}

/// Revocations of expired tokens are pruned when the Authority starts: the file is compacted
/// (comments and live entries kept) and the replay no longer carries them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocations_of_expired_tokens_are_pruned() {
    let world = World::new();
    world.init(&[]);
    let path = world.data_dir().join("revocations.txt");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let now = chrono::Utc::now();
    let at =
        |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let text = format!(
        "# revoked by hand\n\
         0193b7a2-0000-7000-8000-000000000001\t{}\t{}\told, expired\n\
         0193b7a2-0000-7000-8000-000000000002\t{}\t{}\tstill valid\n\
         legacy-id 2026-01-01T00:00:00Z written before expiries were kept\n",
        at(now - chrono::Duration::hours(3)),
        at(now - chrono::Duration::hours(2)),
        at(now),
        at(now + chrono::Duration::hours(1)),
    );
    std::fs::write(&path, &text).unwrap();
    let authority = AuthorityProcess::start(&world);
    let compacted = std::fs::read_to_string(&path).unwrap();
    assert!(!compacted.contains("000000000001"), "{compacted}");
    for kept in ["# revoked by hand", "000000000002", "legacy-id"] {
        assert!(compacted.contains(kept), "{kept}: {compacted}");
    }
    assert!(
        authority
            .log()
            .contains("pruned 1 revocation(s) of expired tokens")
    );
    let mut client = authority.client().await;
    let mut stream = client
        .watch_revocations(WatchRevocationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut replayed = Vec::new();
    while let Some(event) = stream.next().await {
        let event = event.unwrap();
        if event.snapshot_complete {
            break;
        }
        replayed.push(event.token_id);
    }
    assert_eq!(
        replayed,
        ["0193b7a2-0000-7000-8000-000000000002", "legacy-id"]
    );
}
