//! `json`: one object per line, schema 1 (docs/monitor.md). Every line has `schema`, `source`,
//! `kind` and `time`. Audit events are carried byte for byte under `event`, so their signature
//! still verifies downstream; log objects under `log`; other lines as strings.

use base64::Engine;

use crate::monitor::text::{push_json_str, push_rfc3339_nanos, push_u64};
use crate::monitor::{FormatContext, Formatter, FormatterPlugin, Kind, Record, Source};

/// Version of the output schema; only ever gains fields within a version.
pub const SCHEMA: u32 = 1;

pub struct JsonFormatter;

fn push_line(out: &mut Vec<u8>, raw: &[u8]) {
    out.extend_from_slice(b",\"line\":");
    match std::str::from_utf8(raw) {
        Ok(text) => push_json_str(out, text),
        Err(_) => {
            push_json_str(out, &String::from_utf8_lossy(raw));
            out.extend_from_slice(b",\"line_b64\":\"");
            out.extend_from_slice(
                base64::engine::general_purpose::STANDARD
                    .encode(raw)
                    .as_bytes(),
            );
            out.push(b'"');
        }
    }
}

impl Formatter for JsonFormatter {
    fn name(&self) -> &'static str {
        "json"
    }

    fn about(&self) -> &'static str {
        "one JSON object per line (schema in docs/monitor.md), for jq and log collectors"
    }

    fn write(
        &self,
        record: &Record,
        _source: &dyn Source,
        _ctx: &FormatContext,
        out: &mut Vec<u8>,
    ) {
        out.extend_from_slice(b"{\"schema\":");
        push_u64(out, SCHEMA.into());
        out.extend_from_slice(b",\"source\":");
        push_json_str(out, record.source);
        let kind = match record.kind {
            Kind::Event => "event",
            Kind::Log => "log",
            Kind::Raw => "raw",
            Kind::Malformed { .. } => "malformed",
        };
        out.extend_from_slice(b",\"kind\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"time\":");
        match record.time {
            Some(time) => {
                out.push(b'"');
                push_rfc3339_nanos(out, &time);
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        match &record.kind {
            // `raw` is the JSON text of the record: carried unchanged.
            Kind::Event => {
                out.extend_from_slice(b",\"event\":");
                out.extend_from_slice(&record.raw);
            }
            Kind::Log => {
                out.extend_from_slice(b",\"log\":");
                out.extend_from_slice(&record.raw);
            }
            Kind::Raw => push_line(out, &record.raw),
            Kind::Malformed { reason } => {
                out.extend_from_slice(b",\"offset\":");
                push_u64(out, record.offset);
                out.extend_from_slice(b",\"error\":");
                push_json_str(out, reason);
                push_line(out, &record.raw);
            }
        }
        out.extend_from_slice(b"}\n");
    }
}

inventory::submit!(FormatterPlugin(&JsonFormatter));
