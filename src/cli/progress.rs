//! Progress bars for long CLI work: on stderr, for people only — drawn when stderr is a terminal,
//! never for machine output (`--json`), never for work too small to need one. The work itself
//! reports through a library hook (`audit::progress`); this file only draws.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::audit::progress::{Progress, ProgressHook};

/// Logs smaller than this verify in well under a second: no bar.
pub const VERIFY_BAR_MIN_BYTES: u64 = 4 * 1024 * 1024;

/// `firma audit verify`'s bar: bytes for the bar and the ETA, records and records/s beside it.
pub struct VerifyBar {
    bar: ProgressBar,
}

impl VerifyBar {
    /// A bar for verifying `files`, or `None` when none should be drawn (`machine_output`, stderr
    /// not a terminal, or less than [`VERIFY_BAR_MIN_BYTES`] to read).
    pub fn for_files(files: &[PathBuf], machine_output: bool) -> Option<Self> {
        if machine_output || !std::io::stderr().is_terminal() {
            return None;
        }
        let total: u64 = files
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        if total < VERIFY_BAR_MIN_BYTES {
            return None;
        }
        let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "verifying [{bar:30}] {bytes}/{total_bytes}  {msg}  ETA {eta}",
            )
            .expect("the template is valid")
            .progress_chars("=> "),
        );
        bar.set_message(rate_text(Progress::default(), Duration::ZERO));
        // Drawn at once, so even a fast run shows what it is doing.
        bar.tick();
        Some(Self { bar })
    }

    /// The hook the verifier reports to.
    pub fn hook(&self) -> ProgressHook {
        let bar = self.bar.clone();
        let started = Instant::now();
        ProgressHook::new(move |progress| {
            bar.set_position(progress.bytes);
            bar.set_message(rate_text(progress, started.elapsed()));
        })
    }

    /// Remove the bar; the report follows on a clean line.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

/// `12345 records, 41000 records/s`.
fn rate_text(progress: Progress, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 {
        (progress.lines as f64 / secs).round() as u64
    } else {
        0
    };
    format!("{} records, {rate} records/s", progress.lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_is_records_per_second() {
        let progress = Progress {
            lines: 5000,
            bytes: 1,
        };
        assert_eq!(
            rate_text(progress, Duration::from_millis(500)),
            "5000 records, 10000 records/s"
        );
        assert_eq!(
            rate_text(progress, Duration::ZERO),
            "5000 records, 0 records/s"
        );
    }
}
