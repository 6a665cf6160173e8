//! The escape suite (issue #14): every way out a hostile agent would try, under `firma run` with
//! the default sandbox, must fail — and a call through the proxy variables must still work and
//! be recorded with the run's `sandbox_id`. Each attempt prints `<name>=reached` or
//! `<name>=blocked`; the test asserts the verdict and that nothing reached the upstream.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::stack::DaemonGuard;
use common::upstream::FileUpstream;
use common::{ChildGuard, World, assert_success, stderr, stdout, wait_for};

/// A uid no test process runs as.
const OTHER_UID: &str = "65534";

/// `firma run codex [flags] -- sh -c <script>`.
fn run_script(world: &World, flags: &[&str], script: &str) -> Output {
    let mut args = vec!["run", "codex"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    world.run(&args)
}

/// A shell line running `cmd` and printing `<name>=reached` when it succeeds.
fn attempt(name: &str, cmd: &str) -> String {
    format!(
        "if {{ {cmd}; }} >/dev/null 2>&1; then echo {name}=reached; else echo {name}=blocked; fi\n"
    )
}

/// Every attempt in `names` printed `<name>=<verdict>`.
#[track_caller]
fn assert_verdict(out: &Output, verdict: &str, names: &[&str]) {
    let text = stdout(out);
    for name in names {
        assert!(
            text.lines().any(|l| l == format!("{name}={verdict}")),
            "{name} must be {verdict}:\n{text}\nstderr:\n{}",
            stderr(out)
        );
    }
}

#[track_caller]
fn assert_blocked(out: &Output, names: &[&str]) {
    assert_verdict(out, "blocked", names);
}

#[track_caller]
fn assert_reached(out: &Output, names: &[&str]) {
    assert_verdict(out, "reached", names);
}

/// No audit record names a path starting with `prefix`: the call never reached the Sidecar.
#[track_caller]
fn assert_no_record_under(world: &World, prefix: &str) {
    let records = world.audit_records();
    let recorded = |r: &serde_json::Value| {
        r["intent"]["path"]
            .as_str()
            .is_some_and(|p| p.starts_with(prefix))
    };
    assert!(!records.iter().any(recorded), "{records:?}");
}

/// The id from `info: sandbox <id>: …`, which also says that every facility was obtained.
#[track_caller]
fn sandbox_id(out: &Output) -> String {
    let text = stderr(out);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("info: sandbox "))
        .unwrap_or_else(|| panic!("no sandbox line in:\n{text}"));
    assert!(
        line.contains("user, network and mount namespaces, Landlock ABI"),
        "{line}"
    );
    line.split(':').next().unwrap().to_string()
}

/// Start the daemon (through a first run) and return the ports it published.
fn started(world: &World) -> (String, String) {
    assert_success(&world.run(&["run", "codex", "--", "true"]));
    let read = |name: &str| {
        let text = std::fs::read_to_string(world.state_dir().join(name)).unwrap();
        text.trim().rsplit(':').next().unwrap().to_string()
    };
    (read("authority.listen"), read("sidecar.listen"))
}

#[test]
fn direct_network_access_fails_and_the_upstream_is_untouched() {
    let world = World::new();
    world.init(&[]);
    let upstream = FileUpstream::serving(&world);
    let _daemon = DaemonGuard(&world);
    let (authority, sidecar) = started(&world);

    let curl = upstream.url("/direct-curl");
    let python = upstream.url("/direct-python");
    let script = format!(
        "{}unset HTTP_PROXY HTTPS_PROXY ALL_PROXY http_proxy https_proxy all_proxy\n{}{}{}{}{}",
        attempt(
            "curl",
            &format!("curl -sS --max-time 5 --noproxy '*' {curl}")
        ),
        attempt(
            "urllib",
            &format!(
                "python3 -c 'import urllib.request; urllib.request.urlopen(\"{python}\", timeout=5)'"
            ),
        ),
        attempt(
            "authority",
            &format!(
                "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {authority}), timeout=5)'"
            ),
        ),
        attempt(
            "sidecar",
            &format!(
                "python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {sidecar}), timeout=5)'"
            ),
        ),
        attempt(
            "dns",
            "python3 -c 'import socket; socket.getaddrinfo(\"example.com\", 443)'",
        ),
        attempt(
            "udp",
            "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b\"x\", (\"192.0.2.1\", 53))'",
        ),
    );
    let out = run_script(&world, &[], &script);
    assert_success(&out);
    sandbox_id(&out);
    assert_blocked(
        &out,
        &["curl", "urllib", "authority", "sidecar", "dns", "udp"],
    );
    assert!(!upstream.saw("/direct-curl") && !upstream.saw("/direct-python"));
    assert_no_record_under(&world, "/direct");
}

#[test]
fn calls_through_the_relay_work_and_carry_the_sandbox_id() {
    let world = World::new();
    world.init(&[]);
    world.forbid_admin();
    let upstream = FileUpstream::serving(&world);
    let _daemon = DaemonGuard(&world);
    let script = format!(
        "curl -sS -o /dev/null -w '%{{http_code}}\\n' {}; curl -sS -o /dev/null -w '%{{http_code}}\\n' {}",
        upstream.url("/hello.txt"),
        upstream.url("/admin/secret.txt")
    );
    let out = run_script(&world, &[], &script);
    assert_success(&out);
    assert_eq!(stdout(&out), "200\n403\n");
    let id = sandbox_id(&out);

    let out = run_script(
        &world,
        &["--sandbox", "off"],
        &format!("curl -sS -o /dev/null {}", upstream.url("/hello.txt")),
    );
    assert_success(&out);
    assert!(!stderr(&out).contains("sandbox"), "{}", stderr(&out));

    let records = world.audit_records();
    let find = |decision: &str, path: &str| {
        records
            .iter()
            .find(|r| r["decision"] == decision && r["intent"]["path"] == path)
            .unwrap_or_else(|| panic!("no {decision} record for {path}: {records:?}"))
    };
    assert_eq!(find("allow", "/hello.txt")["sandbox_id"], id.as_str());
    assert_eq!(find("deny", "/admin/secret.txt")["sandbox_id"], id.as_str());
    let unsandboxed = records.last().unwrap();
    assert_eq!(unsandboxed["intent"]["path"], "/hello.txt");
    assert_ne!(
        unsandboxed["session_id"],
        find("allow", "/hello.txt")["session_id"]
    );
    assert!(
        unsandboxed.get("sandbox_id").is_none(),
        "an unsandboxed run's records carry no sandbox_id: {unsandboxed}"
    );
    assert_success(&world.run(&["audit", "verify"]));
}

#[test]
fn firmas_files_are_out_of_reach_and_the_ca_is_readable() {
    let world = World::new();
    world.init(&[]);
    let _daemon = DaemonGuard(&world);
    started(&world);
    let state = world.state_dir();
    let socket = state.join("authority.sock");
    // The Authority's operator socket; stand in for it when this build has none, so the attempt
    // below always meets a live socket.
    let _stand_in =
        (!socket.exists()).then(|| std::os::unix::net::UnixListener::bind(&socket).unwrap());
    std::os::unix::net::UnixStream::connect(&socket).expect("reachable from the host");
    let policies = world.project_dir().join("policies");
    let before: Vec<_> = std::fs::read_dir(&policies)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let bundle_before = std::fs::read(policies.join("default.cedar")).unwrap();
    let audit = state.join("audit.jsonl");
    let data = world.data_dir();
    let script = [
        attempt("authority_key", "grep -q PRIVATE .firma/authority.key"),
        attempt("audit_key", "grep -q PRIVATE .firma/audit.key"),
        attempt(
            "policy_write",
            "echo 'permit(principal, action, resource);' > .firma/policies/x.cedar",
        ),
        attempt(
            "policy_edit",
            "echo 'permit(principal, action, resource);' >> .firma/policies/default.cedar",
        ),
        attempt("audit_read", &format!("grep -q seq {}", audit.display())),
        attempt("audit_write", &format!("echo x >> {}", audit.display())),
        attempt(
            "revocations",
            &format!("test -e {}/revocations.txt", data.display()),
        ),
        attempt(
            "ca_key",
            &format!(
                "grep -q PRIVATE {}/generated-firma-ca/firma-ca.key",
                state.display()
            ),
        ),
        attempt(
            "authority_socket",
            &format!(
                "python3 -c 'import socket; socket.socket(socket.AF_UNIX).connect(\"{}\")'",
                socket.display()
            ),
        ),
        attempt(
            "ca_bundle",
            "grep -q 'BEGIN CERTIFICATE' \"$SSL_CERT_FILE\"",
        ),
        attempt(
            "ca_cert",
            "grep -q 'BEGIN CERTIFICATE' \"$NODE_EXTRA_CA_CERTS\"",
        ),
        attempt("ca_bundle_write", "echo x >> \"$SSL_CERT_FILE\""),
        // Uncover what the masks hide: the mounts are locked and Landlock forbids it.
        attempt("umount", "umount -l .firma || umount .firma"),
        attempt("key_after_umount", "grep -q PRIVATE .firma/authority.key"),
    ]
    .concat();
    let out = run_script(&world, &[], &script);
    assert_success(&out);
    sandbox_id(&out);
    assert_blocked(
        &out,
        &[
            "authority_key",
            "audit_key",
            "policy_write",
            "policy_edit",
            "audit_read",
            "audit_write",
            "revocations",
            "ca_key",
            "authority_socket",
            "ca_bundle_write",
            "umount",
            "key_after_umount",
        ],
    );
    assert_reached(&out, &["ca_bundle", "ca_cert"]);
    let after: Vec<_> = std::fs::read_dir(&policies)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(before, after, "no policy file appeared");
    assert_eq!(
        std::fs::read(policies.join("default.cedar")).unwrap(),
        bundle_before
    );
    assert!(
        data.join("revocations.txt").exists(),
        "the file exists on the host"
    );
    assert_success(&world.run(&["audit", "verify"]));
}

#[test]
fn home_secrets_are_hidden_and_only_the_workspace_tmp_and_agent_dirs_are_writable() {
    let world = World::new();
    world.init(&[]);
    let _daemon = DaemonGuard(&world);
    let home = world.home();
    for (path, content) in [
        (".ssh/id_ed25519", "PRIVATE KEY"),
        (".aws/credentials", "PRIVATE aws"),
        (".config/gcloud/credentials.db", "PRIVATE gcloud"),
        (".bashrc", "# shell"),
    ] {
        let path = home.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    std::fs::write(world.workspace().join(".env"), "PRIVATE=1\n").unwrap();
    let private_tmp = format!("/tmp/firma-sandbox-test-{}", std::process::id());
    let script = [
        attempt("ssh", "grep -q PRIVATE ~/.ssh/id_ed25519"),
        attempt("ssh_list", "ls ~/.ssh | grep -q id_"),
        attempt("aws", "grep -q PRIVATE ~/.aws/credentials"),
        attempt("gcloud", "grep -q PRIVATE ~/.config/gcloud/credentials.db"),
        attempt("dotenv", "grep -q PRIVATE .env"),
        attempt("dotenv_write", "echo PRIVATE=2 > .env"),
        attempt("bashrc", "echo evil >> ~/.bashrc"),
        attempt("etc", "touch /etc/firma-sandbox-test"),
        attempt("usr", "touch /usr/firma-sandbox-test"),
        attempt("workspace", "echo ok > out.txt"),
        attempt("tmp", &format!("echo ok > {private_tmp}")),
        attempt(
            "codex_dir",
            "mkdir -p ~/.codex/sessions && echo ok > ~/.codex/sessions/s1",
        ),
        attempt(
            "cache_dir",
            "mkdir -p ~/.cache/tool && echo ok > ~/.cache/tool/c",
        ),
    ]
    .concat();
    let out = run_script(&world, &[], &script);
    assert_success(&out);
    sandbox_id(&out);
    assert_blocked(
        &out,
        &[
            "ssh",
            "ssh_list",
            "aws",
            "gcloud",
            "dotenv",
            "dotenv_write",
            "bashrc",
            "etc",
            "usr",
        ],
    );
    assert_reached(&out, &["workspace", "tmp", "codex_dir", "cache_dir"]);
    assert_eq!(
        std::fs::read_to_string(home.join(".bashrc")).unwrap(),
        "# shell"
    );
    assert_eq!(
        std::fs::read_to_string(world.workspace().join(".env")).unwrap(),
        "PRIVATE=1\n"
    );
    assert_eq!(
        std::fs::read_to_string(world.workspace().join("out.txt")).unwrap(),
        "ok\n"
    );
    assert!(home.join(".codex/sessions/s1").is_file());
    assert!(
        !std::path::Path::new(&private_tmp).exists(),
        "the agent's /tmp is private"
    );
}

#[test]
fn run_section_configures_hidden_and_writable_paths() {
    let world = World::new();
    world.init(&[]);
    let _daemon = DaemonGuard(&world);
    let home = world.home();
    std::fs::create_dir_all(home.join("vault")).unwrap();
    std::fs::write(home.join("vault/token"), "PRIVATE").unwrap();
    std::fs::create_dir_all(home.join(".aws")).unwrap();
    std::fs::write(home.join(".aws/config"), "[default]").unwrap();
    std::fs::create_dir_all(home.join("scratch")).unwrap();
    let mut config = std::fs::read_to_string(world.config_path()).unwrap();
    config.push_str("\n[run]\nhide = [\"~/vault\"]\nwritable = [\"~/scratch\"]\n");
    std::fs::write(world.config_path(), config).unwrap();
    let script = [
        attempt("vault", "grep -q PRIVATE ~/vault/token"),
        attempt("aws_no_longer_default", "grep -q default ~/.aws/config"),
        attempt("scratch", "echo ok > ~/scratch/f"),
    ]
    .concat();
    let out = run_script(&world, &[], &script);
    assert_success(&out);
    assert_blocked(&out, &["vault"]);
    assert_reached(&out, &["aws_no_longer_default", "scratch"]);
}

#[test]
fn the_whole_process_tree_is_confined() {
    let world = World::new();
    world.init(&[]);
    let upstream = FileUpstream::serving(&world);
    let _daemon = DaemonGuard(&world);
    started(&world);
    let sidecar_pid = std::fs::read_to_string(world.state_dir().join("sidecar.pid")).unwrap();
    // A daemonised grandchild: a new session, reparented once its parent exits, outliving
    // `firma run` itself.
    let checks = [
        attempt("key", "grep -q PRIVATE .firma/authority.key"),
        attempt(
            "net",
            &format!(
                "curl -s --max-time 3 --noproxy '*' {}",
                upstream.url("/grandchild")
            ),
        ),
        attempt("home", "touch ~/.grandchild"),
        attempt("signal", &format!("kill -0 {}", sidecar_pid.trim())),
        attempt("workspace", "touch still-writable"),
    ]
    .concat();
    let inner =
        format!("sleep 0.5\n{{\n{checks}}} > grandchild.tmp; mv grandchild.tmp grandchild.txt\n");
    std::fs::write(world.workspace().join("grandchild.sh"), inner).unwrap();
    let out = run_script(
        &world,
        &[],
        "(setsid sh grandchild.sh </dev/null >/dev/null 2>&1 &); echo parent-done",
    );
    assert_success(&out);
    assert_eq!(stdout(&out), "parent-done\n");
    let report = wait_for("the grandchild's report", Duration::from_secs(30), || {
        std::fs::read_to_string(world.workspace().join("grandchild.txt")).ok()
    });
    for name in ["key", "net", "home", "signal"] {
        assert!(
            report.contains(&format!("{name}=blocked")),
            "{name}: {report}"
        );
    }
    assert!(report.contains("workspace=reached"), "{report}");
    assert!(!upstream.saw("/grandchild"));
}

/// Runs `firma run` with a script that publishes the relay's proxy URL and waits for `go`.
fn agent_waiting_for_go(world: &World, flags: &[&str]) -> (ChildGuard, String) {
    let script = "echo \"$HTTP_PROXY\" > proxy.tmp && mv proxy.tmp proxy.url\n\
                  i=0; while [ ! -e go ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done";
    let mut args = vec!["run", "codex"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    let child = world
        .cmd()
        .args(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let guard = ChildGuard::new(child);
    let url = wait_for("the agent's proxy URL", Duration::from_secs(30), || {
        std::fs::read_to_string(world.workspace().join("proxy.url")).ok()
    });
    (guard, url.trim().to_string())
}

/// `curl` as another uid through `proxy`; returns the HTTP status (`000`: no answer).
fn other_uid_curl(proxy: &str, url: &str) -> String {
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            OTHER_UID,
            "--regid",
            OTHER_UID,
            "--clear-groups",
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "-x",
            proxy,
            url,
        ])
        .output()
        .expect("setpriv");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn another_uid_cannot_use_the_relay() {
    let world = World::new();
    world.init(&[]);
    let upstream = FileUpstream::serving(&world);
    let _daemon = DaemonGuard(&world);
    started(&world);

    // Unsandboxed, the relay listens on the host's loopback: its credentials keep others out.
    let (mut agent, proxy) = agent_waiting_for_go(&world, &["--sandbox", "off"]);
    let port = proxy.rsplit(':').next().unwrap();
    let bare = format!("http://127.0.0.1:{port}");
    let wrong = format!("http://firma:0123456789abcdef0123456789abcdef@127.0.0.1:{port}");
    assert_eq!(
        other_uid_curl(&bare, &upstream.url("/other-uid-bare")),
        "407"
    );
    assert_eq!(
        other_uid_curl(&wrong, &upstream.url("/other-uid-wrong")),
        "407"
    );
    std::fs::write(world.workspace().join("go"), "").unwrap();
    let out = agent.take().wait_with_output().unwrap();
    assert_success(&out);
    assert!(
        stderr(&out).contains("warn: relay refused a request from 127.0.0.1:"),
        "refusals are logged: {}",
        stderr(&out)
    );

    // Sandboxed, the relay's port exists only inside the sandbox's network namespace.
    std::fs::remove_file(world.workspace().join("go")).unwrap();
    std::fs::remove_file(world.workspace().join("proxy.url")).unwrap();
    let (mut agent, proxy) = agent_waiting_for_go(&world, &[]);
    let port = proxy.rsplit(':').next().unwrap();
    let status = other_uid_curl(
        &format!("http://127.0.0.1:{port}"),
        &upstream.url("/other-uid-host"),
    );
    assert_ne!(status, "200", "the relay is not on the host's loopback");
    std::fs::write(world.workspace().join("go"), "").unwrap();
    assert_success(&agent.take().wait_with_output().unwrap());

    for path in ["/other-uid-bare", "/other-uid-wrong", "/other-uid-host"] {
        assert!(!upstream.saw(path), "{path} reached the upstream");
    }
    assert_no_record_under(&world, "/other-uid");
}

#[test]
fn required_refuses_without_a_facility_and_auto_warns_once() {
    let world = World::new();
    world.init(&[]);
    let _daemon = DaemonGuard(&world);
    let simulate = |facility: &str, flags: &[&str]| {
        let mut args = vec!["run", "codex"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "touch", "ran"]);
        common::run_with_timeout(
            world
                .cmd()
                .args(&args)
                .env("FIRMA_SANDBOX_SIMULATE_MISSING", facility),
            Duration::from_secs(60),
        )
    };
    let ran = world.workspace().join("ran");
    for facility in [
        "user-namespace",
        "network-namespace",
        "mount-namespace",
        "landlock",
    ] {
        let out = simulate(facility, &["--sandbox", "required"]);
        assert_eq!(out.status.code(), Some(2), "{facility}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!(
                "--sandbox required: this machine offers no {facility}"
            )),
            "{}",
            stderr(&out)
        );
        assert!(!ran.exists(), "{facility}: the command must not run");
    }

    let out = simulate("landlock", &[]);
    assert_success(&out);
    let warnings: Vec<_> = stderr(&out)
        .lines()
        .filter(|l| l.starts_with("warn:"))
        .map(String::from)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("landlock (filesystem not read-only)"),
        "{warnings:?}"
    );
    assert!(ran.exists());
    std::fs::remove_file(&ran).unwrap();

    // `[run] sandbox` is the default; the flag overrides it.
    let mut config = std::fs::read_to_string(world.config_path()).unwrap();
    config.push_str("\n[run]\nsandbox = \"required\"\n");
    std::fs::write(world.config_path(), config).unwrap();
    let out = simulate("landlock", &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = simulate("landlock", &["--sandbox", "off"]);
    assert_success(&out);
    assert!(!stderr(&out).contains("warn:"), "{}", stderr(&out));
    assert!(ran.exists());
}

#[test]
fn python_with_pip_cache_and_node_with_npm_cache_run_unchanged() {
    let world = World::new();
    world.init(&[]);
    let _daemon = DaemonGuard(&world);
    let ws = world.workspace();
    // A source distribution pip must build (caching the wheel) and an npm package to pack.
    let src = world.path().join("pysrc");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(
        src.join("setup.py"),
        "from setuptools import setup\nsetup(name=\"firmaprobe\", version=\"0.1\", py_modules=[\"firmaprobe\"])\n",
    )
    .unwrap();
    std::fs::write(src.join("firmaprobe.py"), "VALUE = 42\n").unwrap();
    let sdist = Command::new("python3")
        .args(["setup.py", "-q", "sdist", "-d"])
        .arg(ws.join("dist"))
        .current_dir(&src)
        .output()
        .unwrap();
    assert!(
        sdist.status.success(),
        "{}",
        String::from_utf8_lossy(&sdist.stderr)
    );
    std::fs::create_dir_all(ws.join("nodepkg")).unwrap();
    std::fs::write(
        ws.join("nodepkg/package.json"),
        "{\"name\":\"firmaprobe\",\"version\":\"0.1.0\",\"main\":\"index.js\"}\n",
    )
    .unwrap();
    std::fs::write(
        ws.join("nodepkg/index.js"),
        "module.exports = { value: 42 };\n",
    )
    .unwrap();
    // The interpreter itself, not a version manager's shim (pyenv's rehashes into its own dir).
    let python = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .unwrap();
    let python = String::from_utf8_lossy(&python.stdout).trim().to_string();
    let script = format!(
        "set -e\n\
         {python} -m pip install -q --no-index --find-links dist --no-build-isolation --target lib firmaprobe 2>/dev/null\n\
         {python} -c 'import sys; sys.path.insert(0, \"lib\"); import firmaprobe; print(\"python\", firmaprobe.VALUE)'\n\
         cd nodepkg\n\
         npm pack --silent >/dev/null\n\
         npm cache add ./firmaprobe-0.1.0.tgz\n\
         node -e 'console.log(\"node\", require(\"./\").value)'\n"
    );
    let out = run_script(&world, &[], &script);
    assert_success(&out);
    sandbox_id(&out);
    assert_eq!(stdout(&out), "python 42\nnode 42\n");
    let home = world.home();
    let cached = |dir: &str| walk_files(&home.join(dir));
    assert!(
        cached(".cache/pip/wheels") > 0,
        "pip cached the built wheel"
    );
    assert!(cached(".npm/_cacache") > 0, "npm cached the package");
}

fn walk_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let path = e.path();
            if path.is_dir() { walk_files(&path) } else { 1 }
        })
        .sum()
}

#[test]
fn doctor_reports_the_sandbox_facilities() {
    let world = World::new();
    let doctor = |missing: &str| {
        let out = common::run_with_timeout(
            world
                .cmd()
                .args(["doctor", "--json"])
                .env("FIRMA_SANDBOX_SIMULATE_MISSING", missing),
            Duration::from_secs(60),
        );
        let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "sandbox")
            .cloned()
            .expect("a sandbox check")
    };
    let all = doctor("");
    assert_eq!(all["status"], "ok", "{all}");
    let reason = all["reason"].as_str().unwrap();
    assert!(
        reason.contains("user, network and mount namespaces, Landlock ABI ")
            && reason.ends_with("--sandbox required would start"),
        "{reason}"
    );
    let no_landlock = doctor("landlock");
    assert_eq!(no_landlock["status"], "warn", "{no_landlock}");
    let reason = no_landlock["reason"].as_str().unwrap();
    assert!(
        reason.contains("lacks landlock") && reason.contains("--sandbox required would refuse"),
        "{reason}"
    );
    assert!(
        no_landlock["fix"]
            .as_str()
            .unwrap()
            .contains("Landlock enabled"),
        "{no_landlock}"
    );
}
