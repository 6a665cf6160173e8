//! The Sidecar: forward proxy, classification, enforcement pipeline, Cedar, CA.

pub mod mapping;
