//! `firma demo`: the whole system in one command, on built-in defaults, with no network.
//!
//! In a throwaway directory it scaffolds a project, starts the daemon detached, starts a local
//! upstream, sends allowed, denied and passthrough calls through the Sidecar with a real HTTP
//! client, shows `firma monitor --no-follow`, stops the daemon, runs `firma audit verify` (the
//! final checkpoint then names the last record) and removes what it made. Each step prints the
//! command an operator would type.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Args;
use owo_colors::OwoColorize;

use super::{CommandResult, Outcome, output};
use crate::error::Hinted;
use crate::state_dir::{Role, StateDir};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep the throwaway directory (and print where it is) instead of removing it.
    #[arg(long)]
    pub keep: bool,
}

const AGENT: &str = "demo-agent";

pub fn run(args: DemoArgs) -> CommandResult {
    let root = tempfile::Builder::new()
        .prefix("firma-demo-")
        .tempdir()
        .map_err(|err| Hinted::new(format!("cannot create a temporary directory: {err}")))?;
    let demo = Demo::new(root.path());
    let result = demo.run_steps();
    // Always tear down, also after a failed step.
    demo.stop_daemon();
    if args.keep {
        let kept = root.keep();
        output::info(format!("kept the demo directory {}", kept.display()));
    } else {
        step("clean up", &format!("rm -rf {}", root.path().display()));
    }
    result.map(|()| {
        output::ok("demo finished: every call was decided, recorded, and the record verified");
        Outcome::Success
    })
}

struct Demo {
    root: PathBuf,
    exe: PathBuf,
}

impl Demo {
    fn new(root: &Path) -> Self {
        let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("firma"));
        Self {
            root: root.to_path_buf(),
            exe,
        }
    }

    fn state(&self) -> StateDir {
        StateDir::new(self.root.join("state"))
    }
    fn workspace(&self) -> PathBuf {
        self.root.join("proj")
    }
    fn config(&self) -> PathBuf {
        self.workspace().join(".firma/firma.toml")
    }

    /// `firma <args>` in the demo's own world (its data dir and state dir, nothing of yours).
    fn firma(&self, args: &[&str]) -> Result<std::process::Output, Hinted> {
        Command::new(&self.exe)
            .args(args)
            .env("XDG_DATA_HOME", self.root.join("data"))
            .env("FIRMA_STATE_DIR", self.state().path())
            .env("FIRMA_CONFIG", self.config())
            .env_remove("NOTIFY_SOCKET")
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .output()
            .map_err(|err| Hinted::new(format!("cannot run firma {}: {err}", args.join(" "))))
    }

    /// Run a step, show its output indented, fail on a non-zero exit.
    fn show(&self, args: &[&str], allowed_codes: &[i32]) -> Result<String, Hinted> {
        let out = self.firma(args)?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for line in text.lines() {
            println!("    {line}");
        }
        let code = out.status.code().unwrap_or(-1);
        if !allowed_codes.contains(&code) {
            return Err(
                Hinted::new(format!("`firma {}` exited {code}", args.join(" "))).hint(
                    "rerun with `firma demo --keep` and inspect the logs in the state directory",
                ),
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn run_steps(&self) -> Result<(), Hinted> {
        let state = self.state().path().display().to_string();
        let workspace = self.workspace().display().to_string();

        step(
            "1. scaffold a project",
            &format!(
                "firma init --agent {AGENT} --provider anthropic --workspace {workspace} --yes"
            ),
        );
        self.show(
            &[
                "init",
                "--yes",
                "--agent",
                AGENT,
                "--provider",
                "anthropic",
                "--workspace",
                &workspace,
                "--authority-listen",
                "127.0.0.1:0",
                "--sidecar-listen",
                "127.0.0.1:0",
                "--state-dir",
                &state,
            ],
            &[0],
        )?;
        self.customise()?;

        step(
            "2. start the daemon (Authority + Sidecar) detached",
            &format!("firma sidecar start --detach --state-dir {state}"),
        );
        self.show(
            &["sidecar", "start", "--detach", "--state-dir", &state],
            &[0],
        )?;
        step(
            "   inspect it",
            &format!("firma sidecar status --state-dir {state}"),
        );
        self.show(&["sidecar", "status", "--state-dir", &state], &[0])?;

        step(
            "3. obtain a capability token for the agent",
            &format!(
                "firma token issue --agent {AGENT} --action communication.internal.send --json"
            ),
        );
        let issued = self.show(
            &[
                "token",
                "issue",
                "--agent",
                AGENT,
                "--action",
                "communication.internal.send",
                "--json",
                "--state-dir",
                &state,
            ],
            &[0],
        )?;
        let token = serde_json::from_str::<serde_json::Value>(issued.trim())
            .ok()
            .and_then(|v| v["token"].as_str().map(str::to_string))
            .ok_or_else(|| Hinted::new("`firma token issue --json` printed no token"))?;

        let upstream = Upstream::start("127.0.0.1")?;
        let unmapped = Upstream::start("127.0.0.2")?;
        let sidecar = crate::run::read_listen(&self.state(), Role::Sidecar)
            .ok_or_else(|| Hinted::new("the daemon published no sidecar.listen"))?;
        step(
            "4. send calls through the Sidecar",
            &format!(
                "curl -x http://firma:$TOKEN@{sidecar} http://{}/…",
                upstream.addr
            ),
        );
        let calls = [
            (
                "allowed (loopback → communication.internal.send)",
                format!("http://{}/hello", upstream.addr),
                Some(&token),
            ),
            (
                "denied by policy (forbid \"no-admin\")",
                format!("http://{}/admin/users", upstream.addr),
                Some(&token),
            ),
            (
                "denied: no capability token",
                format!("http://{}/hello", upstream.addr),
                None,
            ),
            (
                "passthrough (no mapping rule for 127.0.0.2)",
                format!("http://{}/public", unmapped.addr),
                Some(&token),
            ),
        ];
        for (label, url, token) in calls {
            let (status, body) = proxy_get(sidecar, &url, token.map(String::as_str))?;
            let verdict = match (output::color_choice().for_stdout(), status < 400) {
                (false, _) => status.to_string(),
                (true, true) => status.green().to_string(),
                (true, false) => status.red().to_string(),
            };
            println!("    {verdict}  GET {url}  — {label}");
            println!(
                "         {}",
                body.trim().chars().take(160).collect::<String>()
            );
        }

        step(
            "5. watch the decisions",
            &format!("firma monitor --state-dir {state} --source audit --no-follow"),
        );
        self.show(
            &[
                "monitor",
                "--state-dir",
                &state,
                "--source",
                "audit",
                "--no-follow",
            ],
            &[0],
        )?;

        // Stopping first: the Sidecar's last act is a checkpoint naming its last record, so the
        // verification below covers the whole log up to its final word.
        step(
            "6. stop the daemon",
            &format!("firma sidecar stop --state-dir {state}"),
        );
        self.show(&["sidecar", "stop", "--state-dir", &state], &[0])?;

        step(
            "7. prove the audit log untampered",
            &format!("firma audit verify --state-dir {state}"),
        );
        self.show(&["audit", "verify", "--state-dir", &state], &[0])?;
        Ok(())
    }

    /// A forbid policy and passthrough for unmapped hosts, so every decision kind shows up.
    fn customise(&self) -> Result<(), Hinted> {
        let project = self.workspace().join(".firma");
        let policy = project.join("policies/demo.cedar");
        std::fs::write(
            &policy,
            "// Added by `firma demo`: nobody reaches admin paths, whatever else permits.\n\
             @id(\"no-admin\")\n\
             forbid (principal, action, resource)\n\
             when { context has path && context.path like \"/admin*\" };\n",
        )
        .map_err(|err| Hinted::new(format!("cannot write {}: {err}", policy.display())))?;
        let config = self.config();
        let text = std::fs::read_to_string(&config)
            .map_err(|err| Hinted::new(format!("cannot read {}: {err}", config.display())))?;
        std::fs::write(
            &config,
            text.replace("unmapped = \"deny\"", "unmapped = \"passthrough\""),
        )
        .map_err(|err| Hinted::new(format!("cannot write {}: {err}", config.display())))?;
        let rules = project.join("mapping-rules.toml");
        let mut text = std::fs::read_to_string(&rules)
            .map_err(|err| Hinted::new(format!("cannot read {}: {err}", rules.display())))?;
        text.push_str(
            "\n# Added by `firma demo`: its local upstream (any port on 127.0.0.1).\n\
             [[rules]]\nhost = \"127.0.0.1\"\naction_class = \"communication.internal.send\"\n",
        );
        std::fs::write(&rules, text)
            .map_err(|err| Hinted::new(format!("cannot write {}: {err}", rules.display())))?;
        println!(
            "    added policies/demo.cedar (forbid /admin*), mapped 127.0.0.1 and set [sidecar.mapping].unmapped = \"passthrough\""
        );
        Ok(())
    }

    fn stop_daemon(&self) {
        let state = self.state();
        if state.lock_file().exists() || state.pid_file(Role::Sidecar).exists() {
            let state = state.path().display().to_string();
            let _ = self.firma(&["sidecar", "stop", "--state-dir", &state]);
        }
    }
}

fn step(title: &str, command: &str) {
    let color = output::color_choice().for_stdout();
    if color {
        println!("\n{}\n  {} {}", title.bold(), "$".dimmed(), command.cyan());
    } else {
        println!("\n{title}\n  $ {command}");
    }
}

/// A tiny HTTP upstream on loopback that answers every request with a short JSON body.
struct Upstream {
    addr: SocketAddr,
}

impl Upstream {
    fn start(ip: &str) -> Result<Self, Hinted> {
        let listener = TcpListener::bind((ip, 0))
            .map_err(|err| Hinted::new(format!("cannot start the demo upstream on {ip}: {err}")))?;
        let addr = listener
            .local_addr()
            .map_err(|err| Hinted::new(err.to_string()))?;
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || serve_one(stream));
            }
        });
        Ok(Self { addr })
    }
}

fn serve_one(stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut line = String::new();
    while reader.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
        line.clear();
    }
    let path = request_line.split_whitespace().nth(1).unwrap_or("/");
    let body = format!(
        "{{\"upstream\":\"reached\",\"path\":{}}}",
        serde_json::Value::from(path)
    );
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = (&stream).write_all(response.as_bytes());
}

/// GET `url` through the proxy at `proxy`, the way `curl -x` does (absolute-form request line).
fn proxy_get(proxy: SocketAddr, url: &str, token: Option<&str>) -> Result<(u16, String), Hinted> {
    let host = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default();
    let mut stream = TcpStream::connect_timeout(&proxy, Duration::from_secs(5))
        .map_err(|err| Hinted::new(format!("cannot reach the sidecar at {proxy}: {err}")))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let auth = token
        .map(|t| format!("Proxy-Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET {url} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: firma-demo\r\n{auth}Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|err| Hinted::new(format!("sending to the sidecar failed: {err}")))?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| Hinted::new(format!("the sidecar sent no HTTP response for {url}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}
