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
