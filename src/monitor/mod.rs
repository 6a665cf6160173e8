//! `firma monitor`'s engine: the plugin API ([`Source`], [`Formatter`], [`Record`]), the filter
//! predicates, the line reader and follower, and the merge that puts records in time order.
//!
//! The concrete plugins live outside this module (`sources/`, `formatters/` at the top of the
//! repository) and register themselves with `inventory`; nothing here names one of them.

pub mod engine;
pub mod filter;
pub mod json_scan;
pub mod lines;
pub mod logline;
pub mod plugin;
pub mod record;
pub mod seek;
pub mod since;
pub mod start;
pub mod summary;
pub mod tailer;
#[cfg(test)]
mod testing;
pub mod text;
pub mod watch;

pub use engine::{Notice, Plan, run};
pub use filter::{FieldEquals, Filters, Level, LevelAtLeast, Predicate, Since};
pub use plugin::{
    FormatContext, Formatter, FormatterPlugin, Source, SourcePlugin, find_formatter, find_source,
    formatters, sources, sources_filterable_by,
};
pub use record::{Kind, Record};
pub use summary::{Span, Summary, Tone};
