//! The flags several commands share, each defined once and flattened where it is used, so its
//! name, help text and environment variable cannot drift apart between commands.
//!
//! `--state-dir` and `--config` carry their environment variables through clap (`--help` shows
//! `[env: …]`), but only a value typed on the command line is kept: the env var is read again by
//! the one resolver that owns the rule (`config::dirs`, `config::Discovery`), so the source
//! (flag or env) stays visible to the commands that care (next steps, the other-project guard).

use std::path::{Path, PathBuf};

use clap::builder::{OsStringValueParser, TypedValueParser};
use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};

use crate::config::dirs::{STATE_DIR_ENV, StateDirSource, resolve_state_dir};
use crate::config::discovery::CONFIG_ENV;
use crate::state_dir::StateDir;

/// A path flag backed by an environment variable; see the module comment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct EnvPathFlag {
    /// The value given on the command line (never the environment's).
    typed: Option<PathBuf>,
}

/// What tells one such flag apart from another.
struct EnvPathSpec {
    id: &'static str,
    long: &'static str,
    env: &'static str,
    value_name: &'static str,
    help: &'static str,
    global: bool,
}

impl EnvPathSpec {
    fn arg(&self) -> Arg {
        Arg::new(self.id)
            .long(self.long)
            .value_name(self.value_name)
            .env(self.env)
            // The help text stays the same whatever the caller's environment holds.
            .hide_env_values(true)
            // Empty values pass the parser: an empty env var counts as unset (the resolvers'
            // rule), an empty flag is refused below. `PathBuf`, like every other path flag, so a
            // global value propagated into a command's own flag of the same name reads alike.
            .value_parser(OsStringValueParser::new().map(PathBuf::from))
            .help(self.help)
            .global(self.global)
    }

    fn read(&self, matches: &ArgMatches) -> Result<EnvPathFlag, clap::Error> {
        let Ok(Some(value)) = matches.try_get_one::<PathBuf>(self.id) else {
            return Ok(EnvPathFlag::default());
        };
        if matches.value_source(self.id) != Some(ValueSource::CommandLine) {
            return Ok(EnvPathFlag::default());
        }
        if value.as_os_str().is_empty() {
            return Err(clap::Error::raw(
                clap::error::ErrorKind::InvalidValue,
                format!(
                    "--{} needs a path; to use the default, leave the flag out",
                    self.long
                ),
            ));
        }
        Ok(EnvPathFlag {
            typed: Some(value.clone()),
        })
    }
}

const STATE_DIR: EnvPathSpec = EnvPathSpec {
    id: "state_dir",
    long: "state-dir",
    env: STATE_DIR_ENV,
    value_name: "DIR",
    help: "State directory: pids, listen addresses, daemon logs, audit log, generated CA \
           [default: $XDG_RUNTIME_DIR/firma, else /tmp/firma-$UID]",
    global: false,
};

const CONFIG: EnvPathSpec = EnvPathSpec {
    id: "config",
    long: "config",
    env: CONFIG_ENV,
    value_name: "FILE",
    help: "Configuration file [default: the nearest .firma/firma.toml above the working directory]",
    global: true,
};

/// `--state-dir DIR` (env `FIRMA_STATE_DIR`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateDirArg(EnvPathFlag);

impl StateDirArg {
    /// The directory typed with `--state-dir`, if any (children and libraries re-resolve the rest).
    pub fn as_deref(&self) -> Option<&Path> {
        self.0.typed.as_deref()
    }

    pub fn into_flag(self) -> Option<PathBuf> {
        self.0.typed
    }

    /// The state dir by the guide's rule: flag → env → platform default.
    pub fn resolve(&self) -> (StateDir, StateDirSource) {
        resolve_state_dir(self.as_deref())
    }
}

impl FromArgMatches for StateDirArg {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        STATE_DIR.read(matches).map(Self)
    }
    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for StateDirArg {
    fn augment_args(cmd: Command) -> Command {
        cmd.arg(STATE_DIR.arg())
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// The global `--config FILE` (env `FIRMA_CONFIG`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigArg(EnvPathFlag);

impl ConfigArg {
    /// The file typed with `--config`, if any (`config::Discovery` consults the env vars).
    pub fn into_flag(self) -> Option<PathBuf> {
        self.0.typed
    }
}

impl FromArgMatches for ConfigArg {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        CONFIG.read(matches).map(Self)
    }
    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl Args for ConfigArg {
    fn augment_args(cmd: Command) -> Command {
        cmd.arg(CONFIG.arg())
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

/// `--json`: one JSON document on stdout, versioned by its `"schema"` key (`super::json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Args)]
pub struct JsonFlag {
    /// Machine-readable output on stdout: one JSON object with a "schema" version
    /// (docs/schemas/).
    #[arg(long = "json")]
    json: bool,
}

impl JsonFlag {
    pub fn enabled(self) -> bool {
        self.json
    }
}

/// `--timeout SECS` of the commands that stop the daemon pair.
#[derive(Debug, Clone, Copy, PartialEq, Args)]
pub struct StopTimeoutArg {
    /// Seconds to wait after the soft signal before hard-killing survivors.
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 2.0, value_parser = parse_seconds)]
    seconds: f64,
}

impl StopTimeoutArg {
    pub fn seconds(self) -> f64 {
        self.seconds
    }
    pub fn duration(self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.seconds)
    }
}

/// A finite, non-negative number of seconds (`2`, `0.5`).
fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if (0.0..1e9).contains(&secs) => Ok(secs),
        _ => Err(format!(
            "{text:?} is not a number of seconds (pass e.g. 2 or 0.5)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Probe {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        state_dir: StateDirArg,
        #[command(flatten)]
        timeout: StopTimeoutArg,
    }

    #[test]
    fn only_typed_values_are_kept() {
        let probe =
            Probe::try_parse_from(["p", "--state-dir", "/x", "--config", "f.toml"]).unwrap();
        assert_eq!(probe.state_dir.as_deref(), Some(Path::new("/x")));
        assert_eq!(probe.config.into_flag(), Some(PathBuf::from("f.toml")));
        let probe = Probe::try_parse_from(["p"]).unwrap();
        assert_eq!(probe.state_dir.as_deref(), None);
    }

    #[test]
    fn an_empty_flag_is_refused() {
        let err = Probe::try_parse_from(["p", "--state-dir", ""]).unwrap_err();
        assert!(
            err.to_string().contains("--state-dir needs a path"),
            "{err}"
        );
    }

    #[test]
    fn timeouts_are_finite_and_not_negative() {
        for bad in ["-1", "inf", "NaN", "soon"] {
            assert!(
                Probe::try_parse_from(["p", "--timeout", bad]).is_err(),
                "{bad}"
            );
        }
        let probe = Probe::try_parse_from(["p", "--timeout", "0.5"]).unwrap();
        assert_eq!(probe.timeout.duration().as_millis(), 500);
    }
}
