//! The daemon pair in a test world. [`Stack`]: the real `firma authority` and `firma sidecar`
//! started by the test in the foreground on port 0 (readiness over `NOTIFY_SOCKET`), with the
//! operator's client to mint and revoke; the Sidecar's tests run on it. [`DaemonGuard`]: the pair
//! `firma sidecar start --detach` or `firma run` started, stopped again when the test ends.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use firma::proto::authority_client::AuthorityClient;
use firma::proto::{IssueCapabilityRequest, RevokeRequest};
use serde_json::Value;

use super::{ChildGuard, World, audit, notify, stderr};

/// Stops the world's detached pair when dropped ([`World::stop_daemons`]), also when the test
/// fails; a stop that fails is an error of the test (unless it is failing already).
pub struct DaemonGuard<'a>(pub &'a World);

impl Drop for DaemonGuard<'_> {
    fn drop(&mut self) {
        let out = self.0.stop_daemons();
        assert!(
            out.status.success() || std::thread::panicking(),
            "stop failed: {}",
            stderr(&out)
        );
    }
}

/// Generous: bounds hangs on a loaded machine, measures nothing.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub struct Stack {
    pub world: World,
    pub authority_addr: SocketAddr,
    pub proxy: SocketAddr,
    pub authority: ChildGuard,
    pub sidecar: ChildGuard,
    pub runtime: tokio::runtime::Runtime,
}

/// Spawn `firma <args>` with a notify socket and wait for `READY=1`; returns the bound address.
pub fn spawn_ready(
    world: &World,
    args: &[&str],
    env: &[(&str, &str)],
    tag: &str,
) -> (ChildGuard, SocketAddr) {
    let mut cmd = world.cmd();
    cmd.args(args).envs(env.iter().copied());
    notify::spawn_ready(cmd, world.path(), tag, DEADLINE)
}

/// Start the pair with loopback mapped on every port (`LOOPBACK_RULES`) and `edit` applied to
/// firma.toml.
pub fn start_stack(edit: impl FnOnce(&mut String), env: &[(&str, &str)]) -> Stack {
    start_stack_with(
        |world| {
            write_rules(world, LOOPBACK_RULES);
            world.edit_config(|mut config| {
                edit(&mut config);
                config
            });
        },
        env,
    )
}

/// Start the pair after `setup` adjusted the freshly scaffolded project (firma.toml, mapping
/// rules, policies).
pub fn start_stack_with(setup: impl FnOnce(&World), env: &[(&str, &str)]) -> Stack {
    let world = World::new();
    world.init(&[]);
    setup(&world);
    let (authority, authority_addr) = spawn_ready(&world, &["authority"], &[], "authority");
    let (sidecar, proxy) = spawn_sidecar(&world, authority_addr, env, "sidecar");
    Stack {
        world,
        authority_addr,
        proxy,
        authority,
        sidecar,
        runtime: tokio::runtime::Runtime::new().unwrap(),
    }
}

/// `firma sidecar` against the Authority at `authority`; `tag` names its notify socket and log.
pub fn spawn_sidecar(
    world: &World,
    authority: SocketAddr,
    env: &[(&str, &str)],
    tag: &str,
) -> (ChildGuard, SocketAddr) {
    let url = format!("http://{authority}");
    spawn_ready(world, &["sidecar", "--authority-url", &url], env, tag)
}

/// Loopback hosts on any port: what the tests of other features run with (the scaffold itself
/// maps no local service).
pub const LOOPBACK_RULES: &str = "[[rules]]\nhost = \"localhost\"\naction_class = \"communication.internal.send\"\n\n[[rules]]\nhost = \"127.0.0.1\"\naction_class = \"communication.internal.send\"\n\n[[rules]]\nhost = \"::1\"\naction_class = \"communication.internal.send\"\n";

/// Replace the project's mapping rules.
pub fn write_rules(world: &World, rules: &str) {
    std::fs::write(world.project_dir().join("mapping-rules.toml"), rules).unwrap();
}

impl Stack {
    /// The operator's client (mint, revoke): the Authority's operator socket.
    pub fn client(&self) -> AuthorityClient<tonic::transport::Channel> {
        let socket = self.world.state().authority_socket();
        self.runtime
            .block_on(firma::authority::client::connect(
                &format!("unix:{}", socket.display()),
                None,
            ))
            .expect("connect to the authority's operator socket")
    }

    /// Start the Sidecar again (after [`stop`]) against the same Authority: `tag` names its
    /// notify socket and log.
    pub fn restart_sidecar(&mut self, env: &[(&str, &str)], tag: &str) {
        let (sidecar, proxy) = spawn_sidecar(&self.world, self.authority_addr, env, tag);
        self.sidecar = sidecar;
        self.proxy = proxy;
    }

    /// A token for `codex` (session `sess-1`, 10 minutes): (token, token id).
    pub fn issue(&self, actions: &[&str], scope: &str) -> (String, String) {
        self.mint(actions, scope, 600)
    }

    fn mint(&self, actions: &[&str], scope: &str, ttl_seconds: i64) -> (String, String) {
        let mut client = self.client();
        let response = self
            .runtime
            .block_on(client.issue_capability(IssueCapabilityRequest {
                agent_id: "codex".into(),
                actions: actions.iter().map(|a| a.to_string()).collect(),
                resource_scope: scope.into(),
                session_id: "sess-1".into(),
                ttl_seconds,
                sandbox_id: String::new(),
            }))
            .expect("issue")
            .into_inner();
        assert!(response.granted, "{response:?}");
        (response.token, response.token_id)
    }

    /// Sign `claims` with the project's Authority key (tokens the Authority would never issue).
    pub fn sign(&self, claims: &firma::authority::token::CapabilityClaims) -> String {
        let key =
            firma::config::keys::load_signing_key(&self.world.project_dir().join("authority.key"))
                .unwrap();
        let claims = firma::authority::token::CapabilityClaims {
            issuer: firma::authority::token::key_id(&key.verifying_key()),
            ..claims.clone()
        };
        firma::authority::token::sign_token(&key, &claims).unwrap()
    }

    /// A token for `codex` that expires in `ttl_seconds`.
    pub fn short_token(&self, ttl_seconds: i64) -> (String, String) {
        self.mint(&["communication.internal.send"], "*", ttl_seconds)
    }

    pub fn token(&self) -> String {
        self.issue(&["communication.internal.send"], "*").0
    }

    pub fn revoke(&self, token_id: &str) {
        let mut client = self.client();
        self.runtime
            .block_on(client.revoke(RevokeRequest {
                token_id: token_id.into(),
                reason: "test".into(),
                ..Default::default()
            }))
            .expect("revoke");
    }

    /// The decision records of the audit log.
    pub fn audit(&self) -> Vec<Value> {
        audit::decisions(&self.world.state_dir())
    }

    pub fn last_audit(&self) -> Value {
        self.audit().pop().expect("an audit record")
    }

    pub fn proxy_url(&self, token: Option<&str>) -> String {
        match token {
            Some(t) => format!("http://firma:{t}@{}", self.proxy),
            None => format!("http://{}", self.proxy),
        }
    }

    pub fn ca_cert(&self) -> PathBuf {
        self.world.state().ca_cert()
    }
}

/// Kill a daemon (SIGKILL) and reap it (its guard then has nothing left to do).
pub fn stop(child: &mut ChildGuard) {
    let _ = child.child_mut().kill();
    let _ = child.child_mut().wait();
}

/// SIGTERM a daemon and wait for it to exit: its exit status.
pub fn terminate(child: &mut ChildGuard) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    super::wait_for("the daemon to exit", DEADLINE, || {
        child.child_mut().try_wait().unwrap()
    })
}
