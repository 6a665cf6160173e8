//! Who holds a TCP port: the listening socket's inode from `/proc/net/tcp{,6}`, then the
//! process whose `/proc/<pid>/fd/` links to `socket:[inode]`. Used to turn "address in use"
//! into "address in use by pid 4242 (python3 -m http.server)". Best effort: another user's
//! process is not readable, and then nobody is named.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

/// A process holding a listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    /// Its command line (`/proc/<pid>/cmdline`), argument by argument.
    pub argv: Vec<String>,
    /// Its executable, when readable.
    pub exe: Option<PathBuf>,
}

impl Holder {
    /// The command line as one string, shortened for a message.
    pub fn command(&self) -> String {
        let text = self.argv.join(" ");
        if text.chars().count() > 120 {
            format!("{}…", text.chars().take(120).collect::<String>())
        } else {
            text
        }
    }

    /// The value of an environment variable of the holder, when readable.
    pub fn env(&self, name: &str) -> Option<String> {
        let environ = std::fs::read(format!("/proc/{}/environ", self.pid)).ok()?;
        environ.split(|b| *b == 0).find_map(|entry| {
            let entry = String::from_utf8_lossy(entry);
            let (key, value) = entry.split_once('=')?;
            (key == name).then(|| value.to_string())
        })
    }
}

/// The process listening on `addr` (a listener on the wildcard address of the same family and
/// port counts), if it can be found.
pub fn listener_holder(addr: SocketAddr) -> Option<Holder> {
    let inodes = listening_inodes(addr);
    if inodes.is_empty() {
        return None;
    }
    let wanted: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
        });
        if holds {
            let argv = std::fs::read(entry.path().join("cmdline"))
                .map(|raw| {
                    raw.split(|b| *b == 0)
                        .filter(|a| !a.is_empty())
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect()
                })
                .unwrap_or_default();
            return Some(Holder {
                pid,
                argv,
                exe: std::fs::read_link(entry.path().join("exe")).ok(),
            });
        }
    }
    None
}

/// TCP state `0A` is LISTEN.
const LISTEN: &str = "0A";

fn listening_inodes(addr: SocketAddr) -> Vec<u64> {
    let table = match addr {
        SocketAddr::V4(_) => "/proc/net/tcp",
        SocketAddr::V6(_) => "/proc/net/tcp6",
    };
    let Ok(text) = std::fs::read_to_string(table) else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(parse_line)
        .filter(|(local, state, _)| state == LISTEN && covers(*local, addr))
        .map(|(_, _, inode)| inode)
        .collect()
}

/// Whether a listener bound to `local` takes connections meant for `wanted`.
fn covers(local: SocketAddr, wanted: SocketAddr) -> bool {
    local.port() == wanted.port()
        && (local.ip() == wanted.ip()
            || local.ip().is_unspecified()
            || wanted.ip().is_unspecified())
}

/// `(local address, state, inode)` of one `/proc/net/tcp{,6}` row.
fn parse_line(line: &str) -> Option<(SocketAddr, String, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let local = parse_address(fields.get(1)?)?;
    let state = fields.get(3)?.to_string();
    let inode = fields.get(9)?.parse().ok()?;
    Some((local, state, inode))
}

/// `0100007F:1F90` (IPv4) or 32 hex digits + `:port` (IPv6): each 32-bit word is printed in the
/// kernel's byte order, i.e. the bytes of the address as stored, read as a native integer.
fn parse_address(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = match ip.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(ip)?)),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                chunk.copy_from_slice(&word(&ip[i * 8..i * 8 + 8])?);
            }
            IpAddr::V6(Ipv6Addr::from(bytes))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_addresses_decode() {
        if cfg!(target_endian = "little") {
            assert_eq!(
                parse_address("0100007F:1F90"),
                Some("127.0.0.1:8080".parse().unwrap())
            );
            assert_eq!(
                parse_address("00000000000000000000000001000000:0050"),
                Some("[::1]:80".parse().unwrap())
            );
        }
        assert_eq!(parse_address("zz:1"), None);
    }

    #[test]
    fn the_holder_of_a_listener_is_this_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let holder = listener_holder(addr).expect("our own listener is found");
        assert_eq!(holder.pid, std::process::id() as i32);
        assert!(!holder.argv.is_empty());
        // A wildcard request finds it too; a different port does not.
        let wildcard = SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), addr.port());
        assert_eq!(listener_holder(wildcard).map(|h| h.pid), Some(holder.pid));
        drop(listener);
        assert_eq!(listener_holder(addr), None);
    }
}
