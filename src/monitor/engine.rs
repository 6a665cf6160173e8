//! The run: open each selected source, backfill (records merged in timestamp order), then —
//! when following — read what arrives, in arrival order, flushing every record.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::filter::{Filters, SourceFilters};
use super::lines::{Item, MAX_LINE};
use super::plugin::{FormatContext, Formatter, Source};
use super::record::{Kind, Record};
use super::start;
use super::tailer::{Change, Tail};
use super::watch::DirWatch;
use crate::state_dir::StateDir;

/// How often files are checked when no watcher is possible.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How often files are checked anyway while a watcher runs (late writes to rotated files,
/// events a watcher may miss).
pub const BACKSTOP_INTERVAL: Duration = Duration::from_millis(1000);

/// What to run.
pub struct Plan {
    pub state: StateDir,
    /// Selected sources (order breaks timestamp ties).
    pub sources: Vec<&'static dyn Source>,
    pub filters: Filters,
    pub formatter: &'static dyn Formatter,
    /// `-n`: show only the last this many matching records of what is already there (None:
    /// all of them; `Some(0)`: none — following then shows only what comes).
    pub last: Option<usize>,
    pub follow: bool,
    pub color: bool,
    /// Follow with a filesystem watcher (false: poll, e.g. on network filesystems where
    /// watchers stay silent).
    pub watch: bool,
}

/// Things worth a line on stderr; the CLI decides how to print them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// One-shot run: the file does not exist, so the source shows nothing.
    Missing(PathBuf),
    /// Following: waiting for the file (or the state directory) to appear.
    Waiting(PathBuf),
    /// A file we waited for appeared.
    Appeared(PathBuf),
    /// The file shrank below what was read (or was rewritten): reading restarts at its start.
    Truncated(PathBuf),
    /// The path now names another file (rotation or re-creation): following the new one.
    Replaced(PathBuf),
    /// No filesystem watcher could be set up; checking for changes by polling.
    Polling { dir: PathBuf, reason: String },
    /// One-shot run: the file ends in an unterminated line, not shown.
    Incomplete { path: PathBuf, bytes: usize },
}

impl Notice {
    /// Whether something may be lost or degraded (a warning), rather than the normal course
    /// of things — a file not there yet, a rotation — which is information.
    pub fn is_warning(&self) -> bool {
        match self {
            Self::Truncated(_) | Self::Polling { .. } => true,
            Self::Missing(_)
            | Self::Waiting(_)
            | Self::Appeared(_)
            | Self::Replaced(_)
            | Self::Incomplete { .. } => false,
        }
    }
}

/// Run `plan`, writing records to `out`. Returns at the end of the backfill when not following;
/// otherwise runs until writing fails (a closed pipe is the caller's normal end).
pub fn run(plan: &Plan, out: &mut dyn Write, notice: &mut dyn FnMut(Notice)) -> io::Result<()> {
    let ctx = FormatContext {
        color: plan.color,
        source_width: plan
            .sources
            .iter()
            .map(|s| s.name().len())
            .max()
            .unwrap_or(0),
    };
    let mut out = Output::new(out, plan.formatter, ctx);
    let mut lanes: Vec<Lane<'_>> = plan
        .sources
        .iter()
        .map(|&source| Lane::new(source, &plan.filters, &plan.state))
        .collect();

    for lane in &mut lanes {
        let files = start::plan(
            lane.judge.source,
            &plan.state,
            &lane.judge.filters,
            plan.last,
        )?;
        let opened = !files.is_empty();
        lane.tail.start(files)?;
        let path = lane.tail.path().to_path_buf();
        if plan.follow && !path.exists() {
            notice(Notice::Waiting(path));
        } else if !opened {
            notice(Notice::Missing(path));
        }
    }

    backfill(&mut lanes, plan.last, &mut out)?;
    out.flush()?;
    if !plan.follow {
        for lane in &lanes {
            if !lane.tail.pending().is_empty() {
                notice(Notice::Incomplete {
                    path: lane.tail.path().to_path_buf(),
                    bytes: lane.tail.pending().len(),
                });
            }
        }
        return Ok(());
    }
    out.flush_each = true;
    for lane in &mut lanes {
        lane.judge.live = true;
    }
    follow(plan, &mut lanes, &mut out, notice)
}

/// Merge the sources by record time until each reaches its end; with `last`, write only the
/// last that many (reading started far enough back for them: see `start`).
fn backfill(
    lanes: &mut [Lane<'_>],
    last: Option<usize>,
    out: &mut Output<'_, '_>,
) -> io::Result<()> {
    let mut kept: VecDeque<(usize, Record)> = VecDeque::new();
    let mut heads = Vec::with_capacity(lanes.len());
    for lane in lanes.iter_mut() {
        heads.push(lane.next_emit()?);
    }
    loop {
        let mut best: Option<usize> = None;
        for (i, head) in heads.iter().enumerate() {
            if let Some((time, _)) = head {
                let better = match best.and_then(|b| heads[b].as_ref()) {
                    None => true,
                    Some((best_time, _)) => time < best_time,
                };
                if better {
                    best = Some(i);
                }
            }
        }
        let Some(i) = best else { break };
        if let Some((_, record)) = heads[i].take() {
            match last {
                // With `-n 0` reading started at the end: whatever is read now was written
                // since (or completes a line in progress), so it is shown.
                None | Some(0) => out.write(lanes[i].judge.source, &record)?,
                Some(n) => {
                    if kept.len() == n {
                        kept.pop_front();
                    }
                    kept.push_back((i, record));
                }
            }
        }
        heads[i] = lanes[i].next_emit()?;
    }
    for (i, record) in kept {
        out.write(lanes[i].judge.source, &record)?;
    }
    Ok(())
}

fn follow(
    plan: &Plan,
    lanes: &mut [Lane<'_>],
    out: &mut Output<'_, '_>,
    notice: &mut dyn FnMut(Notice),
) -> io::Result<()> {
    // The state dir and every other directory a source's files live in (the audit log may be
    // placed elsewhere, `[sidecar.audit] dir`): a watch on the state dir alone would see its
    // appends only at the backstop.
    let dirs = watched_dirs(plan, lanes);
    // None: not set up yet; Some(None): polling; Some(Some(w)): watching `dirs` as they were
    // (`watched_ids`).
    let mut watcher: Option<Option<DirWatch>> = None;
    let mut watched_ids = Vec::new();
    let mut announced_dir = false;
    loop {
        let ids: Vec<Option<(u64, u64)>> = dirs.iter().map(|dir| dir_identity(dir)).collect();
        // A directory removed and created again (or one that appeared) needs a new watch.
        if matches!(watcher, Some(Some(_))) && ids != watched_ids {
            watcher = None;
        }
        if watcher.is_none() {
            if ids[0].is_some() {
                let existing: Vec<&Path> = dirs
                    .iter()
                    .zip(&ids)
                    .filter(|(_, id)| id.is_some())
                    .map(|(dir, _)| dir.as_path())
                    .collect();
                let watched = if plan.watch {
                    DirWatch::new(&existing)
                } else {
                    Err("watching is turned off".to_string())
                };
                match watched {
                    Ok(w) => {
                        watcher = Some(Some(w));
                        watched_ids = ids;
                    }
                    Err(reason) => {
                        notice(Notice::Polling {
                            dir: plan.state.path().to_path_buf(),
                            reason,
                        });
                        watcher = Some(None);
                    }
                }
            } else if !announced_dir {
                announced_dir = true;
                notice(Notice::Waiting(plan.state.path().to_path_buf()));
            }
        }
        for lane in lanes.iter_mut() {
            lane.poll(out, notice)?;
        }
        match &mut watcher {
            Some(Some(watch)) => {
                if !watch.wait(BACKSTOP_INTERVAL) {
                    watcher = Some(None);
                }
            }
            _ => std::thread::sleep(POLL_INTERVAL),
        }
    }
}

/// The state dir first, then each other directory holding a selected source's live file.
fn watched_dirs(plan: &Plan, lanes: &[Lane<'_>]) -> Vec<PathBuf> {
    let mut dirs = vec![plan.state.path().to_path_buf()];
    for lane in lanes {
        if let Some(dir) = lane.tail.path().parent()
            && !dirs.iter().any(|known| known == dir)
        {
            dirs.push(dir.to_path_buf());
        }
    }
    dirs
}

fn dir_identity(dir: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// Records written in large writes of whole lines (one-shot runs), or each on its own, flushed
/// at once (following).
struct Output<'w, 'o> {
    out: &'w mut dyn Write,
    formatter: &'o dyn Formatter,
    ctx: FormatContext,
    /// Formatted records not yet written: whole lines only.
    buf: Vec<u8>,
    flush_each: bool,
}

/// How much output is gathered before one write.
const OUTPUT_BUFFER: usize = 256 << 10;

impl<'w, 'o> Output<'w, 'o> {
    fn new(out: &'w mut dyn Write, formatter: &'o dyn Formatter, ctx: FormatContext) -> Self {
        Self {
            out,
            formatter,
            ctx,
            buf: Vec::with_capacity(OUTPUT_BUFFER + (16 << 10)),
            flush_each: false,
        }
    }

    /// One record, formatted straight into the buffer; written at once when following.
    fn write(&mut self, source: &dyn Source, record: &Record) -> io::Result<()> {
        self.formatter
            .write(record, source, &self.ctx, &mut self.buf);
        if self.flush_each || self.buf.len() >= OUTPUT_BUFFER {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        self.out.flush()
    }
}

/// Decides, line by line, what a source's lines become and whether they pass the filters.
struct Judge<'p> {
    source: &'static dyn Source,
    filters: SourceFilters<'p>,
    /// Time of the last line with one (a line without a time takes it).
    last_time: Option<DateTime<Utc>>,
    /// A line skipped by a needle after `last_time` (file serial, offset): its time is read
    /// only if needed.
    last_skipped: Option<(u64, u64)>,
    /// Following live: a line without a time is as new as its arrival.
    live: bool,
}

impl Judge<'_> {
    /// `None` when a needle rules the line out without parsing it; else the record, and
    /// whether its line is canonical and holds every needle.
    fn classify(&mut self, item: Item<'_>, serial: u64) -> Option<(Record, bool)> {
        match item {
            Item::Line { offset, bytes } => {
                if !self.filters.has_needles() {
                    return Some((self.source.parse(bytes, offset), false));
                }
                let missing = self.filters.needle_missing(bytes);
                let canonical = self.source.is_canonical(bytes);
                if missing && canonical {
                    self.last_skipped = Some((serial, offset));
                    return None;
                }
                Some((self.source.parse(bytes, offset), canonical && !missing))
            }
            Item::Oversized { offset, len, head } => {
                let reason = format!(
                    "line of {len} bytes is longer than the {} MiB limit; its first {} bytes are shown",
                    MAX_LINE >> 20,
                    head.len()
                );
                let record = Record::new(
                    self.source.name(),
                    offset,
                    Kind::Malformed { reason },
                    &head,
                );
                Some((record, false))
            }
        }
    }

    fn finish(
        &mut self,
        (record, needles_proved): (Record, bool),
        skipped_line: Option<&[u8]>,
    ) -> Option<(Option<DateTime<Utc>>, Record)> {
        let time = match record.time {
            Some(time) => {
                self.last_skipped = None;
                self.last_time = Some(time);
                Some(time)
            }
            None => {
                if let Some((_, offset)) = self.last_skipped.take()
                    && let Some(line) = skipped_line
                    && let Some(time) = self.source.parse(line, offset).time
                {
                    self.last_time = Some(time);
                }
                if self.live {
                    Some(self.last_time.map_or_else(Utc::now, |t| t.max(Utc::now())))
                } else {
                    self.last_time
                }
            }
        };
        self.filters
            .matches(&record, time, needles_proved)
            .then_some((time, record))
    }
}

struct Lane<'p> {
    judge: Judge<'p>,
    tail: Tail,
}

impl<'p> Lane<'p> {
    fn new(source: &'static dyn Source, filters: &'p Filters, state: &StateDir) -> Self {
        Self {
            judge: Judge {
                source,
                filters: filters.for_source(source),
                last_time: None,
                last_skipped: None,
                live: false,
            },
            tail: Tail::new(source.path(state), {
                let state = state.clone();
                Box::new(move || source.files(&state))
            }),
        }
    }

    /// The next record that passes the filters, or `None` at the end of the current file.
    fn next_emit(&mut self) -> io::Result<Option<(Option<DateTime<Utc>>, Record)>> {
        loop {
            let record = {
                let Some((serial, item)) = self.tail.next_line()? else {
                    return Ok(None);
                };
                match self.judge.classify(item, serial) {
                    Some(record) => record,
                    None => continue,
                }
            };
            let skipped = match (self.judge.last_skipped, record.0.time) {
                (Some((serial, offset)), None) => self.tail.read_line_at(serial, offset)?,
                _ => None,
            };
            if let Some(emit) = self.judge.finish(record, skipped.as_deref()) {
                return Ok(Some(emit));
            }
        }
    }

    /// Following: late lines of rotated files, then truncation, the current file, and a
    /// replacement of the path.
    fn poll(&mut self, out: &mut Output<'_, '_>, notice: &mut dyn FnMut(Notice)) -> io::Result<()> {
        let path = self.tail.path().to_path_buf();
        if !self.tail.is_open() {
            if self.tail.check_identity()?.is_some() {
                notice(Notice::Appeared(path.clone()));
            } else {
                return Ok(());
            }
        }
        let judge = &mut self.judge;
        let mut failed = Ok(());
        self.tail.drain_retired(&mut |item| {
            if failed.is_err() {
                return;
            }
            if let Some(record) = judge.classify(item, 0)
                && let Some((_, record)) = judge.finish(record, None)
            {
                failed = out.write(judge.source, &record);
            }
        })?;
        failed?;
        if self.tail.check_truncation()? == Some(Change::Truncated) {
            notice(Notice::Truncated(path.clone()));
        }
        while let Some((_, record)) = self.next_emit()? {
            out.write(self.judge.source, &record)?;
        }
        if let Some(change) = self.tail.check_identity()? {
            notice(match change {
                Change::Appeared => Notice::Appeared(path),
                _ => Notice::Replaced(path),
            });
            while let Some((_, record)) = self.next_emit()? {
                out.write(self.judge.source, &record)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Model-based: random sequences of appends, split writes, rotations (with late writes to
    //! the rotated file), copytruncate, truncate-and-rewrite and delete-and-recreate, polled
    //! at random moments through the real `Lane::poll`; the output must be every line written,
    //! once, in order.

    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::monitor::testing::RawOut;

    struct Lines;

    impl Source for Lines {
        fn name(&self) -> &'static str {
            "lines"
        }
        fn about(&self) -> &'static str {
            "test"
        }
        fn path(&self, state: &crate::state_dir::StateDir) -> std::path::PathBuf {
            state.path().join("f.log")
        }
        fn parse(&self, line: &[u8], offset: u64) -> Record {
            Record::new("lines", offset, Kind::Raw, line)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(usize),
        SplitAppend,
        Rotate { late: bool },
        CopyTruncate,
        TruncateRewrite,
        Recreate,
        Poll,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1usize..4).prop_map(Op::Append),
            1 => Just(Op::SplitAppend),
            1 => any::<bool>().prop_map(|late| Op::Rotate { late }),
            1 => Just(Op::CopyTruncate),
            1 => Just(Op::TruncateRewrite),
            1 => Just(Op::Recreate),
            3 => Just(Op::Poll),
        ]
    }

    fn append(path: &Path, bytes: &[u8]) {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        file.write_all(bytes).unwrap();
    }

    /// The audit log placed outside the state dir (`[sidecar.audit] dir`) is watched too, so
    /// its appends are seen at once rather than at the backstop.
    #[test]
    fn following_watches_every_directory_a_source_lives_in() {
        let dir = tempfile::tempdir().unwrap();
        let placed = tempfile::tempdir().unwrap();
        let plan = Plan {
            state: StateDir::new(dir.path()).with_audit_dir(Some(placed.path().into())),
            sources: vec![&crate::sources::audit::AuditSource, &Lines],
            filters: Filters::new(),
            formatter: &RawOut,
            last: None,
            follow: true,
            color: false,
            watch: true,
        };
        let lanes: Vec<Lane<'_>> = plan
            .sources
            .iter()
            .map(|&source| Lane::new(source, &plan.filters, &plan.state))
            .collect();
        assert_eq!(
            watched_dirs(&plan, &lanes),
            [dir.path().to_path_buf(), placed.path().to_path_buf()]
        );
        let plan = Plan {
            state: StateDir::new(dir.path()),
            ..plan
        };
        let lanes: Vec<Lane<'_>> = plan
            .sources
            .iter()
            .map(|&source| Lane::new(source, &plan.filters, &plan.state))
            .collect();
        assert_eq!(watched_dirs(&plan, &lanes), [dir.path().to_path_buf()]);
    }

    /// `-n 0`: reading starts at the line in progress; a line completed (or appended) between
    /// positioning and the first read is new, and shown.
    #[test]
    fn from_the_end_a_line_completed_before_the_first_read_is_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.log");
        fs::write(&path, "old\nin pro").unwrap();
        let state = StateDir::new(dir.path());
        let filters = Filters::new();
        let mut lane = Lane::new(&Lines, &filters, &state);
        let files = start::plan(&Lines, &state, &filters.for_source(&Lines), Some(0)).unwrap();
        lane.tail.start(files).unwrap();
        append(&path, b"gress\nnew\n");
        let mut sink: Vec<u8> = Vec::new();
        let mut out = Output::new(&mut sink, &RawOut, FormatContext::default());
        backfill(std::slice::from_mut(&mut lane), Some(0), &mut out).unwrap();
        out.flush().unwrap();
        assert_eq!(String::from_utf8(sink).unwrap(), "in progress\nnew\n");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn every_line_once_in_order(ops in proptest::collection::vec(op(), 1..25)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f.log");
            fs::write(&path, "").unwrap();
            let filters = Filters::new();
            let mut lane = Lane::new(&Lines, &filters, &StateDir::new(dir.path()));
            lane.tail.start(vec![(fs::File::open(&path).unwrap(), 0)]).unwrap();
            let mut sink: Vec<u8> = Vec::new();
            let mut written = Vec::new();
            let mut next = 0;
            let mut rotated = 0;
            let mut line = |written: &mut Vec<String>| {
                next += 1;
                let text = format!("line {next:04} {}", "x".repeat(next % 7 * 40));
                written.push(text.clone());
                text
            };
            {
                let mut out = Output::new(&mut sink, &RawOut, FormatContext::default());
                out.flush_each = true;
                let poll = |lane: &mut Lane<'_>, out: &mut Output<'_, '_>| {
                    lane.poll(out, &mut |_| {}).unwrap();
                };
                for op in ops {
                    match op {
                        Op::Append(n) => {
                            for _ in 0..n {
                                append(&path, format!("{}\n", line(&mut written)).as_bytes());
                            }
                        }
                        Op::SplitAppend => {
                            let text = line(&mut written);
                            let (a, b) = text.split_at(text.len() / 2);
                            append(&path, a.as_bytes());
                            poll(&mut lane, &mut out);
                            append(&path, format!("{b}\n").as_bytes());
                        }
                        // Before a rotation or a deletion the monitor has had its chance to
                        // open the current file (in real life an inotify event arrives within
                        // microseconds); a file renamed or deleted before anyone opened it is
                        // out of reach of every tailer.
                        Op::Rotate { late } => {
                            poll(&mut lane, &mut out);
                            rotated += 1;
                            let old = path.with_extension(format!("log.{rotated}"));
                            fs::rename(&path, &old).unwrap();
                            if late {
                                append(&old, format!("{}\n", line(&mut written)).as_bytes());
                            }
                            fs::write(&path, "").unwrap();
                        }
                        Op::CopyTruncate => {
                            // Lines not read before the truncation are lost by copytruncate
                            // itself; monitor reads them first, as a logrotate copy would.
                            poll(&mut lane, &mut out);
                            OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
                        }
                        Op::TruncateRewrite => {
                            poll(&mut lane, &mut out);
                            let before = fs::metadata(&path).unwrap().len() as usize;
                            OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
                            let mut text = String::new();
                            while text.len() <= before {
                                text.push_str(&line(&mut written));
                                text.push('\n');
                            }
                            append(&path, text.as_bytes());
                        }
                        Op::Recreate => {
                            poll(&mut lane, &mut out);
                            fs::remove_file(&path).unwrap();
                            fs::write(&path, "").unwrap();
                        }
                        Op::Poll => poll(&mut lane, &mut out),
                    }
                }
                poll(&mut lane, &mut out);
                poll(&mut lane, &mut out);
                out.flush().unwrap();
            }
            let got: Vec<String> = String::from_utf8(sink).unwrap().lines().map(String::from).collect();
            prop_assert_eq!(got, written);
        }
    }
}

#[cfg(test)]
mod rotation_tests {
    //! Model-based, for a source whose writer rotates its own file the way the Sidecar rotates
    //! `audit.jsonl` (live → `.1`, older ones shifted up, a new live file; the writer finishes
    //! a file before renaming it): any number of rotations between two polls, and the
    //! follower still prints every line once, in order — the files rotated away unseen are
    //! read from the listing, oldest first.

    use std::fs::{self, OpenOptions};
    use std::io::Write;
    use std::path::{Path, PathBuf};

    use proptest::prelude::*;

    use super::*;
    use crate::monitor::testing::RawOut;

    const KEEP: usize = 20;

    struct Rotating;

    impl Source for Rotating {
        fn name(&self) -> &'static str {
            "rotating"
        }
        fn about(&self) -> &'static str {
            "test"
        }
        fn path(&self, state: &StateDir) -> PathBuf {
            state.path().join("r.log")
        }
        fn files(&self, state: &StateDir) -> Vec<PathBuf> {
            let mut files: Vec<PathBuf> = (1..=KEEP)
                .rev()
                .map(|n| state.path().join(format!("r.log.{n}")))
                .filter(|p| p.exists())
                .collect();
            files.push(self.path(state));
            files
        }
        fn parse(&self, line: &[u8], offset: u64) -> Record {
            Record::new("rotating", offset, Kind::Raw, line)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Append(usize),
        Rotate,
        Poll,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (1usize..4).prop_map(Op::Append),
            2 => Just(Op::Rotate),
            2 => Just(Op::Poll),
        ]
    }

    fn rotate(dir: &Path) {
        for n in (1..KEEP).rev() {
            let from = dir.join(format!("r.log.{n}"));
            if from.exists() {
                fs::rename(&from, dir.join(format!("r.log.{}", n + 1))).unwrap();
            }
        }
        fs::rename(dir.join("r.log"), dir.join("r.log.1")).unwrap();
        fs::write(dir.join("r.log"), "").unwrap();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn every_line_once_across_rotations(ops in proptest::collection::vec(op(), 1..30)) {
            let dir = tempfile::tempdir().unwrap();
            let state = StateDir::new(dir.path());
            fs::write(dir.path().join("r.log"), "").unwrap();
            let filters = Filters::new();
            let mut lane = Lane::new(&Rotating, &filters, &state);
            lane.tail.start(start::plan(&Rotating, &state, &filters.for_source(&Rotating), None).unwrap()).unwrap();
            lane.judge.live = true;
            let mut sink: Vec<u8> = Vec::new();
            let mut written = Vec::new();
            {
                let mut out = Output::new(&mut sink, &RawOut, FormatContext::default());
                out.flush_each = true;
                let mut rotations = 0;
                for op in ops {
                    match op {
                        Op::Append(n) => {
                            let mut file = OpenOptions::new().append(true).open(dir.path().join("r.log")).unwrap();
                            for _ in 0..n {
                                let line = format!("line {:04}", written.len());
                                writeln!(file, "{line}").unwrap();
                                written.push(line);
                            }
                        }
                        // Within the files kept (retention of what was never read is loss).
                        Op::Rotate if rotations + 1 < KEEP => {
                            rotations += 1;
                            rotate(dir.path());
                        }
                        Op::Rotate => {}
                        Op::Poll => lane.poll(&mut out, &mut |_| {}).unwrap(),
                    }
                }
                lane.poll(&mut out, &mut |_| {}).unwrap();
                lane.poll(&mut out, &mut |_| {}).unwrap();
                out.flush().unwrap();
            }
            let got: Vec<String> = String::from_utf8(sink).unwrap().lines().map(String::from).collect();
            prop_assert_eq!(got, written);
        }
    }
}
