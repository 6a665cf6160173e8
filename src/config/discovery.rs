//! Which `firma.toml` a command uses: `--config` → `FIRMA_CONFIG` → the nearest
//! `.firma/firma.toml` walking up from the working directory. A file a tier selects must load;
//! a broken file is an error, never a reason to fall through to the next tier.

use std::path::{Path, PathBuf};

pub use super::load::{CONFIG_FILE, ConfigSource, PROJECT_DIR};
use super::load::{LoadedConfig, load};
use crate::error::Hinted;

pub const CONFIG_ENV: &str = "FIRMA_CONFIG";

/// Where a command looks for its configuration.
#[derive(Debug, Clone, Default)]
pub struct Discovery {
    /// The `--config` flag, if given.
    pub flag: Option<PathBuf>,
    /// Env vars consulted in order after the flag (e.g. `FIRMA_SIDECAR_CONFIG_FILE`, then
    /// `FIRMA_CONFIG`). Empty values count as unset.
    pub env_vars: Vec<&'static str>,
}

impl Discovery {
    pub fn new(flag: Option<PathBuf>) -> Self {
        Self {
            flag,
            env_vars: vec![CONFIG_ENV],
        }
    }

    /// Consult `name` before `FIRMA_CONFIG`.
    #[must_use]
    pub fn with_env_first(mut self, name: &'static str) -> Self {
        self.env_vars.insert(0, name);
        self
    }

    /// The file a tier selects, without reading it.
    pub fn select(&self, cwd: &Path) -> Option<(PathBuf, ConfigSource)> {
        if let Some(flag) = &self.flag {
            return Some((cwd.join(flag), ConfigSource::Flag));
        }
        for name in &self.env_vars {
            if let Some(value) = std::env::var_os(name).filter(|v| !v.is_empty()) {
                return Some((cwd.join(value), ConfigSource::Env(name)));
            }
        }
        find_upwards(cwd).map(|path| (path, ConfigSource::WalkUp))
    }

    /// Select and load the file; `Ok(None)` when no tier selects one.
    pub fn load_optional(&self) -> Result<Option<LoadedConfig>, Hinted> {
        let cwd = std::env::current_dir()
            .map_err(|err| Hinted::new(format!("cannot read the working directory: {err}")))?;
        match self.select(&cwd) {
            Some((path, source)) => load(&path, source).map(Some),
            None => Ok(None),
        }
    }

    /// Select and load the file; an error naming every tier when none selects one.
    pub fn load(&self) -> Result<LoadedConfig, Hinted> {
        self.load_optional()?.ok_or_else(|| {
            Hinted::new(format!(
                "no firma.toml found: no --config, {} unset, and no {PROJECT_DIR}/{CONFIG_FILE} in this directory or its parents",
                self.env_vars.join(" / ")
            ))
            .hint("run `firma init` to scaffold a project, or pass --config <FILE>")
        })
    }
}

/// The nearest `.firma/firma.toml` in `start` or an ancestor.
pub fn find_upwards(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .map(|dir| dir.join(PROJECT_DIR).join(CONFIG_FILE))
        .find(|p| p.is_file())
}
