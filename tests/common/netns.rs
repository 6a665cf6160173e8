//! Private network namespaces (`ip netns`): each has its own loopback, so a test may use the
//! documented fixed ports, and every process started in one is killed when its guard drops.

use std::process::Command;

/// `ip <args>`, with the error it printed.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|err| format!("cannot run `ip`: {err} (install iproute2)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// One namespace with its loopback up. Dropping it kills what still runs inside, then deletes it.
pub struct Netns {
    name: String,
}

impl Netns {
    /// `firma-<label>-<pid>`; panics saying what is needed when namespaces cannot be made here.
    pub fn create(label: &str) -> Self {
        let ns = Self {
            name: format!("firma-{label}-{}", std::process::id() % 100_000),
        };
        let made = ip(&["netns", "add", &ns.name])
            .and_then(|()| ip(&["-n", &ns.name, "link", "set", "lo", "up"]));
        if let Err(why) = made {
            panic!(
                "network namespaces cannot be created here: {why}. This test needs root \
                 (CAP_SYS_ADMIN, CAP_NET_ADMIN), as CI has."
            );
        }
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        super::http::in_netns(Some(&self.name), program)
    }

    /// Pids of the processes still running inside.
    pub fn pids(&self) -> Vec<i32> {
        Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|pid| pid.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for pid in self.pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = ip(&["netns", "del", &self.name]);
    }
}
