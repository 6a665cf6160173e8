//! `mapping-rules.toml`: how a request (method, host, path) becomes an action class.
//!
//! ```toml
//! [[rules]]
//! method = "POST"                 # optional; absent or "*" = any method ("CONNECT" for tunnels)
//! host = "api.example.com"        # required glob; `*` matches any run of characters
//! path = "/v1/messages*"          # optional glob; absent = any path
//! action_class = "communication.external.send"
//! ```
//!
//! The most specific matching rule wins: an exact host beats a host glob, a method beats none,
//! and a path beats none (a longer literal path beats a shorter one). Two rules with the same
//! method, host and path, or a rule naming an unregistered class, are load errors naming the line.

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
    path: Option<String>,
    action_class: String,
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingRule {
    /// Upper-case method, or `None` for any.
    pub method: Option<String>,
    /// Lower-case host glob.
    pub host: String,
    pub path: Option<String>,
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
            if raw.host.trim().is_empty() {
                return Err(Hinted::new(format!("{loc}: host is empty"))
                    .hint("use \"*\" to match every host"));
            }
            let method = raw
                .method
                .map(|m| m.to_ascii_uppercase())
                .filter(|m| m != "*");
            let rule = MappingRule {
                specificity: specificity(method.as_deref(), &raw.host, raw.path.as_deref()),
                method,
                host: raw.host.to_ascii_lowercase(),
                path: raw.path,
                action_class: raw.action_class,
                line: loc.line,
            };
            if let Some(first) = rules
                .iter()
                .find(|r| r.method == rule.method && r.host == rule.host && r.path == rule.path)
            {
                return Err(Hinted::new(format!(
                    "{loc}: duplicate rule (same method, host and path as line {})",
                    first.line
                ))
                .hint("remove one of the two rules"));
            }
            rules.push(rule);
        }
        rules.sort_by_key(|rule| std::cmp::Reverse(rule.specificity));
        Ok(Self { rules })
    }

    /// The most specific rule matching the request. `host` is compared case-insensitively and
    /// without a port.
    pub fn classify(&self, method: &str, host: &str, path: &str) -> Option<&MappingRule> {
        let host = host.to_ascii_lowercase();
        self.rules.iter().find(|rule| {
            rule.method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
                && glob_match(&rule.host, &host)
                && rule.path.as_deref().is_none_or(|p| glob_match(p, path))
        })
    }

    pub fn rules(&self) -> &[MappingRule] {
        &self.rules
    }
}

/// Compared lexicographically: host first (exact beats any glob; a longer literal part beats a
/// shorter one), then path (present, exact, longer literal part), then method.
type Specificity = (bool, usize, bool, bool, usize, bool);

fn specificity(method: Option<&str>, host: &str, path: Option<&str>) -> Specificity {
    let literal = |s: &str| s.chars().filter(|c| *c != '*').count();
    (
        !host.contains('*'),
        literal(host),
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
            t.classify("GET", "API.example.com", "/")
                .unwrap()
                .action_class,
            "code.read"
        );
        assert_eq!(
            t.classify("DELETE", "api.example.com", "/repos/x")
                .unwrap()
                .action_class,
            "code.destructive"
        );
        assert_eq!(
            t.classify("GET", "www.example.com", "/")
                .unwrap()
                .action_class,
            "communication.external.send"
        );
        assert!(t.classify("GET", "other.org", "/").is_none());
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
            |m: &str, h: &str, p: &str| t.classify(m, h, p).map(|r| r.action_class.as_str());
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
