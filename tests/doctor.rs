//! `firma doctor`: read-only checks with OK / WARN / FAIL, pretty and JSON, exit 0/1.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{World, assert_success, stdout};

fn report(world: &World, extra: &[&str]) -> (i32, serde_json::Value) {
    let mut args = vec!["doctor", "--json"];
    args.extend_from_slice(extra);
    let out = world.run(&args);
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)));
    (out.status.code().unwrap(), json)
}

fn status_of<'a>(report: &'a serde_json::Value, name: &str) -> &'a str {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {report}"))["status"]
        .as_str()
        .unwrap()
}

#[test]
fn fresh_project_without_daemon_never_fails() {
    let world = World::new();
    world.init(&[]);
    let (code, report) = report(&world, &[]);
    assert_eq!(code, 0, "{report}");
    assert_ne!(report["worst"], "fail", "{report}");
    assert_eq!(status_of(&report, "config"), "ok");
    assert_eq!(status_of(&report, "audit key"), "ok");
    assert_eq!(status_of(&report, "state dir"), "ok");
}

#[test]
fn nothing_at_all_warns_but_does_not_fail() {
    let world = World::new();
    let (code, report) = report(&world, &[]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(status_of(&report, "config"), "warn");
}

#[test]
fn readable_key_and_open_state_dir_fail_with_exit_1() {
    let world = World::new();
    world.init(&[]);
    let key = world.project_dir().join("audit.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(world.state_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, report) = report(&world, &[]);
    assert_eq!(code, 1, "{report}");
    assert_eq!(status_of(&report, "audit key"), "fail");
    assert_eq!(status_of(&report, "state dir"), "fail");
    assert_eq!(report["worst"], "fail");

    let out = world.run(&["doctor"]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("[FAIL] audit key"), "{text}");
    assert!(text.contains("fix: chmod 600"), "{text}");
}

#[test]
fn pretty_output_has_header_and_one_line_per_check() {
    let world = World::new();
    world.init(&[]);
    let out = world.run(&["doctor"]);
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.starts_with("firma doctor\n============\n"), "{text}");
    assert!(text.contains("[OK]   binary"), "{text}");
}

#[test]
fn running_daemon_ca_and_audit_log_are_checked() {
    let world = World::new();
    world.init(&[]);
    let daemon = world.start_detached();
    let (code, running) = report(&world, &[]);
    // Make a few audit records: a call without a token is denied and recorded.
    let listen = std::fs::read_to_string(world.state_dir().join("sidecar.listen")).unwrap();
    let mut stream = std::net::TcpStream::connect(listen.trim()).unwrap();
    use std::io::{Read, Write};
    stream
        .write_all(
            b"GET http://127.0.0.1:9/x HTTP/1.1\r\nHost: 127.0.0.1:9\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    drop(daemon);
    assert_eq!(code, 0, "{running}");
    assert_eq!(status_of(&running, "daemon"), "ok", "{running}");
    assert_eq!(status_of(&running, "sidecar CA"), "ok", "{running}");
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");

    let (code, stopped) = report(&world, &["--full"]);
    assert_eq!(code, 0, "{stopped}");
    assert_eq!(
        status_of(&stopped, "daemon"),
        "warn",
        "a stopped daemon is not a failure"
    );
    assert_eq!(status_of(&stopped, "audit log"), "ok", "{stopped}");

    // Tamper with the record: doctor fails and names the line.
    let log = world.state_dir().join("audit.jsonl");
    let text = std::fs::read_to_string(&log)
        .unwrap()
        .replace("\"decision\":\"deny\"", "\"decision\":\"allow\"");
    std::fs::write(&log, text).unwrap();
    let (code, tampered) = report(&world, &[]);
    assert_eq!(code, 1, "{tampered}");
    assert_eq!(status_of(&tampered, "audit log"), "fail", "{tampered}");
}

/// The pretty report, with the world's paths, the binary path and times redacted.
#[test]
fn pretty_report_snapshot() {
    let world = World::new();
    world.init(&[]);
    let out = world.run(&["doctor"]);
    assert_success(&out);
    let root = world.path().display().to_string();
    let text = stdout(&out).replace(&root, "[WORLD]");
    insta::with_settings!({filters => vec![
        (r"binary         \S+ \(v[0-9.]+\)", "binary         [BINARY] (v[VERSION])"),
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[TIME]"),
        // What the kernel offers varies by machine (tests/sandbox.rs checks the line).
        (r"\[(OK|WARN)\]\s+sandbox\s+.*(\n\s+fix: .*)?", "[..]   sandbox        [FACILITIES]"),
    ]}, {
        insta::assert_snapshot!(text);
    });
}
