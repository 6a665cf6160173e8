//! Daemon children for black-box tests (`firma authority`, `firma sidecar`): spawned in a world,
//! ready once they log `ready`, with their log captured; the Authority's clients for both of its
//! listeners.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firma::proto::IssueCapabilityRequest;
use firma::proto::authority_client::AuthorityClient;
use tonic::transport::Channel;

use super::{ChildGuard, World};

/// Generous: these bound hangs, they do not measure speed (benches do).
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A capability request: `agent` may do `action` on everything, for 10 minutes.
pub fn issue_request(agent: &str, action: &str) -> IssueCapabilityRequest {
    IssueCapabilityRequest {
        agent_id: agent.into(),
        actions: vec![action.into()],
        resource_scope: "*".into(),
        session_id: "test-session".into(),
        ttl_seconds: 600,
        sandbox_id: String::new(),
    }
}

/// A `firma authority`.
pub type AuthorityProcess = Daemon;

/// A daemon child (`firma authority`, `firma sidecar`) with its stderr (JSON log lines) captured.
pub struct Daemon {
    pub guard: ChildGuard,
    pub addr: String,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// `firma authority` in `world`.
    pub fn start(world: &World) -> Self {
        Self::spawn(world, &["authority"])
    }

    /// `firma <args>`, once it logged `ready`.
    pub fn spawn(world: &World, args: &[&str]) -> Self {
        Self::try_spawn(world, args)
            .unwrap_or_else(|log| panic!("firma {args:?} did not get ready:\n{log}"))
    }

    /// `firma authority`; `Err(log)` when it exits before logging `ready`.
    pub fn try_start(world: &World) -> Result<Self, String> {
        Self::try_spawn(world, &["authority"])
    }

    /// `firma <args>` started without waiting for `ready`.
    pub fn launch(world: &World, args: &[&str]) -> Self {
        let mut cmd = world.cmd();
        cmd.args(args);
        Self::launch_command(cmd)
    }

    /// A prepared command (e.g. run in a network namespace), once it logged `ready`.
    pub fn spawn_command(cmd: Command) -> Self {
        let what = format!("{cmd:?}");
        Self::wait_ready(Self::launch_command(cmd))
            .unwrap_or_else(|log| panic!("{what} did not get ready:\n{log}"))
    }

    /// A prepared command, started without waiting for `ready`.
    pub fn launch_command(mut cmd: Command) -> Self {
        cmd.stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn firma");
        let stderr = child.stderr.take().unwrap();
        let guard = ChildGuard::new(child);
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        Self {
            guard,
            addr: String::new(),
            log,
        }
    }

    /// `Err(log)` when the process exits before logging `ready`.
    pub fn try_spawn(world: &World, args: &[&str]) -> Result<Self, String> {
        Self::wait_ready(Self::launch(world, args))
    }

    fn wait_ready(mut daemon: Self) -> Result<Self, String> {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(addr) = ready_addr(&daemon.log()) {
                daemon.addr = addr;
                return Ok(daemon);
            }
            if let Some(status) = daemon.guard.child_mut().try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!("exit {status}\n{}", daemon.log()));
            }
            assert!(
                Instant::now() < deadline,
                "no ready line:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// A client on the TCP port: a sidecar's view (watch, report).
    pub async fn client(&self) -> AuthorityClient<Channel> {
        firma::authority::client::connect(&self.url(), None)
            .await
            .expect("connect")
    }

    /// A client on the operator socket: mint and revoke.
    pub async fn operator(&self, world: &World) -> AuthorityClient<Channel> {
        let socket = world.state().authority_socket();
        firma::authority::client::connect(&format!("unix:{}", socket.display()), None)
            .await
            .expect("connect to the operator socket")
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.guard.id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
    }
}

fn ready_addr(log: &str) -> Option<String> {
    log.lines().find_map(|line| {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        (value["message"] == "ready").then(|| value["addr"].as_str().map(str::to_string))?
    })
}
