//! Sidecar vs Squid: allowed-request throughput and added latency, same upstream, same load
//! generator, same run. Not part of the test suite; run it with `benches/proxy-vs-squid.sh`
//! (or `cargo bench --bench proxy`). Needs `wrk` and Debian's `squid` on PATH.
//!
//! - upstream: a small hyper server in this process (`GET /bench` → 2-byte body);
//! - Squid: plain forwarding — `http_access allow all`, no cache, no access log;
//! - Sidecar: `firma authority` + `firma sidecar` from a fresh `firma init` project, every
//!   request classified, token-checked, Cedar-evaluated and written as a signed, chained
//!   audit record (fsync batched, the default);
//! - load: `wrk` with a Lua script sending absolute-URI requests through the proxy;
//!   throughput at 16 connections, latency p50 at 1 connection (added = proxy − direct);
//! - CPU per request: the proxy process's utime + stime (`/proc/<pid>/stat`, all threads) over
//!   the throughput run, divided by the requests wrk completed in it.
//!
//! Env: `BENCH_SECS` (default 10) per measurement, `BENCH_ROUNDS` (default 3, alternating;
//! the median round is reported), `BENCH_PIN=1` (a core each: both proxies on CPU 0, wrk and
//! the upstream on CPU 1, so neither side preempts the other; the Sidecar then runs one request
//! thread, as Squid runs one worker).

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ChildGuard;
use firma::proto::IssueCapabilityRequest;

const FIRMA: &str = env!("CARGO_BIN_EXE_firma");

/// The firma binary under test: `FIRMA_BENCH_EXE` (to compare two builds) or this build's.
fn firma_exe() -> String {
    std::env::var("FIRMA_BENCH_EXE").unwrap_or_else(|_| FIRMA.to_string())
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo bench -- --list` and friends
    }
    for tool in ["wrk", "squid"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map(|s| !s.success())
            .unwrap_or(true)
        {
            eprintln!(
                "proxy bench: `{tool}` is not installed (apt-get install -y squid wrk); skipping"
            );
            return;
        }
    }
    let secs: u64 = env_or("BENCH_SECS", 10);
    let rounds: usize = env_or("BENCH_ROUNDS", 3);
    let pinned = env_or("BENCH_PIN", 0) == 1;
    if pinned {
        // Before any thread or child exists: everything inherits the load's CPU; the proxies
        // move once started.
        pin_to(None, LOAD_CPU);
    }
    let root = tempfile::Builder::new()
        .prefix("firma-bench-")
        .tempdir()
        .unwrap();
    let dir = root.path();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let upstream = runtime.block_on(start_upstream());

    let (sidecar_addr, token, daemons) = start_firma(dir, &runtime, upstream);
    let (squid_addr, squid) = start_squid(dir);
    let sidecar_pid = daemons[0].id();
    let squid_pid = squid.id();
    if pinned {
        pin_to(Some(sidecar_pid), PROXY_CPU);
        pin_to(Some(squid_pid), PROXY_CPU);
    }
    let target = format!("http://{upstream}/bench");

    let direct_script = write_script(dir, "direct", &target, None, false);
    let squid_script = write_script(dir, "squid", &target, None, true);
    let sidecar_script = write_script(dir, "sidecar", &target, Some(&token), true);

    // Warm up every path once (pools, leaf caches, Squid's first-request work).
    for (addr, script) in [
        (upstream, &direct_script),
        (squid_addr, &squid_script),
        (sidecar_addr, &sidecar_script),
    ] {
        let _ = wrk(addr, script, 4, 1);
    }

    let mut results: Vec<[Measure; 3]> = Vec::new();
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        let direct = measure(upstream, &direct_script, secs, None);
        // Alternate which proxy goes first, so neither always follows the other.
        let (squid, sidecar) = if round % 2 == 0 {
            let squid = measure(squid_addr, &squid_script, secs, Some(squid_pid));
            (
                squid,
                measure(sidecar_addr, &sidecar_script, secs, Some(sidecar_pid)),
            )
        } else {
            let sidecar = measure(sidecar_addr, &sidecar_script, secs, Some(sidecar_pid));
            (
                measure(squid_addr, &squid_script, secs, Some(squid_pid)),
                sidecar,
            )
        };
        results.push([direct, squid, sidecar]);
    }
    let ratios: Vec<String> = results
        .iter()
        .map(|r| format!("{:.2}", r[2].rps / r[1].rps))
        .collect();
    let cpu_ratios: Vec<String> = results
        .iter()
        .map(|r| format!("{:.2}", r[2].cpu_us_per_request / r[1].cpu_us_per_request))
        .collect();
    // The round with the median sidecar/squid throughput ratio.
    results.sort_by(|a, b| {
        (a[2].rps / a[1].rps)
            .partial_cmp(&(b[2].rps / b[1].rps))
            .unwrap()
    });
    let [direct, squid, sidecar] = results[results.len() / 2].clone();

    let audit = std::fs::read_to_string(dir.join("state/audit.jsonl")).unwrap_or_default();
    let records = audit.lines().filter(|l| l.contains("\"decision\"")).count();
    let denies = audit
        .lines()
        .filter(|l| l.contains("\"decision\":\"deny\""))
        .count();

    println!();
    println!("proxy benchmark: wrk, {secs}s per measurement, {rounds} rounds (median round shown)");
    println!(
        "  upstream: in-process hyper, GET /bench; cores: {}",
        cores()
    );
    if pinned {
        println!(
            "  pinned (BENCH_PIN=1): both proxies on CPU {PROXY_CPU}, wrk and the upstream on CPU {LOAD_CPU}"
        );
    }
    println!(
        "  {:<10} {:>14} {:>14} {:>16}",
        "", "req/s (c=16)", "p50 (c=1)", "added p50"
    );
    for (name, m) in [
        ("direct", &direct),
        ("squid", &squid),
        ("sidecar", &sidecar),
    ] {
        let added = if name == "direct" {
            "-".to_string()
        } else {
            format!("{:.0} µs", m.p50_us - direct.p50_us)
        };
        println!(
            "  {:<10} {:>14.0} {:>11.0} µs {:>16}",
            name, m.rps, m.p50_us, added
        );
    }
    let ratio = sidecar.rps / squid.rps;
    let squid_added = squid.p50_us - direct.p50_us;
    let sidecar_added = sidecar.p50_us - direct.p50_us;
    println!(
        "  throughput sidecar/squid = {ratio:.2}x (median of {rounds} rounds; target >= 2.2x): {}",
        verdict(ratio >= 2.2)
    );
    println!(
        "  added p50 sidecar {sidecar_added:.0} µs vs squid {squid_added:.0} µs = {:.2}x (target <= 0.8x): {}",
        sidecar_added / squid_added,
        verdict(sidecar_added <= 0.8 * squid_added)
    );
    let mut cpu_each: Vec<f64> = cpu_ratios.iter().filter_map(|r| r.parse().ok()).collect();
    cpu_each.sort_by(f64::total_cmp);
    let cpu_median = cpu_each[cpu_each.len() / 2];
    println!(
        "  CPU per request (utime+stime / requests, c=16), median round: sidecar {:.1} µs, squid {:.1} µs; sidecar/squid median of rounds = {cpu_median:.2}x (target <= 0.75x): {}",
        sidecar.cpu_us_per_request,
        squid.cpu_us_per_request,
        verdict(cpu_median <= 0.75)
    );
    if !pinned {
        print_ceiling(&sidecar, &squid);
    }
    println!(
        "  sidecar/squid ratio of each round, in order: {}",
        ratios.join(", ")
    );
    println!(
        "  sidecar/squid CPU per request of each round, in order: {}",
        cpu_ratios.join(", ")
    );
    println!("  audit records written by the sidecar: {records} ({denies} denies)");

    let out = Command::new(firma_exe())
        .args(["audit", "verify", "--state-dir"])
        .arg(dir.join("state"))
        .env("HOME", dir.join("home"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .current_dir(dir.join("ws"))
        .output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        // The verdict line (`ok: …` or `error: …`), not the key's fingerprint.
        let verdict = text
            .lines()
            .find(|l| l.starts_with("ok:") || l.starts_with("error:"))
            .unwrap_or("");
        println!(
            "  firma audit verify (exit {:?}): {verdict}",
            out.status.code()
        );
    }
}

/// What the host allows: the Sidecar and the load (wrk + upstream) share the cores, so its
/// throughput cannot exceed cores / (its CPU per request + the load's). (Not when pinned: then
/// each side has a core of its own.)
fn print_ceiling(sidecar: &Measure, squid: &Measure) {
    let ceiling = cores() as f64 * 1e6 / (sidecar.cpu_us_per_request + sidecar.load_us_per_request);
    let needed = (cores() as f64 * 1e6 / (2.2 * squid.rps)) - sidecar.load_us_per_request;
    println!(
        "  load (wrk + upstream) CPU per request in the sidecar run: {:.1} µs; with the sidecar's {:.1} µs, {} cores allow at most {ceiling:.0} req/s = {:.2}x squid's; 2.2x would need the sidecar at <= {needed:.1} µs per request ({:.2}x squid's)",
        sidecar.load_us_per_request,
        sidecar.cpu_us_per_request,
        cores(),
        ceiling / squid.rps,
        needed / squid.cpu_us_per_request,
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// With `BENCH_PIN=1`: the proxies' CPU and the load's.
const PROXY_CPU: usize = 0;
const LOAD_CPU: usize = 1;

/// Pin every thread of `pid` (`None`: this process, before it starts threads) to `cpu`.
fn pin_to(pid: Option<u32>, cpu: usize) {
    match pid {
        None => {
            let mut set = nix::sched::CpuSet::new();
            set.set(cpu).expect("a CPU index");
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
                .expect("pin the bench to its CPU");
        }
        Some(pid) => {
            let status = Command::new("taskset")
                .args(["-a", "-cp", &cpu.to_string(), &pid.to_string()])
                .stdout(Stdio::null())
                .status()
                .expect("run taskset");
            assert!(status.success(), "taskset -a -cp {cpu} {pid} failed");
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[derive(Debug, Clone)]
struct Measure {
    rps: f64,
    p50_us: f64,
    /// CPU time of the proxy process per request in the throughput run (NaN for direct).
    cpu_us_per_request: f64,
    /// CPU time of the other side per request in the same run: wrk and the in-process upstream.
    load_us_per_request: f64,
}

/// Throughput at 16 connections (with the CPU time `pid` spent on it), then p50 at 1.
fn measure(addr: SocketAddr, script: &Path, secs: u64, pid: Option<u32>) -> Measure {
    let cpu_before = pid.map(cpu_micros);
    let load_before = load_cpu_micros();
    let run = wrk(addr, script, 16, secs);
    let load_us_per_request = (load_cpu_micros() - load_before) / run.requests;
    let cpu_us_per_request = match (pid, cpu_before) {
        (Some(pid), Some(before)) => (cpu_micros(pid) - before) / run.requests,
        _ => f64::NAN,
    };
    let latency = wrk(addr, script, 1, secs.div_ceil(2));
    Measure {
        rps: run.rps,
        p50_us: latency.p50_us,
        cpu_us_per_request,
        load_us_per_request,
    }
}

/// utime + stime of process `pid` (all its threads), in µs.
fn cpu_micros(pid: u32) -> f64 {
    stat_micros(&pid.to_string(), 2)
}

/// This process's CPU time (the in-process upstream) plus that of its reaped children (each wrk
/// run: `Command::output` waits for it; the proxies are not reaped before the end), in µs.
fn load_cpu_micros() -> f64 {
    stat_micros("self", 4)
}

/// The sum of `count` CPU-time fields of `/proc/<pid>/stat` from utime on (utime, stime,
/// cutime, cstime: fields 14 to 17), in µs.
fn stat_micros(pid: &str, count: usize) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // Fields after the parenthesised command name, counted from field 3.
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let ticks: f64 = after
        .split_whitespace()
        .skip(11)
        .take(count)
        .map(|field| field.parse::<f64>().expect("a tick count"))
        .sum();
    ticks * 1_000_000.0 / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// What one wrk run reported.
struct WrkRun {
    rps: f64,
    p50_us: f64,
    requests: f64,
}

/// Run wrk. Non-2xx responses abort the benchmark.
fn wrk(addr: SocketAddr, script: &Path, connections: u32, secs: u64) -> WrkRun {
    let threads = connections.min(2);
    let out = Command::new("wrk")
        .args([
            "-t",
            &threads.to_string(),
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{secs}s"),
            "--latency",
            "-s",
        ])
        .arg(script)
        .arg(format!("http://{addr}/"))
        .output()
        .expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !text.contains("Non-2xx"),
        "non-2xx responses through {addr}:\n{text}"
    );
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk output:\n{text}"));
    let p50 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("50%"))
        .map(|v| parse_wrk_time(v.trim()))
        .unwrap_or_else(|| panic!("no p50 in wrk output:\n{text}"));
    // "  123456 requests in 8.00s, 10.00MB read"
    let requests = text
        .lines()
        .find_map(|l| l.trim().split_once(" requests in "))
        .and_then(|(n, _)| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk output:\n{text}"));
    WrkRun {
        rps,
        p50_us: p50,
        requests,
    }
}

/// `123.45us`, `1.23ms`, `2.00s` → µs.
fn parse_wrk_time(text: &str) -> f64 {
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (value, unit) = text.split_at(split);
    let value: f64 = value.parse().unwrap_or(f64::NAN);
    match unit {
        "us" => value,
        "ms" => value * 1_000.0,
        "s" => value * 1_000_000.0,
        _ => f64::NAN,
    }
}

/// A wrk script: absolute-URI requests when going through a proxy.
fn write_script(dir: &Path, name: &str, target: &str, token: Option<&str>, proxy: bool) -> PathBuf {
    let host = target
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap();
    let path = if proxy {
        target.to_string()
    } else {
        "/bench".to_string()
    };
    let auth = token.map_or(String::new(), |t| {
        use base64::Engine;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("firma:{t}"));
        format!("wrk.headers[\"Proxy-Authorization\"] = \"Basic {basic}\"\n")
    });
    let script = format!(
        "wrk.method = \"GET\"\nwrk.path = \"{path}\"\nwrk.headers[\"Host\"] = \"{host}\"\n{auth}"
    );
    let file = dir.join(format!("{name}.lua"));
    std::fs::write(&file, script).unwrap();
    file
}

async fn start_upstream() -> SocketAddr {
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        bytes::Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn firma_cmd(dir: &Path) -> Command {
    let mut cmd = Command::new(firma_exe());
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.join("home"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_RUNTIME_DIR", dir.join("runtime"))
        .env("FIRMA_STATE_DIR", dir.join("state"))
        .env("FIRMA_LOG", "warn")
        .current_dir(dir.join("ws"));
    cmd
}

/// `firma init`, the upstream's port mapped, then the Authority and the Sidecar on port 0;
/// returns the proxy address and an allowed token.
fn start_firma(
    dir: &Path,
    runtime: &tokio::runtime::Runtime,
    upstream: SocketAddr,
) -> (SocketAddr, String, Vec<ChildGuard>) {
    for sub in ["home", "data", "runtime", "state", "ws"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let out = firma_cmd(dir)
        .args([
            "init",
            "--yes",
            "--agent",
            "codex",
            "--provider",
            "anthropic",
            "--authority-listen",
            "127.0.0.1:0",
            "--sidecar-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The scaffold maps no local service: list the upstream (`host:port`, which builds that
    // predate port rules read as a host that never matches, so they keep their own loopback rule).
    let rules = dir.join("ws/.firma/mapping-rules.toml");
    let mut text = std::fs::read_to_string(&rules).unwrap();
    text.push_str(&format!(
        "\n[[rules]]\nhost = \"{upstream}\"\naction_class = \"communication.internal.send\"\n"
    ));
    std::fs::write(&rules, text).unwrap();
    let (authority, authority_addr) = spawn_ready(dir, &["authority"], "authority");
    let url = format!("http://{authority_addr}");
    let (sidecar, sidecar_addr) =
        spawn_ready(dir, &["sidecar", "--authority-url", &url], "sidecar");
    let token = runtime.block_on(async {
        // Minting is for operators: over the Authority's operator socket.
        let socket = dir.join("state/authority.sock");
        let mut client =
            firma::authority::client::connect(&format!("unix:{}", socket.display()), None)
                .await
                .unwrap();
        let response = client
            .issue_capability(IssueCapabilityRequest {
                agent_id: "codex".into(),
                actions: vec!["communication.internal.send".into()],
                resource_scope: "*".into(),
                session_id: "bench".into(),
                ttl_seconds: 3600,
                sandbox_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert!(response.granted, "{response:?}");
        response.token
    });
    (sidecar_addr, token, vec![sidecar, authority])
}

fn spawn_ready(dir: &Path, args: &[&str], tag: &str) -> (ChildGuard, SocketAddr) {
    let mut cmd = firma_cmd(dir);
    cmd.args(args);
    let (child, addr) = common::notify::spawn_ready(cmd, dir, tag, Duration::from_secs(60));
    (child.with_grace(Duration::from_secs(5)), addr)
}

/// Debian's squid, foreground, plain forwarding: no ACLs beyond allow-all, no cache, no access log.
fn start_squid(dir: &Path) -> (SocketAddr, ChildGuard) {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let squid_dir = dir.join("squid");
    std::fs::create_dir_all(&squid_dir).unwrap();
    // Squid drops privileges to `proxy`; let it write its log and pid here.
    std::fs::set_permissions(&squid_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let conf = squid_dir.join("squid.conf");
    let mut file = std::fs::File::create(&conf).unwrap();
    writeln!(
        file,
        "http_port 127.0.0.1:{port}\n\
         http_access allow all\n\
         cache deny all\n\
         cache_mem 0 MB\n\
         access_log none\n\
         cache_store_log none\n\
         cache_log {log}\n\
         pid_filename {pid}\n\
         coredump_dir {dir}\n\
         shutdown_lifetime 0 seconds\n\
         max_filedescriptors 8192\n\
         workers 1",
        log = squid_dir.join("cache.log").display(),
        pid = squid_dir.join("squid.pid").display(),
        dir = squid_dir.display(),
    )
    .unwrap();
    let child = ChildGuard::new(
        Command::new("squid")
            .args(["-N", "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start squid"),
    )
    .with_grace(Duration::from_secs(5));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "squid did not open {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (addr, child)
}
