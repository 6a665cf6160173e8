//! The operating-system seam. Everything firma needs from the OS that is not portable Rust sits
//! here (or is listed here), so a port to another OS is a matter of supplying these modules.
//!
//! Today firma builds for Linux (and most of it for other Unixes). The guide also describes
//! Windows; no Windows target can be built in this project yet, so this is the contract a
//! Windows port must fulfil:
//!
//! | module | Unix implementation | what a Windows port must supply |
//! |---|---|---|
//! | [`identity`] | `/proc/<pid>/stat` start time + boot id: a pid that cannot be mistaken after reuse | the process creation time (`GetProcessTimes`) + a boot id; or a process handle kept open |
//! | [`process`] | process groups (`setpgid`, `killpg`), sessions (`setsid`), `kill`, exit status with signal | a Job Object per component (assign, terminate), `CREATE_NEW_PROCESS_GROUP`, `DETACHED_PROCESS` for the detached supervisor, `TerminateProcess` as the hard kill, `GenerateConsoleCtrlEvent` as the soft one |
//! | [`signals`] | SIGINT / SIGTERM / SIGHUP / SIGQUIT through tokio | `tokio::signal::windows` (ctrl_c, ctrl_break, ctrl_close, ctrl_shutdown) mapped onto [`signals::Sig`] |
//! | [`ports`] | `/proc/net/tcp{,6}` + `/proc/<pid>/fd` | `GetExtendedTcpTable` (owning pid) + the process image name; may return `None` |
//!
//! Also Unix-only, outside this module, each behind `cfg(unix)` / `cfg(target_os = "linux")` at
//! its one use:
//!
//! - readiness notification over Unix datagram sockets (`lifecycle::notify`, `lifecycle::channel`;
//!   a Windows port would use a named pipe, and has no systemd);
//! - `flock` on `stack.lock` and the audit log (`lifecycle::lock`, `audit::writer`; Windows:
//!   `LockFileEx`, which std's `File::try_lock` already wraps);
//! - file modes 0600/0700 (`config::dirs`, `config::keys`, `fsutil`; Windows: an owner-only ACL);
//! - the Authority's operator socket (a Unix socket with a peer-uid check; Windows: a named pipe
//!   with an ACL);
//! - `firma monitor`'s directory watch (`monitor::watch`: inotify on Linux; other platforms use
//!   the portable `notify` crate there already);
//! - `firma run`'s sandbox (Linux user/network/mount namespaces and Landlock, `run::sandbox`;
//!   Windows: an AppContainer, or no sandbox with a loud warning).
//!
//! State and data directories are already a pure function of (platform, environment), with the
//! Windows rules implemented and unit-tested on Linux: `config::dirs`.

pub mod identity;
pub mod ports;
pub mod process;
pub mod signals;
