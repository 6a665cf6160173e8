//! The `firma run` sandbox (Linux, DESIGN §12): the agent's only way out is its relay.
//!
//! `firma run` (the *outer* process) computes a [`Spec`] — what to hide, what to reveal again,
//! what may be written — and re-executes itself as `firma __sandbox` (the *launcher*), a fresh
//! single-threaded process that:
//!
//! 1. enters a new user namespace (mapping only the caller's own uid and gid);
//! 2. enters a new network namespace and brings up its `lo` — nothing else exists there;
//! 3. enters a new mount namespace: a private `/tmp` (the paths the agent needs under the old
//!    `/tmp` bound back in), empty read-only mounts over `.firma/`, the state and data dirs, the
//!    runtime dir and the home secrets, and the CA files the agent needs bound back read-only;
//! 4. enters a nested user + mount namespace, which locks every mount above (the agent cannot
//!    unmount them to see what they cover, even as root in its namespace);
//! 5. binds the agent's proxy listener on `127.0.0.1:0` *inside* the new network namespace and
//!    hands the listening socket to the outer process over a socketpair created before any of
//!    this (the relay then serves it from the host side: the only way out);
//! 6. applies Landlock (ABI-negotiated, best effort): the whole filesystem read-only, writable
//!    only the workspace, the private `/tmp`, the configured and per-agent paths and a few
//!    devices; signals and abstract sockets scoped to the sandbox; when the network namespace is
//!    missing, TCP connects limited to the relay's port;
//! 7. executes the agent. Namespaces and Landlock are inherited by every descendant: children,
//!    `setsid`, daemonised grandchildren are all equally confined.
//!
//! In `auto` mode a facility the kernel lacks is skipped and reported (one `warn:` line in the
//! outer process); in `required` mode the launcher refuses (exit 2) instead.

mod plan;

#[cfg(target_os = "linux")]
mod confine;
#[cfg(target_os = "linux")]
mod control;
#[cfg(target_os = "linux")]
mod launcher;
#[cfg(target_os = "linux")]
mod mounts;
#[cfg(target_os = "linux")]
mod netlink;
#[cfg(target_os = "linux")]
mod outer;

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::config::schema::SandboxMode;
#[cfg(target_os = "linux")]
pub use launcher::{launch, probe_here as launcher_probe};
#[cfg(target_os = "linux")]
pub use outer::{Started, start};
pub use plan::{PlanInputs, plan};

/// The Landlock ABI firma asks for (access rights of ABI 1-7; the kernel may grant fewer, which
/// [`Facilities::landlock_abi`] reports). Rights of later ABIs are untested here, so not asked.
pub const LANDLOCK_TARGET_ABI: i32 = 7;

/// Test hook (debug builds only): a comma-separated list of facilities to treat as missing, so
/// `--sandbox required` on a machine without them can be exercised.
pub const SIMULATE_MISSING_ENV: &str = "FIRMA_SANDBOX_SIMULATE_MISSING";

/// A kernel facility the sandbox is built from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Facility {
    UserNamespace,
    NetworkNamespace,
    MountNamespace,
    Landlock,
}

impl Facility {
    pub const ALL: [Facility; 4] = [
        Self::UserNamespace,
        Self::NetworkNamespace,
        Self::MountNamespace,
        Self::Landlock,
    ];

    /// The name in messages and in [`SIMULATE_MISSING_ENV`].
    pub fn name(self) -> &'static str {
        match self {
            Self::UserNamespace => "user-namespace",
            Self::NetworkNamespace => "network-namespace",
            Self::MountNamespace => "mount-namespace",
            Self::Landlock => "landlock",
        }
    }

    /// How an operator enables the facility.
    pub fn remedy(self) -> &'static str {
        match self {
            Self::UserNamespace | Self::NetworkNamespace | Self::MountNamespace => {
                "allow unprivileged user namespaces (sysctl user.max_user_namespaces > 0; \
                 kernel.unprivileged_userns_clone=1 or apparmor_restrict_unprivileged_userns=0 \
                 where the distribution has them)"
            }
            Self::Landlock => {
                "boot a kernel with Landlock enabled (CONFIG_SECURITY_LANDLOCK=y, `landlock` in \
                 the lsm= boot parameter)"
            }
        }
    }

    /// What the agent can do when this facility is missing.
    pub fn consequence(self) -> &'static str {
        match self {
            Self::UserNamespace => "no namespaces for an unprivileged user",
            Self::NetworkNamespace => "direct network access not cut off",
            Self::MountNamespace => "firma's files and home secrets not hidden, /tmp shared",
            Self::Landlock => "filesystem not read-only",
        }
    }

    /// Facilities named in the test hook's environment variable (debug builds only).
    pub fn simulated_missing() -> Vec<Facility> {
        if !cfg!(debug_assertions) {
            return Vec::new();
        }
        let value = std::env::var(SIMULATE_MISSING_ENV).unwrap_or_default();
        Self::ALL
            .into_iter()
            .filter(|f| value.split(',').any(|name| name.trim() == f.name()))
            .collect()
    }
}

impl fmt::Display for Facility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a machine offers, or what one sandbox obtained.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Facilities {
    pub user_namespace: bool,
    pub network_namespace: bool,
    pub mount_namespace: bool,
    /// The Landlock ABI in force (`None`: Landlock unavailable or not enforced).
    pub landlock_abi: Option<i32>,
    /// Why each missing facility is missing (`"user-namespace: unshare: EPERM"`).
    #[serde(default)]
    pub reasons: Vec<String>,
}

impl Facilities {
    pub fn has(&self, facility: Facility) -> bool {
        match facility {
            Facility::UserNamespace => self.user_namespace,
            Facility::NetworkNamespace => self.network_namespace,
            Facility::MountNamespace => self.mount_namespace,
            Facility::Landlock => self.landlock_abi.is_some(),
        }
    }

    pub fn missing(&self) -> Vec<Facility> {
        Facility::ALL
            .into_iter()
            .filter(|f| !self.has(*f))
            .collect()
    }

    /// What this machine offers and whether `--sandbox required` would start (doctor's line).
    pub fn summary(&self) -> String {
        let missing = self.missing();
        if missing.is_empty() {
            return format!(
                "user, network and mount namespaces, Landlock ABI {}: --sandbox required would start",
                self.landlock_abi.unwrap_or_default()
            );
        }
        let names: Vec<String> = missing
            .iter()
            .map(|f| format!("{f} ({})", f.consequence()))
            .collect();
        format!(
            "lacks {}: --sandbox auto runs with the rest, --sandbox required would refuse",
            names.join(", ")
        )
    }

    /// How to obtain what is missing (doctor's fix).
    pub fn remedies(&self) -> String {
        let mut remedies: Vec<&str> = self.missing().iter().map(|f| f.remedy()).collect();
        remedies.dedup();
        remedies.join("; ")
    }

    /// The `warn:` line of an `auto` run that lacks something, naming what and what it means.
    pub fn degraded_warning(&self) -> Option<String> {
        let missing = self.missing();
        if missing.is_empty() {
            return None;
        }
        let items: Vec<String> = missing
            .iter()
            .map(|f| format!("{f} ({})", f.consequence()))
            .collect();
        Some(format!(
            "sandbox incomplete: this kernel lacks {}; use --sandbox required to refuse instead",
            items.join(", ")
        ))
    }
}

/// What the outer process asks the launcher to build (sent over the control socket as JSON —
/// never in argv or the environment, which other processes can read).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spec {
    pub mode: SandboxMode,
    pub command: Vec<String>,
    pub cwd: PathBuf,
    /// The agent's whole environment, except the proxy variables the launcher adds once the
    /// relay port is known.
    pub env: Vec<(String, String)>,
    /// `user:password` the relay demands in the proxy URL.
    pub proxy_userinfo: String,
    pub layout: plan::Layout,
    /// Facilities to treat as missing (the test hook; empty in release builds).
    #[serde(default)]
    pub simulate_missing: Vec<Facility>,
}

/// The launcher's answer once the sandbox stands (the listener travels beside it).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    /// The relay's port inside the sandbox's network namespace.
    pub port: u16,
    pub obtained: Facilities,
}

/// Probe what this machine offers, by running the launcher's set-up steps in a throwaway
/// process (`firma __sandbox --probe`); doctor reports it.
pub fn probe() -> Facilities {
    #[cfg(target_os = "linux")]
    {
        launcher::probe_in_child()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Facilities {
            reasons: vec!["the sandbox is built on Linux facilities only".into()],
            ..Facilities::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn degraded_warning_names_what_is_missing() {
        let all = Facilities {
            user_namespace: true,
            network_namespace: true,
            mount_namespace: true,
            landlock_abi: Some(7),
            reasons: vec![],
        };
        assert_eq!(all.degraded_warning(), None);
        let no_landlock = Facilities {
            landlock_abi: None,
            ..all.clone()
        };
        assert_eq!(no_landlock.missing(), vec![Facility::Landlock]);
        let warning = no_landlock.degraded_warning().unwrap();
        assert!(
            warning.contains("landlock (filesystem not read-only)"),
            "{warning}"
        );
    }
}
