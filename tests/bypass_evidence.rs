//! Evidence or nothing (DESIGN §12, issue "no bypass" item 7): when the Sidecar cannot put a
//! decision's record in the live audit log — the log was deleted, renamed, replaced, or its disk
//! is full — it forwards nothing: every call gets 503 `audit_unavailable`, the upstream is never
//! reached, the state change is logged once, and the control socket reports it. And under load,
//! a SIGKILLed Sidecar leaves a record for every call a client saw answered, in a log that
//! verifies and continues after a restart.

mod common;

use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::http::{curl, json};
use common::stack::{
    DEADLINE, LOOPBACK_RULES, Stack, start_stack, start_stack_with, stop, terminate, write_rules,
};
use common::tmpfs::Tmpfs;
use common::upstream::{Upstream, start_upstream};
use common::{World, assert_success, stdout, wait_for};
use firma::audit::control;
use serde_json::Value;

/// Wait until the Sidecar's control socket reports the audit log unavailable; the reason.
fn wait_unavailable(world: &World) -> String {
    let socket = world.state().sidecar_socket();
    wait_for(
        "the Sidecar to report its audit log unavailable",
        DEADLINE,
        || {
            let health = control::health(&socket, Duration::from_secs(5)).ok()?;
            (!health.is_ok()).then(|| health.reason.unwrap_or_default())
        },
    )
}

fn sidecar_log(world: &World) -> String {
    std::fs::read_to_string(world.path().join("sidecar.log")).unwrap_or_default()
}

/// A call through the proxy to the counting upstream.
fn call(stack: &Stack, token: &str, upstream: &Upstream, path: &str) -> (u16, String) {
    curl(
        &stack.proxy_url(Some(token)),
        &format!("http://127.0.0.1:{}{path}", upstream.addr.port()),
        &[],
    )
}

/// After the log became unavailable: several calls, each refused with 503 `audit_unavailable`,
/// none reaching the upstream, and one log line for the state change.
#[track_caller]
fn assert_nothing_forwarded(stack: &Stack, token: &str, upstream: &Upstream) {
    let hits = upstream.hits.load(Ordering::SeqCst);
    for i in 0..5 {
        let (status, body) = call(stack, token, upstream, &format!("/after/{i}"));
        assert_eq!(status, 503, "{body}");
        assert_eq!(json(&body)["reason"], "audit_unavailable", "{body}");
    }
    assert_eq!(
        upstream.hits.load(Ordering::SeqCst),
        hits,
        "the upstream was reached although the record could not be written"
    );
    let log = sidecar_log(&stack.world);
    assert_eq!(
        log.matches("audit log unavailable: refusing every call")
            .count(),
        1,
        "the state change is logged once:\n{log}"
    );
}

#[test]
fn a_deleted_audit_log_refuses_every_call() {
    let upstream = start_upstream(None);
    let stack = start_stack(|_| {}, &[]);
    let token = stack.token();
    assert_eq!(call(&stack, &token, &upstream, "/before").0, 200);
    std::fs::remove_file(stack.world.state().audit_log()).unwrap();
    let reason = wait_unavailable(&stack.world);
    assert!(reason.contains("deleted or renamed"), "{reason}");
    assert_nothing_forwarded(&stack, &token, &upstream);
}

#[test]
fn a_renamed_audit_log_refuses_every_call() {
    let upstream = start_upstream(None);
    let stack = start_stack(|_| {}, &[]);
    let token = stack.token();
    assert_eq!(call(&stack, &token, &upstream, "/before").0, 200);
    // What logrotate would do: rename, then create a fresh file under the old name.
    let log = stack.world.state().audit_log();
    std::fs::rename(&log, stack.world.state().audit().rotated(1)).unwrap();
    std::fs::write(&log, b"").unwrap();
    let reason = wait_unavailable(&stack.world);
    assert!(reason.contains("replaced"), "{reason}");
    assert_nothing_forwarded(&stack, &token, &upstream);
}

#[test]
fn a_replaced_audit_log_refuses_every_call() {
    let upstream = start_upstream(None);
    let stack = start_stack(|_| {}, &[]);
    let token = stack.token();
    assert_eq!(call(&stack, &token, &upstream, "/before").0, 200);
    // An attacker swaps in an older copy of the log.
    let log = stack.world.state().audit_log();
    let copy = stack.world.path().join("copy.jsonl");
    std::fs::copy(&log, &copy).unwrap();
    assert_eq!(call(&stack, &token, &upstream, "/between").0, 200);
    std::fs::rename(&copy, &log).unwrap();
    let reason = wait_unavailable(&stack.world);
    assert!(reason.contains("replaced"), "{reason}");
    assert_nothing_forwarded(&stack, &token, &upstream);
}

#[test]
fn a_full_disk_refuses_every_call() {
    let upstream = start_upstream(None);
    // The state dir (and with it the audit log) on a 2 MiB tmpfs.
    let mut mount = None;
    let stack = start_stack_with(
        |world| {
            mount = Some(Tmpfs::mount(&world.state_dir(), "2m"));
            write_rules(world, LOOPBACK_RULES);
        },
        &[],
    );
    let token = stack.token();
    assert_eq!(call(&stack, &token, &upstream, "/before").0, 200);
    // Fill the file system to the last byte.
    let filler = stack.world.state_dir().join("filler");
    let out = Command::new("dd")
        .args(["if=/dev/zero", "bs=4096"])
        .arg(format!("of={}", filler.display()))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No space left"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Records may still fit in the log's last page; the first refusal must come soon, and
    // every call answered before it has its record.
    let mut answered = Vec::new();
    let refused = (0..200).find(|i| {
        let path = format!("/filling/{i}");
        let (status, body) = call(&stack, &token, &upstream, &path);
        match status {
            200 => {
                answered.push(path);
                false
            }
            503 => {
                assert_eq!(json(&body)["reason"], "audit_unavailable", "{body}");
                true
            }
            other => panic!("unexpected {other}: {body}"),
        }
    });
    assert!(refused.is_some(), "200 calls were answered on a full disk");
    let reason = wait_unavailable(&stack.world);
    assert!(reason.contains("No space left"), "{reason}");
    assert_nothing_forwarded(&stack, &token, &upstream);
    // Every answered call was recorded.
    let recorded: Vec<String> = stack
        .audit()
        .iter()
        .filter_map(|r| r["intent"]["path"].as_str().map(str::to_string))
        .collect();
    for path in &answered {
        assert!(
            recorded.contains(path),
            "{path} was answered but not recorded"
        );
    }
    // The operator frees space and restarts the Sidecar: the log verifies and continues.
    std::fs::remove_file(&filler).unwrap();
    let mut stack = stack;
    stop(&mut stack.sidecar);
    stack.restart_sidecar(&[], "sidecar-restarted");
    assert_eq!(call(&stack, &token, &upstream, "/recovered").0, 200);
    let report = stack.world.verify_json();
    assert_eq!(report["ok"], true, "{report:#}");
}

/// 16 clients through the Sidecar; SIGKILL mid-run. Every call a client saw answered 2xx has its
/// allow record; the log verifies (a torn tail at most); after a restart the chain continues.
#[test]
fn sigkill_under_load_loses_no_answered_call() {
    let upstream = start_upstream(None);
    let mut stack = start_stack(|_| {}, &[]);
    let token = stack.token();
    let url = format!("http://127.0.0.1:{}/load", upstream.addr.port());
    let script = r#"
import sys, threading, requests
proxy, url, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
lock = threading.Lock()
def run(i):
    s = requests.Session()
    s.proxies = {"http": proxy}
    s.trust_env = False
    j = 0
    while True:
        path = f"{url}/{i}/{j}"
        try:
            r = s.get(path, timeout=30)
        except Exception:
            return
        if 200 <= r.status_code < 300:
            with lock:
                print(path.split("/", 3)[3], flush=True)
        j += 1
threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
[t.start() for t in threads]
[t.join() for t in threads]
"#;
    let out_path = stack.world.path().join("answered.txt");
    let clients = Command::new("python3")
        .args(["-c", script, &stack.proxy_url(Some(&token)), &url, "16"])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .spawn()
        .unwrap();
    let mut clients = common::ChildGuard::new(clients);
    // Mid-run: once hundreds of calls were answered.
    wait_for("500 answered calls", DEADLINE, || {
        let text = std::fs::read_to_string(&out_path).ok()?;
        (text.lines().count() >= 500).then_some(())
    });
    stop(&mut stack.sidecar);
    let status = wait_for("the clients to give up", DEADLINE, || {
        clients.child_mut().try_wait().unwrap()
    });
    assert!(status.success());
    let answered = std::fs::read_to_string(&out_path).unwrap();
    let recorded: std::collections::HashSet<String> = stack
        .audit()
        .iter()
        .filter(|r| r["decision"] == "allow")
        .filter_map(|r| r["intent"]["path"].as_str().map(str::to_string))
        .collect();
    let answered: Vec<&str> = answered.lines().collect();
    assert!(answered.len() >= 500);
    for line in &answered {
        let path = format!("/{line}");
        assert!(
            recorded.contains(&path),
            "{path} was answered 200 but has no allow record"
        );
    }
    let report = stack.world.verify_json();
    assert_eq!(report["ok"], true, "{report:#}");
    for notice in report["notices"].as_array().unwrap() {
        assert_eq!(notice["kind"], "torn_tail", "{report:#}");
    }
    let last_before = report["last_seq"].as_u64().unwrap();

    // After a restart the chain continues.
    stack.restart_sidecar(&[], "sidecar-restarted");
    assert_eq!(call(&stack, &token, &upstream, "/after-restart").0, 200);
    let status = terminate(&mut stack.sidecar);
    assert!(status.success(), "{status}");
    let report = stack.world.verify_json();
    assert_eq!(report["ok"], true, "{report:#}");
    assert!(report["last_seq"].as_u64().unwrap() > last_before);
    assert_eq!(report["checkpoint"]["status"], "ok");
}

/// `firma sidecar status` and `firma doctor` show a Sidecar whose audit log is unavailable as
/// unhealthy, with the reason.
#[test]
fn status_and_doctor_show_an_unavailable_log() {
    let world = World::new();
    world.init(&[]);
    let _daemon = world.start_detached();
    let out = world.run(&["sidecar", "status", "--json"]);
    assert_success(&out);
    std::fs::remove_file(world.state().audit_log()).unwrap();
    wait_unavailable(&world);
    let out = world.run(&["sidecar", "status", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sidecar = status["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "sidecar")
        .unwrap()
        .clone();
    assert_eq!(sidecar["state"], "unhealthy", "{status:#}");
    let degraded = &sidecar["health"]["degraded"][0];
    assert_eq!(degraded["what"], "audit log", "{status:#}");
    assert!(
        degraded["message"]
            .as_str()
            .unwrap()
            .contains("deleted or renamed"),
        "{status:#}"
    );
    let out = world.run(&["sidecar", "status"]);
    assert!(
        stdout(&out).contains("audit_unavailable"),
        "{}",
        stdout(&out)
    );
    let out = world.run(&["doctor"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains("audit_unavailable") && text.contains("deleted or renamed"),
        "{text}"
    );
}
