//! Black-box tests of `firma sidecar start | stop | status`: the built binary, throwaway worlds,
//! port 0, real processes. Every test ends by asserting that no process of its world and no
//! pid/listen/lock file remains.

mod common;

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::notify::{NotifySocket, listen_addr};
use common::{ChildGuard, World, alive, assert_success, stderr, stdout, wait_for};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

const LONG: Duration = Duration::from_secs(60);

/// A world with a scaffolded project on port 0 (real Authority and Sidecar).
struct Stack {
    world: World,
}

impl Stack {
    fn new() -> Self {
        let world = World::new();
        world.init(&[]);
        Self::from_world(world)
    }

    fn from_world(world: World) -> Self {
        Self { world }
    }

    fn state(&self) -> PathBuf {
        self.world.state_dir()
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = self.world.cmd();
        cmd.args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        common::run_with_timeout(&mut self.cmd(args), LONG)
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = self.cmd(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        common::run_with_timeout(&mut cmd, LONG)
    }

    fn start_detached(&self) -> Output {
        let out = self.run(&["sidecar", "start", "--detach"]);
        assert_success(&out);
        out
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.state().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn pid(&self, name: &str) -> i32 {
        self.read(&format!("{name}.pid")).trim().parse().unwrap()
    }

    fn status_json(&self) -> (serde_json::Value, i32) {
        let out = self.run(&["sidecar", "status", "--json"]);
        let json = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json: {e}\n{}", stdout(&out)));
        (json, out.status.code().unwrap())
    }

    /// Stop whatever runs (used on every exit path) and assert the world is clean.
    fn assert_clean(&self) {
        wait_for("the world's processes to exit", LONG, || {
            self.world.processes().is_empty().then_some(())
        });
        let leftovers: Vec<String> = std::fs::read_dir(self.state())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.ends_with(".pid")
                    || n.ends_with(".listen")
                    || n.ends_with(".lock")
                    || n.ends_with(".identity")
                    || n.ends_with(".sock")
                    || n == ".stack.json"
                    || n == ".stop-requested"
            })
            .collect();
        assert!(leftovers.is_empty(), "state files left: {leftovers:?}");
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Never leave a process behind, also when a test fails.
        self.world.kill_processes();
    }
}

/// Wait for a guarded child to exit and collect its output.
fn run_until_exit(child: &mut ChildGuard, timeout: Duration) -> Output {
    wait_for("the command to exit", timeout, || {
        child.child_mut().try_wait().unwrap().map(|_| ())
    });
    child.take().wait_with_output().unwrap()
}

/// The `timestamp` of the last JSON log line with this message (RFC 3339 UTC sorts as text).
fn log_time(log: &str, message: &str) -> String {
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == message)
        .find_map(|v| v["timestamp"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no {message:?} line in:\n{log}"))
}

fn component<'a>(json: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    json["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {json}"))
}

#[test]
fn detach_status_and_stop() {
    let stack = Stack::new();
    let out = stack.start_detached();
    assert!(stdout(&out).contains("sidecar running"), "{}", stdout(&out));

    for name in ["authority", "sidecar", "stack"] {
        let text = stack.read(&format!("{name}.pid"));
        assert!(
            text.ends_with('\n') && text.trim().parse::<i32>().is_ok(),
            "{name}.pid = {text:?}"
        );
    }
    for name in ["authority", "sidecar"] {
        let text = stack.read(&format!("{name}.listen"));
        let addr: std::net::SocketAddr = text.trim().parse().unwrap();
        assert_ne!(addr.port(), 0);
        assert!(text.ends_with('\n'));
    }
    assert!(stack.state().join("stack.lock").exists());
    assert!(
        stack
            .state()
            .join("generated-firma-ca/firma-ca.crt")
            .exists()
    );

    // Table.
    let table = stack.run(&["sidecar", "status"]);
    assert_eq!(table.status.code(), Some(0), "{}", stdout(&table));
    let text = stdout(&table);
    assert!(text.starts_with("NAME"), "{text}");
    for name in ["authority", "sidecar", "supervisor"] {
        let row = text
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(row.contains("running"), "{row}");
    }
    // JSON.
    let (json, code) = stack.status_json();
    assert_eq!(code, 0);
    assert_eq!(json["detached"], true);
    assert_eq!(json["authority_mode"], "local");
    assert_eq!(
        component(&json, "sidecar")["listen"],
        stack.read("sidecar.listen").trim()
    );
    assert_eq!(component(&json, "authority")["pid"], stack.pid("authority"));
    // --daemon.
    let daemon = stack.run(&["sidecar", "status", "--daemon"]);
    assert_eq!(stdout(&daemon).trim(), stack.pid("stack").to_string());

    // The supervisor is the children's parent and in its own session.
    let supervisor = stack.pid("stack");
    for name in ["authority", "sidecar"] {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", stack.pid(name))).unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(fields[1], supervisor.to_string(), "{name}'s parent");
        assert_eq!(
            fields[2],
            stack.pid(name).to_string(),
            "{name} leads its group"
        );
    }
    let stat = std::fs::read_to_string(format!("/proc/{supervisor}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        fields[3],
        supervisor.to_string(),
        "supervisor leads a session"
    );

    let stop = stack.run(&["sidecar", "stop"]);
    assert_success(&stop);
    assert!(stdout(&stop).contains("stopped"), "{}", stdout(&stop));
    // Stop order: the Sidecar was gone before the Authority was asked to shut down.
    let sidecar_stopped = log_time(&stack.read("sidecar.log"), "stopped");
    let authority_told = log_time(&stack.read("authority.log"), "shutting down");
    assert!(
        sidecar_stopped <= authority_told,
        "sidecar stopped at {sidecar_stopped}, authority told at {authority_told}"
    );
    // Logs are kept.
    assert!(stack.state().join("authority.log").exists());
    assert!(stack.state().join("supervisor.log").exists());
    let (json, code) = stack.status_json();
    assert_eq!(code, 1);
    assert_eq!(component(&json, "sidecar")["state"], "stopped");
    stack.assert_clean();
}

#[test]
fn detached_start_prints_next_steps_with_the_state_dir_flag() {
    let stack = Stack::new();
    let state = stack.world.path().join("other-state");
    let dir = state.display().to_string();
    let out = stack.run(&["sidecar", "start", "--detach", "--state-dir", &dir]);
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.contains("project ws"), "{text}");
    for step in [
        "firma sidecar status",
        "firma monitor",
        "firma sidecar stop",
    ] {
        assert!(
            text.contains(&format!("{step} --state-dir {dir}")),
            "{text}"
        );
    }
    assert_success(&stack.run(&["sidecar", "stop", "--state-dir", &dir]));
    stack.assert_clean();
}

#[test]
fn foreground_start_stops_on_ctrl_c_and_notifies_systemd() {
    let stack = Stack::new();
    let notify = NotifySocket::bind(stack.world.path().join("n.sock"));
    let mut cmd = stack.cmd(&["sidecar", "start"]);
    notify
        .pass_to(&mut cmd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::new(cmd.spawn().unwrap());
    let message = notify
        .recv(LONG)
        .expect("READY=1 from the foreground start");
    assert!(message.contains("READY=1"), "{message}");
    // READY comes after readiness: the files are published.
    assert_eq!(
        listen_addr(&message).unwrap(),
        stack.read("sidecar.listen").trim()
    );
    assert_eq!(stack.pid("stack"), child.id() as i32);

    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let out = run_until_exit(&mut child, LONG);
    assert_success(&out);
    // The foreground supervisor logs to supervisor.log too (JSON, after its banner).
    let log = stack.read("supervisor.log");
    assert!(log.contains("\"banner\":true"), "{log}");
    log_time(&log, "authority ready");
    log_time(&log, "received; stopping the pair");
    stack.assert_clean();
}

#[test]
fn stop_against_a_foreground_start_exits_it_zero() {
    let stack = Stack::new();
    let mut cmd = stack.cmd(&["sidecar", "start"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = ChildGuard::new(cmd.spawn().unwrap());
    wait_for("sidecar.listen", LONG, || {
        stack.state().join("sidecar.listen").exists().then_some(())
    });
    assert_success(&stack.run(&["sidecar", "stop"]));
    let out = run_until_exit(&mut child, LONG);
    assert_success(&out);
    assert!(stdout(&out).contains("stopped by"), "{}", stdout(&out));
    stack.assert_clean();
}

#[test]
fn detached_daemon_survives_sighup_of_the_launchers_session() {
    let stack = Stack::new();
    // The launcher runs in a session of its own (like a terminal) that then hangs up.
    let script = format!(
        "'{}' sidecar start --detach && exec sleep 600",
        common::FIRMA
    );
    // `env --default-signal=HUP`: a test run under nohup (or any parent ignoring SIGHUP) would
    // otherwise hand the ignored disposition down, and the session would never hang up.
    let mut session = Command::new("env");
    session
        .args(["--default-signal=HUP", "setsid", "sh", "-c"])
        .arg(&script);
    stack.world.prepare(&mut session);
    session.stdout(Stdio::null()).stderr(Stdio::null());
    let mut shell = ChildGuard::new(session.spawn().unwrap());
    let sid = shell.id() as i32;
    wait_for("the pair", LONG, || {
        stack.state().join("sidecar.listen").exists().then_some(())
    });
    let supervisor = stack.pid("stack");
    killpg(Pid::from_raw(sid), Signal::SIGHUP).unwrap();
    wait_for("the hung-up session to end", LONG, || {
        shell.child_mut().try_wait().unwrap()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(alive(supervisor));
    let (json, code) = stack.status_json();
    assert_eq!(code, 0, "{json}");
    assert_success(&stack.run(&["sidecar", "stop"]));
    stack.assert_clean();
}

#[test]
fn second_start_fails_fast_on_the_lock_and_leaves_the_pair_alone() {
    let stack = Stack::new();
    stack.start_detached();
    let before = (
        stack.pid("authority"),
        stack.pid("sidecar"),
        stack.pid("stack"),
    );
    for args in [
        &["sidecar", "start", "--detach"][..],
        &["sidecar", "start"][..],
    ] {
        let out = stack.run(args);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(err.contains("stack.lock"), "{err}");
        assert!(err.contains(&format!("pid {}", before.2)), "{err}");
    }
    assert_eq!(
        (
            stack.pid("authority"),
            stack.pid("sidecar"),
            stack.pid("stack")
        ),
        before
    );
    let (_, code) = stack.status_json();
    assert_eq!(code, 0);
    assert_success(&stack.run(&["sidecar", "stop"]));
    stack.assert_clean();
}

fn set_listen(stack: &Stack, section: &str, addr: &str) {
    let path = stack.world.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut out = String::new();
    let mut in_section = false;
    for line in text.lines() {
        if line.starts_with('[') {
            in_section = line.trim() == section;
        }
        if in_section && line.trim_start().starts_with("listen") {
            out.push_str(&format!("listen = \"{addr}\"\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(&path, out).unwrap();
}

#[test]
fn authority_port_in_use_rolls_back() {
    let stack = Stack::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    set_listen(&stack, "[authority]", &addr);
    let out = stack.run(&["sidecar", "start", "--detach"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    // The holder (this test process) is named, and the hint fits an unrelated program.
    assert!(
        err.contains(&format!(
            "authority: address {addr} already in use by pid {}",
            std::process::id()
        )),
        "{err}"
    );
    assert!(
        err.contains("hint: change [authority].listen in firma.toml, or stop that program"),
        "{err}"
    );
    stack.assert_clean();
}

#[test]
fn sidecar_port_in_use_rolls_the_authority_back() {
    let stack = Stack::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    set_listen(&stack, "[sidecar.proxy]", &addr);
    let out = stack.run(&["sidecar", "start"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("sidecar: address {addr} already in use")),
        "{err}"
    );
    // The Authority had been booted (its log exists) and was rolled back.
    assert!(stack.read("authority.log").contains("ready"));
    stack.assert_clean();
}

#[test]
fn a_bad_policy_file_fails_the_authority_and_rolls_back() {
    let stack = Stack::new();
    std::fs::write(
        stack.world.project_dir().join("policies/broken.cedar"),
        "permit(principal, action, resource) when {",
    )
    .unwrap();
    let out = stack.run(&["sidecar", "start", "--detach"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("authority: exited before becoming ready"),
        "{err}"
    );
    assert!(err.contains("authority.log"), "{err}");
    stack.assert_clean();
}

#[test]
fn bad_mapping_rules_fail_the_sidecar_and_roll_the_authority_back() {
    let stack = Stack::new();
    std::fs::write(
        stack.world.project_dir().join("mapping-rules.toml"),
        "[[rule]]\nthis is not toml\n",
    )
    .unwrap();
    let out = stack.run(&["sidecar", "start", "--detach"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("sidecar: exited before becoming ready"),
        "{err}"
    );
    assert!(err.contains("mapping-rules.toml"), "{err}");
    // The Authority had been booted and was rolled back.
    assert!(stack.read("authority.log").contains("ready"));
    stack.assert_clean();
}

#[test]
fn a_child_that_never_becomes_ready_times_out_and_rolls_back() {
    let stack = Stack::new();
    let out = stack.run_env(
        &["sidecar", "start", "--detach"],
        &[
            (
                "FIRMA_TEST_SIDECAR_EXE",
                &common::repo("tests/fixtures/fake-sidecar")
                    .display()
                    .to_string(),
            ),
            ("FAKE_SIDECAR", "never-ready"),
            ("FIRMA_READY_TIMEOUT", "1s"),
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("sidecar: did not become ready within 1s"),
        "{err}"
    );
    stack.assert_clean();
}

#[test]
fn sigkill_of_a_child_tears_the_other_down() {
    let stack = Stack::new();
    stack.start_detached();
    let authority = stack.pid("authority");
    kill(Pid::from_raw(stack.pid("sidecar")), Signal::SIGKILL).unwrap();
    wait_for("the authority to be torn down", LONG, || {
        (!alive(authority)).then_some(())
    });
    wait_for("the supervisor to clean up", LONG, || {
        (!stack.state().join("stack.lock").exists()).then_some(())
    });
    // The crash is visible: how the sidecar ended, when, and that the authority was torn down.
    let (json, code) = stack.status_json();
    assert_eq!(code, 1);
    let sidecar = component(&json, "sidecar");
    assert_eq!(sidecar["state"], "crashed", "{json}");
    assert_eq!(sidecar["last_exit"]["cause"]["signal"], "SIGKILL", "{json}");
    assert_eq!(sidecar["last_exit"]["requested"], false, "{json}");
    assert_eq!(component(&json, "authority")["state"], "stopped", "{json}");
    assert_eq!(
        component(&json, "authority")["last_exit"]["requested"],
        true
    );
    assert_eq!(component(&json, "supervisor")["state"], "stopped", "{json}");
    let table = stdout(&stack.run(&["sidecar", "status"]));
    let row = table.lines().find(|l| l.starts_with("sidecar")).unwrap();
    assert!(row.contains("crashed (SIGKILL, "), "{table}");
    assert!(
        table.contains("sidecar crashed (signal SIGKILL) at "),
        "{table}"
    );
    let log = stack.read("supervisor.log");
    assert!(log.contains("exited unexpectedly"), "{log}");
    // doctor fails with the cause.
    let doctor = stack.run(&["doctor", "--json"]);
    assert_eq!(doctor.status.code(), Some(1), "{}", stdout(&doctor));
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout).unwrap();
    let daemon = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "daemon")
        .unwrap();
    assert_eq!(daemon["status"], "fail", "{report}");
    assert!(
        daemon["reason"]
            .as_str()
            .unwrap()
            .contains("sidecar crashed (signal SIGKILL)"),
        "{report}"
    );
    // The next start begins a new run: the record is reset.
    stack.start_detached();
    let (json, code) = stack.status_json();
    assert_eq!(code, 0, "{json}");
    assert_eq!(
        component(&json, "sidecar")["last_exit"],
        serde_json::Value::Null
    );
    assert_success(&stack.run(&["sidecar", "stop"]));
    stack.assert_clean();
}

#[test]
fn foreground_start_exits_non_zero_when_a_child_dies() {
    let stack = Stack::new();
    let mut cmd = stack.cmd(&["sidecar", "start"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = ChildGuard::new(cmd.spawn().unwrap());
    wait_for("sidecar.listen", LONG, || {
        stack.state().join("sidecar.listen").exists().then_some(())
    });
    let authority = stack.pid("authority");
    killpg(Pid::from_raw(stack.pid("sidecar")), Signal::SIGKILL).unwrap();
    let out = run_until_exit(&mut child, LONG);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("sidecar exited unexpectedly (signal SIGKILL); the authority was torn down"),
        "{err}"
    );
    assert!(!alive(authority));
    stack.assert_clean();
}

#[test]
fn after_sigkill_of_everything_stale_files_read_stopped_and_start_works() {
    let stack = Stack::new();
    stack.start_detached();
    let pids = [
        stack.pid("stack"),
        stack.pid("authority"),
        stack.pid("sidecar"),
    ];
    kill(Pid::from_raw(pids[0]), Signal::SIGKILL).unwrap();
    for pid in &pids[1..] {
        killpg(Pid::from_raw(*pid), Signal::SIGKILL).unwrap();
    }
    wait_for("everything to die", LONG, || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });
    assert!(stack.state().join("sidecar.pid").exists());
    assert!(stack.state().join("stack.lock").exists());
    let (json, code) = stack.status_json();
    assert_eq!(code, 1);
    for name in ["authority", "sidecar", "supervisor"] {
        assert_eq!(component(&json, name)["state"], "stopped", "{json}");
    }
    stack.start_detached();
    assert_ne!(stack.pid("stack"), pids[0]);
    let (_, code) = stack.status_json();
    assert_eq!(code, 0);
    assert_success(&stack.run(&["sidecar", "stop"]));
    stack.assert_clean();
}

#[test]
fn children_orphaned_by_a_killed_supervisor_block_start_until_stop() {
    let stack = Stack::new();
    stack.start_detached();
    let (authority, sidecar) = (stack.pid("authority"), stack.pid("sidecar"));
    kill(Pid::from_raw(stack.pid("stack")), Signal::SIGKILL).unwrap();
    wait_for("the supervisor to die", LONG, || {
        (!alive(stack.pid("stack"))).then_some(())
    });
    let (json, code) = stack.status_json();
    assert_eq!(code, 1);
    assert_eq!(component(&json, "supervisor")["state"], "stopped", "{json}");
    assert_eq!(component(&json, "sidecar")["state"], "running", "{json}");
    let out = stack.run(&["sidecar", "start", "--detach"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("still running without its supervisor"),
        "{}",
        stderr(&out)
    );
    assert!(alive(authority) && alive(sidecar));
    let stop = stack.run(&["sidecar", "stop"]);
    assert_success(&stop);
    assert!(
        !alive(authority) && !alive(sidecar),
        "{} {:?} {:?}",
        stdout(&stop),
        std::fs::read_to_string(format!("/proc/{authority}/stat")),
        std::fs::read_to_string(format!("/proc/{sidecar}/stat"))
    );
    stack.assert_clean();
}

#[test]
fn a_pidfile_naming_an_unrelated_process_is_left_alone() {
    let stack = Stack::new();
    stack.start_detached();
    let pids = [
        stack.pid("stack"),
        stack.pid("authority"),
        stack.pid("sidecar"),
    ];
    kill(Pid::from_raw(pids[0]), Signal::SIGKILL).unwrap();
    for pid in &pids[1..] {
        killpg(Pid::from_raw(*pid), Signal::SIGKILL).unwrap();
    }
    wait_for("everything to die", LONG, || {
        pids.iter().all(|p| !alive(*p)).then_some(())
    });
    // An unrelated process now "owns" every pidfile (as after PID reuse).
    let mut stranger = ChildGuard::new(
        Command::new("sleep")
            .arg("600")
            .process_group(0)
            .spawn()
            .unwrap(),
    );
    let pid = stranger.id();
    for name in ["stack", "authority", "sidecar"] {
        std::fs::write(
            stack.state().join(format!("{name}.pid")),
            format!("{pid}\n"),
        )
        .unwrap();
    }
    let (json, code) = stack.status_json();
    assert_eq!(code, 1);
    for name in ["authority", "sidecar", "supervisor"] {
        assert_eq!(component(&json, name)["state"], "stopped", "{json}");
    }
    let stop = stack.run(&["sidecar", "stop", "--timeout", "0.2"]);
    assert_success(&stop);
    assert!(
        stdout(&stop).contains("nothing running"),
        "{}",
        stdout(&stop)
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        stranger.child_mut().try_wait().unwrap().is_none(),
        "stop killed a stranger"
    );
    drop(stranger);
    stack.assert_clean();
}

/// A Sidecar whose process-group leader ignores SIGTERM (the real or stand-in Sidecar runs as
/// its child and does exit on SIGTERM).
fn stubborn_sidecar(stack: &Stack) -> String {
    let dir = stack.world.path().join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    let wrapper = dir.join("stubborn-sidecar");
    let real = common::FIRMA;
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\ntrap '' TERM\n'{real}' \"$@\" &\nwhile :; do sleep 0.05; done\n"),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    wrapper.display().to_string()
}

#[test]
fn a_second_ctrl_c_hard_kills_a_stubborn_child() {
    let stack = Stack::new();
    let wrapper = stubborn_sidecar(&stack);
    let mut cmd = stack.cmd(&["sidecar", "start"]);
    cmd.env("FIRMA_TEST_SIDECAR_EXE", &wrapper)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::new(cmd.spawn().unwrap());
    wait_for("sidecar.listen", LONG, || {
        stack.state().join("sidecar.listen").exists().then_some(())
    });
    let pid = Pid::from_raw(child.id() as i32);
    kill(pid, Signal::SIGINT).unwrap();
    // The teardown has begun once the real Sidecar under the stubborn wrapper has stopped.
    wait_for("the graceful teardown to begin", LONG, || {
        let log = std::fs::read_to_string(stack.state().join("sidecar.log")).unwrap_or_default();
        log.contains("\"stopped\"").then_some(())
    });
    kill(pid, Signal::SIGINT).unwrap();
    let out = run_until_exit(&mut child, LONG);
    assert_success(&out);
    assert!(stderr(&out).contains("second signal"), "{}", stderr(&out));
    stack.assert_clean();
}

#[test]
fn a_child_ignoring_sigterm_is_hard_killed_after_the_timeout() {
    let stack = Stack::new();
    let wrapper = stubborn_sidecar(&stack);
    let out = stack.run_env(
        &["sidecar", "start", "--detach"],
        &[("FIRMA_TEST_SIDECAR_EXE", &wrapper)],
    );
    assert_success(&out);
    let sidecar = stack.pid("sidecar");
    let stop = stack.run(&["sidecar", "stop", "--timeout", "0.5"]);
    assert_success(&stop);
    assert!(stdout(&stop).contains("hard-killed"), "{}", stdout(&stop));
    assert!(!alive(sidecar));
    stack.assert_clean();
}

#[test]
fn stop_with_nothing_running_is_a_quiet_success() {
    let stack = Stack::new();
    let out = stack.run(&["sidecar", "stop"]);
    assert_success(&out);
    assert!(stdout(&out).contains("nothing running"), "{}", stdout(&out));
    let out = stack.run(&["sidecar", "stop", "--state-dir", "/nonexistent/firma-state"]);
    assert_success(&out);
    stack.assert_clean();
}

#[test]
fn remote_authority_mode_boots_only_the_sidecar() {
    // A standalone Authority from another world plays the remote one.
    let remote = World::new();
    remote.init(&[]);
    let mut authority = ChildGuard::new(
        remote
            .cmd()
            .args(["authority"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr_pipe = authority.child_mut().stderr.take().unwrap();
    let addr = {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stderr_pipe).lines();
        loop {
            let line = lines.next().expect("authority log line").unwrap();
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
                && v["message"] == "ready"
            {
                break v["addr"].as_str().unwrap().to_string();
            }
        }
    };
    let world = World::new();
    world.init(&["--authority", &format!("http://{addr}"), "--force"]);
    let stack = Stack::from_world(world);
    std::fs::copy(
        remote.project_dir().join("authority.pub"),
        stack.world.project_dir().join("authority.pub"),
    )
    .unwrap();
    stack.start_detached();
    assert!(!stack.state().join("authority.pid").exists());
    let (json, code) = stack.status_json();
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["authority_mode"], "remote");
    let row = component(&json, "authority");
    assert_eq!(row["remote"], true);
    assert_eq!(row["listen"], format!("http://{addr}"));
    assert_success(&stack.run(&["sidecar", "stop"]));
    stack.assert_clean();
    drop(authority);
}

/// Append `[sidecar.supervise]` settings to the world's firma.toml.
fn supervise(stack: &Stack, settings: &str) {
    let path = stack.world.config_path();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!("\n[sidecar.supervise]\n{settings}\n"));
    std::fs::write(&path, text).unwrap();
}

#[test]
fn logs_are_appended_across_restarts_with_a_start_banner() {
    let stack = Stack::new();
    stack.start_detached();
    assert_success(&stack.run(&["sidecar", "stop"]));
    let first = stack.read("authority.log");
    stack.start_detached();
    assert_success(&stack.run(&["sidecar", "stop"]));
    for name in ["authority", "sidecar", "supervisor"] {
        let log = stack.read(&format!("{name}.log"));
        let banners: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["banner"] == true)
            .collect();
        assert_eq!(banners.len(), 2, "{name}.log:\n{log}");
        assert_eq!(
            banners[0]["message"],
            format!("{name} starting (firma {})", env!("CARGO_PKG_VERSION"))
        );
    }
    // The first run's lines are still there, in front.
    assert!(stack.read("authority.log").starts_with(&first));
    stack.assert_clean();
}

#[test]
fn init_force_is_refused_while_a_stack_runs_and_stop_does_it_in_order() {
    let stack = Stack::new();
    stack.start_detached();
    let key = std::fs::read(stack.world.project_dir().join("audit.key")).unwrap();
    let supervisor = stack.pid("stack");
    let force = [
        "init",
        "--yes",
        "--force",
        "--agent",
        "codex",
        "--sidecar-listen",
        "127.0.0.1:0",
        "--authority-listen",
        "127.0.0.1:0",
    ];
    let out = stack.run(&force);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "a firma stack is running on {}",
            stack.state().display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("supervisor pid {supervisor}")),
        "{err}"
    );
    assert!(err.contains("project ws"), "{err}");
    assert!(err.contains("--stop"), "{err}");
    // Nothing was touched: same keys, no archive, the pair still runs.
    assert_eq!(
        std::fs::read(stack.world.project_dir().join("audit.key")).unwrap(),
        key
    );
    assert!(
        !std::fs::read_dir(stack.state())
            .unwrap()
            .flatten()
            .any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with("audit-archive-"))
    );
    assert_eq!(stack.status_json().1, 0);

    // --stop: the pair is stopped in order first, then the project is rewritten.
    let mut with_stop = force.to_vec();
    with_stop.push("--stop");
    let out = stack.run(&with_stop);
    assert_success(&out);
    assert!(
        stdout(&out).contains("stopped sidecar, supervisor, authority"),
        "{}",
        stdout(&out)
    );
    assert_ne!(
        std::fs::read(stack.world.project_dir().join("audit.key")).unwrap(),
        key
    );
    assert!(!alive(supervisor));
    // The new keys and the state dir agree: a new start works.
    stack.start_detached();
    assert_success(&stack.run(&["sidecar", "stop"]));
    stack.assert_clean();
}

#[test]
fn two_projects_sharing_a_state_dir_are_told_apart() {
    let stack = Stack::new();
    let other = stack.world.path().join("proj2");
    std::fs::create_dir_all(&other).unwrap();
    let out = stack.run(&[
        "init",
        "--yes",
        "--agent",
        "codex",
        "--workspace",
        &other.display().to_string(),
        "--authority-listen",
        "127.0.0.1:0",
        "--sidecar-listen",
        "127.0.0.1:0",
    ]);
    assert_success(&out);
    stack.start_detached();
    // The running stack says which project it serves.
    let (json, _) = stack.status_json();
    assert_eq!(json["project"]["name"], "ws", "{json}");
    assert_eq!(
        json["project"]["config"],
        stack.world.config_path().display().to_string()
    );
    let table = stdout(&stack.run(&["sidecar", "status"]));
    assert!(
        table.lines().next().unwrap().ends_with("PROJECT"),
        "{table}"
    );
    assert!(table.lines().nth(1).unwrap().ends_with(" ws"), "{table}");
    // From the same project: no warning.
    assert!(!stderr(&stack.run(&["sidecar", "status"])).contains("warn"));
    // From the other project: a warning naming both.
    let mut cmd = stack.cmd(&["sidecar", "status"]);
    cmd.current_dir(&other);
    let out = common::run_with_timeout(&mut cmd, LONG);
    let err = stderr(&out);
    assert!(
        err.contains("warn: the stack running on") && err.contains("serves project ws"),
        "{err}"
    );
    assert!(
        err.contains(&other.join(".firma/firma.toml").display().to_string()),
        "{err}"
    );
    assert_success(&stack.run(&["sidecar", "stop"]));
    stack.assert_clean();
}

#[test]
fn a_port_held_by_another_stack_names_that_stacks_state_dir() {
    let first = Stack::new();
    first.start_detached();
    let taken = first.read("sidecar.listen").trim().to_string();
    let second = Stack::new();
    set_listen(&second, "[sidecar.proxy]", &taken);
    let out = second.run(&["sidecar", "start", "--detach"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "sidecar: address {taken} already in use by another firma stack (pid {}",
            first.pid("sidecar")
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "firma sidecar stop --state-dir {}",
            first.state().display()
        )),
        "{err}"
    );
    second.assert_clean();
    assert_success(&first.run(&["sidecar", "stop"]));
    first.assert_clean();
}

#[test]
fn restart_on_failure_brings_a_killed_component_back_and_counts_it() {
    let stack = Stack::new();
    supervise(&stack, "restart = \"on-failure\"\nrestart_sec = \"100ms\"");
    stack.start_detached();
    let (authority, sidecar, supervisor) = (
        stack.pid("authority"),
        stack.pid("sidecar"),
        stack.pid("stack"),
    );
    killpg(Pid::from_raw(sidecar), Signal::SIGKILL).unwrap();
    wait_for("a new sidecar", LONG, || {
        let (json, code) = stack.status_json();
        (code == 0 && component(&json, "sidecar")["pid"] != sidecar).then_some(())
    });
    let (json, _) = stack.status_json();
    let row = component(&json, "sidecar");
    assert_eq!(row["restarts"], 1, "{json}");
    assert_eq!(row["last_exit"]["cause"]["signal"], "SIGKILL", "{json}");
    assert_eq!(
        stack.pid("authority"),
        authority,
        "only the sidecar was restarted"
    );
    assert_eq!(stack.pid("stack"), supervisor);
    let table = stdout(&stack.run(&["sidecar", "status"]));
    let row = table.lines().find(|l| l.starts_with("sidecar")).unwrap();
    assert!(
        row.contains("running") && row.split_whitespace().nth(5) == Some("1"),
        "{table}"
    );
    // The Authority's crash restarts the pair (the Sidecar was pointed at its address).
    let sidecar = stack.pid("sidecar");
    killpg(Pid::from_raw(authority), Signal::SIGKILL).unwrap();
    wait_for("a new pair", LONG, || {
        let (json, code) = stack.status_json();
        (code == 0
            && component(&json, "authority")["pid"] != authority
            && component(&json, "sidecar")["pid"] != sidecar)
            .then_some(())
    });
    let (json, _) = stack.status_json();
    assert_eq!(component(&json, "authority")["restarts"], 1, "{json}");
    let log = stack.read("supervisor.log");
    assert!(log.contains("restarting in 100ms"), "{log}");
    assert_success(&stack.run(&["sidecar", "stop"]));
    stack.assert_clean();
}

#[test]
fn restart_on_failure_gives_up_at_the_start_limit() {
    let stack = Stack::new();
    supervise(
        &stack,
        "restart = \"on-failure\"\nrestart_sec = \"100ms\"\nstart_limit_burst = 1",
    );
    stack.start_detached();
    let sidecar = stack.pid("sidecar");
    killpg(Pid::from_raw(sidecar), Signal::SIGKILL).unwrap();
    let second = wait_for("a new sidecar", LONG, || {
        let pid = std::fs::read_to_string(stack.state().join("sidecar.pid")).ok()?;
        let pid: i32 = pid.trim().parse().ok()?;
        (pid != sidecar).then_some(pid)
    });
    killpg(Pid::from_raw(second), Signal::SIGKILL).unwrap();
    wait_for("the supervisor to give up", LONG, || {
        (!stack.state().join("stack.lock").exists()).then_some(())
    });
    let (json, code) = stack.status_json();
    assert_eq!(code, 1);
    let row = component(&json, "sidecar");
    assert_eq!(row["state"], "crashed", "{json}");
    assert_eq!(row["restarts"], 1, "{json}");
    let log = stack.read("supervisor.log");
    assert!(log.contains("start limit hit"), "{log}");
    stack.assert_clean();
}

#[test]
fn sidecar_restart_starts_the_same_config_again() {
    let stack = Stack::new();
    stack.start_detached();
    let supervisor = stack.pid("stack");
    let out = stack.run(&["sidecar", "restart"]);
    assert_success(&out);
    let text = stdout(&out);
    assert!(
        text.contains("ok: stopped sidecar, supervisor, authority"),
        "{text}"
    );
    assert!(text.contains("sidecar running (detached"), "{text}");
    assert_ne!(stack.pid("stack"), supervisor);
    let (json, code) = stack.status_json();
    assert_eq!(code, 0, "{json}");
    assert_eq!(
        json["project"]["config"],
        stack.world.config_path().display().to_string()
    );
    // With nothing running, restart is a start.
    assert_success(&stack.run(&["sidecar", "stop"]));
    let out = stack.run(&["sidecar", "restart"]);
    assert_success(&out);
    assert!(stdout(&out).contains("nothing running"), "{}", stdout(&out));
    assert_eq!(stack.status_json().1, 0);
    assert_success(&stack.run(&["sidecar", "stop"]));
    stack.assert_clean();
}

#[test]
fn a_broken_policy_is_a_degraded_authority_until_it_is_fixed() {
    let stack = Stack::new();
    stack.start_detached();
    let broken = stack.world.project_dir().join("policies/broken.cedar");
    std::fs::write(&broken, "permit(principal, action, resource) when {").unwrap();
    let json = wait_for("the authority to report degraded", LONG, || {
        let (json, code) = stack.status_json();
        (component(&json, "authority")["state"] == "degraded").then_some((json, code))
    });
    assert_eq!(json.1, 1, "degraded is not all running");
    let message = component(&json.0, "authority")["health"]["degraded"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(message.contains("broken.cedar:1:"), "{message}");
    let table = stdout(&stack.run(&["sidecar", "status"]));
    assert!(
        table.contains("authority degraded: runtime policies: "),
        "{table}"
    );
    assert!(table.contains("broken.cedar:1:"), "{table}");
    let doctor = stack.run(&["doctor"]);
    assert_eq!(doctor.status.code(), Some(1));
    assert!(
        stdout(&doctor).contains("[FAIL] daemon"),
        "{}",
        stdout(&doctor)
    );
    assert!(
        stdout(&doctor).contains("broken.cedar:1:"),
        "{}",
        stdout(&doctor)
    );
    // The fix: healthy again, and the log says so.
    std::fs::remove_file(&broken).unwrap();
    wait_for("the authority to recover", LONG, || {
        (stack.status_json().1 == 0).then_some(())
    });
    let log = stack.read("authority.log");
    assert!(
        log.contains("runtime policy bundle reloaded; healthy again"),
        "{log}"
    );
    assert_success(&stack.run(&["sidecar", "stop"]));
    stack.assert_clean();
}
