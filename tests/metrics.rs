//! Prometheus metrics of both daemons, scraped by the REAL Prometheus server (Debian's
//! `prometheus`): port 0 everywhere — the daemons publish their bound metrics addresses in the
//! state dir, the scrape config is written from them, Prometheus' own port is read from its log —
//! then calls through the Sidecar, and Prometheus' HTTP API must show the counters they moved.
//! Plus the attacks: metrics never through the proxy port, no agent-chosen label values, loopback
//! only unless allowed.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{ChildGuard, World, assert_success, stderr, stdout, wait_for};

const LONG: Duration = Duration::from_secs(60);

const METRICS_SECTIONS: &str = "
[sidecar.metrics]
listen = \"127.0.0.1:0\"

[authority.metrics]
listen = \"127.0.0.1:0\"
";

/// A world whose pair runs with both metrics endpoints on; stopped when dropped.
struct Stack {
    world: World,
}

impl Stack {
    fn start() -> Self {
        let world = World::new();
        world.init(&[]);
        let mut config = std::fs::read_to_string(world.config_path()).unwrap();
        config.push_str(METRICS_SECTIONS);
        std::fs::write(world.config_path(), config).unwrap();
        let stack = Self { world };
        assert_success(&stack.world.run(&["sidecar", "start", "--detach"]));
        stack
    }

    fn state_file(&self, name: &str) -> String {
        std::fs::read_to_string(self.world.state_dir().join(name))
            .unwrap_or_else(|err| panic!("{name}: {err}"))
            .trim()
            .to_string()
    }

    fn proxy(&self) -> String {
        self.state_file("sidecar.listen")
    }

    /// `firma token issue` for `actions` (scope `*`).
    fn token(&self, actions: &[&str]) -> String {
        let mut args = vec!["token", "issue", "--agent", "codex"];
        for action in actions {
            args.extend(["--action", action]);
        }
        let out = self.world.run(&args);
        assert_success(&out);
        stdout(&out).trim().to_string()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.world.run(&["sidecar", "stop", "--timeout", "1"]);
    }
}

/// `curl` through the proxy (with a token as the proxy password, or none): the HTTP status.
fn through_proxy(proxy: &str, token: Option<&str>, url: &str) -> u16 {
    let proxy = match token {
        Some(token) => format!("http://firma:{token}@{proxy}"),
        None => format!("http://{proxy}"),
    };
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "20",
        ])
        .args(["--proxy", &proxy, url])
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .stdin(Stdio::null())
        .output()
        .expect("curl");
    stdout(&out).trim().parse().unwrap_or(0)
}

/// A plain GET (no proxy): (status, body).
fn get(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--max-time",
            "20",
            "-w",
            "\n%{http_code}",
            "--noproxy",
            "*",
            url,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("curl");
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The real Prometheus server, scraping `targets` (job name → address) every second.
struct Prometheus {
    _child: ChildGuard,
    url: String,
}

impl Prometheus {
    fn start(dir: &Path, targets: &[(&str, &str)]) -> Self {
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (job, addr) in targets {
            config.push_str(&format!(
                "  - job_name: {job}\n    static_configs:\n      - targets: ['{addr}']\n"
            ));
        }
        let file = dir.join("prometheus.yml");
        std::fs::write(&file, config).unwrap();
        let mut child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg("--web.listen-address=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run prometheus (apt-get install prometheus)");
        // Port 0: the bound address is in its log (`msg="Listening on" address=127.0.0.1:N`).
        let log = child.stderr.take().unwrap();
        let guard = ChildGuard::new(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(log).lines().map_while(Result::ok) {
                if line.contains("msg=\"Listening on\"")
                    && let Some(addr) = line.split("address=").nth(1)
                {
                    let _ = tx.send(addr.trim().to_string());
                }
            }
        });
        let addr = rx.recv_timeout(LONG).expect("prometheus listening");
        Self {
            _child: guard,
            url: format!("http://{addr}"),
        }
    }

    /// The value of an instant query with one result, once it has one.
    fn query(&self, promql: &str) -> Option<f64> {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "--noproxy", "*", "-G"])
            .arg(format!("{}/api/v1/query", self.url))
            .args(["--data-urlencode", &format!("query={promql}")])
            .stdin(Stdio::null())
            .output()
            .expect("curl");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        let result = json["data"]["result"].as_array()?;
        let [sample] = result.as_slice() else {
            return None;
        };
        sample["value"][1].as_str()?.parse().ok()
    }

    /// Wait until `promql` evaluates to `expected` (scrapes are every second).
    #[track_caller]
    fn expect(&self, promql: &str, expected: f64) {
        let mut last = None;
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(&format!("{promql} == {expected}"), LONG, || {
                last = self.query(promql);
                (last == Some(expected)).then_some(())
            })
        }));
        assert!(
            found.is_ok(),
            "{promql}: last value {last:?}, want {expected}"
        );
    }
}

fn scratch(world: &World, name: &str) -> PathBuf {
    let dir = world.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_real_prometheus_scrapes_both_daemons() {
    let stack = Stack::start();
    let sidecar_metrics = stack.state_file("sidecar.metrics.listen");
    let authority_metrics = stack.state_file("authority.metrics.listen");
    let prometheus = Prometheus::start(
        &scratch(&stack.world, "prometheus"),
        &[
            ("firma-sidecar", &sidecar_metrics),
            ("firma-authority", &authority_metrics),
        ],
    );
    prometheus.expect("up{job=\"firma-sidecar\"}", 1.0);
    prometheus.expect("up{job=\"firma-authority\"}", 1.0);

    // The Authority: one token granted, one denied by policy.
    let token = stack.token(&["communication.external.send"]);
    let denied = stack.world.run(&[
        "token",
        "issue",
        "--agent",
        "codex",
        "--action",
        "code.write",
    ]);
    assert_eq!(denied.status.code(), Some(2), "{}", stderr(&denied));
    prometheus.expect("firma_authority_tokens_issued_total", 1.0);
    prometheus.expect(
        "firma_authority_tokens_denied_total{reason=\"POLICY_DENIED\"}",
        1.0,
    );
    prometheus.expect("firma_authority_watchers{stream=\"policy_bundle\"}", 1.0);
    prometheus.expect(
        "firma_authority_rpc_duration_seconds_count{method=\"IssueCapability\"}",
        2.0,
    );

    // The Sidecar: calls without a token are denied before anything leaves the machine.
    let proxy = stack.proxy();
    for _ in 0..3 {
        assert_eq!(
            through_proxy(&proxy, None, "http://api.anthropic.com/v1/messages"),
            403
        );
    }
    let _ = token;
    prometheus.expect("sum(firma_sidecar_decisions_total{decision=\"deny\"})", 3.0);
}

#[test]
fn metrics_are_off_by_default() {
    let world = World::new();
    world.init(&[]);
    assert_success(&world.run(&["sidecar", "start", "--detach"]));
    let stack = Stack { world };
    for role in ["sidecar", "authority"] {
        assert!(
            !stack
                .world
                .state_dir()
                .join(format!("{role}.metrics.listen"))
                .exists()
        );
    }
}

#[test]
fn a_non_loopback_metrics_address_is_refused_unless_allowed() {
    let world = World::new();
    world.init(&[]);
    let base = std::fs::read_to_string(world.config_path()).unwrap();
    std::fs::write(
        world.config_path(),
        format!("{base}\n[authority.metrics]\nlisten = \"0.0.0.0:0\"\n"),
    )
    .unwrap();
    let out = world.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let line = base.lines().count() + 3;
    assert!(
        err.contains(&format!("firma.toml:{line}:"))
            && err.contains("[authority.metrics].listen 0.0.0.0:0 is not a loopback address")
            && err.contains("allow_remote"),
        "{err}"
    );
    // Nothing starts half: the pair refuses the config before any process exists.
    let out = world.run(&["sidecar", "start", "--detach"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!world.state_dir().join("authority.pid").exists());

    std::fs::write(
        world.config_path(),
        format!("{base}\n[authority.metrics]\nlisten = \"0.0.0.0:0\"\nallow_remote = true\n"),
    )
    .unwrap();
    assert_success(&world.run(&["config", "check"]));
}

#[test]
fn the_metrics_endpoint_serves_only_get_metrics() {
    let stack = Stack::start();
    let addr = stack.state_file("authority.metrics.listen");
    let (status, body) = get(&format!("http://{addr}/metrics"));
    assert_eq!(status, 200);
    assert!(
        body.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF: {body}"
    );
    assert!(body.contains("firma_build_info{version="), "{body}");
    assert_eq!(get(&format!("http://{addr}/")).0, 404);
    assert_eq!(get(&format!("http://{addr}/debug/pprof")).0, 404);
}
