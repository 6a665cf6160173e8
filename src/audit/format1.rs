//! Logs in format 1, as firma wrote them before format 2: each record's `prev` is the SHA-256 of
//! the whole previous line (signature included) and its signature is under the tag
//! `firma-audit-v1\n`. The writer only writes format 2; this exists so tests and benchmarks can
//! show that `firma audit verify` still reads what older Sidecars wrote (and that the writer
//! continues such a log).

use std::io::Write;
use std::path::Path;

use ed25519_dalek::SigningKey;

use super::chain::ChainHead;
use super::checkpoint::Checkpoint;
use super::event::{AUDIT_FORMAT_V1, AuditDraft, WriterFields, new_event_id, now_rfc3339};
use super::record::{self, RecordSigner};
use crate::error::Hinted;
use crate::state_dir::AuditFiles;

/// Write `drafts` as a new format-1 log at `path` (replacing the file), then its checkpoint
/// beside it; returns the head.
pub fn write_log(
    path: &Path,
    key: &SigningKey,
    drafts: impl IntoIterator<Item = AuditDraft>,
) -> Result<ChainHead, Hinted> {
    let signer = RecordSigner::new(key);
    let io = |err: std::io::Error| Hinted::new(format!("cannot write {}: {err}", path.display()));
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    let mut head = ChainHead::GENESIS;
    for draft in drafts {
        let event = draft.into_event(WriterFields {
            v: AUDIT_FORMAT_V1,
            seq: head.seq + 1,
            ts: now_rfc3339(),
            event_id: new_event_id(),
            prev: head.hash_hex(),
            sig: None,
        });
        let sealed = record::seal_by(record::to_object(&event), &signer);
        head = ChainHead::advance(event.seq, sealed.chain_hash);
        out.write_all(&sealed.line).map_err(io)?;
        out.write_all(b"\n").map_err(io)?;
    }
    out.flush().map_err(io)?;
    Checkpoint::new(path, head).write(&AuditFiles::of_log(path).checkpoint(), key)?;
    Ok(head)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::event::{Decision, Intent, PolicyRef};

    #[test]
    fn format_1_chains_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let key = SigningKey::from_bytes(&[3; 32]);
        let draft = AuditDraft {
            decision: Decision::Allow,
            reason: "r".into(),
            agent_id: "a".into(),
            session_id: "s".into(),
            token_id: "t".into(),
            sandbox_id: String::new(),
            intent: Intent::default(),
            policy: PolicyRef::default(),
            latency_us: 1,
        };
        let head = write_log(&path, &key, vec![draft.clone(), draft]).unwrap();
        let text = std::fs::read(&path).unwrap();
        let lines: Vec<&[u8]> = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let first = record::check_line(lines[0], &key.verifying_key()).unwrap();
        let second = record::check_line(lines[1], &key.verifying_key()).unwrap();
        assert_eq!((first.version, second.version), (1, 1));
        assert_eq!(
            second.record.prev(),
            hex::encode(record::line_hash(lines[0]))
        );
        assert_eq!(head, ChainHead::advance(2, record::line_hash(lines[1])));
    }
}
