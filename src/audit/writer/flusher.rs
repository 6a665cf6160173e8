//! The flusher thread: periodic fsync (batched policy), checkpoints, the identity check of an
//! idle log, and rotation by size or interval.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::rotate::Trigger;
use super::{CHECKPOINT_EVERY, IDENTITY_CHECK_EVERY, Shared, lock};
use crate::audit::chain::ChainHead;
use crate::config::schema::FsyncPolicy;

/// Until asked to stop.
pub(super) fn run(shared: &Shared, mut checkpointed: ChainHead) {
    let fsync_tick = match shared.options.fsync {
        FsyncPolicy::Batched => shared
            .options
            .fsync_interval
            .clamp(Duration::from_millis(1), CHECKPOINT_EVERY),
        FsyncPolicy::Always | FsyncPolicy::Never => CHECKPOINT_EVERY,
    };
    let tick = fsync_tick.min(IDENTITY_CHECK_EVERY);
    let mut last_checkpoint = Instant::now();
    loop {
        let (stop, checkpoint_due, rotation_due) = {
            let mut flush = lock(&shared.flush);
            if !flush.stop && !flush.checkpoint_due && !flush.rotation_due {
                flush = shared
                    .flush_wakeup
                    .wait_timeout(flush, tick)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            let checkpoint_due = std::mem::take(&mut flush.checkpoint_due);
            let rotation_due = std::mem::take(&mut flush.rotation_due);
            (flush.stop, checkpoint_due, rotation_due)
        };
        let (healthy, interval_due) = {
            let mut state = lock(&shared.state);
            let healthy = state.failed.is_none()
                && (state.closed || shared.check_identity(&mut state).is_ok());
            let interval_due = shared
                .options
                .rotate_interval
                .is_some_and(|every| state.live_records > 0 && state.live_since.elapsed() >= every);
            (healthy, interval_due)
        };
        if !healthy {
            // Nothing more is written; what was written stays as it is for the operator.
            return;
        }
        let written = shared.written.load(Ordering::Acquire);
        if shared.options.fsync == FsyncPolicy::Batched
            && let Err(err) = shared.sync_through(written)
        {
            shared.record_error(err);
            return;
        }
        if !stop && (rotation_due || interval_due) {
            let trigger = if rotation_due {
                Trigger::Size
            } else {
                Trigger::Interval
            };
            if let Err(err) = shared.rotate(trigger) {
                // A rotation that could not start leaves the log as it was; one that failed
                // half-way has failed the writer (and said so).
                tracing::warn!(error = %err, "audit log rotation failed");
                lock(&shared.state).rotation_requested = false;
            }
            checkpointed = *lock(&shared.checkpoint);
        }
        let head = lock(&shared.state).head;
        let checkpoint_now = head != checkpointed
            && (stop || checkpoint_due || last_checkpoint.elapsed() >= CHECKPOINT_EVERY);
        if checkpoint_now {
            // The checkpoint covers only what is durable.
            let result = shared
                .sync_through(head.seq)
                .and_then(|()| shared.write_checkpoint(head));
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
