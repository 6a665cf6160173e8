//! The monitor's formatters, one file each; every file registers itself with
//! `inventory::submit!(FormatterPlugin(..))`. Adding a formatter is one new file plus its `mod`
//! line (see docs/monitor.md, "Writing a formatter").

pub mod json;
pub mod pretty;
