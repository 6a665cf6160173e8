//! How far a long audit-log read has come, told to whoever watches (the CLI draws a progress
//! bar from it); the library itself never draws.

use std::fmt;
use std::sync::Arc;

/// Lines and bytes read so far, in order (everything before them has been judged).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub lines: u64,
    pub bytes: u64,
}

/// A callback for [`Progress`], called from the thread that walks the log (after each chunk, so
/// rarely enough to cost nothing).
#[derive(Clone)]
pub struct ProgressHook(Arc<dyn Fn(Progress) + Send + Sync>);

impl ProgressHook {
    pub fn new(report: impl Fn(Progress) + Send + Sync + 'static) -> Self {
        Self(Arc::new(report))
    }

    pub fn report(&self, progress: Progress) {
        (self.0)(progress);
    }
}

impl fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressHook")
    }
}
