//! `firma run`: implicit scaffold, daemon autostart, a capability, proxy/CA variables, exit
//! status, stdout left to the command — exercised with curl and Python `requests` against a real
//! local upstream. Also the hostile local machine: state dirs and files planted by another uid.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::stack::DaemonGuard;
use common::upstream::FileUpstream;
use common::{World, assert_success, run_with_timeout, stderr, stdout};

/// A uid no test process runs as.
const OTHER_UID: u32 = 65534;

#[test]
fn curl_and_python_through_the_sidecar_allowed_and_denied() {
    let world = World::new();
    world.init(&[]);
    world.forbid_admin();
    let upstream = FileUpstream::serving(&world);
    let _daemon = DaemonGuard(&world);

    let hello = upstream.url("/hello.txt");
    let admin = upstream.url("/admin/secret.txt");
    let curl = |url: &str| {
        world.run(&[
            "run",
            "codex",
            "--",
            "curl",
            "-sS",
            "-w",
            "\n%{http_code}",
            url,
        ])
    };
    let out = curl(&hello);
    assert_success(&out);
    assert!(
        stderr(&out).contains("daemon not running: starting it"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "hello from upstream\n\n200");

    let out = curl(&admin);
    assert_success(&out);
    assert!(
        !stderr(&out).contains("starting it"),
        "the running daemon is reused: {}",
        stderr(&out)
    );
    let text = stdout(&out);
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

    let records = world.audit_records();
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

/// Issue #15: stdout belongs to the command; firma's own lines go to stderr (none with -q).
#[test]
fn stdout_is_exactly_the_commands_output() {
    let world = World::new();
    world.init(&[]);
    let _daemon = DaemonGuard(&world);
    let out = world.run(&["run", "codex", "--", "printf", "hi"]);
    assert_success(&out);
    assert_eq!(stdout(&out), "hi");
    assert!(
        stderr(&out).contains("info: capability"),
        "{}",
        stderr(&out)
    );

    let out = world.run(&["run", "codex", "--quiet", "--", "printf", "hi"]);
    assert_success(&out);
    assert_eq!(stdout(&out), "hi");
    assert_eq!(stderr(&out), "", "--quiet leaves only warnings and errors");
}

#[test]
fn environment_exit_status_and_missing_command() {
    let world = World::new();
    world.init(&[]);
    let _daemon = DaemonGuard(&world);
    let out = run_with_timeout(
        world
            .cmd()
            .args(["run", "codex", "--", "sh", "-c", "env | sort; exit 7"])
            .env("NO_PROXY", "127.0.0.1,example.com")
            .env("no_proxy", "*"),
        Duration::from_secs(60),
    );
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
        let line = env
            .lines()
            .find(|l| l.starts_with(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in {env}"));
        // http://firma:<32 hex>@127.0.0.1:<port>: the relay's per-run proxy credentials.
        let url = line.split_once('=').unwrap().1;
        let (userinfo, host) = url
            .strip_prefix("http://firma:")
            .and_then(|rest| rest.split_once('@'))
            .unwrap_or_else(|| panic!("{line}"));
        assert_eq!(userinfo.len(), 32, "{line}");
        assert!(host.starts_with("127.0.0.1:"), "{line}");
    }
    for cleared in ["NO_PROXY=", "no_proxy="] {
        assert!(!env.lines().any(|l| l.starts_with(cleared)), "{env}");
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

    for sandbox in ["auto", "off"] {
        let out = world.run(&[
            "run",
            "codex",
            "--sandbox",
            sandbox,
            "--",
            "definitely-not-a-command-xyz",
        ]);
        assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("definitely-not-a-command-xyz"),
            "{}",
            stderr(&out)
        );
    }

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
    assert!(
        stderr(&out).contains("no firma.toml found: scaffolding ./.firma for agent claude"),
        "{}",
        stderr(&out)
    );
    assert!(world.config_path().is_file());
    if out.status.success() {
        let out = world.run(&["run", "codex", "--", "true"]);
        assert_refused(&out, "denied a capability for agent \"codex\"");
    }
}

/// Exit 2 with `needle` in the error.
#[track_caller]
fn assert_refused(out: &std::process::Output, needle: &str) {
    assert_eq!(out.status.code(), Some(2), "{}", stderr(out));
    assert!(stderr(out).contains(needle), "{}", stderr(out));
}

fn chown(path: &std::path::Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap();
}

/// Item 3 of issue #14: a state dir another user created, or can write into, is refused.
#[test]
fn a_state_dir_planted_by_another_user_is_refused() {
    let world = World::new();
    world.init(&[]);
    let state = world.state_dir();
    chown(&state, OTHER_UID);
    for args in [
        &["run", "codex", "--", "true"][..],
        &["sidecar", "start", "--detach"],
        &["sidecar", "status"],
        &["sidecar", "stop"],
    ] {
        let out = world.run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        let text = stderr(&out);
        assert!(
            text.contains(&format!("it is owned by uid {OTHER_UID}, not by you")),
            "{args:?}: {text}"
        );
        assert!(text.contains("hint:"), "{text}");
    }
    chown(&state, 0);
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = world.run(&["run", "codex", "--", "true"]);
    assert_refused(&out, "writable by group or others (mode 777)");
    assert!(
        !world.state_dir().join("sidecar.pid").exists(),
        "nothing started"
    );
}

/// A planted listen file would redirect `firma run`'s traffic and token: a symlink, or a file
/// another uid owns, is refused before anything is read from it.
#[test]
fn planted_listen_and_pid_files_are_refused() {
    let world = World::new();
    world.init(&[]);
    let state = world.state_dir();
    let elsewhere = world.path().join("attacker.listen");
    std::fs::write(&elsewhere, "127.0.0.1:1\n").unwrap();

    let listen = state.join("sidecar.listen");
    std::os::unix::fs::symlink(&elsewhere, &listen).unwrap();
    let out = world.run(&["run", "codex", "--", "true"]);
    assert_refused(&out, "sidecar.listen: it is a symbolic link");
    std::fs::remove_file(&listen).unwrap();

    let pid = state.join("stack.pid");
    std::fs::write(&pid, "1\n").unwrap();
    chown(&pid, OTHER_UID);
    for args in [&["run", "codex", "--", "true"][..], &["sidecar", "stop"]] {
        let out = world.run(args);
        assert_refused(&out, &format!("stack.pid: it is owned by uid {OTHER_UID}"));
    }
}

/// The data dir (revocations) is checked the same way when firma creates files in it.
#[test]
fn a_data_dir_planted_by_another_user_is_refused() {
    let world = World::new();
    let data = world.data_dir();
    std::fs::create_dir_all(&data).unwrap();
    chown(&data, OTHER_UID);
    let out = world.run(&["init", "--yes", "--agent", "codex"]);
    assert_refused(&out, &format!("owned by uid {OTHER_UID}"));
}

/// A symlink planted where the Sidecar appends its audit log (or a daemon log) is not followed:
/// the start fails instead of writing records into the file it points at.
#[test]
fn a_symlink_planted_at_the_audit_log_is_not_followed() {
    let world = World::new();
    world.init(&[]);
    let victim = world.path().join("victim");
    std::fs::write(&victim, "untouched\n").unwrap();
    let audit = firma::state_dir::StateDir::new(world.state_dir()).audit_log();
    let _ = std::fs::remove_file(&audit);
    std::os::unix::fs::symlink(&victim, &audit).unwrap();
    let out = world.run(&["sidecar", "start", "--detach"]);
    let _ = world.run(&["sidecar", "stop"]);
    assert_refused(&out, "cannot open audit log");
    assert!(stderr(&out).contains("symbolic links"), "{}", stderr(&out));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched\n");
}
