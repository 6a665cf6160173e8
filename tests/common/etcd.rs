//! A real etcd cluster for fleet tests: three members of Debian's `etcd` on loopback ports
//! (picked free), each in its own data dir. Members can be killed (SIGKILL) and restarted on
//! their data; dropping the cluster kills every member, also when the test fails.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ChildGuard, run_with_timeout, wait_for};

/// A free loopback port (bound, read, released: taken again by the caller at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    data: PathBuf,
    process: Option<ChildGuard>,
}

pub struct EtcdCluster {
    members: Vec<Member>,
    token: String,
}

impl EtcdCluster {
    /// `size` members under `dir`, started and healthy.
    pub fn start(dir: &Path, size: usize) -> Self {
        let binary = Command::new("etcd").arg("--version").output();
        assert!(
            binary.is_ok_and(|o| o.status.success()),
            "etcd is not installed: `apt-get install etcd-server etcd-client` (.ci/run does)"
        );
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                data: dir.join(format!("etcd-m{i}")),
                process: None,
            })
            .collect();
        let mut cluster = Self {
            members,
            token: format!("firma-test-{}", std::process::id()),
        };
        for i in 0..size {
            cluster.launch(i);
        }
        cluster.wait_healthy();
        cluster
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn launch(&mut self, index: usize) {
        let initial = self.initial_cluster();
        let token = self.token.clone();
        let member = &mut self.members[index];
        let client = format!("http://127.0.0.1:{}", member.client);
        let peer = format!("http://127.0.0.1:{}", member.peer);
        let child = Command::new("etcd")
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&member.data)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-token", &token])
            .args(["--initial-cluster-state", "new"])
            // Fast elections: a lost member or quorum is noticed within a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "error"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        member.process = Some(ChildGuard::new(child));
    }

    /// Every member's client URL, as `[authority.store] endpoints` lists them.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    /// `endpoints = [...]` for firma.toml.
    pub fn toml_endpoints(&self) -> String {
        let quoted: Vec<String> = self
            .endpoints()
            .iter()
            .map(|e| format!("\"{e}\""))
            .collect();
        format!("[{}]", quoted.join(", "))
    }

    /// SIGKILL member `index`.
    pub fn kill(&mut self, index: usize) {
        if let Some(mut guard) = self.members[index].process.take() {
            let mut child = guard.take();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start member `index` again on its data dir.
    pub fn restart(&mut self, index: usize) {
        self.kill(index);
        self.launch(index);
    }

    pub fn kill_all(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }

    /// Start every stopped member and wait until the cluster answers.
    pub fn restart_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].process.is_none() {
                self.launch(i);
            }
        }
        self.wait_healthy();
    }

    /// `etcdctl` with the live members' endpoints.
    pub fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        let endpoints: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.process.is_some())
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect();
        run_with_timeout(
            Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", endpoints.join(",")))
                .args(["--command-timeout=2s"])
                .args(args),
            Duration::from_secs(30),
        )
    }

    /// Wait until a quorum read succeeds.
    pub fn wait_healthy(&self) {
        wait_for(
            "the etcd cluster to elect a leader",
            Duration::from_secs(30),
            || {
                let out = self.etcdctl(&["get", "--prefix", "/firma-health-probe"]);
                out.status.success().then_some(())
            },
        );
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        self.kill_all();
    }
}
