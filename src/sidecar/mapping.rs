//! `mapping-rules.toml`: how a request (method, host, path) becomes an action class.
//!
//! ```toml
//! [[rules]]
//! method = "POST"                 # optional; absent or "*" = any method ("CONNECT" for tunnels)
//! host = "api.example.com"        # required glob; `*` matches any run of characters;
//!                                 # `host:port` (`[v6]:port`) names one port
//! ports = [443]                   # optional; absent = any port
//! path = "/v1/messages*"          # optional glob; absent = any path
//! deny_private = true             # optional; default true unless host is an IP or `localhost`
//! action_class = "communication.external.send"
//! ```
//!
//! The most specific matching rule wins: an exact host beats a host glob, ports beat none, a
//! path beats none (a longer literal path beats a shorter one), a method beats none. Two rules
//! with the same method, host, ports and path, or a rule naming an unregistered class, are load
//! errors naming the line.

use std::path::Path;

use serde::Deserialize;

use crate::config::action_classes;
use crate::config::load::{FileLocation, line_col};
use crate::error::Hinted;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rules: Vec<toml::Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    method: Option<String>,
    host: String,
    ports: Option<Vec<u16>>,
    path: Option<String>,
    deny_private: Option<bool>,
    action_class: String,
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRule {
    /// Upper-case method, or `None` for any.
    pub method: Option<String>,
    /// Lower-case host glob (IPv6 without brackets).
    pub host: String,
    /// Ports the rule applies to, sorted; `None` for any.
    pub ports: Option<Vec<u16>>,
    pub path: Option<String>,
    /// Refuse a host *name* that resolves to a loopback, link-local or private address.
    pub deny_private: bool,
    pub action_class: String,
    /// 1-based line of the rule in its file.
    pub line: usize,
    specificity: Specificity,
}

/// Rules sorted most specific first.
#[derive(Debug, Clone, Default)]
pub struct MappingTable {
    rules: Vec<MappingRule>,
}

impl MappingTable {
    /// Read and validate a rules file.
    pub fn load(path: &Path) -> Result<Self, Hinted> {
        let text = std::fs::read_to_string(path).map_err(|err| {
            Hinted::new(format!(
                "cannot read mapping rules {}: {err}",
                path.display()
            ))
            .hint("check [sidecar.mapping].rules in firma.toml, or run `firma init`")
        })?;
        Self::parse(&text, path)
    }

    /// Validate the text of a rules file; `path` is used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Hinted> {
        let at = |offset: usize| {
            let (line, column) = line_col(text, offset);
            FileLocation {
                path: path.to_path_buf(),
                line,
                column,
            }
        };
        let raw: RawFile = toml::from_str(text).map_err(|err| {
            let loc = at(err.span().map_or(0, |s| s.start));
            Hinted::new(format!("{loc}: {}", err.message().trim()))
                .hint("see docs/mapping-rules.md for the format")
        })?;
        let mut rules: Vec<MappingRule> = Vec::with_capacity(raw.rules.len());
        for spanned in raw.rules {
            let loc = at(spanned.span().start);
            let raw = spanned.into_inner();
            if !action_classes::is_registered(&raw.action_class) {
                return Err(Hinted::new(format!(
                    "{loc}: unknown action class {:?}",
                    raw.action_class
                ))
                .hint("use a registered class; see docs/configuration.md#action-classes"));
            }
            let (host, ports) = host_and_ports(&raw.host, raw.ports)
                .map_err(|why| Hinted::new(format!("{loc}: {why}")).hint(PORT_HINT))?;
            let method = raw
                .method
                .map(|m| m.to_ascii_uppercase())
                .filter(|m| m != "*");
            let rule = MappingRule {
                specificity: specificity(
                    method.as_deref(),
                    &host,
                    ports.is_some(),
                    raw.path.as_deref(),
                ),
                method,
                deny_private: raw.deny_private.unwrap_or_else(|| !names_an_address(&host)),
                host,
                ports,
                path: raw.path,
                action_class: raw.action_class,
                line: loc.line,
            };
            if let Some(first) = rules.iter().find(|r| {
                r.method == rule.method
                    && r.host == rule.host
                    && r.ports == rule.ports
                    && r.path == rule.path
            }) {
                return Err(Hinted::new(format!(
                    "{loc}: duplicate rule (same method, host, ports and path as line {})",
                    first.line
                ))
                .hint("remove one of the two rules"));
            }
            rules.push(rule);
        }
        rules.sort_by_key(|rule| std::cmp::Reverse(rule.specificity));
        Ok(Self { rules })
    }

    /// The most specific rule matching the request; `host` and `path` are canonical
    /// (`target.rs`).
    pub fn classify(
        &self,
        method: &str,
        host: &str,
        port: u16,
        path: &str,
    ) -> Option<&MappingRule> {
        self.rules.iter().find(|rule| {
            rule.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && glob_match(&rule.host, host)
                && rule
                    .ports
                    .as_ref()
                    .is_none_or(|ports| ports.contains(&port))
                && rule.path.as_deref().is_none_or(|p| glob_match(p, path))
        })
    }

    pub fn rules(&self) -> &[MappingRule] {
        &self.rules
    }
}

const PORT_HINT: &str =
    "write host = \"name\" with ports = [N, ...], or host = \"name:N\" ([v6]:N for IPv6)";

/// The host glob and ports of a rule: `host:port` / `[v6]:port`, or `ports = [...]`, not both.
fn host_and_ports(
    raw: &str,
    ports: Option<Vec<u16>>,
) -> Result<(String, Option<Vec<u16>>), String> {
    let raw = raw.trim().to_ascii_lowercase();
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("host {raw:?}: unbalanced '['"));
        };
        match after.strip_prefix(':') {
            Some(port) => (host.to_string(), Some(port)),
            None if after.is_empty() => (host.to_string(), None),
            None => return Err(format!("host {raw:?}: unexpected text after ']'")),
        }
    } else {
        match raw.split_once(':') {
            // Two or more colons: an IPv6 address without brackets (and without a port).
            Some((_, rest)) if rest.contains(':') => (raw.clone(), None),
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (raw.clone(), None),
        }
    };
    if host.is_empty() {
        return Err("host is empty (use \"*\" to match every host)".into());
    }
    let host = host.trim_end_matches('.').to_string();
    let host = match host.parse::<std::net::Ipv6Addr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => host,
    };
    let ports = match (port, ports) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "host {raw:?} names a port and the rule has `ports` too"
            ));
        }
        (Some(port), None) => match port.parse::<u16>() {
            Ok(port) if port != 0 => Some(vec![port]),
            _ => return Err(format!("host {raw:?}: {port:?} is not a port (1-65535)")),
        },
        (None, Some(ports)) if ports.is_empty() || ports.contains(&0) => {
            return Err("ports must list ports 1-65535".into());
        }
        (None, ports) => ports.map(|mut ports| {
            ports.sort_unstable();
            ports.dedup();
            ports
        }),
    };
    Ok((host, ports))
}

/// Whether a rule's host names an address itself (an IP literal or `localhost`): such a rule
/// reaches private addresses by design, so `deny_private` defaults to false for it.
fn names_an_address(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok()
}

/// Compared lexicographically: host first (exact beats any glob; a longer literal part beats a
/// shorter one), then ports (named beat any), then path (present, exact, longer literal part),
/// then method.
type Specificity = (bool, usize, bool, bool, bool, usize, bool);

fn specificity(method: Option<&str>, host: &str, ports: bool, path: Option<&str>) -> Specificity {
    let literal = |s: &str| s.chars().filter(|c| *c != '*').count();
    (
        !host.contains('*'),
        literal(host),
        ports,
        path.is_some(),
        path.is_some_and(|p| !p.contains('*')),
        path.map_or(0, literal),
        method.is_some(),
    )
}

/// `*` matches any run of characters (including none); everything else matches itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(index) => rest = &rest[index + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> MappingTable {
        MappingTable::parse(text, Path::new("m.toml")).unwrap()
    }

    #[test]
    fn glob_semantics() {
        assert!(glob_match("*", ""));
        assert!(glob_match("*.example.com", "api.example.com"));
        assert!(!glob_match("*.example.com", "example.com"));
        assert!(glob_match("/v1/*", "/v1/messages"));
        assert!(glob_match("a*b*c", "aXbYc"));
        assert!(!glob_match("a*b*c", "aXcYb"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(!glob_match("ab*ba", "aba"));
    }

    #[test]
    fn most_specific_rule_wins() {
        let t = table(
            r#"
[[rules]]
host = "*.example.com"
action_class = "communication.external.send"

[[rules]]
host = "api.example.com"
action_class = "code.read"

[[rules]]
method = "delete"
host = "api.example.com"
path = "/repos/*"
action_class = "code.destructive"
"#,
        );
        assert_eq!(
            t.classify("GET", "api.example.com", 443, "/")
                .unwrap()
                .action_class,
            "code.read"
        );
        assert_eq!(
            t.classify("DELETE", "api.example.com", 443, "/repos/x")
                .unwrap()
                .action_class,
            "code.destructive"
        );
        assert_eq!(
            t.classify("GET", "www.example.com", 443, "/")
                .unwrap()
                .action_class,
            "communication.external.send"
        );
        assert!(t.classify("GET", "other.org", 443, "/").is_none());
    }

    #[test]
    fn exact_host_beats_a_detailed_glob_and_longer_globs_win() {
        let t = table(
            r#"
[[rules]]
method = "POST"
host = "*.example.com"
path = "/v1/messages"
action_class = "communication.external.send"

[[rules]]
host = "api.example.com"
action_class = "code.read"

[[rules]]
host = "*.eu.example.com"
action_class = "code.write"

[[rules]]
host = "*"
path = "/*"
action_class = "filesystem.read"
"#,
        );
        let class =
            |m: &str, h: &str, p: &str| t.classify(m, h, 443, p).map(|r| r.action_class.as_str());
        assert_eq!(
            class("POST", "api.example.com", "/v1/messages"),
            Some("code.read")
        );
        assert_eq!(
            class("POST", "x.example.com", "/v1/messages"),
            Some("communication.external.send")
        );
        assert_eq!(class("GET", "a.eu.example.com", "/"), Some("code.write"));
        assert_eq!(class("GET", "other.org", "/x"), Some("filesystem.read"));
        // A tunnel has an empty path: rules with a path never match it.
        assert_eq!(class("CONNECT", "other.org", ""), None);
        assert_eq!(class("CONNECT", "api.example.com", ""), Some("code.read"));
    }

    #[test]
    fn ports_are_part_of_the_match() {
        let t = table(
            r#"
[[rules]]
host = "127.0.0.1"
ports = [8080, 8081]
action_class = "communication.internal.send"

[[rules]]
host = "127.0.0.1:9000"
action_class = "code.read"

[[rules]]
host = "[::1]:9000"
action_class = "code.write"

[[rules]]
host = "*.example.com"
action_class = "communication.external.send"

[[rules]]
host = "*.example.com:8443"
action_class = "code.read"
"#,
        );
        let class = |h: &str, port: u16| {
            t.classify("GET", h, port, "/")
                .map(|r| r.action_class.as_str())
        };
        assert_eq!(
            class("127.0.0.1", 8080),
            Some("communication.internal.send")
        );
        assert_eq!(
            class("127.0.0.1", 8081),
            Some("communication.internal.send")
        );
        assert_eq!(class("127.0.0.1", 9000), Some("code.read"));
        assert_eq!(class("127.0.0.1", 22), None);
        assert_eq!(class("::1", 9000), Some("code.write"));
        assert_eq!(class("::1", 8080), None);
        assert_eq!(
            class("a.example.com", 443),
            Some("communication.external.send")
        );
        assert_eq!(class("a.example.com", 8443), Some("code.read"));
        // deny_private: on for names, off for addresses and localhost, unless set.
        let private = |h: &str, port: u16| t.classify("GET", h, port, "/").unwrap().deny_private;
        assert!(!private("127.0.0.1", 8080));
        assert!(private("a.example.com", 443));
        let t = table(
            "[[rules]]\nhost = \"db.internal\"\ndeny_private = false\naction_class = \"code.read\"\n\n[[rules]]\nhost = \"localhost\"\naction_class = \"code.read\"\n",
        );
        assert!(
            !t.classify("GET", "db.internal", 80, "/")
                .unwrap()
                .deny_private
        );
        assert!(
            !t.classify("GET", "localhost", 80, "/")
                .unwrap()
                .deny_private
        );
    }

    #[test]
    fn bad_ports_name_the_line() {
        for (text, needle) in [
            ("host = \"a:0\"", "not a port"),
            ("host = \"a:x\"", "not a port"),
            ("host = \"a:80\"\nports = [81]", "ports` too"),
            ("host = \"a\"\nports = []", "ports must list"),
            ("host = \"[::1\"", "unbalanced"),
            ("host = \"\"", "host is empty"),
        ] {
            let rule = format!("\n[[rules]]\n{text}\naction_class = \"code.read\"\n");
            let err = MappingTable::parse(&rule, Path::new("m.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("m.toml:2:1: "), "{err}");
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn unknown_class_and_duplicates_name_the_line() {
        let err = MappingTable::parse(
            "[[rules]]\nhost = \"a\"\naction_class = \"nope.nope\"\n",
            Path::new("m.toml"),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("m.toml:1:1: unknown action class"),
            "{err}"
        );
        let dup = "[[rules]]\nhost = \"a\"\naction_class = \"code.read\"\n\n[[rules]]\nhost = \"a\"\naction_class = \"code.write\"\n";
        let err = MappingTable::parse(dup, Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("m.toml:5:1: duplicate rule"), "{err}");
        assert!(err.contains("line 1"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn star_matches_everything(text in ".*") {
            proptest::prop_assert!(glob_match("*", &text));
        }

        #[test]
        fn literal_pattern_matches_only_itself(a in "[a-z./]{0,12}", b in "[a-z./]{0,12}") {
            proptest::prop_assert_eq!(glob_match(&a, &b), a == b);
        }

        #[test]
        fn prefix_star_matches_any_suffix(prefix in "[a-z.]{0,8}", suffix in "[a-z./]{0,8}") {
            let pattern = format!("{prefix}*");
            let text = format!("{prefix}{suffix}");
            proptest::prop_assert!(glob_match(&pattern, &text));
        }
    }
}
