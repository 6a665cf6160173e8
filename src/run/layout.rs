//! What `firma run`'s sandbox hides and lets the agent write for this project: firma's own
//! files (the project's `.firma/` and every secret or policy path its configuration names, the
//! state and data dirs, the runtime dir with the Authority socket) are always hidden; `[run]`
//! adds home secrets and writable paths; the agent registry adds the agent's own state dirs.

use std::path::{Path, PathBuf};

use super::sandbox::PlanInputs;
use crate::config::LoadedConfig;
use crate::config::providers::{SANDBOX_WRITABLE, find_agent};
use crate::state_dir::{DataDir, StateDir};

/// The name of the project directory `firma init` creates.
const PROJECT_DIR_NAME: &str = ".firma";

/// Everything [`plan_inputs`] needs to know about this run.
pub struct RunPaths<'a> {
    pub loaded: &'a LoadedConfig,
    pub state: &'a StateDir,
    pub data: Option<&'a DataDir>,
    pub agent: &'a str,
    pub cwd: PathBuf,
    pub home: Option<PathBuf>,
    pub runtime_dir: Option<PathBuf>,
    /// The CA bundle and certificate the agent must be able to read.
    pub ca_files: [PathBuf; 2],
}

/// The project root: the directory holding `.firma/`, else the working directory.
pub fn workspace(loaded: &LoadedConfig, cwd: &Path) -> PathBuf {
    let dir = loaded.dir();
    match (dir.file_name(), dir.parent()) {
        (Some(name), Some(root)) if name == PROJECT_DIR_NAME => root.to_path_buf(),
        _ => cwd.to_path_buf(),
    }
}

/// The writable paths of the agent registry and the package caches, as `[run] writable` entries.
fn agent_writable(agent: &str) -> impl Iterator<Item = &'static str> {
    find_agent(agent)
        .map(|a| a.writable)
        .unwrap_or_default()
        .iter()
        .chain(SANDBOX_WRITABLE)
        .copied()
}

pub fn plan_inputs(paths: &RunPaths<'_>) -> PlanInputs {
    let config = &paths.loaded.config;
    let project = if paths
        .loaded
        .dir()
        .file_name()
        .is_some_and(|n| n == PROJECT_DIR_NAME)
    {
        paths.loaded.dir().to_path_buf()
    } else {
        paths.loaded.path.clone()
    };
    let mut firma_private = vec![
        project,
        config.authority.key.clone(),
        config.authority.policies.clone(),
        config.authority.issuance_policies.clone(),
        config.sidecar.audit.key.clone(),
        config.sidecar.mapping.rules.clone(),
        paths.state.path().to_path_buf(),
    ];
    firma_private.extend(config.authority.tls_key.clone());
    firma_private.extend(paths.data.map(|d| d.path().to_path_buf()));
    firma_private.extend(paths.runtime_dir.clone());

    let mut writable = config.run.writable.clone();
    writable.extend(agent_writable(paths.agent).map(String::from));
    PlanInputs {
        home: paths.home.clone(),
        workspace: workspace(paths.loaded, &paths.cwd),
        cwd: paths.cwd.clone(),
        hide: config.run.hide.clone(),
        writable,
        firma_private,
        reveal: paths.ca_files.to_vec(),
    }
}

/// Create the agent's own directories under the home directory when missing (0700), so a
/// first run can write there: the sandbox can only grant what exists.
pub fn ensure_agent_dirs(agent: &str, home: &Path) {
    use std::os::unix::fs::DirBuilderExt;
    for entry in agent_writable(agent) {
        let Some(rest) = entry.strip_prefix("~/") else {
            continue;
        };
        let dir = home.join(rest);
        if dir.exists() {
            continue;
        }
        let _ = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir);
    }
}
