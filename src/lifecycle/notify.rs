//! Readiness notification, systemd style: when `NOTIFY_SOCKET` names a Unix datagram socket,
//! send `READY=1` (plus status fields) to it. `firma sidecar start` uses the same protocol to
//! learn that a child is ready, so a foreground `start` under systemd `Type=notify` and a child
//! under `start` speak one language. This file is the sending end and the message format;
//! `channel.rs` is the receiving end.
//!
//! Fields firma sends besides systemd's `READY=1`, `STOPPING=1` and `STATUS=<text>`:
//! `X_FIRMA_LISTEN=<ip:port>` (the address the daemon actually bound), `X_FIRMA_AUTHORITY=<url>`
//! (the supervisor's Authority), `X_FIRMA_ERROR=` / `X_FIRMA_HINT=` (a failed start, after its
//! rollback).

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use crate::error::Hinted;

pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
const READY: &str = "READY";
const STOPPING: &str = "STOPPING";
const STATUS: &str = "STATUS";
const LISTEN: &str = "X_FIRMA_LISTEN";
const AUTHORITY: &str = "X_FIRMA_AUTHORITY";
const ERROR: &str = "X_FIRMA_ERROR";
const HINT: &str = "X_FIRMA_HINT";

/// One notification datagram.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Notification {
    pub ready: bool,
    pub stopping: bool,
    pub listen: Option<String>,
    pub status: Option<String>,
    pub error: Option<String>,
    pub hint: Option<String>,
    pub authority: Option<String>,
}

impl Notification {
    /// A daemon is serving on `listen`.
    pub fn ready(listen: &str, status: &str) -> Self {
        Self {
            ready: true,
            listen: Some(listen.into()),
            status: Some(status.into()),
            ..Self::default()
        }
    }

    /// The supervisor's pair is serving: the proxy on `sidecar`, the Authority at `authority`.
    pub fn stack_ready(sidecar: &str, authority: &str) -> Self {
        Self {
            authority: Some(authority.into()),
            ..Self::ready(sidecar, &format!("proxy {sidecar} authority {authority}"))
        }
    }

    /// Tearing down (systemd shows the unit as deactivating).
    pub fn stopping() -> Self {
        Self {
            stopping: true,
            ..Self::default()
        }
    }

    /// A start failed (and was rolled back): the launcher prints it, systemd shows STATUS.
    pub fn start_failed(err: &Hinted) -> Self {
        let one_line = |s: &str| s.replace('\n', " ");
        let message = one_line(err.message());
        Self {
            status: Some(format!("start failed: {message}")),
            error: Some(message),
            hint: err.hint_text().map(one_line),
            ..Self::default()
        }
    }

    /// The datagram: `KEY=value` lines.
    pub fn encode(&self) -> String {
        let mut fields: Vec<(&str, &str)> = Vec::new();
        if self.ready {
            fields.push((READY, "1"));
        }
        if self.stopping {
            fields.push((STOPPING, "1"));
        }
        for (key, value) in [
            (LISTEN, &self.listen),
            (AUTHORITY, &self.authority),
            (ERROR, &self.error),
            (HINT, &self.hint),
            (STATUS, &self.status),
        ] {
            if let Some(value) = value {
                fields.push((key, value));
            }
        }
        fields.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }

    pub fn parse(message: &str) -> Self {
        let mut n = Self::default();
        for (key, value) in message.lines().filter_map(|line| line.split_once('=')) {
            let value = value.to_string();
            match key {
                READY => n.ready = value == "1",
                STOPPING => n.stopping = value == "1",
                STATUS => n.status = Some(value),
                LISTEN => n.listen = Some(value),
                AUTHORITY => n.authority = Some(value),
                ERROR => n.error = Some(value),
                HINT => n.hint = Some(value),
                _ => {}
            }
        }
        n
    }

    /// Send it to `NOTIFY_SOCKET`, if set. Returns whether it was sent.
    pub fn send(&self) -> std::io::Result<bool> {
        let Some(target) = std::env::var_os(NOTIFY_SOCKET_ENV).filter(|v| !v.is_empty()) else {
            return Ok(false);
        };
        let message = self.encode();
        let socket = UnixDatagram::unbound()?;
        let target = target.to_string_lossy().into_owned();
        if let Some(abstract_name) = target.strip_prefix('@') {
            send_abstract(&socket, abstract_name, message.as_bytes())?;
        } else {
            socket.send_to(message.as_bytes(), PathBuf::from(target))?;
        }
        Ok(true)
    }
}

/// Tell the supervisor (or systemd) that the daemon is ready and where it listens.
pub fn notify_ready(listen: &str, status: &str) -> std::io::Result<bool> {
    Notification::ready(listen, status).send()
}

#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &str, message: &[u8]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    socket.send_to_addr(message, &addr).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_: &UnixDatagram, _: &str, _: &[u8]) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract sockets need Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_fields() {
        let n = Notification::parse("READY=1\nX_FIRMA_LISTEN=127.0.0.1:5\nSTATUS=a=b\nOTHER=x\n");
        assert!(n.ready);
        assert_eq!(n.listen.as_deref(), Some("127.0.0.1:5"));
        assert_eq!(n.status.as_deref(), Some("a=b"));
    }

    #[test]
    fn messages_round_trip_in_the_systemd_format() {
        let ready = Notification::stack_ready("127.0.0.1:8080", "http://127.0.0.1:50051");
        assert_eq!(
            ready.encode(),
            "READY=1\nX_FIRMA_LISTEN=127.0.0.1:8080\nX_FIRMA_AUTHORITY=http://127.0.0.1:50051\n\
             STATUS=proxy 127.0.0.1:8080 authority http://127.0.0.1:50051\n"
        );
        assert_eq!(Notification::parse(&ready.encode()), ready);
        assert_eq!(Notification::stopping().encode(), "STOPPING=1\n");
        let failed = Notification::start_failed(&Hinted::new("a\nb").hint("do x"));
        assert_eq!(failed.error.as_deref(), Some("a b"));
        assert_eq!(Notification::parse(&failed.encode()), failed);
    }
}
