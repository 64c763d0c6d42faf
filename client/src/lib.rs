//! A client for tokend, the per-user OAuth token daemon.
//!
//! tokend holds OAuth 2.0 tokens and refreshes them before they expire; this crate asks it
//! for them over its local socket. It never decides when to refresh: it asks, and the daemon
//! answers with a token that is valid for at least the daemon's default margin (or the
//! `min_valid` you ask for).
//!
//! Two clients with the same methods:
//!
//! - [`Client`] for tokio programs (feature `async`, on by default);
//! - [`blocking::Client`] for everything else, with no runtime at all.
//!
//! Each keeps one connection open and reconnects transparently when the daemon restarts.
//! Before sending anything on a new connection, each checks that what answers is this user's
//! tokend (on Unix: the socket's directory belongs to the user or root and nobody else can write
//! in it, and the process listening runs as the user or root); otherwise it fails with
//! [`ErrorClass::Untrusted`], so that a daemon planted by another user never sees a request.
//!
//! The simplest correct way to call an API is `with_token`: it runs your request with the
//! current token and, if the server rejects the token (HTTP 401), tells tokend exactly which
//! token was rejected and runs the request once more with a new one. You say whether the
//! server rejected the token by returning [`Attempt::Rejected`] or [`Attempt::Done`]:
//!
//! ```no_run
//! use reqwest::StatusCode;
//! use reqwest::header::AUTHORIZATION;
//! use tokend_client::{Attempt, TokenExt};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let http = reqwest::blocking::Client::new();
//! let mut tokend = tokend_client::blocking::Client::connect()?;
//! let response = tokend.with_token("minut", |token| {
//!     match http.get("https://api.minut.com/v8/users/me").header(AUTHORIZATION, token.header_value()).send() {
//!         Ok(response) if response.status() == StatusCode::UNAUTHORIZED => Attempt::Rejected(Ok(response)),
//!         answer => Attempt::Done(answer),
//!     }
//! })??;
//! println!("{}", response.text()?);
//! # Ok(())
//! # }
//! ```
//!
//! The first `?` is tokend's error (not running, login needed, …), the second your request's.
//! For finer control there are [`blocking::Client::token`] and [`blocking::Client::invalidate`],
//! which `with_token` is made of.
//!
//! Errors are grouped into [`ErrorClass`]es (daemon not reachable, unknown profile, login
//! needed, upstream failure, …) and their messages say what to do next.

#![warn(missing_docs)]

#[cfg(feature = "async")]
mod async_client;
pub mod blocking;
mod protocol;
mod trust;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[cfg(feature = "async")]
pub use async_client::{Client, Watch};
pub use protocol::{DeviceCode, LoginStarted};
pub use tokend_proto::{
    Endpoint, Event, Failure, Fingerprint, Grant, LoginExpiry, LoginExpirySource, Pong, ProfileState, ProfileStatus,
    ProfileSummary, ReloadSummary, RevocationOutcome, RevocationReport, Secret, Token, TokenSummary,
};

/// How long a request may take by default. Generous, because a request may wait for the
/// daemon to refresh a token (which it bounds itself).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// What the info endpoint answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The HTTP status.
    pub status: u16,
    /// The body, usually JSON, as the server sent it (at most 32 KiB): it may hold control
    /// characters, so escape it before showing it on a terminal.
    pub body: String,
}

/// What a request made with a token came to, for `with_token` ([`Client::with_token`],
/// [`blocking::Client::with_token`]): the request's answer, and whether the server rejected the
/// token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt<T> {
    /// The server rejected the token (HTTP 401 Unauthorized): tokend is told, and the request
    /// is made once more with a new token.
    Rejected(T),
    /// Anything else — success, or a failure that another token would not cure: returned as
    /// it is.
    Done(T),
}

impl<T> Attempt<T> {
    /// The answer, whether the token was rejected or not.
    pub fn into_inner(self) -> T {
        match self {
            Attempt::Rejected(answer) | Attempt::Done(answer) => answer,
        }
    }
}

/// The classes of failure, for instance to choose an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The daemon is not running, refused the connection, or went away.
    NotReachable,
    /// What answers at the endpoint is not this user's tokend: another user runs it, or could
    /// have put it there. Nothing was sent to it.
    Untrusted,
    /// No such profile.
    UnknownProfile,
    /// A user must run `tokenctl login`.
    LoginNeeded,
    /// The OAuth server failed or refused.
    Upstream,
    /// The daemon's configuration is invalid.
    Config,
    /// The request or its arguments were wrong.
    Usage,
    /// The client and the daemon speak different protocol versions.
    Protocol,
    /// Anything else.
    Other,
}

/// A failed request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Nothing answers at the endpoint.
    #[error(
        "tokend is not running (nothing answers at {endpoint}: {source}); start it with `systemctl --user start tokend` or run `tokend`"
    )]
    NotRunning {
        /// Where the client looked.
        endpoint: Endpoint,
        /// Why the connection failed.
        source: io::Error,
    },
    /// The endpoint is not trustworthy: another user runs what listens there, or could have put
    /// it there. Raised before anything is sent.
    #[error("refusing to talk to {endpoint}: {message}")]
    Untrusted {
        /// Where the client looked.
        endpoint: Endpoint,
        /// What is wrong and what to do.
        message: String,
    },
    /// The daemon refused the connection.
    #[error("tokend refused the connection: {message}")]
    Refused {
        /// The daemon's explanation.
        message: String,
    },
    /// The daemon speaks another protocol version.
    #[error("{message}")]
    VersionMismatch {
        /// The daemon's explanation.
        message: String,
    },
    /// The daemon answered with an error.
    #[error(transparent)]
    Daemon(Box<tokend_proto::Error>),
    /// The connection broke.
    #[error("lost the connection to tokend: {0}")]
    Io(#[from] io::Error),
    /// The daemon sent something this client does not understand.
    #[error("unexpected answer from tokend: {0}")]
    Protocol(String),
    /// The daemon did not answer in time.
    #[error("tokend did not answer within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
}

impl Error {
    /// The class of this error.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::NotRunning { .. } | Error::Refused { .. } | Error::Io(_) => ErrorClass::NotReachable,
            Error::Untrusted { .. } => ErrorClass::Untrusted,
            Error::VersionMismatch { .. } | Error::Protocol(_) => ErrorClass::Protocol,
            Error::Timeout(_) => ErrorClass::Other,
            Error::Daemon(e) => match e.class() {
                tokend_proto::ErrorClass::UnknownProfile => ErrorClass::UnknownProfile,
                tokend_proto::ErrorClass::LoginNeeded => ErrorClass::LoginNeeded,
                tokend_proto::ErrorClass::Upstream => ErrorClass::Upstream,
                tokend_proto::ErrorClass::Config => ErrorClass::Config,
                tokend_proto::ErrorClass::Usage => ErrorClass::Usage,
                tokend_proto::ErrorClass::Other => ErrorClass::Other,
            },
        }
    }
}

impl From<tokend_proto::Error> for Error {
    fn from(error: tokend_proto::Error) -> Error {
        Error::Daemon(Box::new(error))
    }
}

/// The result of a request.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Helpers on [`Token`] for using it.
pub trait TokenExt {
    /// The value for an `Authorization` header: `Bearer TOKEN` (or the server's token type).
    fn header_value(&self) -> String;
    /// How long the token has left now.
    fn remaining(&self) -> Duration;
}

impl TokenExt for Token {
    fn header_value(&self) -> String {
        let kind = if self.token_type.eq_ignore_ascii_case("bearer") { "Bearer" } else { &self.token_type };
        format!("{kind} {}", self.access_token.expose())
    }

    fn remaining(&self) -> Duration {
        self.expires_in(SystemTime::now())
    }
}

/// The endpoint a client uses by default: `$TOKEND_SOCKET`, else the `[daemon] socket` of the
/// config file (`$TOKEND_CONFIG` or `$XDG_CONFIG_HOME/tokend/config.toml`), else the default
/// socket path.
pub fn default_endpoint() -> Endpoint {
    endpoint_for(None, None)
}

/// The endpoint for an explicit socket path and config file, each optional, falling back as
/// [`default_endpoint`] does.
pub fn endpoint_for(socket: Option<&Path>, config: Option<&Path>) -> Endpoint {
    if socket.is_some() {
        return Endpoint::resolve(socket, None);
    }
    let config = config.map(Path::to_owned).or_else(tokend_proto::endpoint::default_config_path);
    let from_config = config.and_then(|path| socket_from_config(&path));
    Endpoint::resolve(None, from_config.as_deref())
}

/// Reads only `[daemon] socket` from the daemon's config file; anything else in the file, and
/// any error, is the daemon's business.
fn socket_from_config(path: &Path) -> Option<PathBuf> {
    #[derive(serde::Deserialize)]
    struct Partial {
        daemon: Option<DaemonPart>,
    }
    #[derive(serde::Deserialize)]
    struct DaemonPart {
        socket: Option<PathBuf>,
    }
    let text = std::fs::read_to_string(path).ok()?;
    let partial: Partial = toml::from_str(&text).ok()?;
    partial.daemon?.socket
}
