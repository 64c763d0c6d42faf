//! What both clients share: the handshake check and turning each [`Response`] into the typed
//! result of the request that asked for it.

use std::io;
use std::time::SystemTime;

use tokend_proto::message::Refusal;
use tokend_proto::{
    Endpoint, Event, HelloReply, Pong, ProfileStatus, ProfileSummary, ReloadSummary, Response, RevocationReport, Token,
};

use crate::{Error, Info, Result};

/// A login the daemon started: send the user's browser to `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginStarted {
    /// The authorization URL; for a device login, where to enter the code (the complete
    /// verification URI when the server sent one).
    pub url: String,
    /// When the daemon stops waiting for the browser (or for the code to be entered).
    pub expires_at: SystemTime,
    /// For a profile with the device authorization grant (RFC 8628): the code to show the user.
    pub device: Option<DeviceCode>,
}

/// What the user needs to approve a device login: enter `user_code` at `verification_uri`, on
/// any device, or open `verification_uri_complete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCode {
    /// The code to enter.
    pub user_code: String,
    /// Where to enter it.
    pub verification_uri: String,
    /// The verification URI with the code in it, when the server sent one.
    pub verification_uri_complete: Option<String>,
}

/// The error for a failed connection attempt.
pub(crate) fn connect_error(endpoint: &Endpoint, source: io::Error) -> Error {
    match source.kind() {
        io::ErrorKind::PermissionDenied => Error::Refused {
            message: format!(
                "cannot open {endpoint}: {source}; it belongs to another user (tokend serves only the user who runs it)"
            ),
        },
        _ => Error::NotRunning { endpoint: endpoint.clone(), source },
    }
}

/// Whether an I/O error means the connection went stale (the daemon restarted), so that one
/// reconnect and retry is worth it.
pub(crate) fn is_stale(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::UnexpectedEof
    )
}

/// The outcome of the handshake from its two halves. A daemon that refuses a connection answers
/// and closes without waiting for the hello, so sending it can fail while the refusal is already
/// there to be read: a reply wins over a failed send.
pub(crate) fn hello_outcome<F>(
    sent: std::result::Result<(), F>,
    reply: std::result::Result<HelloReply, F>,
) -> std::result::Result<HelloReply, F> {
    match (sent, reply) {
        (_, Ok(reply)) => Ok(reply),
        (Err(failure), Err(_)) | (Ok(()), Err(failure)) => Err(failure),
    }
}

pub(crate) fn check_hello(reply: HelloReply) -> Result<()> {
    match reply.refusal {
        None => Ok(()),
        Some(Refusal::VersionMismatch) => Err(Error::VersionMismatch { message: reply.message }),
        Some(_) => Err(Error::Refused { message: reply.message }),
    }
}

fn unexpected(what: &str, response: &Response) -> Error {
    let kind = match response {
        Response::Pong(_) => "pong",
        Response::Token(_) => "token",
        Response::Status(_) => "status",
        Response::List(_) => "list",
        Response::Reloaded(_) => "reload summary",
        Response::ShuttingDown => "shutdown notice",
        Response::LoginUrl { .. } => "login URL",
        Response::LoginCode { .. } => "login code",
        Response::LoginDone { .. } => "login result",
        Response::LoggedOut(_) => "logout report",
        Response::Info { .. } => "info",
        Response::Event(_) => "event",
        Response::Error(_) => "error",
    };
    Error::Protocol(format!("expected {what}, got {kind}"))
}

macro_rules! expect {
    ($response:expr, $what:literal, $pattern:pat => $value:expr) => {
        match $response {
            $pattern => Ok($value),
            Response::Error(e) => Err(Error::from(e)),
            other => Err(unexpected($what, &other)),
        }
    };
}

pub(crate) fn token(r: Response) -> Result<Token> {
    expect!(r, "a token", Response::Token(t) => t)
}

pub(crate) fn pong(r: Response) -> Result<Pong> {
    expect!(r, "a pong", Response::Pong(p) => p)
}

pub(crate) fn status(r: Response) -> Result<Vec<ProfileStatus>> {
    expect!(r, "a status", Response::Status(s) => s)
}

pub(crate) fn list(r: Response) -> Result<Vec<ProfileSummary>> {
    expect!(r, "a list", Response::List(l) => l)
}

pub(crate) fn reloaded(r: Response) -> Result<ReloadSummary> {
    expect!(r, "a reload summary", Response::Reloaded(s) => s)
}

pub(crate) fn shutting_down(r: Response) -> Result<()> {
    expect!(r, "a shutdown notice", Response::ShuttingDown => ())
}

pub(crate) fn login_started(r: Response) -> Result<LoginStarted> {
    match r {
        Response::LoginCode { user_code, verification_uri, verification_uri_complete, expires_at, .. } => {
            Ok(LoginStarted {
                url: verification_uri_complete.clone().unwrap_or_else(|| verification_uri.clone()),
                expires_at,
                device: Some(DeviceCode { user_code, verification_uri, verification_uri_complete }),
            })
        }
        r => {
            expect!(r, "a login URL", Response::LoginUrl { url, expires_at, .. } => LoginStarted { url, expires_at, device: None })
        }
    }
}

pub(crate) fn login_done(r: Response) -> Result<()> {
    expect!(r, "a login result", Response::LoginDone { .. } => ())
}

pub(crate) fn logged_out(r: Response) -> Result<RevocationReport> {
    expect!(r, "a logout report", Response::LoggedOut(report) => report)
}

pub(crate) fn info(r: Response) -> Result<Info> {
    expect!(r, "info", Response::Info { status, body, .. } => Info { status, body })
}

pub(crate) fn event(r: Response) -> Result<Event> {
    expect!(r, "an event", Response::Event(e) => e)
}
