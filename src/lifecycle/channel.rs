//! The receiving end of the readiness protocol (`notify.rs` is the sending end): a Unix datagram
//! socket a child finds through `NOTIFY_SOCKET`. It lives in the 0700 state dir so only the
//! owner can send to it; when that path would exceed the 108-byte `sun_path` limit, a Linux
//! abstract-namespace name (`@firma-…`) is used instead.

use std::os::unix::net::UnixDatagram as StdDatagram;
use std::path::PathBuf;

use tokio::net::UnixDatagram;

pub use super::notify::Notification;
use crate::state_dir::StateDir;

/// `sun_path` is 108 bytes including the terminating NUL.
const SUN_PATH_MAX: usize = 107;

/// A bound notification socket; the file (if any) is removed on drop.
#[derive(Debug)]
pub struct NotifyChannel {
    socket: UnixDatagram,
    /// The `NOTIFY_SOCKET` value for the child.
    address: String,
    path: Option<PathBuf>,
}

impl NotifyChannel {
    /// Bind the state dir's readiness socket for `tag` and this process, or an abstract name
    /// when the path is too long.
    pub fn bind(state: &StateDir, tag: &str) -> std::io::Result<Self> {
        let path = state.notify_socket(tag, std::process::id());
        if path.as_os_str().len() <= SUN_PATH_MAX {
            let _ = std::fs::remove_file(&path);
            let socket = StdDatagram::bind(&path)?;
            socket.set_nonblocking(true)?;
            return Ok(Self {
                socket: UnixDatagram::from_std(socket)?,
                address: path.to_string_lossy().into_owned(),
                path: Some(path),
            });
        }
        Self::bind_abstract(tag)
    }

    #[cfg(target_os = "linux")]
    fn bind_abstract(tag: &str) -> std::io::Result<Self> {
        use std::os::linux::net::SocketAddrExt;
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("firma-{tag}-{}-{nonce}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let socket = StdDatagram::bind_addr(&addr)?;
        socket.set_nonblocking(true)?;
        Ok(Self {
            socket: UnixDatagram::from_std(socket)?,
            address: format!("@{name}"),
            path: None,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn bind_abstract(_: &str) -> std::io::Result<Self> {
        Err(std::io::Error::other(
            "state dir path too long for a notify socket",
        ))
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// Wait for the next datagram.
    pub async fn recv(&self) -> std::io::Result<Notification> {
        let mut buf = vec![0u8; 8192];
        let n = self.socket.recv(&mut buf).await?;
        Ok(Notification::parse(&String::from_utf8_lossy(&buf[..n])))
    }
}

impl NotifyChannel {
    /// A datagram already queued, if any (used after the sender exited).
    pub fn try_recv(&self) -> Option<Notification> {
        let mut buf = vec![0u8; 8192];
        let n = self.socket.try_recv(&mut buf).ok()?;
        Some(Notification::parse(&String::from_utf8_lossy(&buf[..n])))
    }
}

impl Drop for NotifyChannel {
    fn drop(&mut self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_notification_arrives_over_a_path_socket() {
        let tmp = tempfile::tempdir().unwrap();
        let channel = NotifyChannel::bind(&StateDir::new(tmp.path()), "t").unwrap();
        let sender = StdDatagram::unbound().unwrap();
        sender
            .send_to(b"READY=1\nX_FIRMA_LISTEN=127.0.0.1:9\n", channel.address())
            .unwrap();
        let n = channel.recv().await.unwrap();
        assert!(n.ready);
        assert_eq!(n.listen.as_deref(), Some("127.0.0.1:9"));
        let path = PathBuf::from(channel.address());
        drop(channel);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn long_state_dirs_fall_back_to_the_abstract_namespace() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("x".repeat(120));
        let channel = NotifyChannel::bind(&StateDir::new(&deep), "t").unwrap();
        assert!(channel.address().starts_with('@'));
        // Send through the same code path the daemons use.
        let sender = StdDatagram::unbound().unwrap();
        {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(
                &channel.address().as_bytes()[1..],
            )
            .unwrap();
            sender.send_to_addr(b"READY=1\n", &addr).unwrap();
        }
        assert!(channel.recv().await.unwrap().ready);
    }
}
