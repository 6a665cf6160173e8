//! Black-box tests of `firma init` and config discovery, each in a throwaway world.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{World, assert_success, stderr, stdout};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn scripted_init_writes_the_layout_with_private_modes() {
    let world = World::new();
    let out = world.run(&[
        "init",
        "--agent",
        "codex",
        "--provider",
        "anthropic",
        "--workspace",
        "./proj",
        "--authority",
        "local",
        "--yes",
    ]);
    assert_success(&out);
    let project = world.workspace().join("proj/.firma");
    for file in [
        "firma.toml",
        "authority.key",
        "authority.pub",
        "audit.key",
        "audit.pub",
        "mapping-rules.toml",
        "policies/schema.cedarschema",
        "policies/default.cedar",
        "issuance-policies/issuance.cedar",
    ] {
        assert!(project.join(file).is_file(), "missing {file}");
    }
    for dir in ["", "policies", "issuance-policies"] {
        assert_eq!(mode(&project.join(dir)), 0o700, "dir {dir:?}");
    }
    assert_eq!(mode(&project.join("authority.key")), 0o600);
    assert_eq!(mode(&project.join("audit.key")), 0o600);
    assert_eq!(mode(&project.join("authority.pub")), 0o644);
    assert!(read(&project.join("authority.key")).starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(read(&project.join("audit.pub")).starts_with("-----BEGIN PUBLIC KEY-----\n"));

    let config = read(&project.join("firma.toml"));
    for section in [
        "[project]",
        "[authority]",
        "[sidecar.proxy]",
        "[sidecar.mapping]",
        "[sidecar.audit]",
        "[sidecar.authority]",
    ] {
        assert!(config.contains(section), "missing {section} in\n{config}");
    }
    assert!(config.contains("agent = \"codex\""));
    assert!(config.contains("listen = \"127.0.0.1:50051\""));
    assert!(config.contains("listen = \"127.0.0.1:8080\""));
    assert!(!config.contains("state_dir"));

    let revocations = world.data_dir().join("revocations.txt");
    assert_eq!(read(&revocations), "");
    assert_eq!(mode(&world.data_dir()), 0o700);
    assert!(world.state_dir().join("audit.jsonl").is_file());

    let text = stdout(&out);
    assert!(text.contains("firma sidecar start"), "{text}");
    assert!(text.contains("firma monitor"), "{text}");
    assert!(
        text.contains(&project.join("firma.toml").display().to_string()),
        "{text}"
    );
}

#[test]
fn rerun_preserves_every_file_byte_for_byte() {
    let world = World::new();
    world.init(&[]);
    let snapshot = |w: &World| -> Vec<(std::path::PathBuf, Vec<u8>)> {
        w.files()
            .into_iter()
            .map(|p| (p.clone(), std::fs::read(w.path().join(&p)).unwrap()))
            .collect()
    };
    let before = snapshot(&world);
    let out = world.run(&["init", "--yes", "--agent", "other", "--provider", "openai"]);
    assert_success(&out);
    assert_eq!(before, snapshot(&world));
    assert!(stderr(&out).contains("kept"), "{}", stderr(&out));
    assert!(stdout(&out).contains("kept"), "{}", stdout(&out));
}

#[test]
fn force_regenerates_keys_and_archives_the_audit_log() {
    let world = World::new();
    world.init(&[]);
    let key = world.project_dir().join("authority.key");
    let audit_key = world.project_dir().join("audit.key");
    let before = (read(&key), read(&audit_key));
    std::fs::write(world.state_dir().join("audit.jsonl"), "{\"seq\":0}\n").unwrap();
    let out = world.init(&["--force"]);
    assert_ne!(before.0, read(&key));
    assert_ne!(before.1, read(&audit_key));
    assert_eq!(mode(&key), 0o600);
    assert!(
        stderr(&out).contains("previous audit log was moved"),
        "{}",
        stderr(&out)
    );
    let archived: Vec<_> = world
        .files()
        .into_iter()
        .filter(|p| p.to_string_lossy().contains("audit-archive-"))
        .collect();
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert_eq!(read(&world.path().join(&archived[0])), "{\"seq\":0}\n");
}

#[test]
fn bad_input_exits_2_and_writes_nothing() {
    let world = World::new();
    std::fs::write(world.path().join("a-file"), "x").unwrap();
    let blocked = world.path().join("a-file/proj").display().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--authority", "ftp://example"], "--authority"),
        (vec!["--authority", "nonsense"], "--authority"),
        (
            vec!["--authority-listen", "127.0.0.1:99999"],
            "--authority-listen",
        ),
        (vec!["--sidecar-listen", "nonsense"], "--sidecar-listen"),
        (vec!["--provider", "nope"], "--provider"),
        (vec!["--agent", "bad agent"], "--agent"),
        (vec!["--workspace", &blocked], "--workspace"),
    ];
    let before = world.files();
    for (extra, flag) in cases {
        let mut args = vec!["init", "--yes"];
        args.extend(&extra);
        let out = world.run(&args);
        assert_eq!(out.status.code(), Some(2), "{extra:?}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(err.starts_with("error: "), "{extra:?}: {err}");
        assert!(err.contains(flag), "{extra:?} should name {flag}: {err}");
        assert!(err.contains("hint: "), "{extra:?}: {err}");
        assert_eq!(world.files(), before, "{extra:?} left files behind");
        assert!(!world.project_dir().exists(), "{extra:?} created .firma");
    }
}

#[test]
fn without_a_terminal_and_without_yes_it_uses_defaults() {
    let world = World::new();
    let out = world.run(&["init"]);
    assert_success(&out);
    assert!(stdout(&out).contains("not a terminal"), "{}", stdout(&out));
    let config = read(&world.config_path());
    assert!(config.contains("agent = \"generic\""), "{config}");
    assert!(config.contains("provider = \"anthropic\""), "{config}");
}

#[test]
fn wizard_through_a_pseudo_terminal_reasks_bad_answers() {
    let world = World::new();
    let mut cmd = world.cmd();
    cmd.arg("init");
    // workspace, agent (bad, then good), provider (bad, then good), authority (default), audit
    // log directory (default: the state dir).
    let (status, transcript) =
        common::terminal::on_a_terminal(cmd, None, b"proj\nbad agent!\nclaude\nnope\nopenai\n\n\n");
    assert!(status.success(), "{transcript}");
    for prompt in [
        "[firma init] workspace path [.]: ",
        "[firma init] agent (",
        "[firma init] provider (",
        "[firma init] authority (",
        "[firma init] audit log directory (",
    ] {
        assert!(
            transcript.contains(prompt),
            "missing {prompt:?} in\n{transcript}"
        );
    }
    assert_eq!(
        transcript.matches("[firma init] agent (").count(),
        2,
        "{transcript}"
    );
    assert_eq!(
        transcript.matches("[firma init] provider (").count(),
        2,
        "{transcript}"
    );
    let config = read(&world.workspace().join("proj/.firma/firma.toml"));
    assert!(config.contains("agent = \"claude\""), "{config}");
    assert!(config.contains("provider = \"openai\""), "{config}");
    assert!(config.contains("mode = \"local\""), "{config}");
}

#[test]
fn remote_authority_writes_remote_shape_without_authority_key() {
    let world = World::new();
    let out = world.run(&["init", "--yes", "--authority", "https://auth.example:50051"]);
    assert_success(&out);
    let config = read(&world.config_path());
    assert!(config.contains("mode = \"remote\""));
    assert!(config.contains("url = \"https://auth.example:50051\""));
    assert!(!world.project_dir().join("authority.key").exists());
    assert!(stderr(&out).contains("authority.pub"), "{}", stderr(&out));
}

/// `firma config check` reports which file discovery selected.
fn checked_path(world: &World, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = world.cmd();
    cmd.current_dir(cwd).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = common::run_with_timeout(&mut cmd, std::time::Duration::from_secs(30));
    (
        out.status.code().unwrap_or(-1),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

#[test]
fn discovery_precedence_flag_env_walk_up() {
    let world = World::new();
    world.init(&[]);
    let outer = world.config_path();
    // A nested project: the nearest ancestor wins.
    let inner_ws = world.workspace().join("sub");
    std::fs::create_dir_all(&inner_ws).unwrap();
    let out = world.run(&["init", "--yes", "--workspace", "sub", "--agent", "inner"]);
    assert_success(&out);
    let inner = inner_ws.join(".firma/firma.toml");
    let deep = inner_ws.join("a/b");
    std::fs::create_dir_all(&deep).unwrap();

    let (code, text) = checked_path(&world, &deep, &["config", "check"], &[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&inner.display().to_string()) && text.contains("walk-up"),
        "{text}"
    );

    let (code, text) = checked_path(
        &world,
        &deep,
        &["config", "check"],
        &[("FIRMA_CONFIG", outer.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&outer.display().to_string()) && text.contains("FIRMA_CONFIG"),
        "{text}"
    );

    let (code, text) = checked_path(
        &world,
        &deep,
        &["--config", inner.to_str().unwrap(), "config", "check"],
        &[("FIRMA_CONFIG", outer.to_str().unwrap())],
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&inner.display().to_string()) && text.contains("--config"),
        "{text}"
    );

    // Empty env counts as unset.
    let (code, text) = checked_path(&world, &deep, &["config", "check"], &[("FIRMA_CONFIG", "")]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&inner.display().to_string()), "{text}");
}

#[test]
fn broken_selected_config_is_an_error_not_a_fall_through() {
    let world = World::new();
    world.init(&[]);
    let broken = world.path().join("broken.toml");
    std::fs::write(&broken, "[project]\nagent = \"x\"\nbogus = 1\n").unwrap();
    let (code, text) = checked_path(
        &world,
        &world.workspace(),
        &["config", "check"],
        &[("FIRMA_CONFIG", broken.to_str().unwrap())],
    );
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains(&format!("{}:3:1", broken.display())),
        "{text}"
    );
    assert!(text.contains("FIRMA_CONFIG"), "{text}");

    let missing = world.path().join("missing.toml");
    let (code, text) = checked_path(
        &world,
        &world.workspace(),
        &["--config", missing.to_str().unwrap(), "config", "check"],
        &[],
    );
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("missing.toml") && text.contains("--config"),
        "{text}"
    );

    // Walk-up selects a broken file: still an error.
    std::fs::write(world.config_path(), "state_dir = \"/tmp\"\n").unwrap();
    let (code, text) = checked_path(&world, &world.workspace(), &["config", "check"], &[]);
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("state_dir") && text.contains("FIRMA_STATE_DIR"),
        "{text}"
    );
}

#[test]
fn no_config_anywhere_is_a_clear_error() {
    let world = World::new();
    let (code, text) = checked_path(&world, &world.workspace(), &["config", "check"], &[]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("firma init"), "{text}");
}

/// What `firma init` prints, with the world's paths redacted.
#[test]
fn init_output_snapshot() {
    let world = World::new();
    let out = world.run(&[
        "init",
        "--yes",
        "--agent",
        "codex",
        "--provider",
        "openai",
        "--workspace",
        "proj",
    ]);
    assert_success(&out);
    let root = world.path().display().to_string();
    insta::assert_snapshot!(stdout(&out).replace(&root, "[WORLD]"));
}

#[test]
fn next_steps_carry_the_state_dir_given_with_the_flag() {
    let world = World::new();
    let state = world.path().join("elsewhere");
    let out = world.run(&[
        "init",
        "--yes",
        "--agent",
        "codex",
        "--state-dir",
        &state.display().to_string(),
    ]);
    assert_success(&out);
    let text = stdout(&out);
    let flag = format!("--state-dir {}", state.display());
    let next: Vec<&str> = text.lines().skip_while(|l| *l != "next:").skip(1).collect();
    assert_eq!(next.len(), 2, "{text}");
    for step in next {
        assert!(step.contains(&flag), "{text}");
    }
    assert!(state.join("audit.jsonl").exists());
}

#[test]
fn config_check_rejects_a_token_ttl_beyond_max_ttl() {
    let world = World::new();
    world.init(&[]);
    let path = world.config_path();
    let text = read(&path).replace("token_ttl = \"15m\"", "token_ttl = \"2h\"");
    std::fs::write(&path, text).unwrap();
    let out = world.run(&["config", "check"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}:10:1: [project].token_ttl (2h) is longer than [authority].max_ttl (1h)",
            path.display()
        )),
        "{err}"
    );
    // Everything else still loads it (the Authority clamps).
    assert_success(&world.run(&["doctor"]));
}
