//! A plain (not intercepted) `CONNECT` tunnel that ends with its authority: the bytes are relayed
//! until either side closes, or until the decision that opened it no longer holds — the token
//! expired, was revoked, or a new policy bundle denies the `CONNECT`. Every change the Authority
//! streams (bundle, revocation) re-checks every open tunnel at once, and a timer re-checks at the
//! token's expiry. The proxy records the end (`tunnel_closed`) with the bytes each way.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::pipeline::Verdict;
use crate::authority::token::LEEWAY_SECONDS;

/// How a tunnel ended.
#[derive(Debug)]
pub struct Closed {
    /// The verdict that ended it, when its authority did (else a side closed the connection).
    pub revoked_by: Option<Verdict>,
    /// Bytes the client sent (relayed upstream).
    pub from_client: u64,
    /// Bytes the upstream sent (relayed to the client).
    pub to_client: u64,
}

/// When a tunnel's authority is checked again besides on every change the Authority streams.
pub struct Watch {
    pub changes: watch::Receiver<u64>,
    /// The expiry of the token that opened the tunnel.
    pub token_expires_at: Option<DateTime<Utc>>,
}

/// Relay `client` ⇄ `upstream` until one side closes, or `recheck` (asked after every change and
/// at the token's expiry) returns the verdict that ends the tunnel.
pub async fn relay<C, U>(
    client: C,
    upstream: U,
    mut watch: Watch,
    recheck: impl Fn() -> Option<Verdict>,
) -> Closed
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let from_client = Arc::new(AtomicU64::new(0));
    let to_client = Arc::new(AtomicU64::new(0));
    let mut client = Counted {
        inner: client,
        read: from_client.clone(),
    };
    let mut upstream = Counted {
        inner: upstream,
        read: to_client.clone(),
    };
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    let mut expiry = next_expiry_check(watch.token_expires_at);
    let mut watching = true;
    let revoked_by = loop {
        tokio::select! {
            _ = &mut copy => break None,
            changed = changed(&mut watch.changes, watching) => {
                if changed.is_err() {
                    // The Authority state is gone (shutting down): nothing changes any more.
                    watching = false;
                    continue;
                }
                if let Some(verdict) = recheck() {
                    break Some(verdict);
                }
            }
            _ = sleep_for(expiry) => {
                if let Some(verdict) = recheck() {
                    break Some(verdict);
                }
                // Not expired yet by the validity rule (clock granularity): look again soon.
                expiry = Some(Duration::from_millis(100));
            }
        }
    };
    Closed {
        revoked_by,
        from_client: from_client.load(Ordering::Relaxed),
        to_client: to_client.load(Ordering::Relaxed),
    }
}

/// How long until the token is past its validity window (expiry plus the leeway).
fn next_expiry_check(expires_at: Option<DateTime<Utc>>) -> Option<Duration> {
    let deadline = expires_at? + chrono::Duration::seconds(LEEWAY_SECONDS);
    Some((deadline - Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(10))
}

async fn changed(
    changes: &mut watch::Receiver<u64>,
    watching: bool,
) -> Result<(), watch::error::RecvError> {
    if watching {
        changes.changed().await
    } else {
        std::future::pending().await
    }
}

async fn sleep_for(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

/// A stream that counts the bytes read from it.
struct Counted<S> {
    inner: S,
    read: Arc<AtomicU64>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        self.read.fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sidecar::pipeline::Reason;
    use std::sync::atomic::AtomicBool;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn ends_when_a_side_closes_and_counts_bytes() {
        let (client, mut agent) = tokio::io::duplex(64);
        let (upstream, mut server) = tokio::io::duplex(64);
        let (_tx, changes) = watch::channel(0);
        let task = tokio::spawn(relay(
            client,
            upstream,
            Watch {
                changes,
                token_expires_at: None,
            },
            || None,
        ));
        agent.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        server.read_exact(&mut buf).await.unwrap();
        server.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 3];
        agent.read_exact(&mut buf).await.unwrap();
        drop(agent);
        drop(server);
        let closed = task.await.unwrap();
        assert!(closed.revoked_by.is_none());
        assert_eq!((closed.from_client, closed.to_client), (5, 3));
    }

    #[tokio::test]
    async fn a_change_that_denies_ends_the_tunnel() {
        let (client, _agent) = tokio::io::duplex(64);
        let (upstream, _server) = tokio::io::duplex(64);
        let (tx, changes) = watch::channel(0);
        let revoked = Arc::new(AtomicBool::new(false));
        let flag = revoked.clone();
        let task = tokio::spawn(relay(
            client,
            upstream,
            Watch {
                changes,
                token_expires_at: None,
            },
            move || {
                flag.load(Ordering::SeqCst)
                    .then(|| Verdict::refused(Reason::TokenRevoked, "revoked"))
            },
        ));
        // A change that still allows keeps the tunnel open.
        tx.send_modify(|n| *n += 1);
        tokio::task::yield_now().await;
        assert!(!task.is_finished());
        revoked.store(true, Ordering::SeqCst);
        tx.send_modify(|n| *n += 1);
        let closed = task.await.unwrap();
        assert_eq!(closed.revoked_by.unwrap().reason, Reason::TokenRevoked);
    }

    #[tokio::test]
    async fn expiry_rechecks_without_any_change() {
        let (client, _agent) = tokio::io::duplex(64);
        let (upstream, _server) = tokio::io::duplex(64);
        let (_tx, changes) = watch::channel(0);
        // Past its expiry, within the leeway for another 50 ms.
        let expires = Utc::now() - chrono::Duration::seconds(LEEWAY_SECONDS)
            + chrono::Duration::milliseconds(50);
        let closed = relay(
            client,
            upstream,
            Watch {
                changes,
                token_expires_at: Some(expires),
            },
            || Some(Verdict::refused(Reason::TokenExpired, "expired")),
        )
        .await;
        assert_eq!(closed.revoked_by.unwrap().reason, Reason::TokenExpired);
    }
}
