//! Readiness as the supervisor sees it (systemd's notification protocol): a Unix datagram
//! socket a daemon finds in `NOTIFY_SOCKET`, to which it sends `READY=1` and
//! `X_FIRMA_LISTEN=<ip:port>` once it serves.

use std::net::SocketAddr;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::ChildGuard;

/// The receiving end of `NOTIFY_SOCKET`.
pub struct NotifySocket {
    path: PathBuf,
    socket: UnixDatagram,
}

impl NotifySocket {
    pub fn bind(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let socket = UnixDatagram::bind(&path)
            .unwrap_or_else(|err| panic!("bind the notify socket {}: {err}", path.display()));
        Self { path, socket }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Hand this socket to the daemon `cmd` starts.
    pub fn pass_to<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("NOTIFY_SOCKET", &self.path)
    }

    /// The next message, or `None` when none came within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Wait until `child` reports the address it listens on. Panics, with the daemon's `log`,
    /// when it exits first or `timeout` passes.
    pub fn wait_listen(
        &self,
        child: &mut Child,
        what: &str,
        log: &Path,
        timeout: Duration,
    ) -> SocketAddr {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(addr) = self
                .recv(Duration::from_millis(100))
                .as_deref()
                .and_then(listen_addr)
            {
                return addr
                    .parse()
                    .unwrap_or_else(|err| panic!("{what} reported {addr:?}: {err}"));
            }
            if let Some(status) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(log).unwrap_or_default();
                panic!("{what} exited with {status} before ready:\n{log}");
            }
            assert!(Instant::now() < deadline, "{what} not ready in time");
        }
    }
}

/// The address of a notification's `X_FIRMA_LISTEN=` line.
pub fn listen_addr(message: &str) -> Option<&str> {
    message
        .lines()
        .find_map(|line| line.strip_prefix("X_FIRMA_LISTEN="))
}

/// Start the daemon `cmd` with a notify socket `<dir>/<tag>.notify` (stdout discarded, stderr
/// to `<dir>/<tag>.log`) and wait until it reports the address it listens on.
pub fn spawn_ready(
    mut cmd: Command,
    dir: &Path,
    tag: &str,
    timeout: Duration,
) -> (ChildGuard, SocketAddr) {
    let notify = NotifySocket::bind(dir.join(format!("{tag}.notify")));
    let log = dir.join(format!("{tag}.log"));
    notify
        .pass_to(&mut cmd)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let what = describe(&cmd);
    let mut child = ChildGuard::new(cmd.spawn().unwrap_or_else(|err| panic!("{what}: {err}")));
    let addr = notify.wait_listen(child.child_mut(), &what, &log, timeout);
    (child, addr)
}

/// `program arg…`, for messages (the program's file name only).
pub fn describe(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    let mut words = vec![
        program
            .file_name()
            .unwrap_or(program.as_os_str())
            .to_string_lossy(),
    ];
    words.extend(cmd.get_args().map(|arg| arg.to_string_lossy()));
    words.join(" ")
}
