//! Where a source's reading starts: which of its files, and where in the first of them. Three
//! bounds, the latest wins:
//! - `--since` on a time-ordered source: the newest file whose first record is older than the
//!   bound (so every later file is wholly inside the window), then a binary search in it;
//! - `-n N`: far enough back, across files if needed, to hold the last N matching records;
//! - `-n 0`: the end of the newest file (following shows only what comes).
//!
//! Without any, reading starts at the beginning of the oldest file.

use std::fs::File;
use std::io;

use chrono::{DateTime, Utc};

use super::filter::SourceFilters;
use super::lines::MAX_LINE;
use super::plugin::Source;
use super::seek::{end_of_last_line, read_at_most, seek_since};
use crate::state_dir::StateDir;

/// Bytes read per step when scanning backwards.
const BACK_CHUNK: u64 = 64 << 10;

/// A place in a source's files: (index of the file, offset in it). Later is greater.
type At = (usize, u64);

/// The source's existing files from where reading starts, opened, each with its start offset.
/// `last`: `-n` (None: no bound).
pub fn plan(
    source: &dyn Source,
    state: &StateDir,
    filters: &SourceFilters<'_>,
    last: Option<usize>,
) -> io::Result<Vec<(File, u64)>> {
    let mut files = Vec::new();
    for path in source.files(state) {
        match File::open(&path) {
            Ok(file) => {
                let size = file.metadata()?.len();
                files.push((file, size));
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    let Some(newest) = files.len().checked_sub(1) else {
        return Ok(Vec::new());
    };
    let mut at: At = (0, 0);
    if let Some(since) = filters.earliest
        && source.time_ordered()
    {
        at = since_start(&files, source, since)?;
    }
    match last {
        Some(0) => {
            let (file, size) = &files[newest];
            at = at.max((newest, end_of_last_line(file, *size)?));
        }
        Some(n) => at = at.max(last_start(&files, source, filters, n, at)?),
        None => {}
    }
    Ok(files
        .into_iter()
        .skip(at.0)
        .enumerate()
        .map(|(i, (file, _))| (file, if i == 0 { at.1 } else { 0 }))
        .collect())
}

/// `--since`: the newest file that starts before `since`, and the seek point in it.
fn since_start(files: &[(File, u64)], source: &dyn Source, since: DateTime<Utc>) -> io::Result<At> {
    let mut chosen = 0;
    for (i, (file, size)) in files.iter().enumerate().rev() {
        if first_time(file, *size, source)?.is_some_and(|t| t < since) {
            chosen = i;
            break;
        }
    }
    let (file, size) = &files[chosen];
    Ok((chosen, seek_since(file, *size, source, since)?))
}

/// The time of the first timed line in the first 64 KiB of a file.
fn first_time(file: &File, size: u64, source: &dyn Source) -> io::Result<Option<DateTime<Utc>>> {
    let mut buf = vec![0u8; size.min(BACK_CHUNK) as usize];
    let read = read_at_most(file, &mut buf, 0)?;
    let mut offset = 0;
    for line in buf[..read].split_inclusive(|b| *b == b'\n') {
        let Some(line) = line.strip_suffix(b"\n") else {
            break;
        };
        if let Some(time) = source.parse(line, offset).time {
            return Ok(Some(time));
        }
        offset += line.len() as u64 + 1;
    }
    Ok(None)
}

/// `-n wanted`: scanning back from the end of the newest file (into older files while
/// needed, never before `floor`), the start of the `wanted`-th last matching line.
fn last_start(
    files: &[(File, u64)],
    source: &dyn Source,
    filters: &SourceFilters<'_>,
    wanted: usize,
    floor: At,
) -> io::Result<At> {
    let mut wanted = wanted;
    for (i, (file, size)) in files.iter().enumerate().skip(floor.0).rev() {
        let lo = if i == floor.0 { floor.1 } else { 0 };
        match scan_back(file, lo, *size, source, filters, wanted)? {
            Scan::Found(start) => return Ok((i, start)),
            Scan::Short(found) => wanted -= found,
        }
    }
    Ok(floor)
}

enum Scan {
    /// The start of the line that completes the count.
    Found(u64),
    /// Only this many matching lines between the bounds.
    Short(usize),
}

/// Count matching complete lines backwards from `hi` down to `lo` (a line start).
fn scan_back(
    file: &File,
    lo: u64,
    hi: u64,
    source: &dyn Source,
    filters: &SourceFilters<'_>,
    wanted: usize,
) -> io::Result<Scan> {
    let mut found = 0;
    // `data` holds whole lines from `base` up, each ending in '\n', plus at its front the end
    // of a line that starts further back; bytes after the last '\n' of the file are a line
    // still being written, not counted.
    let mut base = hi;
    let mut data: Vec<u8> = Vec::new();
    let mut trailing = true;
    // Inside a line longer than MAX_LINE: its bytes are dropped, and it is not counted.
    let mut oversized = false;
    while base > lo || !data.is_empty() {
        if base > lo {
            let from = base.saturating_sub(BACK_CHUNK).max(lo);
            let mut chunk = vec![0u8; (base - from) as usize];
            let read = read_at_most(file, &mut chunk, from)?;
            chunk.truncate(read);
            base = from;
            if oversized {
                data.clear();
            }
            chunk.extend_from_slice(&data);
            data = chunk;
            if trailing {
                match memchr::memrchr(b'\n', &data) {
                    Some(at) => {
                        data.truncate(at + 1);
                        trailing = false;
                    }
                    None => {
                        data.clear();
                        continue;
                    }
                }
            }
        }
        // Complete lines from the back; the front piece is complete only at `lo`.
        let mut end = data.len();
        while end > 0 {
            let start = match memchr::memrchr(b'\n', &data[..end - 1]) {
                Some(at) => at + 1,
                None if base == lo => 0,
                None => break,
            };
            if oversized {
                oversized = false;
            } else if counts(&data[start..end - 1], base + start as u64, source, filters) {
                found += 1;
                if found == wanted {
                    return Ok(Scan::Found(base + start as u64));
                }
            }
            end = start;
        }
        data.truncate(end);
        if base == lo {
            break;
        }
        if data.len() > MAX_LINE {
            oversized = true;
        }
    }
    Ok(Scan::Short(found))
}

/// Whether a line is a record that passes the filters on its own (a line without a time is
/// not counted: reading then starts a little earlier, never later).
fn counts(line: &[u8], offset: u64, source: &dyn Source, filters: &SourceFilters<'_>) -> bool {
    if filters.has_needles() && filters.needle_missing(line) && source.is_canonical(line) {
        return false;
    }
    let record = source.parse(line, offset);
    record.time.is_some() && filters.matches(&record, record.time, false)
}

#[cfg(test)]
mod tests {
    //! `-n N` must show exactly the last N records a full read would show (with the same
    //! filters and `--since`), whatever the lines, their lengths and the files they span.

    use std::path::PathBuf;

    use proptest::prelude::*;

    use super::*;
    use crate::monitor::testing::RawOut;
    use crate::monitor::{FieldEquals, Filters, Kind, Plan, Record, Since};

    /// `<seconds> <tag> <padding>` lines (`-` for no time) in `t.log.2`, `t.log.1`, `t.log`.
    struct Tagged;

    impl Source for Tagged {
        fn name(&self) -> &'static str {
            "tagged"
        }
        fn about(&self) -> &'static str {
            "test"
        }
        fn path(&self, state: &StateDir) -> PathBuf {
            state.path().join("t.log")
        }
        fn files(&self, state: &StateDir) -> Vec<PathBuf> {
            ["t.log.2", "t.log.1", "t.log"]
                .iter()
                .map(|n| state.path().join(n))
                .collect()
        }
        fn parse(&self, line: &[u8], offset: u64) -> Record {
            let text = String::from_utf8_lossy(line);
            let mut parts = text.split(' ');
            let (Some(secs), Some(tag)) = (parts.next(), parts.next()) else {
                return Record::new("tagged", offset, Kind::Raw, line);
            };
            let mut record = Record::new("tagged", offset, Kind::Event, line);
            record.time = secs
                .parse::<i64>()
                .ok()
                .and_then(|s| DateTime::from_timestamp(s, 0));
            let fields = serde_json::json!({ "tag": tag });
            record.set_fields(fields.as_object().unwrap().clone());
            record
        }
        fn filterable_fields(&self) -> &'static [&'static str] {
            &["tag"]
        }
        fn time_ordered(&self) -> bool {
            true
        }
    }

    fn output(state: &StateDir, filters: Filters, last: Option<usize>) -> Vec<String> {
        let plan = Plan {
            state: state.clone(),
            sources: vec![&Tagged],
            filters,
            formatter: &RawOut,
            last,
            follow: false,
            color: false,
            watch: false,
        };
        let mut out = Vec::new();
        crate::monitor::run(&plan, &mut out, &mut |_| {}).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(String::from)
            .collect()
    }

    fn filters(tag: Option<&str>, since: Option<i64>) -> Filters {
        let mut filters = Filters::new();
        if let Some(tag) = tag {
            filters = filters.with(FieldEquals::new("tag", tag));
        }
        if let Some(since) = since {
            filters = filters.with(Since(DateTime::from_timestamp(since, 0).unwrap()));
        }
        filters
    }

    /// (seconds step, timed, tag, padding), per file.
    fn file() -> impl Strategy<Value = Vec<(i64, bool, bool, usize)>> {
        proptest::collection::vec(
            (
                0i64..3,
                proptest::bool::weighted(0.9),
                any::<bool>(),
                prop_oneof![8 => 0usize..200, 1 => 20_000usize..70_000],
            ),
            0..120,
        )
    }

    #[test]
    fn a_line_beyond_the_limit_is_stepped_over() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let huge = "x".repeat(MAX_LINE + BACK_CHUNK as usize * 2 + 5);
        std::fs::write(
            state.path().join("t.log"),
            format!("1 a\n2 b\n{huge}\n3 a\n"),
        )
        .unwrap();
        let full = output(&state, Filters::new(), None);
        assert_eq!(full.len(), 4);
        for n in 0..6 {
            let last = output(&state, Filters::new(), Some(n));
            assert_eq!(last[..], full[full.len().saturating_sub(n)..], "n={n}");
        }
        let last = output(&state, filters(Some("a"), None), Some(1));
        assert_eq!(last, ["3 a"]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn last_n_is_the_tail_of_a_full_read(
            files in proptest::collection::vec(file(), 1..4),
            n in 0usize..30,
            tag in proptest::option::of(prop_oneof![Just("a"), Just("b")]),
            since in proptest::option::of(0i64..200),
            unterminated in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let state = StateDir::new(dir.path());
            let names = Tagged.files(&state);
            let skip = names.len() - files.len();
            let mut time = 0;
            for (path, lines) in names[skip..].iter().zip(&files) {
                let mut text = String::new();
                for (step, timed, tag_a, pad) in lines {
                    time += step;
                    let secs = if *timed { time.to_string() } else { "-".into() };
                    let tag = if *tag_a { "a" } else { "b" };
                    text.push_str(&format!("{secs} {tag} {}\n", "p".repeat(*pad)));
                }
                std::fs::write(path, text).unwrap();
            }
            if unterminated {
                let live = names.last().unwrap();
                let mut text = std::fs::read_to_string(live).unwrap_or_default();
                text.push_str("999 a unfinished");
                std::fs::write(live, text).unwrap();
            }
            let full = output(&state, filters(tag, since), None);
            let last = output(&state, filters(tag, since), Some(n));
            prop_assert_eq!(&last[..], &full[full.len().saturating_sub(n)..]);
        }
    }
}
