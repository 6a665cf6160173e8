//! Black-box tests of `firma sidecar`: the real `firma authority` and `firma sidecar` on port 0,
//! a real upstream server started by the test, and real clients (curl, Python requests).

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;

use common::http::{curl, json, python_get, raw_response, status_of};
use common::stack::{DEADLINE, start_stack, stop, terminate};
use common::upstream::{start_upstream, start_upstream_at, upstream_tls};
use common::{assert_success, wait_for};

#[test]
fn allowed_call_is_forwarded_without_proxy_authorization_and_audited() {
    let upstream = start_upstream(None);
    let stack = start_stack(|_| {}, &[]);
    let token = stack.token();
    let url = format!("http://127.0.0.1:{}/hello?x=1", upstream.addr.port());
    let (code, body) = curl(&stack.proxy_url(Some(&token)), &url, &[]);
    assert_eq!(code, 200, "{body}");
    let body = json(&body);
    assert_eq!(body["upstream"], true);
    assert_eq!(body["path"], "/hello");
    let headers = body["headers"].as_object().unwrap();
    assert!(!headers.contains_key("proxy-authorization"), "{headers:?}");
    assert!(!headers.contains_key("proxy-connection"), "{headers:?}");

    let record = stack.last_audit();
    assert_eq!(record["decision"], "allow");
    assert_eq!(record["agent_id"], "codex");
    assert_eq!(record["session_id"], "sess-1");
    assert_eq!(
        record["intent"]["action_class"],
        "communication.internal.send"
    );
    assert_eq!(record["intent"]["method"], "GET");
    assert_eq!(record["intent"]["host"], "127.0.0.1");
    assert_eq!(record["intent"]["path"], "/hello");
    assert_eq!(
        record["policy"]["determining"],
        serde_json::json!(["allow-loopback"])
    );
    assert!(!record["policy"]["bundle"].as_str().unwrap().is_empty());

    // Python requests through HTTP_PROXY=http://firma:<token>@host:port, keep-alive, POST body.
    let (code, body) = python_get(&stack.proxy_url(Some(&token)), &url, None);
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["upstream"], true);
    let (code, body) = curl(
        &stack.proxy_url(Some(&token)),
        &url,
        &["--data-binary", "0123456789"],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["body_len"], 10);
    assert_eq!(json(&body)["method"], "POST");
}

#[test]
fn token_problems_are_denied_with_reasons() {
    let upstream = start_upstream(None);
    let stack = start_stack(|_| {}, &[]);
    let url = format!("http://127.0.0.1:{}/x", upstream.addr.port());

    // Missing.
    let (code, body) = curl(&stack.proxy_url(None), &url, &[]);
    assert_eq!(code, 403, "{body}");
    let body = json(&body);
    assert_eq!(body["denied"], true);
    assert_eq!(body["reason"], "token_missing");
    assert_eq!(body["action_class"], "communication.internal.send");
    assert_eq!(stack.last_audit()["decision"], "deny");

    // Forged: signed by another key.
    let forged_key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let now = chrono::Utc::now();
    let claims = firma::authority::token::CapabilityClaims {
        token_id: "forged-1".into(),
        issuer: firma::authority::token::key_id(&forged_key.verifying_key()),
        // The deployment id: the workspace directory's name.
        audience: "ws".into(),
        agent_id: "codex".into(),
        session_id: "s".into(),
        actions: vec!["communication.internal.send".into()],
        resource_scope: "*".into(),
        issued_at: now,
        expires_at: now + chrono::Duration::minutes(5),
        sandbox_id: String::new(),
    };
    let forged = firma::authority::token::sign_token(&forged_key, &claims).unwrap();
    let (code, body) = curl(&stack.proxy_url(Some(&forged)), &url, &[]);
    assert_eq!(code, 403, "{body}");
    assert_eq!(json(&body)["reason"], "token_invalid");
    // Garbage.
    let (code, body) = curl(&stack.proxy_url(Some("v4.public.nonsense")), &url, &[]);
    assert_eq!(code, 403, "{body}");
    assert_eq!(json(&body)["reason"], "token_invalid");

    // Expired: signed by the real Authority key, an hour ago.
    let key =
        firma::config::keys::load_signing_key(&stack.world.project_dir().join("authority.key"))
            .unwrap();
    let expired_claims = firma::authority::token::CapabilityClaims {
        token_id: "expired-1".into(),
        issuer: firma::authority::token::key_id(&key.verifying_key()),
        issued_at: now - chrono::Duration::hours(2),
        expires_at: now - chrono::Duration::hours(1),
        ..claims
    };
    let expired = firma::authority::token::sign_token(&key, &expired_claims).unwrap();
    let (code, body) = curl(&stack.proxy_url(Some(&expired)), &url, &[]);
    assert_eq!(code, 403, "{body}");
    assert_eq!(json(&body)["reason"], "token_expired");
    let record = stack.last_audit();
    assert_eq!(record["token_id"], "expired-1");

    // Revoked: the next call after Revoke is blocked.
    let (token, token_id) = stack.issue(&["communication.internal.send"], "*");
    let (code, _) = curl(&stack.proxy_url(Some(&token)), &url, &[]);
    assert_eq!(code, 200);
    stack.revoke(&token_id);
    let body = wait_for("revocation to reach the sidecar", DEADLINE, || {
        let (code, body) = curl(&stack.proxy_url(Some(&token)), &url, &[]);
        (code == 403).then_some(body)
    });
    assert_eq!(json(&body)["reason"], "token_revoked");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn scope_and_policy_denials() {
    let upstream = start_upstream(None);
    let stack = start_stack(|_| {}, &[]);
    let url = format!("http://127.0.0.1:{}/data", upstream.addr.port());

    // The token does not grant the class the call maps to.
    let (token, _) = stack.issue(&["communication.external.send"], "*");
    let (code, body) = curl(&stack.proxy_url(Some(&token)), &url, &[]);
    assert_eq!(code, 403, "{body}");
    assert_eq!(json(&body)["reason"], "out_of_scope");
    // The resource is outside the token's scope.
    let (token, _) = stack.issue(&["communication.internal.send"], "127.0.0.1/other");
    let (code, body) = curl(&stack.proxy_url(Some(&token)), &url, &[]);
    assert_eq!(code, 403, "{body}");
    assert_eq!(json(&body)["reason"], "out_of_scope");

    // Policy edit flips the next decision: a forbid is hot-reloaded by the Authority.
    let token = stack.token();
    let (code, _) = curl(&stack.proxy_url(Some(&token)), &url, &[]);
    assert_eq!(code, 200);
    std::fs::write(
        stack.world.project_dir().join("policies/zz-test.cedar"),
        "@id(\"no-data\")\nforbid (principal, action, resource) when { context has path && context.path == \"/data\" };\n",
    )
    .unwrap();
    let body = wait_for("the policy edit to reach the sidecar", DEADLINE, || {
        let (code, body) = curl(&stack.proxy_url(Some(&token)), &url, &[]);
        (code == 403).then_some(body)
    });
    let body = json(&body);
    assert_eq!(body["reason"], "policy_denied");
    let record = stack.last_audit();
    assert_eq!(record["decision"], "deny");
    assert_eq!(
        record["policy"]["determining"],
        serde_json::json!(["no-data"])
    );
    // Other paths are still allowed.
    let other = format!("http://127.0.0.1:{}/fine", upstream.addr.port());
    let (code, _) = curl(&stack.proxy_url(Some(&token)), &other, &[]);
    assert_eq!(code, 200);
    // Removing the policy flips it back.
    std::fs::remove_file(stack.world.project_dir().join("policies/zz-test.cedar")).unwrap();
    wait_for("the policy removal to reach the sidecar", DEADLINE, || {
        let (code, _) = curl(&stack.proxy_url(Some(&token)), &url, &[]);
        (code == 200).then_some(())
    });
}

#[test]
fn unmapped_traffic_is_denied_or_passed_through_by_config() {
    let upstream = start_upstream(None);
    // "127.0.0.2" is loopback but no rule maps it.
    let url = format!("http://127.0.0.2:{}/u", upstream.addr.port());
    let stack = start_stack(|_| {}, &[]);
    let (code, body) = curl(&stack.proxy_url(None), &url, &[]);
    assert_eq!(code, 403, "{body}");
    assert_eq!(json(&body)["reason"], "unmapped");
    assert_eq!(stack.last_audit()["decision"], "deny");
    drop(stack);

    let stack = start_stack(
        |c| *c = c.replace("unmapped = \"deny\"", "unmapped = \"passthrough\""),
        &[],
    );
    // On Linux all of 127/8 is loopback; no rule maps 127.0.0.2.
    let passthrough_upstream = start_upstream_at("127.0.0.2", None);
    let url = format!("http://127.0.0.2:{}/u", passthrough_upstream.addr.port());
    let (code, body) = curl(&stack.proxy_url(None), &url, &[]);
    assert_eq!(code, 200, "{body}");
    let record = stack.last_audit();
    assert_eq!(record["decision"], "passthrough");
    assert_eq!(record["intent"]["host"], "127.0.0.2");
}

#[test]
fn https_is_tunnelled_or_intercepted() {
    let world_tmp = tempfile::tempdir().unwrap();
    let (upstream_ca, tls) = upstream_tls(world_tmp.path());
    let upstream = start_upstream(Some(tls));
    let ca_env = upstream_ca.to_str().unwrap().to_string();
    let stack = start_stack(
        |c| *c = c.replace("intercept_hosts = []", "intercept_hosts = [\"127.0.0.1\"]"),
        &[("FIRMA_SIDECAR_UPSTREAM_CA", &ca_env)],
    );
    let token = stack.token();
    let ca = stack.ca_cert();
    assert!(ca.is_file());

    // Tunnelled: localhost is not intercepted; curl verifies the upstream's own certificate.
    let url = format!("https://localhost:{}/tunnel", upstream.addr.port());
    let (code, body) = curl(
        &stack.proxy_url(Some(&token)),
        &url,
        &["--cacert", upstream_ca.to_str().unwrap()],
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["path"], "/tunnel");
    let record = stack.last_audit();
    assert_eq!(record["intent"]["method"], "CONNECT");
    assert_eq!(record["intent"]["host"], "localhost");
    assert_eq!(record["decision"], "allow");
    // When curl is done the tunnel's end is recorded, with the bytes each way.
    let closed = wait_for("the tunnel's end to be recorded", DEADLINE, || {
        stack.audit().into_iter().rev().find(|r| {
            r["reason"]
                .as_str()
                .is_some_and(|w| w.starts_with("tunnel_closed: connection closed"))
        })
    });
    assert_eq!(closed["intent"]["host"], "localhost");
    // A tunnel without a token is refused at CONNECT.
    let (code, _) = curl(
        &stack.proxy_url(None),
        &url,
        &["--cacert", upstream_ca.to_str().unwrap()],
    );
    assert_ne!(code, 200);
    assert_eq!(stack.last_audit()["intent"]["method"], "CONNECT");
    assert_eq!(
        stack.last_audit()["reason"]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("token_missing")
    );

    // Intercepted: curl trusts the generated CA; method and path are classified.
    let url = format!("https://127.0.0.1:{}/inside?q=1", upstream.addr.port());
    let (code, body) = curl(
        &stack.proxy_url(Some(&token)),
        &url,
        &["--cacert", ca.to_str().unwrap(), "-X", "PUT"],
    );
    assert_eq!(code, 200, "{body}");
    let body = json(&body);
    assert_eq!(body["path"], "/inside");
    assert!(
        !body["headers"]
            .as_object()
            .unwrap()
            .contains_key("proxy-authorization")
    );
    let record = stack.last_audit();
    assert_eq!(record["intent"]["method"], "PUT");
    assert_eq!(record["intent"]["path"], "/inside");
    assert_eq!(record["decision"], "allow");

    // Python requests with REQUESTS_CA_BUNDLE pointing at the generated CA.
    let (code, body) = python_get(&stack.proxy_url(Some(&token)), &url, Some(&ca));
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["path"], "/inside");

    // Inside an intercepted tunnel, a denial is a 403 with the JSON body.
    let (code, body) = curl(
        &stack.proxy_url(None),
        &url,
        &["--cacert", ca.to_str().unwrap()],
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(json(&body)["reason"], "token_missing");
}

/// A loopback URL nothing listens on.
fn closed_url() -> String {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    format!("http://127.0.0.1:{port}/gone")
}

#[test]
fn upstream_failure_after_allow_is_a_502_with_its_own_record() {
    let stack = start_stack(|_| {}, &[]);
    let token = stack.token();
    let before = stack.audit().len();
    let (code, body) = curl(&stack.proxy_url(Some(&token)), &closed_url(), &[]);
    assert_eq!(code, 502, "{body}");
    assert_eq!(json(&body)["reason"], "upstream_error");
    let records = stack.audit();
    assert_eq!(records.len(), before + 2);
    assert_eq!(records[before]["reason"], "allowed");
    assert!(
        records[before + 1]["reason"]
            .as_str()
            .unwrap()
            .starts_with("upstream_error")
    );
}

/// An agent cannot grow the Sidecar's log by a line a call: repeated upstream failures are
/// logged once a window, while every call keeps its records.
#[test]
fn repeated_upstream_failures_do_not_grow_the_log_a_line_a_call() {
    let stack = start_stack(|_| {}, &[]);
    let (proxy, url) = (stack.proxy_url(Some(&stack.token())), closed_url());
    let before = stack.audit().len();
    let calls = 25;
    for _ in 0..calls {
        assert_eq!(curl(&proxy, &url, &[]).0, 502);
    }
    let failures = stack.audit()[before..]
        .iter()
        .filter(|r| r["reason"].as_str().unwrap().starts_with("upstream_error"))
        .count();
    assert_eq!(failures, calls, "every failure keeps its record");
    let log = std::fs::read_to_string(stack.world.path().join("sidecar.log")).unwrap();
    let lines = log
        .matches("upstream failed after the call was allowed")
        .count();
    // One a 10-second window (a slow machine may cross into a second one).
    assert!(
        (1..=2).contains(&lines),
        "{lines} lines for {calls} failures:\n{log}"
    );
}

#[test]
fn malformed_requests_get_400_and_the_proxy_survives() {
    let upstream = start_upstream(None);
    let stack = start_stack(|_| {}, &[]);
    let raw = |request: &[u8]| raw_response(stack.proxy, request);
    // Bad request line.
    assert_eq!(status_of(&raw(b"THIS IS NOT HTTP\r\n\r\n")), 400);
    assert_eq!(status_of(&raw(b"GET\r\n\r\n")), 400);
    // Origin-form: not a proxy request.
    let response = raw(b"GET /x HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(status_of(&response), 400, "{response}");
    assert!(response.contains("malformed_request"), "{response}");
    // Absolute URI without a host.
    let response = raw(b"GET http:///x HTTP/1.1\r\nHost: \r\n\r\n");
    assert_eq!(status_of(&response), 400, "{response}");
    // CONNECT without a port/host.
    assert_eq!(status_of(&raw(b"CONNECT :443 HTTP/1.1\r\n\r\n")), 400);
    // Huge headers: 431 (Request Header Fields Too Large) — a 4xx, never a crash.
    let mut huge = b"GET http://127.0.0.1/ HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ".to_vec();
    huge.extend(std::iter::repeat_n(b'a', 200 * 1024));
    huge.extend_from_slice(b"\r\n\r\n");
    let code = status_of(&raw(&huge));
    assert!(code == 400 || code == 431, "{code}");
    // Binary garbage.
    let _ = raw(&[0u8, 255, 13, 10, 13, 10, 1, 2, 3]);

    // Still serving.
    let token = stack.token();
    let (code, _) = curl(
        &stack.proxy_url(Some(&token)),
        &format!("http://127.0.0.1:{}/alive", upstream.addr.port()),
        &[],
    );
    assert_eq!(code, 200);
    let mut sidecar = stack.sidecar;
    assert!(sidecar.child_mut().try_wait().unwrap().is_none());
}

#[test]
fn concurrent_load_gives_exactly_one_verified_record_per_request() {
    let upstream = start_upstream(None);
    let mut stack = start_stack(|_| {}, &[]);
    let token = stack.token();
    let before = stack.audit().len();
    let url = format!("http://127.0.0.1:{}/load", upstream.addr.port());
    // 32 concurrent Python clients (keep-alive sessions), 2,000 requests in all.
    let script = r#"
import sys, threading, requests
proxy, url, n, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ok = [0] * workers
def run(i):
    s = requests.Session()
    s.proxies = {"http": proxy, "https": proxy}
    s.trust_env = False
    for j in range(i, n, workers):
        r = s.get(url, timeout=60)
        if r.status_code == 200:
            ok[i] += 1
threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
[t.start() for t in threads]
[t.join() for t in threads]
print(sum(ok))
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &stack.proxy_url(Some(&token)),
            &url,
            "2000",
            "32",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2000");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 2000);
    let records = stack.audit();
    assert_eq!(records.len() - before, 2000);
    let seqs: Vec<u64> = records.iter().filter_map(|r| r["seq"].as_u64()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "seq is contiguous"
    );
    assert!(records[before..].iter().all(|r| r["decision"] == "allow"));

    // Stop the sidecar (SIGTERM → exit 0), then verify the whole log.
    let status = terminate(&mut stack.sidecar);
    assert!(status.success(), "{status}");
    let out = stack.world.run(&[
        "audit",
        "verify",
        "--state-dir",
        stack.world.state_dir().to_str().unwrap(),
    ]);
    assert_success(&out);
}

#[test]
fn ca_survives_restarts_and_a_lost_authority_fails_closed() {
    let upstream = start_upstream(None);
    let mut stack = start_stack(
        |c| *c = c.replace("bundle_ttl = \"30s\"", "bundle_ttl = \"2s\""),
        &[],
    );
    let ca = std::fs::read(stack.ca_cert()).unwrap();
    let key = stack
        .world
        .state_dir()
        .join("generated-firma-ca/firma-ca.key");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&key).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);

    let token = stack.token();
    let url = format!("http://127.0.0.1:{}/x", upstream.addr.port());
    let (code, _) = curl(&stack.proxy_url(Some(&token)), &url, &[]);
    assert_eq!(code, 200);

    // Restart the sidecar on the same state dir: same CA, same audit chain continues.
    stop(&mut stack.sidecar);
    stack.restart_sidecar(&[], "sidecar-2");
    assert_eq!(std::fs::read(stack.ca_cert()).unwrap(), ca);
    let (code, _) = curl(&stack.proxy_url(Some(&token)), &url, &[]);
    assert_eq!(code, 200);

    // Kill the Authority: once the 2 s bundle TTL passes without a refresh, calls are denied.
    stop(&mut stack.authority);
    let body = wait_for("the bundle to go stale", DEADLINE, || {
        let (code, body) = curl(&stack.proxy_url(Some(&token)), &url, &[]);
        (code == 403).then_some(body)
    });
    assert_eq!(json(&body)["reason"], "policy_bundle_stale");
}
