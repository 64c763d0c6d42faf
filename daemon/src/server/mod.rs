//! The socket server: accepts connections and runs each in its own task until shutdown.
//!
//! - [`listener`] binds (or adopts) the socket and checks peers;
//! - [`connection`] turns bytes into frames, with the bounds that protect the daemon;
//! - [`handler`] runs the handshake and answers requests.
//!
//! Connections are independent tasks, so a slow or hostile client holds up only itself. A
//! semaphore bounds how many are served at once; a client beyond the limit is told so and
//! closed rather than left in the backlog. On shutdown the accept loop stops first, idle
//! connections close, requests being answered finish (within a grace period), and the socket
//! file is removed when the listener is dropped.

pub mod connection;
pub(crate) mod handler;
pub(crate) mod listener;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::Listener;
use interprocess::local_socket::traits::tokio::Listener as _;
use tokend_proto::message::Refusal;
use tokio::sync::{Semaphore, mpsc};

use crate::daemon::Daemon;

/// How long shutdown waits for requests being answered.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Accepts connections until shutdown begins, then waits for the open ones to finish.
pub(crate) async fn serve(daemon: Arc<Daemon>, listener: Listener, max_connections: usize) {
    let limit = Arc::new(Semaphore::new(max_connections));
    // Each connection task holds a clone; when all are dropped, every connection has ended.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let mut shutdown = daemon.shutdown_signal();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|down| *down) => break,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("accepting a connection failed: {e}");
                if is_resource_exhaustion(&e) {
                    // Out of file descriptors: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let permit = limit.clone().try_acquire_owned();
        let daemon = daemon.clone();
        let open = open_tx.clone();
        tokio::spawn(async move {
            let admitted = match &permit {
                Ok(_) => Ok(()),
                Err(_) => Err(Refusal::TooManyConnections),
            };
            handler::serve(daemon, stream, admitted).await;
            drop(permit);
            drop(open);
        });
    }
    drop(listener);
    drop(open_tx);
    if tokio::time::timeout(SHUTDOWN_GRACE, open_rx.recv()).await.is_err() {
        tracing::warn!("some requests were still being answered after {}s; closing them", SHUTDOWN_GRACE.as_secs());
    }
}

/// Whether accepting failed for lack of file descriptors, so that the accept loop should back off.
pub(crate) fn is_resource_exhaustion(e: &io::Error) -> bool {
    #[cfg(unix)]
    {
        matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}
