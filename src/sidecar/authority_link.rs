//! The Sidecar's link to the Authority: two long-lived streams (`WatchPolicyBundle`,
//! `WatchRevocations`) and the checkpoint reports, over one or several Authority replicas.
//!
//! **Replicas and failover.** `[sidecar.authority] urls` lists replicas in order of preference
//! (a URL whose host name resolves to several addresses counts as one replica per address). All
//! three tasks use the replica in use ([`Replicas`]); when a stream drops they move to the next
//! one at once, and back off (250 ms doubling to 30 s, with jitter) only once every replica
//! failed in a row — or pause a second when the last one answered but cannot serve (its store
//! is cut off), so the fleet is served again within a second of the store coming back. A
//! Sidecar stays on the replica that works (no fail-back).
//!
//! **Resuming.** The Sidecar keeps the bundle revision and revocation position it has and
//! sends them on every (re)connect: a replica never sends an older bundle, and replays only the
//! revocations after the position — no gap, no duplicate (with the files store, which has no
//! revisions, everything is replayed and duplicates are ignored).
//!
//! **Staleness.** A bundle is enforced for at most `max_bundle_age` (default and upper bound:
//! its TTL) after the last bundle or refresh any replica sent; then every call is denied
//! (`policy_bundle_stale` in the audit record) until one arrives.
//!
//! Everything on both streams is signed by the Authority key (`authority::signed`) and checked
//! against the pinned `authority.pub` before it is used. What does not verify is refused and
//! logged (`error`), and the stream is dropped and re-dialled: a rogue process on an Authority's
//! address never gets its bundle enforced, nor can it withhold revocations from the snapshot
//! the Sidecar waits for before it reports ready. A bundle must also be newer than the one in
//! force and still within its TTL, and a snapshot at most [`SNAPSHOT_MAX_AGE`] old, so a
//! recorded genuine message cannot be replayed later.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::Channel;

use super::cedar::PolicyBundle;
use super::state::AuthorityState;
use crate::authority::client::Target;
use crate::authority::signed::{Pinned, SnapshotDigest};
use crate::authority::token::LEEWAY_SECONDS;
use crate::config::LoadedConfig;
use crate::error::Hinted;
use crate::proto::authority_client::AuthorityClient;
use crate::proto::{ReportCheckpointRequest, WatchPolicyBundleRequest, WatchRevocationsRequest};

/// How often the audit checkpoint file is looked at for a new checkpoint to report.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// How far a revocation snapshot's `sent_at` may be from this host's clock.
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(60);

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The pause before trying the next replica after one failed.
const FAILOVER_PAUSE: Duration = Duration::from_millis(50);
/// The pause after a round in which the last replica answered but could not serve.
const ANSWERED_PAUSE: Duration = Duration::from_secs(1);

/// Check the Authority's address (scheme, loopback rule, CA, client identity) and build a
/// lazily connecting channel.
pub fn channel(target: &Target) -> Result<Channel, Hinted> {
    Ok(target.endpoint()?.connect_lazy())
}

/// One replica: its channel and how it is named in logs.
struct Replica {
    name: String,
    channel: Channel,
}

/// The Authority replicas, in order of preference, and the one in use.
pub struct Replicas {
    members: Vec<Replica>,
    current: AtomicUsize,
}

impl Replicas {
    /// Channels to every replica of `targets`; a host name with several addresses becomes one
    /// replica per address.
    pub async fn resolve(targets: &[Target]) -> Result<Arc<Self>, Hinted> {
        let mut members = Vec::new();
        for target in targets {
            let addresses = addresses_of(&target.url).await;
            if addresses.len() > 1 {
                for addr in addresses {
                    members.push(Replica {
                        name: format!("{} ({addr})", target.url),
                        channel: target.endpoint_at(addr)?.connect_lazy(),
                    });
                }
            } else {
                members.push(Replica {
                    name: target.url.clone(),
                    channel: channel(target)?,
                });
            }
        }
        if members.is_empty() {
            return Err(Hinted::new("no Authority URL is configured")
                .hint("set [sidecar.authority] url or urls in firma.toml"));
        }
        Ok(Arc::new(Self {
            members,
            current: AtomicUsize::new(0),
        }))
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every replica's name, for the start-up log.
    pub fn names(&self) -> String {
        self.members
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The replica in use: its index, a client and its name.
    fn current(&self) -> (usize, AuthorityClient<Channel>, &str) {
        let index = self.current.load(Ordering::Relaxed) % self.members.len();
        let member = &self.members[index];
        (
            index,
            AuthorityClient::new(member.channel.clone()),
            &member.name,
        )
    }

    /// Replica `index` failed: move on to the next one (unless another task already did).
    fn failed(&self, index: usize) {
        let next = (index + 1) % self.members.len();
        if self
            .current
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
            && self.members.len() > 1
        {
            tracing::warn!(
                from = %self.members[index].name,
                to = %self.members[next].name,
                "failing over to the next Authority replica"
            );
        }
    }
}

/// The socket addresses a URL's host name resolves to (none for an IP or a bad URL: then the
/// URL is dialled as it is).
async fn addresses_of(url: &str) -> Vec<std::net::SocketAddr> {
    let Ok(uri) = url.parse::<http::Uri>() else {
        return Vec::new();
    };
    let Some(host) = uri.host() else {
        return Vec::new();
    };
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return Vec::new();
    }
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let mut addresses: Vec<_> = tokio::net::lookup_host((bare, port))
        .await
        .map(Iterator::collect)
        .unwrap_or_default();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// What the Sidecar tells a replica about itself (for the fleet view) and how long it keeps a
/// bundle nobody refreshes.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    pub sidecar_id: String,
    pub host: String,
    pub max_bundle_age: Option<Duration>,
}

/// The Authority link of one Sidecar.
pub struct Link {
    pub replicas: Arc<Replicas>,
    pub settings: LinkSettings,
}

impl Link {
    /// The replicas of `loaded` (or the one `authority_url` names) and the Sidecar's identity.
    pub async fn new(loaded: &LoadedConfig, authority_url: Option<String>) -> Result<Self, Hinted> {
        let targets = Target::for_sidecar_replicas(loaded, authority_url);
        Ok(Self {
            replicas: Replicas::resolve(&targets).await?,
            settings: LinkSettings {
                sidecar_id: crate::authority::witness::sidecar_id(loaded)?,
                host: crate::authority::store::fleet::this_host(),
                max_bundle_age: loaded.config.sidecar.authority.max_bundle_age,
            },
        })
    }

    /// Start both stream tasks; `pinned` is the Authority key everything must be signed with.
    pub fn spawn(&self, state: Arc<AuthorityState>, pinned: Pinned) {
        tokio::spawn(watch_bundles(
            self.replicas.clone(),
            self.settings.clone(),
            state.clone(),
            pinned.clone(),
        ));
        tokio::spawn(watch_revocations(
            self.replicas.clone(),
            self.settings.clone(),
            state.clone(),
            pinned,
        ));
        tokio::spawn(watch_staleness(state));
    }

    /// Start reporting the audit checkpoint file `checkpoint`.
    pub fn reporter(&self, checkpoint: PathBuf) -> CheckpointReporter {
        CheckpointReporter::spawn(
            self.replicas.clone(),
            checkpoint,
            self.settings.sidecar_id.clone(),
        )
    }
}

/// Reports each new signed audit checkpoint to the Authority, to be witnessed there
/// (`ReportCheckpoint`). The checkpoint file is looked at every [`REPORT_EVERY`] (it is replaced
/// atomically, so a read sees a whole checkpoint); [`Self::flush`] reports the last one at
/// shutdown.
pub struct CheckpointReporter {
    flush: mpsc::Sender<oneshot::Sender<()>>,
}

impl CheckpointReporter {
    /// Start reporting `checkpoint` (the file) as Sidecar `sidecar_id`.
    pub fn spawn(replicas: Arc<Replicas>, checkpoint: PathBuf, sidecar_id: String) -> Self {
        let (flush, requests) = mpsc::channel(1);
        tokio::spawn(report_checkpoints(
            replicas, checkpoint, sidecar_id, requests,
        ));
        Self { flush }
    }

    /// Report the current checkpoint now (waiting at most `timeout`): the final one, written
    /// when the audit log closed.
    pub async fn flush(&self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        if self.flush.send(done).await.is_ok() {
            let _ = tokio::time::timeout(timeout, wait).await;
        }
    }
}

/// Whether a failed call means the replica is gone (rather than refusing this request).
fn unreachable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    )
}

async fn report_checkpoints(
    replicas: Arc<Replicas>,
    checkpoint: PathBuf,
    sidecar_id: String,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported: Option<Vec<u8>> = None;
    let mut last_error: Option<String> = None;
    loop {
        let flush = tokio::select! {
            _ = tick.tick() => None,
            request = flushes.recv() => match request {
                Some(done) => Some(done),
                None => break,
            },
        };
        let current = std::fs::read(&checkpoint).ok();
        if let Some(bytes) = current.filter(|b| reported.as_ref() != Some(b)) {
            let request = ReportCheckpointRequest {
                sidecar_id: sidecar_id.clone(),
                checkpoint: bytes.clone(),
            };
            let (index, mut client, url) = replicas.current();
            let url = url.to_string();
            match client.report_checkpoint(request).await {
                Ok(response) => {
                    if last_error.take().is_some() {
                        tracing::info!(authority = %url, "audit checkpoints are witnessed again");
                    }
                    tracing::debug!(
                        seq = response.into_inner().witnessed_seq,
                        "checkpoint witnessed"
                    );
                    reported = Some(bytes);
                }
                Err(status) => {
                    if unreachable(&status) {
                        replicas.failed(index);
                    }
                    let why = status.message().to_string();
                    // Once per distinct problem: it is retried every second.
                    if last_error.as_deref() != Some(why.as_str()) {
                        tracing::warn!(authority = %url, sidecar = %sidecar_id, code = ?status.code(), "the Authority did not witness the audit checkpoint: {why}");
                        last_error = Some(why);
                    }
                }
            }
        }
        if let Some(done) = flush {
            let _ = done.send(());
        }
    }
}

/// The bundle in force, as far as ordering is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    revision: u64,
    sent_at: DateTime<Utc>,
}

/// What to do with a verified bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// Enforce it (a new bundle, or a refresh of the one in force).
    Take,
    /// The bundle in force, confirmed by a replica whose clock is behind the last sender's:
    /// harmless, but it does not extend the bundle's life.
    Ignore,
    /// A replay, an older revision, or past its TTL.
    Refuse(String),
}

/// Judge a verified bundle of `revision`, sent at `sent_at`, against `held` (the one in force):
/// not older (by store revision when both have one, else by `sent_at`), and not already past
/// its TTL (a replay of a recorded bundle).
fn judge_bundle(
    revision: u64,
    sent_at: DateTime<Utc>,
    ttl: Duration,
    held: Option<Held>,
    now: DateTime<Utc>,
) -> Verdict {
    let leeway = chrono::Duration::seconds(LEEWAY_SECONDS);
    let expires = sent_at + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    if expires + leeway < now {
        return Verdict::Refuse(format!(
            "it was sent at {sent_at} and expired at {expires} (a replayed bundle, or clocks apart)"
        ));
    }
    let Some(held) = held else {
        return Verdict::Take;
    };
    if revision != 0 && held.revision != 0 {
        if revision > held.revision {
            return Verdict::Take;
        }
        if revision < held.revision {
            return Verdict::Refuse(format!(
                "its revision {revision} is older than revision {} in force (a lagging replica, or a replayed bundle)",
                held.revision
            ));
        }
        return if sent_at >= held.sent_at {
            Verdict::Take
        } else {
            Verdict::Ignore
        };
    }
    if sent_at < held.sent_at {
        return Verdict::Refuse(format!(
            "it was sent at {sent_at}, before the bundle in force (a replayed older bundle)"
        ));
    }
    Verdict::Take
}

/// Whether a verified snapshot sent at `sent_at` is recent.
fn fresh_snapshot(sent_at: DateTime<Utc>, now: DateTime<Utc>) -> Result<(), String> {
    let skew = (now - sent_at).abs().to_std().unwrap_or(Duration::MAX);
    if skew > SNAPSHOT_MAX_AGE {
        return Err(format!(
            "it was taken at {sent_at}, more than {}s from this host's clock (a replayed snapshot, or clocks apart)",
            SNAPSHOT_MAX_AGE.as_secs()
        ));
    }
    Ok(())
}

/// Reconnect pacing over several replicas: the next replica at once; once every replica failed
/// in a row, a growing pause — unless the last one answered (it is up, but cannot serve now:
/// its store is cut off), then [`ANSWERED_PAUSE`], so the fleet is served again within a second
/// of its store coming back.
struct Backoff {
    delay: Duration,
    failures: usize,
}

impl Backoff {
    fn new() -> Self {
        Self {
            delay: MIN_BACKOFF,
            failures: 0,
        }
    }
    fn reset(&mut self) {
        self.delay = MIN_BACKOFF;
        self.failures = 0;
    }
    /// The pause after a failed attempt on one of `replicas` (`answered`: the replica took the
    /// call, then ended it as unable to serve — `UNAVAILABLE`).
    fn next_pause(&mut self, replicas: usize, answered: bool) -> Duration {
        self.failures += 1;
        if self.failures < replicas {
            return FAILOVER_PAUSE;
        }
        // ±15 % jitter from the clock's sub-second noise: enough to spread reconnect storms.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let jitter = 0.85 + f64::from(nanos % 300) / 1000.0;
        if answered {
            return ANSWERED_PAUSE.mul_f64(jitter);
        }
        let pause = self.delay.mul_f64(jitter);
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
        pause
    }
    async fn wait(&mut self, replicas: usize, answered: bool) {
        tokio::time::sleep(self.next_pause(replicas, answered)).await;
    }
}

async fn watch_bundles(
    replicas: Arc<Replicas>,
    settings: LinkSettings,
    state: Arc<AuthorityState>,
    pinned: Pinned,
) {
    let mut backoff = Backoff::new();
    let mut current = String::new();
    let mut held: Option<Held> = None;
    loop {
        let (index, mut client, url) = replicas.current();
        let url = url.to_string();
        // An empty version asks for the bundle at once: after a failover the new replica's
        // first message refreshes the bundle in force.
        let request = WatchPolicyBundleRequest {
            current_version: String::new(),
            current_revision: held.map_or(0, |h| h.revision),
            sidecar_id: settings.sidecar_id.clone(),
            host: settings.host.clone(),
        };
        let mut answered = false;
        match client.watch_policy_bundle(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                loop {
                    match stream.message().await {
                        Ok(Some(wire)) => {
                            let ttl = Duration::from_secs(u64::from(wire.ttl_seconds));
                            let verdict = match pinned.verify_bundle(&wire) {
                                Ok(sent_at) => (
                                    judge_bundle(wire.revision, sent_at, ttl, held, Utc::now()),
                                    sent_at,
                                ),
                                Err(err) => (Verdict::Refuse(err.to_string()), Utc::now()),
                            };
                            let sent_at = match verdict {
                                (Verdict::Take, sent_at) => sent_at,
                                (Verdict::Ignore, _) => {
                                    tracing::debug!(authority = %url, bundle = %wire.version, "bundle confirmed by a replica whose clock is behind; not extending its life");
                                    backoff.reset();
                                    continue;
                                }
                                (Verdict::Refuse(why), _) => {
                                    tracing::error!(
                                        authority = %url,
                                        bundle = %wire.version,
                                        revision = wire.revision,
                                        "policy bundle refused: {why}; keeping the previous one and reconnecting"
                                    );
                                    break;
                                }
                            };
                            backoff.reset();
                            let enforce_for =
                                settings.max_bundle_age.map_or(ttl, |age| age.min(ttl));
                            match PolicyBundle::parse(
                                &wire.version,
                                &wire.policies,
                                &wire.schema,
                                enforce_for,
                            ) {
                                Ok((bundle, warnings)) => {
                                    for warning in warnings {
                                        tracing::warn!(bundle = %wire.version, %warning, "policy does not validate against the schema");
                                    }
                                    if wire.version != current {
                                        tracing::info!(authority = %url, bundle = %wire.version, revision = wire.revision, policies = bundle.len(), ttl_s = enforce_for.as_secs(), "policy bundle loaded");
                                    } else {
                                        tracing::debug!(bundle = %wire.version, "policy bundle refreshed");
                                    }
                                    current = wire.version.clone();
                                    held = Some(Held {
                                        revision: wire.revision,
                                        sent_at,
                                    });
                                    state.set_bundle(bundle);
                                }
                                Err(err) => {
                                    tracing::error!(bundle = %wire.version, error = %err, "policy bundle rejected; keeping the previous one");
                                }
                            }
                        }
                        Ok(None) => {
                            tracing::warn!(authority = %url, "policy bundle stream ended; reconnecting");
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(authority = %url, error = %status.message(), "policy bundle stream failed; reconnecting");
                            answered = status.code() == tonic::Code::Unavailable;
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                tracing::warn!(authority = %url, error = %status.message(), "cannot watch policy bundles; retrying");
            }
        }
        replicas.failed(index);
        backoff.wait(replicas.len(), answered).await;
    }
}

async fn watch_revocations(
    replicas: Arc<Replicas>,
    settings: LinkSettings,
    state: Arc<AuthorityState>,
    pinned: Pinned,
) {
    let mut backoff = Backoff::new();
    // The store revision everything up to which this Sidecar holds (0: none, or a files store
    // without revisions — then everything is replayed, which cannot miss a revocation that
    // shares a timestamp with the last one seen).
    let mut position: u64 = 0;
    loop {
        let (index, mut client, url) = replicas.current();
        let url = url.to_string();
        let request = WatchRevocationsRequest {
            since: None,
            since_revision: position,
            sidecar_id: settings.sidecar_id.clone(),
            host: settings.host.clone(),
        };
        let mut answered = false;
        match client.watch_revocations(request).await {
            Ok(response) => {
                let mut stream = response.into_inner();
                let mut replayed = Some(SnapshotDigest::default());
                let mut replay_position = position;
                loop {
                    match stream.message().await {
                        Ok(Some(event)) => {
                            let checked = if event.snapshot_complete {
                                match &replayed {
                                    Some(digest) => pinned
                                        .verify_snapshot(&event, digest)
                                        .map_err(|err| err.to_string())
                                        .and_then(|at| fresh_snapshot(at, Utc::now())),
                                    None => Err("a second snapshot marker on one stream".into()),
                                }
                            } else {
                                pinned
                                    .verify_revocation(&event)
                                    .map_err(|err| err.to_string())
                            };
                            if let Err(why) = checked {
                                let what = if event.snapshot_complete {
                                    "revocation snapshot"
                                } else {
                                    "revocation event"
                                };
                                tracing::error!(
                                    authority = %url,
                                    token_id = %event.token_id,
                                    "{what} refused: {why}; reconnecting"
                                );
                                break;
                            }
                            backoff.reset();
                            if event.snapshot_complete {
                                replayed = None;
                                // The position moves only once the whole replay verified.
                                position = position.max(replay_position).max(event.revision);
                                if !state.readiness().revocations {
                                    tracing::info!(authority = %url, revision = event.revision, "revocation snapshot received");
                                }
                                state.revocation_snapshot_complete();
                                continue;
                            }
                            if let Some(digest) = replayed.as_mut() {
                                digest.add(&event);
                                replay_position = replay_position.max(event.revision);
                            } else {
                                position = position.max(event.revision);
                            }
                            if !event.token_id.is_empty() && state.revoke(&event.token_id) {
                                tracing::info!(token_id = %event.token_id, reason = %event.reason, revision = event.revision, "token revoked");
                            }
                        }
                        Ok(None) => {
                            tracing::warn!(authority = %url, "revocation stream ended; reconnecting");
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(authority = %url, error = %status.message(), "revocation stream failed; reconnecting");
                            answered = status.code() == tonic::Code::Unavailable;
                            break;
                        }
                    }
                }
            }
            Err(status) => {
                tracing::warn!(authority = %url, error = %status.message(), "cannot watch revocations; retrying");
            }
        }
        replicas.failed(index);
        backoff.wait(replicas.len(), answered).await;
    }
}

/// Log once when the bundle in force goes stale (no replica refreshed it within its bound) and
/// once when a fresh one arrives again; the pipeline denies every call meanwhile.
async fn watch_staleness(state: Arc<AuthorityState>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut stale = false;
    loop {
        tick.tick().await;
        let Some(bundle) = state.bundle() else {
            continue;
        };
        let now_stale = !bundle.is_fresh(std::time::Instant::now());
        if now_stale && !stale {
            tracing::error!(
                bundle = %bundle.version,
                bound_s = bundle.ttl.as_secs(),
                "no Authority replica refreshed policy bundle {} within {}s (max_bundle_age / bundle TTL): every call is denied (policy_bundle_stale) until one does",
                bundle.version,
                bundle.ttl.as_secs()
            );
        } else if !now_stale && stale {
            tracing::info!(bundle = %bundle.version, "policy bundle fresh again: calls are judged again");
        }
        stale = now_stale;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str, allow_insecure: bool) -> Target {
        Target {
            url: url.into(),
            ca_cert: None,
            identity: None,
            allow_insecure,
            from: "test".into(),
        }
    }

    #[tokio::test]
    async fn urls_are_checked() {
        assert!(channel(&target("http://127.0.0.1:1", false)).is_ok());
        assert!(channel(&target("http://localhost:1", false)).is_ok());
        assert!(channel(&target("http://[::1]:1", false)).is_ok());
        let err = channel(&target("http://10.0.0.1:1", false)).unwrap_err();
        assert!(err.hint_text().unwrap().contains("allow_insecure"));
        assert!(channel(&target("http://10.0.0.1:1", true)).is_ok());
        assert!(channel(&target("ftp://x", false)).is_err());
        assert!(channel(&target("https://a.example:1", false)).is_err());
    }

    #[tokio::test]
    async fn replicas_rotate_and_names_resolve() {
        let replicas = Replicas::resolve(&[
            target("http://127.0.0.1:1", false),
            target("http://127.0.0.1:2", false),
        ])
        .await
        .unwrap();
        assert_eq!(replicas.len(), 2);
        let (first, _, name) = replicas.current();
        assert_eq!((first, name), (0, "http://127.0.0.1:1"));
        replicas.failed(0);
        replicas.failed(0); // a second task noticing the same failure does not skip replica 2
        assert_eq!(replicas.current().0, 1);
        replicas.failed(1);
        assert_eq!(replicas.current().0, 0);
        // `localhost` may resolve to 127.0.0.1 and ::1: one replica per address.
        let named = Replicas::resolve(&[target("http://localhost:1", false)])
            .await
            .unwrap();
        assert!(named.names().contains("localhost"), "{}", named.names());
        assert!(addresses_of("http://127.0.0.1:1").await.is_empty());
    }

    #[test]
    fn a_replica_that_answers_is_asked_again_within_a_second() {
        let mut backoff = Backoff::new();
        assert_eq!(backoff.next_pause(2, false), FAILOVER_PAUSE);
        // Every replica down: the pause grows.
        let growing: Vec<Duration> = (0..6).map(|_| backoff.next_pause(2, false)).collect();
        assert!(growing[5] > Duration::from_secs(4), "{growing:?}");
        // A replica that answered (its store is cut off): about a second, whatever came before.
        let answered = backoff.next_pause(2, true);
        assert!(answered <= ANSWERED_PAUSE.mul_f64(1.15), "{answered:?}");
        backoff.reset();
        assert_eq!(backoff.next_pause(2, true), FAILOVER_PAUSE);
    }

    #[test]
    fn bundles_are_ordered_by_revision_else_by_time() {
        let now = Utc::now();
        let ttl = Duration::from_secs(30);
        let ago = |s| now - chrono::Duration::seconds(s);
        let held = |revision, s| {
            Some(Held {
                revision,
                sent_at: ago(s),
            })
        };
        // No revisions (files store): by sent_at, as before.
        assert_eq!(judge_bundle(0, ago(1), ttl, None, now), Verdict::Take);
        assert_eq!(judge_bundle(0, ago(1), ttl, held(0, 2), now), Verdict::Take);
        assert!(matches!(
            judge_bundle(0, ago(2), ttl, held(0, 1), now),
            Verdict::Refuse(why) if why.contains("before")
        ));
        assert_eq!(
            judge_bundle(0, ago(34), ttl, None, now),
            Verdict::Take,
            "within the leeway"
        );
        assert!(matches!(
            judge_bundle(0, ago(40), ttl, None, now),
            Verdict::Refuse(why) if why.contains("expired")
        ));
        // Revisions (etcd store): a newer revision wins whatever the clocks say.
        assert_eq!(judge_bundle(8, ago(5), ttl, held(7, 1), now), Verdict::Take);
        assert!(matches!(
            judge_bundle(6, ago(0), ttl, held(7, 1), now),
            Verdict::Refuse(why) if why.contains("older than revision 7")
        ));
        // The same revision from a replica whose clock is behind: kept, not extended.
        assert_eq!(
            judge_bundle(7, ago(3), ttl, held(7, 1), now),
            Verdict::Ignore
        );
        assert_eq!(judge_bundle(7, ago(0), ttl, held(7, 1), now), Verdict::Take);
        assert!(fresh_snapshot(ago(59), now).is_ok());
        assert!(fresh_snapshot(ago(61), now).is_err());
        assert!(fresh_snapshot(now + chrono::Duration::seconds(61), now).is_err());
    }
}
