//! README and docs tell the truth (issue #20 item 9): the commands of README's operator flow, of
//! docs/quickstart.md and of the operator guide run as written, in order, in a throwaway world —
//! its own HOME and network namespace, so the documented default ports (8080, 50051, 9000) are
//! free and nothing outside is touched. Every command must succeed; the output quickstart shows
//! must be what firma prints (paths, digits and elided `…` lines aside).
//!
//! Long-running commands (`firma sidecar start` in the foreground, a following `firma monitor`)
//! are run as an operator would: left running, then stopped with Ctrl-C (SIGINT to the job's
//! process group); they must still be running when interrupted and then exit cleanly.
//!
//! Needs root (network namespaces), as CI has.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::netns::Netns;
use common::{FIRMA, World};

/// How long the whole flow may take before the test names the step that hangs.
const DEADLINE: Duration = Duration::from_secs(300);

/// How a documented command is run.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    /// Runs to completion and exits 0.
    Once,
    /// `firma sidecar start` in the foreground: interrupted once the pair is up.
    Foreground,
    /// A following `firma monitor`: interrupted after it had time to print.
    Follow,
}

#[derive(Debug)]
struct Step {
    command: String,
    /// The output the docs show for it (console blocks only).
    documented: Vec<String>,
}

impl Step {
    fn kind(&self) -> Kind {
        let cmd = self.command.trim_start();
        if cmd.starts_with("firma sidecar start") && !cmd.contains("--detach") {
            Kind::Foreground
        } else if cmd.starts_with("firma monitor") && !cmd.contains("--no-follow") {
            Kind::Follow
        } else {
            Kind::Once
        }
    }
}

/// The fenced blocks of `markdown` whose info string is `lang`, as lists of lines.
fn fenced_blocks<'a>(markdown: &'a str, lang: &str) -> Vec<Vec<&'a str>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in markdown.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(info)) if info.trim() == lang => current = Some(Vec::new()),
            (Some(_), Some("")) => blocks.push(current.take().unwrap()),
            (Some(block), _) => block.push(line),
            (None, _) => {}
        }
    }
    blocks
}

/// `sh` blocks: every line that is not blank or a comment is a command.
fn sh_steps(block: &[&str]) -> Vec<Step> {
    block
        .iter()
        .map(|line| line.trim())
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| Step {
            command: line.to_string(),
            documented: Vec::new(),
        })
        .collect()
}

/// `console` blocks: `$ ` starts a command (a here-document runs to its delimiter); the other
/// lines are the output documented for the command before them.
fn console_steps(block: &[&str]) -> Vec<Step> {
    let mut steps: Vec<Step> = Vec::new();
    let mut heredoc: Option<String> = None;
    for line in block {
        if let Some(end) = &heredoc {
            let step = steps.last_mut().unwrap();
            step.command.push('\n');
            step.command.push_str(line);
            if line.trim() == end {
                heredoc = None;
            }
        } else if let Some(command) = line.strip_prefix("$ ") {
            heredoc = command
                .split_once("<<")
                .map(|(_, tag)| tag.trim().trim_matches(['\'', '"']).to_string());
            steps.push(Step {
                command: command.to_string(),
                documented: Vec::new(),
            });
        } else if let Some(step) = steps.last_mut() {
            step.documented.push(line.to_string());
        }
    }
    steps
}

fn read_doc(path: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|err| panic!("{path}: {err}"))
}

/// README's "The operator flow" block.
fn readme_steps() -> Vec<Step> {
    let readme = read_doc("README.md");
    let flow = &readme[readme
        .find("## The operator flow")
        .expect("README has an operator flow")..];
    let block = fenced_blocks(flow, "sh")
        .into_iter()
        .next()
        .expect("sh block");
    sh_steps(&block)
}

fn quickstart_steps() -> Vec<Step> {
    fenced_blocks(&read_doc("docs/quickstart.md"), "console")
        .iter()
        .flat_map(|block| console_steps(block))
        .collect()
}

/// The guide's commands, in the guide's order (the guide lives outside the repository). Its
/// examples name the state dir `/var/run/firma`; the flow uses it throughout (`FIRMA_STATE_DIR`).
fn guide_steps() -> Vec<Step> {
    [
        "firma init --agent codex --provider anthropic --workspace ./proj --authority local --yes",
        "cd proj",
        "firma sidecar start --detach",
        "firma sidecar status",
        "firma sidecar status --json",
        "firma sidecar status --daemon",
        "firma monitor --state-dir /var/run/firma",
        "firma monitor --state-dir /var/run/firma --source audit --decision deny --since 15m --format json",
        "firma monitor --state-dir /var/run/firma --source authority --no-follow",
        "firma monitor --state-dir /var/run/firma --source audit --action-class communication.external.send",
        "firma doctor",
        "firma sidecar stop --state-dir /var/run/firma",
        "firma sidecar stop --state-dir /var/run/firma --timeout 10",
    ]
    .into_iter()
    .map(|command| Step {
        command: command.to_string(),
        documented: Vec::new(),
    })
    .collect()
}

/// The flow as one bash script: each step's output in `out/<n>`, its status in `out/<n>.rc`,
/// and for interrupted steps whether it was still running in `out/<n>.alive`.
fn script(steps: &[Step], out: &Path) -> String {
    let out = out.display();
    // Job control: each background job gets its own process group, as in a terminal.
    let mut text = String::from("set -m\n");
    for (n, step) in steps.iter().enumerate() {
        let run = format!("{{\n{}\n}} >{out}/{n} 2>&1 </dev/null", step.command);
        match step.kind() {
            Kind::Once => text.push_str(&format!("{run}\necho $? >{out}/{n}.rc\n")),
            Kind::Foreground | Kind::Follow => {
                let settle = if step.kind() == Kind::Foreground {
                    // Up when status says every process runs (exit 0).
                    "for _ in $(seq 1 300); do firma sidecar status >/dev/null 2>&1 && break; sleep 0.1; done"
                } else {
                    "sleep 2"
                };
                text.push_str(&format!(
                    "{run} &\n{settle}\n\
                     if kill -0 %% 2>/dev/null; then echo yes >{out}/{n}.alive; fi\n\
                     kill -INT %% 2>/dev/null\nwait %%\necho $? >{out}/{n}.rc\n"
                ));
            }
        }
    }
    text
}

/// What a step did.
struct Outcome {
    status: Option<i32>,
    alive: bool,
    output: String,
}

fn outcome(out: &Path, n: usize) -> Outcome {
    let read = |name: String| std::fs::read_to_string(out.join(name)).ok();
    Outcome {
        status: read(format!("{n}.rc")).and_then(|rc| rc.trim().parse().ok()),
        alive: read(format!("{n}.alive")).is_some(),
        output: read(n.to_string()).unwrap_or_default(),
    }
}

/// The throwaway world the flow runs in: a HOME (the flow starts there, as `cd ~` would), the
/// built `firma` and a stand-in `codex` on PATH, an `agent.py` in the project.
struct Flow {
    world: World,
    netns: Netns,
    /// The state dir every command uses through `FIRMA_STATE_DIR`, under a private tmpfs over
    /// `/run` (the guide's `/var/run/firma`); `None`: the documented default.
    state_dir: Option<&'static str>,
}

impl Flow {
    fn new(label: &str, state_dir: Option<&'static str>) -> Self {
        let world = World::new();
        // Under HOME: the sandbox gives the agent a private /tmp, and HOME is bound back.
        let bin = world.home().join(".local/bin");
        std::fs::create_dir_all(&bin).unwrap();
        let codex = bin.join("codex");
        std::fs::write(&codex, "#!/bin/sh\necho \"codex (stand-in) ran $*\"\n").unwrap();
        let proj = world.home().join("proj");
        std::fs::create_dir_all(&proj).unwrap();
        std::fs::write(proj.join("agent.py"), "print('agent.py ran')\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&codex, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(
            world.path().join("runtime"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        Self {
            world,
            netns: Netns::create(label),
            state_dir,
        }
    }

    /// Path prefixes of this world and what the docs write instead.
    fn doc_paths(&self) -> Vec<(PathBuf, &'static str)> {
        vec![
            (self.world.path().join("runtime"), "/run/user/1000"),
            (self.world.home(), "/home/me"),
            (PathBuf::from(FIRMA), "/usr/local/bin/firma"),
        ]
    }

    /// Run `steps` in order; on return every step ran or the deadline named the one that hung.
    fn run(&self, steps: &[Step]) -> Vec<Outcome> {
        let out = self.world.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let script_path = self.world.path().join("flow.sh");
        std::fs::write(&script_path, script(steps, &out)).unwrap();

        let mut cmd = self.netns.command("unshare");
        self.world
            .prepare(&mut cmd)
            // The documented defaults: state dir under XDG_RUNTIME_DIR, data dir under HOME.
            .env_remove("FIRMA_STATE_DIR")
            .env_remove("XDG_DATA_HOME");
        let firma_dir = Path::new(FIRMA).parent().unwrap();
        let path = format!(
            "{}:{}:{}",
            self.world.home().join(".local/bin").display(),
            firma_dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mount_run = match self.state_dir {
            Some(dir) => {
                cmd.env("FIRMA_STATE_DIR", dir);
                "mount -t tmpfs -o mode=755 firma-test-run /run && "
            }
            None => "",
        };
        cmd.env("PATH", path)
            .args(["--mount", "--propagation", "private", "bash", "-c"])
            .arg(format!("{mount_run}exec bash \"$0\""))
            .arg(&script_path)
            .current_dir(self.world.home())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().expect("bash");
        let started = Instant::now();
        while child.try_wait().unwrap().is_none() {
            if started.elapsed() > DEADLINE {
                let _ = child.kill();
                let _ = child.wait();
                let stuck = (0..steps.len())
                    .find(|&n| {
                        out.join(n.to_string()).exists() && !out.join(format!("{n}.rc")).exists()
                    })
                    .map(|n| steps[n].command.clone())
                    .unwrap_or_default();
                panic!("the flow did not finish within {DEADLINE:?}; stuck at: {stuck}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        (0..steps.len()).map(|n| outcome(&out, n)).collect()
    }

    /// What listens and runs in the namespace (for a failure message).
    fn diagnostics(&self) -> String {
        let run = |cmd: &mut std::process::Command| {
            cmd.output()
                .map(|out| String::from_utf8_lossy(&out.stdout).into_owned())
                .unwrap_or_else(|err| format!("({err})"))
        };
        let listening = run(self.netns.command("ss").arg("-ltnp"));
        let pids: Vec<String> = self.netns.pids().iter().map(i32::to_string).collect();
        let processes = if pids.is_empty() {
            "(none)".to_string()
        } else {
            run(std::process::Command::new("ps")
                .args(["-o", "pid,args", "-p"])
                .arg(pids.join(",")))
        };
        format!("{listening}\n{processes}")
    }

    /// `text` as the docs would print it: this world's paths replaced by the documented ones,
    /// digit runs as `0`, whitespace runs as one space.
    fn normalise(&self, text: &str) -> String {
        let mut text = text.to_string();
        for (path, doc) in self.doc_paths() {
            text = text.replace(&path.display().to_string(), doc);
        }
        let mut norm = String::with_capacity(text.len());
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_ascii_digit() {
                while chars.peek().is_some_and(char::is_ascii_digit) {
                    chars.next();
                }
                norm.push('0');
            } else if c.is_whitespace() && c != '\n' {
                while chars
                    .peek()
                    .is_some_and(|c| c.is_whitespace() && *c != '\n')
                {
                    chars.next();
                }
                norm.push(' ');
            } else {
                norm.push(c);
            }
        }
        norm.lines().map(str::trim).collect::<Vec<_>>().join("\n")
    }
}

/// Every step succeeded (interrupted ones were running and exited cleanly), and every documented
/// output line (but elisions) is among what the step printed.
fn assert_flow(flow: &Flow, steps: &[Step], outcomes: &[Outcome]) {
    let mut failures = Vec::new();
    for (n, (step, got)) in steps.iter().zip(outcomes).enumerate() {
        let kind = step.kind();
        let ok = match kind {
            Kind::Once => got.status == Some(0),
            Kind::Foreground | Kind::Follow => got.alive && matches!(got.status, Some(0 | 130)),
        };
        if !ok {
            failures.push(format!(
                "step {n} ({kind:?}) `{}`: status {:?}, running when interrupted: {}\n{}",
                step.command, got.status, got.alive, got.output
            ));
            continue;
        }
        let printed = flow.normalise(&got.output);
        let printed: Vec<&str> = printed.lines().collect();
        for line in &step.documented {
            if line.contains('…') || line.trim().is_empty() {
                continue;
            }
            let want = flow.normalise(line);
            if !printed.contains(&want.as_str()) {
                failures.push(format!(
                    "step {n} `{}`: the docs show\n  {want}\nbut it printed:\n{}",
                    step.command,
                    printed.join("\n")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{}\n\nin the namespace at the end:\n{}",
        failures.join("\n\n"),
        flow.diagnostics()
    );
}

#[test]
fn readme_operator_flow_runs_as_written() {
    let steps = readme_steps();
    assert!(steps.len() >= 10, "README's flow was not found: {steps:?}");
    let flow = Flow::new("readme", None);
    let outcomes = flow.run(&steps);
    assert_flow(&flow, &steps, &outcomes);
    // The stand-in agent really ran under `firma run`.
    let ran = |needle: &str| outcomes.iter().any(|o| o.output.contains(needle));
    assert!(ran("codex (stand-in) ran"), "firma run codex ran no codex");
    assert!(
        ran("agent.py ran"),
        "firma run codex -- python3 agent.py ran no agent"
    );
}

#[test]
fn quickstart_runs_as_written_and_prints_what_it_shows() {
    let steps = quickstart_steps();
    assert!(
        steps.len() >= 15,
        "quickstart's commands were not found: {steps:?}"
    );
    let flow = Flow::new("quickstart", None);
    let outcomes = flow.run(&steps);
    assert_flow(&flow, &steps, &outcomes);
}

#[test]
fn the_guides_commands_run_as_written() {
    let steps = guide_steps();
    let flow = Flow::new("guide", Some("/var/run/firma"));
    let outcomes = flow.run(&steps);
    assert_flow(&flow, &steps, &outcomes);
    // The pair ran on the guide's state dir: status --daemon printed a pid.
    let daemon = &outcomes[5].output;
    assert!(
        daemon.trim().parse::<u32>().is_ok(),
        "status --daemon: {daemon:?}"
    );
}

#[test]
fn console_blocks_split_into_commands_heredocs_and_output() {
    let block = ["$ cat >> f <<'EOF'", "a = 1", "EOF", "$ echo hi", "hi"];
    let steps = console_steps(&block);
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].command, "cat >> f <<'EOF'\na = 1\nEOF");
    assert!(steps[0].documented.is_empty());
    assert_eq!(steps[1].documented, ["hi"]);
    assert_eq!(
        Step {
            command: "firma monitor --no-follow".into(),
            documented: vec![]
        }
        .kind(),
        Kind::Once
    );
}
