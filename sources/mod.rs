//! The monitor's sources, one file each; every file registers itself with
//! `inventory::submit!(SourcePlugin(..))`. Adding a source is one new file plus its `mod` line.

pub mod audit;
pub mod authority;
pub mod sidecar;
pub mod supervisor;
