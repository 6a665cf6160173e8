//! The Authority: the gRPC trust root that signs capability tokens, holds revocations and
//! streams policy bundles to sidecars. `docs/authority.md` describes it for operators.

pub mod certs;
pub mod client;
pub mod inspect;
pub mod issuance;
pub mod policy;
pub mod revocations;
pub mod roles;
pub mod run;
pub mod server;
pub mod service;
pub mod signed;
pub mod socket;
pub mod store;
pub mod streams;
pub mod tls;
pub mod token;
pub mod watch;
pub mod witness;
pub mod witness_check;
