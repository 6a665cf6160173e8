//! The adversarial suite: an agent behind the Sidecar, holding an ordinary
//! `communication.internal.send` token, tries to get a call past the decision or the record.
//! Every attack asserts the status, that the upstream was **not** reached (the test upstream
//! counts its hits), and the reason the audit record gives. (Attacks on the audit log itself
//! live with the audit writer's tests.)

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::audit::reason;
use common::http::{json, raw, raw_response};
use common::stack::{DEADLINE, Stack, start_stack_with, write_rules};
use common::upstream::{Upstream, start_upstream, upstream_tls};
use common::{World, assert_success, wait_for};
use serde_json::Value;

/// Mapping rules: loopback on `ports` only.
fn loopback_rules(ports: &[u16]) -> String {
    let ports = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    ["127.0.0.1", "localhost", "::1"]
        .iter()
        .map(|host| {
            format!(
                "[[rules]]\nhost = \"{host}\"\nports = [{ports}]\naction_class = \"communication.internal.send\"\n\n"
            )
        })
        .collect()
}

/// A stack whose rules map the upstream's port (and whatever `extra_rules` add), with the
/// `no-admin` forbid.
fn guarded_stack(upstream: &Upstream, extra_rules: &str, env: &[(&str, &str)]) -> Stack {
    let rules = format!("{}{extra_rules}", loopback_rules(&[upstream.addr.port()]));
    start_stack_with(
        |world: &World| {
            write_rules(world, &rules);
            world.forbid_admin();
        },
        env,
    )
}

fn basic(token: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("firma:{token}"))
}

/// `GET <target>` through the proxy exactly as written (no client normalises it).
fn get_raw(stack: &Stack, target: &str, token: &str, extra_headers: &str) -> (u16, String) {
    let request = format!(
        "GET {target} HTTP/1.1\r\nProxy-Authorization: Basic {}\r\n{extra_headers}Connection: close\r\n\r\n",
        basic(token)
    );
    raw(stack.proxy, request.as_bytes())
}

fn connect_raw(stack: &Stack, authority: &str, token: &str) -> (u16, String) {
    let request = format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: Basic {}\r\n\r\n",
        basic(token)
    );
    let mut stream = TcpStream::connect(stack.proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let head = read_head(&mut stream);
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; content_length(&head)];
    stream.read_exact(&mut body).unwrap();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0)
}

/// Read a response head byte by byte (what follows belongs to the tunnel).
fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn last_reason(stack: &Stack) -> String {
    reason(&stack.last_audit())
}

// ---------------------------------------------------------------------------------------------
// 1. One canonical request.

#[test]
fn path_variants_are_decided_on_the_path_the_upstream_would_get() {
    let upstream = start_upstream(None);
    let stack = guarded_stack(&upstream, "", &[]);
    let token = stack.token();
    let base = format!("http://127.0.0.1:{}", upstream.addr.port());
    for variant in [
        "//admin/x",
        "/%61dmin/x",
        "/./admin/x",
        "/x/../admin/x",
        "/%61%64%6D%69%6E/x",
    ] {
        let (code, body) = get_raw(&stack, &format!("{base}{variant}"), &token, "");
        assert_eq!(code, 403, "{variant}: {body}");
        assert_eq!(json(&body)["reason"], "policy_denied", "{variant}");
        let record = stack.last_audit();
        assert_eq!(reason(&record), "policy_denied", "{variant}");
        assert_eq!(record["intent"]["path"], "/admin/x", "{variant}");
        assert_eq!(
            record["policy"]["determining"],
            serde_json::json!(["no-admin"])
        );
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);

    // An allowed variant reaches the upstream as exactly the path that was decided and recorded.
    let (code, body) = get_raw(
        &stack,
        &format!("{base}/%7Euser/./a//b/c/..?q=%2F"),
        &token,
        "",
    );
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["path"], "/~user/a/b/");
    let record = stack.last_audit();
    assert_eq!(record["intent"]["path"], "/~user/a/b/");
    assert_eq!(record["intent"]["port"], upstream.addr.port());
    assert_eq!(
        record["intent"]["addr"],
        format!("127.0.0.1:{}", upstream.addr.port())
    );
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 1);
}

#[test]
fn ambiguous_targets_are_refused_with_a_record() {
    let upstream = start_upstream(None);
    let stack = guarded_stack(&upstream, "", &[]);
    let token = stack.token();
    let base = format!("http://127.0.0.1:{}", upstream.addr.port());
    let before = stack.audit().len();
    let variants: Vec<Vec<u8>> = [
        "/%2e%2e/admin/x",
        "/x/%2E%2E/admin",
        "/admin%2Fx",
        "/a%2fadmin",
        "/admin%5Cx",
        "/x%00/admin",
        "/x/%c0%ae%c0%ae/admin",
        "/%c0%af",
        "/%e0%80%ae",
        "/../admin/x",
        "/x/../../admin",
        "/x/..;/admin",
        "/bad%zz",
        "/bad%4",
    ]
    .iter()
    .map(|p| p.as_bytes().to_vec())
    .chain([b"/admin\\x".to_vec()])
    .collect();
    for (i, path) in variants.iter().enumerate() {
        let mut request = b"GET ".to_vec();
        request.extend_from_slice(base.as_bytes());
        request.extend_from_slice(path);
        request.extend_from_slice(
            format!(
                " HTTP/1.1\r\nProxy-Authorization: Basic {}\r\nConnection: close\r\n\r\n",
                basic(&token)
            )
            .as_bytes(),
        );
        let shown = String::from_utf8_lossy(path);
        let (code, body) = raw(stack.proxy, &request);
        assert_eq!(code, 400, "{shown}: {body}");
        assert!(
            !body.is_empty(),
            "{shown}: refused by the HTTP parser, not the proxy"
        );
        // Our refusal (with a record), not the HTTP parser's.
        assert_eq!(json(&body)["reason"], "malformed_target", "{shown}");
        let records = stack.audit();
        assert_eq!(records.len(), before + i + 1, "{shown}: one record each");
        assert_eq!(
            reason(records.last().unwrap()),
            "malformed_target",
            "{shown}"
        );
        assert_eq!(records.last().unwrap()["decision"], "deny");
    }
    // Raw (unencoded) non-ASCII bytes never become a request: the HTTP parser answers 400
    // before anything is decided, so there is nothing to record and nothing is forwarded.
    let mut request = format!("GET {base}/x/").into_bytes();
    request.extend_from_slice(b"\xc0\xae\xc0\xae/admin HTTP/1.1\r\nConnection: close\r\n\r\n");
    let records = stack.audit().len();
    assert_eq!(raw(stack.proxy, &request).0, 400);
    assert_eq!(stack.audit().len(), records);
    // Numeric hosts a resolver reads in more than one way.
    for host in ["127.1", "2130706433", "0x7f.0.0.1", "0177.0.0.1"] {
        let target = format!("http://{host}:{}/x", upstream.addr.port());
        let (code, body) = get_raw(&stack, &target, &token, "");
        assert_eq!(code, 400, "{host}: {body}");
        assert_eq!(json(&body)["reason"], "malformed_target", "{host}");
        assert_eq!(last_reason(&stack), "malformed_target");
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// 2. Host integrity.

#[test]
fn a_host_header_naming_another_authority_is_refused() {
    let upstream = start_upstream(None);
    let stack = guarded_stack(&upstream, "", &[]);
    let token = stack.token();
    let target = format!("http://127.0.0.1:{}/x", upstream.addr.port());
    for headers in [
        "Host: evil.example\r\n".to_string(),
        "Host: 127.0.0.1\r\n".to_string(),
        format!(
            "Host: 127.0.0.1:{0}\r\nHost: evil.example\r\n",
            upstream.addr.port()
        ),
    ] {
        let (code, body) = get_raw(&stack, &target, &token, &headers);
        assert_eq!(code, 400, "{headers:?}: {body}");
        assert_eq!(json(&body)["reason"], "host_mismatch");
        let record = stack.last_audit();
        assert_eq!(reason(&record), "host_mismatch");
        assert_eq!(record["intent"]["host"], "127.0.0.1");
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
    // The matching Host (and none at all) is forwarded, and the upstream gets the URI's.
    let (code, body) = get_raw(
        &stack,
        &target,
        &token,
        &format!("Host: 127.0.0.1:{}\r\n", upstream.addr.port()),
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = get_raw(&stack, &target, &token, "");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        json(&body)["headers"]["host"],
        format!("127.0.0.1:{}", upstream.addr.port())
    );
}

/// Inside an intercepted tunnel: (status) of `GET /x` sent with TLS server name `sni` (none when
/// empty) and `Host: host`.
fn intercepted_get(stack: &Stack, target: &str, token: &str, sni: &str, host: &str) -> u16 {
    let script = r#"
import base64, socket, ssl, sys
proxy, target, token, cafile, sni, host = sys.argv[1:7]
h, p = proxy.rsplit(":", 1)
s = socket.create_connection((h, int(p)), timeout=30)
auth = base64.b64encode(("firma:" + token).encode()).decode()
s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\nProxy-Authorization: Basic %s\r\n\r\n" % (target, target, auth)).encode())
head = b""
while not head.endswith(b"\r\n\r\n"):
    head += s.recv(1)
assert head.split()[1] == b"200", head
ctx = ssl.create_default_context(cafile=cafile)
ctx.check_hostname = False
t = ctx.wrap_socket(s, server_hostname=sni or None)
t.sendall(("GET /x HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host).encode())
data = b""
while True:
    chunk = t.recv(65536)
    if not chunk:
        break
    data += chunk
print(data.split()[1].decode())
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &stack.proxy.to_string(),
            target,
            token,
            stack.ca_cert().to_str().unwrap(),
            sni,
            host,
        ])
        .output()
        .unwrap();
    assert_success(&out);
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn intercepted_tunnels_require_sni_and_host_to_name_the_connect_target() {
    let tmp = tempfile::tempdir().unwrap();
    let (upstream_ca, tls) = upstream_tls(tmp.path());
    let upstream = start_upstream(Some(tls));
    let ca_env = upstream_ca.to_str().unwrap().to_string();
    let rules = loopback_rules(&[upstream.addr.port()]);
    let stack = start_stack_with(
        |world| {
            write_rules(world, &rules);
            let config = std::fs::read_to_string(world.config_path()).unwrap();
            std::fs::write(
                world.config_path(),
                config.replace(
                    "intercept_hosts = []",
                    "intercept_hosts = [\"127.0.0.1\", \"localhost\"]",
                ),
            )
            .unwrap();
        },
        &[("FIRMA_SIDECAR_UPSTREAM_CA", &ca_env)],
    );
    let token = stack.token();
    let port = upstream.addr.port();
    let ip_target = format!("127.0.0.1:{port}");
    let name_target = format!("localhost:{port}");
    for (target, sni, host) in [
        (&ip_target, "evil.example", ip_target.clone()),
        (&ip_target, "", "evil.example".to_string()),
        (&ip_target, "", format!("127.0.0.1:{}", port + 1)),
        (&name_target, "", name_target.clone()),
        (&name_target, "127.0.0.1", name_target.clone()),
    ] {
        let code = intercepted_get(&stack, target, &token, sni, &host);
        assert_eq!(code, 403, "CONNECT {target}, SNI {sni:?}, Host {host}");
        let record = stack.last_audit();
        assert_eq!(reason(&record), "host_mismatch", "{target} {sni:?} {host}");
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
    // An intercepted host does not open a tunnel to a firma listener either.
    let (code, _) = connect_raw(
        &stack,
        &format!("127.0.0.1:{}", stack.authority_addr.port()),
        &token,
    );
    assert_eq!(code, 403);
    assert_eq!(last_reason(&stack), "self_target");
    // Consistent names pass.
    assert_eq!(
        intercepted_get(&stack, &ip_target, &token, "", &ip_target),
        200
    );
    assert_eq!(
        intercepted_get(&stack, &name_target, &token, "localhost", &name_target),
        200
    );
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 2);
}

// ---------------------------------------------------------------------------------------------
// 3. Ports in every decision.

#[test]
fn a_loopback_port_no_rule_names_is_unmapped() {
    let upstream = start_upstream(None);
    let other = start_upstream(None);
    let stack = guarded_stack(&upstream, "", &[]);
    let token = stack.token();
    for target in [
        format!("http://127.0.0.1:{}/x", other.addr.port()),
        format!("http://localhost:{}/x", other.addr.port()),
    ] {
        let (code, body) = get_raw(&stack, &target, &token, "");
        assert_eq!(code, 403, "{target}: {body}");
        assert_eq!(json(&body)["reason"], "unmapped");
        let record = stack.last_audit();
        assert_eq!(reason(&record), "unmapped");
        assert_eq!(record["intent"]["port"], other.addr.port());
    }
    let (code, body) = connect_raw(&stack, &format!("127.0.0.1:{}", other.addr.port()), &token);
    assert_eq!(code, 403, "{body}");
    assert_eq!(last_reason(&stack), "unmapped");
    assert_eq!(other.hits.load(Ordering::SeqCst), 0);
    // The mapped port still works.
    let (code, _) = get_raw(
        &stack,
        &format!("http://127.0.0.1:{}/x", upstream.addr.port()),
        &token,
        "",
    );
    assert_eq!(code, 200);
}

#[test]
fn cedar_sees_the_port() {
    let upstream = start_upstream(None);
    let stack = start_stack_with(
        |world| {
            write_rules(
                world,
                "[[rules]]\nhost = \"127.0.0.1\"\naction_class = \"communication.internal.send\"\n",
            );
            world.add_policy(
                "port.cedar",
                &format!(
                    "@id(\"no-port\")\nforbid (principal, action, resource) when {{ context has port && context.port == {} }};\n",
                    upstream.addr.port()
                ),
            );
        },
        &[],
    );
    let (code, body) = get_raw(
        &stack,
        &format!("http://127.0.0.1:{}/x", upstream.addr.port()),
        &stack.token(),
        "",
    );
    assert_eq!(code, 403, "{body}");
    let record = stack.last_audit();
    assert_eq!(reason(&record), "policy_denied");
    assert_eq!(
        record["policy"]["determining"],
        serde_json::json!(["no-port"])
    );
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// 4. firma's own listeners.

#[test]
fn firma_listeners_are_never_reachable_by_any_alias() {
    // A stand-in for a `firma run` relay: it publishes its address like a real one.
    let relay = TcpListener::bind("127.0.0.1:0").unwrap();
    relay.set_nonblocking(true).unwrap();
    let relay_port = relay.local_addr().unwrap().port();
    let rules = "[[rules]]\nhost = \"127.0.0.1\"\naction_class = \"communication.internal.send\"\n\n\
                 [[rules]]\nhost = \"127.0.0.2\"\naction_class = \"communication.internal.send\"\n\n\
                 [[rules]]\nhost = \"0.0.0.0\"\naction_class = \"communication.internal.send\"\n\n\
                 [[rules]]\nhost = \"localhost\"\naction_class = \"communication.internal.send\"\n\n\
                 [[rules]]\nhost = \"::1\"\naction_class = \"communication.internal.send\"\n\n\
                 [[rules]]\nhost = \"*.test\"\ndeny_private = false\naction_class = \"communication.internal.send\"\n";
    let stack = start_stack_with(
        |world| {
            write_rules(world, rules);
            let relays = world.state_dir().join("relays");
            std::fs::create_dir_all(&relays).unwrap();
            // Named after a live process (this test), like a running relay's file.
            let me = std::process::id();
            std::fs::write(
                relays.join(format!("{me}.listen")),
                format!("127.0.0.1:{relay_port}\n"),
            )
            .unwrap();
        },
        &[("FIRMA_SIDECAR_RESOLVE", "firma.test=127.0.0.1")],
    );
    let token = stack.token();
    let ports = [
        ("authority", stack.authority_addr.port()),
        ("sidecar", stack.proxy.port()),
        ("relay", relay_port),
    ];
    for (listener, port) in ports {
        for host in [
            "127.0.0.1",
            "127.0.0.2",
            "0.0.0.0",
            "localhost",
            "[::1]",
            "firma.test",
        ] {
            let authority = format!("{host}:{port}");
            let (code, body) = connect_raw(&stack, &authority, &token);
            assert_eq!(code, 403, "CONNECT {authority} ({listener}): {body}");
            assert_eq!(json(&body)["reason"], "self_target", "{authority}");
            assert_eq!(last_reason(&stack), "self_target", "{authority}");
            let (code, body) = get_raw(&stack, &format!("http://{authority}/"), &token, "");
            assert_eq!(code, 403, "GET {authority} ({listener}): {body}");
            assert_eq!(last_reason(&stack), "self_target", "{authority}");
        }
    }
    // Refused whatever the policy says: also with no token at all.
    let (code, body) = get_raw(
        &stack,
        &format!("http://127.0.0.1:{}/", stack.authority_addr.port()),
        "",
        "",
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(last_reason(&stack), "self_target");
    // Nothing ever connected to the relay.
    assert!(matches!(
        relay.accept(),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock
    ));
}

// ---------------------------------------------------------------------------------------------
// 5. The address connected to is the address decided.

#[test]
fn names_resolving_to_local_addresses_do_not_reach_local_services() {
    let upstream = start_upstream(None);
    let port = upstream.addr.port();
    let extra = format!(
        "[[rules]]\nhost = \"rebind.test\"\naction_class = \"communication.internal.send\"\n\n\
         [[rules]]\nhost = \"*.nip.io\"\naction_class = \"communication.internal.send\"\n\n\
         [[rules]]\nhost = \"trusted.test\"\nports = [{port}]\ndeny_private = false\naction_class = \"communication.internal.send\"\n"
    );
    let stack = guarded_stack(
        &upstream,
        &extra,
        &[(
            "FIRMA_SIDECAR_RESOLVE",
            "rebind.test=127.0.0.1,127.0.0.1.nip.io=127.0.0.1,trusted.test=127.0.0.1",
        )],
    );
    let token = stack.token();
    for host in ["rebind.test", "127.0.0.1.nip.io"] {
        let (code, body) = get_raw(&stack, &format!("http://{host}:{port}/x"), &token, "");
        assert_eq!(code, 403, "{host}: {body}");
        assert_eq!(json(&body)["reason"], "private_address");
        let record = stack.last_audit();
        assert_eq!(reason(&record), "private_address");
        assert_eq!(record["intent"]["addr"], format!("127.0.0.1:{port}"));
        let (code, _) = connect_raw(&stack, &format!("{host}:{port}"), &token);
        assert_eq!(code, 403);
        assert_eq!(last_reason(&stack), "private_address");
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
    // A rule that opts out reaches it, and the record names the address connected to.
    let (code, body) = get_raw(&stack, &format!("http://trusted.test:{port}/x"), &token, "");
    assert_eq!(code, 200, "{body}");
    let record = stack.last_audit();
    assert_eq!(record["intent"]["host"], "trusted.test");
    assert_eq!(record["intent"]["addr"], format!("127.0.0.1:{port}"));
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// 6. Tunnels end with their authority.

/// Open a plain tunnel to the upstream and make one request through it.
fn open_tunnel(stack: &Stack, upstream: &Upstream, token: &str) -> TcpStream {
    let authority = format!("127.0.0.1:{}", upstream.addr.port());
    let mut stream = TcpStream::connect(stack.proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stream
        .write_all(
            format!(
                "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: Basic {}\r\n\r\n",
                basic(token)
            )
            .as_bytes(),
        )
        .unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    stream
        .write_all(format!("GET /in-tunnel HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .unwrap();
    let head = read_head(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let mut body = vec![0u8; content_length(&head)];
    stream.read_exact(&mut body).unwrap();
    stream
}

/// Wait until the proxy closes the tunnel; returns how long it took.
fn until_closed(stream: &mut TcpStream) -> Duration {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return started.elapsed(),
            Ok(_) => continue,
            Err(err) => panic!("tunnel still open: {err}"),
        }
    }
}

/// The first `tunnel_closed` record after the first `after` records.
fn tunnel_closed_record(stack: &Stack, after: usize) -> Value {
    wait_for("the tunnel_closed record", DEADLINE, || {
        stack
            .audit()
            .into_iter()
            .skip(after)
            .find(|r| reason(r) == "tunnel_closed")
    })
}

#[test]
fn revocation_and_a_denying_bundle_close_open_tunnels() {
    let upstream = start_upstream(None);
    let stack = guarded_stack(&upstream, "", &[]);

    let (token, token_id) = stack.issue(&["communication.internal.send"], "*");
    let mut tunnel = open_tunnel(&stack, &upstream, &token);
    let before = stack.audit().len();
    let revoked_at = Instant::now();
    stack.revoke(&token_id);
    until_closed(&mut tunnel);
    eprintln!(
        "revocation closed the tunnel {:?} after Revoke",
        revoked_at.elapsed()
    );
    let record = tunnel_closed_record(&stack, before);
    let why = record["reason"].as_str().unwrap();
    assert!(why.starts_with("tunnel_closed: token_revoked"), "{why}");
    assert!(why.contains("bytes from the client"), "{why}");
    assert_eq!(record["decision"], "deny");
    assert_eq!(record["intent"]["method"], "CONNECT");
    assert_eq!(record["token_id"], token_id);
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 1);

    // A policy edit that denies the CONNECT closes the tunnel too.
    let token = stack.token();
    let mut tunnel = open_tunnel(&stack, &upstream, &token);
    let before = stack.audit().len();
    stack.world.add_policy(
        "no-tunnels.cedar",
        "@id(\"no-tunnels\")\nforbid (principal, action, resource) when { context has method && context.method == \"CONNECT\" };\n",
    );
    until_closed(&mut tunnel);
    let record = tunnel_closed_record(&stack, before);
    let why = record["reason"].as_str().unwrap();
    assert!(
        why.starts_with("tunnel_closed: policy_denied: forbidden by no-tunnels"),
        "{why}"
    );
    assert_eq!(
        record["policy"]["determining"],
        serde_json::json!(["no-tunnels"])
    );
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 2);
}

#[test]
fn an_expiring_token_closes_its_tunnel() {
    let upstream = start_upstream(None);
    let stack = guarded_stack(&upstream, "", &[]);
    let (token, token_id) = stack.short_token(1);
    let mut tunnel = open_tunnel(&stack, &upstream, &token);
    until_closed(&mut tunnel);
    let record = tunnel_closed_record(&stack, 0);
    let why = record["reason"].as_str().unwrap();
    assert!(why.starts_with("tunnel_closed: token_expired"), "{why}");
    assert_eq!(record["token_id"], token_id);
    // A tunnel that simply ends is recorded too, with its bytes.
    let token = stack.token();
    let tunnel = open_tunnel(&stack, &upstream, &token);
    drop(tunnel);
    let record = wait_for("the closed tunnel's record", DEADLINE, || {
        stack.audit().into_iter().rev().find(|r| {
            r["reason"]
                .as_str()
                .is_some_and(|w| w.starts_with("tunnel_closed: connection closed"))
        })
    });
    assert_eq!(record["decision"], "allow");
}

// ---------------------------------------------------------------------------------------------
// 8. Bounded memory and the token's action set.

#[test]
fn a_wildcard_action_in_a_token_grants_nothing() {
    let upstream = start_upstream(None);
    let stack = guarded_stack(&upstream, "", &[]);
    let now = chrono::Utc::now();
    let wildcard = stack.sign(&firma::authority::token::CapabilityClaims {
        token_id: "wild-1".into(),
        issuer: String::new(),
        // The deployment id: the workspace directory's name.
        audience: "ws".into(),
        sandbox_id: String::new(),
        agent_id: "codex".into(),
        session_id: "s".into(),
        actions: vec!["*".into()],
        resource_scope: "*".into(),
        issued_at: now,
        expires_at: now + chrono::Duration::minutes(5),
    });
    let (code, body) = get_raw(
        &stack,
        &format!("http://127.0.0.1:{}/x", upstream.addr.port()),
        &wildcard,
        "",
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(json(&body)["reason"], "out_of_scope");
    let record = stack.last_audit();
    assert_eq!(reason(&record), "out_of_scope");
    assert_eq!(record["token_id"], "wild-1");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

fn resident_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn ten_thousand_long_distinct_paths_stay_within_the_cache_budget() {
    let upstream = start_upstream(None);
    let stack = guarded_stack(&upstream, "", &[]);
    let token = stack.token();
    let pid = stack.sidecar.id();
    let before = resident_kib(pid);
    // 16 KiB paths, all different, all evaluated by Cedar (and denied by no-admin): unbounded,
    // the decision memo alone would hold 160 MiB.
    let script = r#"
import base64, http.client, sys
proxy, port, token, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
h, p = proxy.rsplit(":", 1)
auth = "Basic " + base64.b64encode(("firma:" + token).encode()).decode()
filler = "a" * (16 * 1024)
conn = http.client.HTTPConnection(h, int(p), timeout=60)
denied = 0
for i in range(n):
    conn.request("GET", "http://127.0.0.1:%s/admin/%d/%s" % (port, i, filler), headers={"Proxy-Authorization": auth})
    r = conn.getresponse()
    r.read()
    denied += r.status == 403
print(denied)
"#;
    let out = Command::new("python3")
        .args([
            "-c",
            script,
            &stack.proxy.to_string(),
            &upstream.addr.port().to_string(),
            &token,
            "10000",
        ])
        .output()
        .unwrap();
    assert_success(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10000");
    let after = resident_kib(pid);
    let grown_mib = after.saturating_sub(before) / 1024;
    eprintln!("sidecar resident set: {before} KiB before, {after} KiB after (+{grown_mib} MiB)");
    assert!(
        grown_mib < 96,
        "the Sidecar grew by {grown_mib} MiB over 10,000 distinct 16 KiB paths"
    );
    assert_eq!(last_reason(&stack), "policy_denied");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

// ---------------------------------------------------------------------------------------------
// 9. The property: what the upstream receives is what was recorded.

#[test]
fn the_upstream_receives_exactly_the_recorded_path() {
    use proptest::prelude::*;
    let upstream = start_upstream(None);
    let stack = guarded_stack(&upstream, "", &[]);
    let token = stack.token();
    let base = format!("http://127.0.0.1:{}", upstream.addr.port());
    let segment = prop_oneof![
        "[a-zA-Z0-9_~-]{1,4}",
        Just(".".to_string()),
        Just("..".to_string()),
        Just(String::new()),
        "%[0-9a-fA-F]{2}",
        "[a-z]{0,2}%(2[eEfF]|5[cC]|00|6[01]|7[eE]|20|[cC]0)[a-z]{0,2}",
    ];
    let path = proptest::collection::vec(segment, 1..7).prop_map(|s| format!("/{}", s.join("/")));
    let config = ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(path in path)| {
        let hits = upstream.hits.load(Ordering::SeqCst);
        let (code, body) = get_raw(&stack, &format!("{base}{path}"), &token, "");
        let record = stack.last_audit();
        match code {
            200 => {
                let received = json(&body)["path"].as_str().unwrap().to_string();
                prop_assert_eq!(&Value::from(received.clone()), &record["intent"]["path"], "{}", path);
                prop_assert!(!received.contains("//") && !received.contains("/./") && !received.contains("/../"));
                prop_assert_eq!(upstream.hits.load(Ordering::SeqCst), hits + 1);
            }
            400 | 403 => {
                prop_assert!(
                    ["malformed_target", "policy_denied"].contains(&reason(&record).as_str()),
                    "{} -> {}", path, record
                );
                prop_assert_eq!(upstream.hits.load(Ordering::SeqCst), hits);
            }
            other => prop_assert!(false, "{} -> {}: {}", path, other, body),
        }
    });
}

#[test]
fn the_default_mapping_reaches_no_loopback_port_without_a_rule() {
    // The scaffold lists no local service: an agent reaches none until the operator adds one.
    let upstream = start_upstream(None);
    let stack = start_stack_with(|_| {}, &[]);
    let (code, body) = get_raw(
        &stack,
        &format!("http://127.0.0.1:{}/x", upstream.addr.port()),
        &stack.token(),
        "",
    );
    assert_eq!(code, 403, "{body}");
    assert_eq!(last_reason(&stack), "unmapped");
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
    let _: SocketAddr = stack.proxy;
}

// ---------------------------------------------------------------------------------------------
// 10. Request smuggling: one request decided is one request upstream.

/// The Sidecar's allow records so far.
fn allowed(stack: &Stack) -> usize {
    stack
        .audit()
        .iter()
        .filter(|r| r["decision"] == "allow")
        .count()
}

#[test]
fn smuggled_requests_never_reach_the_upstream_undecided() {
    let upstream = start_upstream(None);
    let stack = guarded_stack(&upstream, "", &[]);
    let token = stack.token();
    let authority = format!("127.0.0.1:{}", upstream.addr.port());
    // What an agent hides behind an allowed request: a call the policy forbids (`/admin`).
    let smuggled = format!("GET /admin/smuggled HTTP/1.1\r\nHost: {authority}\r\n\r\n");
    let post = |headers: &str, body: &str| {
        format!(
            "POST http://{authority}/ok HTTP/1.1\r\nHost: {authority}\r\nProxy-Authorization: Basic {}\r\n{headers}\r\n{body}",
            basic(&token)
        )
    };
    let end = "0\r\n\r\n";
    let both = end.len() + smuggled.len();
    let chunk = format!("{:x}\r\n{smuggled}\r\n{end}", smuggled.len());
    // Each case and the statuses the agent gets back. A 400 with no record is hyper refusing a
    // message it cannot frame before any decision exists; nothing is forwarded then.
    let cases: [(&str, String, &[u16]); 9] = [
        (
            "Content-Length, then Transfer-Encoding",
            post(
                &format!("Content-Length: {both}\r\nTransfer-Encoding: chunked\r\n"),
                &format!("{end}{smuggled}"),
            ),
            &[200],
        ),
        (
            "Transfer-Encoding, then Content-Length",
            post(
                &format!("Transfer-Encoding: chunked\r\nContent-Length: {both}\r\n"),
                &format!("{end}{smuggled}"),
            ),
            &[200],
        ),
        (
            "two Content-Lengths",
            post(
                &format!(
                    "Content-Length: 0\r\nContent-Length: {}\r\n",
                    smuggled.len()
                ),
                &smuggled,
            ),
            &[400],
        ),
        (
            "a Transfer-Encoding that is not chunked",
            post(
                &format!(
                    "Transfer-Encoding: xchunked\r\nContent-Length: {}\r\n",
                    smuggled.len()
                ),
                &smuggled,
            ),
            &[400],
        ),
        (
            "chunked, then identity",
            post("Transfer-Encoding: chunked, identity\r\n", &chunk),
            &[400],
        ),
        (
            "a space before the colon",
            post(
                "Transfer-Encoding : chunked\r\n",
                &format!("{end}{smuggled}"),
            ),
            &[400],
        ),
        (
            // The trailing bytes are a request of their own, decided (and refused: not
            // absolute-form) like any other.
            "bytes after a zero Content-Length",
            post("Content-Length: 0\r\n", &smuggled),
            &[200, 400],
        ),
        (
            "a request as the Content-Length body",
            post(
                &format!("Content-Length: {}\r\n", smuggled.len()),
                &smuggled,
            ),
            &[200],
        ),
        (
            "a request as a chunk",
            post("Transfer-Encoding: chunked\r\n", &chunk),
            &[200],
        ),
    ];
    for (name, request, expected) in cases {
        let hits = upstream.hits.load(Ordering::SeqCst);
        let allowed_before = allowed(&stack);
        let response = raw_response(stack.proxy, request.as_bytes());
        // Give a request the upstream parsed out of the stream time to be counted.
        std::thread::sleep(Duration::from_millis(200));
        let forwarded = upstream.hits.load(Ordering::SeqCst) - hits;
        let decided = allowed(&stack) - allowed_before;
        let statuses: Vec<u16> = response
            .match_indices("HTTP/1.1 ")
            .filter_map(|(at, _)| response[at + 9..at + 12].parse().ok())
            .collect();
        assert_eq!(statuses, expected, "{name}:\n{response}");
        assert!(
            forwarded == decided && forwarded == expected.iter().filter(|&&s| s == 200).count(),
            "{name}: the upstream got {forwarded} requests for {decided} allowed records:\n{response}"
        );
        assert!(
            !response.contains("/admin"),
            "{name}: the upstream answered the smuggled call:\n{response}"
        );
        if expected.contains(&400) && expected.contains(&200) {
            assert_eq!(last_reason(&stack), "malformed_request", "{name}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 11. No protocol switch: one decision never becomes a raw channel.

/// A raw upstream on loopback: `serve` gets each connection on its own thread (reads time out
/// after 10 s).
fn raw_upstream(serve: impl Fn(TcpStream) + Clone + Send + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
            let serve = serve.clone();
            std::thread::spawn(move || serve(stream));
        }
    });
    addr
}

/// A complicit upstream: answers every request `101 Switching Protocols`, then counts the bytes
/// that arrive on the connection after it (traffic no decision covered).
fn switching_upstream() -> (SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let after = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = after.clone();
    let addr = raw_upstream(move |mut stream| {
        if read_head(&mut stream).is_empty() {
            return;
        }
        let _ = stream.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            counted.fetch_add(n, Ordering::SeqCst);
        }
    });
    (addr, after)
}

#[test]
fn an_upgrade_never_turns_a_decided_call_into_a_raw_channel() {
    let upstream = start_upstream(None);
    let (switching, after_101) = switching_upstream();
    let stack = guarded_stack(&upstream, &loopback_rules(&[switching.port()]), &[]);
    let token = stack.token();
    let upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\n";
    // An honest upstream never sees the agent's Upgrade: the call arrives as a plain request.
    let target = format!("http://127.0.0.1:{}/ws", upstream.addr.port());
    let (code, body) = get_raw(&stack, &target, &token, upgrade);
    assert_eq!(code, 200, "{body}");
    let headers = &json(&body)["headers"];
    assert!(
        headers.get("upgrade").is_none() && headers.get("connection").is_none(),
        "{headers}"
    );
    // A complicit upstream that switches anyway gets no channel: the agent is not told 101, and
    // what it sends next never reaches the upstream as raw bytes.
    let request = format!(
        "GET http://127.0.0.1:{}/ws HTTP/1.1\r\nProxy-Authorization: Basic {}\r\n{upgrade}\r\nRAW-BYTES-AFTER-THE-SWITCH\r\n\r\n",
        switching.port(),
        basic(&token)
    );
    let response = raw_response(stack.proxy, request.as_bytes());
    let status = common::http::status_of(&response);
    assert_eq!(status, 502, "{response}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        after_101.load(Ordering::SeqCst),
        0,
        "bytes reached the upstream after its 101"
    );
    // Recorded like any upstream failure after an allowed decision.
    let record = stack.last_audit();
    assert!(
        reason(&record).starts_with("upstream_error")
            && record["reason"]
                .as_str()
                .unwrap()
                .contains("101 Switching Protocols"),
        "{record}"
    );
}

// ---------------------------------------------------------------------------------------------
// 12. Response desync: what an upstream sends beyond its answer never answers a later call.

/// A complicit upstream: answers each request with its path, then sends a second, unrequested
/// response (`EXTRA`) on the same connection.
fn doubling_upstream() -> SocketAddr {
    raw_upstream(|mut stream| {
        loop {
            let head = read_head(&mut stream);
            let Some(path) = head.split_whitespace().nth(1).map(str::to_string) else {
                return;
            };
            let answer = |body: &str| {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            };
            let both = answer(&path) + &answer("EXTRA");
            if stream.write_all(both.as_bytes()).is_err() {
                return;
            }
        }
    })
}

#[test]
fn an_unrequested_response_never_answers_a_later_call() {
    let upstream = start_upstream(None);
    let doubling = doubling_upstream();
    let stack = guarded_stack(&upstream, &loopback_rules(&[doubling.port()]), &[]);
    let token = stack.token();
    // Three calls on one agent connection (one upstream connection, while it lasts).
    let request = |path: &str, last: bool| {
        format!(
            "GET http://127.0.0.1:{}{path} HTTP/1.1\r\nProxy-Authorization: Basic {}\r\n{}\r\n",
            doubling.port(),
            basic(&token),
            if last { "Connection: close\r\n" } else { "" }
        )
    };
    let mut stream = TcpStream::connect(stack.proxy).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    for (path, last) in [("/one", false), ("/two", false), ("/three", true)] {
        stream.write_all(request(path, last).as_bytes()).unwrap();
        let head = read_head(&mut stream);
        let mut body = vec![0u8; content_length(&head)];
        stream.read_exact(&mut body).unwrap();
        let body = String::from_utf8_lossy(&body);
        // The answer to this call, or a failure of it — never the upstream's extra response.
        assert!(
            body == path || head.starts_with("HTTP/1.1 502"),
            "{path} was answered with {head}{body}"
        );
        assert_ne!(body, "EXTRA", "{path}");
    }
}

/// Trailer fields are headers too: a `Proxy-Authorization` (or anything else) sent as a chunked
/// request's trailer never reaches the upstream, nor does the header's token.
#[test]
fn a_token_in_a_trailer_never_reaches_the_upstream() {
    let upstream = start_upstream(None);
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let sink = received.clone();
    // Records every byte it is sent; answers once a message (head, or chunked body) ends.
    let recording = raw_upstream(move |mut stream| {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            let mut all = sink.lock().unwrap();
            all.extend_from_slice(&buf[..n]);
            if all.ends_with(b"0\r\n\r\n") {
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
        }
    });
    let stack = guarded_stack(&upstream, &loopback_rules(&[recording.port()]), &[]);
    let token = stack.token();
    let request = format!(
        "POST http://127.0.0.1:{}/t HTTP/1.1\r\nProxy-Authorization: Basic {}\r\n\
         Transfer-Encoding: chunked\r\nTrailer: Proxy-Authorization, X-Extra\r\nTE: trailers\r\n\
         Connection: close\r\n\r\n3\r\nabc\r\n0\r\n\
         Proxy-Authorization: Bearer SECRET-IN-TRAILER\r\nX-Extra: 1\r\n\r\n",
        recording.port(),
        basic(&token)
    );
    let response = raw_response(stack.proxy, request.as_bytes());
    assert_eq!(common::http::status_of(&response), 200, "{response}");
    let received = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    assert!(
        received.contains("\r\n3\r\nabc\r\n"),
        "the body is forwarded: {received:?}"
    );
    for secret in ["SECRET-IN-TRAILER", &basic(&token), "proxy-authorization"] {
        assert!(
            !received
                .to_ascii_lowercase()
                .contains(&secret.to_ascii_lowercase()),
            "{secret} reached the upstream: {received:?}"
        );
    }
}
