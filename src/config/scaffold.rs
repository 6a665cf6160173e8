//! The project scaffold `firma init` (and `firma run`'s implicit init) writes.
//!
//! Everything is validated and rendered in memory first; only then are directories made and
//! files written, each atomically. Bad input therefore leaves nothing behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::action_classes;
use super::dirs::ensure_private_dir;
use super::discovery::{CONFIG_FILE, PROJECT_DIR};
use super::keys;
use super::load::{parse, validate_agent_id};
use super::providers::{self, Provider};
use crate::error::Hinted;
use crate::fsutil::{Durability, write_atomic};
use crate::state_dir::{DataDir, StateDir};

/// Where the project's Authority lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorityChoice {
    Local,
    Remote(String),
}

impl AuthorityChoice {
    /// `local` (or empty) or an `http://` / `https://` URL.
    pub fn parse(text: &str) -> Result<Self, Hinted> {
        let text = text.trim();
        if text.is_empty() || text == "local" {
            return Ok(Self::Local);
        }
        let rest = text
            .strip_prefix("https://")
            .or_else(|| text.strip_prefix("http://"));
        match rest {
            Some(rest)
                if !rest.is_empty()
                    && !rest.starts_with('/')
                    && !rest.contains(char::is_whitespace) =>
            {
                Ok(Self::Remote(text.trim_end_matches('/').to_string()))
            }
            _ => Err(Hinted::new(format!(
                "--authority {text:?} is neither `local` nor an http(s) URL"
            ))
            .hint("use --authority local, or a URL such as https://authority.example:50051")),
        }
    }
}

/// Everything `init` needs, already chosen by flags, prompts or defaults.
#[derive(Debug, Clone)]
pub struct ScaffoldOptions {
    pub workspace: PathBuf,
    pub agent: String,
    pub provider: String,
    pub authority: AuthorityChoice,
    pub authority_listen: SocketAddr,
    pub sidecar_listen: SocketAddr,
    pub state: StateDir,
    pub data: DataDir,
    pub force: bool,
    /// `[sidecar.audit] dir`: a persistent directory for the audit log (`None`: the state dir).
    pub audit_dir: Option<PathBuf>,
}

/// What one file write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOutcome {
    Written,
    Replaced,
    Kept,
}

#[derive(Debug, Clone)]
pub struct ScaffoldReport {
    pub project_dir: PathBuf,
    pub config_path: PathBuf,
    pub state: StateDir,
    pub data: DataDir,
    pub files: Vec<(PathBuf, FileOutcome)>,
    /// Where a previous audit log was moved by `--force`, if it was.
    pub archived_audit: Option<PathBuf>,
}

/// Parse a listen address given on the command line.
pub fn parse_listen(flag: &str, text: &str) -> Result<SocketAddr, Hinted> {
    text.trim().parse::<SocketAddr>().map_err(|_| {
        Hinted::new(format!("{flag} {text:?} is not an IP:PORT address")).hint(format!(
            "use e.g. {flag} 127.0.0.1:8080 (port 0 picks a free port)"
        ))
    })
}

/// Check the inputs that flags and prompts cannot check on their own.
pub fn validate(options: &ScaffoldOptions) -> Result<&'static Provider, Hinted> {
    if let Err(reason) = validate_agent_id(&options.agent) {
        return Err(Hinted::new(format!("--agent {:?} {reason}", options.agent))
            .hint("use letters, digits, '.', '_' or '-' (at most 64), e.g. --agent codex"));
    }
    let provider = providers::find(&options.provider).ok_or_else(|| {
        Hinted::new(format!("unknown --provider {:?}", options.provider))
            .hint(format!("choose one of: {}", providers::names().join(", ")))
    })?;
    check_writable(&options.workspace, "--workspace")?;
    check_writable(options.state.path(), "--state-dir")?;
    check_writable(options.data.path(), "the data directory (XDG_DATA_HOME)")?;
    Ok(provider)
}

/// The nearest existing ancestor must be a writable directory.
fn check_writable(path: &Path, what: &str) -> Result<(), Hinted> {
    let existing = path
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    if !existing.is_dir() {
        return Err(Hinted::new(format!(
            "{what} {}: {} is not a directory",
            path.display(),
            existing.display()
        ))
        .hint("choose a path inside a directory"));
    }
    if nix::unistd::access(
        existing,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .is_err()
    {
        return Err(Hinted::new(format!(
            "{what} {}: {} is not writable",
            path.display(),
            existing.display()
        ))
        .hint("choose a directory you can write to"));
    }
    Ok(())
}

struct PlannedFile {
    path: PathBuf,
    /// `None`: an existing key pair that is kept as it is.
    contents: Option<Vec<u8>>,
    mode: u32,
}

/// Validate, render, then write the project.
pub fn scaffold(options: &ScaffoldOptions) -> Result<ScaffoldReport, Hinted> {
    let provider = validate(options)?;
    let workspace = std::path::absolute(&options.workspace).unwrap_or(options.workspace.clone());
    let project_dir = workspace.join(PROJECT_DIR);
    let config_path = project_dir.join(CONFIG_FILE);

    let config_text = render_config(options, provider);
    // The rendered file must load: a bug here must never produce a config the daemon rejects.
    parse(&config_text, &config_path).map_err(|err| {
        Hinted::new(format!(
            "internal error: generated firma.toml is invalid: {err}"
        ))
    })?;

    let mut plan = vec![
        PlannedFile {
            path: config_path.clone(),
            contents: Some(config_text.into_bytes()),
            mode: 0o644,
        },
        PlannedFile {
            path: project_dir.join("mapping-rules.toml"),
            contents: Some(render_mapping_rules(provider).into_bytes()),
            mode: 0o644,
        },
        PlannedFile {
            path: project_dir.join("policies/schema.cedarschema"),
            contents: Some(action_classes::cedar_schema().into_bytes()),
            mode: 0o644,
        },
        PlannedFile {
            path: project_dir.join("policies/default.cedar"),
            contents: Some(render_runtime_policy(&options.agent, provider).into_bytes()),
            mode: 0o644,
        },
        PlannedFile {
            path: project_dir.join("issuance-policies/issuance.cedar"),
            contents: Some(render_issuance_policy(&options.agent).into_bytes()),
            mode: 0o644,
        },
    ];
    let mut key_files = vec![project_dir.join("audit.key")];
    if options.authority == AuthorityChoice::Local {
        key_files.push(project_dir.join("authority.key"));
    }
    for secret in &key_files {
        let present = secret.exists() && keys::public_path(secret).exists();
        if !present || options.force {
            let key = keys::generate();
            plan.push(PlannedFile {
                path: secret.clone(),
                contents: Some(keys::secret_pem(&key).into_bytes()),
                mode: keys::SECRET_MODE,
            });
            plan.push(PlannedFile {
                path: keys::public_path(secret),
                contents: Some(keys::public_pem(&key.verifying_key()).into_bytes()),
                mode: keys::PUBLIC_MODE,
            });
        } else {
            plan.push(PlannedFile {
                path: secret.clone(),
                contents: None,
                mode: keys::SECRET_MODE,
            });
            plan.push(PlannedFile {
                path: keys::public_path(secret),
                contents: None,
                mode: keys::PUBLIC_MODE,
            });
        }
    }

    // Inputs are valid: from here on, write.
    for dir in [
        &project_dir,
        &project_dir.join("policies"),
        &project_dir.join("issuance-policies"),
        options.state.path(),
        options.data.path(),
    ] {
        ensure_private_dir(dir)?;
    }
    let mut files = Vec::new();
    for file in plan {
        let exists = file.path.exists();
        let Some(contents) = file.contents.filter(|_| !exists || options.force) else {
            files.push((file.path, FileOutcome::Kept));
            continue;
        };
        write_atomic(&file.path, &contents, file.mode, Durability::Durable)?;
        let outcome = if exists {
            FileOutcome::Replaced
        } else {
            FileOutcome::Written
        };
        files.push((file.path, outcome));
    }

    let revocations = options.data.revocations();
    if revocations.exists() {
        files.push((revocations, FileOutcome::Kept));
    } else {
        write_atomic(&revocations, b"", 0o600, Durability::Durable)?;
        files.push((revocations, FileOutcome::Written));
    }

    let audit_key_replaced = files
        .iter()
        .any(|(p, o)| p.ends_with("audit.key") && *o == FileOutcome::Replaced);
    let archived_audit = if audit_key_replaced {
        archive_audit_log(&options.state)?
    } else {
        None
    };
    if let Some(dir) = &options.audit_dir {
        ensure_private_dir(dir)?;
    }
    let audit_log = options.state.audit_log();
    if audit_log.exists() {
        files.push((audit_log, FileOutcome::Kept));
    } else {
        write_atomic(&audit_log, b"", 0o600, Durability::Durable)?;
        files.push((audit_log, FileOutcome::Written));
    }

    Ok(ScaffoldReport {
        project_dir,
        config_path,
        state: options.state.clone(),
        data: options.data.clone(),
        files,
        archived_audit,
    })
}

/// A new audit key cannot continue the old chain: move the old log (and its checkpoint and
/// public key) aside instead of deleting evidence.
fn archive_audit_log(state: &StateDir) -> Result<Option<PathBuf>, Hinted> {
    let log = state.audit_log();
    let non_empty = std::fs::metadata(&log)
        .map(|m| m.len() > 0)
        .unwrap_or(false);
    // A checkpoint signed by the old key blocks the new one even over an empty log.
    if !non_empty && !state.audit_checkpoint().exists() {
        return Ok(None);
    }
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let archive = state.audit_archive(&stamp.to_string());
    ensure_private_dir(&archive)?;
    for from in [log, state.audit_checkpoint()] {
        let name = from.file_name().expect("state-dir files have names");
        if from.exists() {
            std::fs::rename(&from, archive.join(name)).map_err(|err| {
                Hinted::new(format!(
                    "cannot move {} to {}: {err}",
                    from.display(),
                    archive.display()
                ))
            })?;
        }
    }
    Ok(Some(archive))
}

fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_string()).to_string()
}

fn render_config(options: &ScaffoldOptions, provider: &Provider) -> String {
    let (authority_section, sidecar_url) = match &options.authority {
        AuthorityChoice::Local => (
            format!(
                "[authority]\n\
                 # \"local\": `firma sidecar start` boots this Authority. \"remote\": use `url` instead.\n\
                 mode = \"local\"\n\
                 listen = \"{}\"\n\
                 key = \"authority.key\"\n\
                 policies = \"policies\"\n\
                 issuance_policies = \"issuance-policies\"\n\
                 max_ttl = \"1h\"\n\
                 bundle_ttl = \"30s\"\n",
                options.authority_listen
            ),
            format!("http://{}", options.authority_listen),
        ),
        AuthorityChoice::Remote(url) => (
            format!(
                "[authority]\n\
                 # A remote Authority: `firma sidecar start` only checks its health.\n\
                 mode = \"remote\"\n\
                 url = {}\n",
                toml_string(url)
            ),
            url.clone(),
        ),
    };
    format!(
        "# firma project configuration, written by `firma init`. Reference: docs/configuration.md\n\
         # Relative paths resolve against this file's directory. The state directory (pids, logs,\n\
         # audit.jsonl) is never set here: use --state-dir or FIRMA_STATE_DIR.\n\
         \n\
         [project]\n\
         agent = {agent}\n\
         provider = {provider}\n\
         # What `firma run` asks the Authority for, and for how long.\n\
         actions = [\"communication.external.send\", \"communication.internal.send\"]\n\
         token_ttl = \"15m\"\n\
         \n\
         {authority_section}\
         \n\
         [sidecar.proxy]\n\
         listen = \"{sidecar_listen}\"\n\
         # HTTPS hosts decrypted with the generated CA so method and path can be classified.\n\
         intercept_hosts = []\n\
         upstream_timeout = \"30s\"\n\
         \n\
         [sidecar.mapping]\n\
         rules = \"mapping-rules.toml\"\n\
         # What unmapped traffic gets: \"deny\" or \"passthrough\".\n\
         unmapped = \"deny\"\n\
         \n\
         [sidecar.audit]\n\
         key = \"audit.key\"\n\
         # \"always\", \"batched\" (group commit every fsync_interval) or \"never\".\n\
         fsync = \"batched\"\n\
         fsync_interval = \"50ms\"\n\
         {audit_dir}\
         # Rotation (rotate_size, default 256MiB; rotate_interval) and retention (keep,\n\
         # max_total_size) are the Sidecar's own: never rotate audit.jsonl with logrotate.\n\
         \n\
         [sidecar.authority]\n\
         url = {url}\n\
         public_key = \"authority.pub\"\n",
        agent = toml_string(&options.agent),
        provider = toml_string(provider.name),
        sidecar_listen = options.sidecar_listen,
        url = toml_string(&sidecar_url),
        audit_dir = match &options.audit_dir {
            Some(dir) => format!(
                "# Where the audit log lives: a persistent disk (the state dir is wiped at reboot).\n\
                 dir = {}\n",
                toml_string(&dir.display().to_string())
            ),
            None => "# dir = \"/var/lib/firma/audit\"  # the audit log on a persistent disk (default: the\n\
                     # state dir, usually a tmpfs wiped at reboot)\n"
                .to_string(),
        },
    )
}

fn render_mapping_rules(provider: &Provider) -> String {
    let mut out = String::from(
        "# Mapping rules: how the Sidecar turns a request into an action class.\n\
         # method (optional, any when absent), host (glob: `*` matches any run of characters) and\n\
         # path (glob, optional) select a rule; the most specific matching rule wins.\n\
         # Unmatched requests get [sidecar.mapping].unmapped. Format: docs/mapping-rules.md\n",
    );
    let rule = |host: &str, class: &str| {
        format!(
            "\n[[rules]]\nhost = {}\naction_class = \"{class}\"\n",
            toml_string(host)
        )
    };
    if !provider.hosts.is_empty() || !provider.host_globs.is_empty() {
        out.push_str(&format!("\n# {} API\n", provider.name));
    }
    for host in provider.hosts.iter().chain(provider.host_globs) {
        out.push_str(&rule(host, "communication.external.send"));
    }
    out.push_str(
        "\n# Local services: the agent reaches none until you list them, one rule per service\n\
         # with its port(s). firma's own listeners stay unreachable whatever these rules say.\n\
         # [[rules]]\n\
         # host = \"127.0.0.1\"\n\
         # ports = [8080]\n\
         # action_class = \"communication.internal.send\"\n",
    );
    out
}

fn render_runtime_policy(agent: &str, provider: &Provider) -> String {
    let agent = toml_string(agent);
    let mut conditions: Vec<String> = provider
        .hosts
        .iter()
        .map(|h| format!("context.host == \"{h}\""))
        .collect();
    conditions.extend(
        provider
            .host_globs
            .iter()
            .map(|g| format!("context.host like \"{g}\"")),
    );
    let mut out = String::from(
        "// Runtime policy written by `firma init`; the Sidecar evaluates it on every classified call.\n\
         // Cedar denies whatever no policy permits, and a `forbid` always wins over a `permit`.\n\
         // Edits are hot-reloaded by the Authority. Reference: docs/authority.md\n",
    );
    if !conditions.is_empty() {
        out.push_str(&format!(
            "\n@id(\"allow-provider-api\")\n\
             permit (\n  principal == Firma::Agent::{agent},\n  action == Firma::Action::\"communication.external.send\",\n  resource\n)\n\
             when {{ context has host && ({}) }};\n",
            conditions.join(" || ")
        ));
    }
    out.push_str(&format!(
        "\n@id(\"allow-loopback\")\n\
         permit (\n  principal == Firma::Agent::{agent},\n  action == Firma::Action::\"communication.internal.send\",\n  resource\n);\n"
    ));
    out
}

fn render_issuance_policy(agent: &str) -> String {
    format!(
        "// Issuance policy written by `firma init`: which agent may obtain a capability token for\n\
         // which action classes. The Authority checks every requested action against it.\n\
         \n\
         @id(\"agent-may-communicate\")\n\
         permit (\n  principal == Firma::Agent::{},\n  action in [\n    Firma::Action::\"communication.external.send\",\n    Firma::Action::\"communication.internal.send\"\n  ],\n  resource\n);\n",
        toml_string(agent)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar::mapping::MappingTable;

    fn options(dir: &Path, provider: &str) -> ScaffoldOptions {
        ScaffoldOptions {
            workspace: dir.join("ws"),
            agent: "codex".into(),
            provider: provider.into(),
            authority: AuthorityChoice::Local,
            authority_listen: "127.0.0.1:50051".parse().unwrap(),
            sidecar_listen: "127.0.0.1:8080".parse().unwrap(),
            state: StateDir::new(dir.join("state")),
            data: DataDir::new(dir.join("data")),
            force: false,
            audit_dir: None,
        }
    }

    #[test]
    fn generated_policies_validate_against_the_generated_schema() {
        for provider in providers::PROVIDERS {
            let (schema, _) =
                cedar_policy::Schema::from_cedarschema_str(&action_classes::cedar_schema())
                    .unwrap();
            for text in [
                render_runtime_policy("codex", provider),
                render_issuance_policy("codex"),
            ] {
                let set: cedar_policy::PolicySet = text.parse().expect("policy parses");
                let result = cedar_policy::Validator::new(schema.clone())
                    .validate(&set, cedar_policy::ValidationMode::Strict);
                assert!(
                    result.validation_passed(),
                    "{}: {text}\n{result}",
                    provider.name
                );
            }
        }
    }

    #[test]
    fn generated_mapping_rules_name_registered_classes() {
        for provider in providers::PROVIDERS {
            let text = render_mapping_rules(provider);
            let table = MappingTable::parse(&text, Path::new("m.toml")).expect("rules load");
            // No local service is reachable until the operator lists it.
            assert!(table.classify("GET", "127.0.0.1", 80, "/").is_none());
            for host in provider.hosts {
                let rule = table.classify("POST", host, 443, "/v1/x").unwrap();
                assert_eq!(rule.action_class, "communication.external.send");
            }
        }
    }

    #[test]
    fn authority_choice_parsing() {
        assert_eq!(
            AuthorityChoice::parse("local").unwrap(),
            AuthorityChoice::Local
        );
        assert_eq!(
            AuthorityChoice::parse("https://a.example:1/").unwrap(),
            AuthorityChoice::Remote("https://a.example:1".into())
        );
        assert!(AuthorityChoice::parse("ftp://x").is_err());
        assert!(AuthorityChoice::parse("https://").is_err());
    }

    #[test]
    fn remote_config_loads() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = options(dir.path(), "openai");
        opts.authority = AuthorityChoice::Remote("https://auth.example:443".into());
        let text = render_config(&opts, providers::find("openai").unwrap());
        let config = parse(&text, Path::new("f.toml")).unwrap();
        assert_eq!(config.sidecar.authority.url, "https://auth.example:443");
    }

    #[test]
    fn scaffold_then_rescaffold_keeps_files() {
        let dir = tempfile::tempdir().unwrap();
        let opts = options(dir.path(), "anthropic");
        let first = scaffold(&opts).unwrap();
        assert!(first.files.iter().all(|(_, o)| *o == FileOutcome::Written));
        let second = scaffold(&opts).unwrap();
        assert!(second.files.iter().all(|(_, o)| *o == FileOutcome::Kept));
    }
}
