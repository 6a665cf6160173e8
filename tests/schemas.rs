//! Every JSON document firma prints validates against its JSON Schema in `docs/schemas/`, checked
//! with python `jsonschema` on REAL outputs of the built binary: quiet worlds, a remote-Authority
//! project, a running pair with calls through the Sidecar, a tampered log, a crashed Sidecar,
//! monitor lines of every kind, and a publication to a real one-member etcd.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{World, assert_success, repo, stdout, wait_for};
use firma::cli::json::Document;

const LONG: Duration = Duration::from_secs(60);

/// Real outputs, filed per document: `<dir>/<name>/<case>.json` (one document per file).
struct Samples {
    dir: tempfile::TempDir,
    count: BTreeMap<&'static str, usize>,
}

impl Samples {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            count: BTreeMap::new(),
        }
    }

    fn add(&mut self, document: Document, case: &str, text: &str) {
        let dir = self.dir.path().join(document.name());
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{case}.json")), text).unwrap();
        *self.count.entry(document.name()).or_default() += 1;
    }

    /// `firma <args>`'s stdout as one document; `codes` are the exit codes it may have.
    fn add_output(&mut self, document: Document, case: &str, out: &Output, codes: &[i32]) {
        let code = out.status.code().unwrap_or(-1);
        assert!(
            codes.contains(&code),
            "{case}: exit {code}\nstdout:\n{}\nstderr:\n{}",
            stdout(out),
            common::stderr(out)
        );
        self.add(document, case, &stdout(out));
    }

    /// Each line of a `monitor --format json` run as its own document.
    fn add_lines(&mut self, document: Document, case: &str, out: &Output) {
        assert_success(out);
        let text = stdout(out);
        assert!(!text.is_empty(), "{case}: no output");
        for (n, line) in text.lines().enumerate() {
            self.add(document, &format!("{case}-{n}"), line);
        }
    }
}

/// Validates every sample against `docs/schemas/<name>.v<N>.schema.json` (format checks on), and
/// proves each schema can fail: the sample with another `schema` number must be rejected.
const VALIDATE: &str = r#"
import json, pathlib, sys
import jsonschema
samples, schemas = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
failures, checked = [], 0
for doc_dir in sorted(p for p in samples.iterdir() if p.is_dir()):
    name, version = doc_dir.name.rsplit("@", 1)
    schema = json.loads((schemas / f"{name}.v{version}.schema.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    for sample in sorted(doc_dir.iterdir()):
        doc = json.loads(sample.read_text())
        checked += 1
        for err in validator.iter_errors(doc):
            failures.append(f"{name}/{sample.name}: {'/'.join(map(str, err.absolute_path))}: {err.message}")
        if doc.get("schema") != int(version):
            failures.append(f"{name}/{sample.name}: schema is {doc.get('schema')!r}, not {version}")
        wrong = dict(doc, schema=int(version) + 1)
        if validator.is_valid(wrong):
            failures.append(f"{name}/{sample.name}: a wrong schema number still validates")
print(f"{checked} documents checked")
if failures:
    print("\n".join(failures))
    sys.exit(1)
"#;

fn validate(samples: &Samples) {
    // The python side reads `<name>@<version>` directories.
    for document in Document::ALL {
        let from = samples.dir.path().join(document.name());
        if from.exists() {
            let to = samples
                .dir
                .path()
                .join(format!("{}@{}", document.name(), document.schema()));
            std::fs::rename(from, to).unwrap();
        }
    }
    let out = Command::new("python3")
        .args(["-c", VALIDATE])
        .arg(samples.dir.path())
        .arg(repo("docs/schemas"))
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "schema validation failed:\n{}{}",
        stdout(&out),
        common::stderr(&out)
    );
}

/// A world whose pair is stopped (and any leftover killed) when dropped, also on failure.
struct Running {
    world: World,
}

impl Running {
    fn start() -> Self {
        let world = World::new();
        world.init(&[]);
        let running = Self { world };
        assert_success(&running.world.run(&["sidecar", "start", "--detach"]));
        running
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.world.state_dir().join(name))
            .unwrap_or_else(|err| panic!("{name}: {err}"))
    }

    /// A call through the Sidecar without a token: denied and audited, no upstream touched.
    fn denied_call(&self) {
        let proxy = format!("http://{}", self.read("sidecar.listen").trim());
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "30",
            ])
            .args(["--proxy", &proxy, "http://api.anthropic.com/v1/messages"])
            .env_remove("http_proxy")
            .env_remove("NO_PROXY")
            .env_remove("no_proxy")
            .stdin(Stdio::null())
            .output()
            .expect("curl");
        assert_eq!(stdout(&out), "403", "{}", common::stderr(&out));
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.world.stop_daemons();
    }
}

fn quiet_world(samples: &mut Samples) {
    let world = World::new();
    world.init(&[]);
    let out = world.run(&["config", "check", "--json"]);
    samples.add_output(Document::ConfigCheck, "local", &out, &[0]);
    let out = world.run(&["doctor", "--json"]);
    samples.add_output(Document::Doctor, "quiet", &out, &[0, 1]);
    let out = world.run(&["sidecar", "status", "--json"]);
    samples.add_output(Document::SidecarStatus, "stopped", &out, &[1]);

    let remote = World::new();
    remote.init(&["--authority", "https://authority.example:50051"]);
    let out = remote.run(&["config", "check", "--json"]);
    samples.add_output(Document::ConfigCheck, "remote", &out, &[0]);
    let empty = World::new();
    let out = empty.run(&["doctor", "--json"]);
    samples.add_output(Document::Doctor, "no-project", &out, &[0, 1]);
}

fn running_pair(samples: &mut Samples) {
    let running = Running::start();
    let world = &running.world;
    let out = world.run(&["sidecar", "status", "--json"]);
    samples.add_output(Document::SidecarStatus, "running", &out, &[0]);
    let out = world.run(&[
        "token",
        "issue",
        "--agent",
        "codex",
        "--action",
        "communication.external.send",
        "--scope",
        "api.anthropic.com",
        "--json",
    ]);
    samples.add_output(Document::TokenIssue, "granted", &out, &[0]);
    let issued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let token = issued["token"].as_str().unwrap();
    let out = world.run(&["token", "inspect", token, "--json"]);
    samples.add_output(Document::TokenInspect, "usable", &out, &[0]);
    assert_success(&world.run(&["token", "revoke", issued["token_id"].as_str().unwrap()]));
    let out = world.run(&["token", "inspect", token, "--json"]);
    samples.add_output(Document::TokenInspect, "revoked", &out, &[1]);
    for _ in 0..3 {
        running.denied_call();
    }
    let out = world.run(&["audit", "verify", "--json"]);
    samples.add_output(Document::AuditVerify, "clean", &out, &[0]);
    let out = world.run(&["audit", "verify", "--witness", "--json"]);
    samples.add_output(Document::AuditVerify, "witnessed", &out, &[0]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(json["witness"].is_object(), "{json}");
    let out = world.run(&["doctor", "--json"]);
    samples.add_output(Document::Doctor, "running", &out, &[0, 1]);
    let out = world.run(&["fleet", "status", "--json"]);
    samples.add_output(Document::FleetStatus, "files", &out, &[0]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["sidecars"].as_array().map(Vec::len), Some(1), "{json}");
    let out = world.run(&[
        "monitor",
        "--no-follow",
        "--since",
        "1h",
        "--format",
        "json",
    ]);
    samples.add_lines(Document::MonitorRecord, "running", &out);

    // A tampered copy: its first line deleted.
    let log = running.read("audit.jsonl");
    let copy = world.path().join("tampered.jsonl");
    std::fs::write(&copy, log.split_inclusive('\n').skip(1).collect::<String>()).unwrap();
    let key = world.project_dir().join("audit.pub");
    let out = world.run(&[
        "audit",
        "verify",
        "--json",
        "--no-checkpoint",
        "--file",
        copy.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    samples.add_output(Document::AuditVerify, "tampered", &out, &[1]);

    // An operator's rotation (after the copy above: the live file restarts with a marker).
    let out = world.run(&["audit", "rotate", "--json"]);
    samples.add_output(Document::AuditRotate, "rotated", &out, &[0]);

    // A crashed Sidecar: status reports how it ended.
    let pid: i32 = running.read("sidecar.pid").trim().parse().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the supervisor to tear the pair down", LONG, || {
        (!world.state_dir().join("stack.lock").exists()).then_some(())
    });
    let out = world.run(&["sidecar", "status", "--json"]);
    samples.add_output(Document::SidecarStatus, "crashed", &out, &[1]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        json["components"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["last_exit"].is_object()),
        "the crash case covers last_exit: {json}"
    );
}

/// Monitor lines of the kinds a healthy stack does not write: raw, malformed, not UTF-8.
fn odd_monitor_lines(samples: &mut Samples) {
    let world = World::new();
    let state = world.state_dir();
    std::fs::write(state.join("audit.jsonl"), "[1,2]\n").unwrap();
    let mut log = b"thread 'main' panicked at src/main.rs:1:1:\n".to_vec();
    log.extend_from_slice(b"bytes \xff\xfe not utf-8\n");
    log.extend_from_slice(
        b"{\"timestamp\":\"2026-01-01T00:00:00Z\",\"level\":\"INFO\",\"target\":\"firma\",\"message\":\"ready\"}\n",
    );
    std::fs::write(state.join("sidecar.log"), log).unwrap();
    let out = world.run(&["monitor", "--no-follow", "--format", "json"]);
    samples.add_lines(Document::MonitorRecord, "odd", &out);
    let text = stdout(&out);
    for kind in [
        "\"kind\":\"raw\"",
        "\"kind\":\"malformed\"",
        "\"line_b64\"",
        "\"kind\":\"log\"",
    ] {
        assert!(text.contains(kind), "missing {kind} in\n{text}");
    }
}

/// `firma authority publish --json`: an Authority on a real one-member etcd (the only store
/// that takes publications).
fn published(samples: &mut Samples) {
    let scratch = tempfile::tempdir().unwrap();
    let etcd = common::etcd::EtcdCluster::start(scratch.path(), 1);
    let world = World::new();
    world.init(&[]);
    let mut config = std::fs::read_to_string(world.config_path()).unwrap();
    config.push_str(&format!(
        "\n[authority.store]\nbackend = \"etcd\"\nendpoints = {}\n",
        etcd.toml_endpoints()
    ));
    std::fs::write(world.config_path(), config).unwrap();
    let _authority = common::authority::Daemon::spawn(&world, &["authority"]);
    // Seeded from the policy directories at start: unchanged; after an edit: a new revision.
    let out = world.run(&["authority", "publish", "--json"]);
    samples.add_output(Document::AuthorityPublish, "unchanged", &out, &[0]);
    std::fs::write(
        world.project_dir().join("policies/forbid-admin.cedar"),
        "forbid (principal, action, resource)\nwhen { context has path && context.path like \"/admin*\" };\n",
    )
    .unwrap();
    let out = world.run(&["authority", "publish", "--json"]);
    samples.add_output(Document::AuthorityPublish, "changed", &out, &[0]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["changed"], true, "{json}");
}

#[test]
fn every_json_output_validates_against_its_schema() {
    let mut samples = Samples::new();
    quiet_world(&mut samples);
    odd_monitor_lines(&mut samples);
    running_pair(&mut samples);
    published(&mut samples);
    // Every document firma prints was produced at least once above.
    for document in Document::ALL {
        assert!(
            samples.count.contains_key(document.name()),
            "no sample of {} (add a case to this test)",
            document.name()
        );
    }
    validate(&samples);
}

#[test]
fn every_document_has_its_schema_file_and_no_file_is_orphaned() {
    let mut expected: Vec<String> = Document::ALL.iter().map(|d| d.schema_file()).collect();
    expected.sort();
    let mut found: Vec<String> = std::fs::read_dir(repo("docs/schemas"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".schema.json"))
        .map(|n| format!("docs/schemas/{n}"))
        .collect();
    found.sort();
    // Older versions stay for consumers of older releases; each must name a document.
    for file in &found {
        assert!(
            Document::ALL
                .iter()
                .any(|d| file.starts_with(&format!("docs/schemas/{}.v", d.name()))),
            "{file} belongs to no document"
        );
    }
    for file in &expected {
        assert!(found.contains(file), "missing {file}");
        // The file says which version it describes.
        let text = std::fs::read_to_string(repo(file)).unwrap();
        let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
        let document = Document::ALL
            .iter()
            .find(|d| &d.schema_file() == file)
            .unwrap();
        assert_eq!(
            schema["properties"]["schema"]["const"],
            document.schema(),
            "{file}"
        );
    }
}

#[test]
fn monitor_json_lines_carry_the_registry_version() {
    // The formatter writes its lines byte by byte; its number is the one the registry serves.
    let world = World::new();
    std::fs::write(world.state_dir().join("sidecar.log"), "plain line\n").unwrap();
    let out = world.run(&["monitor", "--no-follow", "--format", "json"]);
    assert_success(&out);
    let line: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().next().unwrap()).unwrap();
    assert_eq!(line["schema"], Document::MonitorRecord.schema());
}
