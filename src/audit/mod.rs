//! The audit log: event type, canonical encoding, signed chained writer, line splitter, verifier.
//! Format and guarantees: `docs/audit-log.md`.

pub mod canonical;
pub mod chain;
pub mod checkpoint;
pub mod control;
pub mod event;
pub mod event_bytes;
pub mod format1;
pub mod lines;
pub mod place;
pub mod progress;
pub mod record;
pub mod verify;
pub mod writer;
