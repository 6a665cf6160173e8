//! `--help` of every command, snapshotted from the built binary. The list of commands comes from
//! walking the clap command tree, so a new command (or subcommand) is covered without editing
//! this file: its snapshot simply appears as new.

mod common;

use clap::CommandFactory;
use common::World;
use firma::cli::Cli;

/// Every visible command path below `firma`, parents first (`["sidecar"]`, `["sidecar",
/// "start"]`, …), plus `[]` for `firma` itself.
fn command_paths() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, prefix: &[String], out: &mut Vec<Vec<String>>) {
        out.push(prefix.to_vec());
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            let mut path = prefix.to_vec();
            path.push(sub.get_name().to_string());
            walk(sub, &path, out);
        }
    }
    let mut out = Vec::new();
    walk(&Cli::command(), &[], &mut out);
    out
}

fn help_of(world: &World, path: &[String]) -> String {
    let mut cmd = world.cmd();
    // A fixed width: clap wraps help text to the terminal (or $COLUMNS when there is none).
    cmd.env("COLUMNS", "100").args(path).arg("--help");
    let out = common::run_with_timeout(&mut cmd, std::time::Duration::from_secs(30));
    common::assert_success(&out);
    assert!(out.stderr.is_empty(), "{}", common::stderr(&out));
    common::stdout(&out)
}

#[test]
fn every_command_help_is_snapshotted() {
    let world = World::new();
    let paths = command_paths();
    assert!(
        paths.iter().any(|p| p == &["sidecar", "start"]),
        "the walk reaches nested subcommands: {paths:?}"
    );
    for path in &paths {
        let name = if path.is_empty() {
            "firma".to_string()
        } else {
            format!("firma_{}", path.join("_"))
        };
        insta::assert_snapshot!(name, help_of(&world, path));
    }
}

#[test]
fn every_state_dir_flag_shows_its_environment_variable() {
    let world = World::new();
    let mut with_flag = 0;
    for path in command_paths() {
        let help = help_of(&world, &path);
        if help.contains("--state-dir <DIR>") {
            with_flag += 1;
            // One definition: the same text everywhere, with the env var clap reads.
            assert!(
                help.contains("[env: FIRMA_STATE_DIR]"),
                "firma {}: {help}",
                path.join(" ")
            );
        }
        // The caller's environment never leaks into the help text.
        assert!(!help.contains(&world.state_dir().display().to_string()));
    }
    assert!(
        with_flag >= 10,
        "only {with_flag} commands take --state-dir"
    );
}

#[test]
fn the_state_dir_comes_from_the_environment_through_the_shared_flag() {
    let world = World::new();
    world.init(&[]);
    let other = world.path().join("elsewhere");
    // FIRMA_STATE_DIR (set by the world) is used when the flag is absent…
    let out = world.run(&["sidecar", "status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["state_dir"],
        world.state_dir().display().to_string(),
        "{json}"
    );
    // …the flag beats it…
    let out = world.run(&[
        "sidecar",
        "status",
        "--json",
        "--state-dir",
        other.to_str().unwrap(),
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["state_dir"], other.display().to_string(), "{json}");
    // …and an empty variable counts as unset (the XDG default applies), not as an error.
    let out = common::run_with_timeout(
        world
            .cmd()
            .env("FIRMA_STATE_DIR", "")
            .args(["sidecar", "status", "--json"]),
        std::time::Duration::from_secs(30),
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["state_dir"],
        world.path().join("runtime/firma").display().to_string(),
        "{json}"
    );
}

#[test]
fn an_empty_state_dir_flag_is_an_error_naming_the_flag() {
    let world = World::new();
    let out = world.run(&["doctor", "--state-dir", ""]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        common::stderr(&out).contains("--state-dir needs a path"),
        "{}",
        common::stderr(&out)
    );
}

#[test]
fn a_bad_stop_timeout_is_refused_before_anything_stops() {
    let world = World::new();
    let out = world.run(&["sidecar", "stop", "--timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2));
    let err = common::stderr(&out);
    assert!(
        err.contains("--timeout") && err.contains("is not a number of seconds"),
        "{err}"
    );
}

#[test]
fn the_global_config_flag_reaches_every_command_before_or_after_its_name() {
    let world = World::new();
    let missing = world.path().join("missing.toml");
    let missing = missing.to_str().unwrap();
    for args in [
        vec!["--config", missing, "sidecar", "start"],
        vec!["sidecar", "start", "--config", missing],
        vec!["--config", missing, "sidecar", "restart"],
        vec!["config", "check", "--config", missing],
    ] {
        let out = world.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = common::stderr(&out);
        assert!(
            err.contains(missing) && err.contains("selected by --config"),
            "{args:?}: {err}"
        );
    }
}
