//! Logging for the daemons (`firma authority`, `firma sidecar`): JSON lines (RFC 3339 timestamp,
//! level, target, message, fields) when stderr is not a terminal, so `firma monitor` can filter
//! and render them; human-readable text on a terminal. `FIRMA_LOG` (EnvFilter syntax, default
//! `info`) selects what is logged.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub const LOG_ENV: &str = "FIRMA_LOG";

/// Install the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init_daemon_logging() {
    let filter = EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_timer(tracing_subscriber::fmt::time::ChronoUtc::new(
            "%Y-%m-%dT%H:%M:%S%.6fZ".to_string(),
        ));
    let _ = if std::io::stderr().is_terminal() {
        builder.with_target(false).try_init()
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_ansi(false)
            .try_init()
    };
}
