//! The Sidecar's control socket ([`StateDir::sidecar_socket`](crate::state_dir::StateDir)):
//! how an operator reaches the running Sidecar's audit writer. One JSON request line, one JSON
//! reply line, then the connection closes.
//!
//! | request | reply |
//! |---|---|
//! | `{"op":"health"}` | `{"ok":true,"health":{"state":"ok"\|"unavailable","log":…,"last_seq":N,"reason":…,"since":…}}` |
//! | `{"op":"rotate"}` | `{"ok":true,"rotated":{"rotated_to":…,"last_seq":N,"marker_seq":M,"retained":…}}` |
//! | anything else, or a failure | `{"ok":false,"error":…,"hint":…}` |
//!
//! The socket is created 0600 in the 0700 state dir, and a connection from any uid other than
//! the Sidecar's own is closed unanswered (SO_PEERCRED). It needs no disk space once created, so
//! `status` and `doctor` learn that the log is unavailable even when its disk is full.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::event::Retained;
use super::writer::{AuditHealth, AuditWriter, Trigger};
use crate::error::Hinted;

/// Longest request line read.
const MAX_REQUEST: u64 = 4096;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Request {
    Health,
    Rotate,
}

/// What the writer says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReply {
    /// `ok` or `unavailable`.
    pub state: String,
    /// The live log file.
    pub log: PathBuf,
    pub last_seq: u64,
    /// Why it is unavailable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Since when (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

impl HealthReply {
    pub fn is_ok(&self) -> bool {
        self.state == "ok"
    }
}

/// What a rotation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateReply {
    /// Where the previous live file went.
    pub rotated_to: PathBuf,
    /// `seq` of its last record.
    pub last_seq: u64,
    /// `seq` of the marker that starts the new live file.
    pub marker_seq: u64,
    /// What retention deleted afterwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retained: Option<Retained>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    health: Option<HealthReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotated: Option<RotateReply>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hint: Option<String>,
}

impl Reply {
    fn failed(err: &Hinted) -> Self {
        Self {
            error: Some(err.message().to_string()),
            hint: err.hint_text().map(str::to_string),
            ..Self::default()
        }
    }
}

/// The listening socket; dropping it removes the socket file (the accepting thread ends with
/// the process).
#[derive(Debug)]
pub struct ControlServer {
    path: PathBuf,
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listen on `path` and answer requests about `writer` on a thread of its own.
pub fn serve(path: &Path, writer: AuditWriter) -> Result<ControlServer, Hinted> {
    let cannot = |err: std::io::Error| {
        Hinted::new(format!(
            "cannot listen on the control socket {}: {err}",
            path.display()
        ))
        .hint("check that the state directory is writable by this user")
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(cannot)?,
        Ok(_) => {
            return Err(
                Hinted::new(format!("{} exists and is not a socket", path.display()))
                    .hint("move it aside; the Sidecar creates its control socket there"),
            );
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(cannot)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(cannot)?;
    std::thread::Builder::new()
        .name("audit-control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                answer(stream, &writer);
            }
        })
        .map_err(|err| Hinted::new(format!("cannot start the control thread: {err}")))?;
    Ok(ControlServer {
        path: path.to_path_buf(),
    })
}

fn answer(stream: UnixStream, writer: &AuditWriter) {
    if !same_user(&stream) {
        tracing::warn!("control socket: connection from another user refused");
        return;
    }
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let mut line = String::new();
    let read = BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line);
    let reply = match read
        .ok()
        .and_then(|_| serde_json::from_str::<Request>(line.trim()).ok())
    {
        Some(Request::Health) => Reply {
            ok: true,
            health: Some(health_of(writer)),
            ..Reply::default()
        },
        Some(Request::Rotate) => match writer.rotate(Trigger::Operator) {
            Ok(report) => Reply {
                ok: true,
                rotated: Some(RotateReply {
                    rotated_to: report.rotated_to,
                    last_seq: report.last_seq,
                    marker_seq: report.marker_seq,
                    retained: report.retention.map(|r| r.retained),
                }),
                ..Reply::default()
            },
            Err(err) => Reply::failed(&err),
        },
        None => Reply::failed(
            &Hinted::new("not a control request")
                .hint(r#"send {"op":"health"} or {"op":"rotate"}"#),
        ),
    };
    let mut text = serde_json::to_vec(&reply).unwrap_or_default();
    text.push(b'\n');
    let _ = (&stream).write_all(&text);
}

fn health_of(writer: &AuditWriter) -> HealthReply {
    let log = writer.path().to_path_buf();
    let last_seq = writer.last_seq();
    match &*writer.health().borrow() {
        AuditHealth::Ok => HealthReply {
            state: "ok".into(),
            log,
            last_seq,
            reason: None,
            since: None,
        },
        AuditHealth::Unavailable { reason, since } => HealthReply {
            state: "unavailable".into(),
            log,
            last_seq,
            reason: Some(reason.clone()),
            since: Some(since.clone()),
        },
    }
}

/// Is the peer this process's own user?
fn same_user(stream: &UnixStream) -> bool {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    getsockopt(stream, PeerCredentials)
        .is_ok_and(|cred| cred.uid() == nix::unistd::geteuid().as_raw())
}

/// Ask the Sidecar listening on `socket` how its audit log is.
pub fn health(socket: &Path, timeout: Duration) -> Result<HealthReply, Hinted> {
    let reply = request(socket, Request::Health, timeout)?;
    reply
        .health
        .ok_or_else(|| Hinted::new(format!("{} sent no health report", socket.display())))
}

/// Ask the Sidecar listening on `socket` to rotate its audit log now.
pub fn rotate(socket: &Path, timeout: Duration) -> Result<RotateReply, Hinted> {
    let reply = request(socket, Request::Rotate, timeout)?;
    reply
        .rotated
        .ok_or_else(|| Hinted::new(format!("{} sent no rotation report", socket.display())))
}

fn request(socket: &Path, request: Request, timeout: Duration) -> Result<Reply, Hinted> {
    let io = |err: std::io::Error| {
        Hinted::new(format!("no Sidecar answers on {}: {err}", socket.display())).hint(
            "is the Sidecar running on this state directory? (`firma sidecar status`; pass \
             --state-dir / FIRMA_STATE_DIR for another one)",
        )
    };
    let stream = UnixStream::connect(socket).map_err(io)?;
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let mut line = serde_json::to_vec(&request).expect("requests serialise");
    line.push(b'\n');
    (&stream).write_all(&line).map_err(io)?;
    let mut text = String::new();
    BufReader::new(&stream).read_line(&mut text).map_err(io)?;
    let reply: Reply = serde_json::from_str(text.trim()).map_err(|err| {
        Hinted::new(format!(
            "{} answered something that is not a control reply: {err}",
            socket.display()
        ))
        .hint("is another program listening there?")
    })?;
    if !reply.ok {
        let mut err = Hinted::new(
            reply
                .error
                .clone()
                .unwrap_or_else(|| "the Sidecar refused the request".into()),
        );
        if let Some(hint) = &reply.hint {
            err = err.hint(hint.clone());
        }
        return Err(err);
    }
    Ok(reply)
}
