//! The audit log: event type, canonical encoding, signed chained writer, reader, verifier.
//! Format and guarantees: `docs/audit-log.md`.

pub mod canonical;
pub mod chain;
pub mod checkpoint;
pub mod event;
pub mod reader;
pub mod record;
pub mod verify;
pub mod writer;

/// File name of the log in the state dir.
pub const LOG_FILE: &str = "audit.jsonl";
/// File name of the signed checkpoint beside it.
pub const CHECKPOINT_FILE: &str = "audit.checkpoint";
