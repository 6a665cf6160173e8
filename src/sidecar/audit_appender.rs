//! The pipeline's audit sink: the signed, chained audit writer on a thread of its own.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::pipeline::AuditSink;
use crate::audit::event::AuditDraft;
use crate::audit::writer::AuditWriter;
use crate::error::Hinted;
use crate::metrics::sidecar::metrics;

/// Records decisions with the audit writer on a dedicated thread.
///
/// `AuditWriter::append` signs and writes under the writer's lock; called from the proxy's async
/// workers, a worker waiting for that lock could serve no one else. Here the workers hand the
/// draft over and await the outcome (the call still waits for its record — no decision without
/// one), while the appender thread does the signing and the write(2). Measured against the
/// alternatives (docs/performance.md): signing on the workers under the lock, a combining
/// appender (whichever worker holds the lock writes the queued records too), and writing the
/// queued records in one write(2) were all slower — the thread pipelines with the workers.
pub struct AppenderThread {
    jobs: mpsc::Sender<Job>,
}

type Job = (AuditDraft, oneshot::Sender<Result<(), Hinted>>);

impl AppenderThread {
    pub fn start(writer: AuditWriter) -> Result<Self, Hinted> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("firma-audit".into())
            .spawn(move || {
                for (draft, reply) in queue {
                    let _busy = metrics().audit_dequeued();
                    let _ = reply.send(writer.append(draft).map(|_| ()));
                }
            })
            .map_err(|err| Hinted::new(format!("cannot start the audit thread: {err}")))?;
        Ok(Self { jobs })
    }
}

impl AuditSink for AppenderThread {
    fn submit(&self, draft: AuditDraft) -> oneshot::Receiver<Result<(), Hinted>> {
        let (reply, outcome) = oneshot::channel();
        metrics().audit_queued();
        // If the thread is gone the reply sender is dropped and the caller sees an error.
        let _ = self.jobs.send((draft, reply));
        outcome
    }
}
