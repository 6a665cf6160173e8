//! Audit log lifecycle: the writer rotates (by size, interval or on request) without breaking the
//! chain, retention deletes the oldest rotations only after recording them, `verify` tells
//! retention from truncation, a rotation cut short by a crash is completed, and the Sidecar does
//! all of it under load — `firma audit rotate`, a following monitor, SIGKILL during rotations.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::audit::draft;
use common::http::curl;
use common::stack::{DEADLINE, start_stack, stop};
use common::tmpfs::Tmpfs;
use common::upstream::start_upstream;
use common::{ChildGuard, World, assert_success, stderr, stdout, wait_for};
use ed25519_dalek::SigningKey;
use firma::audit::control;
use firma::audit::event::AuditRecord;
use firma::audit::record;
use firma::audit::verify::{FindingKind, VerifyOptions, VerifyReport, verify};
use firma::audit::writer::{AuditWriter, Trigger, WriterOptions};
use firma::config::keys;
use firma::config::schema::FsyncPolicy;
use firma::state_dir::{AuditFiles, StateDir};
use serde_json::Value;

fn options() -> WriterOptions {
    WriterOptions {
        fsync: FsyncPolicy::Never,
        rotate_size: None,
        ..WriterOptions::default()
    }
}

struct Log {
    _dir: tempfile::TempDir,
    files: AuditFiles,
    key: SigningKey,
}

fn new_log() -> Log {
    let dir = tempfile::tempdir().unwrap();
    Log {
        files: AuditFiles::in_dir(dir.path()),
        _dir: dir,
        key: keys::generate(),
    }
}

impl Log {
    fn open(&self, options: WriterOptions) -> AuditWriter {
        AuditWriter::open(self.files.live(), self.key.clone(), options)
            .unwrap()
            .0
    }

    fn verify(&self) -> VerifyReport {
        let mut options = VerifyOptions::new(self.files.oldest_first(), self.key.verifying_key());
        options.threads = 1;
        verify(&options).unwrap()
    }
}

/// The records of one file.
fn records(path: &Path) -> Vec<AuditRecord> {
    std::fs::read(path)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| record::parse_record(l).unwrap())
        .collect()
}

fn rotation_trigger(record: &AuditRecord) -> Option<String> {
    match record {
        AuditRecord::Segment(m) => m.rotation.as_ref().map(|r| r.trigger.clone()),
        AuditRecord::Event(_) => None,
    }
}

#[test]
fn size_rotation_keeps_one_chain_across_files() {
    let log = new_log();
    let writer = log.open(WriterOptions {
        rotate_size: Some(8 * 1024),
        ..options()
    });
    // The flusher rotates soon after the threshold is crossed; append until it has done so a
    // few times.
    let mut appended = 0;
    wait_for("five rotations", DEADLINE, || {
        writer.append(draft(appended)).unwrap();
        appended += 1;
        (log.files.rotations().len() >= 5).then_some(())
    });
    writer.shutdown().unwrap();
    let files = log.files.oldest_first();
    assert!(files.len() >= 6, "{files:?}");
    // Every file after the first opens with a signed marker naming the rotation.
    for file in &files[1..] {
        let first = records(file).into_iter().next().unwrap();
        assert_eq!(
            rotation_trigger(&first).as_deref(),
            Some("size"),
            "{file:?}"
        );
    }
    let report = log.verify();
    assert!(report.ok, "{report:#?}");
    let events: usize = files
        .iter()
        .map(|f| records(f).iter().filter(|r| r.as_event().is_some()).count())
        .sum();
    assert_eq!(
        events as u64, appended,
        "every record exactly once across the files"
    );
    assert_eq!(report.segments as usize, files.len() - 1);
    assert_eq!(
        report.checkpoint.status,
        firma::audit::verify::CheckpointStatus::Ok
    );
}

#[test]
fn interval_rotation_skips_an_idle_log() {
    let log = new_log();
    let writer = log.open(WriterOptions {
        rotate_interval: Some(Duration::from_millis(200)),
        ..options()
    });
    writer.append(draft(0)).unwrap();
    wait_for("an interval rotation", DEADLINE, || {
        (log.files.rotations().len() == 1).then_some(())
    });
    // Nothing appended since: no further rotation, however long it idles (the flusher ticks
    // every 100 ms; give it several intervals).
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(log.files.rotations().len(), 1);
    writer.shutdown().unwrap();
    let first = records(log.files.live()).into_iter().next().unwrap();
    assert_eq!(rotation_trigger(&first).as_deref(), Some("interval"));
    assert!(log.verify().ok);
}

#[test]
fn an_operator_rotation_over_the_control_socket() {
    let log = new_log();
    let writer = log.open(options());
    for i in 0..10 {
        writer.append(draft(i)).unwrap();
    }
    let socket = log.files.dir().join("control.sock");
    let _server = control::serve(&socket, writer.clone()).unwrap();
    let rotated = control::rotate(&socket, Duration::from_secs(10)).unwrap();
    assert_eq!(rotated.rotated_to, log.files.rotated(1));
    assert_eq!((rotated.last_seq, rotated.marker_seq), (10, 11));
    assert_eq!(writer.append(draft(10)).unwrap().seq, 12);
    let health = control::health(&socket, Duration::from_secs(10)).unwrap();
    assert!(health.is_ok());
    assert_eq!(health.last_seq, 12);
    writer.shutdown().unwrap();
    let report = log.verify();
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.last_seq, 12);
    let first = records(log.files.live()).into_iter().next().unwrap();
    assert_eq!(rotation_trigger(&first).as_deref(), Some("operator"));
}

/// Another local user gets nothing from the control socket, even where the file system would let
/// them reach it (the state dir's 0700 already keeps them out).
#[test]
fn the_control_socket_answers_only_its_own_user() {
    let log = new_log();
    let writer = log.open(options());
    let open_dir = tempfile::tempdir().unwrap();
    let state = StateDir::new(open_dir.path());
    let socket = state.sidecar_socket();
    let _server = control::serve(&socket, writer.clone()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(open_dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    // `firma audit rotate` run as nobody.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            common::FIRMA,
        ])
        .args(["audit", "rotate", "--state-dir"])
        .arg(open_dir.path())
        .env_clear()
        .output()
        .expect("run setpriv (util-linux)");
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    // Closed unanswered: depending on timing the client sees a broken pipe or an empty reply.
    assert!(stderr(&out).contains("sidecar.sock"), "{}", stderr(&out));
    assert!(log.files.rotations().is_empty(), "and no rotation");
    // Its own user is answered.
    assert!(
        control::health(&socket, Duration::from_secs(10))
            .unwrap()
            .is_ok()
    );
}

#[test]
fn a_rotation_refuses_a_replaced_log() {
    let log = new_log();
    let writer = log.open(options());
    writer.append(draft(0)).unwrap();
    std::fs::remove_file(log.files.live()).unwrap();
    let err = writer.rotate(Trigger::Operator).unwrap_err();
    assert!(err.message().contains("deleted or renamed"), "{err:?}");
    assert!(log.files.rotations().is_empty(), "nothing was moved");
}

#[test]
fn retention_is_recorded_and_verifies_as_retained() {
    let log = new_log();
    let writer = log.open(WriterOptions {
        keep: Some(2),
        ..options()
    });
    let mut dropped = None;
    for round in 0..5u64 {
        for i in 0..10 {
            writer.append(draft(round * 10 + i)).unwrap();
        }
        let report = writer.rotate(Trigger::Operator).unwrap();
        if let Some(retention) = report.retention {
            dropped = Some(retention.retained);
        }
    }
    writer.shutdown().unwrap();
    assert_eq!(log.files.rotations().len(), 2, "keep = 2");
    let retained = dropped.expect("retention ran");
    let report = log.verify();
    assert!(report.ok, "{report:#?}");
    let first_kept = retained.last_seq + 1;
    assert_eq!(report.retained_from, Some(first_kept));
    assert!(
        report
            .notices
            .iter()
            .any(|n| n.kind == FindingKind::Retained && n.seq == Some(first_kept)),
        "{report:#?}"
    );

    // Deleting the oldest remaining file by hand is not retention: the start was cut.
    let oldest = log.files.oldest_first()[0].clone();
    std::fs::remove_file(&oldest).unwrap();
    let report = log.verify();
    let problem = report.problem.expect("a cut start is tampering");
    assert_eq!(problem.kind, FindingKind::Truncated, "{problem:?}");
    assert_eq!(problem.line, Some(1));
}

/// A log an older Sidecar wrote in format 1, already rotated, is rotated and trimmed by retention
/// in format 2: the chain runs from format-1 files into format-2 ones, and retention deletes
/// format-1 records under a format-2 marker.
#[test]
fn a_format_1_log_rotates_and_retains_in_format_2() {
    let log = new_log();
    firma::audit::format1::write_log(log.files.live(), &log.key, (0..30).map(draft)).unwrap();
    let lines: Vec<Vec<u8>> = std::fs::read(log.files.live())
        .unwrap()
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect();
    std::fs::write(log.files.rotated(2), lines[..10].concat()).unwrap();
    std::fs::write(log.files.rotated(1), lines[10..20].concat()).unwrap();
    std::fs::write(log.files.live(), lines[20..].concat()).unwrap();
    assert!(log.verify().ok);

    let writer = log.open(WriterOptions {
        keep: Some(2),
        ..options()
    });
    for i in 0..5 {
        writer.append(draft(100 + i)).unwrap();
    }
    let report = writer.rotate(Trigger::Operator).unwrap();
    let retention = report.retention.expect("keep = 2 deletes the oldest file");
    assert_eq!(
        (retention.retained.first_seq, retention.retained.last_seq),
        (1, 10)
    );
    // Named by its format-1 chain hash: the hash of the whole line.
    assert_eq!(
        retention.retained.last_hash,
        hex::encode(record::line_hash(lines[9].strip_suffix(b"\n").unwrap()))
    );
    writer.append(draft(200)).unwrap();
    writer.shutdown().unwrap();
    let report = log.verify();
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.retained_from, Some(11));
    // Records 11..=30 in format 1, the switch marker, 5 events, the rotation and retention
    // markers, one more event.
    assert_eq!((report.last_seq, report.segments), (39, 3));
    let formats: Vec<u32> = log
        .files
        .oldest_first()
        .iter()
        .flat_map(|file| records(file))
        .map(|r| r.version())
        .collect();
    assert_eq!(formats.iter().filter(|&&v| v == 1).count(), 20);
    assert!(formats.windows(2).all(|w| w[0] <= w[1]), "{formats:?}");
}

#[test]
fn retention_by_total_size() {
    let log = new_log();
    let writer = log.open(WriterOptions {
        max_total_size: Some(6 * 1024),
        ..options()
    });
    for round in 0..6u64 {
        for i in 0..5 {
            writer.append(draft(round * 5 + i)).unwrap();
        }
        writer.rotate(Trigger::Operator).unwrap();
    }
    writer.shutdown().unwrap();
    let total: u64 = log
        .files
        .oldest_first()
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    // The limit holds at each rotation (the marker lines written since are not counted).
    assert!(total < 8 * 1024, "{total}");
    let report = log.verify();
    assert!(report.ok, "{report:#?}");
    assert!(report.retained_from.is_some());
}

#[test]
fn a_rotation_cut_short_by_a_crash_is_completed_on_open() {
    let log = new_log();
    let writer = log.open(options());
    for i in 0..5 {
        writer.append(draft(i)).unwrap();
    }
    writer.shutdown().unwrap();
    drop(writer);
    // The crash came right after the rename: no live file.
    std::fs::rename(log.files.live(), log.files.rotated(1)).unwrap();
    let (writer, report) = AuditWriter::open(log.files.live(), log.key.clone(), options()).unwrap();
    assert!(report.completed_rotation);
    assert_eq!((report.resumed_seq, report.marker_seq), (5, Some(6)));
    assert_eq!(writer.append(draft(5)).unwrap().seq, 7);
    writer.shutdown().unwrap();
    drop(writer);
    assert!(log.verify().ok);

    // The crash came while the new file's marker was half written.
    std::fs::rename(log.files.rotated(1), log.files.rotated(2)).unwrap();
    std::fs::rename(log.files.live(), log.files.rotated(1)).unwrap();
    std::fs::write(log.files.live(), br#"{"kind":"segment","prev":"ab"#).unwrap();
    let (writer, report) = AuditWriter::open(log.files.live(), log.key.clone(), options()).unwrap();
    assert!(report.torn_tail.is_some());
    writer.append(draft(6)).unwrap();
    writer.shutdown().unwrap();
    let report = log.verify();
    assert!(report.ok, "{report:#?}");
    assert!(
        report
            .notices
            .iter()
            .any(|n| n.kind == FindingKind::TornLineRecovered)
    );
}

// ---- the Sidecar ------------------------------------------------------------------------------

const LOAD_CLIENTS: &str = r#"
import sys, threading, requests
proxy, url, n, workers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lock = threading.Lock()
def run(i):
    s = requests.Session()
    s.proxies = {"http": proxy}
    s.trust_env = False
    for j in range(i, n, workers):
        try:
            r = s.get(f"{url}/{j}", timeout=60)
        except Exception:
            return
        if 200 <= r.status_code < 300:
            with lock:
                print(j, flush=True)
threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
[t.start() for t in threads]
[t.join() for t in threads]
"#;

/// 16 clients, a size threshold small enough for many rotations, `firma audit rotate` mid-load,
/// and a following `firma monitor`: every answered call has exactly one record across the files,
/// the chain verifies end to end, and the monitor printed each record once.
#[test]
fn rotation_under_load_loses_and_repeats_nothing() {
    let upstream = start_upstream(None);
    let stack = start_stack(
        |config| {
            *config = config.replacen(
                "[sidecar.audit]",
                "[sidecar.audit]\nrotate_size = \"64KiB\"",
                1,
            );
        },
        &[],
    );
    let token = stack.token();
    let monitor_out = stack.world.path().join("monitor.jsonl");
    let monitor = stack
        .world
        .cmd()
        .args(["monitor", "--source", "audit", "--format", "json"])
        .stdout(std::fs::File::create(&monitor_out).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut monitor = ChildGuard::new(monitor);
    let url = format!("http://127.0.0.1:{}/load", upstream.addr.port());
    let answered_out = stack.world.path().join("answered.txt");
    let clients = Command::new("python3")
        .args([
            "-c",
            LOAD_CLIENTS,
            &stack.proxy_url(Some(&token)),
            &url,
            "2000",
            "16",
        ])
        .stdout(std::fs::File::create(&answered_out).unwrap())
        .spawn()
        .unwrap();
    let mut clients = ChildGuard::new(clients);
    // An operator rotation while the clients run.
    wait_for("some answered calls", DEADLINE, || {
        let text = std::fs::read_to_string(&answered_out).ok()?;
        (text.lines().count() >= 300).then_some(())
    });
    let out = stack.world.run(&["audit", "rotate"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("rotated the audit log"),
        "{}",
        stdout(&out)
    );
    let status = wait_for("the clients to finish", DEADLINE, || {
        clients.child_mut().try_wait().unwrap()
    });
    assert!(status.success());
    let answered = std::fs::read_to_string(&answered_out).unwrap();
    assert_eq!(answered.lines().count(), 2000);
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 2000);

    let state = StateDir::new(stack.world.state_dir());
    let rotations = state.audit().rotations();
    assert!(rotations.len() >= 5, "{} rotations", rotations.len());
    let mut seen = std::collections::HashMap::new();
    for file in state.audit_files() {
        for record in records(&file) {
            if let Some(event) = record.as_event() {
                *seen.entry(event.intent.path.clone()).or_insert(0) += 1;
            }
        }
    }
    for j in 0..2000 {
        assert_eq!(seen.get(&format!("/load/{j}")), Some(&1), "/load/{j}");
    }
    let report = stack.world.verify_json();
    assert_eq!(report["ok"], true, "{report:#}");

    // The monitor printed each record once (it follows the live file across rotations).
    let expected = seen.len();
    let printed = wait_for("the monitor to catch up", DEADLINE, || {
        let text = std::fs::read_to_string(&monitor_out).ok()?;
        let paths: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["event"]["intent"]["path"].as_str().map(str::to_string))
            .filter(|p| p.starts_with("/load/"))
            .collect();
        (paths.len() >= expected).then_some(paths)
    });
    let _ = monitor.child_mut().kill();
    let unique: std::collections::HashSet<&String> = printed.iter().collect();
    assert_eq!(
        unique.len(),
        printed.len(),
        "the monitor printed a record twice"
    );
    assert_eq!(printed.len(), expected);
}

/// SIGKILL while the Sidecar rotates constantly: the log verifies (torn-tail rules) and the
/// Sidecar restarts on it, completing whatever rotation was cut short.
#[test]
fn sigkill_during_rotations_leaves_a_log_that_verifies_and_restarts() {
    let upstream = start_upstream(None);
    let mut stack = start_stack(
        |config| {
            *config = config.replacen(
                "[sidecar.audit]",
                "[sidecar.audit]\nrotate_size = \"2KiB\"\nkeep = 5",
                1,
            );
        },
        &[],
    );
    let token = stack.token();
    let url = format!("http://127.0.0.1:{}/kill", upstream.addr.port());
    for round in 0..3 {
        let clients = Command::new("python3")
            .args([
                "-c",
                LOAD_CLIENTS,
                &stack.proxy_url(Some(&token)),
                &url,
                "100000",
                "16",
            ])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut clients = ChildGuard::new(clients);
        let state = StateDir::new(stack.world.state_dir());
        let live = state.audit();
        let mut seen = live.live_identity();
        let mut rotations = 0;
        wait_for("rotations under load", DEADLINE, || {
            let now = live.live_identity();
            if now != seen {
                rotations += 1;
                seen = now;
            }
            (rotations >= 5).then_some(())
        });
        // Verifying while the Sidecar rotates (and retention deletes) every few records.
        let report = stack.world.verify_json();
        assert_eq!(
            report["ok"], true,
            "round {round}, verified while rotating: {report:#}"
        );
        stop(&mut stack.sidecar);
        let _ = wait_for("the clients to give up", DEADLINE, || {
            clients.child_mut().try_wait().unwrap()
        });
        let report = stack.world.verify_json();
        assert_eq!(report["ok"], true, "round {round}: {report:#}");
        stack.restart_sidecar(&[], &format!("sidecar-{round}"));
        let (status, body) = curl(
            &stack.proxy_url(Some(&token)),
            &format!("http://127.0.0.1:{}/after-{round}", upstream.addr.port()),
            &[],
        );
        assert_eq!(status, 200, "{body}");
    }
    let report = stack.world.verify_json();
    assert_eq!(report["ok"], true, "{report:#}");
}

/// `[sidecar.audit] dir` puts the log on another disk; every reader finds it.
#[test]
fn a_configured_audit_dir_is_found_by_every_reader() {
    let upstream = start_upstream(None);
    let elsewhere = tempfile::tempdir().unwrap();
    let dir: PathBuf = elsewhere.path().join("evidence");
    let dir_text = dir.display().to_string();
    let stack = start_stack(
        |config| {
            *config = config.replacen(
                "[sidecar.audit]",
                &format!("[sidecar.audit]\ndir = \"{dir_text}\""),
                1,
            );
        },
        &[],
    );
    let token = stack.token();
    let (status, _) = curl(
        &stack.proxy_url(Some(&token)),
        &format!("http://127.0.0.1:{}/placed", upstream.addr.port()),
        &[],
    );
    assert_eq!(status, 200);
    assert!(dir.join("audit.jsonl").exists());
    let state = StateDir::new(stack.world.state_dir());
    assert_eq!(
        state.audit_dir(),
        dir,
        "published for readers without the config"
    );
    let report = stack.world.verify_json();
    assert_eq!(report["ok"], true, "{report:#}");
    assert!(
        report["files"][0]["path"]
            .as_str()
            .unwrap()
            .starts_with(&dir_text)
    );
    let out = stack.world.run(&[
        "monitor",
        "--source",
        "audit",
        "--no-follow",
        "--format",
        "json",
    ]);
    assert_success(&out);
    assert!(stdout(&out).contains("/placed"), "{}", stdout(&out));
}

/// `firma init --audit-dir` writes `[sidecar.audit] dir` and creates the empty log there.
#[test]
fn init_places_the_log_on_request() {
    let world = World::new();
    let dir = world.path().join("evidence");
    world.init(&["--audit-dir", dir.to_str().unwrap()]);
    let config = std::fs::read_to_string(world.config_path()).unwrap();
    assert!(
        config.contains(&format!("dir = \"{}\"", dir.display())),
        "{config}"
    );
    assert!(dir.join("audit.jsonl").exists());
    assert!(!world.state_dir().join("audit.jsonl").exists());
    let out = world.run(&["audit", "verify"]);
    assert_success(&out);
    let out = world.run(&["doctor"]);
    assert!(
        stdout(&out).contains(&format!("audit placement {} (persistent)", dir.display())),
        "{}",
        stdout(&out)
    );
}

/// `firma doctor` warns when the audit log sits on a tmpfs, and says how to move it.
#[test]
fn doctor_warns_about_an_audit_log_on_tmpfs() {
    let world = World::new();
    world.init(&[]);
    let _tmpfs = Tmpfs::mount(&world.state_dir(), "4m");
    let out = world.run(&["doctor"]);
    let text = stdout(&out);
    assert!(text.contains("tmpfs"), "{text}");
    assert!(text.contains("[sidecar.audit] dir"), "{text}");
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        /// Rotations at any points keep one chain that verifies; removing any one file by hand
        /// never verifies.
        #[test]
        fn rotations_anywhere_verify_and_a_removed_file_is_caught(
            cuts in prop::collection::vec(1u64..6, 1..5),
            victim in any::<prop::sample::Index>(),
        ) {
            let log = new_log();
            let writer = log.open(options());
            let mut i = 0;
            for run in &cuts {
                for _ in 0..*run {
                    writer.append(draft(i)).unwrap();
                    i += 1;
                }
                writer.rotate(Trigger::Operator).unwrap();
            }
            writer.append(draft(i)).unwrap();
            writer.shutdown().unwrap();
            let report = log.verify();
            prop_assert!(report.ok, "{:#?}", report);
            let files = log.files.oldest_first();
            prop_assert_eq!(files.len(), cuts.len() + 1);
            let gone = &files[victim.index(files.len() - 1)];
            std::fs::remove_file(gone).unwrap();
            let report = log.verify();
            prop_assert!(!report.ok, "removing {:?} went unnoticed", gone);
        }
    }
}

/// A log with `keep = 5` after nine rotations, and the oldest kept file as it was before the
/// last rotation (what that rotation's retention deleted).
fn rotated_nine_times(log: &Log) -> Vec<u8> {
    let writer = log.open(WriterOptions {
        keep: Some(5),
        ..options()
    });
    let mut deleted = Vec::new();
    for round in 0..9u64 {
        for i in 0..5 {
            writer.append(draft(round * 10 + i)).unwrap();
        }
        deleted = std::fs::read(log.files.rotated(5)).unwrap_or_default();
        writer.rotate(Trigger::Operator).unwrap();
    }
    writer.append(draft(900)).unwrap();
    writer.shutdown().unwrap();
    assert!(log.verify().ok);
    deleted
}

/// `audit verify` may read the log while a rotation is half done (it retries only when the
/// files changed under it): the states a rotation pauses in are logs that verify. Between the
/// shift (`.N` → `.N+1`) and the switch (`audit.jsonl` → `.1`) there is no `.1`.
#[test]
fn a_log_between_a_rotations_shift_and_switch_verifies() {
    let log = new_log();
    rotated_nine_times(&log);
    for (n, path) in log.files.rotations().into_iter().rev() {
        std::fs::rename(&path, log.files.rotated(n + 1)).unwrap();
    }
    assert!(!log.files.rotated(1).exists());
    let report = log.verify();
    assert!(report.ok, "{report:#?}");
}

/// …and between retention's marker (written and fsynced first) and the deletion it records, the
/// records it names are still there.
#[test]
fn a_log_between_a_retention_marker_and_its_deletion_verifies() {
    let log = new_log();
    let deleted = rotated_nine_times(&log);
    std::fs::write(log.files.rotated(6), deleted).unwrap();
    let report = log.verify();
    assert!(report.ok, "{report:#?}");
}
