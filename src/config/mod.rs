//! Configuration: the `firma.toml` schema and its discovery, the state and data directories,
//! the project scaffold, key files, and the action-class registry everything shares.

pub mod action_classes;
pub mod dirs;
pub mod discovery;
pub mod keys;
pub mod load;
pub mod providers;
pub mod scaffold;
pub mod schema;

pub use discovery::{ConfigSource, Discovery};
pub use load::LoadedConfig;
pub use schema::FirmaConfig;
