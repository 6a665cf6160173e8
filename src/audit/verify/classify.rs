//! Naming the first problem: from the line where the chain stopped and the evidence gathered
//! after it, decide what happened (modified, deleted, reordered, duplicated, inserted, wrong
//! key, …) and say it in words.

use std::path::PathBuf;

use super::report::{Finding, FindingKind};
use crate::audit::chain::{ChainHead, ChainProblem};
use crate::audit::record::LineProblem;

/// Why the chain stopped at the first bad line, before classification.
#[derive(Debug)]
pub(super) enum Cause {
    Line(LineProblem),
    Chain {
        problem: ChainProblem,
        seq: u64,
        hash: [u8; 32],
    },
    Rewritten {
        seq: u64,
    },
}

#[derive(Debug)]
pub(super) struct FirstProblem {
    pub(super) file: usize,
    pub(super) line: u64,
    pub(super) cause: Cause,
    /// Head of the chain just before the bad line.
    pub(super) head: ChainHead,
    // Evidence gathered after it:
    pub(super) next_continues: Option<bool>,
    pub(super) lines_after: u64,
    pub(super) all_after_bad_signature: bool,
    pub(super) missing_seq_found_later: bool,
    /// A later line's `prev` names the bad line: it belongs to this chain (moved, not foreign).
    pub(super) referenced_later: bool,
}

/// Name the first problem from the evidence gathered after it. `file` is the file it is in,
/// `one_file` whether the log is a single file, and `duplicate_of` the `seq` of an earlier
/// record with the same bytes (for a chain break), if the walker remembers one.
pub(super) fn classify(
    first: FirstProblem,
    file: PathBuf,
    one_file: bool,
    duplicate_of: Option<u64>,
) -> Finding {
    let line = first.line;
    let expected = first.head.seq + 1;
    let at = |kind, seq: Option<u64>, message: String| Finding {
        kind,
        file: file.clone(),
        line: Some(line),
        seq,
        message,
    };
    match first.cause {
        Cause::Line(LineProblem::BadSignature) => {
            if first.all_after_bad_signature && first.lines_after >= 1 {
                at(
                    FindingKind::WrongKey,
                    Some(expected),
                    format!(
                        "no line from line {line} on verifies with this key: the log was \
                         signed (or re-signed) with another key"
                    ),
                )
            } else {
                at(
                    FindingKind::Modified,
                    Some(expected),
                    format!("line {line} was modified: its signature does not verify"),
                )
            }
        }
        Cause::Line(LineProblem::NonCanonical) => at(
            FindingKind::NonCanonical,
            Some(expected),
            format!("line {line} is not in RFC 8785 canonical form: it was edited or re-encoded"),
        ),
        Cause::Line(problem) => at(
            FindingKind::Malformed,
            Some(expected),
            format!("line {line} is not a valid audit record ({problem}): it was edited"),
        ),
        Cause::Rewritten { seq } => at(
            FindingKind::Rewritten,
            Some(seq),
            format!(
                "line {line} (seq {seq}) is not the record the checkpoint names: the log \
                 was replaced or rewritten"
            ),
        ),
        Cause::Chain { problem, seq, .. } => {
            let line_of_seq = |s: u64| {
                // Up to the first problem the chain is intact, so seqs map to lines.
                line.saturating_sub(first.head.seq.saturating_sub(s) + 1)
            };
            if first.next_continues == Some(true) && !(seq > expected && first.referenced_later) {
                match duplicate_of {
                    Some(seq) if one_file => at(
                        FindingKind::Duplicated,
                        Some(seq),
                        format!(
                            "line {line} duplicates line {} (seq {seq})",
                            line_of_seq(seq)
                        ),
                    ),
                    Some(seq) => at(
                        FindingKind::Duplicated,
                        Some(seq),
                        format!("line {line} duplicates the earlier record seq {seq}"),
                    ),
                    None => at(
                        FindingKind::Inserted,
                        Some(seq),
                        format!(
                            "line {line} (seq {seq}) was inserted: it is validly signed but \
                             belongs to another chain; the next line continues from line {}",
                            line.saturating_sub(1)
                        ),
                    ),
                }
            } else if seq > expected {
                if first.missing_seq_found_later {
                    at(
                        FindingKind::Reordered,
                        Some(seq),
                        format!(
                            "line {line} holds seq {seq} where seq {expected} was expected; \
                             seq {expected} appears later: lines were reordered"
                        ),
                    )
                } else if first.head == ChainHead::GENESIS && first.file == 0 && line == 1 {
                    at(
                        FindingKind::Truncated,
                        Some(expected),
                        format!(
                            "the log starts at seq {seq}: records {expected}..={} were cut from \
                             its start (a file or lines deleted), and no retention marker records \
                             their removal",
                            seq - 1
                        ),
                    )
                } else {
                    let missing = if seq - expected == 1 {
                        format!("record seq {expected} is")
                    } else {
                        format!("records seq {expected}..={} are", seq - 1)
                    };
                    at(
                        FindingKind::Deleted,
                        Some(expected),
                        format!("{missing} missing before line {line} (which holds seq {seq})"),
                    )
                }
            } else if seq < expected {
                match duplicate_of {
                    Some(seq) => at(
                        FindingKind::Duplicated,
                        Some(seq),
                        format!("line {line} repeats the earlier record seq {seq}"),
                    ),
                    None => at(
                        FindingKind::Reordered,
                        Some(seq),
                        format!(
                            "line {line} holds seq {seq} after seq {}: lines were reordered \
                             or spliced",
                            first.head.seq
                        ),
                    ),
                }
            } else {
                at(
                    FindingKind::Inserted,
                    Some(seq),
                    format!(
                        "line {line} is validly signed but does not chain from line {} \
                         ({problem}): it comes from another log",
                        line.saturating_sub(1)
                    ),
                )
            }
        }
    }
}
