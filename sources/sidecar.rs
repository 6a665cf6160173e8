//! `sidecar`: the Sidecar daemon's stdout+stderr, tracing JSON lines.

use crate::monitor::SourcePlugin;
use crate::monitor::logline::LogFile;
use crate::state_dir::Role;

inventory::submit!(SourcePlugin(&LogFile {
    name: "sidecar",
    about: "Sidecar daemon log (sidecar.log)",
    role: Role::Sidecar,
}));
