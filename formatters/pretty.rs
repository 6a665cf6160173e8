//! `pretty`: one aligned line per record for people. Columns: time (UTC, milliseconds),
//! source, then the decision (audit) or level (logs) and the details. Colour only when the
//! run allows it (a terminal, or `--color always`; never with `NO_COLOR` on auto). Everything
//! that came from a file is made terminal-safe first.

use std::fmt::Write as _;

use owo_colors::OwoColorize;
use serde_json::Value;

use crate::monitor::text::{terminal_safe, terminal_safe_str};
use crate::monitor::{FormatContext, Formatter, FormatterPlugin, Kind, Record};

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

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) if !s.is_empty() && !s.contains([' ', '"', '=']) => terminal_safe_str(s),
        other => terminal_safe_str(&other.to_string()),
    }
}

fn audit_line(record: &Record, ctx: &FormatContext, line: &mut String) {
    let decision = record.str_field("decision");
    let label = format!("{:<11}", decision.to_uppercase());
    let label = match decision {
        "deny" => paint(ctx, &label, |s| s.red().bold().to_string()),
        "allow" => paint(ctx, &label, |s| s.green().to_string()),
        _ => paint(ctx, &label, |s| s.dimmed().to_string()),
    };
    let _ = write!(
        line,
        "{label}  {}  {} {}{}  agent={}",
        terminal_safe_str(or_dash(record.str_field("intent.action_class"))),
        terminal_safe_str(record.str_field("intent.method")),
        terminal_safe_str(record.str_field("intent.host")),
        terminal_safe_str(record.str_field("intent.path")),
        terminal_safe_str(or_dash(record.str_field("agent_id"))),
    );
    let reason = record.str_field("reason");
    if !reason.is_empty() {
        let _ = write!(line, "  reason={}", terminal_safe_str(reason));
    }
}

/// Empty fields (no class for unmapped traffic, no agent without a token) show as `-` so the
/// columns stay readable.
fn or_dash(value: &str) -> &str {
    if value.is_empty() { "-" } else { value }
}

fn log_line(record: &Record, ctx: &FormatContext, line: &mut String) {
    let level = record.str_field("level").to_uppercase();
    let label = format!("{level:<5}");
    let label = match level.as_str() {
        "ERROR" => paint(ctx, &label, |s| s.red().bold().to_string()),
        "WARN" => paint(ctx, &label, |s| s.yellow().to_string()),
        "INFO" => paint(ctx, &label, |s| s.green().to_string()),
        _ => paint(ctx, &label, |s| s.dimmed().to_string()),
    };
    line.push_str(&label);
    line.push_str("  ");
    let target = record.str_field("target");
    if !target.is_empty() {
        line.push_str(&paint(ctx, &terminal_safe_str(target), |s| {
            s.dimmed().to_string()
        }));
        line.push_str(": ");
    }
    line.push_str(&terminal_safe_str(record.str_field("message")));
    for (key, value) in record.fields() {
        if !matches!(key.as_str(), "timestamp" | "level" | "target" | "message") {
            let _ = write!(line, "  {}={}", terminal_safe_str(key), value_text(value));
        }
    }
}

impl Formatter for PrettyFormatter {
    fn name(&self) -> &'static str {
        "pretty"
    }

    fn about(&self) -> &'static str {
        "aligned, coloured lines for people (the default)"
    }

    fn write(&self, record: &Record, ctx: &FormatContext, out: &mut Vec<u8>) {
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
            Kind::Event if record.field("decision").is_some() => audit_line(record, ctx, &mut line),
            Kind::Event if record.str_field("kind") == "segment" => {
                let marker = paint(ctx, "SEGMENT    ", |s| s.yellow().bold().to_string());
                let _ = write!(
                    line,
                    "{marker}  new chain segment at seq {}: {}",
                    record
                        .field("seq")
                        .map(Value::to_string)
                        .unwrap_or_default(),
                    terminal_safe_str(record.str_field("reason"))
                );
                if let Some(torn) = record.field("torn") {
                    let _ = write!(line, "  torn={}", terminal_safe_str(&torn.to_string()));
                }
            }
            Kind::Event => {
                let mut first = true;
                for (key, value) in record.fields() {
                    if !first {
                        line.push_str("  ");
                    }
                    first = false;
                    let _ = write!(line, "{}={}", terminal_safe_str(key), value_text(value));
                }
            }
            Kind::Log => log_line(record, ctx, &mut line),
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
