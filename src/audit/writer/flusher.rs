//! The flusher thread: periodic fsync (batched policy) and checkpoints.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{CHECKPOINT_EVERY, Shared, lock};
use crate::audit::chain::ChainHead;
use crate::audit::checkpoint::Checkpoint;
use crate::config::schema::FsyncPolicy;

/// Periodic fsync (batched policy) and checkpoints, until asked to stop.
pub(super) fn run(shared: &Shared, mut checkpointed: ChainHead) {
    let tick = match shared.options.fsync {
        FsyncPolicy::Batched => shared
            .options
            .fsync_interval
            .clamp(Duration::from_millis(1), CHECKPOINT_EVERY),
        FsyncPolicy::Always | FsyncPolicy::Never => CHECKPOINT_EVERY,
    };
    let mut last_checkpoint = Instant::now();
    loop {
        let (stop, due) = {
            let mut flush = lock(&shared.flush);
            if !flush.stop && !flush.checkpoint_due {
                flush = shared
                    .flush_wakeup
                    .wait_timeout(flush, tick)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let due = std::mem::take(&mut flush.checkpoint_due);
            (flush.stop, due)
        };
        let written = shared.written.load(Ordering::Acquire);
        if shared.options.fsync == FsyncPolicy::Batched
            && let Err(err) = shared.sync_through(written)
        {
            shared.record_error(err);
            return;
        }
        let head = lock(&shared.state).head;
        let checkpoint_now =
            head != checkpointed && (stop || due || last_checkpoint.elapsed() >= CHECKPOINT_EVERY);
        if checkpoint_now {
            // The checkpoint covers only what is durable.
            let result = shared.sync_through(head.seq).and_then(|()| {
                Checkpoint::new(&shared.path, head).write(&shared.checkpoint_path, &shared.key)
            });
            if let Err(err) = result {
                shared.record_error(err);
                return;
            }
            {
                let mut state = lock(&shared.state);
                state.checkpointed_seq = head.seq;
                state.checkpoint_requested = false;
            }
            checkpointed = head;
            last_checkpoint = Instant::now();
        }
        if stop {
            if let Err(err) = shared.sync_through(written) {
                shared.record_error(err);
            }
            return;
        }
    }
}
