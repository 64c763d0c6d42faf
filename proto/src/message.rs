//! The messages: a handshake, one [`Request`] per `tokenctl` command, and their [`Response`]s.
//!
//! The handshake types ([`Hello`], [`HelloReply`]) are frozen: their encoding must stay the
//! same in every version of tokend, because they are how two versions find out they differ.
//! Everything else may change together with [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION).
//!
//! Times are wall-clock [`SystemTime`]s, because that is what token expiry is measured
//! against; durations are [`Duration`]s.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Failure};
use crate::secret::{Fingerprint, Secret};
use crate::{MAGIC, PROTOCOL_VERSION};

/// The first frame of every connection, from client to daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Always [`MAGIC`]; anything else is not a tokend client.
    pub magic: [u8; 4],
    /// The protocol version the client speaks.
    pub version: u32,
    /// The client's name and version, for the daemon's log.
    pub client: String,
}

impl Hello {
    /// The hello of a client built from this crate.
    pub fn new() -> Self {
        Hello {
            magic: MAGIC,
            version: PROTOCOL_VERSION,
            client: concat!("tokend-proto/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

impl Default for Hello {
    fn default() -> Self {
        Hello::new()
    }
}

/// The daemon's answer to a [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    /// `None` when the daemon accepts the connection; otherwise why it does not. The
    /// connection is closed right after a refusal.
    pub refusal: Option<Refusal>,
    /// The protocol version the daemon speaks.
    pub version: u32,
    /// The daemon's version, for error messages.
    pub daemon: String,
    /// A sentence for people, saying what happened and what to do (empty when accepted).
    pub message: String,
}

impl HelloReply {
    /// The reply of a daemon built from this crate that accepts the client.
    pub fn accept() -> Self {
        HelloReply {
            refusal: None,
            version: PROTOCOL_VERSION,
            daemon: concat!("tokend/", env!("CARGO_PKG_VERSION")).to_owned(),
            message: String::new(),
        }
    }

    /// A refusal, with a message for people.
    pub fn refuse(refusal: Refusal, message: impl Into<String>) -> Self {
        HelloReply { refusal: Some(refusal), message: message.into(), ..HelloReply::accept() }
    }
}

/// Why a daemon refused a connection during the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The client speaks another protocol version.
    VersionMismatch,
    /// The client runs as another user than the daemon.
    PermissionDenied,
    /// The daemon is at its connection limit.
    TooManyConnections,
    /// The daemon is shutting down.
    ShuttingDown,
    /// The first frame was not a tokend hello.
    NotAClient,
}

/// A request from a client. Each variant is one `tokenctl` command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Is the daemon alive? Answered by [`Response::Pong`].
    Ping,
    /// The current access token of a profile. Answered by [`Response::Token`] once a token with
    /// at least `min_valid` left is available (the daemon's default margin when `None`).
    Token {
        /// The profile's name, as in `[profiles.NAME]`.
        profile: String,
        /// How long the token must stay valid at least.
        min_valid: Option<Duration>,
    },
    /// A server rejected a token of this profile (HTTP 401): get a new one. Answered by
    /// [`Response::Token`] with a token other than the rejected one.
    Invalidate {
        /// The profile's name.
        profile: String,
        /// Which token was rejected; `None` means whichever token is current.
        rejected: Option<Fingerprint>,
    },
    /// Refresh now, whatever the schedule says. Answered by [`Response::Token`].
    Refresh {
        /// The profile's name.
        profile: String,
    },
    /// The state of one profile, or of all of them. Answered by [`Response::Status`].
    Status {
        /// A profile's name, or `None` for every profile.
        profile: Option<String>,
    },
    /// The configured profiles. Answered by [`Response::List`].
    List,
    /// Re-read the configuration. Answered by [`Response::Reloaded`].
    Reload,
    /// Stop the daemon. Answered by [`Response::ShuttingDown`].
    Shutdown,
    /// Start a login. Answered first by [`Response::LoginUrl`] (authorization code grant) or
    /// [`Response::LoginCode`] (device authorization grant), then, on the same connection, by
    /// [`Response::LoginDone`] or an error.
    Login {
        /// The profile's name.
        profile: String,
    },
    /// Finish a pending login with the URL the browser was redirected to, for when the browser
    /// cannot reach the daemon's loopback listener (a login over SSH). Answered by
    /// [`Response::LoginDone`].
    LoginRedirect {
        /// The profile's name.
        profile: String,
        /// The full redirect URL, carrying `code` and `state`.
        url: Secret,
    },
    /// Revoke the profile's tokens at the server and forget them. Answered by
    /// [`Response::LoggedOut`].
    Logout {
        /// The profile's name.
        profile: String,
    },
    /// Fetch the profile's `info_url` with its token. Answered by [`Response::Info`].
    Info {
        /// The profile's name.
        profile: String,
    },
    /// Subscribe to new tokens and state changes. Answered by a stream of
    /// [`Response::Event`]s, starting with each watched profile's current state.
    Watch {
        /// A profile's name, or `None` for every profile.
        profile: Option<String>,
    },
}

/// The daemon's answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong(Pong),
    /// A token, for [`Request::Token`], [`Request::Invalidate`] and [`Request::Refresh`].
    Token(Token),
    /// Answer to [`Request::Status`].
    Status(Vec<ProfileStatus>),
    /// Answer to [`Request::List`].
    List(Vec<ProfileSummary>),
    /// Answer to [`Request::Reload`].
    Reloaded(ReloadSummary),
    /// Answer to [`Request::Shutdown`]: the daemon has started to shut down.
    ShuttingDown,
    /// First answer to [`Request::Login`]: where to send the user's browser.
    LoginUrl {
        /// The profile's name.
        profile: String,
        /// The authorization URL.
        url: String,
        /// When the pending login gives up.
        expires_at: SystemTime,
    },
    /// The login completed: the profile has fresh tokens.
    LoginDone {
        /// The profile's name.
        profile: String,
    },
    /// Answer to [`Request::Logout`].
    LoggedOut(RevocationReport),
    /// Answer to [`Request::Info`].
    Info {
        /// The profile's name.
        profile: String,
        /// The HTTP status of the info endpoint's answer.
        status: u16,
        /// The body of the answer, as text (usually JSON).
        body: String,
    },
    /// One event of a [`Request::Watch`] stream.
    Event(Event),
    /// The request failed.
    Error(Error),
    /// First answer to [`Request::Login`] for a profile with the device authorization grant
    /// (RFC 8628): the code the user enters at the verification URI, on any device.
    LoginCode {
        /// The profile's name.
        profile: String,
        /// The code the user enters.
        user_code: String,
        /// Where the user enters it.
        verification_uri: String,
        /// The verification URI with the code in it, when the server sent one: opening it is
        /// enough.
        verification_uri_complete: Option<String>,
        /// When the code expires and the pending login gives up.
        expires_at: SystemTime,
    },
}

/// An access token, as served to clients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The profile it belongs to.
    pub profile: String,
    /// The token itself.
    pub access_token: Secret,
    /// The token type the server named (usually `Bearer`).
    pub token_type: String,
    /// When the token stops being valid, by the daemon's clock.
    pub expires_at: SystemTime,
    /// The token's fingerprint, to name it in [`Request::Invalidate`].
    pub fingerprint: Fingerprint,
    /// The scope the server granted, if it said.
    pub scope: Option<String>,
}

impl Token {
    /// How long the token has left at `now` (zero once it has expired).
    pub fn expires_in(&self, now: SystemTime) -> Duration {
        self.expires_at.duration_since(now).unwrap_or_default()
    }
}

/// Answer to [`Request::Ping`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// The daemon's version.
    pub daemon_version: String,
    /// The daemon's process ID.
    pub pid: u32,
    /// When the daemon started.
    pub started_at: SystemTime,
    /// How many profiles are configured.
    pub profiles: u32,
}

/// The OAuth grant a profile uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Grant {
    /// RFC 6749 §4.4: the client authenticates as itself.
    ClientCredentials,
    /// RFC 6749 §4.1: a user approves access once in a browser; refresh tokens keep it alive.
    AuthorizationCode,
    /// RFC 8628: a user approves access once on any device, entering a code shown by
    /// `tokenctl login`; refresh tokens keep it alive.
    DeviceCode,
}

impl Grant {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Grant::ClientCredentials => "client_credentials",
            Grant::AuthorizationCode => "authorization_code",
            Grant::DeviceCode => "device_code",
        }
    }

    /// Whether a user logs in (`tokenctl login`) to get tokens, which refresh tokens then keep
    /// alive; otherwise the client gets tokens by itself.
    pub fn has_login(self) -> bool {
        matches!(self, Grant::AuthorizationCode | Grant::DeviceCode)
    }
}

/// Where a profile stands, in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ProfileState {
    /// No token yet, and nothing under way.
    Empty,
    /// A token is being served; the next refresh is scheduled.
    Valid,
    /// A request to the token endpoint is in flight.
    Refreshing,
    /// The last request failed transiently; it will be retried.
    Backoff,
    /// The user must run `tokenctl login`.
    NeedsLogin,
    /// The server refused for good (for instance `invalid_client`); nothing is retried until
    /// the config changes or the user asks for a refresh.
    Failed,
    /// A refresh is due, and the current token is no longer handed out: requests wait for the
    /// new one, which is asked for once no token has been handed out for the profile's quiet
    /// window (the server may revoke the old token when it issues the new one).
    Quiet,
}

impl ProfileState {
    /// The word for people and scripts.
    pub fn as_str(self) -> &'static str {
        match self {
            ProfileState::Empty => "empty",
            ProfileState::Valid => "valid",
            ProfileState::Refreshing => "refreshing",
            ProfileState::Backoff => "backoff",
            ProfileState::NeedsLogin => "needs-login",
            ProfileState::Failed => "failed",
            ProfileState::Quiet => "quiet",
        }
    }
}

/// A profile in [`Response::List`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileSummary {
    /// The profile's name.
    pub name: String,
    /// Its grant.
    pub grant: Grant,
    /// Its state.
    pub state: ProfileState,
}

/// What status output shows of a token, without the token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenSummary {
    /// The token's fingerprint.
    pub fingerprint: Fingerprint,
    /// The token type.
    pub token_type: String,
    /// When it was obtained.
    pub obtained_at: SystemTime,
    /// When it expires.
    pub expires_at: SystemTime,
    /// The granted scope, if the server said.
    pub scope: Option<String>,
}

/// Everything `tokenctl status` shows of a profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProfileStatus {
    /// The profile's name.
    pub name: String,
    /// Its grant.
    pub grant: Grant,
    /// Its state.
    pub state: ProfileState,
    /// The token being served, if any.
    pub token: Option<TokenSummary>,
    /// When the next scheduled refresh or retry is due.
    pub next_refresh: Option<SystemTime>,
    /// Whether a refresh token is held.
    pub has_refresh_token: bool,
    /// The most recent failure, until a request succeeds again.
    pub last_error: Option<Failure>,
    /// Since when requests have been failing.
    pub failing_since: Option<SystemTime>,
    /// What the user should do, if anything.
    pub action: Option<String>,
    /// Requests sent to the token endpoint since the daemon started.
    pub upstream_requests: u64,
    /// When a pending login expires, if one is pending.
    pub login_pending_until: Option<SystemTime>,
    /// When the login ends (the refresh token stops working), if tokend knows. Boxed to keep
    /// statuses small in the events that carry them.
    pub login_expiry: Option<Box<LoginExpiry>>,
}

/// When a profile's login ends, and when tokend warns about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginExpiry {
    /// When the refresh token stops working; after it, the profile needs a login.
    pub expires_at: SystemTime,
    /// How tokend knows.
    pub source: LoginExpirySource,
    /// When tokend warns (or warned) that the login will end.
    pub warn_at: SystemTime,
    /// Whether the warning was given.
    pub warned: bool,
}

/// Where a login's expiry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LoginExpirySource {
    /// The token endpoint's `refresh_expires_in` (Keycloak sends it).
    RefreshExpiresIn,
    /// The `exp` claim of a refresh token that is a JWT.
    RefreshTokenExp,
    /// The profile's `login_lifetime` setting, counted from the login.
    LoginLifetime,
}

impl LoginExpirySource {
    /// The word for people and scripts.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginExpirySource::RefreshExpiresIn => "refresh_expires_in",
            LoginExpirySource::RefreshTokenExp => "refresh_token_exp",
            LoginExpirySource::LoginLifetime => "login_lifetime",
        }
    }
}

/// Answer to [`Request::Reload`]: what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadSummary {
    /// Profiles that are new.
    pub added: Vec<String>,
    /// Profiles whose settings changed; they start afresh.
    pub changed: Vec<String>,
    /// Profiles that are gone.
    pub removed: Vec<String>,
    /// Profiles that kept their tokens.
    pub unchanged: Vec<String>,
}

/// What happened to one token at logout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RevocationOutcome {
    /// The server accepted the revocation.
    Revoked,
    /// There was no such token to revoke.
    NoToken,
    /// The profile has no `revoke_url`; the token was only forgotten.
    NotConfigured,
    /// The server could not be reached or refused; the token was only forgotten.
    Failed(String),
}

/// Answer to [`Request::Logout`]. Local state is forgotten in every case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationReport {
    /// The profile's name.
    pub profile: String,
    /// What happened to the refresh token.
    pub refresh_token: RevocationOutcome,
    /// What happened to the access token.
    pub access_token: RevocationOutcome,
}

/// One event of a [`Request::Watch`] stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A new token is being served.
    Token(Token),
    /// A profile's state changed.
    Status(ProfileStatus),
    /// A profile was removed by a reload.
    Removed {
        /// The profile's name.
        profile: String,
    },
    /// A profile's login ends soon: the user should log in again before `expires_at`. Sent
    /// when tokend gives the warning, and at the start of a watch while it stands.
    LoginExpiring {
        /// The profile's name.
        profile: String,
        /// When the login ends.
        expires_at: SystemTime,
    },
}
