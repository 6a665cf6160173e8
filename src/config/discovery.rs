//! Which `firma.toml` a command uses: `--config` → `FIRMA_CONFIG` → the nearest
//! `.firma/firma.toml` walking up from the working directory. A file a tier selects must load;
//! a broken file is an error, never a reason to fall through to the next tier.

use std::fmt;
use std::path::{Path, PathBuf};

use super::load::{LoadedConfig, load};
use crate::error::Hinted;

pub const CONFIG_ENV: &str = "FIRMA_CONFIG";
pub const PROJECT_DIR: &str = ".firma";
pub const CONFIG_FILE: &str = "firma.toml";

/// What selected the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    Flag,
    Env(&'static str),
    WalkUp,
}

impl ConfigSource {
    /// What the operator can do when the selected file is wrong.
    pub fn fix_hint(&self) -> String {
        match self {
            Self::Flag => "check the --config path".into(),
            Self::Env(name) => format!("check {name}, or unset it to use discovery"),
            Self::WalkUp => "run `firma init` to create it, or pass --config".into(),
        }
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag => f.write_str("--config"),
            Self::Env(name) => f.write_str(name),
            Self::WalkUp => f.write_str("walk-up discovery"),
        }
    }
}

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
