//! Errors the daemon sends back, grouped into classes that clients map to exit codes.
//!
//! Each [`Error`] displays as a sentence that says what happened *and* what to do next, so a
//! client can print it as it is.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// A failed request to an OAuth server, as the daemon recorded it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// When it happened.
    pub at: SystemTime,
    /// The HTTP status, when the server answered at all.
    pub status: Option<u16>,
    /// The OAuth `error` code (RFC 6749 §5.2), when the server sent one.
    pub error: Option<String>,
    /// The OAuth `error_description`, when the server sent one.
    pub description: Option<String>,
    /// What went wrong, for people: "connection refused", "HTTP 503 with a non-JSON body", ….
    pub message: String,
    /// Whether the daemon will retry by itself.
    pub transient: bool,
}

impl Failure {
    /// Advice for people, keyed on the OAuth error code.
    pub fn advice(&self) -> Option<&'static str> {
        let advice = match self.error.as_deref()? {
            "invalid_client" | "unauthorized_client" => {
                "check client_id, client_secret and client_auth in the config, then run `tokenctl reload`"
            }
            "invalid_scope" => "check `scopes` in the config, then run `tokenctl reload`",
            "invalid_grant" => "the grant is no longer valid",
            "unsupported_grant_type" => "the server does not offer this grant to this client; check `grant`",
            "invalid_request" => "the server rejected the request; check `token_params` and `token_url`",
            _ => return None,
        };
        Some(advice)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        match (&self.error, &self.description) {
            (Some(error), Some(description)) => write!(f, " (server said {error}: {description})"),
            (Some(error), None) => write!(f, " (server said {error})"),
            (None, Some(description)) => write!(f, " (server said: {description})"),
            (None, None) => Ok(()),
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Error {
    /// No profile of that name is configured.
    #[error("{}", unknown_profile(profile, known))]
    UnknownProfile {
        /// The name asked for.
        profile: String,
        /// The names that exist.
        known: Vec<String>,
    },
    /// The profile has no usable grant: a user must log in.
    #[error("profile `{profile}` needs a login ({reason}); run `tokenctl login {profile}`")]
    LoginNeeded {
        /// The profile's name.
        profile: String,
        /// Why.
        reason: String,
    },
    /// The OAuth server refused for good; the daemon does not retry.
    #[error("{}", upstream(profile, failure))]
    Upstream {
        /// The profile's name.
        profile: String,
        /// What the server said.
        failure: Box<Failure>,
    },
    /// The OAuth server has been failing transiently and no valid token is left to serve.
    #[error(
        "profile `{profile}`: token endpoint unavailable since {}, last error: {last}; {}",
        when(*since),
        retry(*retry_at)
    )]
    UpstreamUnavailable {
        /// The profile's name.
        profile: String,
        /// When the failures began.
        since: SystemTime,
        /// When the daemon retries next.
        retry_at: Option<SystemTime>,
        /// The most recent failure.
        last: Box<Failure>,
    },
    /// The server's tokens never live as long as the client asked for.
    #[error(
        "profile `{profile}`: the server issues tokens valid for {}, less than the {} asked for with --min-valid",
        seconds(*lifetime),
        seconds(*requested)
    )]
    MinValidUnsatisfiable {
        /// The profile's name.
        profile: String,
        /// The `min_valid` asked for.
        requested: Duration,
        /// The lifetime of the newest token.
        lifetime: Duration,
    },
    /// The profile does not support the operation (for instance `info` without `info_url`).
    #[error("profile `{profile}`: {message}")]
    NotSupported {
        /// The profile's name.
        profile: String,
        /// What is missing and how to add it.
        message: String,
    },
    /// A login did not complete.
    #[error("login for profile `{profile}` failed: {message}")]
    Login {
        /// The profile's name.
        profile: String,
        /// What happened.
        message: String,
    },
    /// A reload found the new configuration invalid; the old one keeps running.
    #[error("the new configuration was rejected, the old one keeps running: {message}")]
    InvalidConfig {
        /// What is wrong, with file, line and key.
        message: String,
    },
    /// The request itself was malformed.
    #[error("bad request: {message}")]
    BadRequest {
        /// What was wrong with it.
        message: String,
    },
    /// The request took too long.
    #[error("timed out: {message}")]
    Timeout {
        /// What was being waited for.
        message: String,
    },
    /// The daemon is shutting down.
    #[error("tokend is shutting down")]
    ShuttingDown,
    /// Something failed inside the daemon.
    #[error("internal error in tokend: {message}")]
    Internal {
        /// What failed.
        message: String,
    },
}

/// The classes of failure that clients tell apart, for instance by exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// No such profile.
    UnknownProfile,
    /// A user must log in.
    LoginNeeded,
    /// The OAuth server failed or refused.
    Upstream,
    /// The configuration is invalid.
    Config,
    /// The request or its arguments were wrong.
    Usage,
    /// Anything else.
    Other,
}

impl Error {
    /// The class this error belongs to.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::UnknownProfile { .. } => ErrorClass::UnknownProfile,
            Error::LoginNeeded { .. } => ErrorClass::LoginNeeded,
            Error::Upstream { .. } | Error::UpstreamUnavailable { .. } => ErrorClass::Upstream,
            Error::MinValidUnsatisfiable { .. } | Error::BadRequest { .. } => ErrorClass::Usage,
            Error::NotSupported { .. } => ErrorClass::Usage,
            Error::InvalidConfig { .. } => ErrorClass::Config,
            Error::Login { .. } => ErrorClass::LoginNeeded,
            Error::Timeout { .. } | Error::ShuttingDown | Error::Internal { .. } => ErrorClass::Other,
        }
    }
}

fn unknown_profile(profile: &str, known: &[String]) -> String {
    if known.is_empty() {
        format!(
            "unknown profile `{profile}`: no profiles are configured; add a [profiles.{profile}] table to the config and run `tokenctl reload`"
        )
    } else {
        format!("unknown profile `{profile}`; configured profiles: {}", known.join(", "))
    }
}

fn upstream(profile: &str, failure: &Failure) -> String {
    let mut text = format!("profile `{profile}`: {failure}");
    if let Some(advice) = failure.advice() {
        text.push_str("; ");
        text.push_str(advice);
    }
    text
}

/// A duration in whole seconds, rounded up: a token's lifetime is counted from the whole
/// second its request was sent in, so it falls just short of the server's nominal lifetime.
fn seconds(d: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(Duration::from_secs(d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))))
}

fn when(time: SystemTime) -> String {
    crate::time::rfc3339(time)
}

fn retry(retry_at: Option<SystemTime>) -> String {
    match retry_at {
        Some(at) => format!("retrying at {}", when(at)),
        None => "not retrying".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(error: Option<&str>) -> Failure {
        Failure {
            at: SystemTime::UNIX_EPOCH,
            status: Some(401),
            error: error.map(str::to_owned),
            description: Some("Client authentication failed".into()),
            message: "HTTP 401 from the token endpoint".into(),
            transient: false,
        }
    }

    #[test]
    fn upstream_errors_say_what_the_server_said_and_what_to_do() {
        let err = Error::Upstream { profile: "minut".into(), failure: Box::new(failure(Some("invalid_client"))) };
        let text = err.to_string();
        assert!(text.contains("invalid_client: Client authentication failed"), "{text}");
        assert!(text.contains("tokenctl reload"), "{text}");
        assert_eq!(err.class(), ErrorClass::Upstream);
    }

    #[test]
    fn login_needed_names_the_command_to_run() {
        let err = Error::LoginNeeded { profile: "mm".into(), reason: "refresh token revoked".into() };
        assert!(err.to_string().contains("run `tokenctl login mm`"));
    }

    #[test]
    fn unknown_profile_lists_the_known_ones() {
        let err = Error::UnknownProfile { profile: "x".into(), known: vec!["a".into(), "b".into()] };
        assert!(err.to_string().contains("a, b"));
        let none = Error::UnknownProfile { profile: "x".into(), known: vec![] };
        assert!(none.to_string().contains("[profiles.x]"));
    }
}
