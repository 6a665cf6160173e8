//! `firma completions <shell>` and `firma manpages <dir>`: generated from the clap definitions,
//! so they always match the commands this build has.

use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};
use clap_complete::Shell;

use super::{Cli, CommandResult, Outcome, output};
use crate::error::Hinted;

#[derive(Debug, Args)]
#[command(
    after_help = "Examples:\n  firma completions bash > ~/.local/share/bash-completion/completions/firma\n  firma completions zsh > \"${fpath[1]}/_firma\"\n  firma completions fish > ~/.config/fish/completions/firma.fish"
)]
pub struct CompletionsArgs {
    /// Shell to generate the completion script for.
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Args)]
#[command(after_help = "Example:\n  firma manpages ~/.local/share/man/man1 && man firma")]
pub struct ManpagesArgs {
    /// Directory to write `firma.1` and one page per subcommand (`firma-sidecar-start.1`, …) into.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

pub fn completions(args: CompletionsArgs) -> CommandResult {
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "firma", &mut std::io::stdout());
    Ok(Outcome::Success)
}

pub fn manpages(args: ManpagesArgs) -> CommandResult {
    crate::config::dirs::ensure_private_dir(&args.dir)?;
    let mut written = 0;
    write_pages(&Cli::command(), "firma", &args.dir, &mut written)?;
    output::ok(format!(
        "wrote {written} man pages to {}",
        args.dir.display()
    ));
    Ok(Outcome::Success)
}

/// One page per visible command, named like git's: `firma-sidecar-start.1`.
fn write_pages(
    command: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut usize,
) -> Result<(), Hinted> {
    let command = command.clone().name(name.to_string());
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut page)
        .map_err(|err| Hinted::new(format!("cannot render the man page of {name}: {err}")))?;
    let path = dir.join(format!("{name}.1"));
    crate::fsutil::write_atomic(&path, &page, 0o644, crate::fsutil::Durability::Durable)?;
    *written += 1;
    for sub in command
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_pages(sub, &format!("{name}-{}", sub.get_name()), dir, written)?;
    }
    Ok(())
}
