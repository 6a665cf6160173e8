//! The fixed core of `firma sidecar start | stop | status`: processes and files, never policies.

pub mod notify;
