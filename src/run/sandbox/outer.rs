//! `firma run`'s side of the sandbox: start the launcher, give it the spec, receive the proxy
//! listener it bound inside the sandbox.

use std::net::TcpListener;
use std::process::Stdio;

use tokio::process::{Child, Command};

use super::{Facilities, Spec, control};
use crate::error::Hinted;

/// A sandbox that stands, with the agent executing (or about to) inside it.
pub struct Started {
    /// The launcher, which becomes the agent.
    pub child: Child,
    /// The agent's proxy listener, inside the sandbox's network namespace.
    pub listener: TcpListener,
    pub obtained: Facilities,
}

/// Start the launcher. `Ok(Err(child))`: it exited before the sandbox stood (it printed why);
/// its exit status is the run's.
pub async fn start(spec: Spec) -> Result<Result<Started, Child>, Hinted> {
    // The control socket lives in a fresh 0700 directory and is removed as soon as the launcher
    // is connected; only the launcher's pid is accepted on it.
    let dir = tempfile::Builder::new()
        .prefix("firma-run-")
        .tempdir()
        .map_err(|err| {
            Hinted::new(format!(
                "cannot create the sandbox's control directory: {err}"
            ))
        })?;
    let path = dir.path().join("control.sock");
    let listener = tokio::net::UnixListener::bind(&path).map_err(|err| {
        Hinted::new(format!("cannot create {}: {err}", path.display()))
            .hint("set TMPDIR to a short, writable directory")
    })?;
    let exe = std::env::current_exe()
        .map_err(|err| Hinted::new(format!("cannot locate the firma binary: {err}")))?;
    let mut child = Command::new(exe)
        .arg("__sandbox")
        .arg("--control")
        .arg(&path)
        .stdin(Stdio::inherit())
        // Should `firma run` fail before it waits for the agent, the agent must not run on
        // without its relay.
        .kill_on_drop(true)
        .spawn()
        .map_err(|err| Hinted::new(format!("cannot start the sandbox launcher: {err}")))?;
    let launcher_pid = child.id().and_then(|id| i32::try_from(id).ok());

    let stream = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted.map_err(|err| {
                    Hinted::new(format!("the sandbox launcher did not connect: {err}"))
                })?;
                if stream.peer_cred().ok().and_then(|c| c.pid()) == launcher_pid {
                    break stream;
                }
                // Someone else found the socket: ignore them.
            }
            _ = child.wait() => return Ok(Err(child)),
        }
    };
    drop(listener);
    drop(dir);

    let mut stream = stream
        .into_std()
        .and_then(|s| s.set_nonblocking(false).map(|()| s))
        .map_err(|err| Hinted::new(format!("sandbox control socket: {err}")))?;
    let exchange = tokio::task::spawn_blocking(move || {
        control::send_spec(&mut stream, &spec)?;
        control::recv_ready(&mut stream)
    })
    .await
    .map_err(|err| Hinted::new(format!("sandbox control: {err}")))?
    .map_err(|err| Hinted::new(format!("sandbox control socket: {err}")))?;
    Ok(match exchange {
        Some((ready, listener)) => Ok(Started {
            child,
            listener: TcpListener::from(listener),
            obtained: ready.obtained,
        }),
        None => Err(child),
    })
}
