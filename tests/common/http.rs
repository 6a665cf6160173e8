//! Real HTTP clients for proxy tests: `curl --proxy` (optionally inside a network namespace,
//! `ip netns exec <ns>`), Python `requests`, and raw bytes over a socket.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

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

/// `curl` through the proxy `proxy` (`http://firma:<token>@ip:port`), `extra` flags before the
/// URL: (status, body); status 0 when curl got no answer (its error is printed).
pub fn curl(proxy: &str, url: &str, extra: &[&str]) -> (u16, String) {
    curl_in(None, proxy, url, extra)
}

/// [`curl`], run inside network namespace `ns` (none: this host).
pub fn curl_in(ns: Option<&str>, proxy: &str, url: &str, extra: &[&str]) -> (u16, String) {
    let out = in_netns(ns, "curl")
        .args(["-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}"])
        .args(["--proxy", proxy])
        .args(extra)
        .arg(url)
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("no_proxy")
        .env_remove("NO_PROXY")
        .env_remove("ALL_PROXY")
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let code = code.trim().parse().unwrap_or(0);
    if code == 0 {
        eprintln!("curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    }
    (code, body.to_string())
}

/// Python `requests` through the proxy (HTTP_PROXY / HTTPS_PROXY, optional CA bundle).
pub fn python_get(proxy: &str, url: &str, ca_bundle: Option<&Path>) -> (u16, String) {
    let script = "import sys, requests\nr = requests.get(sys.argv[1], timeout=30)\nprint(r.status_code)\nsys.stdout.write(r.text)\n";
    let mut cmd = Command::new("python3");
    cmd.args(["-c", script, url])
        .env("HTTP_PROXY", proxy)
        .env("HTTPS_PROXY", proxy)
        .env_remove("NO_PROXY")
        .env_remove("no_proxy")
        .env_remove("http_proxy")
        .env_remove("https_proxy");
    if let Some(ca) = ca_bundle {
        cmd.env("REQUESTS_CA_BUNDLE", ca);
    }
    let out = cmd.output().expect("run python3");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, body) = text.split_once('\n').unwrap_or((&text, ""));
    assert!(
        !code.is_empty(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (code.trim().parse().unwrap(), body.to_string())
}

/// Send `request` as is to `addr` and read the answer to the end, as text.
pub fn raw_response(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream.write_all(request).unwrap();
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of a raw HTTP/1 response (0: none).
pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Send `request` as is to `addr`: (status, body).
pub fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let text = raw_response(addr, request);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, body)| body)
        .to_string();
    (status_of(&text), body)
}

pub fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|err| panic!("not JSON ({err}): {body}"))
}
