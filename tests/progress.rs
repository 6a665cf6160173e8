//! `firma audit verify` shows a progress bar (records/s, ETA) on a terminal for a big log —
//! driven through a real pseudo-terminal — and nothing when its output is piped, with `--json`,
//! or for a small log.

mod common;

use std::process::ExitStatus;

use common::audit::Vary;
use common::{World, assert_success, stderr, stdout};
use firma::audit::event::{AuditDraft, Decision};
use firma::audit::writer::{AuditWriter, WriterOptions};
use firma::cli::progress::VERIFY_BAR_MIN_BYTES;
use firma::config::keys;

/// What the bar prints (and nothing else firma prints does).
const BAR_MARKS: [&str; 3] = ["verifying [", "records/s", "ETA"];

/// A scaffolded project whose state dir holds a signed log of at least `bytes`.
fn world_with_log_of(bytes: u64) -> World {
    let world = World::new();
    world.init(&[]);
    let key = keys::load_signing_key(&world.project_dir().join("audit.key")).unwrap();
    let log = world.state_dir().join("audit.jsonl");
    let (writer, _) = AuditWriter::open(&log, key, WriterOptions::default()).unwrap();
    let mut i = 0u64;
    while std::fs::metadata(&log).map_or(0, |m| m.len()) < bytes {
        for _ in 0..1000 {
            writer.append(draft(i)).unwrap();
            i += 1;
        }
    }
    writer.shutdown().unwrap();
    world
}

/// A record the size of the Sidecar's: a long reason, UUIDs, the forwarded-to address, a
/// bundle hash.
fn draft(i: u64) -> AuditDraft {
    common::audit::draft(i)
        .decision(if i.is_multiple_of(4) {
            Decision::Deny
        } else {
            Decision::Allow
        })
        .reason(format!(
            "policy decision {i}: a realistic reason of a realistic length"
        ))
        .session("0193b7a2-5c1e-7d33-9a4e-6f0e2b8c1d42")
        .token(format!("0193b7a2-5c1e-7d33-9a4e-6f0e2b8c{:04x}", i % 4096))
        .host("api.anthropic.com")
        .path(format!("/v1/messages/{i}"))
        .forwarded_to("160.79.104.10:443")
        .policy(
            "eaed6fb2a3bddaeb0fccd661107ef64a674ae89eca0aa5d96b932afb1ddd16d3",
            &["policy0"],
        )
        .latency_us(100 + i % 900)
}

/// `firma <args>` with stdin, stdout and stderr on a pseudo-terminal of 100 columns: the
/// exit status and everything it wrote.
fn on_a_terminal(world: &World, args: &[&str]) -> (ExitStatus, String) {
    let mut cmd = world.cmd();
    cmd.args(args).env("TERM", "xterm");
    common::terminal::on_a_terminal(cmd, Some((100, 24)), b"")
}

#[test]
fn a_big_log_shows_progress_on_a_terminal_and_nothing_when_piped_or_json() {
    let world = world_with_log_of(VERIFY_BAR_MIN_BYTES + VERIFY_BAR_MIN_BYTES / 2);

    let (status, transcript) = on_a_terminal(&world, &["audit", "verify"]);
    assert!(status.success(), "{transcript}");
    for mark in BAR_MARKS {
        assert!(transcript.contains(mark), "no {mark:?} in\n{transcript}");
    }
    // The bar is cleared: the report still ends the transcript on its own line.
    let last = transcript.trim_end().lines().last().unwrap_or_default();
    assert!(last.contains("records verified"), "{transcript}");

    // Piped: the same run, not a byte of a bar.
    let out = world.run(&["audit", "verify"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("records verified"),
        "{}",
        stdout(&out)
    );
    let (text, err) = (stdout(&out), stderr(&out));
    for mark in BAR_MARKS {
        assert!(!text.contains(mark) && !err.contains(mark), "{err}");
    }
    assert!(!err.contains('\r') && !err.contains('\u{1b}'), "{err:?}");

    // --json on a terminal: machine output, no bar, and the document parses.
    let (status, transcript) = on_a_terminal(&world, &["audit", "verify", "--json"]);
    assert!(status.success(), "{transcript}");
    for mark in BAR_MARKS {
        assert!(!transcript.contains(mark), "{transcript}");
    }
    let json: serde_json::Value =
        serde_json::from_str(transcript.trim()).expect("one JSON document");
    assert_eq!(json["ok"], true);
}

#[test]
fn a_small_log_on_a_terminal_has_no_bar() {
    let world = world_with_log_of(64 * 1024);
    let (status, transcript) = on_a_terminal(&world, &["audit", "verify"]);
    assert!(status.success(), "{transcript}");
    for mark in BAR_MARKS {
        assert!(!transcript.contains(mark), "{transcript}");
    }
}
