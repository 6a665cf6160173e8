//! The control socket between `firma run` and its launcher: a socketpair created before any
//! namespace exists. The outer process sends the [`Spec`] (JSON, then end of stream); the
//! launcher answers with [`Ready`] and, beside it (`SCM_RIGHTS`), the proxy listener it bound
//! inside the sandbox's network namespace.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::{Ready, Spec};

/// Upper bound of a message (a spec lists paths and the environment).
const MAX_MESSAGE: usize = 1 << 20;

pub fn send_spec(stream: &mut UnixStream, spec: &Spec) -> io::Result<()> {
    let json = serde_json::to_vec(spec).map_err(io::Error::other)?;
    stream.write_all(&json)?;
    stream.shutdown(std::net::Shutdown::Write)
}

pub fn recv_spec(stream: &mut UnixStream) -> io::Result<Spec> {
    let mut json = Vec::new();
    stream.take(MAX_MESSAGE as u64).read_to_end(&mut json)?;
    serde_json::from_slice(&json).map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))
}

/// `Ready` as a length-prefixed JSON message, the listener attached to its first byte.
pub fn send_ready(stream: &mut UnixStream, ready: &Ready, listener: impl AsFd) -> io::Result<()> {
    let json = serde_json::to_vec(ready).map_err(io::Error::other)?;
    let len = u32::try_from(json.len())
        .map_err(io::Error::other)?
        .to_be_bytes();
    let fds = [listener.as_fd()];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("ancillary buffer too small"));
    }
    let sent = rustix::net::sendmsg(
        &*stream,
        &[IoSlice::new(&len)],
        &mut control,
        SendFlags::empty(),
    )?;
    if sent != len.len() {
        stream.write_all(&len[sent..])?;
    }
    stream.write_all(&json)
}

/// The launcher's `Ready` and the listener, or `None` when it closed the socket without one
/// (it failed or refused, and says why on its own stderr).
pub fn recv_ready(stream: &mut UnixStream) -> io::Result<Option<(Ready, OwnedFd)>> {
    let mut len = [0u8; 4];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = rustix::net::recvmsg(
        &*stream,
        &mut [IoSliceMut::new(&mut len)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if received.bytes == 0 {
        return Ok(None);
    }
    let mut listener = None;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            for fd in fds {
                listener.get_or_insert(fd);
            }
        }
    }
    stream.read_exact(&mut len[received.bytes..])?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "oversized message",
        ));
    }
    let mut json = vec![0u8; len];
    stream.read_exact(&mut json)?;
    let ready = serde_json::from_slice(&json)
        .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err))?;
    let listener = listener
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no listener attached"))?;
    Ok(Some((ready, listener)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::sandbox::Facilities;

    #[test]
    fn a_listener_crosses_the_socketpair() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ready = Ready {
            port,
            obtained: Facilities::default(),
        };
        send_ready(&mut a, &ready, &listener).unwrap();
        drop(listener);
        let (got, fd) = recv_ready(&mut b).unwrap().unwrap();
        assert_eq!(got.port, port);
        let passed = std::net::TcpListener::from(fd);
        assert_eq!(passed.local_addr().unwrap().port(), port);
        std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        drop(a);
        assert!(recv_ready(&mut b).unwrap().is_none());
    }
}
