//! "One state dir per project", said where it matters: a command run from one project must not
//! silently use the stack another project started on the same state dir. Read-only commands
//! warn; commands that act through the stack (`token`, `run`) refuse unless `--state-dir` was
//! given explicitly. The facts come from `lifecycle::occupancy`.

use std::path::{Path, PathBuf};

use super::output;
use crate::config::Discovery;
use crate::error::Hinted;
use crate::lifecycle::occupancy::project_mismatch;
use crate::state_dir::StateDir;

/// The config discovery selects from here (not loaded: a broken file is not this check's
/// business).
fn this_config(flag: Option<PathBuf>) -> Option<PathBuf> {
    let cwd = std::env::current_dir().ok()?;
    Discovery::new(flag).select(&cwd).map(|(path, _)| path)
}

/// `warn:` when the stack on `state` serves a project other than the one discovered here.
pub fn warn_if_other_project(state: &StateDir, config_flag: Option<PathBuf>) {
    if let Some(config) = this_config(config_flag)
        && let Some(mismatch) = project_mismatch(state, &config)
    {
        output::warn(format!("{} ({})", mismatch.message(), mismatch.hint()));
    }
}

/// Refuse to act through the stack on `state` when it serves a project other than `config`,
/// unless the operator named the state dir with `--state-dir` (`explicit`).
pub fn refuse_other_project(state: &StateDir, config: &Path, explicit: bool) -> Result<(), Hinted> {
    match project_mismatch(state, config) {
        Some(mismatch) if !explicit => Err(mismatch.into_error()),
        _ => Ok(()),
    }
}
