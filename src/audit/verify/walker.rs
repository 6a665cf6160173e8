//! The sequential stage of verification: take checked lines in order, follow the chain, hold
//! the log against its checkpoint, and after the first problem gather the evidence that names it.

use std::path::PathBuf;

use super::VerifyOptions;
use super::classify::{Cause, FirstProblem, classify};
use super::pipeline::{Checked, LineCheck};
use super::report::{
    CheckpointReport, CheckpointStatus, FileSummary, Finding, FindingKind, VerifyReport,
};
use super::start::RetainedStart;
use crate::audit::chain::ChainHead;
use crate::audit::checkpoint::{Checkpoint, CheckpointProblem};
use crate::audit::progress::{Progress, ProgressHook};
use crate::audit::record::{LineProblem, key_fingerprint};

/// Recent line hashes kept to recognise a duplicated line (bounded memory).
const DUPLICATE_WINDOW: usize = 4096;

/// The sequential stage: chain, checkpoint, first problem and its evidence.
pub(super) struct Walker {
    head: ChainHead,
    /// Line number (in the last file read) of the head record.
    head_line: u64,
    expected: Option<(u64, String)>,
    files: Vec<FileSummary>,
    lines: u64,
    verified: u64,
    segments: u64,
    /// Ring of recent (seq, chain hash) for duplicate detection.
    recent: Vec<Option<(u64, [u8; 32])>>,
    /// Format version of the head record (`None` before the first one seen: the walk may start
    /// at any format).
    head_version: Option<u64>,
    torn_candidate: Option<LineCheck>,
    first: Option<FirstProblem>,
    notices: Vec<Finding>,
    checkpoint_matched: bool,
    /// The log starts after records retention deleted; set to `None` once the walk has met the
    /// marker that records the deletion.
    retained: Option<RetainedStart>,
    /// `seq` of the first record present, when retention deleted the ones before it.
    retained_from: Option<u64>,
    progress: Option<ProgressHook>,
    /// Bytes taken so far (line lengths and their newlines), for `progress`.
    bytes: u64,
}

impl Walker {
    pub(super) fn new(
        options: &VerifyOptions,
        checkpoint: Option<&Checkpoint>,
        retained: Option<RetainedStart>,
    ) -> Self {
        let start = match (options.resume, retained) {
            (Some(resume), _) => resume.head,
            (None, Some(retained)) => retained.head,
            (None, None) => ChainHead::GENESIS,
        };
        Self {
            head: start,
            head_line: options.resume.map_or(0, |r| r.line.saturating_sub(1)),
            expected: checkpoint.map(|c| (c.seq, c.head.clone())),
            files: options
                .files
                .iter()
                .map(|path| FileSummary {
                    path: path.clone(),
                    lines: 0,
                    first_seq: None,
                    last_seq: None,
                })
                .collect(),
            lines: 0,
            verified: 0,
            segments: 0,
            recent: vec![None; DUPLICATE_WINDOW],
            head_version: None,
            torn_candidate: None,
            first: None,
            notices: Vec::new(),
            checkpoint_matched: false,
            retained,
            retained_from: None,
            progress: options.progress.clone(),
            bytes: 0,
        }
    }

    pub(super) fn take(&mut self, checks: Vec<LineCheck>) {
        for check in checks {
            self.lines += 1;
            self.bytes += check.len + u64::from(check.terminated);
            let summary = &mut self.files[check.file];
            summary.lines += 1;
            if let Ok(c) = &check.outcome {
                summary.first_seq.get_or_insert(c.seq);
                summary.last_seq = Some(c.seq);
            }
            if self.first.is_some() {
                self.gather(&check);
            } else {
                self.step(check);
            }
        }
        if let Some(progress) = &self.progress {
            progress.report(Progress {
                lines: self.lines,
                bytes: self.bytes,
            });
        }
    }

    fn step(&mut self, check: LineCheck) {
        if let Some(torn) = self.torn_candidate.take() {
            let names_it = matches!(&check.outcome, Ok(Checked { marker_torn: Some(t), seq, prev, .. })
                if t.offset == torn.offset && t.length == torn.len
                    && t.sha256 == hex::encode(torn.hash)
                    && self.head.check(*seq, prev).is_ok()
                    && check.file == torn.file);
            if names_it {
                self.notices.push(Finding {
                    kind: FindingKind::TornLineRecovered,
                    file: self.files[torn.file].path.clone(),
                    line: Some(torn.number),
                    seq: None,
                    message: format!(
                        "line {} is a torn write ({} bytes) left by a crash; the signed segment \
                         marker on line {} names it and continues the chain",
                        torn.number, torn.len, check.number
                    ),
                });
            } else {
                let problem = torn
                    .outcome
                    .as_ref()
                    .err()
                    .cloned()
                    .unwrap_or(LineProblem::NonCanonical);
                self.fail(&torn, Cause::Line(problem));
                self.gather(&check);
                return;
            }
        }
        match &check.outcome {
            Err(LineProblem::Malformed(_) | LineProblem::TooLong(_)) => {
                self.torn_candidate = Some(check);
            }
            Err(problem) => {
                let problem = problem.clone();
                self.fail(&check, Cause::Line(problem));
            }
            Ok(c) => match self.head.check(c.seq, &c.prev) {
                Ok(()) => {
                    if let Some(from) = self.head_version
                        && (c.version < from || (c.version > from && !c.segment))
                    {
                        let cause = Cause::FormatSwitch {
                            from,
                            to: c.version,
                        };
                        self.fail(&check, cause);
                        return;
                    }
                    if let Some((seq, head)) = &self.expected
                        && *seq == c.seq
                    {
                        if *head != hex::encode(c.chain_hash) {
                            self.fail(&check, Cause::Rewritten { seq: c.seq });
                            return;
                        }
                        self.checkpoint_matched = true;
                    }
                    self.head = ChainHead::advance(c.seq, c.chain_hash);
                    self.head_version = Some(c.version);
                    self.head_line = if check.file + 1 == self.files.len() {
                        check.number
                    } else {
                        0
                    };
                    self.recent[(c.seq as usize) % DUPLICATE_WINDOW] = Some((c.seq, c.chain_hash));
                    self.verified += 1;
                    if c.segment {
                        self.segments += 1;
                    }
                    if let Some(retained) = self.retained
                        && retained.marker_seq == c.seq
                        && c.marker_retained.as_ref().is_some_and(|(seq, hash)| {
                            *seq == retained.head.seq && *hash == retained.head.hash_hex()
                        })
                    {
                        self.retained = None;
                        self.retained_from = Some(retained.first_seq);
                        self.notices.push(Finding {
                            kind: FindingKind::Retained,
                            file: self.files[check.file].path.clone(),
                            line: Some(check.number),
                            seq: Some(retained.first_seq),
                            message: format!(
                                "records before seq {} were deleted by retention, as the signed \
                                 marker on this line records; the log is verified from seq {}",
                                retained.first_seq, retained.first_seq
                            ),
                        });
                    }
                }
                Err(problem) => {
                    let cause = Cause::Chain {
                        problem,
                        seq: c.seq,
                        hash: c.chain_hash,
                    };
                    self.fail(&check, cause);
                }
            },
        }
    }

    fn fail(&mut self, check: &LineCheck, cause: Cause) {
        self.first = Some(FirstProblem {
            file: check.file,
            line: check.number,
            cause,
            head: self.head,
            next_continues: None,
            lines_after: 0,
            all_after_bad_signature: true,
            missing_seq_found_later: false,
            referenced_later: false,
        });
    }

    /// Evidence after the first problem.
    fn gather(&mut self, check: &LineCheck) {
        let Some(first) = self.first.as_mut() else {
            return;
        };
        first.lines_after += 1;
        if !matches!(check.outcome, Err(LineProblem::BadSignature)) {
            first.all_after_bad_signature = false;
        }
        if let Ok(c) = &check.outcome {
            if first.next_continues.is_none() {
                first.next_continues = Some(first.head.check(c.seq, &c.prev).is_ok());
            }
            if let Cause::Chain { seq, hash, .. } = first.cause {
                if c.seq > first.head.seq && c.seq < seq {
                    first.missing_seq_found_later = true;
                }
                if !first.referenced_later && c.prev == hex::encode(hash) {
                    first.referenced_later = true;
                }
            }
        } else if first.next_continues.is_none() {
            first.next_continues = Some(false);
        }
    }

    pub(super) fn finish(
        mut self,
        options: &VerifyOptions,
        checkpoint: Option<(PathBuf, Option<Result<Checkpoint, CheckpointProblem>>)>,
    ) -> VerifyReport {
        if let Some(torn) = self.torn_candidate.take() {
            let is_last_line = torn.file + 1 == self.files.len() && !torn.terminated;
            if is_last_line {
                self.notices.push(Finding {
                    kind: FindingKind::TornTail,
                    file: self.files[torn.file].path.clone(),
                    line: Some(torn.number),
                    seq: None,
                    message: format!(
                        "the last line ({} bytes) has no newline and is not a record: a write cut \
                         short by a crash (or still in progress); the writer starts a new segment \
                         after it on its next start",
                        torn.len
                    ),
                });
            } else {
                let problem = torn
                    .outcome
                    .as_ref()
                    .err()
                    .cloned()
                    .unwrap_or(LineProblem::NonCanonical);
                self.fail(&torn, Cause::Line(problem));
            }
        }
        let mut problem = self.first.take().map(|first| self.classify(first));
        if let Some(retained) = self.retained.take()
            && problem.is_none()
        {
            problem = Some(Finding {
                kind: FindingKind::Truncated,
                file: self.files[0].path.clone(),
                line: Some(1),
                seq: Some(1),
                message: format!(
                    "records before seq {} were cut from the start: the retention marker seq {} \
                     that would record their deletion is not part of the verified chain",
                    retained.first_seq, retained.marker_seq
                ),
            });
        }

        let (mut report_checkpoint, finding) = match checkpoint {
            Some((path, found)) => self.judge_checkpoint(path, found, problem.as_ref()),
            None => (
                CheckpointReport {
                    path: None,
                    status: CheckpointStatus::Skipped,
                    seq: None,
                    ts: None,
                },
                None,
            ),
        };
        if problem.is_none() {
            problem = finding;
        }
        if matches!(&problem, Some(p) if p.kind == FindingKind::Rewritten) {
            report_checkpoint.status = CheckpointStatus::Mismatch;
        }
        let fingerprint = key_fingerprint(&options.key);
        if let Some(pin) = &options.pinned_fingerprint
            && *pin != fingerprint
        {
            problem = Some(Finding {
                kind: FindingKind::WrongKey,
                file: self
                    .files
                    .first()
                    .map(|f| f.path.clone())
                    .unwrap_or_default(),
                line: None,
                seq: None,
                message: format!(
                    "verified with key {fingerprint}, but the pinned audit key is {pin}: this \
                     is not the key the log must be signed with"
                ),
            });
        }
        VerifyReport {
            ok: problem.is_none(),
            key_fingerprint: fingerprint,
            pinned_fingerprint: options.pinned_fingerprint.clone(),
            from_seq: options.resume.map(|r| r.head.seq + 1),
            retained_from: self.retained_from,
            files: self.files,
            lines: self.lines,
            verified: self.verified,
            segments: self.segments,
            last_seq: self.head.seq,
            checkpoint: report_checkpoint,
            problem,
            notices: self.notices,
        }
    }

    /// Hold the log against its checkpoint: the status to report and, if the checkpoint shows
    /// something the lines could not (a cut tail, a missing or invalid checkpoint), a finding.
    fn judge_checkpoint(
        &self,
        path: PathBuf,
        found: Option<Result<Checkpoint, CheckpointProblem>>,
        problem: Option<&Finding>,
    ) -> (CheckpointReport, Option<Finding>) {
        let mut report_checkpoint = CheckpointReport {
            path: Some(path.clone()),
            status: CheckpointStatus::Skipped,
            seq: None,
            ts: None,
        };
        let ckpt_finding = |kind, message: String| Finding {
            kind,
            file: path.clone(),
            line: None,
            seq: None,
            message,
        };
        let finding = match found {
            None => {
                report_checkpoint.status = CheckpointStatus::Missing;
                (self.lines > 0).then(|| {
                    ckpt_finding(
                        FindingKind::CheckpointMissing,
                        format!(
                            "checkpoint {} is missing beside a non-empty log, so a truncated \
                             tail cannot be ruled out",
                            path.display()
                        ),
                    )
                })
            }
            Some(Err(why)) => {
                report_checkpoint.status = CheckpointStatus::Invalid;
                Some(ckpt_finding(
                    FindingKind::CheckpointInvalid,
                    format!("checkpoint {}: {why}", path.display()),
                ))
            }
            Some(Ok(point)) => {
                report_checkpoint.seq = Some(point.seq);
                report_checkpoint.ts = Some(point.ts.clone());
                if self.checkpoint_matched || point.seq == 0 {
                    report_checkpoint.status = CheckpointStatus::Ok;
                    None
                } else if problem.is_some() && point.seq > self.head.seq {
                    report_checkpoint.status = CheckpointStatus::Unchecked;
                    None
                } else if matches!(problem, Some(p) if p.kind == FindingKind::Rewritten) {
                    report_checkpoint.status = CheckpointStatus::Mismatch;
                    None
                } else {
                    report_checkpoint.status = CheckpointStatus::Ahead;
                    let last_file = self.files.len().saturating_sub(1);
                    Some(Finding {
                        kind: FindingKind::Truncated,
                        file: self.files[last_file].path.clone(),
                        line: Some(self.head_line + 1),
                        seq: Some(self.head.seq + 1),
                        message: format!(
                            "the log ends at seq {} but checkpoint {} records seq {}: \
                             records {}..={} were cut from the tail",
                            self.head.seq,
                            path.display(),
                            point.seq,
                            self.head.seq + 1,
                            point.seq
                        ),
                    })
                }
            }
        };
        (report_checkpoint, finding)
    }

    /// The first problem, named (the walker knows which file it is in and recent records).
    fn classify(&self, first: FirstProblem) -> Finding {
        let duplicate_of = match first.cause {
            Cause::Chain { seq, hash, .. } => self.recent[(seq as usize) % DUPLICATE_WINDOW]
                .filter(|(s, h)| *s == seq && *h == hash)
                .map(|_| seq),
            _ => None,
        };
        let file = self.files[first.file].path.clone();
        classify(first, file, self.files.len() == 1, duplicate_of)
    }

    /// A problem was found (the rest is evidence gathering).
    pub(super) fn found_problem(&self) -> bool {
        self.first.is_some()
    }
}
