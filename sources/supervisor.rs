//! `supervisor`: the supervisor's log — how the pair started, how each child ended (exit
//! code or signal), restarts — tracing JSON lines.

use crate::monitor::SourcePlugin;
use crate::monitor::logline::LogFile;
use crate::state_dir::Role;

inventory::submit!(SourcePlugin(&LogFile {
    name: "supervisor",
    about: "supervisor log (supervisor.log): starts, stops and crashes of the pair",
    role: Role::Supervisor,
}));
