//! The plugin API: a [`Source`] turns lines of one file (usually in the state dir) into [`Record`]s, a
//! [`Formatter`] writes records. Both register themselves with `inventory::submit!`; the CLI
//! builds its `--source` / `--format` choices from [`sources()`] and [`formatters()`].

use std::path::PathBuf;

use super::record::Record;
use super::summary::Summary;
use crate::state_dir::StateDir;

/// Where records come from: one file, usually in the state directory.
pub trait Source: Sync {
    /// The name used by `--source` and in every output line.
    fn name(&self) -> &'static str;
    /// One line of help for `--source`.
    fn about(&self) -> &'static str;
    /// The file this source reads (ask the state dir: it owns the names).
    fn path(&self, state: &StateDir) -> PathBuf;
    /// Every file of this source, oldest first, the live one ([`Source::path`]) last. A source
    /// whose writer rotates its file lists the rotated ones too, so reading spans them and
    /// following crosses each rotation without skipping a file. Default: the live file only.
    fn files(&self, state: &StateDir) -> Vec<PathBuf> {
        vec![self.path(state)]
    }
    /// Turn one line (without its newline) at byte `offset` into a record. Never fails: a
    /// line that cannot be understood becomes a raw or malformed record.
    fn parse(&self, line: &[u8], offset: u64) -> Record;
    /// Field paths (`decision`, `intent.action_class`, `level`) that filters may judge on this
    /// source's records. A filter on another field ignores this source (its records pass).
    fn filterable_fields(&self) -> &'static [&'static str] {
        &[]
    }
    /// The record in one line for people: a label with a tone and the details that matter.
    /// `None` (the default): formatters show the record's fields as `key=value`.
    fn summary(&self, _record: &Record) -> Option<Summary> {
        None
    }
    /// Records are appended in time order, so `--since` may binary-search the file.
    fn time_ordered(&self) -> bool {
        false
    }
    /// True when `line` is certainly a complete record in canonical JSON (RFC 8785: sorted
    /// keys, no whitespace). For such lines a filter's byte needle is exact, so the engine may
    /// skip lines that lack it without parsing them.
    fn is_canonical(&self, _line: &[u8]) -> bool {
        false
    }
}

/// How records are written.
pub trait Formatter: Sync {
    /// The name used by `--format`.
    fn name(&self) -> &'static str;
    /// One line of help for `--format`.
    fn about(&self) -> &'static str;
    /// Append `record`, read by `source`, to `out` as exactly one line, newline included.
    fn write(&self, record: &Record, source: &dyn Source, ctx: &FormatContext, out: &mut Vec<u8>);
}

/// What a formatter may know about the run.
#[derive(Debug, Clone, Default)]
pub struct FormatContext {
    /// Colour the output (a terminal, or `--color always`; never with `NO_COLOR` on auto).
    pub color: bool,
    /// Width of the longest selected source name, for alignment.
    pub source_width: usize,
}

/// A registered source: `inventory::submit!(SourcePlugin(&MySource));`
pub struct SourcePlugin(pub &'static dyn Source);
inventory::collect!(SourcePlugin);

/// A registered formatter: `inventory::submit!(FormatterPlugin(&MyFormatter));`
pub struct FormatterPlugin(pub &'static dyn Formatter);
inventory::collect!(FormatterPlugin);

/// Every registered source, sorted by name (inventory's order is unspecified).
pub fn sources() -> Vec<&'static dyn Source> {
    let mut all: Vec<_> = inventory::iter::<SourcePlugin>
        .into_iter()
        .map(|p| p.0)
        .collect();
    all.sort_by_key(|s| s.name());
    all.dedup_by_key(|s| s.name());
    all
}

/// Every registered formatter, sorted by name.
pub fn formatters() -> Vec<&'static dyn Formatter> {
    let mut all: Vec<_> = inventory::iter::<FormatterPlugin>
        .into_iter()
        .map(|p| p.0)
        .collect();
    all.sort_by_key(|f| f.name());
    all.dedup_by_key(|f| f.name());
    all
}

/// The registered sources that let filters judge `path` (see [`Source::filterable_fields`]).
pub fn sources_filterable_by(path: &str) -> Vec<&'static dyn Source> {
    sources()
        .into_iter()
        .filter(|s| s.filterable_fields().contains(&path))
        .collect()
}

pub fn find_source(name: &str) -> Option<&'static dyn Source> {
    sources().into_iter().find(|s| s.name() == name)
}

pub fn find_formatter(name: &str) -> Option<&'static dyn Formatter> {
    formatters().into_iter().find(|f| f.name() == name)
}
