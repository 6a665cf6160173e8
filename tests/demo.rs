//! `firma demo`: the one-command walk-through runs end to end and leaves nothing behind.

mod common;

use common::{World, assert_success, stdout};

#[test]
fn demo_runs_every_step_and_cleans_up() {
    let world = World::new();
    let out = common::run_with_timeout(
        world.cmd().args(["demo"]).env("TMPDIR", world.path()),
        std::time::Duration::from_secs(120),
    );
    assert_success(&out);
    let text = stdout(&out);
    for expected in [
        "$ firma init --agent demo-agent",
        "$ firma sidecar start --detach",
        "200  GET http://127.0.0.1:",
        "403  GET http://127.0.0.1:",
        "\"reason\":\"policy_denied\"",
        "\"reason\":\"token_missing\"",
        "passthrough (no mapping rule for 127.0.0.2)",
        "$ firma sidecar stop",
        "$ firma audit verify",
        "records verified",
        "ok: demo finished",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    // Verified after the stop: the final checkpoint names the last record.
    let stop = text.find("$ firma sidecar stop").unwrap();
    let verify = text.find("$ firma audit verify").unwrap();
    assert!(stop < verify, "verify runs after the stop:\n{text}");
    let number_after = |marker: &str| -> u64 {
        let at = text
            .find(marker)
            .unwrap_or_else(|| panic!("no {marker:?} in\n{text}"));
        text[at + marker.len()..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    assert_eq!(
        number_after("checkpoint seq "),
        number_after("(last seq "),
        "the final checkpoint names the last record:\n{text}"
    );
    // The throwaway directory was removed (it lived under TMPDIR = the world root).
    let leftovers: Vec<_> = std::fs::read_dir(world.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("firma-demo-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
