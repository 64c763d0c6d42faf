//! What happens on one connection: the peer check, the handshake, then requests answered in
//! order until the client leaves or the daemon shuts down.
//!
//! A request that is waiting (for a refresh, a login, or a watch stream) holds up only its own
//! connection. A request whose profile was replaced by a reload while it waited looks the
//! profile up again.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use interprocess::local_socket::tokio::Stream;
use tokend_proto::{
    Error, Event, FrameError, Hello, HelloReply, MAGIC, MAX_FRAME_LEN, PROTOCOL_VERSION, Pong, ProfileSummary, Request,
    Response, message::Refusal,
};
use tokio::sync::watch;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::connection::{ConnError, Connection};
use crate::daemon::Daemon;
use crate::profile::{Gone, ProfileHandle, Served, Snapshot};

/// How long a new connection has to send its hello.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// How many times a request follows a profile that a reload replaced.
const MAX_LOOKUPS: usize = 5;

type Conn = Connection<Stream>;

/// Where a connection that the short-request path handed over stands.
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) enum Resume {
    /// Nothing was answered; these bytes were read.
    Fresh(Vec<u8>),
    /// The hello and the first request were answered, but `unwritten` of the answer did not fit
    /// in the socket; then these bytes were read.
    Answered { unwritten: Zeroizing<Vec<u8>>, read: Vec<u8> },
}

/// Serves one connection to the end.
pub(crate) async fn serve(daemon: Arc<Daemon>, stream: Stream, admitted: Result<(), Refusal>) {
    resume(daemon, stream, admitted, Resume::Fresh(Vec::new())).await;
}

/// Serves one connection to the end from where the short-request path left it.
pub(crate) async fn resume(daemon: Arc<Daemon>, stream: Stream, admitted: Result<(), Refusal>, from: Resume) {
    let read = match from {
        Resume::Fresh(read) => read,
        Resume::Answered { unwritten, read } => {
            let mut conn = Connection::with_read(stream, read);
            if unwritten.is_empty() || conn.write_frame(&unwritten).await.is_ok() {
                requests(&daemon, &mut conn).await;
            }
            return;
        }
    };
    let peer_ok = super::listener::check_peer(&stream);
    let mut conn = Connection::with_read(stream, read);
    if let Err(message) = peer_ok {
        tracing::warn!("refused a connection: {message}");
        let _ = conn.write(&HelloReply::refuse(Refusal::PermissionDenied, message.to_string())).await;
        return;
    }
    if let Err(refusal) = admitted {
        let message = match refusal {
            Refusal::TooManyConnections => {
                "tokend is at its connection limit ([daemon] max_connections); try again later"
            }
            _ => "tokend is shutting down",
        };
        let _ = conn.write(&HelloReply::refuse(refusal, message)).await;
        return;
    }
    // A client that has not said hello when shutdown begins is as idle as one between
    // requests: it is closed then, rather than holding up the exit until its timeout.
    let mut shutdown = daemon.shutdown_signal();
    let handshook = tokio::select! {
        biased;
        handshook = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&mut conn)) => handshook,
        _ = shutdown.wait_for(|down| *down) => {
            tracing::debug!("closed a connection that had not said hello: shutting down");
            return;
        }
    };
    match handshook {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => return,
        Ok(Err(e)) => {
            tracing::debug!("handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::debug!("a client connected and said nothing; closed");
            return;
        }
    }
    requests(&daemon, &mut conn).await;
}

/// Answers requests in order until the client leaves or the daemon shuts down.
async fn requests(daemon: &Arc<Daemon>, conn: &mut Conn) {
    let mut shutdown = daemon.shutdown_signal();
    loop {
        let request = tokio::select! {
            request = conn.read::<Request>() => request,
            _ = shutdown.wait_for(|down| *down) => break,
        };
        let outcome = match request {
            Ok(Some(request)) => handle(daemon, conn, request).await,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!("bad frame from a client: {e}");
                if let ConnError::Frame(e) = &e {
                    let _ = conn.write(&Response::Error(Error::BadRequest { message: e.to_string() })).await;
                }
                break;
            }
        };
        if let Err(e) = outcome {
            tracing::debug!("connection ended: {e}");
            break;
        }
    }
}

/// Reads the client's hello and answers it. `Ok(false)`: refused.
async fn handshake(conn: &mut Conn) -> Result<bool, ConnError> {
    let hello: Hello = match conn.read().await {
        Ok(Some(hello)) => hello,
        Ok(None) => return Ok(false),
        Err(ConnError::Frame(e)) => {
            let reply = HelloReply::refuse(
                Refusal::NotAClient,
                format!("this is tokend's socket, and that was not a tokend hello ({e})"),
            );
            conn.write(&reply).await?;
            return Ok(false);
        }
        Err(e) => return Err(e),
    };
    if hello.magic != MAGIC {
        conn.write(&HelloReply::refuse(
            Refusal::NotAClient,
            "this is tokend's socket, and that was not a tokend hello",
        ))
        .await?;
        return Ok(false);
    }
    if hello.version != PROTOCOL_VERSION {
        let message = format!(
            "{} speaks protocol {}, but this tokend speaks protocol {PROTOCOL_VERSION}; use tokenctl and tokend from the same release (restart tokend after upgrading)",
            hello.client, hello.version
        );
        conn.write(&HelloReply::refuse(Refusal::VersionMismatch, message)).await?;
        return Ok(false);
    }
    // Sent with the answer to the first request when that came with the hello, or before
    // waiting for it otherwise: one write either way.
    conn.queue(&HelloReply::accept())?;
    Ok(true)
}

async fn handle(daemon: &Arc<Daemon>, conn: &mut Conn, request: Request) -> Result<(), ConnError> {
    let deadline = Instant::now() + daemon.request_timeout;
    let response = match request {
        Request::Ping => Response::Pong(Pong {
            daemon_version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: std::process::id(),
            started_at: daemon.started_at,
            profiles: u32::try_from(daemon.profiles().len()).unwrap_or(u32::MAX),
        }),
        Request::Token { profile, min_valid } => {
            let served = with_profile(daemon, &profile, |h| async move { h.token(min_valid, deadline).await }).await;
            return write_token(conn, served).await;
        }
        Request::Invalidate { profile, rejected } => {
            let served =
                with_profile(daemon, &profile, |h| async move { h.invalidate(rejected, deadline).await }).await;
            return write_token(conn, served).await;
        }
        Request::Refresh { profile } => {
            let served = with_profile(daemon, &profile, |h| async move { h.refresh(deadline).await }).await;
            return write_token(conn, served).await;
        }
        Request::Status { profile: Some(name) } => match daemon.profile(&name) {
            Ok(handle) => Response::Status(vec![handle.status()]),
            Err(e) => Response::Error(e),
        },
        Request::Status { profile: None } => Response::Status(daemon.profiles().values().map(|h| h.status()).collect()),
        Request::List => Response::List(
            daemon
                .profiles()
                .values()
                .map(|h| {
                    let status = h.status();
                    ProfileSummary { name: status.name, grant: status.grant, state: status.state }
                })
                .collect(),
        ),
        // Rare requests with large futures are boxed, so they do not make every connection's
        // task bigger.
        Request::Reload => match Box::pin(daemon.reload()).await {
            Ok(summary) => Response::Reloaded(summary),
            Err(e) => Response::Error(e),
        },
        Request::Shutdown => {
            tracing::info!("shutdown requested by a client");
            conn.write(&Response::ShuttingDown).await?;
            daemon.begin_shutdown();
            return Ok(());
        }
        Request::Login { profile } => return Box::pin(login(daemon, conn, &profile)).await,
        Request::LoginRedirect { profile, url } => {
            let pasted = with_profile(daemon, &profile, |h| {
                let url = url.clone();
                async move { h.paste(url).await }
            });
            match Box::pin(pasted).await {
                Ok(()) => Response::LoginDone { profile },
                Err(e) => Response::Error(e),
            }
        }
        Request::Logout { profile } => {
            match Box::pin(with_profile(daemon, &profile, |h| async move { h.logout().await })).await {
                Ok(report) => Response::LoggedOut(report),
                Err(e) => Response::Error(e),
            }
        }
        Request::Info { profile } => {
            match Box::pin(with_profile(daemon, &profile, |h| async move { h.info(deadline).await })).await {
                Ok(answer) => Response::Info { profile, status: answer.status, body: answer.body },
                Err(e) => Response::Error(e),
            }
        }
        Request::Watch { profile } => return Box::pin(watch(daemon, conn, profile)).await,
    };
    match conn.write(&response).await {
        // Nothing was written: the client gets an answer that fits, not a closed connection
        // (which it would take for a restarted daemon, and send the request again).
        Err(ConnError::Frame(FrameError::TooLarge { len })) => {
            tracing::error!("an answer of {len} bytes does not fit in a frame");
            let message = format!(
                "the answer ({len} bytes) is larger than a frame can carry ({MAX_FRAME_LEN} bytes); ask for less at a time"
            );
            conn.write(&Response::Error(Error::Internal { message })).await
        }
        written => written,
    }
}

/// Runs `f` on the named profile, following it across reloads. The HTTP API uses it too.
pub(crate) async fn with_profile<T, F, Fut>(daemon: &Daemon, name: &str, f: F) -> Result<T, Error>
where
    F: Fn(Arc<ProfileHandle>) -> Fut,
    Fut: Future<Output = Result<Result<T, Error>, Gone>>,
{
    let mut versions = daemon.versions();
    for _ in 0..MAX_LOOKUPS {
        versions.borrow_and_update();
        let handle = daemon.profile(name)?;
        match f(handle).await {
            Ok(result) => return result,
            Err(Gone::Stopped) if daemon.is_shutting_down() => return Err(Error::ShuttingDown),
            Err(Gone::Stopped) => {
                // Wait for the reload that stopped it to put the new profile in place.
                let _ = tokio::time::timeout(Duration::from_secs(5), versions.changed()).await;
            }
        }
    }
    Err(Error::Internal { message: format!("profile `{name}` kept being reloaded; try again") })
}

/// Answers with a token's pre-encoded frame: serving a cached token encodes nothing.
async fn write_token(conn: &mut Conn, served: Result<Served, Error>) -> Result<(), ConnError> {
    match served {
        Ok(served) => conn.write_frame(served.frame()).await,
        Err(e) => conn.write(&Response::Error(e)).await,
    }
}

/// `tokenctl login`: the URL first, then the outcome, on the same connection. If the client
/// goes away, the login stays pending: the browser can still complete it.
async fn login(daemon: &Arc<Daemon>, conn: &mut Conn, name: &str) -> Result<(), ConnError> {
    let started = match with_profile(daemon, name, |h| async move { h.login().await }).await {
        Ok(started) => started,
        Err(e) => return conn.write(&Response::Error(e)).await,
    };
    let first = match started.device {
        Some(device) => Response::LoginCode {
            profile: name.to_owned(),
            user_code: device.user_code,
            verification_uri: device.verification_uri,
            verification_uri_complete: device.verification_uri_complete,
            expires_at: started.expires_at,
        },
        None => Response::LoginUrl { profile: name.to_owned(), url: started.url, expires_at: started.expires_at },
    };
    conn.write(&first).await?;
    let result = tokio::select! {
        result = started.outcome => result,
        closed = conn.read::<Request>() => {
            // Anything from the client while it waits means it went away.
            tracing::debug!("the client left while its login was pending: {closed:?}");
            return Ok(());
        }
    };
    let response = match result {
        Ok(Ok(())) => Response::LoginDone { profile: name.to_owned() },
        Ok(Err(e)) => Response::Error(e),
        Err(_) => Response::Error(Error::Login { profile: name.to_owned(), message: "the login was abandoned".into() }),
    };
    conn.write(&response).await
}

/// `tokenctl watch`: the current state of each watched profile, then every change, until the
/// client leaves.
async fn watch(daemon: &Arc<Daemon>, conn: &mut Conn, only: Option<String>) -> Result<(), ConnError> {
    if let Some(name) = &only
        && let Err(e) = daemon.profile(name)
    {
        return conn.write(&Response::Error(e)).await;
    }
    let mut versions = daemon.versions();
    let mut shutdown = daemon.shutdown_signal();
    loop {
        versions.borrow_and_update();
        let profiles = daemon.profiles();
        let watched: Vec<(String, watch::Receiver<Arc<Snapshot>>)> = profiles
            .iter()
            .filter(|(name, _)| only.as_deref().is_none_or(|o| o == name.as_str()))
            .map(|(name, h)| (name.clone(), h.subscribe()))
            .collect();
        if watched.is_empty() && only.is_some() {
            let profile = only.clone().unwrap_or_default();
            conn.write(&Response::Event(Event::Removed { profile })).await?;
            return Ok(());
        }
        let mut last_generation: Vec<Option<u64>> = vec![None; watched.len()];
        let mut warned: Vec<Option<SystemTime>> = vec![None; watched.len()];
        let mut receivers: Vec<watch::Receiver<Arc<Snapshot>>> = Vec::with_capacity(watched.len());
        for (i, (_, rx)) in watched.iter().enumerate() {
            let mut rx = rx.clone();
            let snap = rx.borrow_and_update().clone();
            send_snapshot(conn, &snap, &mut last_generation[i], &mut warned[i]).await?;
            receivers.push(rx);
        }
        loop {
            enum Woke {
                Changed(usize),
                ProfileStopped,
                Reloaded,
                Leave,
            }
            // With no profiles (an empty config, or a reload that removed them all) only a
            // reload, the client or a shutdown can wake the watch.
            let changes = async {
                if receivers.is_empty() {
                    return std::future::pending().await;
                }
                let (result, index, _) =
                    futures_util::future::select_all(receivers.iter_mut().map(|rx| Box::pin(rx.changed()))).await;
                (result, index)
            };
            let woke = tokio::select! {
                (result, index) = changes => {
                    if result.is_ok() { Woke::Changed(index) } else { Woke::ProfileStopped }
                }
                _ = versions.changed() => Woke::Reloaded,
                _ = conn.read::<Request>() => Woke::Leave,
                _ = shutdown.wait_for(|down| *down) => Woke::Leave,
            };
            match woke {
                Woke::Changed(index) => {
                    let snap = receivers[index].borrow_and_update().clone();
                    send_snapshot(conn, &snap, &mut last_generation[index], &mut warned[index]).await?;
                }
                Woke::ProfileStopped => {
                    // The profile's actor stopped: a reload is replacing it.
                    let _ = tokio::time::timeout(Duration::from_secs(5), versions.changed()).await;
                    break;
                }
                Woke::Reloaded => break,
                Woke::Leave => return Ok(()),
            }
        }
        let now: Vec<String> = daemon.profiles().keys().cloned().collect();
        for (name, _) in &watched {
            if !now.contains(name) {
                conn.write(&Response::Event(Event::Removed { profile: name.clone() })).await?;
                if only.is_some() {
                    return Ok(());
                }
            }
        }
    }
}

/// Sends a profile's status, then its token if it is new to this watcher, then the warning
/// that its login ends soon if this watcher has not had it (at the start of a watch too, so
/// that a watcher that starts just after the warning does not miss it).
async fn send_snapshot(
    conn: &mut Conn,
    snap: &Snapshot,
    last_generation: &mut Option<u64>,
    warned: &mut Option<SystemTime>,
) -> Result<(), ConnError> {
    conn.write(&Response::Event(Event::Status(snap.status.clone()))).await?;
    let warning = snap.status.login_expiry.as_deref().copied().filter(|e| e.warned && e.expires_at > SystemTime::now());
    // A server restating the same end give or take a second is the same warning.
    let lead = |e: &tokend_proto::LoginExpiry| e.expires_at.duration_since(e.warn_at).unwrap_or_default();
    if let Some(expiry) = warning
        && warned.is_none_or(|w| expiry.expires_at > crate::limits::after(w, lead(&expiry)))
    {
        *warned = Some(expiry.expires_at);
        let profile = snap.status.name.clone();
        conn.write(&Response::Event(Event::LoginExpiring { profile, expires_at: expiry.expires_at })).await?;
    }
    if *last_generation != Some(snap.generation) {
        *last_generation = Some(snap.generation);
        if let Some(token) = snap.token.clone().filter(|t| t.expires_at > SystemTime::now()) {
            conn.write(&Response::Event(Event::Token(token))).await?;
        }
    }
    Ok(())
}
