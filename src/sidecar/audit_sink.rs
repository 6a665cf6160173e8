//! The pipeline's audit sink: each decision is chained, signed and written by the request's own
//! worker.
//!
//! Format 2 of the log chains a record to the hash of the previous record *without* its
//! signature, so the writer's serial work is only `seq`, `prev`, the body's hash and the
//! write(2): the Ed25519 signature — most of a record's cost — is made on the worker that
//! decided the call, both cores signing at once. No thread hand-over: a worker whose record is
//! next in line writes it (and any later ones already signed) itself; one whose record waits for
//! an earlier record still being signed awaits it without blocking. Measured against the
//! dedicated appender thread this replaces: docs/performance.md ("Proxy vs Squid").

use crate::audit::event::DraftRef;
use crate::audit::writer::{AuditWriter, Recorded};
use crate::error::Hinted;
use crate::metrics::sidecar::metrics;

/// Records decisions with the audit writer (see the module comment).
pub struct AuditSink {
    writer: AuditWriter,
}

impl AuditSink {
    pub fn new(writer: AuditWriter) -> Self {
        Self { writer }
    }

    /// Write the record of a decision; resolves once it is written (and fsynced, with
    /// `fsync = always`).
    pub async fn record(&self, draft: &DraftRef<'_>) -> Result<(), Hinted> {
        let recorded = {
            // Busy: chaining, signing and writing (the waiting below is not work).
            let _busy = metrics().audit_busy();
            self.writer.record(draft)?
        };
        let seq = match recorded {
            Recorded::Written { seq } => seq,
            Recorded::Queued { seq, written } => {
                metrics().audit_queued();
                let written = written.await;
                drop(metrics().audit_dequeued());
                written.unwrap_or_else(|_| Err(stopped()))?;
                seq
            }
        };
        if self.writer.syncs_every_record() {
            // fsync = always: the fsync blocks, so not on the worker.
            let writer = self.writer.clone();
            tokio::task::spawn_blocking(move || writer.sync_through(seq))
                .await
                .unwrap_or_else(|_| Err(stopped()))?;
        }
        Ok(())
    }
}

fn stopped() -> Hinted {
    Hinted::new("the audit writer stopped").hint("restart the Sidecar")
}
