//! A real local upstream and a real HTTP client for proxy tests: `python3 -m http.server` and
//! `curl --proxy`, optionally run inside a network namespace (`ip netns exec <ns>`).

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};

use super::ChildGuard;

/// The command prefix that runs a program inside network namespace `ns` (none: this host).
pub fn in_netns(ns: Option<&str>, program: &str) -> Command {
    match ns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, program]);
            cmd
        }
        None => Command::new(program),
    }
}

/// `python3 -m http.server` on 127.0.0.1 (of `ns`), serving `dir` with `hello.txt` and
/// `admin/secret.txt`; returns its guard and port.
pub fn upstream(dir: &Path, ns: Option<&str>) -> (ChildGuard, u16) {
    std::fs::create_dir_all(dir.join("admin")).unwrap();
    std::fs::write(dir.join("hello.txt"), "hello from upstream\n").unwrap();
    std::fs::write(dir.join("admin/secret.txt"), "secret\n").unwrap();
    let mut child = in_netns(ns, "python3")
        .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 http.server");
    let stdout = child.stdout.take().unwrap();
    let guard = ChildGuard::new(child);
    let mut first = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut first)
        .unwrap();
    // "Serving HTTP on 127.0.0.1 port 40123 (http://127.0.0.1:40123/) ..."
    let port = first
        .split_whitespace()
        .nth(5)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {first:?}"));
    (guard, port)
}

/// GET `url` through the proxy at `proxy` (`http://firma:<token>@ip:port`): (status, body).
pub fn curl(ns: Option<&str>, proxy: &str, url: &str) -> (u16, String) {
    let out = in_netns(ns, "curl")
        .args(["-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}"])
        .args(["--proxy", proxy, url])
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .env_remove("ALL_PROXY")
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}
