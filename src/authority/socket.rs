//! The operator socket `authority.sock` (in the state dir, mode 0600 in a 0700 directory): the
//! local way to mint and revoke. The server checks each caller's uid (SO_PEERCRED, see
//! `roles::Gate::OperatorSocket`); clients refuse a socket that another user owns or could have
//! replaced.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use tokio::net::UnixListener;

use crate::config::dirs::ensure_private_dir;
use crate::error::Hinted;

/// Bind the operator socket at `path`, replacing a stale one (its Authority is gone) but never a
/// live one or a file that is not a socket.
pub fn bind(path: &Path) -> Result<UnixListener, Hinted> {
    if let Some(dir) = path.parent() {
        ensure_private_dir(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(Hinted::new(format!(
                    "cannot listen on {}: another Authority is serving it",
                    path.display()
                ))
                .hint("stop it (`firma sidecar stop`), or give this one its own --state-dir"));
            }
            std::fs::remove_file(path).map_err(|err| {
                Hinted::new(format!(
                    "cannot remove the stale socket {}: {err}",
                    path.display()
                ))
                .hint("remove it by hand")
            })?;
        }
        Ok(_) => {
            return Err(
                Hinted::new(format!("{} exists and is not a socket", path.display()))
                    .hint("move it away: the Authority's operator socket lives there"),
            );
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path).map_err(|err| {
        Hinted::new(format!("cannot listen on {}: {err}", path.display()))
            .hint("check that the state directory is writable")
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|err| Hinted::new(format!("cannot chmod {}: {err}", path.display())))?;
    Ok(listener)
}

/// Check, before talking to it, that `path` is an operator socket of this user that no one else
/// could have planted or can use: a socket, owned by us, no group/other permissions.
pub fn check(path: &Path) -> Result<(), Hinted> {
    let meta = std::fs::symlink_metadata(path).map_err(|err| {
        Hinted::new(format!(
            "cannot find the running Authority: {}: {err}",
            path.display()
        ))
        .hint(
            "start it (`firma sidecar start`, or `firma authority`), or pass the --state-dir it \
             runs with",
        )
    })?;
    if !meta.file_type().is_socket() {
        return Err(Hinted::new(format!("{} is not a socket", path.display()))
            .hint("move it away and restart the Authority"));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(Hinted::new(format!(
            "refusing {}: it belongs to uid {}, not to you (uid {me})",
            path.display(),
            meta.uid()
        ))
        .hint("another user's Authority is not yours to drive; use your own --state-dir"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Hinted::new(format!(
            "refusing {}: mode {mode:04o} lets other users connect",
            path.display()
        ))
        .hint(format!(
            "restart the Authority (it creates the socket 0600), or `chmod 600 {}`",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn binds_0600_replaces_stale_and_refuses_live_or_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/authority.sock");
        let live = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        check(&path).unwrap();
        assert!(
            bind(&path)
                .unwrap_err()
                .message()
                .contains("another Authority")
        );
        drop(live);
        bind(&path).unwrap();

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(check(&path).unwrap_err().message().contains("0666"));

        let file = dir.path().join("state/not-a-socket");
        std::fs::write(&file, "x").unwrap();
        assert!(bind(&file).unwrap_err().message().contains("not a socket"));
        assert!(check(&file).unwrap_err().message().contains("not a socket"));
        assert!(check(&dir.path().join("missing")).is_err());
    }
}
