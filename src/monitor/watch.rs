//! Waiting for a change in the directories the follow loop reads from. On Linux, inotify read
//! on the follow loop's own thread: an append wakes the reader itself, with no hand-off between
//! threads (a second thread to schedule doubled the latency under load). Elsewhere the
//! `notify` crate, whose watcher thread signals a channel.

use std::path::Path;
use std::time::Duration;

/// A watch on some directories (not recursive): creation, change, deletion and renames of
/// their files, and of the directories themselves.
pub struct DirWatch {
    inner: imp::Watch,
}

impl DirWatch {
    /// Watch `dirs` (each must exist). The error says which directory and why.
    pub fn new(dirs: &[&Path]) -> Result<Self, String> {
        Ok(Self {
            inner: imp::Watch::new(dirs)?,
        })
    }

    /// Wait until something happened in a watched directory, or `timeout` passed; events that
    /// arrived meanwhile are consumed. `false`: the watch broke, poll from now on.
    pub fn wait(&mut self, timeout: Duration) -> bool {
        self.inner.wait(timeout)
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use std::os::fd::AsFd;
    use std::path::Path;
    use std::time::Duration;

    use nix::errno::Errno;
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

    pub struct Watch {
        inotify: Inotify,
    }

    impl Watch {
        pub fn new(dirs: &[&Path]) -> Result<Self, String> {
            let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
                .map_err(|err| format!("inotify: {err}"))?;
            // What can change what a tailer reads: appends and truncation (MODIFY), files
            // appearing, going and being renamed, the directory itself going. Not opens,
            // closes or reads, which would wake the loop for nothing.
            let mask = AddWatchFlags::IN_MODIFY
                | AddWatchFlags::IN_CREATE
                | AddWatchFlags::IN_DELETE
                | AddWatchFlags::IN_MOVED_FROM
                | AddWatchFlags::IN_MOVED_TO
                | AddWatchFlags::IN_DELETE_SELF
                | AddWatchFlags::IN_MOVE_SELF;
            for dir in dirs {
                inotify
                    .add_watch(*dir, mask)
                    .map_err(|err| format!("{}: {err}", dir.display()))?;
            }
            Ok(Self { inotify })
        }

        pub fn wait(&mut self, timeout: Duration) -> bool {
            let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return false,
            }
            // Consume what is queued (one read takes up to 4 KiB of events: one look at the
            // files answers all of them; any left over only make the next wait return at once).
            match self.inotify.read_events() {
                Ok(_) | Err(Errno::EAGAIN) | Err(Errno::EINTR) => true,
                Err(_) => false,
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Duration;

    use notify::Watcher;

    pub struct Watch {
        _watcher: notify::RecommendedWatcher,
        rx: mpsc::Receiver<()>,
    }

    impl Watch {
        pub fn new(dirs: &[&Path]) -> Result<Self, String> {
            let (tx, rx) = mpsc::channel();
            let mut watcher =
                notify::recommended_watcher(move |_event: notify::Result<notify::Event>| {
                    let _ = tx.send(());
                })
                .map_err(|err| err.to_string())?;
            for dir in dirs {
                watcher
                    .watch(dir, notify::RecursiveMode::NonRecursive)
                    .map_err(|err| format!("{}: {err}", dir.display()))?;
            }
            Ok(Self {
                _watcher: watcher,
                rx,
            })
        }

        pub fn wait(&mut self, timeout: Duration) -> bool {
            match self.rx.recv_timeout(timeout) {
                Ok(()) => {
                    while self.rx.try_recv().is_ok() {}
                    true
                }
                Err(mpsc::RecvTimeoutError::Timeout) => true,
                Err(mpsc::RecvTimeoutError::Disconnected) => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// An append to a file of a watched directory ends the wait long before its timeout.
    #[test]
    fn an_append_wakes_the_waiter() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let path = other.path().join("audit.jsonl");
        std::fs::write(&path, "").unwrap();
        let mut watch = DirWatch::new(&[dir.path(), other.path()]).unwrap();
        let started = Instant::now();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            file.write_all(b"line\n").unwrap();
        });
        assert!(watch.wait(Duration::from_secs(600)));
        writer.join().unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "woken by the append, not by the timeout"
        );
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("gone");
        let err = DirWatch::new(&[missing.as_path()]).err().unwrap();
        assert!(err.contains("gone"), "{err}");
    }
}
