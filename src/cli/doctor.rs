//! `firma doctor`: read-only checks, each OK / WARN / FAIL with a reason and a fix.
//!
//! Exit codes: 0 when every check is OK or WARN, 1 when any FAILs, 2 on an internal error.
//! A fresh install with no daemon running never FAILs on the daemon (it WARNs with the command
//! that starts it).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use clap::Args;
use owo_colors::OwoColorize;
use serde::Serialize;

use super::{CommandResult, Outcome, output};
use crate::config::dirs::{resolve_data_dir, resolve_state_dir};
use crate::config::{Discovery, LoadedConfig, keys};
use crate::sidecar::mapping::MappingTable;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// State directory (env: FIRMA_STATE_DIR).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Machine-readable output: one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Verify the whole audit log instead of its tail.
    #[arg(long)]
    pub full: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub reason: String,
    /// What to do about a WARN or FAIL.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &'static str, reason: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Ok,
            reason: reason.into(),
            fix: None,
        }
    }
    fn warn(name: &'static str, reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Warn,
            reason: reason.into(),
            fix: Some(fix.into()),
        }
    }
    fn fail(name: &'static str, reason: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            name,
            status: Status::Fail,
            reason: reason.into(),
            fix: Some(fix.into()),
        }
    }
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    version: u32,
    checks: &'a [Check],
    worst: Status,
}

pub fn run(args: DoctorArgs, config: Option<PathBuf>) -> CommandResult {
    let (state_dir, _) = resolve_state_dir(args.state_dir.as_deref());
    let mut checks = vec![binary_check()];
    let loaded = match Discovery::new(config).load_optional() {
        Ok(Some(loaded)) => {
            checks.push(Check::ok(
                "config",
                format!("{} (selected by {})", loaded.path.display(), loaded.source),
            ));
            Some(loaded)
        }
        Ok(None) => {
            checks.push(Check::warn(
                "config",
                "no firma.toml found (no --config, FIRMA_CONFIG unset, no .firma/ above this directory)",
                "run `firma init` in your project",
            ));
            None
        }
        Err(err) => {
            checks.push(Check::fail(
                "config",
                err.message(),
                err.hint_text().unwrap_or("fix the file"),
            ));
            None
        }
    };
    if let Some(loaded) = &loaded {
        checks.push(mapping_check(loaded));
        checks.extend(key_checks(loaded));
    }
    checks.push(dir_check(
        "state dir",
        &state_dir,
        "`firma init` or `firma sidecar start` creates it",
    ));
    match resolve_data_dir() {
        Ok(dir) => checks.push(dir_check("data dir", &dir, "`firma init` creates it")),
        Err(err) => checks.push(Check::warn(
            "data dir",
            err.message(),
            err.hint_text().unwrap_or(""),
        )),
    }
    checks.push(clock_check());

    let worst = checks.iter().map(|c| c.status).max().unwrap_or(Status::Ok);
    if args.json {
        let report = Report {
            version: 1,
            checks: &checks,
            worst,
        };
        println!(
            "{}",
            serde_json::to_string(&report).expect("report serializes")
        );
    } else {
        print_pretty(&checks);
    }
    Ok(if worst == Status::Fail {
        Outcome::FoundProblems
    } else {
        Outcome::Success
    })
}

fn print_pretty(checks: &[Check]) {
    let color = output::color_choice().for_stdout();
    println!("firma doctor");
    println!("============");
    for check in checks {
        let tag = match check.status {
            Status::Ok => "[OK]  ",
            Status::Warn => "[WARN]",
            Status::Fail => "[FAIL]",
        };
        let tag = match (color, check.status) {
            (false, _) => tag.to_string(),
            (true, Status::Ok) => tag.green().to_string(),
            (true, Status::Warn) => tag.yellow().to_string(),
            (true, Status::Fail) => tag.red().bold().to_string(),
        };
        println!("{tag} {:<14} {}", check.name, check.reason);
        if let Some(fix) = &check.fix {
            println!("       {:<14} fix: {fix}", "");
        }
    }
}

fn binary_check() -> Check {
    let version = env!("CARGO_PKG_VERSION");
    match std::env::current_exe() {
        Ok(path) => Check::ok("binary", format!("{} (v{version})", path.display())),
        Err(err) => Check::fail(
            "binary",
            format!("cannot locate the running binary: {err}"),
            "reinstall firma",
        ),
    }
}

fn mapping_check(loaded: &LoadedConfig) -> Check {
    let path = &loaded.config.sidecar.mapping.rules;
    match MappingTable::load(path) {
        Ok(table) => Check::ok(
            "mapping rules",
            format!("{} rules in {}", table.rules().len(), path.display()),
        ),
        Err(err) => Check::fail(
            "mapping rules",
            err.message(),
            err.hint_text().unwrap_or("fix the file"),
        ),
    }
}

fn key_checks(loaded: &LoadedConfig) -> Vec<Check> {
    let mut keys_to_check = vec![("audit key", loaded.config.sidecar.audit.key.clone())];
    if loaded.config.authority.mode == crate::config::schema::AuthorityMode::Local {
        keys_to_check.push(("authority key", loaded.config.authority.key.clone()));
    }
    keys_to_check
        .into_iter()
        .map(|(name, path)| match keys::load_signing_key(&path) {
            Ok(_) => Check::ok(name, format!("{} (mode 0600)", path.display())),
            Err(err) => Check::fail(name, err.message(), err.hint_text().unwrap_or("")),
        })
        .collect()
}

fn dir_check(name: &'static str, dir: &Path, creator: &str) -> Check {
    match std::fs::metadata(dir) {
        Err(_) => Check::warn(name, format!("{} not present yet", dir.display()), creator),
        Ok(meta) if !meta.is_dir() => Check::fail(
            name,
            format!("{} is not a directory", dir.display()),
            "move it away",
        ),
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode == 0o700 {
                Check::ok(name, format!("{} (mode 0700)", dir.display()))
            } else {
                Check::fail(
                    name,
                    format!("{} has mode {mode:04o}; expected 0700", dir.display()),
                    format!("chmod 700 {}", dir.display()),
                )
            }
        }
    }
}

/// Timestamps in tokens and audit records are only as good as the clock.
fn clock_check() -> Check {
    let now = chrono::Utc::now();
    let floor = chrono::DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
        .expect("constant")
        .to_utc();
    if now < floor {
        Check::fail(
            "clock",
            format!("system time {now} is before 2025"),
            "set the system clock (e.g. enable NTP)",
        )
    } else {
        Check::ok("clock", format!("{}", now.format("%Y-%m-%dT%H:%M:%SZ")))
    }
}
