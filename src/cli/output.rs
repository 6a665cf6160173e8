//! Operator messages: one line each, with a short prefix (`ok`, `info`, `warn`, `error`).
//! `ok`/`info` go to stdout, `warn`/`error` to stderr; colour only on a terminal.

use std::io::IsTerminal;
use std::sync::OnceLock;

use clap::ValueEnum;
use owo_colors::OwoColorize;

use crate::error::Hinted;

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum ColorChoice {
    /// Colour when writing to a terminal and `NO_COLOR` is unset.
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to colour a stream that is (or is not) a terminal.
    pub fn enabled(self, is_terminal: bool) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => {
                is_terminal
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::env::var_os("TERM").is_none_or(|t| t != "dumb")
            }
        }
    }

    pub fn for_stdout(self) -> bool {
        self.enabled(std::io::stdout().is_terminal())
    }

    pub fn for_stderr(self) -> bool {
        self.enabled(std::io::stderr().is_terminal())
    }
}

static CHOICE: OnceLock<ColorChoice> = OnceLock::new();

/// Record the global `--color` choice once, at start-up.
pub fn set_color_choice(choice: ColorChoice) {
    let _ = CHOICE.set(choice);
}

pub fn color_choice() -> ColorChoice {
    CHOICE.get().copied().unwrap_or_default()
}

pub fn ok(message: impl AsRef<str>) {
    let prefix = if color_choice().for_stdout() {
        "ok".green().bold().to_string()
    } else {
        "ok".into()
    };
    println!("{prefix}: {}", message.as_ref());
}

fn info_prefix(color: bool) -> String {
    if color {
        "info".cyan().bold().to_string()
    } else {
        "info".into()
    }
}

pub fn info(message: impl AsRef<str>) {
    let prefix = info_prefix(color_choice().for_stdout());
    println!("{prefix}: {}", message.as_ref());
}

/// `info:` on stderr, for commands whose stdout belongs to someone else (`firma run`).
pub fn info_to_stderr(message: impl AsRef<str>) {
    let prefix = info_prefix(color_choice().for_stderr());
    eprintln!("{prefix}: {}", message.as_ref());
}

pub fn warn(message: impl AsRef<str>) {
    let prefix = if color_choice().for_stderr() {
        "warn".yellow().bold().to_string()
    } else {
        "warn".into()
    };
    eprintln!("{prefix}: {}", message.as_ref());
}

/// `next:` and one line per suggested command, each with what it does.
pub fn next_steps(steps: &[(String, &str)]) {
    println!("next:");
    for (command, what) in steps {
        // Padding keeps the usual short commands aligned; a long path just runs on.
        println!("  {command:<24}  # {what}");
    }
}

/// `error: <message>` and, when there is one, `  hint: <hint>` on stderr.
pub fn error(err: &Hinted) {
    let color = color_choice().for_stderr();
    let prefix = if color {
        "error".red().bold().to_string()
    } else {
        "error".into()
    };
    eprintln!("{prefix}: {}", err.message());
    if let Some(hint) = err.hint_text() {
        let label = if color {
            "hint".dimmed().to_string()
        } else {
            "hint".into()
        };
        eprintln!("  {label}: {hint}");
    }
}
