//! Throwaway worlds for black-box tests: a temp HOME, XDG dirs and FIRMA_STATE_DIR, the built
//! `firma` binary, and guards that stop every process a test starts, also when it fails.
#![allow(dead_code)]

pub mod audit;
pub mod authority;
pub mod bench;
pub mod etcd;
pub mod http;
pub mod netns;
pub mod notify;
pub mod stack;
pub mod terminal;
pub mod tmpfs;
pub mod upstream;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const FIRMA: &str = env!("CARGO_BIN_EXE_firma");

/// The policy [`World::forbid_admin`] adds.
pub const FORBID_ADMIN: &str = "@id(\"no-admin\")\nforbid (principal, action, resource)\nwhen { context has path && context.path like \"/admin*\" };\n";

/// A file of this repository (docs, fixtures, schemas), by its path from the root.
pub fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A private HOME with its own XDG and state directories.
pub struct World {
    pub root: tempfile::TempDir,
}

impl World {
    pub fn new() -> Self {
        let root = tempfile::Builder::new()
            .prefix("firma-test-")
            .tempdir()
            .expect("tempdir");
        for dir in ["home", "data", "config", "runtime", "state", "ws"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        // firma creates its state dir 0700 and doctor insists on it; match that.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            root.path().join("state"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        Self { root }
    }

    pub fn path(&self) -> &Path {
        self.root.path()
    }
    pub fn home(&self) -> PathBuf {
        self.path().join("home")
    }
    pub fn data_dir(&self) -> PathBuf {
        self.path().join("data/firma")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }
    /// The state dir's files, named by their one owner.
    pub fn state(&self) -> firma::state_dir::StateDir {
        firma::state_dir::StateDir::new(self.state_dir())
    }
    /// The default workspace (`<root>/ws`); its `.firma/` holds the project.
    pub fn workspace(&self) -> PathBuf {
        self.path().join("ws")
    }
    pub fn project_dir(&self) -> PathBuf {
        self.workspace().join(".firma")
    }
    pub fn config_path(&self) -> PathBuf {
        self.project_dir().join("firma.toml")
    }

    /// `firma <args>` in this world, run from the workspace, with a scrubbed environment.
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(FIRMA);
        self.prepare(&mut cmd);
        cmd
    }

    /// Give `cmd` (any program, e.g. `ip netns exec … firma`) this world: its scrubbed
    /// environment, the workspace as working directory, no stdin.
    pub fn prepare<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("XDG_DATA_HOME", self.path().join("data"))
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env("XDG_RUNTIME_DIR", self.path().join("runtime"))
            .env("FIRMA_STATE_DIR", self.state_dir())
            .env("NO_COLOR", "1")
            .current_dir(self.workspace())
            .stdin(Stdio::null())
    }

    /// Run to completion with a deadline; panics (after killing it) if it hangs.
    pub fn run(&self, args: &[&str]) -> Output {
        run_with_timeout(self.cmd().args(args), Duration::from_secs(60))
    }

    /// Scaffold a project with loopback listeners on port 0.
    pub fn init(&self, extra: &[&str]) -> Output {
        let mut args = vec![
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
        ];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert_success(&out);
        out
    }

    /// Rewrite the project's firma.toml with `edit`.
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let path = self.config_path();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(text)).unwrap();
    }

    /// Add a runtime Cedar policy file to the project.
    pub fn add_policy(&self, name: &str, text: &str) {
        std::fs::write(self.project_dir().join("policies").join(name), text).unwrap();
    }

    /// A runtime policy `no-admin` forbidding every path under `/admin`.
    pub fn forbid_admin(&self) {
        self.add_policy("forbid-admin.cedar", FORBID_ADMIN);
    }

    /// `firma audit verify --json` on this world's log (exit 0 or 1): its report.
    pub fn verify_json(&self) -> serde_json::Value {
        let out = self.run(&["audit", "verify", "--json"]);
        assert!(matches!(out.status.code(), Some(0 | 1)), "{}", stderr(&out));
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(&out)))
    }

    /// List `127.0.0.1:<port>` as a local service the agent may reach (the scaffold maps none).
    pub fn map_local_port(&self, port: u16) {
        let rules = self.project_dir().join("mapping-rules.toml");
        let mut text = std::fs::read_to_string(&rules).unwrap();
        text.push_str(&format!(
            "\n[[rules]]\nhost = \"127.0.0.1\"\nports = [{port}]\naction_class = \"communication.internal.send\"\n"
        ));
        std::fs::write(rules, text).unwrap();
    }

    /// The decision and segment records of this world's audit log.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        audit::records(&self.state_dir())
    }

    /// `firma sidecar start --detach`; the guard stops the pair again.
    pub fn start_detached(&self) -> stack::DaemonGuard<'_> {
        assert_success(&self.run(&["sidecar", "start", "--detach"]));
        stack::DaemonGuard(self)
    }

    /// Live (non-zombie) processes whose command line mentions this world's directory: what
    /// its daemons and their children are, however they were started.
    pub fn processes(&self) -> Vec<i32> {
        let needle = self.path().to_string_lossy().into_owned();
        let me = std::process::id() as i32;
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != me && alive(pid))
            .filter(|pid| {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                String::from_utf8_lossy(&cmdline).contains(&needle)
            })
            .collect()
    }

    /// `firma sidecar stop`, then SIGKILL whatever of this world still runs (a test's last
    /// word on its daemons, also when it fails): the stop's output.
    pub fn stop_daemons(&self) -> Output {
        let out = self.run(&["sidecar", "stop"]);
        self.kill_processes();
        out
    }

    /// SIGKILL every process of this world, and its process group.
    pub fn kill_processes(&self) {
        use nix::sys::signal::{Signal, kill, killpg};
        use nix::unistd::Pid;
        for pid in self.processes() {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Every regular file below the world root (relative paths), sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, base: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, base, out);
                } else {
                    out.push(path.strip_prefix(base).unwrap().to_path_buf());
                }
            }
        }
        let mut out = Vec::new();
        walk(self.path(), self.path(), &mut out);
        out.sort();
        out
    }
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn firma");
    // Drain both pipes while waiting: a child writing more than a pipe holds would block forever.
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let mut guard = ChildGuard::new(child);
    let deadline = Instant::now() + timeout;
    loop {
        if guard.child_mut().try_wait().expect("wait").is_some() {
            // Already reaped: `wait` returns the status `try_wait` saw.
            let status = guard.take().wait().expect("wait");
            return Output {
                status,
                stdout: stdout.join().expect("stdout reader"),
                stderr: stderr.join().expect("stderr reader"),
            };
        }
        if Instant::now() > deadline {
            panic!("command did not finish within {timeout:?}: {cmd:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[track_caller]
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Kills (SIGKILL) and reaps the child when dropped, unless it was taken.
pub struct ChildGuard {
    child: Option<Child>,
    grace: Option<Duration>,
}

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        Self {
            child: Some(child),
            grace: None,
        }
    }
    /// Stop with SIGTERM first and allow `grace` to exit (a daemon flushes and removes its
    /// files), then SIGKILL.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = Some(grace);
        self
    }
    pub fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("child present")
    }
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("child present").id()
    }
    pub fn take(&mut self) -> Child {
        self.child.take().expect("child present")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let Some(child) = &mut self.child else {
            return;
        };
        if let Some(grace) = self.grace {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Panic, naming the pip packages, unless python3 can import `modules` (`"grpc, grpc_tools"`).
#[track_caller]
pub fn require_python(modules: &str, pip_packages: &str) {
    let probe = Command::new("python3")
        .args(["-c", &format!("import {modules}")])
        .output()
        .expect("python3");
    assert!(
        probe.status.success(),
        "python {modules} missing (`python3 -m pip install {pip_packages}`, as .ci/run does): {}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

/// Whether `pid` is a live process (not a zombie).
pub fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(')').next().unwrap_or("").trim_start();
    !state.is_empty() && !state.starts_with('Z')
}

/// Poll `check` every 10 ms until it returns `Some`, or panic after `timeout`.
#[track_caller]
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
