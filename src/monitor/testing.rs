//! What the monitor's unit tests share: a formatter that writes each record's raw line, so a
//! test compares output with what was written.

use super::{FormatContext, Formatter, Record, Source};

pub struct RawOut;

impl Formatter for RawOut {
    fn name(&self) -> &'static str {
        "raw"
    }
    fn about(&self) -> &'static str {
        "test"
    }
    fn write(&self, record: &Record, _: &dyn Source, _: &FormatContext, out: &mut Vec<u8>) {
        out.extend_from_slice(&record.raw);
        out.push(b'\n');
    }
}
