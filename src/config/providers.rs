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

/// Agents `firma init` suggests, with the executable `firma run` starts by default.
pub const KNOWN_AGENTS: &[(&str, Option<&str>)] = &[
    ("claude", Some("claude")),
    ("codex", Some("codex")),
    ("generic", None),
];

pub const DEFAULT_AGENT: &str = "generic";
