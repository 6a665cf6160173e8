//! The proxy's request threads: one per core, each a single-threaded async runtime accepting
//! from the one listening socket. A connection lives on the thread that accepted it until it
//! closes, so serving a request never wakes another thread — the only hand-over between them is
//! the audit log's `seq` order (a record signed while an earlier one is still being signed on the
//! other thread waits for it). On a 2-core machine this cost less CPU per request than a
//! work-stealing runtime, whose workers wake each other for every readiness event
//! (docs/performance.md, "Proxy vs Squid"). The Sidecar's other tasks (Authority streams, the
//! control socket) stay on the main runtime.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use super::proxy::Proxy;
use crate::error::Hinted;

/// How many request threads: one per core.
pub fn count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().max(1))
}

/// Serve `listener` on `threads` request threads until `stop` turns true and each has drained
/// its connections (at most `drain`). Resolves when every thread has finished.
pub fn serve(
    proxy: Arc<Proxy>,
    listener: tokio::net::TcpListener,
    threads: usize,
    stop: watch::Receiver<bool>,
    drain: Duration,
) -> Result<impl Future<Output = ()>, Hinted> {
    let listener = listener
        .into_std()
        .map_err(|err| Hinted::new(format!("cannot hand the proxy listener over: {err}")))?;
    let mut finished = Vec::with_capacity(threads);
    for index in 0..threads.max(1) {
        let listener = listener
            .try_clone()
            .map_err(|err| Hinted::new(format!("cannot share the proxy listener: {err}")))?;
        let (proxy, stop) = (Arc::clone(&proxy), stop.clone());
        let (done, finished_rx) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| Hinted::new(format!("cannot start a request thread: {err}")))?;
        std::thread::Builder::new()
            .name(format!("firma-proxy-{index}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => proxy.serve(listener, stop, drain).await,
                        Err(err) => {
                            tracing::error!(error = %err, "a request thread cannot use the listener")
                        }
                    }
                });
                let _ = done.send(());
            })
            .map_err(|err| Hinted::new(format!("cannot start a request thread: {err}")))?;
        finished.push(finished_rx);
    }
    Ok(async move {
        for thread in finished {
            let _ = thread.await;
        }
    })
}
