//! A test-only formatter, `tsv`: source, kind and the raw line, tab-separated. Nothing outside
//! this file names it.

use firma::monitor::{FormatContext, Formatter, FormatterPlugin, Kind, Record, Source};

pub struct Tsv;

impl Formatter for Tsv {
    fn name(&self) -> &'static str {
        "tsv"
    }
    fn about(&self) -> &'static str {
        "test-only tab-separated output"
    }
    fn write(
        &self,
        record: &Record,
        _source: &dyn Source,
        _ctx: &FormatContext,
        out: &mut Vec<u8>,
    ) {
        let kind = match record.kind {
            Kind::Event => "event",
            Kind::Log => "log",
            Kind::Raw => "raw",
            Kind::Malformed { .. } => "malformed",
        };
        out.extend_from_slice(format!("{}\t{kind}\t", record.source).as_bytes());
        out.extend_from_slice(&record.raw);
        out.push(b'\n');
    }
}

inventory::submit!(FormatterPlugin(&Tsv));
