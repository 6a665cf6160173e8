//! Debounced file-system watching: editors save in several steps (truncate, write, rename), so a
//! burst of events becomes one callback once the directory has been quiet for a moment.

use std::path::PathBuf;
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::error::Hinted;

/// Quiet period after the last event before the callback runs.
pub const DEBOUNCE: Duration = Duration::from_millis(40);
/// Upper bound on the wait while events keep coming.
pub const MAX_DELAY: Duration = Duration::from_millis(200);

/// Keeps the watch alive; dropping it stops watching.
pub struct DirWatch {
    _watcher: RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DirWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watch `dirs` (non-recursively) and call `on_change` with the changed paths after each burst.
/// Must be called inside a tokio runtime.
pub fn watch_dirs(
    dirs: &[PathBuf],
    on_change: impl Fn(&[PathBuf]) + Send + 'static,
) -> Result<DirWatch, Hinted> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !event.kind.is_access()
        {
            let _ = tx.send(event.paths);
        }
    })
    .map_err(|err| {
        Hinted::new(format!("cannot start the file watcher: {err}"))
            .hint("raise fs.inotify.max_user_instances / max_user_watches")
    })?;
    for dir in dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|err| {
                Hinted::new(format!("cannot watch {}: {err}", dir.display()))
                    .hint("check that the directory exists and is readable")
            })?;
    }
    let task = tokio::spawn(async move {
        while let Some(mut paths) = rx.recv().await {
            let started = tokio::time::Instant::now();
            loop {
                let wait = DEBOUNCE.min(MAX_DELAY.saturating_sub(started.elapsed()));
                match tokio::time::timeout(wait, rx.recv()).await {
                    Ok(Some(more)) => paths.extend(more),
                    Ok(None) => return,
                    Err(_) => break,
                }
                if started.elapsed() >= MAX_DELAY {
                    break;
                }
            }
            paths.sort();
            paths.dedup();
            on_change(&paths);
        }
    });
    Ok(DirWatch {
        _watcher: watcher,
        task,
    })
}
