//! `audit`: the signed, hash-chained decision log (`audit.jsonl`), one canonical JSON record
//! per line. Lines that are not audit records become malformed records (reported, never
//! dropped). Signatures are not checked here: that is `firma audit verify`.

use std::borrow::Cow;
use std::path::PathBuf;

use chrono::DateTime;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::audit::event::{Decision, SEGMENT_KIND};
use crate::monitor::{Kind, Record, Source, SourcePlugin};
use crate::state_dir::StateDir;

pub struct AuditSource;

/// The fields a record must have, with their types; checked without copying.
#[allow(dead_code)]
#[derive(Deserialize)]
struct Shape<'a> {
    v: u32,
    seq: u64,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    event_id: IgnoredAny,
    decision: Decision,
    reason: IgnoredAny,
    agent_id: IgnoredAny,
    session_id: IgnoredAny,
    token_id: IgnoredAny,
    #[serde(borrow)]
    intent: IntentShape<'a>,
    policy: IgnoredAny,
    latency_us: u64,
    prev: IgnoredAny,
}

#[allow(dead_code)]
#[derive(Deserialize)]
struct IntentShape<'a> {
    #[serde(borrow)]
    action_class: Cow<'a, str>,
    method: IgnoredAny,
    host: IgnoredAny,
    path: IgnoredAny,
}

/// A segment marker (`"kind":"segment"`): the writer starts a new chain segment after a crash
/// left a torn line. Shown as an event without a decision.
#[allow(dead_code)]
#[derive(Deserialize)]
struct SegmentShape<'a> {
    v: u32,
    seq: u64,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    reason: IgnoredAny,
    prev: IgnoredAny,
}

fn malformed(line: &[u8], offset: u64, reason: String) -> Record {
    Record::new("audit", offset, Kind::Malformed { reason }, line)
}

impl Source for AuditSource {
    fn name(&self) -> &'static str {
        "audit"
    }

    fn about(&self) -> &'static str {
        "audit events (audit.jsonl): one per decision"
    }

    fn path(&self, state: &StateDir) -> PathBuf {
        state.audit_log()
    }

    /// Checks the line against the record's shape without building it; the fields are parsed
    /// only if a formatter or filter asks for them.
    fn parse(&self, line: &[u8], offset: u64) -> Record {
        if line.trim_ascii_start().first() != Some(&b'{') {
            let reason = match serde_json::from_slice::<IgnoredAny>(line) {
                Ok(_) => "not a JSON object".to_string(),
                Err(err) => format!("not JSON: {err}"),
            };
            return malformed(line, offset, reason);
        }
        // In valid JSON `"kind":` can only be a key (inside a string its quotes are escaped).
        let shape = if memchr::memmem::find(line, b"\"kind\":").is_some() {
            serde_json::from_slice::<SegmentShape<'_>>(line).and_then(|s| {
                if s.kind == SEGMENT_KIND {
                    Ok(s.ts)
                } else {
                    Err(serde::de::Error::custom(format!(
                        "unknown kind {:?}",
                        s.kind
                    )))
                }
            })
        } else {
            serde_json::from_slice::<Shape<'_>>(line).map(|s| s.ts)
        };
        let time = match shape {
            Ok(ts) => match DateTime::parse_from_rfc3339(&ts) {
                Ok(time) => time.to_utc(),
                Err(err) => {
                    return malformed(line, offset, format!("ts {ts:?}: {err}"));
                }
            },
            Err(err) if err.is_data() => {
                return malformed(line, offset, format!("not an audit record: {err}"));
            }
            Err(err) => return malformed(line, offset, format!("not JSON: {err}")),
        };
        let mut record = Record::new(self.name(), offset, Kind::Event, line);
        record.time = Some(time);
        record
    }

    fn filterable_fields(&self) -> &'static [&'static str] {
        &[
            "decision",
            "intent.action_class",
            "agent_id",
            "session_id",
            "token_id",
        ]
    }

    fn time_ordered(&self) -> bool {
        true
    }

    /// The writer emits RFC 8785 canonical JSON: keys sorted (`agent_id` first, `v` last), no
    /// whitespace. A line that starts and ends that way is one complete canonical record.
    fn is_canonical(&self, line: &[u8]) -> bool {
        const HEAD: &[u8] = b"{\"agent_id\":\"";
        if !line.starts_with(HEAD) || !line.ends_with(b"}") {
            return false;
        }
        let tail = &line[line.len().saturating_sub(16)..line.len() - 1];
        match memchr::memmem::rfind(tail, b",\"v\":") {
            Some(at) => {
                let digits = &tail[at + 5..];
                !digits.is_empty() && digits.iter().all(u8::is_ascii_digit)
            }
            None => false,
        }
    }
}

inventory::submit!(SourcePlugin(&AuditSource));

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    const LINE: &str = r#"{"agent_id":"codex","decision":"deny","event_id":"e1","intent":{"action_class":"communication.external.send","host":"api.example.com","method":"POST","path":"/v1/send"},"latency_us":120,"policy":{"bundle":"b1","determining":["p1"]},"prev":"00","reason":"policy","seq":1,"session_id":"s1","sig":"x","token_id":"t1","ts":"2026-11-26T10:00:00.000000001Z","v":1}"#;

    #[test]
    fn parses_a_record() {
        let record = AuditSource.parse(LINE.as_bytes(), 0);
        assert_eq!(record.kind, Kind::Event);
        assert_eq!(
            record.str_field("intent.action_class"),
            "communication.external.send"
        );
        assert!(AuditSource.is_canonical(LINE.as_bytes()));
        let _: &Map<String, serde_json::Value> = record.fields();
    }

    #[test]
    fn segment_markers_are_events_without_a_decision() {
        let line = br#"{"kind":"segment","prev":"00","reason":"torn line after a crash","seq":9,"sig":"x","torn":{"length":10,"offset":100,"sha256":"ab"},"ts":"2026-11-26T10:00:00Z","v":1}"#;
        let record = AuditSource.parse(line, 0);
        assert_eq!(record.kind, Kind::Event);
        assert_eq!(record.str_field("kind"), "segment");
        assert!(record.field("decision").is_none());
        let odd = br#"{"kind":"other","prev":"00","reason":"r","seq":9,"ts":"2026-11-26T10:00:00Z","v":1}"#;
        assert!(AuditSource.parse(odd, 0).is_malformed());
    }

    #[test]
    fn bad_lines_are_malformed() {
        for bad in [
            &LINE[..40],
            "{}",
            "[1]",
            "not json",
            &LINE.replace("\"seq\":1", "\"seq\":\"1\""),
        ] {
            assert!(AuditSource.parse(bad.as_bytes(), 7).is_malformed(), "{bad}");
        }
        assert!(!AuditSource.is_canonical(&LINE.as_bytes()[..40]));
        assert!(!AuditSource.is_canonical(b"{\"agent_id\":\"a\"}"));
    }

    /// The needle prefilter is exact on canonical lines: for records encoded by the audit
    /// log's own RFC 8785 encoder, with hostile strings anywhere, "the line holds the needle"
    /// is the same as "the field has the value".
    mod prefilter {
        use super::*;
        use crate::audit::event::{AuditEvent, Intent, PolicyRef};
        use crate::monitor::{FieldEquals, Predicate};
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            prop_oneof![
                "[a-z\"\\:,{}. \u{1}\u{7f}é]{0,12}",
                Just("deny".to_string()),
                Just("\"decision\":\"deny\"".to_string()),
                Just("x\",\"action_class\":\"a.b".to_string()),
                Just("a.b".to_string()),
            ]
        }

        fn decision() -> impl Strategy<Value = Decision> {
            prop_oneof![
                Just(Decision::Allow),
                Just(Decision::Deny),
                Just(Decision::Passthrough)
            ]
        }

        proptest! {
            #[test]
            fn needles_agree_with_fields(
                decision in decision(),
                class in text(),
                reason in text(),
                agent in text(),
                path in text(),
                wanted_class in text(),
                wanted_decision in decision(),
            ) {
                let event = AuditEvent {
                    v: 1,
                    seq: 7,
                    ts: "2026-11-26T10:00:00.000000001Z".into(),
                    event_id: "e".into(),
                    decision,
                    reason,
                    agent_id: agent,
                    session_id: "s".into(),
                    token_id: "t".into(),
                    intent: Intent { action_class: class.clone(), method: "GET".into(), host: "h".into(), path, ..Default::default() },
                    policy: PolicyRef { bundle: "b".into(), determining: vec!["p".into()] },
                    latency_us: 1,
                    prev: "0".repeat(64),
                    sig: Some("c2ln".into()),
                    sandbox_id: String::new(),
                };
                let line = crate::audit::canonical::to_vec(&serde_json::to_value(&event).unwrap()).unwrap();
                prop_assert!(AuditSource.is_canonical(&line));
                let record = AuditSource.parse(&line, 0);
                prop_assert_eq!(&record.kind, &Kind::Event);
                for (predicate, equal) in [
                    (FieldEquals::new("decision", wanted_decision.as_str()), decision == wanted_decision),
                    (FieldEquals::new("intent.action_class", wanted_class.clone()), class == wanted_class),
                ] {
                    let needle = predicate.needle().unwrap();
                    let present = memchr::memmem::find(&line, &needle).is_some();
                    prop_assert_eq!(present, equal);
                    prop_assert_eq!(predicate.matches(&record, None), equal);
                }
            }

            #[test]
            fn any_bytes_parse_without_panicking(line in proptest::collection::vec(any::<u8>(), 0..300)) {
                let record = AuditSource.parse(&line, 3);
                prop_assert_eq!(record.raw, line);
            }
        }
    }
}
