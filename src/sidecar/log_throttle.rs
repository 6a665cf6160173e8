//! Log lines an agent can cause once per call — an allowed call whose upstream fails, a client
//! that refuses the interception certificate — are throttled: the first of a window is logged,
//! the rest are counted and the next logged line says how many were left out. Otherwise an agent
//! could grow the daemon log (which is not rotated) by one line per call, without limit. Every
//! such call still has its audit record and its metric; only the log line is spared.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often each throttled line may be logged.
pub const WINDOW: Duration = Duration::from_secs(10);

/// One kind of throttled log line.
pub struct Throttle {
    window: Duration,
    /// When the last line was logged, and how many were left out since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub const fn new(window: Duration) -> Self {
        Self {
            window,
            state: Mutex::new((None, 0)),
        }
    }

    /// Whether to log now: `Some(n)` with the number of lines left out since the last one
    /// logged, `None` to leave this one out.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, left_out) = &mut *state;
        if last.is_some_and(|last| now.saturating_duration_since(last) < self.window) {
            *left_out += 1;
            return None;
        }
        *last = Some(now);
        Some(std::mem::take(left_out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_window_and_the_count_of_those_left_out() {
        let throttle = Throttle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(throttle.admit_at(start), Some(0));
        for ms in [1, 500, 9_999] {
            assert_eq!(throttle.admit_at(start + Duration::from_millis(ms)), None);
        }
        assert_eq!(throttle.admit_at(start + Duration::from_secs(10)), Some(3));
        assert_eq!(throttle.admit_at(start + Duration::from_secs(11)), None);
        assert_eq!(throttle.admit_at(start + Duration::from_secs(25)), Some(1));
    }
}
