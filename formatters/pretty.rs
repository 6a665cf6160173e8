//! `pretty`: one aligned line per record for people. Columns: time (UTC, milliseconds),
//! source, then what the source's [`Summary`] says (a label such as a decision or a level, and
//! the details); records a source does not summarise show their fields as `key=value`. Colour only when the
//! run allows it (a terminal, or `--color always`; never with `NO_COLOR` on auto). Everything
//! that came from a file is made terminal-safe first.

use std::fmt::Write as _;

use crate::monitor::text::{terminal_safe, terminal_safe_str, value_text};
use crate::monitor::{
    FormatContext, Formatter, FormatterPlugin, Kind, Record, Source, Summary, Tone,
};
use owo_colors::OwoColorize;

pub struct PrettyFormatter;

const TIME_WIDTH: usize = 24;

fn paint(ctx: &FormatContext, text: &str, style: fn(&str) -> String) -> String {
    if ctx.color {
        style(text)
    } else {
        text.to_string()
    }
}

fn source_style(name: &str) -> fn(&str) -> String {
    // A stable colour per source name.
    let hash = name.bytes().fold(2_166_136_261u32, |h, b| {
        (h ^ b as u32).wrapping_mul(16_777_619)
    });
    match hash % 4 {
        0 => |s| s.cyan().to_string(),
        1 => |s| s.magenta().to_string(),
        2 => |s| s.blue().to_string(),
        _ => |s| s.yellow().to_string(),
    }
}

/// A label coloured by its tone, padded to its column.
fn label(ctx: &FormatContext, summary: &Summary) -> String {
    let text = format!(
        "{:<width$}",
        terminal_safe_str(&summary.label),
        width = summary.label_width
    );
    match summary.tone {
        Tone::Alert => paint(ctx, &text, |s| s.red().bold().to_string()),
        Tone::Caution => paint(ctx, &text, |s| s.yellow().to_string()),
        Tone::Good => paint(ctx, &text, |s| s.green().to_string()),
        Tone::Quiet => paint(ctx, &text, |s| s.dimmed().to_string()),
        Tone::Notice => paint(ctx, &text, |s| s.yellow().bold().to_string()),
    }
}

/// The source's summary: label, two spaces, the details.
fn summary_line(summary: &Summary, ctx: &FormatContext, line: &mut String) {
    line.push_str(&label(ctx, summary));
    line.push_str("  ");
    for span in &summary.details {
        let text = terminal_safe_str(&span.text);
        if span.dim {
            line.push_str(&paint(ctx, &text, |s| s.dimmed().to_string()));
        } else {
            line.push_str(&text);
        }
    }
}

/// A record its source does not summarise: its fields as `key=value`.
fn fields_line(record: &Record, line: &mut String) {
    let mut first = true;
    for (key, value) in record.fields() {
        if !first {
            line.push_str("  ");
        }
        first = false;
        let _ = write!(
            line,
            "{}={}",
            terminal_safe_str(key),
            terminal_safe_str(&value_text(value))
        );
    }
}

impl Formatter for PrettyFormatter {
    fn name(&self) -> &'static str {
        "pretty"
    }

    fn about(&self) -> &'static str {
        "aligned, coloured lines for people (the default)"
    }

    fn write(&self, record: &Record, source: &dyn Source, ctx: &FormatContext, out: &mut Vec<u8>) {
        let mut line = String::with_capacity(160);
        match record.time {
            Some(time) => {
                let _ = write!(line, "{}", time.format("%Y-%m-%dT%H:%M:%S%.3fZ"));
            }
            None => {
                let _ = write!(line, "{:<TIME_WIDTH$}", "-");
            }
        }
        line.push_str("  ");
        let tag = format!("{:<width$}", record.source, width = ctx.source_width);
        line.push_str(&paint(ctx, &tag, source_style(record.source)));
        line.push_str("  ");
        match &record.kind {
            Kind::Event | Kind::Log => match source.summary(record) {
                Some(summary) => summary_line(&summary, ctx, &mut line),
                None => fields_line(record, &mut line),
            },
            Kind::Raw => line.push_str(&terminal_safe(&record.raw)),
            Kind::Malformed { reason } => {
                let marker = paint(ctx, "MALFORMED", |s| s.red().bold().reversed().to_string());
                let _ = write!(
                    line,
                    "{marker}  at byte {}: {}: {}",
                    record.offset,
                    terminal_safe_str(reason),
                    terminal_safe(&record.raw)
                );
            }
        }
        line.push('\n');
        out.extend_from_slice(line.as_bytes());
    }
}

inventory::submit!(FormatterPlugin(&PrettyFormatter));
