//! The one owner of file names in firma's two per-user directories (DESIGN §3).
//!
//! **State dir** (volatile, per running pair):
//!
//! | file | written by | content |
//! |---|---|---|
//! | `authority.pid`, `sidecar.pid`, `stack.pid` | lifecycle | decimal pid + `\n` |
//! | `authority.listen`, `sidecar.listen` | lifecycle | bound `ip:port` + `\n` |
//! | `.authority.identity`, `.sidecar.identity`, `.stack.identity` | lifecycle | PID-reuse guard |
//! | `.stack.json` | lifecycle | how the pair was started, which project it serves |
//! | `.exits.json` | supervisor | how each component ended this run, restart counts |
//! | `.authority.health.json`, `.sidecar.health.json` | Authority / Sidecar | degraded states (e.g. an older policy bundle in force) |
//! | `.stop-requested` | `sidecar stop` | marks a requested stop (not a crash) |
//! | `.notify-<tag>-<pid>.sock` | lifecycle | readiness datagram sockets |
//! | `stack.lock` | lifecycle | exclusive lock, holder pid |
//! | `authority.sock` | Authority | operator RPCs (Unix socket, peer uid checked) |
//! | `authority.log`, `sidecar.log`, `supervisor.log` | children / supervisor | daemon logs |
//! | `audit.jsonl`, `audit.jsonl.N`, `audit.checkpoint` | Sidecar | the audit log, its rotations and its checkpoint (in `[sidecar.audit] dir` when set) |
//! | `audit.dir` | Sidecar | the audit directory, when `[sidecar.audit] dir` puts it elsewhere |
//! | `sidecar.sock` | Sidecar | control socket: audit rotation and health (peer uid checked) |
//! | `audit-archive-<ts>/` | `init --force` | a log set aside when the audit key changed |
//! | `generated-firma-ca/firma-ca.crt`, `firma-ca.key` | Sidecar | the interception CA |
//! | `generated-firma-ca/ca-bundle.pem` | `firma run` | system roots + the CA, for agents |
//!
//! **Data dir** (durable): `revocations.txt`, `witnessed-checkpoints.jsonl`.
//!
//! Nothing else in firma spells these names; everything asks a [`StateDir`] or [`DataDir`].

use std::path::{Path, PathBuf};

/// The audit log's file name (rotated files append `.N`).
const AUDIT_LOG: &str = "audit.jsonl";
/// Where a Sidecar with `[sidecar.audit] dir` says its log is.
const AUDIT_DIR_POINTER: &str = "audit.dir";
const CA_DIR: &str = "generated-firma-ca";
const CA_CERT: &str = "firma-ca.crt";
const CA_KEY: &str = "firma-ca.key";
const CA_BUNDLE: &str = "ca-bundle.pem";
const NOTIFY_PREFIX: &str = ".notify-";
const NOTIFY_SUFFIX: &str = ".sock";

/// A process `start` manages and the state files named after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Authority,
    Sidecar,
    /// The supervisor: the foreground `start` or the detached `__supervise`.
    Supervisor,
}

impl Role {
    /// Every role, in the order `stop` signals them.
    pub const ALL: [Role; 3] = [Role::Sidecar, Role::Supervisor, Role::Authority];

    /// The name shown to operators (`status` rows, log lines).
    pub fn name(self) -> &'static str {
        match self {
            Self::Authority => "authority",
            Self::Sidecar => "sidecar",
            Self::Supervisor => "supervisor",
        }
    }

    /// The stem of this role's pid / listen / identity files. The supervisor's are `stack.*`,
    /// the names the guide gives (`stack.pid`, `stack.lock`).
    fn file_stem(self) -> &'static str {
        match self {
            Self::Supervisor => "stack",
            other => other.name(),
        }
    }
}

/// Paths of everything firma keeps in one state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    dir: PathBuf,
    /// `[sidecar.audit] dir`, when the caller knows it.
    audit_dir: Option<PathBuf>,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            audit_dir: None,
        }
    }

    /// The directory itself.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    pub fn pid_file(&self, role: Role) -> PathBuf {
        self.dir.join(format!("{}.pid", role.file_stem()))
    }
    pub fn listen_file(&self, role: Role) -> PathBuf {
        self.dir.join(format!("{}.listen", role.file_stem()))
    }
    /// The bound address of a daemon's Prometheus endpoint (`[<role>.metrics] listen`), written
    /// by the daemon once it listens, `ip:port` and a newline like `*.listen`.
    pub fn metrics_listen_file(&self, role: Role) -> PathBuf {
        self.dir
            .join(format!("{}.metrics.listen", role.file_stem()))
    }
    pub fn identity_file(&self, role: Role) -> PathBuf {
        self.dir.join(format!(".{}.identity", role.file_stem()))
    }
    pub fn log_file(&self, role: Role) -> PathBuf {
        self.dir.join(format!("{}.log", role.name()))
    }
    pub fn lock_file(&self) -> PathBuf {
        self.dir.join("stack.lock")
    }
    pub fn meta_file(&self) -> PathBuf {
        self.dir.join(".stack.json")
    }
    /// How each component of the current (or last) run ended, written by the supervisor.
    pub fn exits_file(&self) -> PathBuf {
        self.dir.join(".exits.json")
    }
    /// What a running component reports about its own health (degraded states).
    pub fn health_file(&self, role: Role) -> PathBuf {
        self.dir.join(format!(".{}.health.json", role.file_stem()))
    }
    /// The Authority's operator socket (Unix domain, 0600): mint and revoke, peer uid checked.
    pub fn authority_socket(&self) -> PathBuf {
        self.dir.join("authority.sock")
    }
    /// Written by `firma sidecar stop` before it signals anything, so the supervisor knows a
    /// child's exit was requested, not a crash.
    pub fn stop_marker(&self) -> PathBuf {
        self.dir.join(".stop-requested")
    }

    /// A readiness socket for process `pid` (`tag` says which wait it serves).
    pub fn notify_socket(&self, tag: &str, pid: u32) -> PathBuf {
        self.dir
            .join(format!("{NOTIFY_PREFIX}{tag}-{pid}{NOTIFY_SUFFIX}"))
    }
    /// The pid a readiness socket's name carries, if `name` is one.
    pub fn notify_socket_pid(name: &str) -> Option<i32> {
        let rest = name
            .strip_prefix(NOTIFY_PREFIX)?
            .strip_suffix(NOTIFY_SUFFIX)?;
        rest.rsplit('-').next()?.parse().ok()
    }

    /// Where each running `firma run` relay publishes its listen address (one
    /// [`StateDir::relay_listen_file`] per relay), so the Sidecar never forwards to one.
    pub fn relay_listen_dir(&self) -> PathBuf {
        self.dir.join("relays")
    }
    /// The listen address (`ip:port` and a newline) of the relay of process `pid`.
    pub fn relay_listen_file(&self, pid: u32) -> PathBuf {
        self.relay_listen_dir().join(format!("{pid}.listen"))
    }

    /// The audit log's files (live file, rotations, checkpoint): in `[sidecar.audit] dir` when
    /// the Sidecar publishes one (see [`StateDir::audit_dir`]), else in the state dir.
    pub fn audit(&self) -> AuditFiles {
        AuditFiles::in_dir(self.audit_dir())
    }
    /// Where the audit log lives: the directory set with [`StateDir::with_audit_dir`] (from
    /// `[sidecar.audit] dir`), else the one the running (or last) Sidecar published in
    /// `audit.dir`, else the state dir itself.
    pub fn audit_dir(&self) -> PathBuf {
        if let Some(dir) = &self.audit_dir {
            return dir.clone();
        }
        // Read like every other file the Sidecar publishes: a symlink or another user's file
        // planted here must not send readers to a log of its choosing.
        let text = match crate::fsutil::read_trusted(&self.audit_dir_pointer()) {
            Ok(Some(bytes)) => String::from_utf8(bytes).unwrap_or_default(),
            _ => String::new(),
        };
        let dir = Path::new(text.trim_end_matches('\n'));
        if dir.is_absolute() {
            dir.to_path_buf()
        } else {
            self.dir.clone()
        }
    }
    /// This state dir with the audit log placed in `dir` (`[sidecar.audit] dir`; `None`: the
    /// state dir).
    #[must_use]
    pub fn with_audit_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.audit_dir = dir;
        self
    }
    /// `audit.dir`: the absolute audit directory and a newline, written by a Sidecar whose
    /// `[sidecar.audit] dir` is set, so readers without the configuration find the log.
    pub fn audit_dir_pointer(&self) -> PathBuf {
        self.dir.join(AUDIT_DIR_POINTER)
    }
    /// The Sidecar's control socket (Unix domain, 0600, peer uid checked): audit log rotation
    /// and health (`crate::audit::control`).
    pub fn sidecar_socket(&self) -> PathBuf {
        self.dir.join("sidecar.sock")
    }
    /// The live audit log.
    pub fn audit_log(&self) -> PathBuf {
        self.audit().live().to_path_buf()
    }
    /// The signed checkpoint of the audit log.
    pub fn audit_checkpoint(&self) -> PathBuf {
        self.audit().checkpoint()
    }
    /// The audit log's files, oldest first (see [`AuditFiles::oldest_first`]).
    pub fn audit_files(&self) -> Vec<PathBuf> {
        self.audit().oldest_first()
    }
    /// Where `init --force` sets a log aside when the audit key is replaced.
    pub fn audit_archive(&self, stamp: &str) -> PathBuf {
        self.dir.join(format!("audit-archive-{stamp}"))
    }

    /// `generated-firma-ca/`: the Sidecar's interception CA.
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.join(CA_DIR)
    }
    /// The CA certificate agents trust (PEM).
    pub fn ca_cert(&self) -> PathBuf {
        self.ca_dir().join(CA_CERT)
    }
    /// The CA's private key (PKCS#8 PEM, 0600).
    pub fn ca_key(&self) -> PathBuf {
        self.ca_dir().join(CA_KEY)
    }
    /// System roots plus the firma CA, written by `firma run` for its agents.
    pub fn ca_bundle(&self) -> PathBuf {
        self.ca_dir().join(CA_BUNDLE)
    }
    /// Every file the CA consists of (what `start` waits for).
    pub fn ca_files(&self) -> [PathBuf; 2] {
        [self.ca_cert(), self.ca_key()]
    }
}

/// The files of one audit log, all in one directory: the live file `audit.jsonl`, its
/// rotations `audit.jsonl.N` (1 = newest) and the checkpoint `audit.checkpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditFiles {
    dir: PathBuf,
    live: PathBuf,
}

impl AuditFiles {
    /// The audit log in `dir`.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        let live = dir.join(AUDIT_LOG);
        Self { dir, live }
    }
    /// The log whose live file is `live` (any name; its rotations append `.N`, its checkpoint
    /// replaces the extension with `.checkpoint`).
    pub fn of_log(live: &Path) -> Self {
        let dir = match live.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Self {
            dir,
            live: live.to_path_buf(),
        }
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// The file the Sidecar appends to.
    pub fn live(&self) -> &Path {
        &self.live
    }
    /// The live file's (device, inode), to notice that it was rotated.
    pub fn live_identity(&self) -> Option<(u64, u64)> {
        identity(&self.live)
    }
    /// The log's files, oldest first, each with what its name leads to now ([`FileMark`]).
    /// Equal layouts taken before and after reading the log mean no rotation renamed, created or
    /// deleted one of them in between — also not the first half of a rotation, which renames
    /// `.N` to `.N+1` before the live file moves, and not a run of rotations whose new files
    /// reused the inodes retention freed.
    pub fn layout(&self) -> Vec<(PathBuf, Option<FileMark>)> {
        self.oldest_first()
            .into_iter()
            .map(|path| {
                let mark = FileMark::of(&path);
                (path, mark)
            })
            .collect()
    }
    /// The signed checkpoint naming the last durable record.
    pub fn checkpoint(&self) -> PathBuf {
        self.live.with_extension("checkpoint")
    }
    /// Rotation `n` (1 = the newest).
    pub fn rotated(&self, n: u64) -> PathBuf {
        let mut name = self.live.clone().into_os_string();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }
    /// The rotations present, newest first: `(n, path)` by ascending `n`.
    pub fn rotations(&self) -> Vec<(u64, PathBuf)> {
        let Some(live_name) = self.live.file_name().and_then(|n| n.to_str()) else {
            return Vec::new();
        };
        let prefix = format!("{live_name}.");
        let mut rotations: Vec<(u64, PathBuf)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let digits = name.strip_prefix(&prefix)?;
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                Some((digits.parse().ok()?, entry.path()))
            })
            .collect();
        rotations.sort_by_key(|r| r.0);
        rotations
    }
    /// Every file of the log, oldest first: the rotations (highest `n` first), then the live
    /// file (listed even when it is missing).
    pub fn oldest_first(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = self.rotations().into_iter().rev().map(|(_, p)| p).collect();
        files.push(self.live.clone());
        files
    }
}

/// What a name in the audit directory leads to: the file's (device, inode) and its first line
/// (at most [`FileMark::HEAD_BYTES`]). A filesystem readily gives a new file the inode of one just
/// deleted — as rotation and retention do, a few files round and round — so the inode alone can
/// repeat; the first line is a record with its own `seq` and event id, and never does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileMark {
    id: (u64, u64),
    head: Vec<u8>,
}

impl FileMark {
    /// Enough of a first line to include its event id.
    const HEAD_BYTES: usize = 1024;

    fn of(path: &Path) -> Option<Self> {
        use std::io::Read;
        let id = identity(path)?;
        let mut head = Vec::with_capacity(Self::HEAD_BYTES);
        std::fs::File::open(path)
            .ok()?
            .take(Self::HEAD_BYTES as u64)
            .read_to_end(&mut head)
            .ok()?;
        if let Some(end) = head.iter().position(|&b| b == b'\n') {
            head.truncate(end);
        }
        Some(Self { id, head })
    }
}

/// The (device, inode) `path` leads to, not following a symlink.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Paths of the durable per-user data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    dir: PathBuf,
}

impl DataDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub fn path(&self) -> &Path {
        &self.dir
    }
    /// Revoked token ids, one line each (the Authority's source of truth).
    pub fn revocations(&self) -> PathBuf {
        self.dir.join("revocations.txt")
    }
    /// The Authority's witnessed audit checkpoints, one JSON line per accepted report.
    pub fn witnessed_checkpoints(&self) -> PathBuf {
        self.dir.join("witnessed-checkpoints.jsonl")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_dir_pointer_is_followed_only_when_firma_could_have_written_it() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        assert_eq!(state.audit_dir(), tmp.path());
        std::fs::write(state.audit_dir_pointer(), "/srv/evidence\n").unwrap();
        assert_eq!(state.audit_dir(), Path::new("/srv/evidence"));
        // A symlink planted in its place sends no reader elsewhere.
        let decoy = tmp.path().join("decoy");
        std::fs::write(&decoy, "/tmp/forged\n").unwrap();
        std::fs::remove_file(state.audit_dir_pointer()).unwrap();
        std::os::unix::fs::symlink(&decoy, state.audit_dir_pointer()).unwrap();
        assert_eq!(state.audit_dir(), tmp.path());
        // Nor does a relative path.
        std::fs::remove_file(state.audit_dir_pointer()).unwrap();
        std::fs::write(state.audit_dir_pointer(), "elsewhere\n").unwrap();
        assert_eq!(state.audit_dir(), tmp.path());
    }

    #[test]
    fn guide_names() {
        let s = StateDir::new("/s");
        assert_eq!(s.pid_file(Role::Supervisor), Path::new("/s/stack.pid"));
        assert_eq!(s.pid_file(Role::Sidecar), Path::new("/s/sidecar.pid"));
        assert_eq!(
            s.listen_file(Role::Authority),
            Path::new("/s/authority.listen")
        );
        assert_eq!(s.log_file(Role::Supervisor), Path::new("/s/supervisor.log"));
        assert_eq!(s.lock_file(), Path::new("/s/stack.lock"));
        assert_eq!(s.audit_log(), Path::new("/s/audit.jsonl"));
        assert_eq!(s.audit_checkpoint(), Path::new("/s/audit.checkpoint"));
        assert_eq!(s.ca_cert(), Path::new("/s/generated-firma-ca/firma-ca.crt"));
        assert_eq!(
            DataDir::new("/d").revocations(),
            Path::new("/d/revocations.txt")
        );
    }

    /// What `audit verify` compares around a read: appends keep the layout, every step of a
    /// rotation changes it — the shift of `.N` to `.N+1` too, before the live file moves.
    #[test]
    fn the_layout_changes_with_each_step_of_a_rotation_and_not_with_appends() {
        use std::io::Write;
        let tmp = tempfile::tempdir().unwrap();
        let files = StateDir::new(tmp.path()).audit();
        std::fs::write(files.live(), "a\n").unwrap();
        std::fs::write(files.rotated(1), "b\n").unwrap();
        let before = files.layout();
        assert_eq!(before.len(), 2);
        assert!(before.iter().all(|(_, id)| id.is_some()));
        let mut live = std::fs::OpenOptions::new()
            .append(true)
            .open(files.live())
            .unwrap();
        live.write_all(b"c\n").unwrap();
        assert_eq!(files.layout(), before, "an append is not a rotation");
        std::fs::rename(files.rotated(1), files.rotated(2)).unwrap();
        let shifted = files.layout();
        assert_ne!(shifted, before, "the shift alone is seen");
        assert_eq!(
            shifted.last(),
            before.last(),
            "while the live file is the same"
        );
        std::fs::rename(files.live(), files.rotated(1)).unwrap();
        std::fs::write(files.live(), "").unwrap();
        assert_ne!(files.layout(), shifted, "the switch is seen");
        // Another file under the same name and inode (as when a deleted file's inode is reused)
        // differs by its first line: here the same inode, rewritten in place.
        std::fs::write(files.live(), "{\"seq\":7}\n").unwrap();
        let switched = files.layout();
        std::fs::write(files.live(), "{\"seq\":8}\n").unwrap();
        let reused = files.layout();
        assert_eq!(
            switched.last().unwrap().1.as_ref().unwrap().id,
            reused.last().unwrap().1.as_ref().unwrap().id,
            "the same inode"
        );
        assert_ne!(reused, switched, "told apart by the first line");
    }

    #[test]
    fn audit_files_are_oldest_first_and_end_with_the_live_log() {
        let tmp = tempfile::tempdir().unwrap();
        for name in [
            "audit.jsonl.1",
            "audit.jsonl.10",
            "audit.jsonl.2",
            "audit.jsonl.x",
        ] {
            std::fs::write(tmp.path().join(name), "").unwrap();
        }
        let s = StateDir::new(tmp.path());
        let names: Vec<_> = s
            .audit_files()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            [
                "audit.jsonl.10",
                "audit.jsonl.2",
                "audit.jsonl.1",
                "audit.jsonl"
            ]
        );
    }

    #[test]
    fn notify_socket_names_round_trip() {
        let s = StateDir::new("/s");
        let path = s.notify_socket("launch-x", 42);
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(StateDir::notify_socket_pid(name), Some(42));
        assert_eq!(StateDir::notify_socket_pid("audit.jsonl"), None);
    }
}
