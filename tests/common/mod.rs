//! Throwaway worlds for black-box tests: a temp HOME, XDG dirs and FIRMA_STATE_DIR, the built
//! `firma` binary, and guards that stop every process a test starts, also when it fails.
#![allow(dead_code)]

pub mod agent;
pub mod authority;
pub mod etcd;
pub mod http;
pub mod netns;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const FIRMA: &str = env!("CARGO_BIN_EXE_firma");

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
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.home())
            .env("XDG_DATA_HOME", self.path().join("data"))
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env("XDG_RUNTIME_DIR", self.path().join("runtime"))
            .env("FIRMA_STATE_DIR", self.state_dir())
            .env("NO_COLOR", "1")
            .current_dir(self.workspace())
            .stdin(Stdio::null());
        cmd
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

    /// List `127.0.0.1:<port>` as a local service the agent may reach (the scaffold maps none).
    pub fn map_local_port(&self, port: u16) {
        let rules = self.project_dir().join("mapping-rules.toml");
        let mut text = std::fs::read_to_string(&rules).unwrap();
        text.push_str(&format!(
            "\n[[rules]]\nhost = \"127.0.0.1\"\nports = [{port}]\naction_class = \"communication.internal.send\"\n"
        ));
        std::fs::write(rules, text).unwrap();
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
}

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        Self { child: Some(child) }
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
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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
