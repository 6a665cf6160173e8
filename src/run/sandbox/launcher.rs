//! The launcher (`firma __sandbox`): builds the sandbox around itself, hands the proxy listener
//! to `firma run`, then becomes the agent. It runs single-threaded in a fresh process, as a new
//! user namespace requires.

use std::convert::Infallible;
use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use nix::sched::{CloneFlags, unshare};
use nix::unistd::{getegid, geteuid};

use super::plan::Layout;
use super::{Facilities, Facility, Ready, SandboxMode, confine, control, mounts, netlink};
use crate::error::Hinted;
use crate::run::{Failure, env};

type Failed = (Failure, Hinted);

/// Build the sandbox described by the spec `firma run` sends over `control`, then execute the
/// agent. Returns only on failure.
pub fn launch(control: &Path) -> Result<Infallible, Failed> {
    let mut control = UnixStream::connect(control).map_err(|err| {
        refused(format!(
            "the sandbox launcher cannot reach firma run at {}: {err}",
            control.display()
        ))
    })?;
    let spec = control::recv_spec(&mut control)
        .map_err(|err| refused(format!("the sandbox launcher got no valid spec: {err}")))?;
    let mut builder = Builder {
        required: spec.mode == SandboxMode::Required,
        simulated: spec.simulate_missing.clone(),
        obtained: Facilities::default(),
    };
    builder.enter_namespaces(Some(&spec.layout))?;

    let listener = TcpListener::bind(("127.0.0.1", 0))
        .map_err(|err| refused(format!("cannot bind the agent's proxy port: {err}")))?;
    let port = listener
        .local_addr()
        .map_err(|err| refused(format!("cannot read the proxy port: {err}")))?
        .port();
    builder.landlock(&spec.layout, port)?;

    let ready = Ready {
        port,
        obtained: builder.obtained,
    };
    control::send_ready(&mut control, &ready, &listener)
        .map_err(|err| refused(format!("cannot hand the proxy port to firma run: {err}")))?;
    drop(listener);
    drop(control);

    let proxy = format!("http://{}@127.0.0.1:{port}", spec.proxy_userinfo);
    let err = Command::new(&spec.command[0])
        .args(&spec.command[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .envs(env::proxy_env(&proxy))
        .current_dir(&spec.cwd)
        .exec();
    Err((
        Failure::CommandNotFound,
        Hinted::new(format!("cannot run {:?}: {err}", spec.command[0]))
            .hint("check that the command exists and is executable (is it on PATH?)"),
    ))
}

/// What this machine offers: the launcher's steps, in a throwaway process.
pub fn probe_here() -> Facilities {
    let mut builder = Builder {
        required: false,
        simulated: Facility::simulated_missing(),
        obtained: Facilities::default(),
    };
    if let Err((_, err)) = builder.enter_namespaces(None) {
        builder.obtained.reasons.push(err.message().to_string());
    }
    if let Err((_, err)) = builder.landlock(&Layout::default(), 0) {
        builder.obtained.reasons.push(err.message().to_string());
    }
    builder.obtained
}

/// Runs `firma __sandbox --probe` and reads its answer.
pub fn probe_in_child() -> Facilities {
    let failed = |reason: String| Facilities {
        reasons: vec![reason],
        ..Facilities::default()
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => return failed(format!("cannot locate the firma binary: {err}")),
    };
    match Command::new(exe).args(["__sandbox", "--probe"]).output() {
        Ok(out) => serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|err| failed(format!("the sandbox probe answered nonsense: {err}"))),
        Err(err) => failed(format!("cannot run the sandbox probe: {err}")),
    }
}

struct Builder {
    required: bool,
    simulated: Vec<Facility>,
    obtained: Facilities,
}

impl Builder {
    /// User, network and mount namespaces (the mounts only when a layout is given), then the
    /// nested namespace that locks the mounts.
    fn enter_namespaces(&mut self, layout: Option<&Layout>) -> Result<(), Failed> {
        let (uid, gid) = (geteuid().as_raw(), getegid().as_raw());
        self.obtained.user_namespace = self.try_facility(Facility::UserNamespace, || {
            unshare(CloneFlags::CLONE_NEWUSER)?;
            map_ids(uid, gid)
        })?;
        self.obtained.network_namespace = self.try_facility(Facility::NetworkNamespace, || {
            unshare(CloneFlags::CLONE_NEWNET)?;
            Ok(())
        })?;
        if self.obtained.network_namespace {
            netlink::loopback_up().map_err(|err| {
                refused(format!(
                    "cannot bring up lo in the sandbox's network: {err}"
                ))
            })?;
        }
        self.obtained.mount_namespace = self.try_facility(Facility::MountNamespace, || {
            unshare(CloneFlags::CLONE_NEWNS)?;
            Ok(())
        })?;
        if self.obtained.mount_namespace
            && let Some(layout) = layout
        {
            mounts::apply(layout)
                .map_err(|err| refused(format!("cannot set up the sandbox's files: {err}")))?;
        }
        if self.obtained.user_namespace && self.obtained.mount_namespace {
            // Mounts copied into a namespace owned by a less privileged user namespace are
            // locked: nobody inside can unmount them to uncover what they hide.
            unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS)
                .map_err(io::Error::from)
                .and_then(|()| map_ids(uid, gid))
                .map_err(|err| refused(format!("cannot lock the sandbox's mounts: {err}")))?;
        }
        Ok(())
    }

    fn landlock(&mut self, layout: &Layout, relay_port: u16) -> Result<(), Failed> {
        let isolated = self.obtained.network_namespace;
        let mut abi = None;
        self.try_facility(Facility::Landlock, || {
            abi = confine::restrict(layout, relay_port, isolated).map_err(io::Error::other)?;
            abi.map(|_| ())
                .ok_or_else(|| io::Error::other("not enabled in this kernel"))
        })?;
        self.obtained.landlock_abi = abi;
        Ok(())
    }

    /// Run `enter`; a failure means the kernel lacks the facility: refused when the sandbox is
    /// required, else recorded (the outer process warns).
    fn try_facility(
        &mut self,
        facility: Facility,
        enter: impl FnOnce() -> io::Result<()>,
    ) -> Result<bool, Failed> {
        let outcome = if self.simulated.contains(&facility) {
            Err(format!("simulated by {}", super::SIMULATE_MISSING_ENV))
        } else {
            enter().map_err(|err| err.to_string())
        };
        match outcome {
            Ok(()) => Ok(true),
            Err(reason) if self.required => Err((
                Failure::Error,
                Hinted::new(format!(
                    "--sandbox required: this machine offers no {facility} ({reason}); \
                     without it: {}",
                    facility.consequence()
                ))
                .hint("run `firma doctor` to see what this kernel offers, or use --sandbox auto"),
            )),
            Err(reason) => {
                self.obtained.reasons.push(format!("{facility}: {reason}"));
                Ok(false)
            }
        }
    }
}

/// Map only our own uid and gid into the new user namespace (what an unprivileged process may).
fn map_ids(uid: u32, gid: u32) -> io::Result<()> {
    std::fs::write("/proc/self/setgroups", "deny")?;
    std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1"))?;
    std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1"))
}

fn refused(message: String) -> Failed {
    (
        Failure::Error,
        Hinted::new(message).hint("run `firma doctor`, or use --sandbox off to run unconfined"),
    )
}
