//! Process identity for PID-reuse safety: a pid alone may name somebody else's process after a
//! crash or reboot, so firma records `(pid, start time, session, boot id)` at spawn and checks it
//! against `/proc` before every signal.
//!
//! The start time is field 22 of `/proc/<pid>/stat` (clock ticks since boot): fixed at fork, so it
//! is valid as soon as `spawn()` returns. `(pid, start time)` is unique within one boot; the boot
//! id (`/proc/sys/kernel/random/boot_id`) makes it unique across reboots.

use std::fs;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What `/proc/<pid>/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    /// Field 3: `R`, `S`, `D`, `Z` (zombie), `X` (dead), ...
    pub state: char,
    /// Field 5: process group id.
    pub pgrp: i32,
    /// Field 6: session id.
    pub session: i32,
    /// Field 22: start time in clock ticks since boot.
    pub start_ticks: u64,
}

impl ProcStat {
    /// Read `/proc/<pid>/stat`; `None` when the process does not exist.
    pub fn read(pid: i32) -> Option<Self> {
        if pid <= 0 {
            return None;
        }
        let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Self::parse(&text)
    }

    /// Parse the stat line. The command name (field 2) may contain spaces and parentheses, so the
    /// fields after it are found from the last `)`.
    pub fn parse(text: &str) -> Option<Self> {
        let pid = text.split_whitespace().next()?.parse().ok()?;
        let rest = &text[text.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // `rest` starts at field 3, so field N is at index N - 3.
        let state = fields.first()?.chars().next()?;
        Some(Self {
            pid,
            state,
            pgrp: fields.get(2)?.parse().ok()?,
            session: fields.get(3)?.parse().ok()?,
            start_ticks: fields.get(19)?.parse().ok()?,
        })
    }

    /// A zombie (or a dead task) has exited; it only waits to be reaped, so it counts as gone.
    pub fn is_exited(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Who a pidfile's process is: recorded at spawn, checked before every signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub pid: i32,
    pub start_ticks: u64,
    pub session: i32,
    pub boot_id: String,
}

/// What a recorded identity currently names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// The very process firma started, not yet exited.
    Alive,
    /// Exited (absent, or a zombie waiting to be reaped).
    Gone,
    /// The pid now belongs to a different process (PID reuse, or another boot).
    Reused,
}

impl Identity {
    /// The identity of a live process, read from `/proc`.
    pub fn of(pid: i32) -> Option<Self> {
        let stat = ProcStat::read(pid)?;
        Some(Self {
            pid,
            start_ticks: stat.start_ticks,
            session: stat.session,
            boot_id: boot_id(),
        })
    }

    /// The identity of this process.
    pub fn current() -> Option<Self> {
        Self::of(std::process::id() as i32)
    }

    /// One line: `pid=<pid> start=<ticks> session=<sid> boot=<boot id>`.
    pub fn encode(&self) -> String {
        format!(
            "pid={} start={} session={} boot={}\n",
            self.pid, self.start_ticks, self.session, self.boot_id
        )
    }

    pub fn decode(text: &str) -> Option<Self> {
        let mut pid = None;
        let mut start = None;
        let mut session = None;
        let mut boot = None;
        for field in text.split_whitespace() {
            let (key, value) = field.split_once('=')?;
            match key {
                "pid" => pid = value.parse().ok(),
                "start" => start = value.parse().ok(),
                "session" => session = value.parse().ok(),
                "boot" => boot = Some(value.to_string()),
                _ => {}
            }
        }
        Some(Self {
            pid: pid?,
            start_ticks: start?,
            session: session?,
            boot_id: boot?,
        })
    }

    /// Whether the recorded process is still the one running under its pid.
    pub fn liveness(&self) -> Liveness {
        if self.boot_id != boot_id() {
            // Recorded in another boot: whatever holds the pid now is not ours.
            return match ProcStat::read(self.pid) {
                Some(_) => Liveness::Reused,
                None => Liveness::Gone,
            };
        }
        match ProcStat::read(self.pid) {
            None => Liveness::Gone,
            Some(stat) if stat.start_ticks != self.start_ticks => Liveness::Reused,
            Some(stat) if stat.is_exited() => Liveness::Gone,
            Some(_) => Liveness::Alive,
        }
    }

    /// Members of this process's group (pgid = the recorded pid) that have not exited. While any
    /// member lives the kernel does not hand the number out again, so a group whose leader is gone
    /// is still ours when its members share the recorded session.
    pub fn live_group_members(&self) -> Vec<i32> {
        if self.boot_id != boot_id() {
            return Vec::new();
        }
        if let Some(stat) = ProcStat::read(self.pid)
            && stat.start_ticks != self.start_ticks
        {
            // The leader's pid was reused: the group number belongs to someone else now.
            return Vec::new();
        }
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(ProcStat::read)
            .filter(|s| s.pgrp == self.pid && s.session == self.session && !s.is_exited())
            .map(|s| s.pid)
            .collect()
    }

    /// When the process started (wall clock), from the boot time and clock ticks.
    pub fn started_at(&self) -> Option<SystemTime> {
        let btime = boot_time_secs()?;
        let hz = clock_ticks_per_second()?;
        let since_boot = Duration::from_secs_f64(self.start_ticks as f64 / hz as f64);
        Some(UNIX_EPOCH + Duration::from_secs(btime) + since_boot)
    }
}

/// This boot's id; empty when unavailable (then identities only compare pid + start time).
pub fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn boot_time_secs() -> Option<u64> {
    let text = fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

fn clock_ticks_per_second() -> Option<u64> {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|v| *v > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_with_a_hostile_command_name() {
        let line = "4242 (a) b) (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        let stat = ProcStat::parse(line).unwrap();
        assert_eq!(stat.pid, 4242);
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.pgrp, 4242);
        assert_eq!(stat.session, 4242);
        assert_eq!(stat.start_ticks, 987654);
    }

    #[test]
    fn identity_round_trips_and_names_this_process() {
        let me = Identity::current().unwrap();
        assert_eq!(Identity::decode(&me.encode()), Some(me.clone()));
        assert_eq!(me.liveness(), Liveness::Alive);
        let other = Identity {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert_eq!(other.liveness(), Liveness::Reused);
        let elapsed = SystemTime::now()
            .duration_since(me.started_at().unwrap())
            .unwrap();
        assert!(elapsed < Duration::from_secs(3600));
    }

    proptest::proptest! {
        #[test]
        fn stat_parsing_survives_any_command_name(
            comm in "[ -~]{0,15}",
            pid in 1i32..4_000_000,
            pgrp in 1i32..4_000_000,
            start in 0u64..u64::MAX,
        ) {
            let line = format!(
                "{pid} ({comm}) S 1 {pgrp} {pgrp} 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 {start} 1000 10"
            );
            let stat = ProcStat::parse(&line).unwrap();
            proptest::prop_assert_eq!(stat.pid, pid);
            proptest::prop_assert_eq!(stat.pgrp, pgrp);
            proptest::prop_assert_eq!(stat.session, pgrp);
            proptest::prop_assert_eq!(stat.start_ticks, start);
        }

        #[test]
        fn identity_encoding_round_trips(
            pid in 1i32..i32::MAX,
            start in 0u64..u64::MAX,
            session in 0i32..i32::MAX,
            boot in "[0-9a-f-]{0,36}",
        ) {
            let id = Identity { pid, start_ticks: start, session, boot_id: boot };
            proptest::prop_assert_eq!(Identity::decode(&id.encode()), Some(id));
        }
    }

    #[test]
    fn reaped_child_is_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = Identity::of(child.id() as i32).unwrap();
        child.wait().unwrap();
        assert_eq!(id.liveness(), Liveness::Gone);
    }
}
