//! `firma run`: implicit scaffold, daemon autostart, a capability, proxy/CA variables, exit
//! status — exercised with curl and Python `requests` against a real local upstream.

mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{ChildGuard, World, assert_success, stderr, stdout};

/// Stops the daemon a test started, also when the test fails.
struct DaemonGuard<'a>(&'a World);

impl Drop for DaemonGuard<'_> {
    fn drop(&mut self) {
        let out = self.0.run(&["sidecar", "stop"]);
        assert!(
            out.status.success() || std::thread::panicking(),
            "stop failed: {}",
            stderr(&out)
        );
    }
}

/// `python3 -m http.server` serving `dir` on a free loopback port.
fn upstream(dir: &Path) -> (ChildGuard, u16) {
    std::fs::create_dir_all(dir.join("admin")).unwrap();
    std::fs::write(dir.join("hello.txt"), "hello from upstream\n").unwrap();
    std::fs::write(dir.join("admin/secret.txt"), "secret\n").unwrap();
    let mut child = Command::new("python3")
        .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 http.server");
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
    let port = first
        .split_whitespace()
        .nth(5)
        .and_then(|p| p.parse().ok())
        .expect(&first);
    (ChildGuard::new(child), port)
}

fn forbid_admin(world: &World) {
    std::fs::write(
        world.project_dir().join("policies/forbid-admin.cedar"),
        "@id(\"no-admin\")\nforbid (principal, action, resource)\nwhen { context has path && context.path like \"/admin*\" };\n",
    )
    .unwrap();
}

/// The scaffold reaches no local service: map the upstream's port.
fn allow_local_port(world: &World, port: u16) {
    let rules = world.project_dir().join("mapping-rules.toml");
    let mut text = std::fs::read_to_string(&rules).unwrap();
    text.push_str(&format!(
        "\n[[rules]]\nhost = \"127.0.0.1\"\nports = [{port}]\naction_class = \"communication.internal.send\"\n"
    ));
    std::fs::write(rules, text).unwrap();
}

fn audit_lines(world: &World) -> Vec<serde_json::Value> {
    std::fs::read_to_string(world.state_dir().join("audit.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[test]
fn curl_and_python_through_the_sidecar_allowed_and_denied() {
    let world = World::new();
    world.init(&[]);
    forbid_admin(&world);
    let (_upstream, port) = upstream(&world.path().join("www"));
    allow_local_port(&world, port);
    let _daemon = DaemonGuard(&world);

    let hello = format!("http://127.0.0.1:{port}/hello.txt");
    let admin = format!("http://127.0.0.1:{port}/admin/secret.txt");
    let out = world.run(&[
        "run",
        "codex",
        "--",
        "curl",
        "-sS",
        "-w",
        "\n%{http_code}",
        &hello,
    ]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("daemon not running: starting it"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).ends_with("hello from upstream\n\n200"),
        "{}",
        stdout(&out)
    );

    let out = world.run(&[
        "run",
        "codex",
        "--",
        "curl",
        "-sS",
        "-w",
        "\n%{http_code}",
        &admin,
    ]);
    assert_success(&out);
    let text = stdout(&out);
    assert!(
        !text.contains("starting it"),
        "the running daemon is reused: {text}"
    );
    assert!(text.ends_with("\n403"), "{text}");
    assert!(
        text.contains("\"denied\":true") && text.contains("no-admin"),
        "{text}"
    );

    let script = "import sys, requests\nfor url in sys.argv[1:]:\n    r = requests.get(url, timeout=10)\n    print(r.status_code, r.text.strip())\n";
    let out = world.run(&[
        "run", "codex", "--", "python3", "-c", script, &hello, &admin,
    ]);
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.contains("200 hello from upstream"), "{text}");
    assert!(text.contains("403 {\"denied\":true"), "{text}");

    let records = audit_lines(&world);
    let decided = |decision: &str, path: &str| {
        records
            .iter()
            .filter(|r| r["decision"] == decision && r["intent"]["path"] == path)
            .count()
    };
    assert_eq!(decided("allow", "/hello.txt"), 2, "{records:?}");
    assert_eq!(decided("deny", "/admin/secret.txt"), 2, "{records:?}");
    assert!(records.iter().all(|r| r["agent_id"] == "codex"));

    let verify = world.run(&["audit", "verify"]);
    assert_success(&verify);
}

#[test]
fn environment_exit_status_and_missing_command() {
    let world = World::new();
    world.init(&[]);
    let _daemon = DaemonGuard(&world);
    let out = world.run(&["run", "codex", "--", "sh", "-c", "env | sort; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    let env = stdout(&out);
    let ca_dir = world.state_dir().join("generated-firma-ca");
    for name in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        assert!(
            env.lines()
                .any(|l| l.starts_with(&format!("{name}=http://127.0.0.1:"))),
            "{name} in {env}"
        );
    }
    let bundle = ca_dir.join("ca-bundle.pem").display().to_string();
    for name in ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"] {
        assert!(env.contains(&format!("{name}={bundle}")), "{name} in {env}");
    }
    assert!(env.contains(&format!(
        "NODE_EXTRA_CA_CERTS={}",
        ca_dir.join("firma-ca.crt").display()
    )));
    assert!(
        !env.contains("v4.public."),
        "the token must not be in the agent's environment"
    );
    let ca = std::fs::read_to_string(ca_dir.join("firma-ca.crt")).unwrap();
    assert!(std::fs::read_to_string(&bundle).unwrap().ends_with(&ca));

    let out = world.run(&["run", "codex", "--", "definitely-not-a-command-xyz"]);
    assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("definitely-not-a-command-xyz"),
        "{}",
        stderr(&out)
    );

    let out = world.run(&["run", "generic"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        stderr(&out).contains("firma run generic -- "),
        "{}",
        stderr(&out)
    );
}

#[test]
fn without_a_project_run_scaffolds_one_and_a_foreign_agent_is_denied() {
    let world = World::new();
    let _daemon = DaemonGuard(&world);
    // The implicit scaffold uses the default ports (50051, 8080). When another process holds
    // them the daemon cannot start; the scaffold itself is still checked.
    let out = world.run(&["run", "claude", "--", "true"]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("no firma.toml found: scaffolding ./.firma for agent claude"),
        "{text}"
    );
    assert!(world.config_path().is_file());
    if out.status.success() {
        let out = world.run(&["run", "codex", "--", "true"]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("denied a capability for agent \"codex\""),
            "{}",
            stderr(&out)
        );
    }
}
