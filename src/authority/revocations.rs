//! Revocations: `revocations.txt` in the user data dir is the source of truth, one line per
//! revoked token — `token_id<TAB>revoked_at<TAB>expires<TAB>reason`, times in RFC 3339 and
//! `expires` the time after which the token cannot be valid anyway (`-` when unknown).
//! `Revoke` appends a line; a hand edit of the file is picked up by the watcher. Every new entry
//! is broadcast to the `WatchRevocations` streams.
//!
//! Revocations stay small: an entry whose token has expired protects nothing, so
//! [`RevocationStore::prune`] drops it, compacting the file atomically (temp file + rename);
//! comments and lines it cannot parse are kept as they are.
//!
//! Hand-written lines may separate fields with spaces, may leave out `expires` (the older
//! three-field form `token_id revoked_at reason`), and may be a bare token id (it is then dated
//! when first seen). Blank lines and lines starting with `#` are ignored; an unparseable line is
//! logged and skipped.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, SecondsFormat, Utc};
use tokio::sync::broadcast;

use crate::error::Hinted;

/// How many live events a slow stream may fall behind before it is told to reconnect.
pub const BROADCAST_CAPACITY: usize = 4096;

/// Written in the `expires` column when the token's expiry is unknown (never pruned).
const UNKNOWN_EXPIRY: &str = "-";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revocation {
    pub token_id: String,
    pub revoked_at: DateTime<Utc>,
    /// After this the token is invalid anyway (its `exp`, or a bound on it); `None`: unknown.
    pub expires_at: Option<DateTime<Utc>>,
    pub reason: String,
    /// The store revision that recorded it (etcd store); 0 with the files store.
    pub revision: u64,
}

impl Revocation {
    /// A revocation made now; an empty (or all-control) reason reads `unspecified`.
    pub fn now(token_id: &str, expires_at: Option<DateTime<Utc>>, reason: &str) -> Self {
        let reason = match sanitize(reason) {
            r if r.is_empty() => "unspecified".to_string(),
            r => r,
        };
        Self {
            token_id: token_id.to_string(),
            revoked_at: Utc::now(),
            expires_at,
            reason,
            revision: 0,
        }
    }

    /// Whether the revoked token can no longer be valid at `now` (the verifiers' clock
    /// leeway included), so the entry protects nothing.
    pub fn is_moot(&self, now: DateTime<Utc>) -> bool {
        self.expires_at
            .is_some_and(|exp| exp + chrono::Duration::seconds(super::token::LEEWAY_SECONDS) < now)
    }
}

/// One line of the file, newline included.
pub fn format_line(entry: &Revocation) -> String {
    format!(
        "{}\t{}\t{}\t{}\n",
        entry.token_id,
        entry
            .revoked_at
            .to_rfc3339_opts(SecondsFormat::Micros, true),
        entry.expires_at.map_or_else(
            || UNKNOWN_EXPIRY.to_string(),
            |t| t.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        sanitize(&entry.reason)
    )
}

/// The latest a token with id `token_id` can expire, when its id is a UUID v7 (as the
/// Authority's are): its issue time plus the longest lifetime the Authority grants.
pub fn expiry_bound(token_id: &str, max_ttl: std::time::Duration) -> Option<DateTime<Utc>> {
    let uuid = uuid::Uuid::parse_str(token_id).ok()?;
    let (secs, nanos) = uuid.get_timestamp()?.to_unix();
    let issued = DateTime::from_timestamp(i64::try_from(secs).ok()?, nanos)?;
    Some(issued + chrono::Duration::from_std(max_ttl).ok()?)
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|err| format!("{text:?} is not an RFC 3339 time: {err}"))
}

/// Reasons live on one line of a tab-separated file (and every store keeps them so).
pub fn sanitize(reason: &str) -> String {
    reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim()
        .to_string()
}

/// Parse one line; `Ok(None)` for blanks and comments. `first_seen` dates a bare id.
pub fn parse_line(line: &str, first_seen: DateTime<Utc>) -> Result<Option<Revocation>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (token_id, rest) = split_word(line);
    validate_token_id(token_id)?;
    let (time, rest) = split_word(rest);
    if time.is_empty() {
        return Ok(Some(Revocation {
            token_id: token_id.to_string(),
            revoked_at: first_seen,
            expires_at: None,
            reason: "file-based revocation".to_string(),
            revision: 0,
        }));
    }
    let revoked_at = parse_time(time)?;
    // The `expires` column is `-` or a time; anything else starts the reason (older lines).
    let (word, after) = split_word(rest);
    let (expires_at, reason) = if word == UNKNOWN_EXPIRY {
        (None, after)
    } else if let Ok(at) = parse_time(word) {
        (Some(at), after)
    } else {
        (None, rest)
    };
    Ok(Some(Revocation {
        token_id: token_id.to_string(),
        revoked_at,
        expires_at,
        reason: reason.trim().to_string(),
        revision: 0,
    }))
}

/// The first whitespace-separated word and the rest (leading whitespace trimmed).
fn split_word(text: &str) -> (&str, &str) {
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim_start()),
        None => (text, ""),
    }
}

/// What `Revoke` accepts: the id of a token (a UUID, as the Authority issues them).
pub fn validate_uuid(id: &str) -> Result<(), String> {
    uuid::Uuid::parse_str(id).map(|_| ()).map_err(|_| {
        format!("{id:?} is not a token id (a UUID such as 0193b7a2-5c1e-7d33-9a4e-6f0e2b8c1d42)")
    })
}

/// Token ids in the file are single printable words (hand edits may name any).
pub fn validate_token_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("token id is empty".into());
    }
    if id.len() > 256 || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{id:?} is not a token id (one word, at most 256 characters)"
        ));
    }
    Ok(())
}

struct State {
    entries: Vec<Revocation>,
    ids: HashSet<String>,
}

pub struct RevocationStore {
    path: PathBuf,
    state: Mutex<State>,
    live: broadcast::Sender<Revocation>,
}

impl RevocationStore {
    /// Open (creating it, mode 0600, if missing) and read the file.
    pub fn open(path: &Path) -> Result<Arc<Self>, Hinted> {
        if let Some(dir) = path.parent() {
            crate::config::dirs::ensure_private_dir(dir)?;
        }
        if !path.exists() {
            crate::fsutil::write_atomic(path, b"", 0o600, crate::fsutil::Durability::Durable)?;
        }
        let entries = read_file(path)?;
        let ids = entries.iter().map(|e| e.token_id.clone()).collect();
        let (live, _) = broadcast::channel(BROADCAST_CAPACITY);
        Ok(Arc::new(Self {
            path: path.to_path_buf(),
            state: Mutex::new(State { entries, ids }),
            live,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_revoked(&self, token_id: &str) -> bool {
        self.lock().ids.contains(token_id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Revoke `token_id` (invalid anyway after `expires_at`, when known): append a line
    /// (fsynced) and broadcast it. Returns whether it was new and the entry in force.
    pub fn revoke(
        &self,
        token_id: &str,
        reason: &str,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<(bool, Revocation), Hinted> {
        validate_token_id(token_id).map_err(Hinted::new)?;
        let mut state = self.lock();
        if let Some(existing) = state.entries.iter().find(|e| e.token_id == token_id) {
            return Ok((false, existing.clone()));
        }
        let entry = Revocation::now(token_id, expires_at, reason);
        append(&self.path, &format_line(&entry))?;
        state.ids.insert(entry.token_id.clone());
        state.entries.push(entry.clone());
        let _ = self.live.send(entry.clone());
        Ok((true, entry))
    }

    /// Re-read the file after a hand edit; new entries are broadcast.
    pub fn reload(&self) {
        let entries = match read_file(&self.path) {
            Ok(entries) => entries,
            Err(err) => {
                tracing::error!(
                    path = %self.path.display(),
                    "revocations reload failed, keeping what was loaded: {}",
                    err.message()
                );
                return;
            }
        };
        let mut state = self.lock();
        let ids: HashSet<String> = entries.iter().map(|e| e.token_id.clone()).collect();
        let removed = state.ids.difference(&ids).count();
        if removed > 0 {
            tracing::warn!(
                removed,
                "{removed} revocation(s) were removed from {}; connected sidecars keep enforcing \
                 them until they restart",
                self.path.display()
            );
        }
        let fresh: Vec<Revocation> = entries
            .iter()
            .filter(|e| !state.ids.contains(&e.token_id))
            .cloned()
            .collect();
        state.entries = entries;
        state.ids = ids;
        for entry in fresh {
            tracing::info!(token_id = %entry.token_id, reason = %entry.reason, "revocation added to {}", self.path.display());
            let _ = self.live.send(entry);
        }
    }

    /// Drop the entries whose tokens can no longer be valid at `now`, rewriting the file
    /// atomically (comments and unparseable lines kept). Returns how many were dropped.
    pub fn prune(&self, now: DateTime<Utc>) -> Result<usize, Hinted> {
        let mut state = self.lock();
        let moot: HashSet<String> = state
            .entries
            .iter()
            .filter(|e| e.is_moot(now))
            .map(|e| e.token_id.clone())
            .collect();
        if moot.is_empty() {
            return Ok(0);
        }
        let text = std::fs::read_to_string(&self.path).map_err(|err| {
            Hinted::new(format!("cannot read {}: {err}", self.path.display()))
                .hint("check the file's permissions (it lives in the user data dir)")
        })?;
        let mut kept = String::with_capacity(text.len());
        for line in text.lines() {
            let drop = parse_line(line, now)
                .ok()
                .flatten()
                .is_some_and(|e| moot.contains(&e.token_id));
            if !drop {
                kept.push_str(line);
                kept.push('\n');
            }
        }
        crate::fsutil::write_atomic(
            &self.path,
            kept.as_bytes(),
            0o600,
            crate::fsutil::Durability::Durable,
        )?;
        state.entries.retain(|e| !moot.contains(&e.token_id));
        state.ids.retain(|id| !moot.contains(id));
        tracing::info!(
            pruned = moot.len(),
            kept = state.entries.len(),
            "pruned {} revocation(s) of expired tokens from {}",
            moot.len(),
            self.path.display()
        );
        Ok(moot.len())
    }

    /// Entries revoked strictly after `since` (all when `None`), and a receiver for everything
    /// after them — taken together so nothing falls between replay and live.
    pub fn replay_and_subscribe(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> (Vec<Revocation>, broadcast::Receiver<Revocation>) {
        let state = self.lock();
        let replay = state
            .entries
            .iter()
            .filter(|e| since.is_none_or(|s| e.revoked_at > s))
            .cloned()
            .collect();
        (replay, self.live.subscribe())
    }
}

fn append(path: &Path, line: &str) -> Result<(), Hinted> {
    let io = |err: std::io::Error| {
        Hinted::new(format!("cannot append to {}: {err}", path.display()))
            .hint("check that the data directory is writable")
    };
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(crate::fsutil::NO_FOLLOW)
        .open(path)
        .map_err(io)?;
    // A hand edit may have left the last line without its newline.
    let needs_newline = std::fs::read(path)
        .map(|bytes| bytes.last().is_some_and(|b| *b != b'\n'))
        .unwrap_or(false);
    let text = if needs_newline {
        format!("\n{line}")
    } else {
        line.to_string()
    };
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_data().map_err(io)
}

fn read_file(path: &Path) -> Result<Vec<Revocation>, Hinted> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        Hinted::new(format!("cannot read {}: {err}", path.display()))
            .hint("check the file's permissions (it lives in the user data dir)")
    })?;
    let now = Utc::now();
    let mut entries: Vec<Revocation> = Vec::new();
    let mut seen = HashSet::new();
    for (index, line) in text.lines().enumerate() {
        match parse_line(line, now) {
            Ok(Some(entry)) => {
                if seen.insert(entry.token_id.clone()) {
                    entries.push(entry);
                }
            }
            Ok(None) => {}
            Err(reason) => tracing::warn!(
                "{}:{}: skipping unparseable revocation line: {reason}",
                path.display(),
                index + 1
            ),
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hand_written_forms() {
        let now = Utc::now();
        let bare = parse_line("abc", now).unwrap().unwrap();
        assert_eq!((bare.token_id.as_str(), bare.revoked_at), ("abc", now));
        let spaced = parse_line("abc  2026-01-02T03:04:05Z  leaked in logs", now)
            .unwrap()
            .unwrap();
        assert_eq!(spaced.reason, "leaked in logs");
        assert_eq!(spaced.revoked_at.to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert_eq!(parse_line("# note", now).unwrap(), None);
        assert_eq!(parse_line("   ", now).unwrap(), None);
        assert!(parse_line("abc yesterday", now).is_err());
        // The four-column form, with a known and an unknown expiry.
        let full = parse_line(
            "abc\t2026-01-02T03:04:05Z\t2026-01-02T04:04:05Z\tleaked",
            now,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            full.expires_at.unwrap().to_rfc3339(),
            "2026-01-02T04:04:05+00:00"
        );
        assert_eq!(full.reason, "leaked");
        let unknown = parse_line("abc 2026-01-02T03:04:05Z - in logs", now)
            .unwrap()
            .unwrap();
        assert_eq!(
            (unknown.expires_at, unknown.reason.as_str()),
            (None, "in logs")
        );
    }

    #[test]
    fn uuid_v7_ids_bound_the_expiry() {
        let id = uuid::Uuid::now_v7().to_string();
        let bound = expiry_bound(&id, std::time::Duration::from_secs(3600)).unwrap();
        let delta = (bound - Utc::now()).num_seconds();
        assert!((3590..=3600).contains(&delta), "{delta}");
        assert_eq!(expiry_bound("not-a-uuid", std::time::Duration::ZERO), None);
        let v4 = uuid::Uuid::new_v4().to_string();
        assert_eq!(expiry_bound(&v4, std::time::Duration::ZERO), None);
        assert!(validate_uuid(&v4).is_ok());
        assert!(
            validate_uuid("not-a-uuid")
                .unwrap_err()
                .contains("not-a-uuid")
        );
    }

    #[test]
    fn prune_drops_expired_tokens_and_keeps_the_rest_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("revocations.txt");
        let now = Utc::now();
        let line = |id: &str, exp: Option<DateTime<Utc>>| {
            format_line(&Revocation {
                token_id: id.into(),
                revoked_at: now - chrono::Duration::hours(2),
                expires_at: exp,
                reason: "r".into(),
                revision: 0,
            })
        };
        let text = format!(
            "# kept comment\n{}{}{}hand-id 2026-01-01T00:00:00Z old reason\n",
            line("expired", Some(now - chrono::Duration::hours(1))),
            line("live", Some(now + chrono::Duration::hours(1))),
            line("unknown", None),
        );
        std::fs::write(&path, &text).unwrap();
        let store = RevocationStore::open(&path).unwrap();
        assert_eq!(store.prune(now).unwrap(), 1);
        assert!(!store.is_revoked("expired"));
        assert!(
            store.is_revoked("live") && store.is_revoked("unknown") && store.is_revoked("hand-id")
        );
        let after = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            after,
            text.replace(&line("expired", Some(now - chrono::Duration::hours(1))), "")
        );
        assert_eq!(store.prune(now).unwrap(), 0);
        // Just inside the leeway, a token might still be accepted somewhere: kept.
        let fresh = RevocationStore::open(&dir.path().join("b.txt")).unwrap();
        fresh
            .revoke("edge", "", Some(now - chrono::Duration::seconds(1)))
            .unwrap();
        assert_eq!(fresh.prune(now).unwrap(), 0);
    }

    #[test]
    fn revoke_appends_and_reload_finds_hand_edits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("data/revocations.txt");
        let store = RevocationStore::open(&path).unwrap();
        let (replay, mut live) = store.replay_and_subscribe(None);
        assert!(replay.is_empty());
        let (new, entry) = store.revoke("t1", "bad\nreason", None).unwrap();
        assert!(new);
        assert_eq!(entry.reason, "bad reason");
        assert!(!store.revoke("t1", "again", None).unwrap().0);
        assert_eq!(live.try_recv().unwrap().token_id, "t1");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"t2")
            .unwrap();
        store.reload();
        assert_eq!(live.try_recv().unwrap().token_id, "t2");
        store.revoke("t3", "", None).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.lines().nth(2).unwrap().starts_with("t3\t"), "{text}");
        let (replay, _) = store.replay_and_subscribe(Some(entry.revoked_at));
        let ids: Vec<_> = replay.iter().map(|e| e.token_id.as_str()).collect();
        assert!(!ids.contains(&"t1"), "{ids:?}");
        assert!(ids.contains(&"t3"), "{ids:?}");
    }

    proptest! {
        #[test]
        fn formatted_lines_parse_back(
            id in "[A-Za-z0-9_-]{1,40}",
            reason in "\\PC{0,40}",
            secs in 0i64..4_000_000_000,
            micros in 0u32..1_000_000,
        ) {
            let entry = Revocation {
                token_id: id,
                revoked_at: DateTime::from_timestamp(secs, micros * 1000).unwrap(),
                expires_at: (secs % 2 == 0).then(|| DateTime::from_timestamp(secs + 60, 0).unwrap()),
                reason: sanitize(&reason),
                revision: 0,
            };
            let parsed = parse_line(&format_line(&entry), Utc::now()).unwrap().unwrap();
            prop_assert_eq!(parsed, entry);
        }
    }
}
