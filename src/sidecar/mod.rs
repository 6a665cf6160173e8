//! The Sidecar: forward proxy, classification, enforcement pipeline, Cedar, CA.

pub mod adapters;
pub mod authority_link;
pub mod ca;
pub mod cedar;
pub mod identity;
pub mod mapping;
pub mod pipeline;
pub mod proxy;
pub mod responses;
pub mod run;
pub mod state;
pub mod upstream;
