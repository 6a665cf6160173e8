//! "Address in use", said helpfully: who holds the address (pid and command, when the OS lets us
//! see it) and a hint that fits the holder — another firma stack is stopped through *its* state
//! dir; another program means changing firma's listener (or stopping that program).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::dirs::STATE_DIR_ENV;
use crate::error::Hinted;
use crate::platform::ports::{Holder, listener_holder};
use crate::state_dir::Role;

/// Who holds a listen address, as far as firma can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Occupant {
    /// A firma daemon; its state dir when it can be read from its command line or environment.
    Firma {
        pid: i32,
        command: String,
        state_dir: Option<PathBuf>,
    },
    /// Some other program.
    Other { pid: i32, command: String },
    /// Not visible (another user's process, or the port was released meanwhile).
    Unknown,
}

impl Occupant {
    pub fn of(addr: SocketAddr) -> Self {
        listener_holder(addr).map_or(Self::Unknown, Self::from_holder)
    }

    fn from_holder(holder: Holder) -> Self {
        let command = holder.command();
        let is_firma = holder
            .exe
            .as_deref()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "firma")
            || holder
                .argv
                .first()
                .is_some_and(|a| a == "firma" || a.ends_with("/firma"));
        if !is_firma {
            return Self::Other {
                pid: holder.pid,
                command,
            };
        }
        let flag = holder
            .argv
            .iter()
            .position(|a| a == "--state-dir")
            .and_then(|i| holder.argv.get(i + 1))
            .map(PathBuf::from);
        Self::Firma {
            pid: holder.pid,
            command,
            state_dir: flag.or_else(|| holder.env(STATE_DIR_ENV).map(PathBuf::from)),
        }
    }
}

/// The error for `role`'s listen address `addr` (the config key `key`) being taken.
pub fn address_in_use(role: Role, addr: SocketAddr, key: &str) -> Hinted {
    address_in_use_by(role, addr, key, Occupant::of(addr))
}

fn address_in_use_by(role: Role, addr: SocketAddr, key: &str, occupant: Occupant) -> Hinted {
    let change = format!("change {key} in firma.toml");
    match occupant {
        Occupant::Firma {
            pid,
            command,
            state_dir: Some(dir),
        } => Hinted::new(format!(
            "{}: address {addr} already in use by another firma stack (pid {pid}: {command})",
            role.name()
        ))
        .hint(format!(
            "stop it with `firma sidecar stop --state-dir {}`, or {change}",
            dir.display()
        )),
        Occupant::Firma { pid, command, .. } => Hinted::new(format!(
            "{}: address {addr} already in use by a firma process (pid {pid}: {command})",
            role.name()
        ))
        .hint(format!("stop it (kill {pid}), or {change}")),
        Occupant::Other { pid, command } => Hinted::new(format!(
            "{}: address {addr} already in use by pid {pid} ({command})",
            role.name()
        ))
        .hint(format!("{change}, or stop that program")),
        Occupant::Unknown => Hinted::new(format!("{}: address {addr} already in use", role.name()))
            .hint(format!(
                "{change}; `ss -ltnp` shows which program holds the port"
            )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(argv: &[&str]) -> Holder {
        Holder {
            pid: 42,
            argv: argv.iter().map(|s| s.to_string()).collect(),
            exe: None,
        }
    }

    #[test]
    fn a_firma_holder_is_told_apart_and_its_state_dir_named() {
        let firma = Occupant::from_holder(holder(&[
            "/usr/bin/firma",
            "sidecar",
            "--config",
            "/p/.firma/firma.toml",
            "--state-dir",
            "/run/other",
        ]));
        let err = address_in_use_by(
            Role::Sidecar,
            "127.0.0.1:8080".parse().unwrap(),
            "[sidecar.proxy].listen",
            firma,
        );
        assert!(
            err.message().starts_with(
                "sidecar: address 127.0.0.1:8080 already in use by another firma stack (pid 42:"
            ),
            "{err}"
        );
        assert!(
            err.hint_text()
                .unwrap()
                .contains("firma sidecar stop --state-dir /run/other")
        );
        let other = Occupant::from_holder(holder(&["python3", "-m", "http.server"]));
        assert_eq!(
            other,
            Occupant::Other {
                pid: 42,
                command: "python3 -m http.server".into()
            }
        );
        let err = address_in_use_by(
            Role::Authority,
            "127.0.0.1:1".parse().unwrap(),
            "[authority].listen",
            other,
        );
        assert!(
            err.hint_text()
                .unwrap()
                .starts_with("change [authority].listen")
        );
    }
}
