//! Reading `firma.toml`: parse, reject unknown keys with file:line:column, resolve relative paths
//! against the file's directory, and check what the types alone cannot.

use std::fmt;
use std::path::{Path, PathBuf};

use super::action_classes;
use super::providers;
use super::schema::{AuthorityMode, FirmaConfig};
use crate::error::Hinted;

/// The project directory inside a workspace, and the config file in it.
pub const PROJECT_DIR: &str = ".firma";
pub const CONFIG_FILE: &str = "firma.toml";

/// What selected the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    Flag,
    Env(&'static str),
    WalkUp,
}

impl ConfigSource {
    /// What the operator can do when the selected file is wrong.
    pub fn fix_hint(&self) -> String {
        match self {
            Self::Flag => "check the --config path".into(),
            Self::Env(name) => format!("check {name}, or unset it to use discovery"),
            Self::WalkUp => "run `firma init` to create it, or pass --config".into(),
        }
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag => f.write_str("--config"),
            Self::Env(name) => f.write_str(name),
            Self::WalkUp => f.write_str("walk-up discovery"),
        }
    }
}

/// A configuration file that was found, read and validated.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// Absolute path of the file.
    pub path: PathBuf,
    /// What selected the file (flag, env var, walk-up).
    pub source: ConfigSource,
    /// The parsed file with every path made absolute.
    pub config: FirmaConfig,
}

impl LoadedConfig {
    /// The `.firma/` directory holding the file.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("/"))
    }

    /// The deployment id (the audience of capability tokens): `[project] deployment`, else the
    /// project's name.
    pub fn deployment(&self) -> String {
        self.config
            .project
            .deployment
            .clone()
            .unwrap_or_else(|| self.project_name())
    }

    /// The project's name: its workspace directory's name (the directory holding `.firma/`), or
    /// the file's own name when it does not live in a `.firma/` directory.
    pub fn project_name(&self) -> String {
        project_name(&self.path)
    }
}

/// See [`LoadedConfig::project_name`].
pub fn project_name(config: &Path) -> String {
    let dir = config.parent().unwrap_or(Path::new("/"));
    let named = if dir.file_name() == Some(std::ffi::OsStr::new(PROJECT_DIR)) {
        dir.parent().and_then(Path::file_name)
    } else {
        config.file_name()
    };
    named.map_or_else(|| "/".into(), |n| n.to_string_lossy().into_owned())
}

/// Where in a file something went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLocation {
    pub path: PathBuf,
    pub line: usize,
    pub column: usize,
}

impl fmt::Display for FileLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Read and validate the file `source` selected.
pub fn load(path: &Path, source: ConfigSource) -> Result<LoadedConfig, Hinted> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let text = std::fs::read_to_string(&path).map_err(|err| {
        Hinted::new(format!(
            "cannot read config {} (selected by {source}): {err}",
            path.display()
        ))
        .hint(source.fix_hint())
    })?;
    let config = parse(&text, &path).map_err(|err| {
        Hinted::new(format!("{err} (config selected by {source})")).hint(err_hint(&err))
    })?;
    let dir = path.parent().unwrap_or(Path::new("/")).to_path_buf();
    let config = resolve_paths(config, &dir);
    Ok(LoadedConfig {
        path,
        source,
        config,
    })
}

fn err_hint(err: &Hinted) -> String {
    err.hint_text()
        .unwrap_or("fix the file, or regenerate it with `firma init --force`")
        .to_string()
}

/// Parse and validate the text of a `firma.toml`; relative paths are left as written.
pub fn parse(text: &str, path: &Path) -> Result<FirmaConfig, Hinted> {
    if let Some(offset) = find_key(text, "state_dir") {
        let (line, column) = line_col(text, offset);
        let at = FileLocation {
            path: path.to_path_buf(),
            line,
            column,
        };
        return Err(
            Hinted::new(format!("{at}: `state_dir` is not a config key")).hint(
                "the state directory is chosen with --state-dir or FIRMA_STATE_DIR; remove the key",
            ),
        );
    }
    let config: FirmaConfig = toml::from_str(text).map_err(|err| {
        let (line, column) = err.span().map_or((1, 1), |span| line_col(text, span.start));
        let at = FileLocation {
            path: path.to_path_buf(),
            line,
            column,
        };
        Hinted::new(format!("{at}: {}", err.message().trim()))
            .hint("see docs/configuration.md for every key and its meaning")
    })?;
    validate(&config, text, path)?;
    Ok(config)
}

/// Byte offset of a `key =` assignment anywhere in the document.
fn find_key(text: &str, key: &str) -> Option<usize> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key) {
            let rest = rest.trim_start();
            let rest = rest.strip_prefix('"').map_or(rest, |r| r.trim_start());
            if rest.starts_with('=') {
                return Some(offset + (line.len() - trimmed.len()));
            }
        }
        offset += line.len();
    }
    None
}

/// Like [`locate`], for a key of one `[table]` (the first `key =` after its header).
fn locate_in(text: &str, path: &Path, table: &str, key: &str) -> FileLocation {
    let header = format!("[{table}]");
    let start = text
        .split_inclusive('\n')
        .scan(0, |offset, line| {
            let at = *offset;
            *offset += line.len();
            Some((at, line))
        })
        .find(|(_, line)| line.trim() == header)
        .map_or(0, |(at, _)| at);
    let (line, column) =
        find_key(&text[start..], key).map_or((1, 1), |offset| line_col(text, start + offset));
    FileLocation {
        path: path.to_path_buf(),
        line,
        column,
    }
}

fn locate(text: &str, path: &Path, key: &str) -> FileLocation {
    let (line, column) = find_key(text, key).map_or((1, 1), |offset| line_col(text, offset));
    FileLocation {
        path: path.to_path_buf(),
        line,
        column,
    }
}

fn validate(config: &FirmaConfig, text: &str, path: &Path) -> Result<(), Hinted> {
    if let Err(reason) = validate_agent_id(&config.project.agent) {
        return Err(Hinted::new(format!(
            "{}: [project].agent {reason}",
            locate(text, path, "agent")
        ))
        .hint("use letters, digits, '.', '_' or '-' (at most 64)"));
    }
    if providers::find(&config.project.provider).is_none() {
        return Err(Hinted::new(format!(
            "{}: unknown [project].provider {:?}",
            locate(text, path, "provider"),
            config.project.provider
        ))
        .hint(format!(
            "known providers: {}",
            providers::names().join(", ")
        )));
    }
    for action in &config.project.actions {
        if !action_classes::is_registered(action) {
            return Err(Hinted::new(format!(
                "{}: [project].actions names unknown action class {action:?}",
                locate(text, path, "actions")
            ))
            .hint("see `docs/configuration.md#action-classes` for the registered classes"));
        }
    }
    let authority = &config.authority;
    match authority.mode {
        AuthorityMode::Local if authority.listen.is_none() => {
            return Err(Hinted::new(format!(
                "{}: [authority] mode = \"local\" needs `listen`",
                locate(text, path, "mode")
            ))
            .hint(format!(
                "add listen = \"{}\"",
                super::schema::DEFAULT_AUTHORITY_LISTEN
            )));
        }
        AuthorityMode::Remote => {
            let url = authority.url.as_deref().unwrap_or_default();
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(Hinted::new(format!(
                    "{}: [authority] mode = \"remote\" needs an http(s) `url`, got {url:?}",
                    locate(text, path, "mode")
                ))
                .hint("e.g. url = \"https://authority.example:50051\""));
            }
        }
        AuthorityMode::Local => {}
    }
    if authority.tls_cert.is_some() != authority.tls_key.is_some() {
        return Err(Hinted::new(format!(
            "{}: [authority] tls_cert and tls_key go together",
            locate(
                text,
                path,
                if authority.tls_cert.is_some() {
                    "tls_cert"
                } else {
                    "tls_key"
                }
            )
        ))
        .hint("set both to serve TLS, or neither for loopback plain text"));
    }
    if authority.client_ca.is_some() && authority.tls_cert.is_none() {
        return Err(Hinted::new(format!(
            "{}: [authority] client_ca needs tls_cert and tls_key",
            locate(text, path, "client_ca")
        ))
        .hint("client certificates are checked in the TLS handshake: configure TLS first"));
    }
    let pairs = [
        ("[authority]", &authority.client_cert, &authority.client_key),
        (
            "[sidecar.authority]",
            &config.sidecar.authority.client_cert,
            &config.sidecar.authority.client_key,
        ),
    ];
    for (section, cert, key) in pairs {
        if cert.is_some() != key.is_some() {
            let missing = if cert.is_some() {
                "client_key"
            } else {
                "client_cert"
            };
            return Err(Hinted::new(format!(
                "{}: {section} client_cert and client_key go together ({missing} is missing)",
                locate(
                    text,
                    path,
                    if cert.is_some() {
                        "client_cert"
                    } else {
                        "client_key"
                    }
                )
            ))
            .hint("`firma authority cert issue` writes a matching pair"));
        }
    }
    if let Some(deployment) = &config.project.deployment
        && let Err(reason) = validate_agent_id(deployment)
    {
        return Err(Hinted::new(format!(
            "{}: [project].deployment {reason}",
            locate(text, path, "deployment")
        ))
        .hint("use letters, digits, '.', '_' or '-' (at most 64)"));
    }
    if config.sidecar.supervise.start_limit_burst == 0 {
        return Err(Hinted::new(format!(
            "{}: [sidecar.supervise].start_limit_burst must be at least 1",
            locate(text, path, "start_limit_burst")
        ))
        .hint("use restart = \"no\" to never restart"));
    }
    for (table, metrics) in [
        ("sidecar.metrics", &config.sidecar.metrics),
        ("authority.metrics", &config.authority.metrics),
    ] {
        if let Some(addr) = metrics.listen
            && !addr.ip().is_loopback()
            && !metrics.allow_remote
        {
            return Err(Hinted::new(format!(
                "{}: [{table}].listen {addr} is not a loopback address",
                locate_in(text, path, table, "listen")
            ))
            .hint(format!(
                "serve metrics on 127.0.0.1 (or [::1]), or set allow_remote = true in [{table}] \
                 to expose the unauthenticated endpoint on purpose"
            )));
        }
    }
    let link = &config.sidecar.authority;
    for (key, url) in
        std::iter::once(("url", &link.url)).chain(link.urls.iter().map(|u| ("urls", u)))
    {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Hinted::new(format!(
                "{}: [sidecar.authority].{key} must be http:// or https://, got {url:?}",
                locate(text, path, key)
            ))
            .hint("e.g. url = \"http://127.0.0.1:50051\""));
        }
    }
    crate::authority::store::validate_config(
        &config.authority.store,
        &locate(text, path, "backend").to_string(),
    )?;
    Ok(())
}

/// What `firma config check` insists on beyond what every command needs to load the file:
/// settings that load but cannot do what they say.
pub fn strict_checks(loaded: &LoadedConfig) -> Result<(), Hinted> {
    let config = &loaded.config;
    let text = std::fs::read_to_string(&loaded.path).unwrap_or_default();
    let path = &loaded.path;
    let authority = &config.authority;
    if authority.mode == AuthorityMode::Local && config.project.token_ttl > authority.max_ttl {
        return Err(Hinted::new(format!(
            "{}: [project].token_ttl ({}) is longer than [authority].max_ttl ({})",
            locate(&text, path, "token_ttl"),
            humantime::format_duration(config.project.token_ttl),
            humantime::format_duration(authority.max_ttl)
        ))
        .hint("the Authority clamps every token `firma run` asks for to max_ttl: lower token_ttl or raise max_ttl"));
    }
    Ok(())
}

/// Agent ids end up in Cedar entity ids, tokens and file names: keep them plain.
pub fn validate_agent_id(agent: &str) -> Result<(), &'static str> {
    if agent.is_empty() {
        return Err("is empty");
    }
    if agent.len() > 64 {
        return Err("is longer than 64 characters");
    }
    if !agent
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("contains characters other than letters, digits, '.', '_' and '-'");
    }
    Ok(())
}

fn resolve_paths(mut config: FirmaConfig, dir: &Path) -> FirmaConfig {
    let abs = |p: &mut PathBuf| {
        if p.is_relative() {
            *p = dir.join(&*p);
        }
    };
    let authority = &mut config.authority;
    abs(&mut authority.key);
    abs(&mut authority.policies);
    abs(&mut authority.issuance_policies);
    abs(&mut authority.witness_keys);
    authority.tls_cert.iter_mut().for_each(abs);
    authority.tls_key.iter_mut().for_each(abs);
    for path in [
        &mut authority.client_ca,
        &mut authority.client_ca_key,
        &mut authority.client_cert,
        &mut authority.client_key,
    ] {
        path.iter_mut().for_each(abs);
    }
    for path in [
        &mut authority.store.ca_cert,
        &mut authority.store.client_cert,
        &mut authority.store.client_key,
    ] {
        path.iter_mut().for_each(abs);
    }
    let sidecar = &mut config.sidecar;
    abs(&mut sidecar.mapping.rules);
    abs(&mut sidecar.audit.key);
    sidecar.audit.dir.iter_mut().for_each(abs);
    abs(&mut sidecar.authority.public_key);
    for path in [
        &mut sidecar.authority.ca_cert,
        &mut sidecar.authority.client_cert,
        &mut sidecar.authority.client_key,
    ] {
        path.iter_mut().for_each(abs);
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[project]\nagent = \"codex\"\nprovider = \"anthropic\"\n\n[authority]\nmode = \"local\"\nlisten = \"127.0.0.1:0\"\n";

    #[test]
    fn minimal_file_gets_defaults() {
        let config = parse(MINIMAL, Path::new("f.toml")).unwrap();
        assert_eq!(config.sidecar.proxy.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.authority.max_ttl.as_secs(), 3600);
    }

    #[test]
    fn unknown_key_names_line_column_and_valid_keys() {
        let text = format!("{MINIMAL}lisen = \"x\"\n");
        let err = parse(&text, Path::new("/p/firma.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/p/firma.toml:8:1: unknown field `lisen`"),
            "{err}"
        );
        assert!(err.contains("`listen`"), "{err}");
    }

    #[test]
    fn state_dir_key_is_rejected_with_hint() {
        let text = format!("{MINIMAL}state_dir = \"/tmp\"\n");
        let err = parse(&text, Path::new("f.toml")).unwrap_err();
        assert!(
            err.to_string()
                .contains("f.toml:8:1: `state_dir` is not a config key")
        );
        assert!(err.hint_text().unwrap().contains("FIRMA_STATE_DIR"));
    }

    #[test]
    fn bad_listen_address_names_position() {
        let text = MINIMAL.replace("127.0.0.1:0", "127.0.0.1:99999");
        let err = parse(&text, Path::new("f.toml")).unwrap_err().to_string();
        assert!(err.starts_with("f.toml:7:10:"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let config = resolve_paths(
            parse(MINIMAL, Path::new("f")).unwrap(),
            Path::new("/w/.firma"),
        );
        assert_eq!(config.authority.key, Path::new("/w/.firma/authority.key"));
        assert_eq!(
            config.sidecar.mapping.rules,
            Path::new("/w/.firma/mapping-rules.toml")
        );
    }

    #[test]
    fn a_token_ttl_beyond_max_ttl_names_the_key() {
        let text = MINIMAL.replace(
            "provider = \"anthropic\"\n",
            "provider = \"anthropic\"\ntoken_ttl = \"2h\"\n",
        );
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f.toml");
        std::fs::write(&file, &text).unwrap();
        let loaded = load(&file, ConfigSource::Flag).unwrap();
        let err = strict_checks(&loaded).unwrap_err();
        let expected = format!(
            "{}:4:1: [project].token_ttl (2h) is longer than [authority].max_ttl (1h)",
            file.display()
        );
        assert!(err.message().starts_with(&expected), "{err}");
    }

    #[test]
    fn supervise_defaults_and_keys() {
        use crate::config::schema::RestartPolicy;
        let config = parse(MINIMAL, Path::new("f")).unwrap();
        assert_eq!(config.sidecar.supervise.restart, RestartPolicy::No);
        let text = format!(
            "{MINIMAL}\n[sidecar.supervise]\nrestart = \"on-failure\"\nrestart_sec = \"100ms\"\nstart_limit_burst = 2\n"
        );
        let config = parse(&text, Path::new("f")).unwrap();
        assert_eq!(config.sidecar.supervise.restart, RestartPolicy::OnFailure);
        assert_eq!(config.sidecar.supervise.start_limit_burst, 2);
        let bad = text.replace("on-failure", "always");
        assert!(
            parse(&bad, Path::new("f"))
                .unwrap_err()
                .message()
                .contains("always")
        );
    }

    #[test]
    fn line_col_counts_from_one() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("", 0), (1, 1));
    }
}
