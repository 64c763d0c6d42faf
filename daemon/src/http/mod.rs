//! tokend's HTTP API, for programs in any language: the token API and an authenticating proxy
//! on a Unix socket, `http.sock` beside `tokend.sock` (docs/http-api.md is the contract).
//!
//! - [`api`] routes requests and answers the token API (`/v1/token`, `/v1/invalidate`,
//!   `/v1/status`);
//! - [`proxy`] sends `/v1/proxy/NAME/…` to the profile's `api_base` with its token added;
//! - [`upstream`] connects the proxy to APIs;
//! - [`target`] decides which upstream URL a proxied request may reach, and refuses the rest;
//! - [`body`] bounds bodies in size and in time.
//!
//! The socket is set up by [`crate::server::listener`] exactly as the protocol socket is (0700
//! directory, 0600 socket set before `bind`, a stale socket probed and removed, a live one left
//! alone, systemd activation, removed on exit), and each connection's peer is checked with the
//! same function before a byte of its request is read. Another user's connection is answered
//! `403` and closed; so is one beyond the connection limit, with `503`.
//!
//! Connections speak HTTP/1.1 with keep-alive, each in its own task. A connection may stay
//! open between requests until [`KEEP_ALIVE`] passes with no new request; that one timer is
//! all an idle connection costs, and with no connection open the HTTP API wakes nothing. On
//! shutdown the accept loop stops, idle connections close, requests being answered get the
//! protocol server's grace period, and the socket file is removed.

pub(crate) mod api;
pub(crate) mod body;
pub(crate) mod proxy;
pub(crate) mod target;
pub(crate) mod upstream;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::StatusCode;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use interprocess::local_socket::tokio::{Listener, Stream};
use tokend_proto::Endpoint;
use tokend_proto::endpoint::{HTTP_SOCKET_ENV, HTTP_SOCKET_FILE};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::config::HttpSocket;
use crate::daemon::Daemon;
use crate::server::{self, SHUTDOWN_GRACE, listener};
use api::{Api, ApiError};
use proxy::Proxy;

/// How long a connection may wait for its next request's head, which also bounds how long a
/// client may take to send one.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// Where the HTTP API listens: `--http-socket`, else `TOKEND_HTTP_SOCKET`, else `[daemon]
/// http_socket`, else `http.sock` beside the protocol socket. `None` when the config turns it
/// off and nothing overrides that.
pub(crate) fn endpoint(
    explicit: Option<&Path>,
    configured: &HttpSocket,
    socket: &Endpoint,
) -> Result<Option<Endpoint>, String> {
    let from_env = std::env::var_os(HTTP_SOCKET_ENV).filter(|p| !p.is_empty());
    let chosen = match (explicit, from_env, configured) {
        (Some(path), _, _) => Some(Endpoint::new(path)),
        (None, Some(path), _) => Some(Endpoint::new(path)),
        (None, None, HttpSocket::At(path)) => Some(Endpoint::new(path)),
        (None, None, HttpSocket::BesideSocket) => Some(socket.beside(HTTP_SOCKET_FILE)),
        (None, None, HttpSocket::Off) => None,
    };
    match chosen {
        Some(http) if http == *socket => Err(format!(
            "the HTTP API cannot share the socket {socket}; give it another path with --http-socket, or set [daemon] http_socket = false"
        )),
        chosen => Ok(chosen),
    }
}

/// Serves the HTTP API on `listener` until shutdown begins, then waits for the open
/// connections to finish.
pub(crate) async fn serve(daemon: Arc<Daemon>, listener: Listener, proxy: Proxy, max_connections: usize) {
    let limit = Arc::new(Semaphore::new(max_connections));
    // Each connection task holds a clone; when all are dropped, every connection has ended.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let shutdown = daemon.shutdown_signal();
    let api = Arc::new(Api { daemon: daemon.clone(), proxy });
    server::accept_each(&listener, "the HTTP socket", &daemon, &limit, &open_tx, |stream, admitted| {
        connection(api.clone(), stream, admitted, shutdown.clone())
    })
    .await;
    drop(listener);
    drop(open_tx);
    if tokio::time::timeout(SHUTDOWN_GRACE, open_rx.recv()).await.is_err() {
        tracing::warn!(
            "some HTTP requests were still being answered after {}s; closing them",
            SHUTDOWN_GRACE.as_secs()
        );
    }
}

/// Serves one connection to the end.
async fn connection(api: Arc<Api>, stream: Stream, admitted: bool, mut shutdown: watch::Receiver<bool>) {
    let refusal = match listener::check_peer(&stream) {
        Err(message) => {
            tracing::warn!("refused a connection to the HTTP socket: {message}");
            Some((StatusCode::FORBIDDEN, message.to_string()))
        }
        Ok(()) if !admitted => Some((
            StatusCode::SERVICE_UNAVAILABLE,
            "tokend is at its connection limit ([daemon] max_connections); try again later".to_owned(),
        )),
        Ok(()) => None,
    };
    let mut builder = http1::Builder::new();
    // hyper's read buffer (at most about 400 KiB) also bounds a request's head.
    builder.timer(TokioTimer::new()).header_read_timeout(KEEP_ALIVE);
    let io = TokioIo::new(vectored(stream));
    if let Some((status, message)) = refusal {
        // One answer, whatever was asked (nothing of it is looked at), and the connection is
        // closed. `not_reachable` is what tokenctl calls a refused connection.
        builder.keep_alive(false);
        let service = service_fn(move |_request| {
            let response = ApiError::new(status, "not_reachable", message.clone()).into_response();
            async move { Ok::<_, std::convert::Infallible>(response) }
        });
        let _ = builder.serve_connection(io, service).await;
        return;
    }
    let service = service_fn(move |request| api.clone().handle(request));
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = async { drop(shutdown.wait_for(|down| *down).await) } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!("HTTP connection ended: {e}");
    }
}

/// The socket itself rather than interprocess's wrapper around it, whose writes are never
/// vectored: hyper would then copy every body into its own buffer before writing it.
#[cfg(unix)]
fn vectored(stream: Stream) -> interprocess::os::unix::uds_local_socket::tokio::Stream {
    let Stream::UdSocket(stream) = stream;
    stream
}

#[cfg(not(unix))]
fn vectored(stream: Stream) -> Stream {
    stream
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_http_socket_is_beside_the_socket_unless_told_otherwise() {
        let socket = Endpoint::new("/run/user/1/tokend/tokend.sock");
        // The environment variable is this process's: the tests here pass explicit values.
        let beside = endpoint(None, &HttpSocket::BesideSocket, &socket);
        if std::env::var_os(HTTP_SOCKET_ENV).is_none() {
            assert_eq!(beside.unwrap().unwrap().path(), Path::new("/run/user/1/tokend/http.sock"));
            assert_eq!(endpoint(None, &HttpSocket::Off, &socket).unwrap(), None);
        }
        let explicit = endpoint(Some(Path::new("/tmp/h.sock")), &HttpSocket::Off, &socket).unwrap();
        assert_eq!(explicit.unwrap().path(), Path::new("/tmp/h.sock"));
        let clash = endpoint(Some(socket.path()), &HttpSocket::BesideSocket, &socket).unwrap_err();
        assert!(clash.contains("cannot share"), "{clash}");
    }
}
