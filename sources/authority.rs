//! `authority`: the Authority daemon's stdout+stderr, tracing JSON lines.

use crate::monitor::SourcePlugin;
use crate::monitor::logline::LogFile;
use crate::state_dir::Role;

inventory::submit!(SourcePlugin(&LogFile {
    name: "authority",
    about: "Authority daemon log (authority.log)",
    role: Role::Authority,
}));
