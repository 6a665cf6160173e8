//! Model providers `firma init --provider` knows: the API hosts its default mapping rules and
//! runtime policy allow.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provider {
    pub name: &'static str,
    /// Exact API hosts.
    pub hosts: &'static [&'static str],
    /// Host globs covering the provider's other endpoints.
    pub host_globs: &'static [&'static str],
}

pub const PROVIDERS: &[Provider] = &[
    Provider {
        name: "anthropic",
        hosts: &["api.anthropic.com"],
        host_globs: &["*.anthropic.com"],
    },
    Provider {
        name: "google",
        hosts: &["generativelanguage.googleapis.com"],
        host_globs: &[],
    },
    Provider {
        name: "mistral",
        hosts: &["api.mistral.ai"],
        host_globs: &[],
    },
    Provider {
        name: "openai",
        hosts: &["api.openai.com"],
        host_globs: &["*.openai.com"],
    },
    Provider {
        name: "other",
        hosts: &[],
        host_globs: &[],
    },
];

pub const DEFAULT_PROVIDER: &str = "anthropic";

pub fn find(name: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.name == name)
}

pub fn names() -> Vec<&'static str> {
    PROVIDERS.iter().map(|p| p.name).collect()
}

/// An agent `firma init` suggests and `firma run` knows how to start and confine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agent {
    pub name: &'static str,
    /// The executable `firma run` starts when no command follows `--`.
    pub command: Option<&'static str>,
    /// Directories (`~/` = home) the agent keeps its own state in: writable under the sandbox,
    /// on top of [`SANDBOX_WRITABLE`]; created when missing.
    pub writable: &'static [&'static str],
}

/// The agent registry.
pub const KNOWN_AGENTS: &[Agent] = &[
    Agent {
        name: "claude",
        command: Some("claude"),
        writable: &["~/.claude"],
    },
    Agent {
        name: "codex",
        command: Some("codex"),
        writable: &["~/.codex"],
    },
    Agent {
        name: "generic",
        command: None,
        writable: &[],
    },
];

/// Writable for every agent under the sandbox: the caches of the package managers agents use
/// (pip and most tools use `~/.cache`, npm uses `~/.npm`).
pub const SANDBOX_WRITABLE: &[&str] = &["~/.cache", "~/.npm"];

pub fn find_agent(name: &str) -> Option<&'static Agent> {
    KNOWN_AGENTS.iter().find(|a| a.name == name)
}

pub const DEFAULT_AGENT: &str = "generic";
