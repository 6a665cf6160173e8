//! `audit`: the signed, hash-chained decision log (`audit.jsonl`), one canonical JSON record
//! per line. Lines that are not audit records become malformed records (reported, never
//! dropped). Signatures are not checked here: that is `firma audit verify`.

use std::borrow::Cow;
use std::path::PathBuf;

use chrono::DateTime;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::audit::event::{Decision, SEGMENT_KIND};
use crate::monitor::json_scan::{Type, as_u64, object_members};
use crate::monitor::{Kind, Record, Source, SourcePlugin, Summary, Tone};
use crate::state_dir::StateDir;

pub struct AuditSource;

/// Wide enough for the longest label, `PASSTHROUGH`.
const LABEL_WIDTH: usize = 11;

/// Empty fields (no class for unmapped traffic, no agent without a token) show as `-` so the
/// columns stay readable.
fn or_dash(value: &str) -> &str {
    if value.is_empty() { "-" } else { value }
}

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

/// The top-level fields of [`Shape`] (bit per field), for the fast check.
const SHAPE_FIELDS: [&[u8]; 13] = [
    b"v",
    b"seq",
    b"ts",
    b"event_id",
    b"decision",
    b"reason",
    b"agent_id",
    b"session_id",
    b"token_id",
    b"intent",
    b"policy",
    b"latency_us",
    b"prev",
];
const INTENT_FIELDS: [&[u8]; 4] = [b"action_class", b"method", b"host", b"path"];

/// The fast path for a canonical-looking decision line: its `ts` when the line is certainly a
/// record of [`Shape`] (what serde_json would accept — a proptest holds the two together);
/// `None` leaves the line to serde_json, which decides and explains. Skips building anything:
/// most of a one-shot run's time is here.
fn decision_ts(line: &[u8]) -> Option<&str> {
    let mut seen = 0u16;
    let mut ts = None;
    let accepted = object_members(line, &mut |member| {
        let Some(bit) = SHAPE_FIELDS.iter().position(|f| *f == member.key) else {
            return true;
        };
        // A repeated field is an error for serde_json.
        if seen & (1 << bit) != 0 {
            return false;
        }
        seen |= 1 << bit;
        match member.key {
            b"v" => as_u64(&member).is_some_and(|v| v <= u64::from(u32::MAX)),
            b"seq" | b"latency_us" => as_u64(&member).is_some(),
            b"ts" => {
                ts = Some(member.value);
                member.value_type == Type::String && !member.escaped
            }
            b"decision" => {
                member.value_type == Type::String
                    && Decision::ALL
                        .iter()
                        .any(|d| d.as_str().as_bytes() == member.value)
            }
            b"intent" => member.value_type == Type::Object && intent_ok(member.value),
            _ => true,
        }
    });
    if !accepted || seen != (1 << SHAPE_FIELDS.len()) - 1 {
        return None;
    }
    std::str::from_utf8(ts?).ok()
}

/// `intent`: the four fields, once each, `action_class` a string.
fn intent_ok(object: &[u8]) -> bool {
    let mut seen = 0u8;
    object_members(object, &mut |member| {
        let Some(bit) = INTENT_FIELDS.iter().position(|f| *f == member.key) else {
            return true;
        };
        if seen & (1 << bit) != 0 {
            return false;
        }
        seen |= 1 << bit;
        member.key != b"action_class" || member.value_type == Type::String
    }) && seen == (1 << INTENT_FIELDS.len()) - 1
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

    /// The Sidecar rotates its log (`audit.jsonl.N`, highest N oldest); the state dir lists them.
    fn files(&self, state: &StateDir) -> Vec<PathBuf> {
        state.audit_files()
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
        // In valid JSON `"kind":` can only be a key (inside a string its quotes are escaped). A
        // canonical decision record starts with `agent_id`, a marker with `kind`: no search.
        let canonical = self.is_canonical(line);
        let marker = !canonical && memchr::memmem::find(line, b"\"kind\":").is_some();
        let fast = if canonical { decision_ts(line) } else { None };
        let shape = if let Some(ts) = fast {
            Ok(Cow::Borrowed(ts))
        } else if marker {
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
        // A segment marker is about the chain, not a decision: filters show it, always.
        record.filterable = !marker;
        record
    }

    /// A decision: `DENY  class  METHOD host/path  agent=…  reason=…`; a segment marker:
    /// `SEGMENT  new chain segment at seq N: reason  torn=…`.
    fn summary(&self, record: &Record) -> Option<Summary> {
        if record.kind != Kind::Event {
            return None;
        }
        if record.str_field("kind") == SEGMENT_KIND {
            let seq = record
                .field("seq")
                .map(|s| s.to_string())
                .unwrap_or_default();
            let mut summary = Summary::new("SEGMENT", LABEL_WIDTH, Tone::Notice).text(format!(
                "new chain segment at seq {seq}: {}",
                record.str_field("reason")
            ));
            if let Some(torn) = record.field("torn") {
                summary = summary.text(format!("  torn={torn}"));
            }
            return Some(summary);
        }
        let decision = record.str_field("decision");
        let tone = match decision {
            "deny" => Tone::Alert,
            "allow" => Tone::Good,
            _ => Tone::Quiet,
        };
        let mut summary = Summary::new(decision.to_uppercase(), LABEL_WIDTH, tone)
            .text(or_dash(record.str_field("intent.action_class")))
            .text(format!(
                "  {} {}{}  agent={}",
                record.str_field("intent.method"),
                record.str_field("intent.host"),
                record.str_field("intent.path"),
                or_dash(record.str_field("agent_id")),
            ));
        let reason = record.str_field("reason");
        if !reason.is_empty() {
            summary = summary.text(format!("  reason={reason}"));
        }
        Some(summary)
    }

    fn filterable_fields(&self) -> &'static [&'static str] {
        &[
            "decision",
            "intent.action_class",
            "agent_id",
            "session_id",
            "token_id",
            // Set on records of sandboxed `firma run`s.
            "sandbox_id",
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
    /// log's own RFC 8785 encoder, with hostile strings anywhere (the agent chooses the path,
    /// and may try to smuggle `"sandbox_id":"…"` into it), "the line holds the needle" is the
    /// same as "the field has the value" — an agent can neither hide its record from a filtered
    /// view nor slip it into another agent's or sandbox's.
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
                Just("sbx".to_string()),
                Just("x\",\"sandbox_id\":\"sbx".to_string()),
                Just("\"agent_id\":\"codex".to_string()),
                Just("codex".to_string()),
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
                wanted_agent in text(),
                sandbox in proptest::option::of(text()),
                wanted_sandbox in text(),
            ) {
                let event = AuditEvent {
                    v: 1,
                    seq: 7,
                    ts: "2026-11-26T10:00:00.000000001Z".into(),
                    event_id: "e".into(),
                    decision,
                    reason,
                    agent_id: agent.clone(),
                    session_id: "s".into(),
                    token_id: "t".into(),
                    intent: Intent { action_class: class.clone(), method: "GET".into(), host: "h".into(), path, ..Default::default() },
                    policy: PolicyRef { bundle: "b".into(), determining: vec!["p".into()] },
                    latency_us: 1,
                    prev: "0".repeat(64),
                    sig: Some("c2ln".into()),
                    // A sandboxed run's records carry it (the writer omits it when empty).
                    sandbox_id: sandbox.clone().unwrap_or_default(),
                };
                let value = serde_json::to_value(&event).unwrap();
                let line = crate::audit::canonical::to_vec(&value).unwrap();
                prop_assert!(AuditSource.is_canonical(&line));
                // The writer's records take the fast path.
                prop_assert_eq!(decision_ts(&line), Some("2026-11-26T10:00:00.000000001Z"));
                let record = AuditSource.parse(&line, 0);
                prop_assert_eq!(&record.kind, &Kind::Event);
                for (predicate, equal) in [
                    (FieldEquals::new("decision", wanted_decision.as_str()), decision == wanted_decision),
                    (FieldEquals::new("intent.action_class", wanted_class.clone()), class == wanted_class),
                    (FieldEquals::new("agent_id", wanted_agent.clone()), agent == wanted_agent),
                    (FieldEquals::new("sandbox_id", wanted_sandbox.clone()), !event.sandbox_id.is_empty() && event.sandbox_id == wanted_sandbox),
                ] {
                    let needle = predicate.needle().unwrap();
                    let present = memchr::memmem::find(&line, &needle).is_some();
                    prop_assert_eq!(present, equal);
                    prop_assert_eq!(predicate.matches(&record, None), equal);
                }
            }

            /// The fast path accepts only what serde_json's `Shape` accepts, with the same `ts`:
            /// real lines with a cut, an insertion and a deletion anywhere.
            #[test]
            fn the_fast_path_never_accepts_what_serde_refuses(
                cut in 0usize..500,
                insert in prop_oneof![
                    Just(String::new()),
                    "[a-z0-9\"\\\\{}\\[\\]:,. \\-eE+tfnul/]{0,6}",
                    Just(",\"seq\":1".to_string()),
                    Just(",\"intent\":{}".to_string()),
                    Just("\\u0041".to_string()),
                    Just("\\ud800".to_string()),
                ],
                remove in 0usize..8,
            ) {
                let base = LINE.as_bytes();
                let cut = cut.min(base.len());
                let mut line = base[..cut].to_vec();
                line.extend_from_slice(insert.as_bytes());
                let rest = &base[cut..];
                line.extend_from_slice(&rest[remove.min(rest.len())..]);
                if let Some(ts) = decision_ts(&line) {
                    let shape = serde_json::from_slice::<Shape<'_>>(&line);
                    prop_assert!(shape.is_ok(), "fast path accepted what serde refuses: {}", String::from_utf8_lossy(&line));
                    prop_assert_eq!(shape.unwrap().ts, ts);
                }
            }

            #[test]
            fn any_bytes_parse_without_panicking(line in proptest::collection::vec(any::<u8>(), 0..300)) {
                let record = AuditSource.parse(&line, 3);
                prop_assert_eq!(&record.raw, &line);
            }
        }
    }
}
