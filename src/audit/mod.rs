//! The audit log: event type, canonical encoding, signed chained writer, reader, verifier.

pub mod event;
