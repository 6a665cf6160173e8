//! `authority`: the Authority daemon's stdout+stderr (`authority.log`), tracing JSON lines.

use crate::monitor::logline::parse_log_line;
use crate::monitor::{Record, Source, SourcePlugin};

pub struct AuthoritySource;

impl Source for AuthoritySource {
    fn name(&self) -> &'static str {
        "authority"
    }
    fn about(&self) -> &'static str {
        "Authority daemon log (authority.log)"
    }
    fn file_name(&self) -> &'static str {
        "authority.log"
    }
    fn parse(&self, line: &[u8], offset: u64) -> Record {
        parse_log_line(self.name(), line, offset)
    }
}

inventory::submit!(SourcePlugin(&AuthoritySource));
