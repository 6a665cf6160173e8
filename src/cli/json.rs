//! Every JSON document firma prints for machines, in one place: its name, its schema version
//! (the `"schema"` key every document starts with) and, by naming convention, its JSON Schema
//! file `docs/schemas/<name>.v<N>.schema.json`. The rule for bumping N is in
//! docs/schemas/README.md; tests/schemas.rs validates real outputs against the files.

use serde::Serialize;

use crate::error::Hinted;

/// A JSON document on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// `firma sidecar status --json`.
    SidecarStatus,
    /// `firma audit verify --json`.
    AuditVerify,
    /// `firma audit rotate --json`.
    AuditRotate,
    /// `firma token issue --json`.
    TokenIssue,
    /// `firma token inspect --json`.
    TokenInspect,
    /// `firma doctor --json`.
    Doctor,
    /// `firma config check --json`.
    ConfigCheck,
    /// `firma fleet status --json`.
    FleetStatus,
    /// `firma authority publish --json`.
    AuthorityPublish,
    /// One line of `firma monitor --format json` (written by the `json` formatter plugin).
    MonitorRecord,
}

impl Document {
    pub const ALL: &'static [Document] = &[
        Self::SidecarStatus,
        Self::AuditVerify,
        Self::AuditRotate,
        Self::TokenIssue,
        Self::TokenInspect,
        Self::Doctor,
        Self::ConfigCheck,
        Self::FleetStatus,
        Self::AuthorityPublish,
        Self::MonitorRecord,
    ];

    /// The schema file's stem.
    pub const fn name(self) -> &'static str {
        match self {
            Self::SidecarStatus => "sidecar-status",
            Self::AuditVerify => "audit-verify",
            Self::AuditRotate => "audit-rotate",
            Self::TokenIssue => "token-issue",
            Self::TokenInspect => "token-inspect",
            Self::Doctor => "doctor",
            Self::ConfigCheck => "config-check",
            Self::FleetStatus => "fleet-status",
            Self::AuthorityPublish => "authority-publish",
            Self::MonitorRecord => "monitor-record",
        }
    }

    /// The current version of the document's shape.
    pub const fn schema(self) -> u32 {
        match self {
            Self::SidecarStatus
            | Self::AuditVerify
            | Self::AuditRotate
            | Self::TokenIssue
            | Self::TokenInspect
            | Self::Doctor
            | Self::ConfigCheck
            | Self::FleetStatus
            | Self::AuthorityPublish => 1,
            // The formatter plugin owns its number (it writes its lines byte by byte).
            Self::MonitorRecord => crate::formatters::json::SCHEMA,
        }
    }

    /// `docs/schemas/<name>.v<N>.schema.json`, relative to the repository root.
    pub fn schema_file(self) -> String {
        format!(
            "docs/schemas/{}.v{}.schema.json",
            self.name(),
            self.schema()
        )
    }
}

/// `{"schema": N, …the body's fields}`.
#[derive(Serialize)]
struct Versioned<'a, T: Serialize> {
    schema: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// The document as pretty-printed JSON, `"schema"` first.
pub fn render(document: Document, body: &impl Serialize) -> String {
    serde_json::to_string_pretty(&Versioned {
        schema: document.schema(),
        body,
    })
    .expect("firma's reports are plain data and always serialise")
}

/// Print the document on stdout. A reader that went away (`| head`) is not an error.
pub fn print(document: Document, body: &impl Serialize) -> Result<(), Hinted> {
    use std::io::Write;
    let mut text = render(document, body);
    text.push('\n');
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => Err(Hinted::new(format!(
            "cannot write the {} report to stdout: {err}",
            document.name()
        ))
        .hint("check where stdout goes (a full disk, a closed file)")),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_key_comes_first_and_the_body_is_flattened() {
        #[derive(Serialize)]
        struct Body {
            ok: bool,
        }
        let text = render(Document::Doctor, &Body { ok: true });
        assert_eq!(text, "{\n  \"schema\": 1,\n  \"ok\": true\n}");
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = Document::ALL.iter().map(|d| d.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Document::ALL.len());
    }
}
