//! `authority`: the Authority daemon's stdout+stderr (`authority.log`), tracing JSON lines.

use std::path::PathBuf;

use crate::monitor::logline::parse_log_line;
use crate::monitor::{Record, Source, SourcePlugin};
use crate::state_dir::{Role, StateDir};

pub struct AuthoritySource;

impl Source for AuthoritySource {
    fn name(&self) -> &'static str {
        "authority"
    }
    fn about(&self) -> &'static str {
        "Authority daemon log (authority.log)"
    }
    fn path(&self, state: &StateDir) -> PathBuf {
        state.log_file(Role::Authority)
    }
    fn parse(&self, line: &[u8], offset: u64) -> Record {
        parse_log_line(self.name(), line, offset)
    }
}

inventory::submit!(SourcePlugin(&AuthoritySource));
