//! `sidecar`: the Sidecar daemon's stdout+stderr (`sidecar.log`), tracing JSON lines.

use std::path::PathBuf;

use crate::monitor::logline::parse_log_line;
use crate::monitor::{Record, Source, SourcePlugin};
use crate::state_dir::{Role, StateDir};

pub struct SidecarSource;

impl Source for SidecarSource {
    fn name(&self) -> &'static str {
        "sidecar"
    }
    fn about(&self) -> &'static str {
        "Sidecar daemon log (sidecar.log)"
    }
    fn path(&self, state: &StateDir) -> PathBuf {
        state.log_file(Role::Sidecar)
    }
    fn parse(&self, line: &[u8], offset: u64) -> Record {
        parse_log_line(self.name(), line, offset)
    }
}

inventory::submit!(SourcePlugin(&SidecarSource));
