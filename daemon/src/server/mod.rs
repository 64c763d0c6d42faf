//! The socket server: accepts connections and runs each in its own task until shutdown.
//!
//! - [`listener`] binds (or adopts) the socket and checks peers;
//! - [`connection`] turns bytes into frames, with the bounds that protect the daemon;
//! - [`handler`] runs the handshake and answers requests;
//! - [`short`] (Unix) accepts, and answers the common short request (`tokenctl token`) on a
//!   thread of its own, handing every other connection to a task.
//!
//! Connections are independent tasks, so a slow or hostile client holds up only itself. A
//! semaphore bounds how many are served at once; a client beyond the limit is told so and
//! closed rather than left in the backlog. On shutdown the accept loop stops first, idle
//! connections close, requests being answered finish (within a grace period), and the socket
//! file is removed when the listener is dropped. A server that stops before shutdown (its task
//! or the short-request thread died) stops tokend with a failure status ([`supervise`]), for the
//! service manager to start it again, rather than leave a socket that nobody answers.

pub mod connection;
pub(crate) mod handler;
pub(crate) mod listener;
#[cfg(unix)]
mod short;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::{Listener, Stream};
use interprocess::local_socket::traits::tokio::Listener as _;
use tokend_proto::message::Refusal;
use tokio::sync::{Semaphore, mpsc};

use crate::daemon::Daemon;

/// How long shutdown waits for requests being answered.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Accepts connections until shutdown begins, then waits for the open ones to finish.
/// `socket_file` is the socket's file, to be removed when it closes, if tokend created it.
pub(crate) async fn serve(
    daemon: Arc<Daemon>,
    listener: Listener,
    socket_file: Option<PathBuf>,
    max_connections: usize,
) {
    let limit = Arc::new(Semaphore::new(max_connections));
    // Each connection task holds a clone; when all are dropped, every connection has ended.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    #[cfg(unix)]
    let listener = short_path(&daemon, listener, socket_file, &limit, &open_tx).await;
    #[cfg(not(unix))]
    let listener = {
        let _ = socket_file;
        Some(listener)
    };
    if let Some(listener) = listener {
        accept_loop(&daemon, listener, &limit, &open_tx).await;
    }
    drop(open_tx);
    if tokio::time::timeout(SHUTDOWN_GRACE, open_rx.recv()).await.is_err() {
        tracing::warn!("some requests were still being answered after {}s; closing them", SHUTDOWN_GRACE.as_secs());
    }
}

/// Runs the short-request path's thread ([`short`]) until shutdown begins. Gives the
/// listener back if the thread cannot be started, for the runtime to accept on.
#[cfg(unix)]
async fn short_path(
    daemon: &Arc<Daemon>,
    listener: Listener,
    socket_file: Option<PathBuf>,
    limit: &Arc<Semaphore>,
    open: &mpsc::Sender<()>,
) -> Option<Listener> {
    use std::os::fd::OwnedFd;
    use std::os::unix::net::UnixStream;

    // Closing `wake` tells the thread to stop.
    let (wake, stop) = match UnixStream::pair() {
        Ok(pair) => pair,
        Err(e) => {
            tracing::warn!("serving connections on the runtime only: {e}");
            return Some(listener);
        }
    };
    let (start_tx, start_rx) = std::sync::mpsc::channel::<short::Socket>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let shared = short::Shared {
        daemon: daemon.clone(),
        runtime: tokio::runtime::Handle::current(),
        limit: limit.clone(),
        open: open.clone(),
    };
    let spawned = std::thread::Builder::new().name("tokend-socket".into()).spawn(move || {
        if let Ok(socket) = start_rx.recv() {
            short::run(socket, stop, shared);
        }
        drop(done_tx);
    });
    if let Err(e) = spawned {
        tracing::warn!("serving connections on the runtime only: cannot start a thread: {e}");
        return Some(listener);
    }
    // Taken off the runtime's epoll, so that connections wake only the thread. The socket
    // file is then the thread's to remove.
    let Listener::UdSocket(listener) = listener;
    match OwnedFd::try_from(listener) {
        Ok(listener) => {
            let _ = start_tx.send(short::Socket { listener, remove: socket_file });
        }
        Err(e) => {
            tracing::error!("cannot serve the socket: {e}");
            if let Some(path) = socket_file {
                let _ = std::fs::remove_file(path);
            }
            return None;
        }
    }
    drop(start_tx);
    let _ = daemon.shutdown_signal().wait_for(|down| *down).await;
    drop(wake);
    let _ = done_rx.await;
    None
}

/// Accepts connections on the runtime until shutdown begins, each served by its own task.
async fn accept_loop(daemon: &Arc<Daemon>, listener: Listener, limit: &Arc<Semaphore>, open: &mpsc::Sender<()>) {
    accept_each(&listener, "the protocol socket", daemon, limit, open, |stream, admitted| {
        let admitted = if admitted { Ok(()) } else { Err(Refusal::TooManyConnections) };
        handler::serve(daemon.clone(), stream, admitted)
    })
    .await;
}

/// The accept loop of both sockets: accepts on `listener` until shutdown begins and serves each
/// connection with `serve` in a task of its own, which holds a permit under `limit` (`serve` is
/// told whether there was one: a connection beyond the limit is to be refused) and a clone of
/// `open` until it ends. A failed accept is logged; out of file descriptors, the loop backs off
/// instead of spinning.
pub(crate) async fn accept_each<Fut>(
    listener: &Listener,
    socket: &str,
    daemon: &Daemon,
    limit: &Arc<Semaphore>,
    open: &mpsc::Sender<()>,
    mut serve: impl FnMut(Stream, bool) -> Fut,
) where
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut shutdown = daemon.shutdown_signal();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|down| *down) => break,
        };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("accepting a connection to {socket} failed: {e}");
                if is_resource_exhaustion(&e) {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                continue;
            }
        };
        let permit = limit.clone().try_acquire_owned().ok();
        let served = serve(stream, permit.is_some());
        let open = open.clone();
        tokio::spawn(async move {
            served.await;
            drop(permit);
            drop(open);
        });
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

/// Waits for the servers, each of which runs until shutdown begins. One that ends before — its
/// task panicked, or the protocol socket's thread died — would leave a socket that nobody
/// answers while tokend looks alive: then `begin_shutdown` stops everything, and the result is
/// `false`, for tokend to exit with a failure status and its service manager to start it again.
pub(crate) async fn supervise(
    servers: [(&'static str, tokio::task::JoinHandle<()>); 2],
    shutting_down: impl Fn() -> bool,
    begin_shutdown: impl Fn(),
) -> bool {
    let [(first_name, mut first), (second_name, mut second)] = servers;
    let (name, ended, (other_name, other)) = tokio::select! {
        ended = &mut first => (first_name, ended, (second_name, second)),
        ended = &mut second => (second_name, ended, (first_name, first)),
    };
    let mut ok = true;
    if let Err(e) = &ended {
        tracing::error!("the {name} server failed: {e}");
        ok = false;
    }
    if !shutting_down() {
        tracing::error!("the {name} server stopped on its own; tokend stops too, to be started again");
        begin_shutdown();
        ok = false;
    }
    if let Err(e) = other.await {
        tracing::error!("the {other_name} server failed: {e}");
        ok = false;
    }
    ok
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use tokio::sync::watch;

    use super::supervise;

    /// A server as the daemon runs one: it ends when shutdown begins, or at once if `dies`.
    fn server(shutdown: &watch::Sender<bool>, dies: Option<bool>) -> tokio::task::JoinHandle<()> {
        let mut signal = shutdown.subscribe();
        tokio::spawn(async move {
            match dies {
                Some(true) => panic!("a server's task panics"),
                Some(false) => {}
                None => {
                    let _ = signal.wait_for(|down| *down).await;
                }
            }
        })
    }

    async fn run(dies: [Option<bool>; 2], shut_down_first: bool) -> (bool, bool) {
        let (shutdown, _) = watch::channel(false);
        let servers = [("socket", server(&shutdown, dies[0])), ("HTTP", server(&shutdown, dies[1]))];
        let begun = Arc::new(AtomicBool::new(false));
        if shut_down_first {
            shutdown.send_replace(true);
        }
        let supervised = supervise(
            servers,
            || *shutdown.borrow(),
            || {
                begun.store(true, Ordering::SeqCst);
                shutdown.send_replace(true);
            },
        );
        let ok = tokio::time::timeout(Duration::from_secs(10), supervised).await.expect("the servers end");
        (ok, begun.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn servers_that_end_at_shutdown_end_well() {
        assert_eq!(run([None, None], true).await, (true, false));
    }

    #[tokio::test]
    async fn a_server_that_ends_on_its_own_stops_the_other_and_fails() {
        assert_eq!(run([Some(false), None], false).await, (false, true));
        assert_eq!(run([None, Some(false)], false).await, (false, true));
    }

    #[tokio::test]
    async fn a_server_that_panics_stops_the_other_and_fails() {
        assert_eq!(run([Some(true), None], false).await, (false, true));
        assert_eq!(run([None, Some(true)], false).await, (false, true));
    }
}
