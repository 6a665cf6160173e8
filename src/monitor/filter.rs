//! Filters: small predicates, ANDed. Each says which sources it judges (the others pass it), and
//! may offer a byte needle that the engine uses to skip canonical lines without parsing them.

use chrono::{DateTime, Utc};
use memchr::memmem::Finder;

use super::plugin::Source;
use super::record::Record;

pub trait Predicate: Send + Sync {
    /// Whether this predicate judges records of `source`; records of other sources pass it.
    fn applies_to(&self, source: &dyn Source) -> bool;
    /// Whether `record` passes. `time` is the record's own time, or for a line without one the
    /// time of the line before it in the same file.
    fn matches(&self, record: &Record, time: Option<DateTime<Utc>>) -> bool;
    /// Bytes that the canonical encoding of every matching record contains.
    fn needle(&self) -> Option<Vec<u8>> {
        None
    }
    /// The earliest time a matching record can have (lets the engine seek).
    fn earliest(&self) -> Option<DateTime<Utc>> {
        None
    }
}

/// `--decision`, `--action-class`, `--agent`, `--sandbox-id`: exact match of a string field, on
/// sources that declare the field filterable. A record that lacks the field does not match;
/// records the filters do not judge (raw and malformed lines, audit segment markers: see
/// [`Record::filterable`]) pass — they are reported, never hidden.
pub struct FieldEquals {
    pub path: &'static str,
    pub value: String,
}

impl FieldEquals {
    pub fn new(path: &'static str, value: impl Into<String>) -> Self {
        Self {
            path,
            value: value.into(),
        }
    }
}

impl Predicate for FieldEquals {
    fn applies_to(&self, source: &dyn Source) -> bool {
        source.filterable_fields().contains(&self.path)
    }

    fn matches(&self, record: &Record, _time: Option<DateTime<Utc>>) -> bool {
        !record.filterable
            || record.field(self.path).and_then(|v| v.as_str()) == Some(self.value.as_str())
    }

    /// `"<leaf key>":<JSON string>`: in canonical JSON a key and its value are adjacent with no
    /// whitespace, and the leaf keys of filterable fields occur once in a record.
    fn needle(&self) -> Option<Vec<u8>> {
        let leaf = self.path.rsplit('.').next()?;
        let mut needle = serde_json::to_vec(leaf).ok()?;
        needle.push(b':');
        needle.extend(serde_json::to_vec(&self.value).ok()?);
        Some(needle)
    }
}

/// A log level, least severe first (tracing's levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub const ALL: [Level; 5] = [
        Self::Error,
        Self::Warn,
        Self::Info,
        Self::Debug,
        Self::Trace,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }

    /// A level as written in a log line (`WARN`) or on the command line (`warn`).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str().eq_ignore_ascii_case(text))
    }
}

/// `--level`: log records at this level or more severe (`warn` shows WARN and ERROR, as
/// journalctl's `-p` does), on sources that declare `level` filterable. A log record whose
/// level cannot be read does not match; raw lines (a panic message) are not judged: they pass.
pub struct LevelAtLeast(pub Level);

impl LevelAtLeast {
    /// The field the level is read from.
    pub const FIELD: &'static str = "level";
}

impl Predicate for LevelAtLeast {
    fn applies_to(&self, source: &dyn Source) -> bool {
        source.filterable_fields().contains(&Self::FIELD)
    }

    fn matches(&self, record: &Record, _time: Option<DateTime<Utc>>) -> bool {
        !record.filterable
            || record
                .field(Self::FIELD)
                .and_then(|v| v.as_str())
                .and_then(Level::parse)
                .is_some_and(|level| level >= self.0)
    }
}

/// `--since`: records at or after a moment, on every source.
pub struct Since(pub DateTime<Utc>);

impl Predicate for Since {
    fn applies_to(&self, _source: &dyn Source) -> bool {
        true
    }

    fn matches(&self, _record: &Record, time: Option<DateTime<Utc>>) -> bool {
        time.is_some_and(|t| t >= self.0)
    }

    fn earliest(&self) -> Option<DateTime<Utc>> {
        Some(self.0)
    }
}

/// All predicates of a run.
#[derive(Default)]
pub struct Filters {
    predicates: Vec<Box<dyn Predicate>>,
}

impl Filters {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, predicate: impl Predicate + 'static) -> Self {
        self.predicates.push(Box::new(predicate));
        self
    }

    /// The predicates that judge `source`, with their needles prepared.
    pub fn for_source(&self, source: &dyn Source) -> SourceFilters<'_> {
        let mut predicates = Vec::new();
        let mut needles = Vec::new();
        for predicate in self.predicates.iter().filter(|p| p.applies_to(source)) {
            let needle = predicate.needle();
            if let Some(needle) = &needle {
                needles.push(Finder::new(needle).into_owned());
            }
            predicates.push((predicate.as_ref(), needle.is_some()));
        }
        let earliest = predicates.iter().filter_map(|(p, _)| p.earliest()).max();
        SourceFilters {
            predicates,
            needles,
            earliest,
        }
    }
}

/// The filters that apply to one source.
pub struct SourceFilters<'a> {
    /// Each predicate, and whether it has a needle.
    predicates: Vec<(&'a dyn Predicate, bool)>,
    needles: Vec<Finder<'static>>,
    pub earliest: Option<DateTime<Utc>>,
}

impl SourceFilters<'_> {
    /// `needles_proved`: the record's line is canonical and holds every needle, which decides
    /// the predicates that have one (so they need not look at the parsed fields).
    pub fn matches(
        &self,
        record: &Record,
        time: Option<DateTime<Utc>>,
        needles_proved: bool,
    ) -> bool {
        self.predicates
            .iter()
            .all(|(p, has_needle)| (needles_proved && *has_needle) || p.matches(record, time))
    }

    /// True when some needle is absent from `line` (only exact for canonical lines).
    pub fn needle_missing(&self, line: &[u8]) -> bool {
        self.needles.iter().any(|n| n.find(line).is_none())
    }

    pub fn has_needles(&self) -> bool {
        !self.needles.is_empty()
    }
}
