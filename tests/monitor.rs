//! `firma monitor`, black-box: the built binary against state directories the tests write.
//! Follow tests never assert timings: they wait (with generous deadlines) for expected lines and
//! finish with a sentinel line, so "nothing lost, nothing duplicated" is an exact comparison.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use common::audit::{Vary, draft, write_records};
use common::{ChildGuard, World, assert_success, stderr, stdout, wait_for};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(20);

fn ts(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// One canonical audit line (keys sorted, no whitespace).
fn audit(seq: u64, time: DateTime<Utc>, decision: &str, class: &str) -> String {
    format!(
        concat!(
            r#"{{"agent_id":"codex","decision":"{d}","event_id":"evt-{seq}","intent":{{"action_class":"{c}","#,
            r#""host":"api.example.com","method":"POST","path":"/v1/{seq}"}},"latency_us":{lat},"#,
            r#""policy":{{"bundle":"bundle-1","determining":["policy-{d}"]}},"prev":"{prev}","#,
            r#""reason":"{reason}","seq":{seq},"session_id":"sess-1","sig":"c2lnbmF0dXJl","#,
            r#""token_id":"tok-1","ts":"{ts}","v":1}}"#
        ),
        d = decision,
        c = class,
        seq = seq,
        lat = 100 + seq,
        prev = "0".repeat(64),
        reason = if decision == "deny" {
            "no policy permits this call"
        } else {
            ""
        },
        ts = ts(time),
    )
}

/// One tracing JSON log line, as the daemons write them.
fn log(time: DateTime<Utc>, level: &str, target: &str, message: &str) -> String {
    format!(
        r#"{{"timestamp":"{}","level":"{level}","target":"{target}","message":"{message}"}}"#,
        time.to_rfc3339_opts(SecondsFormat::Micros, true)
    )
}

fn write_lines(path: &Path, lines: &[String]) {
    let mut text = String::new();
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    fs::write(path, text).unwrap();
}

fn append(path: &Path, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    file.write_all(bytes).unwrap();
}

fn append_line(path: &Path, line: &str) {
    append(path, format!("{line}\n").as_bytes());
}

/// A fixed state dir with all three sources interleaving in time.
fn fixture(world: &World) -> PathBuf {
    let dir = world.state_dir();
    write_lines(
        &dir.join("audit.jsonl"),
        &[
            audit(1, at("2026-11-26T10:00:01Z"), "allow", "network.http.read"),
            audit(
                2,
                at("2026-11-26T10:00:03Z"),
                "deny",
                "communication.external.send",
            ),
            audit(3, at("2026-11-26T10:00:05Z"), "passthrough", "unmapped"),
            audit(
                4,
                at("2026-11-26T10:00:07Z"),
                "deny",
                "storage.object.write",
            ),
            audit(
                5,
                at("2026-11-26T10:00:09Z"),
                "allow",
                "communication.external.send",
            ),
        ],
    );
    write_lines(
        &dir.join("authority.log"),
        &[
            log(
                at("2026-11-26T10:00:00Z"),
                "INFO",
                "firma::authority",
                "listening",
            ),
            log(
                at("2026-11-26T10:00:04Z"),
                "WARN",
                "firma::authority::issue",
                "token denied",
            ),
            "thread 'tokio-runtime-worker' panicked at src/authority/mod.rs:10:5:".to_string(),
            log(
                at("2026-11-26T10:00:08Z"),
                "ERROR",
                "firma::authority",
                "restarting",
            ),
        ],
    );
    write_lines(
        &dir.join("sidecar.log"),
        &[
            log(at("2026-11-26T10:00:02Z"), "INFO", "firma::sidecar", "ready"),
            r#"{"timestamp":"2026-11-26T10:00:06Z","level":"DEBUG","target":"firma::sidecar::proxy","message":"forwarded","status":200,"host":"api.example.com"}"#.to_string(),
        ],
    );
    dir
}

fn monitor(world: &World, args: &[&str]) -> std::process::Output {
    let mut all = vec!["monitor"];
    all.extend_from_slice(args);
    run(world, &all)
}

/// Like `World::run`, but with stdout and stderr going to files, so large outputs cannot fill
/// a pipe nobody reads while the run is waited for.
fn run(world: &World, args: &[&str]) -> std::process::Output {
    static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let out_path = world.path().join(format!("run-{n}.stdout"));
    let err_path = world.path().join(format!("run-{n}.stderr"));
    let child = world
        .cmd()
        .args(args)
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("spawn firma");
    let mut guard = ChildGuard::new(child);
    wait_for("firma to finish", Duration::from_secs(120), || {
        guard.child_mut().try_wait().unwrap()
    });
    let status = guard.take().wait().unwrap();
    std::process::Output {
        status,
        stdout: fs::read(out_path).unwrap(),
        stderr: fs::read(err_path).unwrap(),
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A follower: a running `firma monitor` whose stdout lines are collected.

struct Follower {
    guard: ChildGuard,
    lines: Arc<Mutex<Vec<String>>>,
    stderr_path: PathBuf,
}

impl Follower {
    fn start(world: &World, args: &[&str]) -> Self {
        Self::start_cmd(world, world.cmd(), args)
    }

    fn start_cmd(world: &World, mut cmd: std::process::Command, args: &[&str]) -> Self {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let stderr_path = world.path().join(format!("follower-{n}.stderr"));
        cmd.arg("monitor")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(File::create(&stderr_path).unwrap());
        let mut child = cmd.spawn().expect("spawn monitor");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                match line {
                    Ok(line) => sink.lock().unwrap().push(line),
                    Err(_) => break,
                }
            }
        });
        Self {
            guard: ChildGuard::new(child),
            lines,
            stderr_path,
        }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Wait until a line containing `needle` arrived; return every line so far.
    #[track_caller]
    fn wait_for(&self, needle: &str) -> Vec<String> {
        wait_for(&format!("a line containing {needle:?}"), DEADLINE, || {
            let lines = self.lines();
            lines.iter().any(|l| l.contains(needle)).then_some(lines)
        })
    }

    fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Wait until the monitor has each existing file open and positioned at its end (it
    /// starts following from there), by reading /proc.
    fn wait_positioned(&self, files: &[PathBuf]) {
        let pid = self.guard.id();
        wait_for(
            "the monitor to open and position its files",
            DEADLINE,
            || {
                let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
                let mut positioned = 0;
                for fd in fds.flatten() {
                    let Ok(target) = fs::read_link(fd.path()) else {
                        continue;
                    };
                    if let Some(file) = files.iter().find(|f| **f == target) {
                        let info = fs::read_to_string(format!(
                            "/proc/{pid}/fdinfo/{}",
                            fd.file_name().to_string_lossy()
                        ))
                        .ok()?;
                        let pos: u64 = info
                            .lines()
                            .find_map(|l| l.strip_prefix("pos:"))?
                            .trim()
                            .parse()
                            .ok()?;
                        if pos == fs::metadata(file).ok()?.len() {
                            positioned += 1;
                        }
                    }
                }
                (positioned == files.len()).then_some(())
            },
        );
    }
}

/// The `message` of each JSON output line (log records), or the `line` of raw ones.
fn messages(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            match v["kind"].as_str().unwrap() {
                "log" => v["log"]["message"].as_str().unwrap().to_string(),
                "event" => v["event"]["event_id"].as_str().unwrap().to_string(),
                _ => v["line"].as_str().unwrap().to_string(),
            }
        })
        .collect()
}

fn now_log(message: &str) -> String {
    log(Utc::now(), "INFO", "t", message)
}

// ---------------------------------------------------------------------------------------------
// Output formats (snapshots).

#[test]
fn pretty_output_merges_sources_in_time_order() {
    let world = World::new();
    fixture(&world);
    let out = monitor(&world, &["--no-follow"]);
    assert_success(&out);
    insta::assert_snapshot!("pretty_all", stdout(&out));
}

#[test]
fn pretty_output_with_color_always() {
    let world = World::new();
    fixture(&world);
    // NO_COLOR is set in the world: `always` wins over it.
    let out = run(
        &world,
        &[
            "--color",
            "always",
            "monitor",
            "--no-follow",
            "--source",
            "audit",
        ],
    );
    assert_success(&out);
    let text = stdout(&out);
    assert!(
        text.contains("\x1b[31m")
            || text.contains("\x1b[1;31m")
            || text.contains("\x1b[1m\x1b[31m")
    );
    insta::assert_snapshot!("pretty_audit_color", text.replace('\x1b', "<ESC>"));
    // auto on a pipe, and NO_COLOR: no escapes.
    let out = monitor(&world, &["--no-follow", "--source", "audit"]);
    assert!(!stdout(&out).contains('\x1b'));
}

#[test]
fn json_output_schema() {
    let world = World::new();
    fixture(&world);
    let out = monitor(&world, &["--no-follow", "--format", "json"]);
    assert_success(&out);
    let text = stdout(&out);
    insta::assert_snapshot!("json_all", text);
    for value in json_lines(&text) {
        assert_eq!(value["schema"], 1);
        assert!(value["source"].is_string());
        assert!(value["kind"].is_string());
    }
}

#[test]
fn json_carries_audit_events_byte_for_byte() {
    let world = World::new();
    let dir = fixture(&world);
    let file = fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    let out = monitor(
        &world,
        &["--no-follow", "--source", "audit", "--format", "json"],
    );
    assert_success(&out);
    let text = stdout(&out);
    let carried: Vec<&str> = text
        .lines()
        .map(|l| {
            let start = l.find(",\"event\":").unwrap() + 9;
            &l[start..l.len() - 1]
        })
        .collect();
    assert_eq!(carried, file.lines().collect::<Vec<_>>());
}

// ---------------------------------------------------------------------------------------------
// The guide's examples, verbatim (with the fixture's state dir in place of /var/run/firma).

#[test]
fn guide_everything_follows_all_sources() {
    let world = World::new();
    let dir = fixture(&world);
    let state = dir.to_str().unwrap();
    let all = monitor(&world, &["--no-follow"]);
    let all = stdout(&all);
    let before: Vec<&str> = all.lines().collect();
    assert_eq!(before.len(), 11);
    // firma monitor --state-dir /var/run/firma
    let follower = Follower::start(&world, &["--state-dir", state]);
    // The last 10 are written once reading what is there is done (a line appended before
    // that would count as one of them).
    follower.wait_for("/v1/5");
    append_line(
        &dir.join("audit.jsonl"),
        &audit(6, Utc::now(), "deny", "x.y"),
    );
    follower.wait_for("/v1/6");
    append_line(&dir.join("authority.log"), &now_log("authority-live"));
    follower.wait_for("authority-live");
    append_line(&dir.join("sidecar.log"), "sidecar raw line");
    let lines = follower.wait_for("sidecar raw line");
    // Following starts with the last 10 records already there (of 11, merged in time order,
    // as a one-shot run shows them), then the new lines in arrival order.
    assert_eq!(lines.len(), 13, "{lines:#?}");
    assert_eq!(lines[..10], before[1..]);
    assert!(lines[10].contains(" audit ") && lines[10].contains("DENY"));
    assert!(lines[11].contains(" authority ") && lines[11].contains("INFO"));
    assert!(
        lines[12].ends_with("  sidecar     sidecar raw line"),
        "{lines:#?}"
    );
}

#[test]
fn guide_denials_last_15_minutes_as_json() {
    let world = World::new();
    let dir = world.state_dir();
    let now = Utc::now();
    let minutes = |m: i64| now - chrono::Duration::minutes(m);
    write_lines(
        &dir.join("audit.jsonl"),
        &[
            audit(1, minutes(30), "deny", "a.b"),
            audit(2, minutes(20), "allow", "a.b"),
            audit(3, minutes(10), "deny", "a.b"),
            audit(4, minutes(5), "allow", "a.b"),
            audit(5, minutes(1), "deny", "c.d"),
        ],
    );
    write_lines(
        &dir.join("authority.log"),
        &[log(minutes(1), "INFO", "a", "not audit")],
    );
    let state = dir.to_str().unwrap();
    // firma monitor --state-dir /var/run/firma \ --source audit --decision deny --since 15m --format json
    let follower = Follower::start(
        &world,
        &[
            "--state-dir",
            state,
            "--source",
            "audit",
            "--decision",
            "deny",
            "--since",
            "15m",
            "--format",
            "json",
        ],
    );
    follower.wait_for("evt-5");
    append_line(
        &dir.join("audit.jsonl"),
        &audit(6, Utc::now(), "allow", "a.b"),
    );
    append_line(
        &dir.join("audit.jsonl"),
        &audit(7, Utc::now(), "deny", "a.b"),
    );
    let lines = follower.wait_for("evt-7");
    assert_eq!(messages(&lines), ["evt-3", "evt-5", "evt-7"]);
    for value in json_lines(&lines.join("\n")) {
        assert_eq!(value["source"], "audit");
        assert_eq!(value["event"]["decision"], "deny");
    }
}

#[test]
fn guide_authority_logs_one_shot() {
    let world = World::new();
    let dir = fixture(&world);
    // firma monitor --state-dir /var/run/firma \ --source authority --no-follow
    let out = run(
        &world,
        &[
            "monitor",
            "--state-dir",
            dir.to_str().unwrap(),
            "--source",
            "authority",
            "--no-follow",
        ],
    );
    assert_success(&out);
    assert_eq!(
        stdout(&out),
        "2026-11-26T10:00:00.000Z  authority  INFO   firma::authority: listening\n\
         2026-11-26T10:00:04.000Z  authority  WARN   firma::authority::issue: token denied\n\
         -                         authority  thread 'tokio-runtime-worker' panicked at src/authority/mod.rs:10:5:\n\
         2026-11-26T10:00:08.000Z  authority  ERROR  firma::authority: restarting\n"
    );
    assert_eq!(stderr(&out), "");
}

#[test]
fn guide_filter_by_action_class() {
    let world = World::new();
    let dir = fixture(&world);
    let state = dir.to_str().unwrap();
    // firma monitor --state-dir /var/run/firma \ --source audit --action-class communication.external.send
    let follower = Follower::start(
        &world,
        &[
            "--state-dir",
            state,
            "--source",
            "audit",
            "--action-class",
            "communication.external.send",
        ],
    );
    follower.wait_positioned(&[dir.join("audit.jsonl")]);
    append_line(
        &dir.join("audit.jsonl"),
        &audit(6, Utc::now(), "deny", "storage.object.write"),
    );
    append_line(
        &dir.join("audit.jsonl"),
        &audit(7, Utc::now(), "allow", "communication.external.send"),
    );
    let lines = follower.wait_for("/v1/7");
    // The matching records already there (fewer than -n's default 10), then the live one.
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for (line, want) in lines.iter().zip([
        "DENY         communication.external.send  POST api.example.com/v1/2",
        "ALLOW        communication.external.send  POST api.example.com/v1/5",
        "ALLOW        communication.external.send  POST api.example.com/v1/7",
    ]) {
        assert!(line.contains(want), "{lines:#?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Flags.

#[test]
fn filters_combine_and_ignore_log_lines() {
    let world = World::new();
    fixture(&world);
    let out = monitor(
        &world,
        &[
            "--no-follow",
            "--format",
            "json",
            "--decision",
            "deny",
            "--action-class",
            "communication.external.send",
            "--since",
            "2026-11-26T10:00:02Z",
        ],
    );
    assert_success(&out);
    // Audit: only evt-2 passes all three; logs: only --since applies (the raw panic line takes
    // the time of the line before it, 10:00:04).
    assert_eq!(
        messages(&stdout(&out).lines().map(String::from).collect::<Vec<_>>()),
        [
            "ready",
            "evt-2",
            "token denied",
            "thread 'tokio-runtime-worker' panicked at src/authority/mod.rs:10:5:",
            "forwarded",
            "restarting"
        ]
    );
}

#[test]
fn since_takes_durations_and_timestamps_across_sources() {
    let world = World::new();
    let dir = world.state_dir();
    let now = Utc::now();
    let ago = |m: i64| now - chrono::Duration::minutes(m);
    write_lines(
        &dir.join("audit.jsonl"),
        &[
            audit(1, ago(200), "allow", "a"),
            audit(2, ago(90), "allow", "a"),
            audit(3, ago(10), "allow", "a"),
        ],
    );
    write_lines(
        &dir.join("authority.log"),
        &[
            log(ago(180), "INFO", "a", "auth-old"),
            log(ago(30), "INFO", "a", "auth-new"),
        ],
    );
    write_lines(
        &dir.join("sidecar.log"),
        &[
            log(ago(100), "INFO", "s", "side-old"),
            log(ago(5), "INFO", "s", "side-new"),
        ],
    );
    let run = |since: &str| {
        let out = monitor(
            &world,
            &["--no-follow", "--format", "json", "--since", since],
        );
        assert_success(&out);
        messages(&stdout(&out).lines().map(String::from).collect::<Vec<_>>())
    };
    assert_eq!(run("15m"), ["evt-3", "side-new"]);
    assert_eq!(run("1h"), ["auth-new", "evt-3", "side-new"]);
    assert_eq!(
        run("2h"),
        ["side-old", "evt-2", "auth-new", "evt-3", "side-new"]
    );
    assert_eq!(run("1d").len(), 7);
    assert_eq!(
        run(&ts(ago(95))),
        ["evt-2", "auth-new", "evt-3", "side-new"]
    );
    // The same moment written with another offset.
    let plus_two = ago(95).with_timezone(&chrono::FixedOffset::east_opt(7200).unwrap());
    assert_eq!(run(&plus_two.to_rfc3339()).len(), 4);
}

#[test]
fn since_seek_on_a_large_audit_log_matches_a_full_scan() {
    let world = World::new();
    let dir = world.state_dir();
    let start = at("2026-11-26T00:00:00Z");
    let lines: Vec<String> = (0..20_000u64)
        .map(|i| {
            let decision = if i % 7 == 0 { "deny" } else { "allow" };
            audit(
                i + 1,
                start + chrono::Duration::seconds(i as i64),
                decision,
                "a.b",
            )
        })
        .collect();
    write_lines(&dir.join("audit.jsonl"), &lines);
    let since = start + chrono::Duration::seconds(12_345);
    let out = monitor(
        &world,
        &[
            "--no-follow",
            "--source",
            "audit",
            "--format",
            "json",
            "--since",
            &ts(since),
        ],
    );
    assert_success(&out);
    let expected: Vec<String> = (12_345..20_000u64)
        .map(|i| format!("evt-{}", i + 1))
        .collect();
    assert_eq!(
        messages(&stdout(&out).lines().map(String::from).collect::<Vec<_>>()),
        expected
    );
    // With a decision filter too (needle prefilter + seek).
    let out = monitor(
        &world,
        &[
            "--no-follow",
            "--source",
            "audit",
            "--format",
            "json",
            "--since",
            &ts(since),
            "--decision",
            "deny",
        ],
    );
    let expected: Vec<String> = (12_345..20_000u64)
        .filter(|i| i % 7 == 0)
        .map(|i| format!("evt-{}", i + 1))
        .collect();
    assert_eq!(
        messages(&stdout(&out).lines().map(String::from).collect::<Vec<_>>()),
        expected
    );
}

#[test]
fn bad_since_is_exit_2_naming_the_accepted_forms() {
    let world = World::new();
    fixture(&world);
    for bad in ["yesterday", "15", "1M", "2026-11-26 10:00"] {
        let out = monitor(&world, &["--no-follow", "--since", bad]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = stderr(&out);
        assert!(
            err.contains("--since") && err.contains("15m") && err.contains("RFC 3339"),
            "{err}"
        );
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn config_flag_is_accepted_and_not_used_for_state() {
    let world = World::new();
    fixture(&world);
    let out = run(
        &world,
        &[
            "monitor",
            "--config",
            "/nonexistent/firma.toml",
            "--no-follow",
            "--source",
            "authority",
        ],
    );
    assert_success(&out);
    assert_eq!(stdout(&out).lines().count(), 4);
}

#[test]
fn state_dir_resolution_flag_then_env() {
    let world = World::new();
    let other = world.path().join("other-state");
    fs::create_dir_all(&other).unwrap();
    write_lines(&other.join("sidecar.log"), &["from the flag".to_string()]);
    write_lines(
        &world.state_dir().join("sidecar.log"),
        &["from the env".to_string()],
    );
    let out = monitor(
        &world,
        &[
            "--no-follow",
            "--source",
            "sidecar",
            "--state-dir",
            other.to_str().unwrap(),
        ],
    );
    assert!(stdout(&out).contains("from the flag"));
    let out = monitor(&world, &["--no-follow", "--source", "sidecar"]);
    assert!(stdout(&out).contains("from the env"));
}

#[test]
fn one_shot_on_a_missing_state_dir_is_exit_2() {
    let world = World::new();
    let out = monitor(
        &world,
        &["--no-follow", "--state-dir", "/nonexistent/firma-state"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/firma-state"));
    assert!(stderr(&out).contains("hint:"));
}

#[test]
fn help_lists_sources_and_formats_from_the_registries() {
    let world = World::new();
    let out = run(&world, &["monitor", "--help"]);
    assert_success(&out);
    let help = stdout(&out);
    let sources: Vec<&str> = firma::monitor::sources().iter().map(|s| s.name()).collect();
    let formats: Vec<&str> = firma::monitor::formatters()
        .iter()
        .map(|f| f.name())
        .collect();
    for name in std::iter::once(&"all").chain(&sources).chain(&formats) {
        assert!(
            help.contains(&format!("{name}:")),
            "{name} missing from\n{help}"
        );
    }
    let out = monitor(&world, &["--source", "nope", "--no-follow"]);
    assert_eq!(out.status.code(), Some(2));
    let want = format!("[possible values: all, {}]", sources.join(", "));
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    let out = monitor(&world, &["--format", "nope", "--no-follow"]);
    let want = format!("[possible values: {}]", formats.join(", "));
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    let out = monitor(&world, &["--decision", "nope", "--no-follow"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("[possible values: allow, deny, passthrough]"),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// Odd lines.

#[test]
fn malformed_audit_lines_are_reported_not_dropped() {
    let world = World::new();
    let dir = world.state_dir();
    let good = audit(1, at("2026-11-26T10:00:00Z"), "deny", "a.b");
    let chopped = &good[..60];
    let wrong_type = good.replace("\"seq\":1", "\"seq\":\"one\"");
    write_lines(
        &dir.join("audit.jsonl"),
        &[
            good.clone(),
            chopped.to_string(),
            "[1,2]".into(),
            wrong_type,
            audit(2, at("2026-11-26T10:00:01Z"), "deny", "a.b"),
        ],
    );
    let out = monitor(
        &world,
        &[
            "--no-follow",
            "--source",
            "audit",
            "--format",
            "json",
            "--decision",
            "deny",
        ],
    );
    assert_success(&out);
    insta::assert_snapshot!("json_malformed", stdout(&out));
    let out = monitor(&world, &["--no-follow", "--source", "audit"]);
    insta::assert_snapshot!("pretty_malformed", stdout(&out));
}

/// The agent chooses the path (and its request's text): what the sources summarise for
/// `pretty` is made terminal-safe like everything else, in every field and in log fields.
#[test]
fn hostile_text_in_summaries_is_made_terminal_safe() {
    let world = World::new();
    let dir = world.state_dir();
    let line = audit(1, at("2026-11-26T10:00:00Z"), "deny", "a.b")
        .replace("/v1/1", r"/x\u001b]0;owned\u0007\u001b[2J")
        .replace("codex", r"ag\u001b[31ment");
    write_lines(&dir.join("audit.jsonl"), &[line]);
    write_lines(
        &dir.join("sidecar.log"),
        &[r#"{"timestamp":"2026-11-26T10:00:01Z","level":"WARN\u001b[0m","target":"t\u009b","message":"m\u001b[1A","host":"h\u001bc"}"#.to_string()],
    );
    let out = run(&world, &["--color", "always", "monitor", "--no-follow"]);
    assert_success(&out);
    let text = stdout(&out);
    // Colour codes are ours (the labels); none of the record's escapes survive.
    let stripped = text
        .replace("\x1b[31m", "")
        .replace("\x1b[1m", "")
        .replace("\x1b[33m", "")
        .replace("\x1b[2m", "")
        .replace("\x1b[36m", "")
        .replace("\x1b[35m", "")
        .replace("\x1b[34m", "")
        .replace("\x1b[0m", "")
        .replace("\x1b[39m", "")
        .replace("\x1b[22m", "");
    assert!(!stripped.contains('\x1b'), "{text:?}");
    assert!(!stripped.contains('\u{9b}'), "{text:?}");
    assert!(
        stripped.contains(r"/x\x1b]0;owned\x07\x1b[2J"),
        "{stripped}"
    );
    assert!(stripped.contains(r"agent=ag\x1b[31ment"), "{stripped}");
    assert!(stripped.contains(r"WARN\x1b[0M  t\x9b: "), "{stripped}");
    assert!(stripped.contains(r"m\x1b[1A  host=h\x1bc"), "{stripped}");
}

#[test]
fn invalid_utf8_is_carried_exactly() {
    let world = World::new();
    let dir = world.state_dir();
    fs::write(
        dir.join("sidecar.log"),
        b"caf\xc3\xa9 \xff\xfe end\n\x1b[31mred\n",
    )
    .unwrap();
    let out = monitor(
        &world,
        &["--no-follow", "--source", "sidecar", "--format", "json"],
    );
    assert_success(&out);
    let values = json_lines(&stdout(&out));
    assert_eq!(values.len(), 2);
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(values[0]["line_b64"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, b"caf\xc3\xa9 \xff\xfe end");
    assert_eq!(values[0]["line"], "café \u{fffd}\u{fffd} end");
    assert_eq!(values[1]["line"], "\u{1b}[31mred");
    assert!(values[1].get("line_b64").is_none());
    let out = monitor(&world, &["--no-follow", "--source", "sidecar"]);
    assert_eq!(
        stdout(&out),
        "-                         sidecar  café \\xff\\xfe end\n-                         sidecar  \\x1b[31mred\n"
    );
}

#[test]
fn a_one_mebibyte_line_comes_through_whole() {
    let world = World::new();
    let dir = world.state_dir();
    let big = "x".repeat(1 << 20);
    let line = log(at("2026-11-26T10:00:00Z"), "INFO", "big", &big);
    write_lines(
        &dir.join("authority.log"),
        &[
            line.clone(),
            log(at("2026-11-26T10:00:01Z"), "INFO", "t", "after"),
        ],
    );
    let out = monitor(
        &world,
        &["--no-follow", "--source", "authority", "--format", "json"],
    );
    assert_success(&out);
    let values = json_lines(&stdout(&out));
    assert_eq!(values.len(), 2);
    assert_eq!(values[0]["log"]["message"].as_str().unwrap().len(), 1 << 20);
    assert!(stdout(&out).lines().next().unwrap().contains(&line));
    assert_eq!(values[1]["log"]["message"], "after");
}

#[test]
fn one_shot_leaves_an_unterminated_last_line_with_a_note() {
    let world = World::new();
    let dir = world.state_dir();
    fs::write(dir.join("sidecar.log"), "complete\nhalf a li").unwrap();
    let out = monitor(
        &world,
        &["--no-follow", "--source", "sidecar", "--format", "json"],
    );
    assert_success(&out);
    assert_eq!(
        messages(&stdout(&out).lines().map(String::from).collect::<Vec<_>>()),
        ["complete"]
    );
    assert!(
        stderr(&out).contains("unterminated line (9 bytes)"),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// Following through rotation, truncation, re-creation, partial lines.

fn follow_sidecar(world: &World) -> (Follower, PathBuf) {
    let path = world.state_dir().join("sidecar.log");
    write_lines(&path, &[now_log("l1"), now_log("l2")]);
    let follower = Follower::start(
        world,
        &["--source", "sidecar", "--format", "json", "--since", "1d"],
    );
    follower.wait_for("l2");
    (follower, path)
}

#[test]
fn follows_rotation_by_rename_without_loss_or_duplicates() {
    let world = World::new();
    let (follower, path) = follow_sidecar(&world);
    let mut old = OpenOptions::new().append(true).open(&path).unwrap();
    writeln!(old, "{}", now_log("l3")).unwrap();
    fs::rename(&path, path.with_extension("log.1")).unwrap();
    // The writer has not reopened yet: a late line lands in the rotated file.
    writeln!(old, "{}", now_log("l4")).unwrap();
    write_lines(&path, &[now_log("l5"), now_log("l6")]);
    append_line(&path, &now_log("end"));
    let lines = follower.wait_for("\"end\"");
    assert_eq!(
        messages(&lines),
        ["l1", "l2", "l3", "l4", "l5", "l6", "end"]
    );
    assert!(
        follower.stderr().contains("has been replaced"),
        "{}",
        follower.stderr()
    );
}

#[test]
fn follows_copytruncate_even_when_rewritten_past_the_old_size() {
    let world = World::new();
    let (follower, path) = follow_sidecar(&world);
    append_line(&path, &now_log("l3"));
    follower.wait_for("l3");
    fs::copy(&path, path.with_extension("log.1")).unwrap();
    let file = OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(0).unwrap();
    drop(file);
    // Written in one go, longer than what was there before the truncation.
    let long = "y".repeat(2000);
    append(
        &path,
        format!(
            "{}\n{}\n{}\n",
            now_log("l4"),
            now_log(&long),
            now_log("end")
        )
        .as_bytes(),
    );
    let lines = follower.wait_for("\"end\"");
    assert_eq!(
        messages(&lines),
        [
            "l1".to_string(),
            "l2".into(),
            "l3".into(),
            "l4".into(),
            long,
            "end".into()
        ]
    );
    assert!(
        follower.stderr().contains("truncated"),
        "{}",
        follower.stderr()
    );
}

#[test]
fn follows_delete_and_recreate() {
    let world = World::new();
    let (follower, path) = follow_sidecar(&world);
    fs::remove_file(&path).unwrap();
    write_lines(&path, &[now_log("l3")]);
    append_line(&path, &now_log("end"));
    let lines = follower.wait_for("\"end\"");
    assert_eq!(messages(&lines), ["l1", "l2", "l3", "end"]);
}

#[test]
fn waits_for_a_missing_file_and_reads_it_from_the_start() {
    let world = World::new();
    let follower = Follower::start(&world, &["--source", "audit", "--format", "json"]);
    wait_for("the waiting note", DEADLINE, || {
        follower.stderr().contains("waiting for").then_some(())
    });
    let path = world.state_dir().join("audit.jsonl");
    write_lines(
        &path,
        &[
            audit(1, Utc::now(), "allow", "a"),
            audit(2, Utc::now(), "deny", "a"),
        ],
    );
    let lines = follower.wait_for("evt-2");
    assert_eq!(messages(&lines), ["evt-1", "evt-2"]);
}

#[test]
fn partial_lines_wait_for_their_newline() {
    let world = World::new();
    let state = world.state_dir();
    write_lines(&state.join("authority.log"), &[now_log("a1")]);
    let (follower, path) = follow_sidecar(&world);
    let whole = now_log("joined");
    let (first, second) = whole.split_at(30);
    append(&path, first.as_bytes());
    // A complete line elsewhere shows the monitor has looked since the half line was written.
    append_line(&path.with_file_name("authority.log"), &now_log("a2"));
    let _ = follower; // sidecar-only follower cannot see authority: use a second, all-source one
    let all = Follower::start(&world, &["--format", "json", "--since", "1d"]);
    let lines = all.wait_for("a2");
    assert!(!lines.iter().any(|l| l.contains("joined")), "{lines:#?}");
    append(&path, format!("{second}\n").as_bytes());
    append_line(&path, &now_log("end"));
    let lines = all.wait_for("\"end\"");
    let got = messages(&lines);
    assert_eq!(got.iter().filter(|m| *m == "joined").count(), 1, "{got:?}");
    assert_eq!(got.iter().filter(|m| *m == "a2").count(), 1, "{got:?}");
    assert_eq!(got.len(), 6, "{got:?}");
}

#[test]
fn two_monitors_at_once_both_see_everything() {
    let world = World::new();
    let path = world.state_dir().join("audit.jsonl");
    write_lines(&path, &[audit(1, Utc::now(), "allow", "a")]);
    let first = Follower::start(
        &world,
        &["--source", "audit", "--format", "json", "--since", "1h"],
    );
    let second = Follower::start(&world, &["--source", "audit", "--since", "1h"]);
    first.wait_for("evt-1");
    second.wait_for("/v1/1");
    for seq in 2..=20 {
        append_line(&path, &audit(seq, Utc::now(), "deny", "a"));
    }
    let a = first.wait_for("evt-20");
    let b = second.wait_for("/v1/20 ");
    assert_eq!(
        messages(&a),
        (1..=20).map(|s| format!("evt-{s}")).collect::<Vec<_>>()
    );
    assert_eq!(b.len(), 20);
}

/// Registry invariants, for whatever is registered (adding a plugin needs no edit here); the
/// guide's plugins must be among them (a lost registration fails).
#[test]
fn every_registered_plugin_is_well_formed() {
    let sources = firma::monitor::sources();
    let names: Vec<_> = sources.iter().map(|s| s.name()).collect();
    for name in ["audit", "authority", "sidecar"] {
        assert!(names.contains(&name), "{name} not registered: {names:?}");
    }
    let state = firma::state_dir::StateDir::new("/state");
    for source in &sources {
        assert!(!source.about().is_empty(), "{}", source.name());
        assert_ne!(source.name(), "all", "`all` is the CLI's");
        assert!(source.path(&state).starts_with(state.path()));
    }
    let formats: Vec<_> = firma::monitor::formatters()
        .iter()
        .map(|f| f.name())
        .collect();
    for name in ["json", "pretty"] {
        assert!(
            formats.contains(&name),
            "{name} not registered: {formats:?}"
        );
    }
    for formatter in firma::monitor::formatters() {
        assert!(!formatter.about().is_empty(), "{}", formatter.name());
    }
}

#[test]
fn polling_fallback_follows_rotation_with_one_warning() {
    let world = World::new();
    let path = world.state_dir().join("sidecar.log");
    write_lines(&path, &[now_log("l1")]);
    let mut cmd = world.cmd();
    cmd.env("FIRMA_MONITOR_POLL", "1");
    let follower = Follower::start_cmd(
        &world,
        cmd,
        &["--source", "sidecar", "--format", "json", "--since", "1d"],
    );
    follower.wait_for("l1");
    fs::rename(&path, path.with_extension("log.1")).unwrap();
    write_lines(&path, &[now_log("l2")]);
    append_line(&path, &now_log("end"));
    let lines = follower.wait_for("\"end\"");
    assert_eq!(messages(&lines), ["l1", "l2", "end"]);
    let err = follower.stderr();
    assert_eq!(
        err.matches("checking for changes every 100 ms").count(),
        1,
        "{err}"
    );
}

#[test]
fn live_lines_without_a_time_pass_since() {
    let world = World::new();
    let path = world.state_dir().join("sidecar.log");
    let old = Utc::now() - chrono::Duration::hours(3);
    // The sidecar's last timed line is older than the window; a live panic line must show.
    write_lines(&path, &[log(old, "INFO", "s", "old")]);
    write_lines(&path.with_file_name("authority.log"), &[now_log("ready")]);
    let follower = Follower::start(&world, &["--format", "json", "--since", "1h"]);
    follower.wait_for("ready");
    append_line(&path, "thread 'main' panicked at live");
    append_line(&path, &now_log("end"));
    let lines = follower.wait_for("\"end\"");
    assert_eq!(
        messages(&lines),
        ["ready", "thread 'main' panicked at live", "end"]
    );
}

// ---------------------------------------------------------------------------------------------
// Like the tools operators know: -n, several sources, -f, --agent, --sandbox-id, --level.

/// One canonical audit line with a chosen agent and, for a sandboxed run, its sandbox id (a
/// top-level field, in its sorted place).
fn audit_by(seq: u64, decision: &str, agent: &str, sandbox: Option<&str>) -> String {
    let line = audit(seq, Utc::now(), decision, "communication.external.send")
        .replace(r#""agent_id":"codex""#, &format!(r#""agent_id":"{agent}""#));
    match sandbox {
        Some(id) => line.replace(r#","seq":"#, &format!(r#","sandbox_id":"{id}","seq":"#)),
        None => line,
    }
}

/// The `event_id`s (or log messages, or raw lines) of a JSON run's output.
fn ids(out: &std::process::Output) -> Vec<String> {
    messages(&stdout(out).lines().map(String::from).collect::<Vec<_>>())
}

#[test]
fn last_n_matching_records_then_follow() {
    let world = World::new();
    let path = world.state_dir().join("audit.jsonl");
    let decisions = ["allow", "deny", "passthrough", "deny", "allow"];
    let lines: Vec<String> = (1..=40)
        .map(|seq| audit(seq, Utc::now(), decisions[seq as usize % 5], "a"))
        .collect();
    write_lines(&path, &lines);
    let denials: Vec<String> = (1..=40u64)
        .filter(|seq| decisions[*seq as usize % 5] == "deny")
        .map(|seq| format!("evt-{seq}"))
        .collect();
    // One shot: the tail of what a full read shows.
    let out = monitor(
        &world,
        &[
            "--no-follow",
            "--format",
            "json",
            "--decision",
            "deny",
            "-n",
            "5",
        ],
    );
    assert_success(&out);
    assert_eq!(ids(&out), denials[denials.len() - 5..]);
    let out = monitor(
        &world,
        &["--no-follow", "--format", "json", "--lines", "all"],
    );
    assert_eq!(ids(&out).len(), 40);
    let out = monitor(&world, &["--no-follow", "--format", "json", "-n", "0"]);
    assert_eq!(ids(&out), Vec::<String>::new());
    // Following (`-f` as tail users type it): the last 5 denials, then the new one.
    let follower = Follower::start(
        &world,
        &["-f", "-n", "5", "--decision", "deny", "--format", "json"],
    );
    follower.wait_for(denials.last().unwrap());
    append_line(&path, &audit(41, Utc::now(), "allow", "a"));
    append_line(&path, &audit(42, Utc::now(), "deny", "a"));
    let got = messages(&follower.wait_for("evt-42"));
    let mut want = denials[denials.len() - 5..].to_vec();
    want.push("evt-42".into());
    assert_eq!(got, want);
}

#[test]
fn following_starts_with_the_last_ten_like_tail() {
    let world = World::new();
    let path = world.state_dir().join("sidecar.log");
    let lines: Vec<String> = (1..=25).map(|i| now_log(&format!("m{i}"))).collect();
    write_lines(&path, &lines);
    let follower = Follower::start(&world, &["--source", "sidecar", "--format", "json"]);
    follower.wait_for("m25");
    append_line(&path, &now_log("end"));
    let got = messages(&follower.wait_for("\"end\""));
    let mut want: Vec<String> = (16..=25).map(|i| format!("m{i}")).collect();
    want.push("end".into());
    assert_eq!(got, want);
}

#[test]
fn a_bad_line_count_is_exit_2() {
    let world = World::new();
    for bad in ["-1", "ten", ""] {
        let flag = format!("--lines={bad}");
        let out = monitor(&world, &["--no-follow", &flag]);
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(stderr(&out).contains("--lines"), "{}", stderr(&out));
    }
}

#[test]
fn several_sources_by_repeating_the_flag_or_with_commas() {
    let world = World::new();
    fixture(&world);
    let sources = |out: &std::process::Output| -> Vec<String> {
        let mut seen: Vec<String> = json_lines(&stdout(out))
            .iter()
            .map(|v| v["source"].as_str().unwrap().to_string())
            .collect();
        seen.sort();
        seen.dedup();
        seen
    };
    for args in [
        &["--source", "audit", "--source", "sidecar"][..],
        &["--source", "audit,sidecar"][..],
        &["--source", "sidecar,audit,sidecar"][..],
    ] {
        let mut all = vec!["--no-follow", "--format", "json"];
        all.extend_from_slice(args);
        let out = monitor(&world, &all);
        assert_success(&out);
        assert_eq!(sources(&out), ["audit", "sidecar"], "{args:?}");
    }
    let out = monitor(
        &world,
        &["--no-follow", "--format", "json", "--source", "audit,all"],
    );
    assert_eq!(sources(&out), ["audit", "authority", "sidecar"]);
    let out = monitor(&world, &["--no-follow", "--source", "audit,nope"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn agent_and_sandbox_filters_judge_decisions_and_show_what_they_cannot_judge() {
    let world = World::new();
    let dir = world.state_dir();
    write_lines(
        &dir.join("audit.jsonl"),
        &[
            audit_by(1, "allow", "codex", None),
            audit_by(2, "deny", "claude", Some("sbx-1")),
            audit_by(3, "allow", "codex", Some("sbx-1")),
            audit_by(4, "deny", "codex", Some("sbx-2")),
            "not json at all".to_string(),
            audit_by(5, "allow", "claude", None),
        ],
    );
    write_lines(&dir.join("sidecar.log"), &[now_log("log line")]);
    let run_with = |args: &[&str]| {
        let mut all = vec!["--no-follow", "--format", "json"];
        all.extend_from_slice(args);
        let out = monitor(&world, &all);
        assert_success(&out);
        ids(&out)
    };
    assert_eq!(
        run_with(&["--source", "audit", "--agent", "claude"]),
        ["evt-2", "not json at all", "evt-5"]
    );
    // A record without a sandbox id is not from that sandbox.
    assert_eq!(
        run_with(&["--source", "audit", "--sandbox-id", "sbx-1"]),
        ["evt-2", "evt-3", "not json at all"]
    );
    assert_eq!(
        run_with(&[
            "--sandbox-id",
            "sbx-1",
            "--agent",
            "codex",
            "--decision",
            "allow"
        ]),
        ["evt-3", "not json at all", "log line"]
    );
    assert_eq!(
        run_with(&["--source", "audit", "--agent", "nobody"]),
        ["not json at all"]
    );
}

#[test]
fn level_filter_on_the_daemon_logs() {
    let world = World::new();
    fixture(&world);
    let out = monitor(
        &world,
        &[
            "--no-follow",
            "--source",
            "authority,sidecar",
            "--level",
            "warn",
        ],
    );
    assert_success(&out);
    insta::assert_snapshot!("pretty_level_warn", stdout(&out));
    let out = monitor(
        &world,
        &["--no-follow", "--format", "json", "--level", "ERROR"],
    );
    assert_eq!(out.status.code(), Some(2), "levels are lower-case choices");
    let out = monitor(
        &world,
        &["--no-follow", "--format", "json", "--level", "debug"],
    );
    // Every log record is DEBUG or above; audit records are not judged by --level.
    assert_eq!(ids(&out).len(), 11);
}

#[test]
fn a_mistyped_action_class_is_exit_2_with_a_suggestion() {
    let world = World::new();
    fixture(&world);
    let out = monitor(
        &world,
        &[
            "--no-follow",
            "--action-class",
            "communication.internal.snd",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("--action-class"), "{err}");
    assert!(
        err.contains(r#"did you mean "communication.internal.send"?"#),
        "{err}"
    );
    assert!(stdout(&out).is_empty());
    let out = monitor(&world, &["--no-follow", "--action-class", "zzz"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not a registered action class"));
    assert!(!stderr(&out).contains("did you mean"), "{}", stderr(&out));
}

#[test]
fn notices_are_information_unless_something_may_be_lost() {
    let world = World::new();
    let path = world.state_dir().join("sidecar.log");
    let follower = Follower::start(&world, &["--source", "sidecar", "--format", "json"]);
    wait_for("the waiting note", DEADLINE, || {
        follower.stderr().contains("waiting for").then_some(())
    });
    write_lines(&path, &[now_log("l1"), now_log("l2"), now_log("l3")]);
    follower.wait_for("l3");
    fs::write(&path, format!("{}\n", now_log("end"))).unwrap();
    follower.wait_for("\"end\"");
    let err = follower.stderr();
    let shown = path.display();
    assert!(
        err.contains(&format!("info: monitor: waiting for {shown} to appear")),
        "{err}"
    );
    assert!(
        err.contains(&format!("info: monitor: {shown} appeared; following it")),
        "{err}"
    );
    assert!(
        err.contains(&format!("warn: monitor: {shown}: file truncated")),
        "{err}"
    );
    assert!(stdout_is_records(&follower.lines()));
}

/// Every stdout line is a record (notes never go to stdout).
fn stdout_is_records(lines: &[String]) -> bool {
    lines
        .iter()
        .all(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["schema"] == 1))
}

#[test]
fn supervisor_log_is_a_source() {
    let world = World::new();
    let dir = world.state_dir();
    write_lines(
        &dir.join("supervisor.log"),
        &[
            log(at("2026-11-26T10:00:00Z"), "INFO", "firma::lifecycle::supervisor", "authority spawned"),
            r#"{"timestamp":"2026-11-26T10:00:05Z","level":"ERROR","target":"firma::lifecycle::supervisor","message":"sidecar exited; stopping the pair","signal":"SIGKILL"}"#.to_string(),
        ],
    );
    let out = monitor(&world, &["--no-follow", "--source", "supervisor"]);
    assert_success(&out);
    insta::assert_snapshot!("pretty_supervisor", stdout(&out));
}

/// A pair started with `sidecar start --detach`, stopped on drop (also when a test fails).
struct RunningPair<'w>(&'w World);

impl<'w> RunningPair<'w> {
    fn start(world: &'w World) -> Self {
        world.init(&[]);
        let pair = Self(world);
        let out = world.run(&["sidecar", "start", "--detach"]);
        assert_success(&out);
        pair
    }
}

impl Drop for RunningPair<'_> {
    fn drop(&mut self) {
        let _ = self.0.run(&["sidecar", "stop"]);
    }
}

#[test]
fn the_real_supervisor_log_reads_through_its_source() {
    let world = World::new();
    let pair = RunningPair::start(&world);
    let out = monitor(
        &world,
        &["--no-follow", "--source", "supervisor", "--format", "json"],
    );
    assert_success(&out);
    let records = json_lines(&stdout(&out));
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "log" && r["log"]["message"] == "pair ready; supervising"),
        "{}",
        stdout(&out)
    );
    drop(pair);
    // After the stop, the log says so; `--level` keeps INFO and above.
    let out = monitor(
        &world,
        &[
            "--no-follow",
            "--source",
            "supervisor",
            "--level",
            "info",
            "-n",
            "3",
        ],
    );
    assert_success(&out);
    assert_eq!(stdout(&out).lines().count(), 3, "{}", stdout(&out));
    assert!(
        stdout(&out).contains("supervisor  INFO "),
        "{}",
        stdout(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// The Sidecar's own rotation: audit.jsonl -> audit.jsonl.1, older ones shifted up.

/// Rotate as the Sidecar does: shift `audit.jsonl.N` up, the live file to `.1`, and start a
/// new live file with `first` (the Sidecar's segment marker; here any record).
fn rotate_audit(dir: &Path, first: &str) {
    let mut n = 1;
    while dir.join(format!("audit.jsonl.{n}")).exists() {
        n += 1;
    }
    for k in (1..n).rev() {
        fs::rename(
            dir.join(format!("audit.jsonl.{k}")),
            dir.join(format!("audit.jsonl.{}", k + 1)),
        )
        .unwrap();
    }
    fs::rename(dir.join("audit.jsonl"), dir.join("audit.jsonl.1")).unwrap();
    write_lines(&dir.join("audit.jsonl"), &[first.to_string()]);
}

#[test]
fn follows_the_sidecars_rotations_once_per_record() {
    let world = World::new();
    let dir = world.state_dir();
    let path = dir.join("audit.jsonl");
    write_lines(&path, &[audit(1, Utc::now(), "allow", "a")]);
    let follower = Follower::start(
        &world,
        &["--source", "audit", "--format", "json", "--since", "1h"],
    );
    follower.wait_for("evt-1");
    let mut seq = 1;
    let mut next = || {
        seq += 1;
        audit(seq, Utc::now(), "deny", "a")
    };
    // Rotations back to back, with no chance for the monitor to look in between: the files
    // rotated away unseen are found in the listing and read in order.
    for round in 0..6 {
        append_line(&path, &next());
        rotate_audit(&dir, &next());
        append_line(&path, &next());
        if round % 2 == 1 {
            rotate_audit(&dir, &next());
            rotate_audit(&dir, &next());
        }
    }
    append_line(&path, &audit(1000, Utc::now(), "allow", "end"));
    let got = messages(&follower.wait_for("evt-1000"));
    let mut want: Vec<String> = (1..=seq).map(|s| format!("evt-{s}")).collect();
    want.push("evt-1000".into());
    assert_eq!(got, want);
    assert!(dir.join("audit.jsonl.12").exists(), "12 rotations happened");
    assert!(
        follower.stderr().contains("has been replaced"),
        "{}",
        follower.stderr()
    );
}

/// `[sidecar.audit] dir` in the project's config puts the log on another disk: monitor reads
/// and follows it there (rotations included) also before any Sidecar published the place.
#[test]
fn the_configured_audit_dir_is_read_and_followed_before_any_sidecar_ran() {
    let world = World::new();
    let placed = world.path().join("evidence");
    world.init(&["--audit-dir", placed.to_str().unwrap()]);
    assert!(
        !world.state_dir().join("audit.dir").exists(),
        "no Sidecar published the place yet"
    );
    let path = placed.join("audit.jsonl");
    write_lines(&path, &[audit(1, Utc::now(), "deny", "a")]);
    let out = monitor(
        &world,
        &["--no-follow", "--source", "audit", "--format", "json"],
    );
    assert_success(&out);
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(messages(&lines), ["evt-1"]);

    let follower = Follower::start(
        &world,
        &["--source", "audit", "--format", "json", "-n", "all"],
    );
    follower.wait_for("evt-1");
    append_line(&path, &audit(2, Utc::now(), "allow", "a"));
    rotate_audit(&placed, &audit(3, Utc::now(), "allow", "a"));
    append_line(&path, &audit(4, Utc::now(), "deny", "a"));
    assert_eq!(
        messages(&follower.wait_for("evt-4")),
        ["evt-1", "evt-2", "evt-3", "evt-4"]
    );
    assert!(!world.state_dir().join("audit.jsonl").exists());
}

#[test]
fn reading_spans_the_rotated_files_oldest_first() {
    let world = World::new();
    let dir = world.state_dir();
    let hours = |h: i64| Utc::now() - chrono::Duration::hours(h);
    // Four files, 30 records each, an hour apart: .3 is 4h old ... the live file is 1h old.
    let mut seq = 0;
    for (i, name) in [
        "audit.jsonl.3",
        "audit.jsonl.2",
        "audit.jsonl.1",
        "audit.jsonl",
    ]
    .iter()
    .enumerate()
    {
        let start = hours(4 - i as i64);
        let lines: Vec<String> = (0..30)
            .map(|k| {
                seq += 1;
                audit(seq, start + chrono::Duration::seconds(k * 60), "deny", "a")
            })
            .collect();
        write_lines(&dir.join(name), &lines);
    }
    let all = |args: &[&str]| {
        let mut all = vec!["--no-follow", "--source", "audit", "--format", "json"];
        all.extend_from_slice(args);
        let out = monitor(&world, &all);
        assert_success(&out);
        ids(&out)
    };
    let evts = |range: std::ops::RangeInclusive<u64>| -> Vec<String> {
        range.map(|s| format!("evt-{s}")).collect()
    };
    assert_eq!(all(&[]), evts(1..=120));
    // -n reaches back across files.
    assert_eq!(all(&["-n", "45"]), evts(76..=120));
    // --since 169.5 minutes: the window starts inside .2 (180 to 151 minutes old): .3 is not
    // read, .2 from its 12th record on, then .1 and the live file.
    let since = all(&["--since", "10170s"]);
    assert_eq!(since, evts(42..=120));
    // Files wholly before the window are chosen by their first record, never read: an
    // (out of order) recent record in .3 is not seen, as the binary search would not see it
    // inside one file either.
    let mut old = fs::read_to_string(dir.join("audit.jsonl.3")).unwrap();
    old.push_str(&audit(999, Utc::now(), "deny", "a"));
    old.push('\n');
    fs::write(dir.join("audit.jsonl.3"), old).unwrap();
    assert_eq!(all(&["--since", "10170s"]), evts(42..=120));
    assert!(all(&[]).contains(&"evt-999".to_string()));
}

// ---------------------------------------------------------------------------------------------
// With the real audit writer.

fn real_draft(i: u64) -> firma::audit::event::AuditDraft {
    // A reason quoting what the `--decision deny` prefilter looks for.
    draft(i).reason(format!("policy \"decision\":\"deny\" {i}"))
}

fn write_real(path: &Path, key: &ed25519_dalek::SigningKey, range: std::ops::Range<u64>) {
    write_records(path, key, range.map(real_draft));
}

/// `--sandbox-id` and `--agent` on records the real writer signed: the field names are the
/// audit event's own.
#[test]
fn sandbox_and_agent_filters_on_the_real_writers_records() {
    use firma::audit::writer::{AuditWriter, WriterOptions};
    let world = World::new();
    let log = world.state_dir().join("audit.jsonl");
    let key = firma::config::keys::generate();
    let (writer, _) = AuditWriter::open(&log, key, WriterOptions::default()).unwrap();
    for i in 0..12u64 {
        let mut draft = real_draft(i);
        draft.sandbox_id = ["", "sbx-a", "sbx-b"][i as usize % 3].to_string();
        draft.agent_id = if i < 6 {
            "codex".into()
        } else {
            "claude".into()
        };
        writer.append(draft).unwrap();
    }
    writer.shutdown().unwrap();
    let tokens = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["--no-follow", "--source", "audit", "--format", "json"];
        all.extend_from_slice(args);
        let out = monitor(&world, &all);
        assert_success(&out);
        json_lines(&stdout(&out))
            .iter()
            .map(|v| v["event"]["token_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(
        tokens(&["--sandbox-id", "sbx-a"]),
        ["tok-1", "tok-4", "tok-7", "tok-10"]
    );
    assert_eq!(
        tokens(&["--sandbox-id", "sbx-b", "--agent", "claude"]),
        ["tok-8", "tok-11"]
    );
    assert_eq!(tokens(&["--sandbox-id", ""]), Vec::<String>::new());
}

#[test]
fn events_from_the_real_writer_still_verify_after_monitor() {
    use firma::audit::verify::{VerifyOptions, verify};
    let world = World::new();
    let log = world.state_dir().join("audit.jsonl");
    let key = firma::config::keys::generate();
    write_real(&log, &key, 0..30);
    let out = monitor(
        &world,
        &["--no-follow", "--source", "audit", "--format", "json"],
    );
    assert_success(&out);
    let mut rebuilt = Vec::new();
    for value in json_lines(&stdout(&out)) {
        assert_eq!(value["kind"], "event");
    }
    for line in stdout(&out).lines() {
        let start = line.find(",\"event\":").unwrap() + 9;
        rebuilt.extend_from_slice(&line.as_bytes()[start..line.len() - 1]);
        rebuilt.push(b'\n');
    }
    assert_eq!(rebuilt, fs::read(&log).unwrap());
    let copy = world.path().join("rebuilt.jsonl");
    fs::write(&copy, &rebuilt).unwrap();
    fs::copy(
        world.state_dir().join("audit.checkpoint"),
        world.path().join("rebuilt.checkpoint"),
    )
    .unwrap();
    let report = verify(&VerifyOptions::new(vec![copy], key.verifying_key())).unwrap();
    assert!(report.ok, "{report:?}");

    // The needle prefilter is exact even when a reason quotes the needle.
    let out = monitor(
        &world,
        &[
            "--no-follow",
            "--source",
            "audit",
            "--format",
            "json",
            "--decision",
            "deny",
        ],
    );
    let denied: Vec<u64> = json_lines(&stdout(&out))
        .iter()
        .map(|v| v["event"]["latency_us"].as_u64().unwrap() - 100)
        .collect();
    assert_eq!(denied, (0..30).filter(|i| i % 3 == 0).collect::<Vec<_>>());
}

#[test]
fn a_crash_shows_the_torn_line_and_the_segment_marker() {
    let world = World::new();
    let log = world.state_dir().join("audit.jsonl");
    let key = firma::config::keys::generate();
    write_real(&log, &key, 0..2);
    append(&log, br#"{"agent_id":"codex","decision":"deny","ev"#);
    write_real(&log, &key, 2..4);
    let out = monitor(
        &world,
        &[
            "--no-follow",
            "--source",
            "audit",
            "--format",
            "json",
            "--decision",
            "deny",
        ],
    );
    assert_success(&out);
    let kinds: Vec<String> = json_lines(&stdout(&out))
        .iter()
        .map(|v| match v["kind"].as_str().unwrap() {
            "event" => format!(
                "{}:{}",
                v["event"]["kind"].as_str().unwrap_or("decision"),
                v["event"]["seq"]
            ),
            other => other.to_string(),
        })
        .collect();
    // seq 1 (deny, i=0), the torn line, the segment marker (seq 3), and i=3 (deny, seq 5).
    assert_eq!(
        kinds,
        ["decision:1", "malformed", "segment:3", "decision:5"]
    );
    let out = monitor(&world, &["--no-follow", "--source", "audit"]);
    let text = stdout(&out);
    assert!(text.contains("MALFORMED  at byte"), "{text}");
    assert!(
        text.contains("SEGMENT      new chain segment at seq 3:"),
        "{text}"
    );
}

#[test]
fn follows_a_state_dir_that_is_removed_and_created_again() {
    let world = World::new();
    let dir = world.state_dir();
    write_lines(
        &dir.join("audit.jsonl"),
        &[audit(1, Utc::now(), "allow", "a")],
    );
    let follower = Follower::start(
        &world,
        &["--source", "audit", "--format", "json", "--since", "1h"],
    );
    follower.wait_for("evt-1");
    fs::remove_dir_all(&dir).unwrap();
    fs::create_dir(&dir).unwrap();
    // `firma init` starts a fresh log.
    write_lines(
        &dir.join("audit.jsonl"),
        &[audit(1, Utc::now(), "deny", "b")],
    );
    append_line(&dir.join("audit.jsonl"), &audit(2, Utc::now(), "deny", "b"));
    let lines = follower.wait_for("evt-2");
    assert_eq!(messages(&lines), ["evt-1", "evt-1", "evt-2"]);
}

#[test]
fn a_line_beyond_the_limit_is_reported_with_its_length() {
    let world = World::new();
    let dir = world.state_dir();
    let huge = "z".repeat(9 << 20);
    write_lines(&dir.join("sidecar.log"), &[huge, "next".to_string()]);
    let out = monitor(
        &world,
        &["--no-follow", "--source", "sidecar", "--format", "json"],
    );
    assert_success(&out);
    let values = json_lines(&stdout(&out));
    assert_eq!(values.len(), 2);
    assert_eq!(values[0]["kind"], "malformed");
    assert_eq!(values[0]["offset"], 0);
    assert!(
        values[0]["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("line of {} bytes", 9 << 20))
    );
    assert_eq!(values[0]["line"].as_str().unwrap(), "z".repeat(4096));
    assert_eq!(values[1]["line"], "next");
}

#[test]
fn following_from_the_end_shows_a_line_in_progress_whole() {
    let world = World::new();
    let path = world.state_dir().join("sidecar.log");
    let whole = now_log("in progress");
    let (first, second) = whole.split_at(20);
    fs::write(&path, format!("{}\n{first}", now_log("old"))).unwrap();
    let follower = Follower::start(
        &world,
        &["--source", "sidecar", "--format", "json", "-n", "0"],
    );
    let done = (fs::metadata(&path).unwrap().len() - first.len() as u64) as usize;
    // Positioned at the start of the unfinished line, not at the end of the file.
    let pid = follower.guard.id();
    wait_for("the monitor to position itself", DEADLINE, || {
        let fds = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
        fds.flatten().find_map(|fd| {
            (fs::read_link(fd.path()).ok()? == path).then_some(())?;
            let info = fs::read_to_string(format!(
                "/proc/{pid}/fdinfo/{}",
                fd.file_name().to_string_lossy()
            ))
            .ok()?;
            let pos: usize = info
                .lines()
                .find_map(|l| l.strip_prefix("pos:"))?
                .trim()
                .parse()
                .ok()?;
            (pos >= done).then_some(())
        })
    });
    append(&path, format!("{second}\n").as_bytes());
    append_line(&path, &now_log("end"));
    let lines = follower.wait_for("\"end\"");
    assert_eq!(messages(&lines), ["in progress", "end"]);
}

/// Run `firma <args>` with stdout on a pseudo-terminal; what it printed there.
fn run_on_a_terminal(world: &World, args: &[&str], no_color: bool) -> String {
    use std::io::Read;
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut cmd = world.cmd();
    cmd.env_remove("NO_COLOR").env("TERM", "xterm");
    if no_color {
        cmd.env("NO_COLOR", "1");
    }
    cmd.args(args)
        .stdout(Stdio::from(pty.slave))
        .stderr(Stdio::null());
    let child = cmd.spawn().expect("spawn firma");
    drop(cmd);
    let mut guard = ChildGuard::new(child);
    wait_for("firma to finish", Duration::from_secs(60), || {
        guard.child_mut().try_wait().unwrap()
    });
    guard.take().wait().unwrap();
    let mut master = File::from(pty.master);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // Reading the master ends with EIO once the terminal's last writer is gone.
    while let Ok(n) = master.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn colour_on_a_terminal_unless_no_color() {
    let world = World::new();
    fixture(&world);
    let args = ["monitor", "--no-follow", "--source", "audit"];
    let coloured = run_on_a_terminal(&world, &args, false);
    assert!(
        coloured.contains("DENY") && coloured.contains('\x1b'),
        "{coloured:?}"
    );
    let plain = run_on_a_terminal(&world, &args, true);
    assert!(
        plain.contains("DENY") && !plain.contains('\x1b'),
        "{plain:?}"
    );
    let never = run_on_a_terminal(
        &world,
        &[
            "--color",
            "never",
            "monitor",
            "--no-follow",
            "--source",
            "audit",
        ],
        false,
    );
    assert!(
        never.contains("DENY") && !never.contains('\x1b'),
        "{never:?}"
    );
}
