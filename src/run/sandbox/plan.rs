//! What the sandbox hides, reveals and lets the agent write — a pure function of the
//! configuration and the paths involved, so every rule is unit-tested without namespaces.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Hinted;

/// The private `/tmp` the agent gets.
pub const TMP: &str = "/tmp";

/// Writable for every sandboxed agent besides the workspace and the configured paths: the
/// private `/tmp`, shared memory, and the devices programs write to.
const SYSTEM_WRITABLE: &[&str] = &[
    TMP,
    "/dev/shm",
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/tty",
    "/dev/ptmx",
    "/dev/pts",
];

/// Sockets through which a process could ask something outside the sandbox to act for it
/// (container engines run anything as root). Always hidden.
const ESCAPE_HATCHES: &[&str] = &[
    "/run/docker.sock",
    "/var/run/docker.sock",
    "/run/podman/podman.sock",
    "/run/containerd/containerd.sock",
];

/// The sandbox's file-system layout, as the launcher applies it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Paths under the old `/tmp` that stay visible in the private one, parents first.
    pub keep: Vec<Kept>,
    /// Covered by an empty read-only mount (directories) or an empty read-only file.
    pub hide: Vec<PathBuf>,
    /// Files inside hidden directories bound back read-only (the CA the agent must trust).
    pub reveal: Vec<PathBuf>,
    /// Writable under Landlock; the rest of the file system is read-only.
    pub writable: Vec<PathBuf>,
}

/// A path bound back into the private `/tmp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub path: PathBuf,
    pub writable: bool,
}

/// Everything [`plan`] decides from.
#[derive(Debug, Clone, Default)]
pub struct PlanInputs {
    pub home: Option<PathBuf>,
    /// The project root (the directory holding `.firma/`), or the working directory.
    pub workspace: PathBuf,
    pub cwd: PathBuf,
    /// `[run] hide`.
    pub hide: Vec<String>,
    /// `[run] writable`, the agent registry's paths and the package caches.
    pub writable: Vec<String>,
    /// firma's own files and directories: hidden whatever the configuration says.
    pub firma_private: Vec<PathBuf>,
    /// Files inside `firma_private` the agent needs (CA certificate and bundle).
    pub reveal: Vec<PathBuf>,
}

/// Decide the layout. Fails when the workspace or working directory would itself be hidden.
pub fn plan(inputs: &PlanInputs) -> Result<Layout, Hinted> {
    let expand = |entry: &String| expand(entry, inputs.home.as_deref(), &inputs.workspace);
    let mut hide: Vec<PathBuf> = inputs.firma_private.iter().map(|p| normalize(p)).collect();
    hide.extend(inputs.hide.iter().filter_map(expand));
    hide.extend(ESCAPE_HATCHES.iter().map(PathBuf::from));
    dedup(&mut hide);
    // A path inside a hidden directory is hidden with it (no mount point to leak its name).
    let covered: Vec<PathBuf> = hide
        .iter()
        .filter(|p| hide.iter().any(|other| other != *p && p.starts_with(other)))
        .cloned()
        .collect();
    hide.retain(|p| !covered.contains(p));
    for hidden in &hide {
        for (what, dir) in [
            ("workspace", &inputs.workspace),
            ("working directory", &inputs.cwd),
        ] {
            if normalize(dir).starts_with(hidden) {
                return Err(Hinted::new(format!(
                    "the {what} {} is inside {}, which the sandbox hides",
                    dir.display(),
                    hidden.display()
                ))
                .hint(
                    "run the agent from its own workspace, or remove the entry from [run] hide",
                ));
            }
        }
    }

    let mut writable = vec![normalize(&inputs.workspace), normalize(&inputs.cwd)];
    writable.extend(inputs.writable.iter().filter_map(expand));
    let own_writable = writable.clone();
    writable.extend(SYSTEM_WRITABLE.iter().map(PathBuf::from));
    dedup(&mut writable);

    let tmp = Path::new(TMP);
    let mut keep: Vec<Kept> = own_writable
        .iter()
        .map(|path| Kept {
            path: path.clone(),
            writable: true,
        })
        .chain(inputs.home.iter().map(|home| Kept {
            path: normalize(home),
            writable: false,
        }))
        .filter(|k| k.path.starts_with(tmp) && k.path != tmp)
        .collect();
    // Parents first, so a writable path inside a read-only home is bound over it.
    keep.sort_by_key(|k| (k.path.components().count(), !k.writable));
    keep.dedup_by(|a, b| a.path == b.path);

    Ok(Layout {
        keep,
        hide,
        reveal: inputs.reveal.iter().map(|p| normalize(p)).collect(),
        writable,
    })
}

/// `~` and `~/x` are the home directory; absolute paths stay; relative ones are relative to the
/// workspace. `None` for `~` without a home directory.
fn expand(entry: &str, home: Option<&Path>, workspace: &Path) -> Option<PathBuf> {
    let path = if entry == "~" {
        home?.to_path_buf()
    } else if let Some(rest) = entry.strip_prefix("~/") {
        home?.join(rest)
    } else {
        workspace.join(entry)
    };
    Some(normalize(&path))
}

/// `.` and `..` resolved lexically (no file-system access).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn dedup(paths: &mut Vec<PathBuf>) {
    let mut seen = std::collections::HashSet::new();
    paths.retain(|p| seen.insert(p.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> PlanInputs {
        PlanInputs {
            home: Some("/home/ana".into()),
            workspace: "/home/ana/proj".into(),
            cwd: "/home/ana/proj/src".into(),
            hide: vec!["~/.ssh".into(), ".env".into(), "/etc/../srv/secret".into()],
            writable: vec!["~/.codex".into(), "build-cache".into()],
            firma_private: vec!["/home/ana/proj/.firma".into(), "/run/user/1000".into()],
            reveal: vec!["/run/user/1000/firma/generated-firma-ca/ca-bundle.pem".into()],
        }
    }

    #[test]
    fn hides_firma_and_secrets_and_writes_only_the_workspace_and_listed_paths() {
        let layout = plan(&inputs()).unwrap();
        for hidden in [
            "/home/ana/proj/.firma",
            "/run/user/1000",
            "/home/ana/.ssh",
            "/home/ana/proj/.env",
            "/srv/secret",
            "/run/docker.sock",
        ] {
            assert!(layout.hide.contains(&PathBuf::from(hidden)), "{hidden}");
        }
        for writable in [
            "/home/ana/proj",
            "/home/ana/proj/src",
            "/home/ana/.codex",
            "/home/ana/proj/build-cache",
            "/tmp",
            "/dev/null",
        ] {
            assert!(
                layout.writable.contains(&PathBuf::from(writable)),
                "{writable}"
            );
        }
        assert!(!layout.writable.contains(&PathBuf::from("/home/ana")));
        let mut nested = inputs();
        nested
            .firma_private
            .push("/home/ana/proj/.firma/authority.key".into());
        assert_eq!(
            plan(&nested).unwrap().hide,
            layout.hide,
            "covered by .firma"
        );
        assert!(layout.keep.is_empty(), "nothing lives under /tmp");
    }

    #[test]
    fn paths_under_tmp_are_kept_parents_first_and_home_read_only() {
        let mut i = inputs();
        i.home = Some("/tmp/w/home".into());
        i.workspace = "/tmp/w/ws".into();
        i.cwd = "/tmp/w/ws".into();
        i.writable = vec!["~/.cache".into()];
        let keep = plan(&i).unwrap().keep;
        let got: Vec<(&str, bool)> = keep
            .iter()
            .map(|k| (k.path.to_str().unwrap(), k.writable))
            .collect();
        assert_eq!(
            got,
            [
                ("/tmp/w/ws", true),
                ("/tmp/w/home", false),
                ("/tmp/w/home/.cache", true)
            ]
        );
    }

    #[test]
    fn a_workspace_inside_a_hidden_path_is_refused() {
        let mut i = inputs();
        i.hide = vec!["~".into()];
        let err = plan(&i).unwrap_err();
        assert!(err.message().contains("which the sandbox hides"), "{err}");
    }
}
