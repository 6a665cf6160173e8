//! Shell completions and man pages come from the clap definitions of this build.

mod common;

use common::{World, assert_success, stdout};

#[test]
fn completion_scripts_cover_commands_and_flags() {
    let world = World::new();
    for (shell, marker) in [
        ("bash", "_firma()"),
        ("zsh", "#compdef firma"),
        ("fish", "complete -c firma"),
    ] {
        let out = world.run(&["completions", shell]);
        assert_success(&out);
        let script = stdout(&out);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("init"), "{shell} lacks init");
        assert!(script.contains("workspace"), "{shell} lacks --workspace");
    }
    let out = world.run(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_pages_one_per_visible_command() {
    let world = World::new();
    let dir = world.path().join("man");
    let out = world.run(&["manpages", dir.to_str().unwrap()]);
    assert_success(&out);
    let page = std::fs::read_to_string(dir.join("firma.1")).unwrap();
    assert!(page.starts_with(".ie"), "{page}");
    assert!(page.contains(".TH firma 1"), "{page}");
    let init = std::fs::read_to_string(dir.join("firma-init.1")).unwrap();
    assert!(init.contains("\\-\\-authority\\-listen"), "{init}");
    assert!(dir.join("firma-config-check.1").is_file());
    // Hidden commands get no page.
    assert!(!dir.join("firma-__supervise.1").exists());
}
