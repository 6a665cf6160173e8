//! The canonical bytes of a decision event, written field by field in RFC 8785 order with no
//! `serde_json::Value` in between — the two hot paths of the log:
//! - the writer encodes a draft once into a [`EventTemplate`] whose chain fields (`prev`, `seq`,
//!   `ts`) and `sig` are holes, filled when the record is chained;
//! - the verifier parses a line into borrowed fields and re-encodes them: a line equal to its
//!   re-encoding is canonical and holds exactly the event's members ([`check_event_line`]);
//!   anything else goes the general way (`record::parse_line`), which decides.
//!
//! Both must give the bytes `canonical::write_object` gives for the event's serde form; property
//! tests hold them together (below, and tests/audit.rs).

use std::borrow::Cow;

use serde::Deserialize;

use super::canonical::{CanonicalError, MemberSlot, write_string, write_uint};
use super::event::{Decision, DraftRef};

/// The fields of an event, borrowed; a chain field or `sig` left `None` is a hole.
struct Fields<'a, S> {
    agent_id: &'a str,
    decision: Decision,
    event_id: &'a str,
    action_class: &'a str,
    addr: Option<&'a str>,
    host: &'a str,
    method: &'a str,
    path: &'a str,
    port: Option<u16>,
    latency_us: u64,
    bundle: &'a str,
    determining: &'a [S],
    prev: Option<&'a str>,
    reason: &'a str,
    sandbox_id: &'a str,
    seq: Option<u64>,
    session_id: &'a str,
    sig: Option<&'a str>,
    token_id: &'a str,
    ts: Option<&'a str>,
    v: u64,
}

/// Byte offsets in what [`write_fields`] wrote: where each hole is (for a string, between its
/// quotes), and the `sig` member (`sig.0..sig.1`; empty when `sig` is a hole).
#[derive(Debug, Clone, Copy, Default)]
struct Offsets {
    prev: usize,
    seq: usize,
    ts: usize,
    sig: (usize, usize),
}

fn write_fields<S: AsRef<str>>(
    f: &Fields<'_, S>,
    out: &mut Vec<u8>,
) -> Result<Offsets, CanonicalError> {
    let mut at = Offsets::default();
    let string_or_hole = |value: Option<&str>, out: &mut Vec<u8>| match value {
        Some(text) => {
            write_string(text, out);
            0
        }
        None => {
            out.extend_from_slice(b"\"\"");
            out.len() - 1
        }
    };
    out.extend_from_slice(b"{\"agent_id\":");
    write_string(f.agent_id, out);
    out.extend_from_slice(b",\"decision\":\"");
    out.extend_from_slice(f.decision.as_str().as_bytes());
    out.extend_from_slice(b"\",\"event_id\":");
    write_string(f.event_id, out);
    out.extend_from_slice(b",\"intent\":{\"action_class\":");
    write_string(f.action_class, out);
    if let Some(addr) = f.addr {
        out.extend_from_slice(b",\"addr\":");
        write_string(addr, out);
    }
    out.extend_from_slice(b",\"host\":");
    write_string(f.host, out);
    out.extend_from_slice(b",\"method\":");
    write_string(f.method, out);
    out.extend_from_slice(b",\"path\":");
    write_string(f.path, out);
    if let Some(port) = f.port {
        out.extend_from_slice(b",\"port\":");
        write_uint(u64::from(port), out)?;
    }
    out.extend_from_slice(b"},\"latency_us\":");
    write_uint(f.latency_us, out)?;
    out.extend_from_slice(b",\"policy\":{\"bundle\":");
    write_string(f.bundle, out);
    out.extend_from_slice(b",\"determining\":[");
    for (i, id) in f.determining.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_string(id.as_ref(), out);
    }
    out.extend_from_slice(b"]},\"prev\":");
    at.prev = string_or_hole(f.prev, out);
    out.extend_from_slice(b",\"reason\":");
    write_string(f.reason, out);
    if !f.sandbox_id.is_empty() {
        out.extend_from_slice(b",\"sandbox_id\":");
        write_string(f.sandbox_id, out);
    }
    out.extend_from_slice(b",\"seq\":");
    match f.seq {
        Some(seq) => write_uint(seq, out)?,
        None => at.seq = out.len(),
    }
    out.extend_from_slice(b",\"session_id\":");
    write_string(f.session_id, out);
    let sig_start = out.len();
    if let Some(sig) = f.sig {
        out.extend_from_slice(b",\"sig\":");
        write_string(sig, out);
    }
    at.sig = (sig_start, out.len());
    out.extend_from_slice(b",\"token_id\":");
    write_string(f.token_id, out);
    out.extend_from_slice(b",\"ts\":");
    at.ts = string_or_hole(f.ts, out);
    out.extend_from_slice(b",\"v\":");
    write_uint(f.v, out)?;
    out.push(b'}');
    Ok(at)
}

/// A draft encoded once, before it is chained: the canonical bytes of the event with empty
/// `prev` and `ts`, no `seq` and no `sig`, and where those go.
#[derive(Debug, Clone)]
pub struct EventTemplate {
    bytes: Vec<u8>,
    at: Offsets,
}

/// A chained record before its signature: the signed message — domain tag, then the canonical
/// bytes of the record without `sig` (its *body*) — and where `sig` goes in the body.
#[derive(Debug, Clone)]
pub struct Unsigned {
    pub message: Vec<u8>,
    pub domain_len: usize,
    pub sig_slot: MemberSlot,
}

impl Unsigned {
    /// The canonical bytes of the record without `sig`.
    pub fn body(&self) -> &[u8] {
        &self.message[self.domain_len..]
    }
}

impl EventTemplate {
    /// Encode `draft` as an event with id `event_id` of format `version`.
    pub fn new(draft: &DraftRef<'_>, event_id: &str, version: u32) -> Result<Self, CanonicalError> {
        let fields = Fields {
            agent_id: draft.agent_id,
            decision: draft.decision,
            event_id,
            action_class: draft.action_class,
            addr: draft.addr,
            host: draft.host,
            method: draft.method,
            path: draft.path,
            port: draft.port,
            latency_us: draft.latency_us,
            bundle: draft.bundle,
            determining: draft.determining,
            prev: None,
            reason: draft.reason,
            sandbox_id: draft.sandbox_id,
            seq: None,
            session_id: draft.session_id,
            sig: None,
            token_id: draft.token_id,
            ts: None,
            v: u64::from(version),
        };
        let mut bytes = Vec::with_capacity(640);
        let at = write_fields(&fields, &mut bytes)?;
        Ok(Self { bytes, at })
    }

    /// The record once chained: `domain` followed by the body with `prev`, `seq` and `ts` filled
    /// in (`prev` is 64 hex digits and `ts` an RFC 3339 time: neither needs escaping).
    pub fn fill(
        &self,
        domain: &[u8],
        prev: &str,
        seq: u64,
        ts: &str,
    ) -> Result<Unsigned, CanonicalError> {
        let t = &self.bytes;
        let at = self.at;
        let mut message = Vec::with_capacity(domain.len() + t.len() + prev.len() + ts.len() + 24);
        message.extend_from_slice(domain);
        message.extend_from_slice(&t[..at.prev]);
        message.extend_from_slice(prev.as_bytes());
        message.extend_from_slice(&t[at.prev..at.seq]);
        write_uint(seq, &mut message)?;
        let sig_at = message.len() - domain.len() + (at.sig.0 - at.seq);
        message.extend_from_slice(&t[at.seq..at.ts]);
        message.extend_from_slice(ts.as_bytes());
        message.extend_from_slice(&t[at.ts..]);
        Ok(Unsigned {
            message,
            domain_len: domain.len(),
            sig_slot: MemberSlot::after_member(sig_at),
        })
    }
}

/// A decision event as the verifier reads it: strings borrowed from the line where they hold no
/// escapes. Unknown members are ignored here — and caught by the re-encoding.
#[derive(Deserialize)]
struct EventLine<'a> {
    #[serde(borrow)]
    agent_id: Cow<'a, str>,
    decision: Decision,
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    intent: IntentLine<'a>,
    latency_us: u64,
    #[serde(borrow)]
    policy: PolicyLine<'a>,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(borrow)]
    reason: Cow<'a, str>,
    #[serde(borrow, default)]
    sandbox_id: Option<Cow<'a, str>>,
    seq: u64,
    #[serde(borrow)]
    session_id: Cow<'a, str>,
    #[serde(borrow)]
    sig: Cow<'a, str>,
    #[serde(borrow)]
    token_id: Cow<'a, str>,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    v: u64,
}

#[derive(Deserialize)]
struct IntentLine<'a> {
    #[serde(borrow)]
    action_class: Cow<'a, str>,
    #[serde(borrow, default)]
    addr: Option<Cow<'a, str>>,
    #[serde(borrow)]
    host: Cow<'a, str>,
    #[serde(borrow)]
    method: Cow<'a, str>,
    #[serde(borrow)]
    path: Cow<'a, str>,
    #[serde(default)]
    port: Option<u16>,
}

#[derive(Deserialize)]
struct PolicyLine<'a> {
    #[serde(borrow)]
    bundle: Cow<'a, str>,
    #[serde(borrow)]
    determining: Vec<Cow<'a, str>>,
}

/// What the verifier needs of a decision event line that passed [`check_event_line`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedEvent {
    pub v: u64,
    pub seq: u64,
    pub prev: String,
    pub sig: String,
    /// Byte range of `,"sig":"…"` in the line.
    pub sig_member: (usize, usize),
}

/// The fast path of verification: `Some` when `line` is a decision event in exactly the
/// canonical bytes this module writes (then it is canonical, holds exactly the event's members,
/// and the general parser would read the same values); `None` for anything else, which the
/// caller hands to the general parser. `scratch` is reused between calls.
pub fn check_event_line(line: &[u8], scratch: &mut Vec<u8>) -> Option<CheckedEvent> {
    let event: EventLine<'_> = serde_json::from_slice(line).ok()?;
    let sandbox_id = event.sandbox_id.as_deref().unwrap_or("");
    if event.sandbox_id.is_some() && sandbox_id.is_empty() {
        return None; // `"sandbox_id":""` is not what the writer writes: decided the general way
    }
    let fields = Fields {
        agent_id: &event.agent_id,
        decision: event.decision,
        event_id: &event.event_id,
        action_class: &event.intent.action_class,
        addr: event.intent.addr.as_deref(),
        host: &event.intent.host,
        method: &event.intent.method,
        path: &event.intent.path,
        port: event.intent.port,
        latency_us: event.latency_us,
        bundle: &event.policy.bundle,
        determining: &event.policy.determining,
        prev: Some(&event.prev),
        reason: &event.reason,
        sandbox_id,
        seq: Some(event.seq),
        session_id: &event.session_id,
        sig: Some(&event.sig),
        token_id: &event.token_id,
        ts: Some(&event.ts),
        v: event.v,
    };
    scratch.clear();
    let at = write_fields(&fields, scratch).ok()?;
    (scratch.as_slice() == line).then(|| CheckedEvent {
        v: event.v,
        seq: event.seq,
        prev: event.prev.into_owned(),
        sig: event.sig.into_owned(),
        sig_member: at.sig,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::audit::canonical;
    use crate::audit::event::{AuditEvent, Intent, PolicyRef};
    use crate::audit::record;

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,12}",
            "[\\x00-\\x1f\"\\\\/\\x7f]{0,6}",
            "[a-z\u{e000}-\u{ffff}\u{10000}-\u{10ffff}]{0,4}",
        ]
    }

    fn event() -> impl Strategy<Value = AuditEvent> {
        (
            (0u64..(1 << 53), text(), text(), text(), text(), text()),
            (text(), text(), text(), prop::collection::vec(text(), 0..3)),
            (
                0u64..(1 << 53),
                prop::sample::select(Decision::ALL.to_vec()),
                proptest::option::of(any::<u16>()),
                proptest::option::of(text()),
                1u32..3,
            ),
        )
            .prop_map(
                |(
                    (seq, reason, agent, session, token, sandbox),
                    (class, host, path, determining),
                    (latency, decision, port, addr, v),
                )| AuditEvent {
                    v,
                    seq,
                    ts: "2026-11-26T23:22:22.123456789Z".into(),
                    event_id: "0193a1c2-7d4e-7b5f-9a31-2f0c6a1d9e77".into(),
                    decision,
                    reason,
                    agent_id: agent,
                    session_id: session,
                    token_id: token,
                    sandbox_id: sandbox,
                    intent: Intent {
                        action_class: class,
                        method: "POST".into(),
                        host,
                        path,
                        port,
                        addr,
                    },
                    policy: PolicyRef {
                        bundle: "b".into(),
                        determining,
                    },
                    latency_us: latency,
                    prev: "ab".repeat(32),
                    sig: None,
                },
            )
    }

    fn draft_of(event: &AuditEvent) -> crate::audit::event::AuditDraft {
        crate::audit::event::AuditDraft {
            decision: event.decision,
            reason: event.reason.clone(),
            agent_id: event.agent_id.clone(),
            session_id: event.session_id.clone(),
            token_id: event.token_id.clone(),
            sandbox_id: event.sandbox_id.clone(),
            intent: event.intent.clone(),
            policy: event.policy.clone(),
            latency_us: event.latency_us,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A filled template is the generic canonical encoding of the event without `sig`, and
        /// its `sig` slot is where the generic encoder puts `sig`.
        #[test]
        fn a_filled_template_is_the_canonical_event(event in event()) {
            let draft = draft_of(&event);
            let template = EventTemplate::new(&draft.borrowed(), &event.event_id, event.v).unwrap();
            let unsigned = template
                .fill(b"tag\n", &event.prev, event.seq, &event.ts)
                .unwrap();
            let generic = canonical::to_vec(&serde_json::to_value(&event).unwrap()).unwrap();
            prop_assert_eq!(unsigned.body(), generic.as_slice());
            prop_assert_eq!(&unsigned.message[..4], b"tag\n");
            let with_sig = AuditEvent { sig: Some("c2ln".into()), ..event };
            let mut joined = Vec::new();
            let mut value = Vec::new();
            write_string("c2ln", &mut value);
            unsigned.sig_slot.write_joined(unsigned.body(), "sig", &value, &mut joined);
            let generic = canonical::to_vec(&serde_json::to_value(&with_sig).unwrap()).unwrap();
            prop_assert_eq!(joined, generic);
        }

        /// The fast path accepts exactly the canonical lines of events, and reads what the
        /// general parser reads.
        #[test]
        fn the_fast_path_agrees_with_the_general_parser(event in event()) {
            let sig = "A".repeat(86) + "==";
            let line = canonical::to_vec(
                &serde_json::to_value(AuditEvent { sig: Some(sig.clone()), ..event.clone() }).unwrap(),
            )
            .unwrap();
            let mut scratch = Vec::new();
            let fast = check_event_line(&line, &mut scratch).expect("a canonical event line");
            prop_assert_eq!((fast.v, fast.seq), (u64::from(event.v), event.seq));
            prop_assert_eq!(&fast.prev, &event.prev);
            prop_assert_eq!(&fast.sig, &sig);
            let member = &line[fast.sig_member.0..fast.sig_member.1];
            let expected = format!(",\"sig\":\"{sig}\"");
            prop_assert_eq!(member, expected.as_bytes());
            // Re-encoded any other way (pretty, reordered), the fast path declines.
            let pretty = serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(&line).unwrap()).unwrap();
            prop_assert!(check_event_line(&pretty, &mut scratch).is_none());
        }
    }

    #[test]
    fn lines_the_writer_does_not_write_go_the_general_way() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let mut object = record::to_object(&AuditEvent {
            v: 2,
            seq: 1,
            ts: "t".into(),
            event_id: "e".into(),
            decision: Decision::Allow,
            reason: String::new(),
            agent_id: String::new(),
            session_id: String::new(),
            token_id: String::new(),
            sandbox_id: String::new(),
            intent: Intent::default(),
            policy: PolicyRef::default(),
            latency_us: 0,
            prev: record::GENESIS_PREV.into(),
            sig: None,
        });
        let mut scratch = Vec::new();
        let sealed = record::seal(object.clone(), &key);
        assert!(check_event_line(&sealed.line, &mut scratch).is_some());
        // An extra member, an empty sandbox id: canonical, but not the writer's shape.
        for (name, value) in [("extra", "x"), ("sandbox_id", "")] {
            object.insert(name.into(), value.into());
            let sealed = record::seal(object.clone(), &key);
            assert!(
                check_event_line(&sealed.line, &mut scratch).is_none(),
                "{name}"
            );
            object.remove(name);
        }
    }
}
