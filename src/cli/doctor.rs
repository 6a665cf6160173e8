//! `firma doctor`: flags and rendering of the read-only checks in `crate::doctor`.
//!
//! Exit codes: 0 when every check is OK or WARN, 1 when any FAILs, 2 on an internal error.

use std::path::PathBuf;

use clap::Args;
use owo_colors::OwoColorize;

use super::flags::{JsonFlag, StateDirArg};
use super::json::{self, Document};
use super::{CommandResult, Outcome, output};
use crate::config::dirs::resolve_state_dir;
use crate::doctor::{Check, Inputs, Status, diagnose};
use crate::error::Hinted;
use crate::lifecycle::status::status;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    #[command(flatten)]
    pub state_dir: StateDirArg,
    #[command(flatten)]
    pub json: JsonFlag,
    /// Verify the whole audit log instead of its tail.
    #[arg(long)]
    pub full: bool,
}

pub fn run(args: DoctorArgs, config: Option<PathBuf>) -> CommandResult {
    let (state, _) = resolve_state_dir(args.state_dir.as_deref());
    let daemon = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Hinted::new(format!("cannot start the async runtime: {err}")))?
        .block_on(status(&state));
    let report = diagnose(&Inputs {
        state,
        config,
        full_audit: args.full,
        daemon,
    });
    if args.json.enabled() {
        json::print(Document::Doctor, &report)?;
    } else {
        print_pretty(&report.checks);
    }
    Ok(if report.worst == Status::Fail {
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
