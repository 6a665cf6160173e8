//! `--since` on a time-ordered file: binary search for a line start such that every line
//! before it is older than the bound, so a big append-only log is not read from the start.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use chrono::{DateTime, Utc};

use super::plugin::Source;

/// Below this window the engine just reads forward.
const LINEAR: u64 = 64 << 10;
const PROBE: usize = 64 << 10;

/// An offset (a line start) with every line before it older than `since`. The engine still
/// applies `--since` to every record it reads, so this only decides where reading begins.
pub fn seek_since(
    file: &File,
    size: u64,
    source: &dyn Source,
    since: DateTime<Utc>,
) -> io::Result<u64> {
    let mut lo = 0u64;
    let mut hi = size;
    let mut probe = vec![0u8; PROBE];
    while hi.saturating_sub(lo) > LINEAR {
        let mid = lo + (hi - lo) / 2;
        match first_timed_line_after(file, mid, hi, source, &mut probe)? {
            Some((next_start, time)) if time < since => lo = next_start,
            _ => hi = mid,
        }
    }
    Ok(lo)
}

/// The first line starting after `pos` (and before `hi`) that has a time: the offset just past
/// it, and its time.
fn first_timed_line_after(
    file: &File,
    pos: u64,
    hi: u64,
    source: &dyn Source,
    probe: &mut [u8],
) -> io::Result<Option<(u64, DateTime<Utc>)>> {
    let read = read_at_most(file, probe, pos)?;
    let window = &probe[..read];
    let Some(first_nl) = memchr::memchr(b'\n', window) else {
        return Ok(None);
    };
    let mut start = first_nl + 1;
    while pos + (start as u64) < hi {
        let Some(len) = memchr::memchr(b'\n', &window[start..]) else {
            return Ok(None);
        };
        let line = &window[start..start + len];
        let next = start + len + 1;
        if let Some(time) = source.parse(line, pos + start as u64).time {
            return Ok(Some((pos + next as u64, time)));
        }
        start = next;
    }
    Ok(None)
}

pub(super) fn read_at_most(file: &File, buf: &mut [u8], pos: u64) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], pos + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Where following "from the end" starts: just after the last newline, so a line being written
/// right now is shown whole once it is complete, not from its middle. (If no newline is found
/// in the last 64 KiB, the end itself.)
pub fn end_of_last_line(file: &File, size: u64) -> io::Result<u64> {
    let window = size.min(PROBE as u64);
    let mut buf = vec![0u8; window as usize];
    let read = read_at_most(file, &mut buf, size - window)?;
    Ok(match memchr::memrchr(b'\n', &buf[..read]) {
        Some(at) => size - window + at as u64 + 1,
        None if window == size => 0,
        None => size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::{Kind, Record};
    use proptest::prelude::*;
    use std::io::Write;

    /// `<seconds> <padding>` lines; `-` lines have no time.
    struct Timed;

    impl Source for Timed {
        fn name(&self) -> &'static str {
            "timed"
        }
        fn about(&self) -> &'static str {
            "test"
        }
        fn path(&self, state: &crate::state_dir::StateDir) -> std::path::PathBuf {
            state.path().join("t.log")
        }
        fn parse(&self, line: &[u8], offset: u64) -> Record {
            let mut record = Record::new("timed", offset, Kind::Raw, line);
            let text = String::from_utf8_lossy(line);
            record.time = text
                .split(' ')
                .next()
                .and_then(|s| s.parse::<i64>().ok())
                .and_then(|s| DateTime::from_timestamp(s, 0));
            record
        }
        fn time_ordered(&self) -> bool {
            true
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn every_line_before_the_seek_point_is_older(
            lines in proptest::collection::vec((0i64..5, proptest::bool::weighted(0.08), 0usize..3000), 1..400),
            since_at in 0i64..1200,
        ) {
            let mut file = tempfile::tempfile().unwrap();
            let mut time = 0;
            let mut parsed = Vec::new();
            let mut offset = 0u64;
            for (step, timed, pad) in lines {
                time += step;
                let text = if timed { format!("{time} {}", "p".repeat(pad)) } else { format!("- {}", "u".repeat(pad)) };
                writeln!(file, "{text}").unwrap();
                parsed.push((offset, timed.then_some(time)));
                offset += text.len() as u64 + 1;
            }
            let since = DateTime::from_timestamp(since_at, 0).unwrap();
            let at = seek_since(&file, offset, &Timed, since).unwrap();
            prop_assert!(at <= offset);
            prop_assert!(parsed.iter().any(|(o, _)| *o == at) || at == offset, "not a line start");
            for (o, t) in &parsed {
                if *o < at
                    && let Some(t) = t
                {
                    prop_assert!(*t < since_at, "line at {o} (t={t}) skipped");
                }
            }
        }
    }
}
