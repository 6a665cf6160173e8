//! Readiness notification, systemd style: when `NOTIFY_SOCKET` names a Unix datagram socket,
//! send `READY=1` (plus status fields) to it. `firma sidecar start` uses the same protocol to
//! learn that a child is ready, so a foreground `start` under systemd `Type=notify` and a child
//! under `start` speak one language.
//!
//! Fields firma sends besides `READY=1`: `STATUS=<text>` and `X_FIRMA_LISTEN=<ip:port>` (the
//! address the daemon actually bound).

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

pub const NOTIFY_SOCKET_ENV: &str = "NOTIFY_SOCKET";
pub const LISTEN_FIELD: &str = "X_FIRMA_LISTEN";

/// Send a notification message if `NOTIFY_SOCKET` is set. Returns whether one was sent.
pub fn notify(fields: &[(&str, &str)]) -> std::io::Result<bool> {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET_ENV).filter(|v| !v.is_empty()) else {
        return Ok(false);
    };
    let message: String = fields.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    let socket = UnixDatagram::unbound()?;
    let target = target.to_string_lossy().into_owned();
    if let Some(abstract_name) = target.strip_prefix('@') {
        send_abstract(&socket, abstract_name, message.as_bytes())?;
    } else {
        socket.send_to(message.as_bytes(), PathBuf::from(target))?;
    }
    Ok(true)
}

/// Tell the supervisor (or systemd) that the daemon is ready and where it listens.
pub fn notify_ready(listen: &str, status: &str) -> std::io::Result<bool> {
    notify(&[("READY", "1"), (LISTEN_FIELD, listen), ("STATUS", status)])
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

/// Parse a notification datagram into `(key, value)` pairs.
pub fn parse_message(message: &str) -> Vec<(&str, &str)> {
    message
        .lines()
        .filter_map(|line| line.split_once('='))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_fields() {
        let fields = parse_message("READY=1\nX_FIRMA_LISTEN=127.0.0.1:5\nSTATUS=a=b\n");
        assert_eq!(
            fields,
            vec![
                ("READY", "1"),
                ("X_FIRMA_LISTEN", "127.0.0.1:5"),
                ("STATUS", "a=b")
            ]
        );
    }
}
