//! Bring the loopback interface of a fresh network namespace up: one `RTM_NEWLINK` request over
//! rtnetlink (what `ip link set lo up` sends), built by hand rather than pulling in a netlink
//! stack for 32 bytes.

use std::io;

use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};
use std::os::fd::AsRawFd;

const RTM_NEWLINK: u16 = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const IFF_UP: u32 = 0x1;
/// `nlmsghdr` (16 bytes) + `ifinfomsg` (16 bytes).
const REQUEST_LEN: usize = 32;

/// The `RTM_NEWLINK` request setting `IFF_UP` on interface `index`.
fn set_up_request(index: i32) -> [u8; REQUEST_LEN] {
    let mut msg = [0u8; REQUEST_LEN];
    msg[0..4].copy_from_slice(&(REQUEST_LEN as u32).to_ne_bytes());
    msg[4..6].copy_from_slice(&RTM_NEWLINK.to_ne_bytes());
    msg[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    msg[8..12].copy_from_slice(&1u32.to_ne_bytes()); // sequence number
    // pid 0: the kernel. ifinfomsg: family AF_UNSPEC, type 0, then index, flags, change mask.
    msg[20..24].copy_from_slice(&index.to_ne_bytes());
    msg[24..28].copy_from_slice(&IFF_UP.to_ne_bytes());
    msg[28..32].copy_from_slice(&IFF_UP.to_ne_bytes());
    msg
}

/// The errno of the kernel's acknowledgement (0 = success).
fn ack_errno(reply: &[u8]) -> io::Result<i32> {
    let malformed = || io::Error::new(io::ErrorKind::InvalidData, "malformed netlink reply");
    let kind = u16::from_ne_bytes(reply.get(4..6).ok_or_else(malformed)?.try_into().unwrap());
    if kind != NLMSG_ERROR {
        return Err(malformed());
    }
    let error = i32::from_ne_bytes(reply.get(16..20).ok_or_else(malformed)?.try_into().unwrap());
    Ok(-error)
}

pub fn loopback_up() -> io::Result<()> {
    let index = nix::net::if_::if_nametoindex("lo")?;
    let index = i32::try_from(index).map_err(io::Error::other)?;
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )?;
    sendto(
        fd.as_raw_fd(),
        &set_up_request(index),
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )?;
    let mut reply = [0u8; 256];
    let n = recv(fd.as_raw_fd(), &mut reply, MsgFlags::empty())?;
    match ack_errno(&reply[..n])? {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout_and_ack_parsing() {
        let msg = set_up_request(1);
        assert_eq!(&msg[0..4], &32u32.to_ne_bytes());
        assert_eq!(&msg[20..24], &1i32.to_ne_bytes());
        let mut ack = [0u8; 36];
        ack[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        assert_eq!(ack_errno(&ack).unwrap(), 0);
        ack[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        assert_eq!(ack_errno(&ack).unwrap(), 1);
        assert!(ack_errno(&ack[..8]).is_err());
    }
}
