//! `firma run <agent> [-- command args…]`: run an agent through the Sidecar.
//!
//! Exit status: the command's own (128 + signal number when a signal ended it); 127 when the
//! command cannot be found or started; 2 when firma itself fails before the command runs (or
//! `--sandbox required` cannot be met). Every line firma prints goes to stderr: stdout belongs
//! to the command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;

use super::flags::StateDirArg;
use super::{exit_code, output};
use crate::error::Hinted;
use crate::run::sandbox::{self, SandboxMode};
use crate::run::{self, Failure, Notices, RunOptions};

const RUN_EXAMPLES: &str = "\
Examples:
  firma run codex                       # runs `codex` through the Sidecar, sandboxed
  firma run generic -- python3 agent.py
  firma run claude --sandbox required -- claude --model sonnet";

#[derive(Debug, Args)]
#[command(after_help = RUN_EXAMPLES)]
pub struct RunArgs {
    /// Agent id to obtain a capability for (must match the issuance policies).
    pub agent: String,
    /// Command to run [default: the agent's usual executable, e.g. `codex`, `claude`].
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
    #[command(flatten)]
    pub state_dir: StateDirArg,
    /// Confine the agent (Linux): `auto` uses what the kernel offers and warns about the rest,
    /// `required` refuses to start without all of it [default: `[run] sandbox`, else auto].
    #[arg(long, value_enum, value_name = "MODE")]
    pub sandbox: Option<SandboxMode>,
    /// Print only warnings and errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// Operator lines of `firma run`, all on stderr.
struct StderrNotices {
    quiet: bool,
}

impl Notices for StderrNotices {
    fn info(&self, message: &str) {
        if !self.quiet {
            output::info_to_stderr(message);
        }
    }
    fn warn(&self, message: &str) {
        output::warn(message);
    }
}

pub fn run(args: RunArgs, config: Option<PathBuf>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            output::error(&Hinted::new(format!(
                "cannot start the async runtime: {err}"
            )));
            return ExitCode::from(exit_code::ERROR);
        }
    };
    let notices = Arc::new(StderrNotices { quiet: args.quiet });
    let options = RunOptions {
        agent: args.agent,
        command: args.command,
        state_dir: args.state_dir.into_flag(),
        config,
        sandbox: args.sandbox,
    };
    match runtime.block_on(run::execute(options, notices)) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            output::error(&err.error);
            ExitCode::from(code_of(err.failure))
        }
    }
}

fn code_of(failure: Failure) -> u8 {
    match failure {
        Failure::Error => exit_code::ERROR,
        Failure::CommandNotFound => exit_code::COMMAND_NOT_FOUND,
    }
}

/// `firma __sandbox`: the launcher `firma run` starts (see `run::sandbox`), or the probe doctor
/// runs.
#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// The control socket of the `firma run` that started this launcher.
    #[arg(long, value_name = "SOCKET", required_unless_present = "probe")]
    pub control: Option<PathBuf>,
    /// Print what this machine offers (JSON) and exit.
    #[arg(long)]
    pub probe: bool,
}

pub fn sandbox(args: SandboxArgs) -> ExitCode {
    #[cfg(target_os = "linux")]
    {
        if args.probe {
            let facilities = sandbox::launcher_probe();
            println!("{}", serde_json::to_string(&facilities).unwrap_or_default());
            return ExitCode::SUCCESS;
        }
        let control = args.control.unwrap_or_default();
        match sandbox::launch(&control) {
            Ok(never) => match never {},
            Err((failure, err)) => {
                output::error(&err);
                ExitCode::from(code_of(failure))
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = args;
        output::error(&Hinted::new(
            "the sandbox is built on Linux facilities only",
        ));
        ExitCode::from(exit_code::ERROR)
    }
}
