//! Prometheus metrics of both daemons, scraped by the REAL Prometheus server (Debian's
//! `prometheus`): port 0 everywhere — the daemons publish their bound metrics addresses in the
//! state dir, the scrape config is written from them, Prometheus' own port is read from its log —
//! then calls through the Sidecar, and Prometheus' HTTP API must show the counters they moved.
//! Plus the attacks: metrics never through the proxy port, no agent-chosen label values, loopback
//! only unless allowed.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::upstream::FileUpstream;
use common::{ChildGuard, World, assert_success, repo, stderr, stdout, wait_for};

const LONG: Duration = Duration::from_secs(60);

const METRICS_SECTIONS: &str = "
[sidecar.metrics]
listen = \"127.0.0.1:0\"

[authority.metrics]
listen = \"127.0.0.1:0\"
";

/// A world whose pair runs with both metrics endpoints on and a real local upstream mapped;
/// stopped when dropped.
struct Stack {
    world: World,
    /// `python3 -m http.server`.
    upstream: Option<FileUpstream>,
}

impl Stack {
    fn start() -> Self {
        Self::start_with(|_| {})
    }

    /// Like [`Stack::start`], after `prepare` had its say on the world.
    fn start_with(prepare: impl FnOnce(&World)) -> Self {
        let world = World::new();
        world.init(&[]);
        let mut config = std::fs::read_to_string(world.config_path()).unwrap();
        config.push_str(METRICS_SECTIONS);
        std::fs::write(world.config_path(), config).unwrap();
        let upstream = FileUpstream::serving(&world);
        prepare(&world);
        let stack = Self {
            world,
            upstream: Some(upstream),
        };
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

    fn upstream_port(&self) -> u16 {
        self.upstream.as_ref().expect("an upstream").port
    }

    /// `firma token issue --json` for `actions` (scope `*`): (token, token id).
    fn token(&self, actions: &[&str]) -> (String, String) {
        let mut args = vec!["token", "issue", "--agent", "codex", "--json"];
        for action in actions {
            args.extend(["--action", action]);
        }
        let out = self.world.run(&args);
        assert_success(&out);
        let issued: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            issued["token"].as_str().unwrap().to_string(),
            issued["token_id"].as_str().unwrap().to_string(),
        )
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.world.stop_daemons();
    }
}

/// `curl` through the proxy (with a token as the proxy password, or none): (status, body).
fn through_proxy(proxy: &str, token: Option<&str>, url: &str) -> (u16, String) {
    let proxy = match token {
        Some(token) => format!("http://firma:{token}@{proxy}"),
        None => format!("http://{proxy}"),
    };
    curl(&["--proxy", &proxy, url])
}

/// A request straight to `url` (no proxy): (status, body).
fn request(method: &str, url: &str) -> (u16, String) {
    curl(&["--noproxy", "*", "-X", method, url])
}

fn curl(args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .stdin(Stdio::null())
        .output()
        .expect("curl");
    let text = stdout(&out);
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// A plain tunnel held open: `CONNECT` through the proxy, answered 200.
struct HeldTunnel(TcpStream);

impl HeldTunnel {
    fn open(proxy: &str, token: &str, target: &str) -> Self {
        let mut stream = TcpStream::connect(proxy).unwrap();
        stream.set_read_timeout(Some(LONG)).unwrap();
        let credentials =
            base64::engine::general_purpose::STANDARD.encode(format!("firma:{token}"));
        write!(
            stream,
            "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {credentials}\r\n\r\n"
        )
        .unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(stream.read(&mut byte).unwrap(), 1, "the proxy hung up");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        Self(stream)
    }

    fn close(self) {
        let _ = self.0.shutdown(std::net::Shutdown::Both);
    }
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

impl Prometheus {
    /// Evaluate `promql`: the number of series in its result, or Prometheus' error.
    fn evaluate(&self, promql: &str) -> Result<usize, String> {
        let out = Command::new("curl")
            .args(["-s", "--max-time", "10", "--noproxy", "*", "-G"])
            .arg(format!("{}/api/v1/query", self.url))
            .args(["--data-urlencode", &format!("query={promql}")])
            .stdin(Stdio::null())
            .output()
            .expect("curl");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .map_err(|err| format!("{err}: {}", stdout(&out)))?;
        if json["status"] != "success" {
            return Err(json.to_string());
        }
        Ok(json["data"]["result"].as_array().map_or(0, Vec::len))
    }

    /// Wait until `promql` has a value of at least `min`.
    #[track_caller]
    fn expect_at_least(&self, promql: &str, min: f64) {
        let mut last = None;
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(&format!("{promql} >= {min}"), LONG, || {
                last = self.query(promql);
                last.filter(|v| *v >= min).map(|_| ())
            })
        }));
        assert!(
            found.is_ok(),
            "{promql}: last value {last:?}, want >= {min}"
        );
    }
}

/// The text of every ```promql block of a Markdown page (each block one query).
fn promql_blocks(markdown: &str) -> Vec<String> {
    markdown
        .split("```promql\n")
        .skip(1)
        .filter_map(|rest| {
            rest.split_once("```")
                .map(|(query, _)| query.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect()
}

fn scratch(world: &World, name: &str) -> PathBuf {
    let dir = world.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_real_prometheus_scrapes_both_daemons() {
    // A mapped port where nothing listens: an allowed call there fails upstream.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let stack = Stack::start_with(|world| world.map_local_port(dead));
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
    let (token, _) = stack.token(&["communication.internal.send", "communication.external.send"]);
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

    // The Sidecar before any call: judging, with the bundle in force, its log healthy.
    prometheus.expect("firma_sidecar_ready", 1.0);
    prometheus.expect("count(firma_sidecar_policy_bundle == 1)", 1.0);
    prometheus.expect_at_least("firma_sidecar_policy_bundle_ttl_seconds", 1.0);
    prometheus.expect_at_least("firma_sidecar_policy_bundles_received_total", 1.0);
    prometheus.expect("firma_sidecar_audit_unavailable", 0.0);

    // Calls: two allowed to the local upstream, one allowed to a dead port (502), one to the
    // upstream without a token, three to a provider without a token (denied before anything
    // leaves the machine), one to an unmapped host.
    let proxy = stack.proxy();
    let local = format!("http://127.0.0.1:{}/hello.txt", stack.upstream_port());
    for _ in 0..2 {
        let (status, body) = through_proxy(&proxy, Some(&token), &local);
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = through_proxy(&proxy, Some(&token), &format!("http://127.0.0.1:{dead}/"));
    assert_eq!(status, 502, "{body}");
    assert_eq!(through_proxy(&proxy, None, &local).0, 403);
    for _ in 0..3 {
        let (status, body) = through_proxy(&proxy, None, "http://api.anthropic.com/v1/messages");
        assert_eq!(status, 403, "{body}");
    }
    let (status, body) = through_proxy(
        &proxy,
        Some(&token),
        "http://exfil-7f3a.example/agent-chosen-path",
    );
    assert_eq!(status, 403, "{body}");

    let decisions = |decision: &str, class: &str, reason: &str| {
        format!(
            "firma_sidecar_decisions_total{{decision=\"{decision}\",action_class=\"{class}\",reason=\"{reason}\"}}"
        )
    };
    prometheus.expect(
        &decisions("allow", "communication.internal.send", "allowed"),
        3.0,
    );
    prometheus.expect(
        &decisions("deny", "communication.internal.send", "token_missing"),
        1.0,
    );
    prometheus.expect(
        &decisions("deny", "communication.external.send", "token_missing"),
        3.0,
    );
    prometheus.expect(&decisions("deny", "none", "unmapped"), 1.0);
    prometheus.expect("sum(firma_sidecar_decisions_total)", 8.0);
    prometheus.expect(
        "firma_sidecar_upstream_failures_total{action_class=\"communication.internal.send\",reason=\"upstream_error\"}",
        1.0,
    );
    // Deny rate by action class (docs/metrics.md) answers over the calls made.
    prometheus.expect(
        "sum by (action_class) (firma_sidecar_decisions_total{decision=\"deny\",action_class=\"communication.external.send\"})",
        3.0,
    );
    // No agent-chosen text (host, path, agent) is a label value anywhere.
    let scraped = request("GET", &format!("http://{sidecar_metrics}/metrics")).1;
    assert!(
        !scraped.contains("exfil")
            && !scraped.contains("agent-chosen")
            && !scraped.contains("codex"),
        "{scraped}"
    );

    // Histograms: one decision latency per decision, one upstream latency per forwarded call
    // (the failed one included).
    prometheus.expect("firma_sidecar_decision_duration_seconds_count", 8.0);
    prometheus.expect("firma_sidecar_upstream_duration_seconds_count", 3.0);
    prometheus.expect(
        "firma_sidecar_decision_duration_seconds_bucket{le=\"+Inf\"}",
        8.0,
    );
    prometheus.expect_at_least(
        "histogram_quantile(0.99, rate(firma_sidecar_decision_duration_seconds_bucket[1m]))",
        0.0,
    );

    // The audit log: every record (8 decisions, 1 upstream failure) appended, written, fsynced;
    // nothing queued, nothing failed.
    prometheus.expect("firma_sidecar_audit_append_duration_seconds_count", 9.0);
    prometheus.expect("firma_sidecar_audit_queue_depth", 0.0);
    prometheus.expect("firma_sidecar_audit_failures_total", 0.0);
    prometheus.expect_at_least("firma_sidecar_audit_written_bytes_total", 9.0 * 200.0);
    prometheus.expect_at_least("firma_sidecar_audit_fsyncs_total", 1.0);
    prometheus.expect_at_least("firma_sidecar_audit_fsynced_records_total", 9.0);
    prometheus.expect_at_least("firma_sidecar_audit_busy_seconds_total", 0.000_001);

    // Caches: the token verified on the first allowed call, found on the two others (the
    // unmapped call is refused before its token is read).
    prometheus.expect(
        "firma_sidecar_cache_lookups_total{cache=\"tokens\",result=\"miss\"}",
        1.0,
    );
    prometheus.expect(
        "firma_sidecar_cache_lookups_total{cache=\"tokens\",result=\"hit\"}",
        2.0,
    );
    prometheus.expect("firma_sidecar_cache_entries{cache=\"tokens\"}", 1.0);
    prometheus.expect_at_least("firma_sidecar_cache_bytes{cache=\"tokens\"}", 1.0);

    // A plain tunnel: open while held, then closed by the client.
    let target = format!("127.0.0.1:{}", stack.upstream_port());
    let tunnel = HeldTunnel::open(&proxy, &token, &target);
    prometheus.expect("firma_sidecar_tunnels_open{kind=\"plain\"}", 1.0);
    tunnel.close();
    prometheus.expect("firma_sidecar_tunnels_open{kind=\"plain\"}", 0.0);
    prometheus.expect(
        "firma_sidecar_tunnels_closed_total{ended_by=\"connection\"}",
        1.0,
    );
    prometheus.expect(
        &decisions("allow", "communication.internal.send", "allowed"),
        4.0,
    );

    // Every query docs/metrics.md offers is valid PromQL over these metrics; the ones that are
    // not alerts (comparisons) have an answer after the traffic above.
    let doc = std::fs::read_to_string(repo("docs/metrics.md")).unwrap();
    let queries = promql_blocks(&doc);
    assert!(queries.len() >= 10, "{queries:?}");
    for query in &queries {
        let alert = query.contains(" > ") || query.contains(" == ");
        let mut last = Err(String::new());
        let answered = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            wait_for(&format!("an answer to {query}"), LONG, || {
                last = prometheus.evaluate(query);
                match &last {
                    Ok(series) if alert || *series > 0 => Some(()),
                    _ => None,
                }
            })
        }));
        assert!(answered.is_ok(), "docs/metrics.md: {query}: {last:?}");
    }

    // A revocation reaches the Sidecar.
    let (_, revoked) = stack.token(&["communication.internal.send"]);
    assert_success(&stack.world.run(&["token", "revoke", &revoked]));
    prometheus.expect("firma_sidecar_revoked_tokens", 1.0);
    prometheus.expect("firma_authority_revocations_total", 1.0);
}

#[test]
fn metrics_are_off_by_default() {
    let world = World::new();
    world.init(&[]);
    assert_success(&world.run(&["sidecar", "start", "--detach"]));
    let stack = Stack {
        world,
        upstream: None,
    };
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
    for (role, listen) in [("authority", "0.0.0.0:0"), ("sidecar", "[::]:0")] {
        std::fs::write(
            world.config_path(),
            format!("{base}\n[{role}.metrics]\nlisten = \"{listen}\"\n"),
        )
        .unwrap();
        let out = world.run(&["config", "check"]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        let line = base.lines().count() + 3;
        assert!(
            err.contains(&format!("firma.toml:{line}:"))
                && err.contains(&format!(
                    "[{role}.metrics].listen {listen} is not a loopback address"
                ))
                && err.contains("allow_remote"),
            "{err}"
        );
        // Nothing starts half: the pair refuses the config before any process exists.
        let out = world.run(&["sidecar", "start", "--detach"]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(!world.state_dir().join("authority.pid").exists());

        std::fs::write(
            world.config_path(),
            format!("{base}\n[{role}.metrics]\nlisten = \"{listen}\"\nallow_remote = true\n"),
        )
        .unwrap();
        assert_success(&world.run(&["config", "check"]));
    }
}

#[test]
fn the_metrics_endpoints_serve_only_get_metrics() {
    let stack = Stack::start();
    for role in ["authority", "sidecar"] {
        let addr = stack.state_file(&format!("{role}.metrics.listen"));
        let (status, body) = request("GET", &format!("http://{addr}/metrics"));
        assert_eq!(status, 200);
        assert!(
            body.ends_with("# EOF\n"),
            "OpenMetrics text ends with # EOF: {body}"
        );
        assert!(body.contains("firma_build_info{version="), "{body}");
        assert!(body.contains(&format!("firma_{role}_")), "{body}");
        assert_eq!(request("POST", &format!("http://{addr}/metrics")).0, 405);
        assert_eq!(request("DELETE", &format!("http://{addr}/metrics")).0, 405);
        assert_eq!(request("GET", &format!("http://{addr}/")).0, 404);
        assert_eq!(request("GET", &format!("http://{addr}/debug/pprof")).0, 404);
    }
}

/// The agent's only way out is the proxy port: metrics are not served there, and neither
/// daemon's metrics listener is a destination through it — even when the operator maps every
/// local port.
#[test]
fn metrics_are_never_served_through_the_proxy_port() {
    let stack = Stack::start_with(|world| {
        let rules = world.project_dir().join("mapping-rules.toml");
        let mut text = std::fs::read_to_string(&rules).unwrap();
        text.push_str(
            "\n[[rules]]\nhost = \"127.0.0.1\"\naction_class = \"communication.internal.send\"\n",
        );
        std::fs::write(rules, text).unwrap();
    });
    let proxy = stack.proxy();
    let sidecar_metrics = stack.state_file("sidecar.metrics.listen");
    let authority_metrics = stack.state_file("authority.metrics.listen");

    // `GET /metrics` to the proxy port itself: a request the proxy will not read.
    let (status, body) = request("GET", &format!("http://{proxy}/metrics"));
    assert_eq!(status, 400, "{body}");
    assert!(!body.contains("firma_build_info"), "{body}");

    // Through the proxy to either metrics listener, with a token granting the class.
    let (token, _) = stack.token(&["communication.internal.send"]);
    for addr in [&sidecar_metrics, &authority_metrics] {
        let (status, body) = through_proxy(&proxy, Some(&token), &format!("http://{addr}/metrics"));
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("self_target"), "{body}");
        assert!(!body.contains("firma_build_info"), "{body}");
    }
    // The control: the same token and rule reach the local upstream.
    let local = format!("http://127.0.0.1:{}/hello.txt", stack.upstream_port());
    assert_eq!(through_proxy(&proxy, Some(&token), &local).0, 200);

    let scraped = request("GET", &format!("http://{sidecar_metrics}/metrics")).1;
    assert!(scraped.contains("reason=\"self_target\"} 2"), "{scraped}");
    assert!(
        scraped.contains(
            "firma_sidecar_decisions_total{decision=\"deny\",action_class=\"none\",reason=\"malformed_request\"} 1"
        ),
        "{scraped}"
    );
}
