//! Log lines that a caller can cause at will are throttled: an agent behind the Sidecar (an
//! allowed call whose upstream fails, a client refusing the interception certificate), or any
//! local process reaching the Authority (a refused role, a refused TLS handshake). Per key — what
//! was refused and to whom, so distinct events each get their line — the first line of a window
//! is logged, the rest are counted, and the next logged line says how many were left out.
//! Otherwise a caller could grow a daemon log (which firma does not rotate) by a line a call
//! without limit. The events themselves (audit records, metrics, the refusal) are never throttled.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often each throttled line (per key) may be logged.
pub const WINDOW: Duration = Duration::from_secs(10);

/// How many keys are tracked at once; when that many are in their window, new keys share one
/// entry (so a caller varying the key gains nothing).
const MAX_KEYS: usize = 256;

/// The key every key shares once [`MAX_KEYS`] are tracked.
const OVERFLOW: &str = "\u{0}overflow";

/// One kind of throttled log line.
pub struct Throttle {
    window: Duration,
    /// Per key: when its last line was logged, and how many were left out since.
    keys: Mutex<Option<HashMap<String, (Instant, u64)>>>,
}

impl Throttle {
    pub const fn new(window: Duration) -> Self {
        Self {
            window,
            keys: Mutex::new(None),
        }
    }

    /// Whether to log the line for `key` now: `Some(n)` with the number of lines for it left
    /// out since the last one logged, `None` to leave this one out.
    pub fn admit(&self, key: &str) -> Option<u64> {
        self.admit_at(key, Instant::now())
    }

    fn admit_at(&self, key: &str, now: Instant) -> Option<u64> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let keys = keys.get_or_insert_with(HashMap::new);
        let in_window = |last: Instant| now.saturating_duration_since(last) < self.window;
        let key = if keys.contains_key(key) || keys.len() < MAX_KEYS {
            key
        } else {
            keys.retain(|_, (last, _)| in_window(*last));
            if keys.len() < MAX_KEYS { key } else { OVERFLOW }
        };
        match keys.get_mut(key) {
            Some((last, left_out)) if in_window(*last) => {
                *left_out += 1;
                None
            }
            Some((last, left_out)) => {
                *last = now;
                Some(std::mem::take(left_out))
            }
            None => {
                keys.insert(key.to_string(), (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_a_window_and_the_count_of_those_left_out() {
        let throttle = Throttle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(throttle.admit_at("", start), Some(0));
        for ms in [1, 500, 9_999] {
            assert_eq!(
                throttle.admit_at("", start + Duration::from_millis(ms)),
                None
            );
        }
        assert_eq!(
            throttle.admit_at("", start + Duration::from_secs(10)),
            Some(3)
        );
        assert_eq!(throttle.admit_at("", start + Duration::from_secs(11)), None);
        assert_eq!(
            throttle.admit_at("", start + Duration::from_secs(25)),
            Some(1)
        );
    }

    #[test]
    fn keys_are_throttled_apart_and_their_number_is_bounded() {
        let throttle = Throttle::new(Duration::from_secs(10));
        let start = Instant::now();
        assert_eq!(throttle.admit_at("expired 10.0.0.1", start), Some(0));
        assert_eq!(throttle.admit_at("unknown issuer 10.0.0.1", start), Some(0));
        assert_eq!(throttle.admit_at("expired 10.0.0.1", start), None);
        // A caller varying the key: once MAX_KEYS are in their window, the rest share one line.
        let logged = (0..10 * MAX_KEYS)
            .filter(|n| throttle.admit_at(&format!("k{n}"), start).is_some())
            .count();
        assert_eq!(logged, MAX_KEYS - 2 + 1);
        // When the window has passed, old keys make room again.
        let later = start + Duration::from_secs(11);
        assert_eq!(throttle.admit_at("fresh", later), Some(0));
    }
}
