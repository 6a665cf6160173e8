//! Fixtures of the `firma run` tests: a real local upstream and a guard for the daemon a run
//! autostarts.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{ChildGuard, World, stderr};

/// Stops the daemon a test started (`firma run` autostarts it), also when the test fails.
pub struct DaemonGuard<'a>(pub &'a World);

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

/// `python3 -m http.server` on a free loopback port, serving `hello.txt` and
/// `admin/secret.txt`, its request log in a file.
pub struct Upstream {
    pub port: u16,
    log: PathBuf,
    _child: ChildGuard,
}

impl Upstream {
    pub fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir.join("admin")).unwrap();
        std::fs::write(dir.join("hello.txt"), "hello from upstream\n").unwrap();
        std::fs::write(dir.join("admin/secret.txt"), "secret\n").unwrap();
        let log = dir.with_extension("log");
        let mut child = Command::new("python3")
            .args(["-u", "-m", "http.server", "--bind", "127.0.0.1", "0"])
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
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
        Self {
            port,
            log,
            _child: ChildGuard::new(child),
        }
    }

    /// List this upstream as a local service in the world's mapping rules (the scaffold maps
    /// none).
    pub fn map_in(&self, world: &World) {
        world.map_local_port(self.port);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Whether any request for `path` reached the upstream.
    pub fn saw(&self, path: &str) -> bool {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .contains(&format!(" {path} "))
    }
}

/// The records of the world's audit log.
pub fn audit_records(world: &World) -> Vec<serde_json::Value> {
    std::fs::read_to_string(firma::state_dir::StateDir::new(world.state_dir()).audit_log())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// A runtime Cedar policy forbidding every path under `/admin`.
pub fn forbid_admin(world: &World) {
    std::fs::write(
        world.project_dir().join("policies/forbid-admin.cedar"),
        "@id(\"no-admin\")\nforbid (principal, action, resource)\nwhen { context has path && context.path like \"/admin*\" };\n",
    )
    .unwrap();
}
