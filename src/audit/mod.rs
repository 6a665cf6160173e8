//! The audit log: event type, canonical encoding, signed chained writer, reader, verifier.
//! Format and guarantees: `docs/audit-log.md`.

pub mod canonical;
pub mod chain;
pub mod checkpoint;
pub mod event;
pub mod progress;
pub mod reader;
pub mod record;
pub mod verify;
pub mod writer;
