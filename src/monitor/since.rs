//! `--since`: a duration back from now (`15m`, `2h`, `1d`, also `30s`) or an RFC 3339 timestamp
//! with an offset (`2026-11-26T10:00:00Z`, `2026-11-26T11:00:00+01:00`).

use chrono::{DateTime, Duration, Utc};

pub const ACCEPTED_FORMS: &str = "a duration such as 30s, 15m, 2h or 1d, or an RFC 3339 \
timestamp with an offset such as 2026-11-26T10:00:00Z";

/// Parse `text` relative to `now`.
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Some(duration) = parse_duration(text) {
        return now
            .checked_sub_signed(duration)
            .ok_or_else(|| format!("--since {text:?} reaches before the earliest supported time"));
    }
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.to_utc());
    }
    Err(format!(
        "--since {text:?} is neither a duration nor an RFC 3339 timestamp"
    ))
}

/// `<digits><unit>` with unit s, m, h or d — nothing else (`1M` is not a month here).
fn parse_duration(text: &str) -> Option<Duration> {
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = text.split_at(unit_at);
    let count: i64 = digits.parse().ok()?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    Duration::try_seconds(count.checked_mul(seconds)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-26T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn durations() {
        assert_eq!(
            parse_since("15m", now()).unwrap(),
            "2026-11-26T11:45:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_since("2h", now()).unwrap(),
            "2026-11-26T10:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_since("1d", now()).unwrap(),
            "2026-11-25T12:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn timestamps_with_offsets() {
        assert_eq!(
            parse_since("2026-11-26T13:00:00+01:00", now()).unwrap(),
            "2026-11-26T12:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
    }

    #[test]
    fn rejects_the_rest() {
        for bad in [
            "",
            "15",
            "m",
            "1M",
            "1w",
            "-5m",
            "15 m",
            "2026-11-26",
            "2026-11-26T10:00:00",
            "soon",
        ] {
            assert!(parse_since(bad, now()).is_err(), "{bad:?} accepted");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_count_and_unit_parses(count in 0i64..100_000, unit in "[smhd]") {
            let text = format!("{count}{unit}");
            proptest::prop_assert!(parse_since(&text, now()).unwrap() <= now());
        }

        #[test]
        fn never_panics(text in "\\PC{0,40}") {
            let _ = parse_since(&text, now());
        }
    }
}
