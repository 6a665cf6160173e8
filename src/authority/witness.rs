//! Witnessed checkpoints: a Sidecar reports every signed `audit.checkpoint` to the Authority,
//! which keeps the latest per Sidecar in its data dir. Deleting the tail of the log *and* its
//! checkpoint then still leaves a trace elsewhere: `firma audit verify --witness` compares the
//! local log with what the Authority witnessed.
//!
//! The Authority checks every report against the audit public key registered for that Sidecar
//! and refuses one that does not verify or goes backwards, so a rogue caller cannot plant a
//! bogus checkpoint. Keys are registered by the operator, never learnt from the reporter:
//! `<witness_keys>/<sidecar-id>.pub` (the Sidecar's `audit.pub`), and for the id `local` the
//! `audit.pub` of the Authority's own project.
//!
//! The store is `witnessed-checkpoints.jsonl` in the data dir, append-only and fsynced: one JSON
//! line per accepted report `{sidecar, key, witnessed_at, checkpoint}` (`key`: the hex SHA-256
//! fingerprint of the audit public key; `checkpoint`: the exact signed line). A new audit key
//! starts a new chain (`firma init --force` replaces the key and archives the log), so "latest"
//! is per sidecar and key.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use ed25519_dalek::VerifyingKey;
use serde::{Deserialize, Serialize};

use crate::audit::checkpoint::{self, Checkpoint, CheckpointProblem};
use crate::audit::record::{chain_hash, key_fingerprint};
use crate::config::LoadedConfig;
use crate::error::Hinted;

/// The id of the Sidecar of the Authority's own project, when it has no client certificate.
pub const LOCAL_SIDECAR: &str = "local";

/// A Sidecar's id: the common name of its client certificate (`[sidecar.authority]
/// client_cert`), else [`LOCAL_SIDECAR`].
pub fn sidecar_id(loaded: &LoadedConfig) -> Result<String, Hinted> {
    let Some(cert) = &loaded.config.sidecar.authority.client_cert else {
        return Ok(LOCAL_SIDECAR.to_string());
    };
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let der = CertificateDer::from_pem_file(cert).map_err(|err| {
        Hinted::new(format!("cannot read client_cert {}: {err}", cert.display()))
            .hint("fix [sidecar.authority] client_cert in firma.toml")
    })?;
    super::roles::role_of_certificate(der.as_ref())
        .map(|(_, name)| name)
        .map_err(|why| {
            Hinted::new(format!("client_cert {} {why}", cert.display()))
                .hint("issue one with `firma authority cert issue --role sidecar --name <id>`")
        })
}

/// One accepted report, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witnessed {
    pub sidecar: String,
    /// Hex SHA-256 fingerprint of the audit public key the checkpoint verified with.
    pub key: String,
    pub witnessed_at: String,
    /// The signed checkpoint line, exactly as reported (without its newline).
    pub checkpoint: String,
}

impl Witnessed {
    /// The checkpoint it holds (already verified when it was stored).
    pub fn parsed(&self, key: &VerifyingKey) -> Result<Checkpoint, CheckpointProblem> {
        checkpoint::parse(format!("{}\n", self.checkpoint).as_bytes(), key)
    }
}

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No audit key is registered for the Sidecar.
    UnknownSidecar(String),
    /// Not a checkpoint, or not signed by the registered key.
    Invalid(String),
    /// Behind, or beside (same seq, other head), what was witnessed.
    Backwards(String),
    /// The store could not take it now (etcd without quorum): report again later.
    Unavailable(String),
}

/// (sidecar id, audit key fingerprint): one chain of checkpoints.
pub type Chain = (String, String);
/// The latest witnessed `seq`, `head` and stored record of a chain.
pub type Latest = (u64, String, Witnessed);

/// What a verified report means for the chain it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Accepted {
    /// The chain already holds this checkpoint (`seq`): nothing to store.
    Already(u64),
    /// A checkpoint ahead of the chain's latest: store `record` as the chain's latest.
    Ahead {
        chain: Chain,
        seq: u64,
        head: String,
        record: Witnessed,
    },
}

/// The audit keys the operator registered, and the checks every report passes — the same for
/// every store.
pub struct WitnessKeys {
    keys_dir: PathBuf,
    local_key: Option<PathBuf>,
}

impl WitnessKeys {
    pub fn new(keys_dir: &Path, local_key: Option<PathBuf>) -> Self {
        Self {
            keys_dir: keys_dir.to_path_buf(),
            local_key,
        }
    }

    /// The audit key registered for `sidecar`, and the file it came from.
    pub fn registered_key(&self, sidecar: &str) -> Option<(VerifyingKey, PathBuf)> {
        let file = if sidecar == LOCAL_SIDECAR {
            let own = self.keys_dir.join(format!("{LOCAL_SIDECAR}.pub"));
            if own.exists() {
                Some(own)
            } else {
                self.local_key.clone()
            }
        } else if crate::config::load::validate_agent_id(sidecar).is_ok() {
            Some(self.keys_dir.join(format!("{sidecar}.pub")))
        } else {
            None
        }?;
        let key = crate::config::keys::load_verifying_key(&file).ok()?;
        Some((key, file))
    }

    /// Verify `line` (the bytes of an `audit.checkpoint`) from `sidecar` with its registered key
    /// and place it against its chain's latest (`latest` looks a chain up).
    pub fn check(
        &self,
        sidecar: &str,
        line: &[u8],
        latest: impl FnOnce(&Chain) -> Option<(u64, String)>,
    ) -> Result<Accepted, Refusal> {
        let (key, _) = self.registered_key(sidecar).ok_or_else(|| {
            Refusal::UnknownSidecar(format!(
                "no audit key is registered for sidecar {sidecar:?}: the operator copies its \
                 audit.pub to {}",
                self.keys_dir.join(format!("{sidecar}.pub")).display()
            ))
        })?;
        let checkpoint = checkpoint::parse(line, &key).map_err(|problem| {
            Refusal::Invalid(format!(
                "the checkpoint does not verify with the audit key registered for {sidecar:?}: {problem}"
            ))
        })?;
        let chain = (sidecar.to_string(), key_fingerprint(&key));
        if let Some((seq, head)) = latest(&chain) {
            if checkpoint.seq < seq {
                return Err(Refusal::Backwards(format!(
                    "checkpoint seq {} is behind the witnessed seq {seq}",
                    checkpoint.seq
                )));
            }
            if checkpoint.seq == seq {
                if checkpoint.head != head {
                    return Err(Refusal::Backwards(format!(
                        "checkpoint seq {seq} names head {} but {head} was witnessed for it",
                        checkpoint.head
                    )));
                }
                return Ok(Accepted::Already(seq));
            }
        }
        let text = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(line)).into_owned();
        let record = Witnessed {
            sidecar: sidecar.to_string(),
            key: chain.1.clone(),
            witnessed_at: Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true),
            checkpoint: text,
        };
        Ok(Accepted::Ahead {
            chain,
            seq: checkpoint.seq,
            head: checkpoint.head,
            record,
        })
    }

    /// The latest checkpoint witnessed for `sidecar` under its currently registered key, from
    /// the chains in `latest`.
    pub fn latest_of(
        &self,
        sidecar: &str,
        latest: &HashMap<Chain, Latest>,
    ) -> Option<(Witnessed, String)> {
        let (key, _) = self.registered_key(sidecar)?;
        let fingerprint = key_fingerprint(&key);
        latest
            .get(&(sidecar.to_string(), fingerprint.clone()))
            .map(|(_, _, w)| (w.clone(), fingerprint))
    }
}

/// The files store's side: `witnessed-checkpoints.jsonl`.
pub struct WitnessStore {
    path: PathBuf,
    keys: WitnessKeys,
    /// Latest accepted (seq, head, record) per (sidecar, key fingerprint).
    latest: Mutex<HashMap<Chain, Latest>>,
}

impl WitnessStore {
    /// Open (creating the file 0600 if missing) and read what was witnessed before.
    pub fn open(path: &Path, keys_dir: &Path, local_key: Option<PathBuf>) -> Result<Self, Hinted> {
        if let Some(dir) = path.parent() {
            crate::config::dirs::ensure_private_dir(dir)?;
        }
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(err) => {
                return Err(
                    Hinted::new(format!("cannot read {}: {err}", path.display()))
                        .hint("check the file's permissions (it lives in the user data dir)"),
                );
            }
        };
        let mut latest = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            match parse_record(line) {
                Ok((chain, entry)) => {
                    latest.insert(chain, entry);
                }
                Err(why) => tracing::warn!(
                    "{}:{}: skipping an unreadable witnessed checkpoint: {why}",
                    path.display(),
                    index + 1
                ),
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            keys: WitnessKeys::new(keys_dir, local_key),
            latest: Mutex::new(latest),
        })
    }

    /// The audit key registered for `sidecar`, and the file it came from.
    pub fn registered_key(&self, sidecar: &str) -> Option<(VerifyingKey, PathBuf)> {
        self.keys.registered_key(sidecar)
    }

    /// Witness `line` (the bytes of an `audit.checkpoint`) from `sidecar`. Returns the
    /// witnessed `seq`.
    pub fn report(&self, sidecar: &str, line: &[u8]) -> Result<u64, Refusal> {
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        let accepted = self.keys.check(sidecar, line, |chain| {
            latest.get(chain).map(|(seq, head, _)| (*seq, head.clone()))
        })?;
        match accepted {
            Accepted::Already(seq) => Ok(seq),
            Accepted::Ahead {
                chain,
                seq,
                head,
                record,
            } => {
                self.append(&record)
                    .map_err(|err| Refusal::Invalid(err.message().to_string()))?;
                latest.insert(chain, (seq, head, record));
                Ok(seq)
            }
        }
    }

    /// The latest checkpoint witnessed for `sidecar` under its currently registered key.
    pub fn latest(&self, sidecar: &str) -> Option<(Witnessed, String)> {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        self.keys.latest_of(sidecar, &latest)
    }

    fn append(&self, record: &Witnessed) -> Result<(), Hinted> {
        let io = |err: std::io::Error| {
            Hinted::new(format!("cannot append to {}: {err}", self.path.display()))
                .hint("check that the data directory is writable")
        };
        let mut line = serde_json::to_vec(record).expect("plain struct");
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&self.path)
            .map_err(io)?;
        file.write_all(&line).map_err(io)?;
        file.sync_data().map_err(io)
    }
}

/// A stored record (a JSON line, or an etcd value) and its chain.
pub fn parse_record(text: &str) -> Result<(Chain, Latest), String> {
    let w = serde_json::from_str::<Witnessed>(text).map_err(|err| err.to_string())?;
    let (seq, head) = seq_and_head(&w.checkpoint)?;
    Ok(((w.sidecar.clone(), w.key.clone()), (seq, head, w)))
}

/// `seq` and `head` of a stored checkpoint line (its signature was checked when stored).
fn seq_and_head(line: &str) -> Result<(u64, String), String> {
    #[derive(Deserialize)]
    struct Head {
        seq: u64,
        head: String,
    }
    let head: Head = serde_json::from_str(line).map_err(|err| err.to_string())?;
    Ok((head.seq, head.head))
}

/// How the local log compares with a witnessed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Verdict {
    /// The local log holds the witnessed record with the witnessed hash.
    Ok { seq: u64 },
    /// The local log ends before the witnessed record: its tail was removed.
    Truncated {
        witnessed_seq: u64,
        local_last_seq: u64,
    },
    /// The local log holds a record with the witnessed `seq` but other bytes: rewritten.
    Rewritten { seq: u64 },
}

impl Verdict {
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok { .. })
    }

    /// The finding kind, in `firma audit verify`'s vocabulary.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ok { .. } => "ok",
            Self::Truncated { .. } => "truncated",
            Self::Rewritten { .. } => "rewritten",
        }
    }
}

/// Compare the log `files` (oldest first) with `witnessed`: find the record with its `seq`.
pub fn compare(files: &[PathBuf], witnessed: &Checkpoint) -> Result<Verdict, Hinted> {
    #[derive(Deserialize)]
    struct Seq {
        seq: u64,
    }
    if witnessed.seq == 0 {
        return Ok(Verdict::Ok { seq: 0 });
    }
    let mut last = 0;
    for file in files {
        let bytes = match std::fs::read(file) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => {
                return Err(
                    Hinted::new(format!("cannot read {}: {err}", file.display()))
                        .hint("check the file's permissions"),
                );
            }
        };
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(Seq { seq }) = serde_json::from_slice::<Seq>(line) else {
                continue;
            };
            last = last.max(seq);
            if seq == witnessed.seq {
                return Ok(if hex::encode(chain_hash(line)) == witnessed.head {
                    Verdict::Ok { seq }
                } else {
                    Verdict::Rewritten { seq }
                });
            }
        }
    }
    Ok(Verdict::Truncated {
        witnessed_seq: witnessed.seq,
        local_last_seq: last,
    })
}

/// When a stored record was witnessed.
pub fn witnessed_at(record: &Witnessed) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(&record.witnessed_at)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::chain::ChainHead;

    fn checkpoint_line(key: &ed25519_dalek::SigningKey, seq: u64, hash: [u8; 32]) -> Vec<u8> {
        Checkpoint::new(Path::new("audit.jsonl"), ChainHead::advance(seq, hash)).to_line(key)
    }

    #[test]
    fn reports_verify_move_forward_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("witness-keys");
        std::fs::create_dir_all(&keys).unwrap();
        let audit = crate::config::keys::generate();
        crate::config::keys::write_pair(&keys.join("host-b.key"), &audit).unwrap();
        std::fs::rename(keys.join("host-b.key"), dir.path().join("host-b.key")).unwrap();
        let path = dir.path().join("data/witnessed-checkpoints.jsonl");
        let store = WitnessStore::open(&path, &keys, None).unwrap();

        assert_eq!(
            store.report("host-b", &checkpoint_line(&audit, 5, [1; 32])),
            Ok(5)
        );
        assert_eq!(
            store.report("host-b", &checkpoint_line(&audit, 5, [1; 32])),
            Ok(5)
        );
        assert_eq!(
            store.report("host-b", &checkpoint_line(&audit, 9, [2; 32])),
            Ok(9)
        );
        assert!(matches!(
            store.report("host-b", &checkpoint_line(&audit, 7, [3; 32])),
            Err(Refusal::Backwards(_))
        ));
        assert!(matches!(
            store.report("host-b", &checkpoint_line(&audit, 9, [4; 32])),
            Err(Refusal::Backwards(_))
        ));
        let rogue = crate::config::keys::generate();
        assert!(matches!(
            store.report("host-b", &checkpoint_line(&rogue, 99, [5; 32])),
            Err(Refusal::Invalid(_))
        ));
        assert!(matches!(
            store.report("host-c", &checkpoint_line(&audit, 1, [6; 32])),
            Err(Refusal::UnknownSidecar(_))
        ));
        assert!(matches!(
            store.report("../etc", &checkpoint_line(&audit, 1, [6; 32])),
            Err(Refusal::UnknownSidecar(_))
        ));

        let reopened = WitnessStore::open(&path, &keys, None).unwrap();
        let (latest, _) = reopened.latest("host-b").unwrap();
        assert_eq!(latest.parsed(&audit.verifying_key()).unwrap().seq, 9);
        assert!(matches!(
            reopened.report("host-b", &checkpoint_line(&audit, 8, [7; 32])),
            Err(Refusal::Backwards(_))
        ));
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 2);
    }

    #[test]
    fn compare_finds_the_witnessed_record() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("audit.jsonl");
        let lines = ["{\"seq\":1,\"x\":1}", "{\"seq\":2,\"x\":2}"];
        std::fs::write(&log, format!("{}\n{}\n", lines[0], lines[1])).unwrap();
        let witnessed = |seq, line: &str| Checkpoint {
            seq,
            head: hex::encode(chain_hash(line.as_bytes())),
            ..Checkpoint::new(&log, ChainHead::GENESIS)
        };
        let files = vec![log.clone()];
        assert_eq!(
            compare(&files, &witnessed(2, lines[1])).unwrap(),
            Verdict::Ok { seq: 2 }
        );
        assert_eq!(
            compare(&files, &witnessed(2, "other")).unwrap(),
            Verdict::Rewritten { seq: 2 }
        );
        assert_eq!(
            compare(&files, &witnessed(5, "later")).unwrap(),
            Verdict::Truncated {
                witnessed_seq: 5,
                local_last_seq: 2
            }
        );
    }
}
