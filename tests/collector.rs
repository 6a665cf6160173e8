//! The log-collector recipe of docs/log-collectors.md, run for real: `firma monitor --format
//! json` appends to a file, syslog-ng follows that file, parses each line as JSON and stores the
//! fields. Asserts the stored records carry seq, decision, action class and agent intact, and
//! that a graceful restart of the collector loses and duplicates nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::audit::{Vary, draft, write_records};
use common::{ChildGuard, FIRMA, World, wait_for};
use serde_json::Value;

/// Records whose agent and action class vary, so the stored fields can be told apart.
fn append_records(log: &Path, key: &ed25519_dalek::SigningKey, range: std::ops::Range<u64>) {
    write_records(
        log,
        key,
        range.map(|i| {
            draft(i)
                .agent(format!("agent-{}", i % 2))
                .action_class(if i.is_multiple_of(2) {
                    "communication.external.send"
                } else {
                    "network.http.read"
                })
        }),
    );
}

fn line_count(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

/// The config of docs/log-collectors.md with this world's paths.
fn syslog_ng_config(input: &Path, store: &Path) -> String {
    let recipe = include_str!("../docs/log-collectors/firma-monitor.conf");
    recipe
        .replace("/var/log/firma/monitor.jsonl", &input.display().to_string())
        .replace(
            "/var/log/firma/audit-store.jsonl",
            &store.display().to_string(),
        )
}

struct SyslogNg {
    child: ChildGuard,
}

impl SyslogNg {
    fn start(dir: &Path, config: &Path) -> Self {
        let mut cmd = Command::new("syslog-ng");
        cmd.args(["-F", "--no-caps", "-f"])
            .arg(config)
            .arg("-R")
            .arg(dir.join("syslog-ng.persist"))
            .arg("-p")
            .arg(dir.join("syslog-ng.pid"))
            .arg("-c")
            .arg(dir.join("syslog-ng.ctl"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("syslog-ng.stderr")).unwrap(),
            ));
        let child = cmd
            .spawn()
            .expect("syslog-ng is installed (.ci/run installs syslog-ng-core)");
        Self {
            child: ChildGuard::new(child),
        }
    }

    /// SIGTERM and wait: syslog-ng saves its read position in the persist file.
    fn stop_gracefully(mut self) {
        use nix::sys::signal::{Signal, kill};
        use nix::unistd::Pid;
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).unwrap();
        let mut child = self.child.take();
        let status = child.wait().unwrap();
        assert!(status.success(), "syslog-ng exited {status}");
    }
}

fn stored(store: &Path) -> Vec<Value> {
    std::fs::read_to_string(store)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn syslog_ng_stores_monitor_json_intact_across_a_restart() {
    let world = World::new();
    let dir: PathBuf = world.path().join("collector");
    std::fs::create_dir_all(&dir).unwrap();
    let log = world.state_dir().join("audit.jsonl");
    let key = firma::config::keys::generate();
    append_records(&log, &key, 0..20);

    // 1. The monitor, as its own long-running service, appends JSON lines to a file.
    let monitor_out = dir.join("monitor.jsonl");
    let monitor = Command::new(FIRMA)
        .args([
            "monitor", "--source", "audit", "--format", "json", "--since", "1h",
        ])
        .env("FIRMA_STATE_DIR", world.state_dir())
        .env("HOME", world.home())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&monitor_out).unwrap()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _monitor = ChildGuard::new(monitor);
    wait_for("the monitor's backfill", Duration::from_secs(20), || {
        (line_count(&monitor_out) == 20).then_some(())
    });

    // 2. syslog-ng follows that file and stores parsed fields.
    let store = dir.join("audit-store.jsonl");
    let config = dir.join("syslog-ng.conf");
    std::fs::write(&config, syslog_ng_config(&monitor_out, &store)).unwrap();
    let collector = SyslogNg::start(&dir, &config);
    wait_for("20 stored records", Duration::from_secs(30), || {
        (line_count(&store) == 20).then_some(())
    });

    // 3. Collector down while the Sidecar keeps deciding: the monitor keeps writing.
    collector.stop_gracefully();
    append_records(&log, &key, 20..30);
    wait_for(
        "the monitor to follow 10 more",
        Duration::from_secs(20),
        || (line_count(&monitor_out) == 30).then_some(()),
    );
    assert_eq!(
        line_count(&store),
        20,
        "nothing stored while the collector is down"
    );

    // 4. Back up: it resumes from its saved position — nothing lost, nothing twice.
    let _collector = SyslogNg::start(&dir, &config);
    wait_for("30 stored records", Duration::from_secs(30), || {
        (line_count(&store) >= 30).then_some(())
    });
    std::thread::sleep(Duration::from_millis(300));
    let records = stored(&store);
    let seqs: Vec<u64> = records.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=30).collect::<Vec<_>>(),
        "each record exactly once, in order"
    );

    // The stored fields are the audit log's, exactly.
    let originals: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (stored, original) in records.iter().zip(&originals) {
        assert_eq!(stored["seq"], original["seq"]);
        assert_eq!(stored["decision"], original["decision"]);
        assert_eq!(stored["action_class"], original["intent"]["action_class"]);
        assert_eq!(stored["agent_id"], original["agent_id"]);
        // The whole event rides along unchanged.
        let line: Value = serde_json::from_str(stored["line"].as_str().unwrap()).unwrap();
        assert_eq!(&line["event"], original);
    }
}
