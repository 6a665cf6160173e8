//! Following the prefix: an etcd watch from the last applied revision + 1, its events applied
//! in order. A dropped stream (a member died) is re-opened on the next member from the same
//! revision, so nothing is skipped; a compacted start revision (the replica was away long)
//! triggers a full read of the prefix and a diff against what is held.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::Inner;
use super::proto::etcdserverpb::{WatchCreateRequest, WatchRequest, watch_request};
use super::proto::mvccpb::{KeyValue, event::EventType};
use super::records::{Kind, StoredRevocation};
use crate::authority::store::Sighting;
use crate::authority::witness::parse_record;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a watch stream ended.
enum Ended {
    /// It broke (member gone, network): resume from `next` on another member.
    Broken(String),
    /// The start revision was compacted away: read everything again.
    Compacted,
}

/// Apply a full read of the prefix taken at `revision`.
pub(super) fn apply_all(inner: &Inner, mut kvs: Vec<KeyValue>, revision: i64) {
    kvs.sort_by_key(|kv| kv.create_revision);
    let mut present = HashSet::new();
    for kv in &kvs {
        if let Kind::Revocation(id) = inner.keys.kind(&kv.key) {
            present.insert(id);
        }
    }
    for id in inner.revocations.ids() {
        if !present.contains(&id) {
            inner.revocations.remove(&id);
        }
    }
    for kv in kvs {
        apply_put(inner, kv);
    }
    applied(inner, revision);
}

fn applied(inner: &Inner, revision: i64) {
    let revision = u64::try_from(revision).unwrap_or(0);
    inner.revocations.advance(revision);
    inner.applied.send_if_modified(|r| {
        let moved = revision > *r;
        *r = (*r).max(revision);
        moved
    });
}

fn apply_put(inner: &Inner, kv: KeyValue) {
    match inner.keys.kind(&kv.key) {
        Kind::Bundle => {
            inner
                .bundle_key_revision
                .fetch_max(kv.mod_revision, std::sync::atomic::Ordering::Relaxed);
            let known = inner.policies.runtime().revision;
            if u64::try_from(kv.mod_revision).unwrap_or(0) <= known {
                return;
            }
            match super::install_stored(&inner.signer, &kv.value, kv.mod_revision) {
                Ok((runtime, issuance)) => inner.policies.install(runtime, issuance),
                Err(why) => tracing::error!(
                    revision = kv.mod_revision,
                    "refusing the policy bundle written to {}bundle: {why}; the bundle in force stays",
                    inner.keys.prefix()
                ),
            }
        }
        Kind::Revocation(id) => match serde_json::from_slice::<StoredRevocation>(&kv.value) {
            Ok(stored) if stored.token_id == id => {
                let entry = stored.into_entry(u64::try_from(kv.create_revision).unwrap_or(0));
                let (token_id, reason) = (entry.token_id.clone(), entry.reason.clone());
                if inner.revocations.apply(entry) {
                    tracing::info!(token_id = %token_id, reason = %reason, revision = kv.create_revision, "revocation applied from etcd");
                }
            }
            _ => tracing::warn!(
                key = %String::from_utf8_lossy(&kv.key),
                "skipping an unreadable revocation in etcd"
            ),
        },
        Kind::Checkpoint => match parse_record(&String::from_utf8_lossy(&kv.value)) {
            Ok((chain, latest)) => {
                let mut checkpoints = inner.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
                let newer = checkpoints
                    .get(&chain)
                    .is_none_or(|((seq, _, _), _)| latest.0 >= *seq);
                if newer {
                    checkpoints.insert(chain, (latest, kv.mod_revision));
                }
            }
            Err(why) => tracing::warn!(
                key = %String::from_utf8_lossy(&kv.key),
                "skipping an unreadable witnessed checkpoint in etcd: {why}"
            ),
        },
        Kind::Sidecar => {
            if let Ok(sighting) = serde_json::from_slice::<Sighting>(&kv.value) {
                inner.fleet.merge_remote(sighting);
            }
        }
        Kind::Other => {}
    }
}

fn apply_delete(inner: &Inner, kv: &KeyValue) {
    match inner.keys.kind(&kv.key) {
        Kind::Revocation(id) => inner.revocations.remove(&id),
        Kind::Bundle => tracing::warn!(
            "{}bundle was deleted from etcd; the bundle in force stays until one is published",
            inner.keys.prefix()
        ),
        _ => {}
    }
}

/// Follow the prefix from revision `next` for as long as the replica runs.
pub(super) async fn follow(inner: Arc<Inner>, mut next: i64) {
    let mut backoff = MIN_BACKOFF;
    let mut last_problem = String::new();
    loop {
        match watch(&inner, &mut next).await {
            Ended::Compacted => {
                tracing::warn!(
                    next,
                    "etcd compacted the revisions this replica had not seen; reading the prefix again"
                );
                match inner
                    .client
                    .range_prefix(inner.keys.prefix().as_bytes())
                    .await
                {
                    Ok(range) => {
                        let revision = range.header.as_ref().map_or(0, |h| h.revision);
                        apply_all(&inner, range.kvs, revision);
                        next = revision + 1;
                    }
                    Err(err) => tracing::warn!("cannot read the prefix again: {err}"),
                }
            }
            Ended::Broken(why) => {
                if why != last_problem {
                    tracing::warn!(
                        next,
                        "etcd watch interrupted: {why}; resuming on the next member"
                    );
                    last_problem = why;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
        }
        backoff = MIN_BACKOFF;
    }
}

/// One watch stream on the current member; applies events and moves `next` past them.
async fn watch(inner: &Inner, next: &mut i64) -> Ended {
    let (index, channel, url) = inner.client.member();
    let url = url.to_string();
    let mut client = inner.client.watch_client(channel);
    let (requests, stream) = mpsc::channel(1);
    let prefix = inner.keys.prefix().as_bytes().to_vec();
    let create = WatchRequest {
        request_union: Some(watch_request::RequestUnion::CreateRequest(
            WatchCreateRequest {
                range_end: super::client::prefix_end(&prefix),
                key: prefix,
                start_revision: *next,
                progress_notify: true,
                ..Default::default()
            },
        )),
    };
    let _ = requests.send(create).await;
    let opened = tokio::time::timeout(
        inner.client.timeout(),
        client.watch(ReceiverStream::new(stream)),
    )
    .await;
    let mut responses = match opened {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => {
            inner.client.skip(index);
            return Ended::Broken(format!("{url}: {}", status.message()));
        }
        Err(_) => {
            inner.client.skip(index);
            return Ended::Broken(format!("{url}: no answer"));
        }
    };
    loop {
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => {
                inner.client.skip(index);
                return Ended::Broken(format!("{url}: the stream ended"));
            }
            Err(status) => {
                inner.client.skip(index);
                return Ended::Broken(format!("{url}: {}", status.message()));
            }
        };
        if response.compact_revision > 0 {
            return Ended::Compacted;
        }
        if response.canceled {
            inner.client.skip(index);
            return Ended::Broken(format!("{url}: watch canceled: {}", response.cancel_reason));
        }
        let had_no_events = response.events.is_empty();
        for event in response.events {
            let Some(kv) = event.kv else { continue };
            let revision = kv.mod_revision;
            if event.r#type == EventType::Delete as i32 {
                apply_delete(inner, &kv);
            } else {
                apply_put(inner, kv);
            }
            *next = (*next).max(revision + 1);
            applied(inner, revision);
        }
        // A progress notification (no events, not the creation answer, whose header is merely
        // the store's revision): everything up to its header revision was delivered.
        if let Some(header) = response.header
            && !response.created
            && !response.fragment
            && had_no_events
        {
            *next = (*next).max(header.revision + 1);
            applied(inner, header.revision);
        }
        // Keep the request side open: dropping it would end the watch.
        let _ = &requests;
    }
}
