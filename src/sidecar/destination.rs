//! Where an allowed call goes: the host is resolved **once**, that address is checked, recorded
//! (`intent.addr`) and connected to — no second lookup for DNS rebinding to exploit.
//!
//! Two checks, whatever the policy says:
//! - **`self_target`**: firma's own listeners (the Sidecar's proxy port, the Authority's gRPC
//!   address, every `firma run` relay) are never a destination — by any loopback alias, the
//!   unspecified address, a local interface address or a name resolving there;
//! - **`private_address`**: a host *name* resolving to a loopback, link-local or private address
//!   is refused when its rule says `deny_private` (the default for host-name rules).

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use super::pipeline::{Reason, Verdict};
use super::target::Target;
use crate::error::Hinted;

/// Static name → address entries the Sidecar resolves without DNS, like curl's `--resolve`:
/// `name=ip[,name=ip…]`. For operators pinning internal names, and for tests.
pub const RESOLVE_ENV: &str = "FIRMA_SIDECAR_RESOLVE";

/// Turns a host into the one address a call connects to.
pub struct Resolver {
    pinned: HashMap<String, IpAddr>,
}

impl Resolver {
    /// The system resolver, with the entries of [`RESOLVE_ENV`] pinned.
    pub fn from_env() -> Result<Self, Hinted> {
        let text = std::env::var(RESOLVE_ENV).unwrap_or_default();
        Self::pinned(&text)
    }

    /// A resolver answering `name=ip,…` itself and asking the system for every other name.
    pub fn pinned(text: &str) -> Result<Self, Hinted> {
        let mut pinned = HashMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let parsed = entry.split_once('=').and_then(|(name, ip)| {
                Some((name.trim().to_ascii_lowercase(), ip.trim().parse().ok()?))
            });
            let Some((name, ip)) = parsed else {
                return Err(
                    Hinted::new(format!("{RESOLVE_ENV}: {entry:?} is not name=ip"))
                        .hint("write entries as name=ip, separated by commas"),
                );
            };
            pinned.insert(name, ip);
        }
        Ok(Self { pinned })
    }

    /// The address to connect to for `host:port`: the literal itself, a pinned entry, or the
    /// first address the system resolver returns.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<SocketAddr, String> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, port));
        }
        if let Some(ip) = self.pinned.get(host) {
            return Ok(SocketAddr::new(*ip, port));
        }
        let mut found = tokio::net::lookup_host((host, port))
            .await
            .map_err(|err| format!("cannot resolve {host}: {err}"))?;
        found
            .next()
            .ok_or_else(|| format!("cannot resolve {host}: no address"))
    }
}

/// firma's own listeners and the checks every destination passes.
pub struct Destinations {
    pub resolver: Resolver,
    /// Addresses of firma listeners known at startup (the proxy itself, the Authority).
    listeners: Vec<SocketAddr>,
    /// Where `firma run` relays publish their addresses.
    relay_dir: PathBuf,
    /// The last listing of the relay directory (`None`: not read yet).
    relays: RwLock<Option<RelayListing>>,
}

/// Directory timestamps come from a coarse clock (a scheduler tick, 1–10 ms): a relay file added
/// in the same tick as the listing's mtime leaves the mtime unchanged. A listing is therefore
/// trusted only once its mtime is this much older than the moment it was taken; until then the
/// directory is read again on every check (for a moment after each relay starts or stops).
const RELAY_MTIME_SETTLE: Duration = Duration::from_secs(1);

/// The relay ports as listed, and the directory's mtime before the listing (`None`: the
/// directory did not exist — cached like any other state, so a Sidecar without relays pays one
/// `stat` per loopback call, not a `read_dir`).
struct RelayListing {
    modified: Option<SystemTime>,
    /// No later change can share `modified` (see [`RELAY_MTIME_SETTLE`]).
    settled: bool,
    ports: HashSet<u16>,
}

impl Destinations {
    pub fn new(resolver: Resolver, listeners: Vec<SocketAddr>, relay_dir: PathBuf) -> Self {
        Self {
            resolver,
            listeners,
            relay_dir,
            relays: RwLock::new(None),
        }
    }

    /// The refusal for a target that names a firma listener by an address literal (or
    /// `localhost`), checked before the policy: such a call is refused whatever the policy says.
    pub fn literal_self_target(&self, target: &Target) -> Option<Verdict> {
        let ip = if target.host == "localhost" {
            IpAddr::from([127, 0, 0, 1])
        } else {
            target.host.parse().ok()?
        };
        self.is_firma(SocketAddr::new(ip, target.port))
            .then(|| self_target(target, SocketAddr::new(ip, target.port)))
    }

    /// The address an allowed call connects to, or the verdict that refuses it.
    pub fn check(
        &self,
        target: &Target,
        addr: SocketAddr,
        verdict: &Verdict,
    ) -> Result<SocketAddr, Box<Verdict>> {
        // Address literals and `localhost` were checked before the policy was asked.
        let checked = target.is_ip_literal() || target.host == "localhost";
        if !checked && self.is_firma(addr) {
            let refused = verdict.deny(Reason::SelfTarget, self_target(target, addr).detail);
            return Err(Box::new(refused));
        }
        if verdict.deny_private && !target.is_ip_literal() && is_private(addr.ip()) {
            return Err(Box::new(verdict.deny(
                Reason::PrivateAddress,
                format!(
                    "{} resolves to {} (loopback, link-local or private); its mapping rule has deny_private",
                    target.host,
                    addr.ip()
                ),
            )));
        }
        Ok(addr)
    }

    /// Whether `addr` reaches a firma listener.
    fn is_firma(&self, addr: SocketAddr) -> bool {
        let ip = unmapped(addr.ip());
        if self
            .listeners
            .iter()
            .any(|l| unmapped(l.ip()) == ip && l.port() == addr.port())
        {
            return true;
        }
        if self.listeners.iter().any(|l| l.port() == addr.port()) && is_local(ip) {
            return true;
        }
        // Relays listen on loopback only.
        (ip.is_loopback() || ip.is_unspecified()) && self.relay_ports_contain(addr.port())
    }

    fn relay_ports_contain(&self, port: u16) -> bool {
        let modified = std::fs::metadata(&self.relay_dir)
            .and_then(|m| m.modified())
            .ok();
        {
            let relays = self.relays.read().unwrap_or_else(|p| p.into_inner());
            if let Some(listing) = relays.as_ref()
                && listing.settled
                && listing.modified == modified
            {
                return listing.ports.contains(&port);
            }
        }
        let listed_at = SystemTime::now();
        let ports = read_relay_ports(&self.relay_dir);
        let found = ports.contains(&port);
        let settled = modified.is_none_or(|modified| {
            listed_at
                .duration_since(modified)
                .is_ok_and(|age| age >= RELAY_MTIME_SETTLE)
        });
        *self.relays.write().unwrap_or_else(|p| p.into_inner()) = Some(RelayListing {
            modified,
            settled,
            ports,
        });
        found
    }
}

fn self_target(target: &Target, addr: SocketAddr) -> Verdict {
    Verdict::refused(
        Reason::SelfTarget,
        format!(
            "{} ({addr}) is one of firma's own listeners; firma never forwards to itself",
            target.authority()
        ),
    )
}

fn read_relay_ports(dir: &std::path::Path) -> HashSet<u16> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashSet::new();
    };
    entries
        .filter_map(Result::ok)
        // `<pid>.listen`: a relay whose process is gone (killed before it could clean up) no
        // longer holds its port.
        .filter(|entry| {
            let name = entry.file_name();
            let pid = name.to_str().and_then(|n| n.strip_suffix(".listen"));
            pid.and_then(|p| p.parse::<i32>().ok()).is_none_or(|pid| {
                !matches!(
                    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
                    Err(nix::errno::Errno::ESRCH)
                )
            })
        })
        .filter_map(|entry| std::fs::read_to_string(entry.path()).ok())
        .filter_map(|text| text.trim().parse::<SocketAddr>().ok())
        .map(|addr| addr.port())
        .collect()
}

/// IPv4-mapped IPv6 addresses as the IPv4 address they reach.
fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is this machine: loopback, unspecified, or bound to a local interface (asked
/// of the kernel by binding a UDP socket to it).
fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified() || UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Loopback, unspecified, link-local, private (RFC 1918, RFC 4193), shared (RFC 6598).
pub fn is_private(ip: IpAddr) -> bool {
    match unmapped(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_broadcast()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> Target {
        Target::absolute(&uri.parse().unwrap()).unwrap()
    }

    fn allowed() -> Verdict {
        let mut v = Verdict::refused(Reason::Allowed, "");
        v.decision = crate::audit::event::Decision::Allow;
        v
    }

    #[test]
    fn firma_listeners_are_refused_by_every_alias() {
        let dir = tempfile::tempdir().unwrap();
        let d = Destinations::new(
            Resolver::pinned("").unwrap(),
            vec![
                "127.0.0.1:7000".parse().unwrap(),
                "10.9.8.7:50051".parse().unwrap(),
            ],
            dir.path().join("relays"),
        );
        for uri in [
            "http://127.0.0.1:7000/",
            "http://127.0.0.2:7000/",
            "http://localhost:7000/",
            "http://0.0.0.0:7000/",
            "http://[::1]:7000/",
            "http://[::ffff:127.0.0.1]:7000/",
        ] {
            let verdict = d.literal_self_target(&target(uri)).expect(uri);
            assert_eq!(verdict.reason, Reason::SelfTarget, "{uri}");
        }
        assert!(
            d.literal_self_target(&target("http://127.0.0.1:7001/"))
                .is_none()
        );
        assert!(
            d.literal_self_target(&target("http://example.com:7000/"))
                .is_none()
        );
        // A remote Authority's exact address, whatever name reached it.
        let t = target("http://auth.example:50051/");
        let err = d
            .check(&t, "10.9.8.7:50051".parse().unwrap(), &allowed())
            .unwrap_err();
        assert_eq!(err.reason, Reason::SelfTarget);
        // Relays publish their ports; a new file is seen at once.
        let relays = dir.path().join("relays");
        std::fs::create_dir(&relays).unwrap();
        assert!(
            d.literal_self_target(&target("http://127.0.0.1:7100/"))
                .is_none()
        );
        let me = std::process::id();
        std::fs::write(relays.join(format!("{me}.listen")), "127.0.0.1:7100\n").unwrap();
        assert!(
            d.literal_self_target(&target("http://127.0.0.1:7100/"))
                .is_some()
        );
        // A relay whose process is gone no longer holds its port.
        std::fs::write(relays.join("2147483646.listen"), "127.0.0.1:7200\n").unwrap();
        assert!(
            d.literal_self_target(&target("http://127.0.0.1:7200/"))
                .is_none()
        );
    }

    /// The directory's mtime has a coarse clock: a relay added in the same tick as the last
    /// listing leaves it unchanged, and must be seen all the same.
    #[test]
    fn a_relay_added_within_the_same_mtime_tick_is_seen() {
        let dir = tempfile::tempdir().unwrap();
        let relays = dir.path().join("relays");
        std::fs::create_dir(&relays).unwrap();
        let d = Destinations::new(Resolver::pinned("").unwrap(), vec![], relays.clone());
        let me = std::process::id();
        let set_mtime = |at: SystemTime| {
            std::fs::File::open(&relays)
                .unwrap()
                .set_modified(at)
                .unwrap();
        };
        std::fs::write(relays.join(format!("{me}.listen")), "127.0.0.1:7100\n").unwrap();
        let tick = std::fs::metadata(&relays).unwrap().modified().unwrap();
        assert!(d.relay_ports_contain(7100));
        // A second relay in the same tick: the mtime the listing saw, unchanged.
        std::fs::write(relays.join("1.listen"), "127.0.0.1:7300\n").unwrap();
        set_mtime(tick);
        assert!(
            d.relay_ports_contain(7300),
            "a listing of the same tick was trusted"
        );

        // Once the mtime is well in the past, the listing is reused without reading again.
        let past = SystemTime::now() - 10 * RELAY_MTIME_SETTLE;
        set_mtime(past);
        assert!(d.relay_ports_contain(7300));
        std::fs::remove_file(relays.join("1.listen")).unwrap();
        set_mtime(past);
        assert!(
            d.relay_ports_contain(7300),
            "a settled listing of an unchanged directory is reused"
        );
        // Any change of the mtime is read again.
        set_mtime(SystemTime::now());
        assert!(!d.relay_ports_contain(7300));
    }

    #[test]
    fn names_resolving_to_private_addresses_follow_deny_private() {
        let d = Destinations::new(Resolver::pinned("").unwrap(), vec![], "/nonexistent".into());
        let name = target("http://rebind.example/");
        let private: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let public: SocketAddr = "93.184.216.34:80".parse().unwrap();
        let err = d.check(&name, private, &allowed()).unwrap_err();
        assert_eq!(err.reason, Reason::PrivateAddress);
        assert_eq!(d.check(&name, public, &allowed()), Ok(public));
        let mut open = allowed();
        open.deny_private = false;
        assert_eq!(d.check(&name, private, &open), Ok(private));
        // An address literal is what the policy saw: not a name to distrust.
        assert_eq!(
            d.check(&target("http://127.0.0.1/"), private, &allowed()),
            Ok(private)
        );
    }

    #[test]
    fn private_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "172.32.0.1", "2606:4700::1", "100.128.0.1"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn pinned_names_resolve_without_dns() {
        let r = Resolver::pinned("rebind.test=127.0.0.1, other.test=::1").unwrap();
        assert_eq!(
            r.resolve("rebind.test", 80).await.unwrap(),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            r.resolve("other.test", 81).await.unwrap(),
            "[::1]:81".parse().unwrap()
        );
        assert_eq!(
            r.resolve("10.0.0.1", 82).await.unwrap(),
            "10.0.0.1:82".parse().unwrap()
        );
        assert!(Resolver::pinned("nonsense").is_err());
        assert!(Resolver::pinned("a=not-an-ip").is_err());
    }
}
