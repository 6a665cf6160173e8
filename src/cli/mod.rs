//! The command line: flags, help text, dispatch, and the one place errors become exit codes
//! (named in [`exit_code`]).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::Hinted;

pub mod audit;
pub mod authority;
pub mod completions;
pub mod config;
pub mod demo;
pub mod doctor;
pub mod flags;
pub mod fleet;
pub mod init;
pub mod json;
pub mod logging;
pub mod monitor;
pub mod output;
pub mod progress;
pub mod project;
pub mod prompt;
pub mod run;
pub mod sidecar;
pub mod token;

pub use output::ColorChoice;

const AFTER_HELP: &str = "\
Examples:
  firma init --agent codex --provider anthropic --workspace ./proj --yes
  firma sidecar start --detach
  firma monitor --source audit --decision deny --since 15m --format json
  firma sidecar stop

Config discovery: --config, then FIRMA_CONFIG, then the nearest .firma/firma.toml above the
working directory. State directory: --state-dir, then FIRMA_STATE_DIR, then
$XDG_RUNTIME_DIR/firma, then /tmp/firma-$UID.";

/// firma: an authority layer for AI agents.
///
/// Every outbound call of an agent passes through a local Sidecar that decides, per call, whether
/// it happens (Cedar policies + capability tokens signed by the Authority) and writes a signed,
/// hash-chained audit record of every decision.
#[derive(Debug, Parser)]
#[command(name = "firma", version, about, long_about, after_help = AFTER_HELP)]
#[command(propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub config: flags::ConfigArg,

    /// When to use colour (NO_COLOR is honoured by `auto`).
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold a project: <workspace>/.firma/ (config, keys, mapping rules, policies).
    Init(init::InitArgs),
    /// Inspect the configuration: which firma.toml is used, and whether it loads.
    Config(config::ConfigArgs),

    /// Run the Authority (gRPC trust root) in the foreground.
    Authority(authority::AuthorityArgs),

    /// Run the Sidecar proxy in the foreground; `start | stop | status` manage the daemon pair.
    Sidecar(sidecar::SidecarArgs),

    /// Live tail of audit events and daemon logs from the state directory.
    Monitor(monitor::MonitorArgs),

    /// Verify the signed, hash-chained audit log.
    Audit(audit::AuditArgs),

    /// Issue and revoke capability tokens through the running Authority.
    Token(token::TokenArgs),

    /// The fleet: the Sidecars an Authority replica (with etcd: every replica) has seen.
    Fleet(fleet::FleetArgs),

    /// Run an agent through the Sidecar (scaffolds and starts the daemon when needed).
    Run(run::RunArgs),

    /// The whole system in one command: scaffold, start, allowed/denied/passthrough calls, monitor, verify, stop.
    Demo(demo::DemoArgs),

    /// Diagnose the installation: config, keys, directories, daemon, audit log, clock.
    Doctor(doctor::DoctorArgs),

    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(completions::CompletionsArgs),

    /// Write man pages for firma and every subcommand into a directory.
    Manpages(completions::ManpagesArgs),

    /// Internal: the detached supervisor `firma sidecar start --detach` runs.
    #[command(name = "__supervise", hide = true)]
    Supervise(sidecar::SuperviseArgs),

    /// Internal: the sandbox launcher `firma run` starts, and the probe doctor runs.
    #[command(name = "__sandbox", hide = true)]
    Sandbox(run::SandboxArgs),
}

/// Parse the command line, run the command, and map the outcome to an exit code.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    output::set_color_choice(cli.color);
    let config = cli.config.into_flag();
    let command = match cli.command {
        // `run` exits with the agent's own status, and its launcher with the agent's too.
        Command::Run(args) => return run::run(args, config),
        Command::Sandbox(args) => return run::sandbox(args),
        command => command,
    };
    let result = match command {
        Command::Run(_) | Command::Sandbox(_) => unreachable!("handled above"),
        Command::Init(args) => init::run(args, config),
        Command::Config(args) => config::run(args, config),
        Command::Authority(args) => authority::run(args, config),
        Command::Sidecar(args) => sidecar::run(args, config),
        Command::Monitor(args) => monitor::run(args, config),
        Command::Audit(args) => audit::run(args, config),
        Command::Token(args) => token::run(args, config),
        Command::Fleet(args) => fleet::run(args, config),
        Command::Doctor(args) => doctor::run(args, config),
        Command::Demo(args) => demo::run(args),
        Command::Completions(args) => completions::completions(args),
        Command::Manpages(args) => completions::manpages(args),
        Command::Supervise(args) => sidecar::supervise(args),
    };
    finish(result)
}

/// Exit codes (DESIGN §11). No command spells a bare number.
pub mod exit_code {
    /// Success.
    pub const OK: u8 = 0;
    /// "Looked and found something wrong", where a command documents it (`sidecar status` with a
    /// component not running, `doctor` with a failed check, `audit verify` on a bad log).
    pub const FOUND_PROBLEMS: u8 = 1;
    /// An error, printed as `error: …` plus a `hint:`.
    pub const ERROR: u8 = 2;
    /// `firma run`: the agent's command could not be found or executed (the shells' convention).
    pub const COMMAND_NOT_FOUND: u8 = 127;
}

/// What a command reports: success, or a documented non-error failure (exit 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    FoundProblems,
}

pub type CommandResult = Result<Outcome, Hinted>;

fn finish(result: CommandResult) -> ExitCode {
    match result {
        Ok(Outcome::Success) => ExitCode::from(exit_code::OK),
        Ok(Outcome::FoundProblems) => ExitCode::from(exit_code::FOUND_PROBLEMS),
        Err(err) => {
            output::error(&err);
            ExitCode::from(exit_code::ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
