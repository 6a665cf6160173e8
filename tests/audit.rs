//! The audit log: writer, reader, and `firma audit verify` — tampering of every kind detected with
//! the right kind and line, crashes told apart from tampering, concurrency, restart, and the
//! openssl + jq recipe from docs/audit-log.md.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::audit::{draft, write_records};
use common::{World, assert_success, stderr, stdout};
use ed25519_dalek::SigningKey;
use firma::audit::verify::{FindingKind, VerifyOptions, VerifyReport, verify};
use firma::audit::writer::{AuditHealth, AuditWriter, WriterOptions};
use firma::config::keys;
use firma::config::schema::FsyncPolicy;

/// A key pair on disk (audit.key + audit.pub) in `dir`.
fn key_in(dir: &Path) -> (SigningKey, PathBuf) {
    let secret = dir.join("audit.key");
    let key = keys::generate();
    keys::write_pair(&secret, &key).unwrap();
    (key, keys::public_path(&secret))
}

/// A log of `n` records written by the real writer.
fn write_log(path: &Path, key: &SigningKey, n: u64) {
    write_records(path, key, (0..n).map(draft));
}

/// A log of `n` records in format 1 (as firma wrote before format 2), with its checkpoint.
fn write_v1_log(path: &Path, key: &SigningKey, n: u64) {
    firma::audit::format1::write_log(path, key, (0..n).map(draft)).unwrap();
}

fn lines_of(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path)
        .unwrap()
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut out = Vec::new();
    for line in lines {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    std::fs::write(path, out).unwrap();
}

fn run_verify(path: &Path, key: &SigningKey) -> VerifyReport {
    let mut options = VerifyOptions::new(vec![path.to_path_buf()], key.verifying_key());
    options.threads = 1;
    verify(&options).unwrap()
}

#[track_caller]
fn assert_problem(report: &VerifyReport, kind: FindingKind, line: u64) {
    let problem = report
        .problem
        .as_ref()
        .unwrap_or_else(|| panic!("no problem found: {report:#?}"));
    assert_eq!(
        (problem.kind, problem.line),
        (kind, Some(line)),
        "{}",
        problem.message
    );
    assert!(!report.ok);
}

struct Fixture {
    _dir: tempfile::TempDir,
    log: PathBuf,
    key: SigningKey,
}

fn fixture(records: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = key_in(dir.path());
    let log = dir.path().join("audit.jsonl");
    write_log(&log, &key, records);
    Fixture {
        _dir: dir,
        log,
        key,
    }
}

#[test]
fn a_clean_log_verifies_with_its_checkpoint() {
    let f = fixture(50);
    let report = run_verify(&f.log, &f.key);
    assert!(report.ok, "{report:#?}");
    assert_eq!(
        (report.verified, report.last_seq, report.lines),
        (50, 50, 50)
    );
    assert_eq!(report.checkpoint.seq, Some(50));
}

/// Every byte of a 50-record log flipped in turn is detected, at the right line. The lines before
/// the flipped one are byte-identical to the clean log (verified clean on its own), so each flip
/// is verified incrementally from the line before it and stops at the first problem; every
/// 97th flip is also verified from scratch, reading on to classify.
#[test]
fn every_single_byte_flip_is_detected() {
    use firma::audit::chain::ChainHead;
    use firma::audit::record::chain_hash;
    use firma::audit::verify::Resume;
    let f = fixture(50);
    assert!(run_verify(&f.log, &f.key).ok);
    let original = std::fs::read(&f.log).unwrap();
    let lines = lines_of(&f.log);
    // (offset, head before) for each line.
    let mut starts = Vec::new();
    let (mut offset, mut head) = (0u64, ChainHead::GENESIS);
    for (i, line) in lines.iter().enumerate() {
        starts.push((offset, head));
        offset += line.len() as u64 + 1;
        head = ChainHead::advance(i as u64 + 1, chain_hash(line));
    }
    // The resume points are right: the untouched log verifies from each of them.
    for (i, &(offset, head)) in starts.iter().enumerate() {
        let mut options = VerifyOptions::new(vec![f.log.clone()], f.key.verifying_key());
        options.threads = 1;
        let line = i as u64 + 1;
        options.resume = Some(Resume { offset, line, head });
        let report = verify(&options).unwrap();
        assert!(report.ok, "from line {line}: {report:#?}");
    }
    let positions: Vec<usize> = (0..original.len()).collect();
    std::thread::scope(|scope| {
        for part in positions.chunks(original.len().div_ceil(2)) {
            let (original, starts, key) = (&original, &starts, &f.key);
            let dir = f.log.parent().unwrap();
            scope.spawn(move || {
                let work = tempfile::tempdir_in(dir).unwrap();
                let copy = work.path().join("audit.jsonl");
                std::fs::copy(
                    dir.join("audit.checkpoint"),
                    work.path().join("audit.checkpoint"),
                )
                .unwrap();
                for &i in part {
                    let mut bytes = original.clone();
                    bytes[i] ^= 0x01;
                    std::fs::write(&copy, &bytes).unwrap();
                    let line = original[..i].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
                    let mut options = VerifyOptions::new(vec![copy.clone()], key.verifying_key());
                    options.threads = 1;
                    if !i.is_multiple_of(97) {
                        let (offset, head) = starts[line as usize - 1];
                        options.resume = Some(Resume { offset, line, head });
                        options.stop_at_first = true;
                        if line < 50 {
                            options.checkpoint = None; // only the tail needs it
                        }
                    }
                    let report = verify(&options).unwrap();
                    assert!(!report.ok, "flip at byte {i} went undetected: {report:#?}");
                    let problem = report.problem.unwrap();
                    // A flipped newline merges line `line` with the next; a byte turned into a
                    // newline splits it: either way the first bad line is `line`.
                    assert_eq!(problem.line, Some(line), "byte {i}: {}", problem.message);
                }
            });
        }
    });
}

#[test]
fn a_deleted_line_is_reported_as_deleted() {
    let f = fixture(50);
    let mut lines = lines_of(&f.log);
    lines.remove(19);
    write_lines(&f.log, &lines);
    let report = run_verify(&f.log, &f.key);
    assert_problem(&report, FindingKind::Deleted, 20);
    assert_eq!(report.problem.unwrap().seq, Some(20));
}

#[test]
fn swapped_lines_are_reported_as_reordered() {
    let f = fixture(50);
    let mut lines = lines_of(&f.log);
    lines.swap(29, 30);
    write_lines(&f.log, &lines);
    assert_problem(&run_verify(&f.log, &f.key), FindingKind::Reordered, 30);
}

#[test]
fn a_duplicated_line_is_reported_as_duplicated() {
    let f = fixture(50);
    let mut lines = lines_of(&f.log);
    let copy = lines[9].clone();
    lines.insert(10, copy);
    write_lines(&f.log, &lines);
    let report = run_verify(&f.log, &f.key);
    assert_problem(&report, FindingKind::Duplicated, 11);
    assert!(report.problem.unwrap().message.contains("line 10"));
}

#[test]
fn a_line_from_another_log_is_reported_as_inserted() {
    let f = fixture(50);
    // Another state dir, same project key: its lines carry valid signatures.
    let other_dir = tempfile::tempdir().unwrap();
    let other = other_dir.path().join("audit.jsonl");
    write_log(&other, &f.key, 30);
    let foreign = lines_of(&other)[24].clone();
    let mut lines = lines_of(&f.log);
    lines.insert(25, foreign);
    write_lines(&f.log, &lines);
    assert_problem(&run_verify(&f.log, &f.key), FindingKind::Inserted, 26);
}

#[test]
fn a_truncated_tail_is_caught_by_the_checkpoint() {
    let f = fixture(50);
    let lines = lines_of(&f.log);
    write_lines(&f.log, &lines[..45]);
    let report = run_verify(&f.log, &f.key);
    assert_problem(&report, FindingKind::Truncated, 46);
    assert_eq!(report.problem.unwrap().seq, Some(46));
}

#[test]
fn a_log_signed_with_another_key_is_reported_as_wrong_key() {
    let f = fixture(0);
    let impostor = keys::generate();
    std::fs::remove_file(&f.log).unwrap();
    std::fs::remove_file(f.log.with_extension("checkpoint")).unwrap();
    write_log(&f.log, &impostor, 50);
    assert_problem(&run_verify(&f.log, &f.key), FindingKind::WrongKey, 1);
    // One line re-signed with another key, the rest intact: that line was modified.
    let g = fixture(50);
    let mut lines = lines_of(&g.log);
    let mut value: serde_json::Value = serde_json::from_slice(&lines[4]).unwrap();
    value.as_object_mut().unwrap().remove("sig");
    let resealed = firma::audit::record::seal(value.as_object().unwrap().clone(), &impostor);
    lines[4] = resealed.line;
    write_lines(&g.log, &lines);
    assert_problem(&run_verify(&g.log, &g.key), FindingKind::Modified, 5);
}

#[test]
fn a_reformatted_line_is_non_canonical() {
    let f = fixture(10);
    let mut lines = lines_of(&f.log);
    let value: serde_json::Value = serde_json::from_slice(&lines[3]).unwrap();
    lines[3] = serde_json::to_vec_pretty(&value)
        .unwrap()
        .into_iter()
        .filter(|&b| b != b'\n')
        .collect();
    write_lines(&f.log, &lines);
    assert_problem(&run_verify(&f.log, &f.key), FindingKind::NonCanonical, 4);
}

#[test]
fn eight_tasks_times_5000_appends_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = key_in(dir.path());
    let log = dir.path().join("audit.jsonl");
    let (writer, report) = AuditWriter::open(&log, key.clone(), WriterOptions::default()).unwrap();
    assert_eq!(report.resumed_seq, 0);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let seqs: Vec<Vec<u64>> = runtime.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    let mut seqs = Vec::with_capacity(5000);
                    for i in 0..5000 {
                        seqs.push(writer.append(draft(t * 5000 + i)).unwrap().seq);
                    }
                    seqs
                })
            })
            .collect();
        let mut all = Vec::new();
        for task in tasks {
            all.push(task.await.unwrap());
        }
        all
    });
    writer.shutdown().unwrap();
    for task in &seqs {
        assert!(
            task.windows(2).all(|w| w[0] < w[1]),
            "a task's seqs increase"
        );
    }
    let mut all: Vec<u64> = seqs.concat();
    all.sort_unstable();
    assert_eq!(all, (1..=40_000).collect::<Vec<_>>(), "no gaps, no repeats");
    let options = VerifyOptions::new(vec![log.clone()], key.verifying_key());
    let report = verify(&options).unwrap();
    assert!(report.ok, "{report:#?}");
    assert_eq!(
        (report.lines, report.verified, report.last_seq),
        (40_000, 40_000, 40_000)
    );
    assert_eq!(report.checkpoint.seq, Some(40_000));
}

/// The Sidecar's way: `record` from many tasks on several threads; a record signed while an
/// earlier one is still being signed elsewhere is queued and awaited, and every record is written
/// once, in `seq` order.
#[test]
fn records_from_many_threads_are_written_in_seq_order() {
    use firma::audit::writer::Recorded;
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = key_in(dir.path());
    let log = dir.path().join("audit.jsonl");
    let (writer, _) = AuditWriter::open(&log, key.clone(), WriterOptions::default()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .build()
        .unwrap();
    let queued = runtime.block_on(async {
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let writer = writer.clone();
                tokio::spawn(async move {
                    let mut queued = 0;
                    for i in 0..500 {
                        let draft = draft(t * 500 + i);
                        match writer.record(&draft.borrowed()).unwrap() {
                            Recorded::Written { .. } => {}
                            Recorded::Queued { written, .. } => {
                                written.await.unwrap().unwrap();
                                queued += 1;
                            }
                        }
                    }
                    queued
                })
            })
            .collect();
        let mut queued = 0;
        for task in tasks {
            queued += task.await.unwrap();
        }
        queued
    });
    writer.shutdown().unwrap();
    let seqs: Vec<u64> = lines_of(&log)
        .iter()
        .map(|l| firma::audit::record::parse_record(l).unwrap().seq())
        .collect();
    assert_eq!(
        seqs,
        (1..=4000).collect::<Vec<_>>(),
        "in seq order, no gaps"
    );
    let report = run_verify(&log, &key);
    assert!(report.ok, "{report:#?}");
    eprintln!("{queued} of 4000 records waited for an earlier one");
}

#[test]
fn a_restart_resumes_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = key_in(dir.path());
    let log = dir.path().join("audit.jsonl");
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Never,
        FsyncPolicy::Batched,
    ] {
        let options = WriterOptions {
            fsync: policy,
            ..WriterOptions::default()
        };
        let (writer, report) = AuditWriter::open(&log, key.clone(), options).unwrap();
        assert!(report.torn_tail.is_none());
        let first = writer.append(draft(0)).unwrap();
        assert_eq!(first.seq, report.resumed_seq + 1);
        for i in 1..10 {
            writer.append(draft(i)).unwrap();
        }
        drop(writer); // dropping the last handle shuts down too
    }
    let report = run_verify(&log, &key);
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.last_seq, 30);
}

#[test]
fn a_second_writer_on_the_same_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = key_in(dir.path());
    let log = dir.path().join("audit.jsonl");
    let (_writer, _) = AuditWriter::open(&log, key.clone(), WriterOptions::default()).unwrap();
    let err = AuditWriter::open(&log, key, WriterOptions::default()).unwrap_err();
    assert!(err.message().contains("locked"), "{}", err.message());
}

#[test]
fn a_writer_refuses_to_continue_a_truncated_log() {
    let f = fixture(20);
    let lines = lines_of(&f.log);
    write_lines(&f.log, &lines[..15]);
    let err = AuditWriter::open(&f.log, f.key.clone(), WriterOptions::default()).unwrap_err();
    assert!(err.message().contains("truncated"), "{}", err.message());
    // …and a log whose last line was edited.
    let g = fixture(5);
    let mut lines = lines_of(&g.log);
    lines[4][20] ^= 0x01;
    write_lines(&g.log, &lines);
    assert!(AuditWriter::open(&g.log, g.key.clone(), WriterOptions::default()).is_err());
}

#[test]
fn a_torn_tail_is_a_crash_not_tampering_and_starts_a_new_segment() {
    let f = fixture(10);
    // Simulate a crash in the middle of write(2): half of an 11th line, no newline.
    let other_dir = tempfile::tempdir().unwrap();
    let other = other_dir.path().join("audit.jsonl");
    write_log(&other, &f.key, 11);
    let eleventh = &lines_of(&other)[10];
    let torn = &eleventh[..eleventh.len() / 2];
    let mut bytes = std::fs::read(&f.log).unwrap();
    let torn_offset = bytes.len() as u64;
    bytes.extend_from_slice(torn);
    std::fs::write(&f.log, &bytes).unwrap();

    let report = run_verify(&f.log, &f.key);
    assert!(report.ok, "a torn tail is not tampering: {report:#?}");
    assert_eq!(report.notices.len(), 1);
    assert_eq!(report.notices[0].kind, FindingKind::TornTail);
    assert_eq!(report.notices[0].line, Some(11));

    let (writer, open) =
        AuditWriter::open(&f.log, f.key.clone(), WriterOptions::default()).unwrap();
    let torn_line = open.torn_tail.clone().expect("torn tail reported");
    assert_eq!(
        (torn_line.offset, torn_line.length),
        (torn_offset, torn.len() as u64)
    );
    assert_eq!(open.marker_seq, Some(11));
    assert_eq!(writer.append(draft(99)).unwrap().seq, 12);
    writer.shutdown().unwrap();

    let report = run_verify(&f.log, &f.key);
    assert!(report.ok, "{report:#?}");
    assert_eq!(
        (report.verified, report.segments, report.last_seq),
        (12, 1, 12)
    );
    assert_eq!(report.notices[0].kind, FindingKind::TornLineRecovered);
    assert_eq!(report.notices[0].line, Some(11));

    // A torn-looking line in the middle that no marker names is tampering.
    let mut lines = lines_of(&f.log);
    lines.remove(11); // the marker
    write_lines(&f.log, &lines);
    assert_problem(&run_verify(&f.log, &f.key), FindingKind::Malformed, 11);
}

#[test]
fn a_whole_last_record_missing_only_its_newline_is_completed() {
    let f = fixture(5);
    let mut bytes = std::fs::read(&f.log).unwrap();
    bytes.pop();
    std::fs::write(&f.log, &bytes).unwrap();
    let (writer, open) =
        AuditWriter::open(&f.log, f.key.clone(), WriterOptions::default()).unwrap();
    assert!(open.completed_tail && open.torn_tail.is_none());
    assert_eq!(writer.append(draft(5)).unwrap().seq, 6);
    writer.shutdown().unwrap();
    assert!(run_verify(&f.log, &f.key).ok);
}

#[test]
fn the_checkpoint_is_refreshed_while_records_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = key_in(dir.path());
    let log = dir.path().join("audit.jsonl");
    let (writer, _) = AuditWriter::open(&log, key.clone(), WriterOptions::default()).unwrap();
    for i in 0..1500 {
        writer.append(draft(i)).unwrap();
    }
    let checkpoint_path = log.with_extension("checkpoint");
    let seq = common::wait_for(
        "a checkpoint at seq >= 1000",
        std::time::Duration::from_secs(30),
        || {
            let bytes = std::fs::read(&checkpoint_path).ok()?;
            let point = firma::audit::checkpoint::parse(&bytes, &key.verifying_key()).ok()?;
            (point.seq >= 1000).then_some(point.seq)
        },
    );
    assert!(seq <= 1500);
    writer.shutdown().unwrap();
}

#[test]
fn an_edit_stops_the_chain_at_its_line_and_later_lines_are_still_counted() {
    let f = fixture(5);
    let mut lines = lines_of(&f.log);
    let edited = String::from_utf8(lines[2].clone())
        .unwrap()
        .replace("decision 2", "decision 9");
    lines[2] = edited.into_bytes();
    lines.push(b"{not json".to_vec());
    write_lines(&f.log, &lines);
    let report = run_verify(&f.log, &f.key);
    assert_problem(&report, FindingKind::Modified, 3);
    assert_eq!((report.verified, report.last_seq), (2, 2));
    assert_eq!(
        report.lines, 6,
        "every line is read, also after the problem"
    );
    assert_eq!(report.files[0].lines, 6);
}

// ---- black box: `firma audit verify` ------------------------------------------------------

/// A world with an initialised project and a log of `n` records in its state dir.
fn world_with_log(n: u64) -> (World, SigningKey) {
    let world = World::new();
    world.init(&[]);
    let key = keys::load_signing_key(&world.project_dir().join("audit.key")).unwrap();
    write_log(&world.state_dir().join("audit.jsonl"), &key, n);
    (world, key)
}

fn json_report(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", stdout(out), stderr(out)))
}

#[test]
fn cli_defaults_to_the_state_dir_and_the_projects_key() {
    let (world, _) = world_with_log(20);
    let out = world.run(&["audit", "verify"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("20 records verified"),
        "{}",
        stdout(&out)
    );
    let out = world.run(&["audit", "verify", "--json"]);
    assert_success(&out);
    let report = json_report(&out);
    assert_eq!(report["ok"], true);
    assert_eq!(report["last_seq"], 20);
    assert_eq!(report["checkpoint"]["status"], "ok");
}

#[test]
fn cli_exits_1_with_kind_and_line_on_tampering() {
    let (world, _) = world_with_log(30);
    let log = world.state_dir().join("audit.jsonl");
    let mut lines = lines_of(&log);
    lines.remove(6);
    write_lines(&log, &lines);
    let out = world.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("audit.jsonl:7: deleted"),
        "{}",
        stderr(&out)
    );
    let out = world.run(&["audit", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report = json_report(&out);
    assert_eq!(report["problem"]["kind"], "deleted");
    assert_eq!(report["problem"]["line"], 7);
    assert_eq!(report["problem"]["seq"], 7);
}

#[test]
fn cli_json_report_schema() {
    let (world, _) = world_with_log(3);
    let out = world.run(&["audit", "verify", "--json"]);
    assert_success(&out);
    let state = world.state_dir().display().to_string();
    insta::with_settings!({filters => vec![
        (state.as_str(), "[STATE]"),
        (r#""key_fingerprint": "[0-9a-f]{64}""#, r#""key_fingerprint": "[FINGERPRINT]""#),
        (r#""ts": "[^"]+""#, r#""ts": "[TS]""#),
    ]}, {
        insta::assert_snapshot!(stdout(&out));
    });
}

#[test]
fn cli_json_report_schema_on_tampering() {
    let (world, _) = world_with_log(4);
    let log = world.state_dir().join("audit.jsonl");
    let mut lines = lines_of(&log);
    lines.swap(1, 2);
    write_lines(&log, &lines);
    let out = world.run(&["audit", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let state = world.state_dir().display().to_string();
    insta::with_settings!({filters => vec![
        (state.as_str(), "[STATE]"),
        (r#""key_fingerprint": "[0-9a-f]{64}""#, r#""key_fingerprint": "[FINGERPRINT]""#),
        (r#""ts": "[^"]+""#, r#""ts": "[TS]""#),
    ]}, {
        insta::assert_snapshot!(stdout(&out));
    });
}

#[test]
fn cli_errors_exit_2_naming_the_path() {
    let world = World::new();
    // No log in the state dir.
    let out = world.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("audit.jsonl"), "{}", stderr(&out));
    assert!(stderr(&out).contains("hint:"));
    // A log but no config to find the key: the hint says --key.
    std::fs::write(world.state_dir().join("audit.jsonl"), b"").unwrap();
    let out = world.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--key"), "{}", stderr(&out));
    // A key file that does not exist.
    let out = world.run(&["audit", "verify", "--key", "nope.pub"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nope.pub"), "{}", stderr(&out));
}

#[test]
fn cli_empty_log_from_init_is_clean() {
    let world = World::new();
    world.init(&[]);
    let out = world.run(&["audit", "verify"]);
    assert_success(&out);
}

#[test]
fn cli_verifies_rotations_oldest_first() {
    let (world, _) = world_with_log(30);
    let log = world.state_dir().join("audit.jsonl");
    let lines = lines_of(&log);
    write_lines(&world.state_dir().join("audit.jsonl.2"), &lines[..10]);
    write_lines(&world.state_dir().join("audit.jsonl.1"), &lines[10..20]);
    write_lines(&log, &lines[20..]);
    let out = world.run(&["audit", "verify", "--json"]);
    assert_success(&out);
    assert_eq!(json_report(&out)["verified"], 30);
    // Leaving out the oldest rotation means records 1..=10 are missing.
    let out = world.run(&[
        "audit",
        "verify",
        "--json",
        "--file",
        world.state_dir().join("audit.jsonl.1").to_str().unwrap(),
        "--file",
        log.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let report = json_report(&out);
    assert_eq!(report["problem"]["kind"], "truncated");
    assert_eq!(report["problem"]["line"], 1);
    assert_eq!(report["problem"]["seq"], 1);
}

/// docs/audit-log.md "Verify one line without firma": openssl + jq + sed + sha256sum, on a log
/// that starts in format 1 and continues in format 2 (the writer switched at a segment marker).
#[test]
fn third_party_recipe_with_openssl_and_jq() {
    let have = |tool: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !(have("openssl") && have("jq") && have("sha256sum")) {
        eprintln!("skipped: openssl, jq or sha256sum missing");
        return;
    }
    let world = World::new();
    world.init(&[]);
    let key = keys::load_signing_key(&world.project_dir().join("audit.key")).unwrap();
    let log = world.state_dir().join("audit.jsonl");
    // Lines 1-4: format 1; line 5: the writer's switch marker; lines 6-9: format 2.
    write_v1_log(&log, &key, 4);
    write_log(&log, &key, 4);
    let versions: Vec<u64> = lines_of(&log)
        .iter()
        .map(|l| {
            serde_json::from_slice::<serde_json::Value>(l).unwrap()["v"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(versions, [1, 1, 1, 1, 2, 2, 2, 2, 2]);
    let script = r#"
set -eu
LOG="$1"; PUB="$2"; N="$3"
line=$(sed -n "${N}p" "$LOG")
# 1. the signed message: the domain tag of the line's format, then the line without its sig
printf 'firma-audit-v%s\n' "$(printf '%s' "$line" | jq -r .v)" > msg.bin
printf '%s' "$line" | sed 's/,"sig":"[^"]*"//' >> msg.bin
# 2. the signature
printf '%s' "$line" | jq -r .sig | base64 -d > sig.bin
# 3. check it
openssl pkeyutl -verify -pubin -inkey "$PUB" -rawin -in msg.bin -sigfile sig.bin
# 4. the chain: prev names the previous record — format 2: the SHA-256 of that line without
#    its sig; format 1: of the whole line
before=$(sed -n "$((N-1))p" "$LOG")
if [ "$(printf '%s' "$before" | jq -r .v)" = 1 ]; then
  hash=$(printf '%s' "$before" | sha256sum)
else
  hash=$(printf '%s' "$before" | sed 's/,"sig":"[^"]*"//' | sha256sum)
fi
test "${hash%% *}" = "$(printf '%s' "$line" | jq -r .prev)" && echo "chain ok"
"#;
    let work = tempfile::tempdir().unwrap();
    let public = world.project_dir().join("audit.pub");
    let run = |log: &Path, n: usize| {
        std::process::Command::new("sh")
            .current_dir(work.path())
            .args(["-c", script, "recipe"])
            .arg(log)
            .arg(&public)
            .arg(n.to_string())
            .output()
            .unwrap()
    };
    // A format-1 line, the switch marker (format 2 after format 1), a format-2 event after a
    // format-2 marker, and one after a format-2 event.
    for n in [3, 5, 6, 8] {
        let out = run(&log, n);
        assert_success(&out);
        assert!(
            stdout(&out).contains("Signature Verified Successfully"),
            "line {n}: {}",
            stdout(&out)
        );
        assert!(stdout(&out).contains("chain ok"), "line {n}");
    }
    // What firma says agrees: the mixed log verifies.
    assert_success(&world.run(&["audit", "verify"]));

    // The recipe rejects an edited line, and signatures swapped between two lines.
    let original = lines_of(&log);
    let mut lines = original.clone();
    let edited = String::from_utf8(lines[6].clone())
        .unwrap()
        .replace("policy decision", "policy Decision");
    assert_ne!(edited.as_bytes(), lines[6].as_slice());
    lines[6] = edited.into_bytes();
    write_lines(&log, &lines);
    assert!(!run(&log, 7).status.success());
    let mut lines = original.clone();
    let sig = |l: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(l).unwrap()["sig"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b) = (sig(&lines[6]), sig(&lines[7]));
    for (i, (from, to)) in [(6, (&a, &b)), (7, (&b, &a))] {
        lines[i] = String::from_utf8(lines[i].clone())
            .unwrap()
            .replace(from.as_str(), to)
            .into_bytes();
    }
    write_lines(&log, &lines);
    assert!(!run(&log, 7).status.success());
    assert!(!run(&log, 8).status.success());
    // A verifier that knows only format 1 fails on every format-2 line: its signature is over
    // another domain tag.
    write_lines(&log, &original);
    let v1_only = script.replace(
        r#"printf 'firma-audit-v%s\n' "$(printf '%s' "$line" | jq -r .v)" > msg.bin"#,
        r"printf 'firma-audit-v1\n' > msg.bin",
    );
    assert_ne!(v1_only, script);
    for n in [5, 6, 8] {
        let out = std::process::Command::new("sh")
            .current_dir(work.path())
            .args(["-c", &v1_only, "recipe"])
            .arg(&log)
            .arg(&public)
            .arg(n.to_string())
            .output()
            .unwrap();
        assert!(!out.status.success(), "line {n} verified as format 1");
    }
}

/// Format 2 from the spec alone, by a third party (Python `cryptography`): it checks every line
/// of a log firma wrote (format 1, the switch marker, format 2), and writes a log of its own that
/// `firma audit verify` accepts — and refuses once two signatures are swapped.
#[test]
fn a_third_party_reads_and_writes_format_2_with_python_cryptography() {
    let have_python = std::process::Command::new("python3")
        .args(["-c", "import cryptography"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_python {
        eprintln!("skipped: python3 with cryptography missing (.ci/run installs it)");
        return;
    }
    let world = World::new();
    world.init(&[]);
    let key = keys::load_signing_key(&world.project_dir().join("audit.key")).unwrap();
    let log = world.state_dir().join("audit.jsonl");
    write_v1_log(&log, &key, 3);
    write_log(&log, &key, 3);
    const SCRIPT: &str = r#"
import base64, hashlib, json, sys
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
mode, path, keyfile = sys.argv[1:4]
def canon(o):  # RFC 8785 for records: ASCII member names, sorted; no whitespace
    return json.dumps(o, sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode()
def body(rec):
    return canon({k: v for k, v in rec.items() if k != 'sig'})
def chain_hash(line, rec):  # format 1: the whole line; format 2: the line without sig
    return hashlib.sha256(line if rec['v'] == 1 else body(rec)).hexdigest()
if mode == 'check':
    pub = load_pem_public_key(open(keyfile, 'rb').read())
    prev = '0' * 64
    lines = open(path, 'rb').read().split(b'\n')[:-1]
    for n, line in enumerate(lines, 1):
        rec = json.loads(line)
        assert canon(rec) == line, f'line {n} not canonical'
        pub.verify(base64.b64decode(rec['sig']), b'firma-audit-v%d\n' % rec['v'] + body(rec))
        assert rec['seq'] == n and rec['prev'] == prev, f'line {n} does not chain'
        prev = chain_hash(line, rec)
    print('checked', len(lines), sorted({json.loads(l)['v'] for l in lines}))
else:
    sk = load_pem_private_key(open(keyfile, 'rb').read(), None)
    prev, out = '0' * 64, []
    for seq in range(1, 4):
        rec = {'agent_id': 'py', 'decision': 'allow', 'event_id': f'e-{seq}',
               'intent': {'action_class': 'code.read', 'host': 'example.com', 'method': 'GET', 'path': '/'},
               'latency_us': 1, 'policy': {'bundle': 'b', 'determining': []}, 'prev': prev,
               'reason': 'allowed', 'seq': seq, 'session_id': 's', 'token_id': 't',
               'ts': f'2026-11-30T00:00:0{seq}.000000000Z', 'v': 2}
        rec['sig'] = base64.b64encode(sk.sign(b'firma-audit-v2\n' + body(rec))).decode()
        out.append(canon(rec))
        prev = chain_hash(out[-1], rec)
    open(path, 'wb').write(b''.join(l + b'\n' for l in out))
    point = {'head': prev, 'kind': 'checkpoint', 'log': 'audit.jsonl', 'seq': 3,
             'ts': '2026-11-30T00:00:04.000000000Z', 'v': 1}
    point['sig'] = base64.b64encode(sk.sign(b'firma-audit-checkpoint-v1\n' + canon(point))).decode()
    open(path.replace('.jsonl', '.checkpoint'), 'wb').write(canon(point) + b'\n')
    print('wrote 3')
"#;
    let python = |mode: &str, path: &Path, key: &Path| {
        std::process::Command::new("python3")
            .args(["-c", SCRIPT, mode])
            .arg(path)
            .arg(key)
            .output()
            .unwrap()
    };
    let out = python("check", &log, &world.project_dir().join("audit.pub"));
    assert_success(&out);
    assert!(
        stdout(&out).contains("checked 7 [1, 2]"),
        "{}",
        stdout(&out)
    );

    let theirs = tempfile::tempdir().unwrap();
    let their_log = theirs.path().join("audit.jsonl");
    assert_success(&python(
        "write",
        &their_log,
        &world.project_dir().join("audit.key"),
    ));
    let verify_theirs = || {
        world.run(&[
            "audit",
            "verify",
            "--json",
            "--file",
            their_log.to_str().unwrap(),
            "--key",
            world.project_dir().join("audit.pub").to_str().unwrap(),
        ])
    };
    let out = verify_theirs();
    assert_success(&out);
    assert_eq!(json_report(&out)["verified"], 3);
    let mut lines = lines_of(&their_log);
    let sig = |l: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(l).unwrap()["sig"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (a, b) = (sig(&lines[0]), sig(&lines[1]));
    for (i, (from, to)) in [(0, (&a, &b)), (1, (&b, &a))] {
        lines[i] = String::from_utf8(lines[i].clone())
            .unwrap()
            .replace(from.as_str(), to)
            .into_bytes();
    }
    write_lines(&their_log, &lines);
    let out = verify_theirs();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(json_report(&out)["problem"]["kind"], "modified");
}

// ---- properties of the canonical form -----------------------------------------------------

mod canonical_properties {
    use firma::audit::canonical;
    use firma::audit::event::{AuditEvent, Decision, Intent, PolicyRef};
    use firma::audit::record;
    use proptest::prelude::*;

    /// Any string, weighted towards what needs escaping or sorts differently in UTF-16.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            ".*",
            "[\\x00-\\x1f\"\\\\/\\x7f]{0,8}",
            "[a-z\u{e000}-\u{ffff}\u{10000}-\u{10ffff}]{0,6}",
        ]
    }

    fn event() -> impl Strategy<Value = AuditEvent> {
        (
            (0u64..(1 << 53), text(), text(), text(), text()),
            (text(), text(), text(), prop::collection::vec(text(), 0..4)),
            (
                0u64..(1 << 53),
                prop::sample::select(Decision::ALL.to_vec()),
            ),
        )
            .prop_map(
                |(
                    (seq, reason, agent, session, token),
                    (class, host, path, determining),
                    (latency, decision),
                )| {
                    AuditEvent {
                        v: 1,
                        seq,
                        ts: "2026-11-26T23:22:22.123456789Z".into(),
                        event_id: "0193".into(),
                        decision,
                        reason,
                        agent_id: agent,
                        session_id: session,
                        token_id: token,
                        intent: Intent {
                            action_class: class,
                            method: "POST".into(),
                            host,
                            path,
                            ..Default::default()
                        },
                        policy: PolicyRef {
                            bundle: "b".into(),
                            determining,
                        },
                        latency_us: latency,
                        prev: record::GENESIS_PREV.into(),
                        sig: None,
                        sandbox_id: format!("{seq:x}"),
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// parse → encode is the identity on canonical lines, and a sealed line verifies.
        #[test]
        fn parse_then_encode_is_identity_on_sealed_lines(event in event()) {
            let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
            let sealed = record::seal(record::to_object(&event), &key);
            let value: serde_json::Value = serde_json::from_slice(&sealed.line).unwrap();
            prop_assert_eq!(canonical::to_vec(&value).unwrap(), sealed.line.clone());
            let parsed = record::check_line(&sealed.line, &key.verifying_key()).unwrap();
            let back = parsed.record.as_event().unwrap().clone();
            prop_assert_eq!(back, AuditEvent { sig: Some(sealed.sig), ..event });
        }

        /// Canonical output of any JSON document is a fixed point and means the same value.
        #[test]
        fn encoding_is_idempotent_and_lossless(value in json()) {
            let once = canonical::to_vec(&value).unwrap();
            let reparsed: serde_json::Value = serde_json::from_slice(&once).unwrap();
            prop_assert_eq!(&reparsed, &value);
            prop_assert_eq!(canonical::to_vec(&reparsed).unwrap(), once);
        }
    }

    fn json() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-(1i64 << 53) + 1..(1i64 << 53)).prop_map(Value::from),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(text(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}

#[test]
fn append_returns_exactly_the_record_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = key_in(dir.path());
    let log = dir.path().join("audit.jsonl");
    let (writer, _) = AuditWriter::open(&log, key.clone(), WriterOptions::default()).unwrap();
    let returned: Vec<_> = (0..3).map(|i| writer.append(draft(i)).unwrap()).collect();
    // Written before append returned: readable now, without waiting for any flush.
    let on_disk: Vec<_> = lines_of(&log)
        .iter()
        .map(|line| {
            let parsed = firma::audit::record::check_line(line, &key.verifying_key()).unwrap();
            parsed.record.as_event().unwrap().clone()
        })
        .collect();
    assert_eq!(on_disk, returned);
    assert_eq!(returned[0].prev, firma::audit::record::GENESIS_PREV);
    assert!(returned[0].timestamp().is_some());
    writer.shutdown().unwrap();
    assert!(
        writer.append(draft(9)).is_err(),
        "no appends after shutdown"
    );
}

#[test]
fn cli_a_deleted_log_with_a_surviving_checkpoint_is_tampering() {
    let (world, _) = world_with_log(12);
    std::fs::remove_file(world.state_dir().join("audit.jsonl")).unwrap();
    let out = world.run(&["audit", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json_report(&out);
    assert_eq!(report["problem"]["kind"], "truncated");
    assert_eq!(report["problem"]["line"], 1);
    assert_eq!(report["problem"]["seq"], 1);
}

// ---- evidence or nothing: the writer refuses to acknowledge records the path no longer shows --

/// Wait until the writer publishes that it is unavailable; the reason it gives.
fn wait_unavailable(writer: &AuditWriter) -> String {
    let health = writer.health();
    common::wait_for(
        "the writer to report the log unavailable",
        std::time::Duration::from_secs(30),
        || match &*health.borrow() {
            AuditHealth::Unavailable { reason, .. } => Some(reason.clone()),
            AuditHealth::Ok => None,
        },
    )
}

fn open_log(dir: &Path) -> (AuditWriter, SigningKey, PathBuf) {
    let (key, _) = key_in(dir);
    let log = dir.join("audit.jsonl");
    let (writer, _) = AuditWriter::open(&log, key.clone(), WriterOptions::default()).unwrap();
    (writer, key, log)
}

#[test]
fn a_deleted_log_makes_every_later_append_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, _, log) = open_log(dir.path());
    assert_eq!(*writer.health().borrow(), AuditHealth::Ok);
    writer.append(draft(0)).unwrap();
    std::fs::remove_file(&log).unwrap();
    let reason = wait_unavailable(&writer);
    assert!(reason.contains("deleted or renamed"), "{reason}");
    for i in 1..4 {
        let err = writer.append(draft(i)).unwrap_err();
        assert!(err.message().contains("audit log unavailable"), "{err:?}");
    }
    assert_eq!(writer.last_seq(), 1, "nothing more was chained");
}

#[test]
fn a_renamed_log_makes_every_later_append_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, _, log) = open_log(dir.path());
    writer.append(draft(0)).unwrap();
    std::fs::rename(&log, dir.path().join("elsewhere.jsonl")).unwrap();
    assert!(wait_unavailable(&writer).contains("deleted or renamed"));
    assert!(writer.append(draft(1)).is_err());
}

#[test]
fn a_replaced_log_makes_every_later_append_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, key, log) = open_log(dir.path());
    writer.append(draft(0)).unwrap();
    // A look-alike put in its place (same name, another inode), e.g. an older copy.
    let copy = dir.path().join("copy.jsonl");
    std::fs::copy(&log, &copy).unwrap();
    std::fs::rename(&copy, &log).unwrap();
    assert!(wait_unavailable(&writer).contains("replaced"));
    assert!(writer.append(draft(1)).is_err());
    // The file the writer had is the one whose chain the checkpoint names: restarting on the
    // look-alike is possible only because it is an exact copy.
    drop(writer);
    assert!(run_verify(&log, &key).ok);
}

#[test]
fn a_log_truncated_in_place_makes_every_later_append_fail() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, _, log) = open_log(dir.path());
    writer.append(draft(0)).unwrap();
    writer.append(draft(1)).unwrap();
    // logrotate's copytruncate: same file, emptied.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    assert!(wait_unavailable(&writer).contains("truncated"));
    assert!(writer.append(draft(2)).is_err());
}

#[test]
fn a_symlink_in_place_of_the_log_is_a_replacement_and_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, key, log) = open_log(dir.path());
    writer.append(draft(0)).unwrap();
    let target = dir.path().join("target.jsonl");
    std::fs::rename(&log, &target).unwrap();
    std::os::unix::fs::symlink(&target, &log).unwrap();
    assert!(wait_unavailable(&writer).contains("replaced"));
    writer.shutdown().ok();
    drop(writer);
    // Opening refuses a symlinked log rather than following it.
    let err = AuditWriter::open(&log, key, WriterOptions::default()).unwrap_err();
    assert!(err.message().contains("cannot open audit log"), "{err:?}");
}

#[test]
fn checkpoints_are_announced_with_their_signed_line() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, key, log) = open_log(dir.path());
    let mut notices = writer.checkpoints();
    let opened = notices
        .borrow_and_update()
        .clone()
        .expect("the checkpoint written on open");
    assert_eq!(opened.checkpoint.seq, 0);
    for i in 0..1200 {
        writer.append(draft(i)).unwrap();
    }
    let notice = common::wait_for(
        "a checkpoint at seq >= 1000",
        std::time::Duration::from_secs(30),
        || {
            let current = notices.borrow_and_update().clone()?;
            (current.checkpoint.seq >= 1000).then_some(current)
        },
    );
    // The line is what a witness checks: it verifies with the audit key and says what the
    // struct says.
    let parsed = firma::audit::checkpoint::parse(&notice.line, &key.verifying_key()).unwrap();
    assert_eq!(parsed.seq, notice.checkpoint.seq);
    assert_eq!(parsed.sig, notice.checkpoint.sig);
    assert!(notice.checkpoint.sig.is_some());
    writer.shutdown().unwrap();
    let last = writer.checkpoints().borrow().clone().unwrap();
    assert_eq!(
        last.checkpoint.seq, 1200,
        "the final checkpoint is announced too"
    );
    assert_eq!(
        std::fs::read(log.with_extension("checkpoint")).unwrap(),
        last.line
    );
}

#[test]
fn verify_from_a_seq_skips_what_comes_before() {
    let f = fixture(50);
    let files = vec![f.log.clone()];
    let (index, resume) = firma::audit::verify::resume_at_seq(&files, 10).unwrap();
    assert_eq!((index, resume.line, resume.head.seq), (0, 10, 9));
    let mut options = VerifyOptions::new(files.clone(), f.key.verifying_key());
    options.resume = Some(resume);
    let report = verify(&options).unwrap();
    assert!(report.ok, "{report:#?}");
    assert_eq!((report.verified, report.from_seq), (41, Some(10)));
    // An edit before the start is not seen; one after it is.
    let mut lines = lines_of(&f.log);
    lines[4][30] ^= 1;
    lines[19][30] ^= 1;
    write_lines(&f.log, &lines);
    let report = verify(&options).unwrap();
    assert_eq!(report.problem.map(|p| p.line), Some(Some(20)));
    assert!(firma::audit::verify::resume_at_seq(&files, 51).is_err());
}

#[test]
fn tail_check_resumes_mid_file_and_still_catches_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = key_in(dir.path());
    let log = dir.path().join("audit.jsonl");
    let options = WriterOptions {
        fsync: FsyncPolicy::Never,
        ..WriterOptions::default()
    };
    let (writer, _) = AuditWriter::open(&log, key.clone(), options).unwrap();
    for i in 0..3000 {
        writer.append(draft(i)).unwrap();
    }
    writer.shutdown().unwrap();
    let size = std::fs::metadata(&log).unwrap().len();
    let resume = firma::audit::verify::resume_at_offset(&log, size / 2).expect("a resume point");
    assert!(resume.offset >= size / 2 && resume.head.seq > 1000);
    let mut options = VerifyOptions::new(vec![log.clone()], key.verifying_key());
    options.resume = Some(resume);
    let report = verify(&options).unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.last_seq, 3000);
    // Flip a byte in the tail: the tail check sees it.
    let mut bytes = std::fs::read(&log).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 1;
    std::fs::write(&log, bytes).unwrap();
    assert!(!verify(&options).unwrap().ok);
}

// ---- the pinned key -------------------------------------------------------------------------

#[test]
fn cli_prints_the_fingerprint_and_honours_a_pin() {
    let (world, key) = world_with_log(10);
    let fingerprint = firma::audit::record::key_fingerprint(&key.verifying_key());
    let out = world.run(&["audit", "verify"]);
    assert_success(&out);
    assert!(
        stdout(&out).contains(&format!("key {fingerprint}")),
        "{}",
        stdout(&out)
    );

    // The right pin (any case, colons allowed): ok, and said so.
    let spaced: String = fingerprint
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let out = world.run(&["audit", "verify", "--key-fingerprint", &spaced]);
    assert_success(&out);
    assert!(stdout(&out).contains("as pinned"), "{}", stdout(&out));

    // Another key pinned: the log does not verify under the key the operator expects.
    let other = firma::audit::record::key_fingerprint(&keys::generate().verifying_key());
    let out = world.run(&["audit", "verify", "--json", "--key-fingerprint", &other]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json_report(&out);
    assert_eq!(report["problem"]["kind"], "wrong_key");
    assert_eq!(report["pinned_fingerprint"], other.as_str());
    assert_eq!(report["key_fingerprint"], fingerprint.as_str());

    // A malformed pin is an input error naming the flag.
    let out = world.run(&["audit", "verify", "--key-fingerprint", "abc"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("--key-fingerprint"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn cli_a_pin_in_the_config_catches_a_replaced_key_pair() {
    let (world, key) = world_with_log(10);
    let fingerprint = firma::audit::record::key_fingerprint(&key.verifying_key());
    let config = std::fs::read_to_string(world.config_path()).unwrap();
    let pinned = config.replacen(
        "[sidecar.audit]",
        &format!("[sidecar.audit]\nkey_fingerprint = \"{fingerprint}\""),
        1,
    );
    assert_ne!(pinned, config, "the scaffold has a [sidecar.audit] table");
    std::fs::write(world.config_path(), pinned).unwrap();
    assert_success(&world.run(&["audit", "verify"]));

    // An attacker replaces audit.key/audit.pub and re-signs the whole log and checkpoint.
    let impostor = keys::generate();
    keys::write_pair(&world.project_dir().join("audit.key"), &impostor).unwrap();
    let log = world.state_dir().join("audit.jsonl");
    std::fs::remove_file(&log).unwrap();
    std::fs::remove_file(log.with_extension("checkpoint")).unwrap();
    write_log(&log, &impostor, 10);
    let out = world.run(&["audit", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(json_report(&out)["problem"]["kind"], "wrong_key");
}

// ---- format versions ----------------------------------------------------------------------

/// A format-1 log verifies; the writer continues it in format 2 after a segment marker, and the
/// whole log — and `--from-seq` on either side of the switch — verifies.
#[test]
fn a_format_1_log_is_continued_in_format_2_after_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = key_in(dir.path());
    let log = dir.path().join("audit.jsonl");
    write_v1_log(&log, &key, 10);
    let report = run_verify(&log, &key);
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.last_seq, 10);

    let (writer, open) = AuditWriter::open(&log, key.clone(), WriterOptions::default()).unwrap();
    assert_eq!((open.upgraded_from, open.marker_seq), (Some(1), Some(11)));
    for i in 0..5 {
        assert_eq!(writer.append(draft(i)).unwrap().seq, 12 + i);
    }
    writer.shutdown().unwrap();
    drop(writer);
    let report = run_verify(&log, &key);
    assert!(report.ok, "{report:#?}");
    assert_eq!(
        (report.verified, report.segments, report.last_seq),
        (16, 1, 16)
    );
    let marker = firma::audit::record::parse_record(&lines_of(&log)[10]).unwrap();
    assert!(
        matches!(&marker, firma::audit::event::AuditRecord::Segment(m) if m.v == 2
            && m.reason.contains("format 2")),
        "{marker:?}"
    );
    // Reopened, a format-2 log needs no second marker.
    let (writer, open) = AuditWriter::open(&log, key.clone(), WriterOptions::default()).unwrap();
    assert_eq!((open.upgraded_from, open.marker_seq), (None, None));
    writer.shutdown().unwrap();
    for from in [5, 11, 12, 16] {
        let files = vec![log.clone()];
        let (_, resume) = firma::audit::verify::resume_at_seq(&files, from).unwrap();
        let mut options = VerifyOptions::new(files, key.verifying_key());
        options.resume = Some(resume);
        let report = verify(&options).unwrap();
        assert!(report.ok, "from seq {from}: {report:#?}");
        assert_eq!(report.last_seq, 16);
    }
}

/// A torn format-1 tail: the marker that names it is the switch to format 2.
#[test]
fn a_torn_format_1_tail_is_recovered_in_format_2() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = key_in(dir.path());
    let log = dir.path().join("audit.jsonl");
    write_v1_log(&log, &key, 6);
    let mut bytes = std::fs::read(&log).unwrap();
    bytes.extend_from_slice(br#"{"agent_id":"codex","decision":"al"#);
    std::fs::write(&log, bytes).unwrap();
    let (writer, open) = AuditWriter::open(&log, key.clone(), WriterOptions::default()).unwrap();
    assert!(open.torn_tail.is_some());
    assert_eq!((open.upgraded_from, open.marker_seq), (Some(1), Some(7)));
    writer.append(draft(0)).unwrap();
    writer.shutdown().unwrap();
    let report = run_verify(&log, &key);
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.notices[0].kind, FindingKind::TornLineRecovered);
    assert_eq!(report.last_seq, 8);
}

/// Seal `object` as the record after `head` (its `seq`, `prev` and `v` set here).
fn seal_after(
    head: firma::audit::chain::ChainHead,
    mut object: serde_json::Map<String, serde_json::Value>,
    version: u64,
    key: &SigningKey,
) -> firma::audit::record::Sealed {
    object.insert("seq".into(), (head.seq + 1).into());
    object.insert("prev".into(), head.hash_hex().into());
    object.insert("v".into(), version.into());
    object.remove("sig");
    firma::audit::record::seal(object, key)
}

/// The format changes only upwards, at a segment marker: a validly signed and chained event that
/// switches without one, or a step back to format 1, is reported.
#[test]
fn a_format_switch_without_a_marker_or_backwards_is_reported() {
    use firma::audit::chain::ChainHead;
    use firma::audit::record::chain_hash;
    let f = fixture(0);
    std::fs::remove_file(f.log.with_extension("checkpoint")).unwrap();
    write_v1_log(&f.log, &f.key, 3);
    let mut lines = lines_of(&f.log);
    let head = ChainHead::advance(3, chain_hash(&lines[2]));
    let event: serde_json::Value = serde_json::from_slice(&lines[2]).unwrap();
    let object = event.as_object().unwrap().clone();
    lines.push(seal_after(head, object, 2, &f.key).line);
    write_lines(&f.log, &lines);
    let mut options = VerifyOptions::new(vec![f.log.clone()], f.key.verifying_key());
    options.checkpoint = None;
    let report = verify(&options).unwrap();
    assert_problem(&report, FindingKind::Malformed, 4);
    let message = &report.problem.as_ref().unwrap().message;
    assert!(
        message.contains("from audit format 1 to 2 without a segment marker"),
        "{message}"
    );
    // Format 2, then back to format 1.
    let g = fixture(3);
    let mut fresh = lines_of(&g.log);
    let head = ChainHead::advance(3, chain_hash(&fresh[2]));
    let value: serde_json::Value = serde_json::from_slice(&fresh[2]).unwrap();
    fresh.push(seal_after(head, value.as_object().unwrap().clone(), 1, &g.key).line);
    write_lines(&g.log, &fresh);
    let mut options = VerifyOptions::new(vec![g.log.clone()], g.key.verifying_key());
    options.checkpoint = None;
    let report = verify(&options).unwrap();
    assert_problem(&report, FindingKind::Malformed, 4);
    assert!(
        report
            .problem
            .unwrap()
            .message
            .contains("from audit format 2 to 1"),
    );
}

/// A record of a format this firma does not know fails loudly, naming the format — at the CLI
/// too (exit 1).
#[test]
fn a_record_of_an_unknown_format_fails_loudly() {
    let (world, _) = world_with_log(5);
    let log = world.state_dir().join("audit.jsonl");
    let mut lines = lines_of(&log);
    let line = String::from_utf8(lines[2].clone()).unwrap();
    assert!(line.ends_with(r#","v":2}"#), "{line}");
    lines[2] = line.replace(r#","v":2}"#, r#","v":3}"#).into_bytes();
    write_lines(&log, &lines);
    let out = world.run(&["audit", "verify", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report = json_report(&out);
    assert_eq!(report["problem"]["kind"], "malformed");
    assert_eq!(report["problem"]["line"], 3);
    let message = report["problem"]["message"].as_str().unwrap();
    assert!(message.contains("audit format 3"), "{message}");
}

// ---- any tampering of a format-2 log is caught (property) ----------------------------------

mod tampering {
    use std::path::PathBuf;
    use std::sync::OnceLock;

    use ed25519_dalek::SigningKey;
    use firma::audit::verify::{VerifyOptions, verify};
    use proptest::prelude::*;

    use super::{key_in, lines_of, write_log};

    /// Two logs of 12 records signed with the same key (two state dirs of one project), each
    /// with its checkpoint; made once for all cases.
    struct Logs {
        _dir: tempfile::TempDir,
        key: SigningKey,
        a: Vec<Vec<u8>>,
        b: Vec<Vec<u8>>,
        checkpoint: PathBuf,
    }

    const RECORDS: usize = 12;

    fn logs() -> &'static Logs {
        static LOGS: OnceLock<Logs> = OnceLock::new();
        LOGS.get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let (key, _) = key_in(dir.path());
            std::fs::create_dir(dir.path().join("b")).unwrap();
            let (a, b) = (
                dir.path().join("audit.jsonl"),
                dir.path().join("b/audit.jsonl"),
            );
            write_log(&a, &key, RECORDS as u64);
            write_log(&b, &key, RECORDS as u64);
            Logs {
                key,
                a: lines_of(&a),
                b: lines_of(&b),
                checkpoint: dir.path().join("audit.checkpoint"),
                _dir: dir,
            }
        })
    }

    #[derive(Debug, Clone)]
    enum Tamper {
        FlipBit {
            at: usize,
            bit: u8,
        },
        Drop(usize),
        Move {
            from: usize,
            to: usize,
        },
        Duplicate {
            line: usize,
            at: usize,
        },
        SwapSigs(usize, usize),
        /// Log A up to `at`, log B from there (same key, same `seq`s).
        Splice(usize),
        /// One line of log B in place of log A's.
        Replace(usize),
    }

    fn tamper() -> impl Strategy<Value = Tamper> {
        let line = 0..RECORDS;
        prop_oneof![
            (0usize..usize::MAX, 0u8..8).prop_map(|(at, bit)| Tamper::FlipBit { at, bit }),
            line.clone().prop_map(Tamper::Drop),
            (line.clone(), line.clone())
                .prop_filter("a move", |(a, b)| a != b)
                .prop_map(|(from, to)| Tamper::Move { from, to }),
            (line.clone(), 0..=RECORDS).prop_map(|(line, at)| Tamper::Duplicate { line, at }),
            (line.clone(), line.clone())
                .prop_filter("two lines", |(a, b)| a != b)
                .prop_map(|(a, b)| Tamper::SwapSigs(a, b)),
            (1..RECORDS).prop_map(Tamper::Splice),
            line.prop_map(Tamper::Replace),
        ]
    }

    fn sig_of(line: &[u8]) -> String {
        let value: serde_json::Value = serde_json::from_slice(line).unwrap();
        value["sig"].as_str().unwrap().to_string()
    }

    fn apply(tamper: &Tamper, a: &[Vec<u8>], b: &[Vec<u8>]) -> Vec<u8> {
        let mut lines = a.to_vec();
        match *tamper {
            Tamper::FlipBit { at, bit } => {
                let mut bytes: Vec<u8> = lines
                    .iter()
                    .flat_map(|l| [l.as_slice(), b"\n"].concat())
                    .collect();
                let at = at % bytes.len();
                bytes[at] ^= 1 << bit;
                return bytes;
            }
            Tamper::Drop(i) => {
                lines.remove(i);
            }
            Tamper::Move { from, to } => {
                let line = lines.remove(from);
                lines.insert(to, line);
            }
            Tamper::Duplicate { line, at } => lines.insert(at, a[line].clone()),
            Tamper::SwapSigs(i, j) => {
                let (si, sj) = (sig_of(&a[i]), sig_of(&a[j]));
                let swap = |line: &[u8], from: &str, to: &str| {
                    String::from_utf8(line.to_vec())
                        .unwrap()
                        .replace(from, to)
                        .into_bytes()
                };
                lines[i] = swap(&a[i], &si, &sj);
                lines[j] = swap(&a[j], &sj, &si);
            }
            Tamper::Splice(at) => {
                lines.truncate(at);
                lines.extend_from_slice(&b[at..]);
            }
            Tamper::Replace(i) => lines[i] = b[i].clone(),
        }
        lines
            .iter()
            .flat_map(|l| [l.as_slice(), b"\n"].concat())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever is done to the log's bytes, `verify` (with the log's checkpoint) says so.
        #[test]
        fn any_tampering_is_caught(tamper in tamper()) {
            let logs = logs();
            let bytes = apply(&tamper, &logs.a, &logs.b);
            let work = tempfile::tempdir().unwrap();
            let log = work.path().join("audit.jsonl");
            std::fs::write(&log, &bytes).unwrap();
            std::fs::copy(&logs.checkpoint, work.path().join("audit.checkpoint")).unwrap();
            let mut options = VerifyOptions::new(vec![log], logs.key.verifying_key());
            options.threads = 1;
            let report = verify(&options).unwrap();
            prop_assert!(!report.ok, "{tamper:?} went undetected: {report:#?}");
        }
    }
}
