//! Landlock for the agent: the file system read-only except the writable paths; signals and
//! abstract Unix sockets scoped to the sandbox; TCP connects limited to the relay's port when
//! there is no network namespace to do it.

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus, NetPort, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
};

use super::LANDLOCK_TARGET_ABI;
use super::plan::Layout;

/// Restrict this process (and everything it executes). Returns the ABI in force, or `None`
/// when the kernel enforced nothing.
pub fn restrict(
    layout: &Layout,
    relay_port: u16,
    network_isolated: bool,
) -> Result<Option<i32>, String> {
    let abi = ABI::from(LANDLOCK_TARGET_ABI);
    let fail = |e: landlock::RulesetError| format!("landlock: {e}");
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(fail)?
        .scope(Scope::from_all(abi))
        .map_err(fail)?;
    if !network_isolated {
        ruleset = ruleset.handle_access(AccessNet::ConnectTcp).map_err(fail)?;
    }
    let mut created = ruleset
        .create()
        .map_err(fail)?
        .add_rules(path_beneath_rules(["/"], AccessFs::from_read(abi)))
        .map_err(fail)?
        .add_rules(path_beneath_rules(
            &layout.writable,
            AccessFs::from_all(abi),
        ))
        .map_err(fail)?;
    if !network_isolated {
        created = created
            .add_rule(NetPort::new(relay_port, AccessNet::ConnectTcp))
            .map_err(fail)?;
    }
    let status = created.restrict_self().map_err(fail)?;
    if status.ruleset == RulesetStatus::NotEnforced {
        return Ok(None);
    }
    Ok(match status.landlock {
        LandlockStatus::Available { effective_abi, .. } => Some(effective_abi as i32),
        _ => None,
    })
}
