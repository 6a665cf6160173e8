//! The proxy's request threads: one per core, each a single-threaded async runtime. An acceptor
//! on the main runtime hands the accepted connections to the threads in turn, and a connection
//! lives on its thread until it closes, so serving a request never wakes another thread — the
//! only hand-over between them is the audit log's `seq` order (a record signed while an earlier
//! one is still being signed on the other thread waits for it). On a 2-core machine this cost
//! less CPU per request than a work-stealing runtime, whose workers wake each other for readiness
//! events (docs/performance.md, "Proxy vs Squid"). Handing connections over in turn keeps the
//! threads even; a shared listening socket let one thread take nearly all of them. The
//! Sidecar's other tasks (Authority streams, the control socket) stay on the main runtime.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use super::proxy::Proxy;
use crate::error::Hinted;

/// How many request threads: one per core.
pub fn count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().max(1))
}

/// Serve `listener` on `threads` request threads until `stop` turns true and each has drained
/// its connections (at most `drain`). The future accepts (run it on the main runtime) and
/// resolves when every thread has finished.
pub fn serve(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    threads: usize,
    stop: watch::Receiver<bool>,
    drain: Duration,
) -> Result<impl Future<Output = ()>, Hinted> {
    let mut handoff = Vec::with_capacity(threads);
    let mut finished = Vec::with_capacity(threads);
    for index in 0..threads.max(1) {
        let (give, incoming) = mpsc::unbounded_channel();
        let (proxy, stop) = (Arc::clone(&proxy), stop.clone());
        let (done, finished_rx) = oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| Hinted::new(format!("cannot start a request thread: {err}")))?;
        std::thread::Builder::new()
            .name(format!("firma-proxy-{index}"))
            .spawn(move || {
                runtime.block_on(proxy.serve(incoming, stop, drain));
                let _ = done.send(());
            })
            .map_err(|err| Hinted::new(format!("cannot start a request thread: {err}")))?;
        handoff.push(give);
        finished.push(finished_rx);
    }
    Ok(async move {
        accept(listener, handoff, stop).await;
        for thread in finished {
            let _ = thread.await;
        }
    })
}

/// Accept until `stop`, handing each connection to the next request thread.
async fn accept(
    listener: TcpListener,
    handoff: Vec<mpsc::UnboundedSender<(std::net::TcpStream, std::net::SocketAddr)>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut next = 0;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted.and_then(|(stream, peer)| Ok((stream.into_std()?, peer))) {
                Ok(connection) => {
                    // A thread that is gone (it panicked) passes its turn on.
                    let mut connection = Some(connection);
                    for _ in 0..handoff.len() {
                        let thread = &handoff[next % handoff.len()];
                        next += 1;
                        match thread.send(connection.take().expect("not handed over yet")) {
                            Ok(()) => break,
                            Err(mpsc::error::SendError(back)) => connection = Some(back),
                        }
                    }
                }
                Err(err) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped(&mut stop) => break,
        }
    }
}

/// Resolves once stopping was asked for (or the sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
