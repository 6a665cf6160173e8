//! The Sidecar: forward proxy, classification, enforcement pipeline, Cedar, CA.

pub mod audit_sink;
pub mod authority_link;
pub mod ca;
pub mod cache;
pub mod cedar;
pub mod destination;
pub mod identity;
pub mod mapping;
pub mod pipeline;
pub mod proxy;
pub mod request_threads;
pub mod responses;
pub mod run;
pub mod state;
pub mod target;
pub mod token_cache;
pub mod tunnel;
pub mod upstream;
