//! Is a stack running on this state dir, and whose is it? Two guards built on that question:
//!
//! - **nothing destructive under a running stack** ([`ensure_no_stack`]): a command that would
//!   replace keys, archive the audit log or rewrite the config a running pair uses refuses,
//!   naming the stack, unless it is told to stop it first;
//! - **one state dir per project** ([`project_mismatch`]): a command run from a project whose
//!   `firma.toml` is not the one the running stack serves is about to use somebody else's stack
//!   and Authority; it is told so.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::state::{Role, StackMeta, StateDir};
use super::stop::{StopReport, stop};
use crate::error::Hinted;
use crate::platform::process::{group_present, process_present};

/// A stack that has live processes in a state dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveStack {
    pub state_dir: PathBuf,
    /// The live processes, by role.
    pub pids: Vec<(Role, i32)>,
    /// How it was started (missing only while it boots, or for orphans of a dead supervisor).
    pub meta: Option<StackMeta>,
}

impl LiveStack {
    /// `project proj (/p/.firma/firma.toml), supervisor pid 42`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(meta) = &self.meta {
            parts.push(format!(
                "project {} ({})",
                meta.project,
                meta.config.display()
            ));
        }
        let pids: Vec<String> = self
            .pids
            .iter()
            .map(|(role, pid)| format!("{} pid {pid}", role.name()))
            .collect();
        parts.push(pids.join(", "));
        parts.join("; ")
    }
}

/// The stack running on `state`, if any process of one is alive (identity checked).
pub fn live_stack(state: &StateDir) -> Option<LiveStack> {
    let pids: Vec<(Role, i32)> = [Role::Supervisor, Role::Authority, Role::Sidecar]
        .into_iter()
        .filter_map(|role| {
            let id = state.read_identity(role)?;
            let alive = match role {
                Role::Supervisor => process_present(&id),
                _ => group_present(&id),
            };
            alive.then_some((role, id.pid))
        })
        .collect();
    (!pids.is_empty()).then(|| LiveStack {
        state_dir: state.path().to_path_buf(),
        pids,
        meta: state.read_meta(),
    })
}

/// Refuse `action` (e.g. "`init --force` would replace its keys and archive the audit log it
/// writes") while a stack runs on `state`; with `stop_first`, stop it in the stop order and
/// return what `stop` did.
pub fn ensure_no_stack(
    state: &StateDir,
    action: &str,
    stop_first: bool,
    stop_flag: &str,
) -> Result<Option<StopReport>, Hinted> {
    let Some(stack) = live_stack(state) else {
        return Ok(None);
    };
    if !stop_first {
        return Err(Hinted::new(format!(
            "a firma stack is running on {} ({}): {action}",
            state.path().display(),
            stack.describe()
        ))
        .hint(format!(
            "stop it first with `firma sidecar stop --state-dir {}`, or pass {stop_flag} to stop it and go on",
            state.path().display()
        )));
    }
    stop(state, STOP_TIMEOUT).map(Some)
}

/// The soft-signal window when a guard stops a stack (`sidecar stop`'s default).
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A command about to use a stack that serves a different project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectMismatch {
    pub state_dir: PathBuf,
    /// The project the running stack serves, and its config.
    pub running_project: String,
    pub running_config: PathBuf,
    /// The config this command found.
    pub this_config: PathBuf,
}

impl ProjectMismatch {
    pub fn message(&self) -> String {
        format!(
            "the stack running on {} serves project {} ({}), not this project ({})",
            self.state_dir.display(),
            self.running_project,
            self.running_config.display(),
            self.this_config.display()
        )
    }

    pub fn hint(&self) -> String {
        "use one state dir per project: pass --state-dir (or set FIRMA_STATE_DIR) to this project's, \
         or run the command from the other project"
            .into()
    }

    /// The refusal of a command that would act on the wrong stack.
    pub fn into_error(self) -> Hinted {
        let hint = format!(
            "{}; pass --state-dir {} explicitly to use that stack anyway",
            self.hint(),
            self.state_dir.display()
        );
        Hinted::new(self.message()).hint(hint)
    }
}

/// Whether the stack running on `state` serves a config other than `config`.
pub fn project_mismatch(state: &StateDir, config: &Path) -> Option<ProjectMismatch> {
    let stack = live_stack(state)?;
    let meta = stack.meta?;
    let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    };
    (!same(&meta.config, config)).then(|| ProjectMismatch {
        state_dir: state.path().to_path_buf(),
        running_project: meta.project,
        running_config: meta.config,
        this_config: config.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::identity::Identity;

    fn meta(config: &Path) -> StackMeta {
        StackMeta {
            authority_mode: "local".into(),
            authority_url: "http://127.0.0.1:1".into(),
            config: config.to_path_buf(),
            project: "proj".into(),
            authority_ca_cert: None,
            detached: true,
        }
    }

    #[test]
    fn a_live_stack_of_another_project_is_a_mismatch_and_blocks_destructive_commands() {
        let tmp = tempfile::tempdir().unwrap();
        let state = StateDir::new(tmp.path());
        let ours = tmp.path().join("a.toml");
        let theirs = tmp.path().join("b.toml");
        std::fs::write(&ours, "").unwrap();
        std::fs::write(&theirs, "").unwrap();
        assert_eq!(live_stack(&state), None);
        assert_eq!(project_mismatch(&state, &ours), None);
        assert!(
            ensure_no_stack(&state, "x", false, "--stop")
                .unwrap()
                .is_none()
        );

        // This test process plays the supervisor.
        state
            .write_process(Role::Supervisor, &Identity::current().unwrap())
            .unwrap();
        state.write_meta(&meta(&theirs)).unwrap();
        let mismatch = project_mismatch(&state, &ours).expect("a mismatch");
        assert!(mismatch.message().contains("serves project proj"));
        assert_eq!(project_mismatch(&state, &theirs), None);
        let err = ensure_no_stack(&state, "init --force would replace keys", false, "--stop")
            .unwrap_err();
        assert!(
            err.message().contains("a firma stack is running on"),
            "{err}"
        );
        assert!(err.message().contains("supervisor pid"), "{err}");
        assert!(err.hint_text().unwrap().contains("--stop"));
    }
}
