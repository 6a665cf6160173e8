//! Logging for the daemons (`firma authority`, `firma sidecar`, the supervisor): JSON lines
//! (RFC 3339 timestamp, level, target, message, fields) when stderr is not a terminal, so
//! `firma monitor` can filter and render them; human-readable text on a terminal. `FIRMA_LOG`
//! (EnvFilter syntax, default `info`) selects what is logged.

use std::fs::File;
use std::io::IsTerminal;
use std::sync::Mutex;

use tracing_subscriber::fmt::time::ChronoUtc;
use tracing_subscriber::prelude::*;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

pub const LOG_ENV: &str = "FIRMA_LOG";

fn timer() -> ChronoUtc {
    ChronoUtc::new("%Y-%m-%dT%H:%M:%S%.6fZ".to_string())
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_env(LOG_ENV).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// The daemons' JSON line format, written to `writer`.
fn json_layer<W>(writer: W) -> Box<dyn Layer<Registry> + Send + Sync>
where
    W: for<'a> fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_ansi(false)
        .with_timer(timer())
        .with_writer(writer)
        .with_filter(filter())
        .boxed()
}

/// stderr: text on a terminal, JSON lines otherwise.
fn stderr_layer() -> Box<dyn Layer<Registry> + Send + Sync> {
    if std::io::stderr().is_terminal() {
        fmt::layer()
            .with_target(false)
            .with_timer(timer())
            .with_writer(std::io::stderr)
            .with_filter(filter())
            .boxed()
    } else {
        json_layer(std::io::stderr)
    }
}

/// Install the global subscriber. Safe to call more than once (later calls do nothing).
pub fn init_daemon_logging() {
    let _ = tracing_subscriber::registry()
        .with(stderr_layer())
        .try_init();
}

/// The foreground supervisor: as [`init_daemon_logging`], and the same events as JSON lines
/// appended to `log` (`supervisor.log`), so `firma monitor --source supervisor` and `status`'s
/// readers find them whether the supervisor runs detached or in the foreground.
pub fn init_supervisor_logging(log: File) {
    let _ = tracing_subscriber::registry()
        .with(vec![stderr_layer(), json_layer(Mutex::new(log))])
        .try_init();
}
