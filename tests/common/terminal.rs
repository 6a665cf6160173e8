//! A command on a pseudo-terminal, as an operator at a terminal runs it.

use std::io::{Read, Write};
use std::process::{Command, ExitStatus};

use super::ChildGuard;

/// Run `cmd` with stdin, stdout and stderr on a new pseudo-terminal (`columns` × `rows`, if
/// given), `input` typed at it: the exit status and everything it wrote.
pub fn on_a_terminal(
    mut cmd: Command,
    size: Option<(u16, u16)>,
    input: &[u8],
) -> (ExitStatus, String) {
    let size = size.map(|(columns, rows)| nix::pty::Winsize {
        ws_row: rows,
        ws_col: columns,
        ws_xpixel: 0,
        ws_ypixel: 0,
    });
    let pty = nix::pty::openpty(size.as_ref(), None).expect("openpty");
    let slave = std::fs::File::from(pty.slave);
    cmd.stdin(slave.try_clone().unwrap())
        .stdout(slave.try_clone().unwrap())
        .stderr(slave);
    let mut guard = ChildGuard::new(cmd.spawn().expect("spawn"));
    // Drop our copies of the slave so the master sees EOF/EIO when the child exits.
    drop(cmd);
    let mut master = std::fs::File::from(pty.master);
    master.write_all(input).unwrap();
    let mut transcript = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match master.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => transcript.extend_from_slice(&buf[..n]),
        }
    }
    let status = guard.child_mut().wait().unwrap();
    (status, String::from_utf8_lossy(&transcript).into_owned())
}
